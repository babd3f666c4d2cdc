"""The grey range of an EM image: the robust percentiles that networks' inputs are normalised by.

Voxels of value 0 are left out: an aligned stack marks empty canvas and blank
sections with 0, and counting them squeezes the tissue into the upper part of
the range (every membrane and synaptic density then looks pale).  In raw EM a
true 0 is a rare saturated pixel (< 0.2 % in the real volumes used here), so
leaving those out moves nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wiremap.roi import Roi

if TYPE_CHECKING:
    from wiremap.volume import Layer

SECTION_SAMPLE_SIDE = 2048  # voxels: each section's range is taken from its central crop of at most this side
MIN_TISSUE_FRACTION = 0.05  # sections with less non-zero image (blank, missing) take the stack's range


def grey_range(sample: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """``(lo, hi)``: the ``low`` and ``high`` percentiles of the non-zero voxels of ``sample``
    (of all of them if none is non-zero); ``hi`` is at least ``lo + 1`` for a flat image."""
    values = np.asarray(sample).ravel()
    tissue = values[values != 0]
    if tissue.size:
        values = tissue
    if values.size == 0:
        return 0.0, 255.0
    lo, hi = np.percentile(values, [low, high])
    if hi - lo < 1e-3:
        hi = lo + 1.0
    return float(lo), float(hi)


def section_grey_ranges(layer: Layer) -> np.ndarray:
    """``(sections, 2)`` float64: the grey range of each section of an image layer.

    Serial sections are imaged one by one, and brightness and contrast drift or jump
    between them (H01's microscope settings changed part-way through).  A section with
    almost no tissue (blank, missing: mostly 0) gets the range of the whole stack.
    Each range comes from the central crop of at most ``SECTION_SAMPLE_SIDE`` voxels,
    every 4th voxel, so the cost is one small read per section.
    """
    z, y, x = layer.info.shape_zyx
    cy, cx = min(y, SECTION_SAMPLE_SIDE), min(x, SECTION_SAMPLE_SIDE)
    y0, x0 = (y - cy) // 2, (x - cx) // 2
    samples = [layer.read(Roi((k, y0, x0), (1, cy, cx)))[0, ::4, ::4] for k in range(z)]
    tissue = [np.count_nonzero(s) >= MIN_TISSUE_FRACTION * s.size for s in samples]
    stack = grey_range(np.concatenate([s.ravel() for s, t in zip(samples, tissue, strict=True) if t] or [samples[0]]))
    return np.array([grey_range(s) if t else stack for s, t in zip(samples, tissue, strict=True)], dtype=np.float64)
