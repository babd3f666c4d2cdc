"""Render an image through a ``Field``, one output ROI at a time.

``render_roi`` reads only the source window that the ROI's pull coordinates
touch, so the blockwise engine can render a section of any size block by
block (the source may be a NumPy array or anything sliceable that returns
arrays, e.g. a TensorStore view).  Outside the source, pixels get ``cval``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from wiremap.align.field import Field


def source_window(field: Field, out_offset: tuple[int, int], out_shape: tuple[int, int],
                  src_shape: tuple[int, int], margin: int = 2,
                  dense: np.ndarray | None = None) -> tuple[slice, slice] | None:
    """Source slices an output ROI reads (``None`` when it reads nothing inside the source)."""
    d = field.dense(out_shape, out_offset) if dense is None else dense
    y0 = int(np.floor(out_offset[0] + d[0].min())) - margin
    y1 = int(np.ceil(out_offset[0] + out_shape[0] - 1 + d[0].max())) + margin + 1
    x0 = int(np.floor(out_offset[1] + d[1].min())) - margin
    x1 = int(np.ceil(out_offset[1] + out_shape[1] - 1 + d[1].max())) + margin + 1
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, src_shape[0]), min(x1, src_shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    return slice(y0, y1), slice(x0, x1)


def render_roi(source: Any, field: Field, out_offset: tuple[int, int],
               out_shape: tuple[int, int], *, order: int = 1,
               cval: float = 0.0) -> np.ndarray:
    """Pixels ``out_offset + [0, out_shape)`` of ``source`` warped by ``field`` (float32)."""
    src_shape = (int(source.shape[-2]), int(source.shape[-1]))
    d = field.dense(out_shape, out_offset)
    win = source_window(field, out_offset, out_shape, src_shape, dense=d)
    if win is None:
        return np.full(out_shape, cval, np.float32)
    patch = np.asarray(source[win], dtype=np.float32)
    ys = np.arange(out_shape[0], dtype=np.float32)[:, None] + (out_offset[0] - win[0].start)
    xs = np.arange(out_shape[1], dtype=np.float32)[None, :] + (out_offset[1] - win[1].start)
    d[0] += ys
    d[1] += xs
    return ndimage.map_coordinates(patch, d, order=order, mode="constant", cval=cval,
                                   output=np.float32, prefilter=order > 1)


def warp_image(source: Any, field: Field, out_shape: tuple[int, int], *, order: int = 1,
               cval: float = 0.0, block: int = 1024, dtype: Any = np.float32) -> np.ndarray:
    """Whole output image, rendered block by block (peak memory ~ a few blocks + output)."""
    out = np.empty(out_shape, dtype)
    for y in range(0, out_shape[0], block):
        for x in range(0, out_shape[1], block):
            shp = (min(block, out_shape[0] - y), min(block, out_shape[1] - x))
            r = render_roi(source, field, (y, x), shp, order=order, cval=cval)
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                r = np.clip(np.rint(r), info.min, info.max)
            out[y:y + shp[0], x:x + shp[1]] = r
    return out
