"""Known deformations for validating alignment and stitching, and scoring against them.

A *content map* says, for each pixel ``q`` of a distorted image, which pixel
of the clean source it shows: ``content(q) = q + D(q)``, ``D`` a dense
``(2, h, w)`` displacement (dy, dx).  ``distort`` renders an image from one;
``pull_residual`` scores a recovered pull ``Field`` against two of them.

Used by the tests and ``benchmarks/bench_align.py`` on real EM images
(ISBI 2012 crops) until the acquisition simulator's ground truth is wired in.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from wiremap.align.field import Field


def smooth_warp(yx_shape: tuple[int, int], *, amplitude: float, sigma: float,
                stretch: tuple[float, float] = (0.0, 0.0), shift: tuple[float, float] = (0.0, 0.0),
                rotation_deg: float = 0.0, seed: int = 0) -> np.ndarray:
    """Smooth elastic displacement (max ``amplitude`` px, correlation ``sigma`` px) plus a
    stretch about the centre (fraction per axis), rotation and shift: ``(2, h, w)`` float64."""
    rng = np.random.default_rng(seed)
    h, w = yx_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    out = []
    for _ in range(2):
        n = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma, mode="wrap")
        out.append(n * (amplitude / max(np.abs(n).max(), 1e-12)))
    t = np.deg2rad(rotation_deg)
    ry = np.cos(t) * (yy - cy) - np.sin(t) * (xx - cx) + cy - yy
    rx = np.sin(t) * (yy - cy) + np.cos(t) * (xx - cx) + cx - xx
    out[0] += ry + (yy - cy) * stretch[0] + shift[0]
    out[1] += rx + (xx - cx) * stretch[1] + shift[1]
    return np.stack(out)


def distort(source: np.ndarray, content: np.ndarray, *, noise: float = 0.0, gain: float = 1.0,
            offset: float = 0.0, gamma: float = 1.0, seed: int = 0) -> np.ndarray:
    """uint8 image showing ``source`` through the content displacement (cubic, reflected at
    the border), then a contrast change ``255*(gain*v/255)**gamma + offset`` and noise."""
    h, w = content.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    v = ndimage.map_coordinates(np.asarray(source, np.float32), [yy + content[0], xx + content[1]],
                                order=3, mode="reflect")
    v = 255.0 * np.clip(gain * v / 255.0, 0, 1) ** gamma + offset
    if noise > 0:
        v = v + np.random.default_rng(seed).normal(0.0, noise, v.shape)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def add_fold(image: np.ndarray, content: np.ndarray, *, point: tuple[float, float],
             angle_deg: float, width: float, jump: float,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fold: a dark band of ``width`` px through ``point``; the tissue beyond it jumps by
    ``jump`` px along the band normal (the folded-over tissue is missing from the image).

    Takes the *clean source* ``image`` and its content map; returns the new content map
    (for rendering with ``distort``), the band mask (True on the band) and the side mask
    (True beyond the band).
    """
    h, w = content.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = np.deg2rad(angle_deg)
    ny, nx = np.cos(t), -np.sin(t)  # normal of a band running along (sin t, cos t)
    dist = (yy - point[0]) * ny + (xx - point[1]) * nx
    band = np.abs(dist) <= width / 2.0
    side = dist > width / 2.0
    new = content.copy()
    new[0][side] += jump * ny
    new[1][side] += jump * nx
    return new, band, side


def paint_band(img: np.ndarray, band: np.ndarray, level: float = 12.0, seed: int = 0) -> np.ndarray:
    """Paint a fold band dark (with a little texture)."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    out[band] = np.clip(level + rng.normal(0, 3, int(band.sum())), 0, 255).astype(img.dtype)
    return out


def pull_residual(field: Field, content_fixed: np.ndarray, content_moving: np.ndarray,
                  margin: int = 16, exclude: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel error (px) of a pull field from the fixed frame into the moving image.

    The truth: fixed pixel ``p`` shows source ``p + Cf(p)``; the field sends it to
    moving pixel ``q = p + F(p)``, which shows ``q + Cm(q)``.  Returns the
    distances at pixels at least ``margin`` from the border and outside ``exclude``.
    """
    h, w = content_fixed.shape[1:]
    d = field.dense((h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    qy, qx = yy + d[0], xx + d[1]
    my = qy + ndimage.map_coordinates(content_moving[0], [qy, qx], order=1, mode="nearest")
    mx = qx + ndimage.map_coordinates(content_moving[1], [qy, qx], order=1, mode="nearest")
    err = np.hypot(my - (yy + content_fixed[0]), mx - (xx + content_fixed[1]))
    keep = np.zeros((h, w), bool)
    keep[margin:h - margin, margin:w - margin] = True
    if exclude is not None:
        keep &= ~exclude
    return err[keep]
