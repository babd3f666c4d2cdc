"""Displacement fields on a coarse node grid: the one representation every align step shares.

A ``Field`` is a pull map from an *output* image (the reference frame: the
fixed section, or the montage) into a *source* image (the moving section or
tile)::

    source_yx(p) = p + field(p)          p = (y, x) in output pixels

``data`` has shape ``(2, gy, gx)``, float32, channel 0 = dy, channel 1 = dx,
in source pixels.  Node ``(i, j)`` sits at output pixel
``origin + stride * (i, j)``; between nodes the field is bilinear, outside
the node grid it is clamped to the border nodes.  ``NaN`` marks an invalid
node (no usable match) and only appears in raw flow estimates: relaxed meshes
(``mesh.relax``) are NaN-free.  Pixel centres are at integer coordinates.

The grid for an image of ``yx_shape`` with ``stride`` s has
``ceil((H-1)/s)+1`` rows, so the last node lies on or past the last pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def grid_shape(yx_shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """Node grid ``(gy, gx)`` covering an image of ``yx_shape`` at ``stride`` pixels."""
    return tuple(-(-(n - 1) // stride) + 1 for n in yx_shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class Field:
    """A displacement field sampled on a regular node grid (see module docstring)."""

    data: np.ndarray  # (2, gy, gx) float32: dy, dx in source pixels
    stride: float  # output pixels between nodes
    origin: tuple[float, float] = (0.0, 0.0)  # output pixel of node (0, 0)

    @property
    def grid(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]

    def node_yx(self) -> tuple[np.ndarray, np.ndarray]:
        """Output-pixel coordinates of the node rows and columns."""
        gy, gx = self.grid
        return (self.origin[0] + self.stride * np.arange(gy),
                self.origin[1] + self.stride * np.arange(gx))

    @classmethod
    def zeros(cls, yx_shape: tuple[int, int], stride: int) -> Field:
        gy, gx = grid_shape(yx_shape, stride)
        return cls(np.zeros((2, gy, gx), np.float32), float(stride))

    @classmethod
    def from_affine(cls, matrix: np.ndarray, yx_shape: tuple[int, int], stride: int) -> Field:
        """Field of the affine pull map ``source = A[:, :2] @ p + A[:, 2]`` (A is 2x3, yx)."""
        f = cls.zeros(yx_shape, stride)
        ny, nx = f.node_yx()
        yy, xx = np.meshgrid(ny, nx, indexing="ij")
        a = np.asarray(matrix, np.float64)
        data = np.stack([a[0, 0] * yy + a[0, 1] * xx + a[0, 2] - yy,
                         a[1, 0] * yy + a[1, 1] * xx + a[1, 2] - xx]).astype(np.float32)
        return cls(data, f.stride, f.origin)

    def sample(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Displacement at the grid of output rows ``ys`` x columns ``xs``: ``(2, len(ys), len(xs))``.

        Bilinear interpolation is separable: rows are interpolated with a small
        weight matrix, then each output column blends two node columns (a
        gather), so the cost is ~3 passes over the output, whatever the grid.
        """
        wy = _interp_matrix(np.asarray(ys, np.float64), self.origin[0], self.stride, self.grid[0])
        i0, i1, fx = _interp_index(np.asarray(xs, np.float64), self.origin[1], self.stride,
                                   self.grid[1])
        d = self.data.astype(np.float32, copy=False)
        out = np.empty((2, len(ys), len(xs)), np.float32)
        for c in range(2):
            rows = wy @ d[c]  # (len(ys), gx)
            out[c] = rows[:, i0]
            out[c] *= 1.0 - fx
            out[c] += rows[:, i1] * fx
        return out

    def dense(self, yx_shape: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Displacement at every pixel of the output ROI ``offset + [0, yx_shape)``."""
        ys = offset[0] + np.arange(yx_shape[0])
        xs = offset[1] + np.arange(yx_shape[1])
        return self.sample(ys, xs)

    def resample(self, yx_shape: tuple[int, int], stride: int) -> Field:
        """The same map on another node grid (e.g. a finer level)."""
        gy, gx = grid_shape(yx_shape, stride)
        data = self.sample(stride * np.arange(gy), stride * np.arange(gx))
        return Field(data.astype(np.float32), float(stride))

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Displacement at scattered output points: ``(2,) + ys.shape`` (bilinear, clamped)."""
        from scipy import ndimage

        cy = (np.asarray(ys, np.float64) - self.origin[0]) / self.stride
        cx = (np.asarray(xs, np.float64) - self.origin[1]) / self.stride
        d = np.nan_to_num(self.data.astype(np.float64))
        return np.stack([ndimage.map_coordinates(d[c], [cy, cx], order=1, mode="nearest")
                         for c in range(2)])

    def then(self, other: Field) -> Field:
        """Composition on this grid: pull through ``self`` first, then through ``other``.

        ``self`` maps output -> A, ``other`` maps A -> B; the result maps output -> B.
        """
        ny, nx = self.node_yx()
        yy, xx = np.meshgrid(ny, nx, indexing="ij")
        py, px = yy + self.data[0], xx + self.data[1]
        d2 = other.at(py, px)
        return self.with_data(self.data + d2)

    def resample_like(self, other: Field) -> Field:
        """The same map on ``other``'s node grid."""
        if (self.grid, self.stride, self.origin) == (other.grid, other.stride, other.origin):
            return self
        ny, nx = other.node_yx()
        return Field(self.sample(ny, nx).astype(np.float32), other.stride, other.origin)

    def with_data(self, data: np.ndarray) -> Field:
        return Field(np.asarray(data, np.float32), self.stride, self.origin)


def _interp_index(q: np.ndarray, origin: float, stride: float,
                  n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right node and weight of the right node for positions ``q`` (clamped)."""
    t = np.clip((q - origin) / stride, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(t).astype(np.int64), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (t - i0).astype(np.float32)


def _interp_matrix(q: np.ndarray, origin: float, stride: float, n: int) -> np.ndarray:
    """Rows of bilinear weights of query positions ``q`` on ``n`` nodes (clamped)."""
    t = np.clip((q - origin) / stride, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(t).astype(np.int64), max(n - 2, 0))
    f = (t - i0).astype(np.float32)
    w = np.zeros((q.size, n), np.float32)
    rows = np.arange(q.size)
    if n == 1:
        w[:, 0] = 1.0
        return w
    w[rows, i0] = 1.0 - f
    w[rows, i0 + 1] += f
    return w


def triangle_jacobians(field: Field) -> np.ndarray:
    """Area ratio (source/output) of every mesh triangle; all > 0 means the mesh has no fold.

    Each grid cell is split into two triangles; returns ``(2, gy-1, gx-1)``.
    """
    d = field.data.astype(np.float64)
    s = field.stride
    gy, gx = field.grid
    yy, xx = np.meshgrid(np.arange(gy) * s, np.arange(gx) * s, indexing="ij")
    py, px = yy + d[0], xx + d[1]

    def area(a, b, c):  # signed area (x right, y down: positive for the rest triangles)
        (ay, ax), (by, bx), (cy, cx) = a, b, c
        return 0.5 * ((bx - ax) * (cy - ay) - (cx - ax) * (by - ay))

    p00 = (py[:-1, :-1], px[:-1, :-1])
    p01 = (py[:-1, 1:], px[:-1, 1:])
    p10 = (py[1:, :-1], px[1:, :-1])
    p11 = (py[1:, 1:], px[1:, 1:])
    rest = 0.5 * s * s
    return np.stack([area(p00, p01, p10) / rest, area(p11, p10, p01) / rest])
