"""The grey range of an EM image: the robust percentiles that networks' inputs are normalised by.

Voxels of value 0 are left out: an aligned stack marks empty canvas and blank
sections with 0, and counting them squeezes the tissue into the upper part of
the range (every membrane and synaptic density then looks pale).  In raw EM a
true 0 is a rare saturated pixel (< 0.2 % in the real volumes used here), so
leaving those out moves nothing.
"""

from __future__ import annotations

import numpy as np


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
