"""Alignment residual: how far points ended up from where they belong, in pixels.

Give the positions an alignment put a set of landmarks at, and their true
positions (from the synthetic ground-truth warp, or from matched features in
a reference section), as arrays of the same shape ``(..., 2)`` in ``(y, x)``
pixels (any last-axis length works: ``(z, y, x)`` too).  A row with any NaN
in either array is an invalid point (not placed, or not visible) and is left
out, as is any point where ``mask`` is False.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wiremap.errors import InputError

__all__ = ["Residual", "alignment_residual"]


@dataclass(frozen=True)
class Residual:
    """Summary of per-point Euclidean residuals in pixels (NaN when ``n == 0``)."""

    mean_px: float
    p95_px: float  # 95th percentile, linear interpolation (numpy's default)
    max_px: float
    n: int  # points scored


def alignment_residual(
    predicted_yx: np.ndarray,
    true_yx: np.ndarray,
    mask: np.ndarray | None = None,
) -> Residual:
    """Mean, 95th percentile and maximum distance between placed and true positions.

    Example:
        >>> alignment_residual([[0.0, 0.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 0.0]])
        Residual(mean_px=3.0, p95_px=4.8, max_px=5.0, n=2)
    """
    pred = np.asarray(predicted_yx, dtype=np.float64)
    true = np.asarray(true_yx, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim < 1:
        raise InputError(
            f"predicted_yx has shape {pred.shape} but true_yx has shape {true.shape}; "
            "they must match, with coordinates on the last axis"
        )
    dist = np.sqrt(((pred - true) ** 2).sum(axis=-1))
    valid = np.isfinite(dist)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != dist.shape:
            raise InputError(f"mask has shape {m.shape}, expected {dist.shape}")
        valid &= m
    d = dist[valid]
    if d.size == 0:
        nan = float("nan")
        return Residual(nan, nan, nan, 0)
    return Residual(
        mean_px=float(d.mean()),
        p95_px=float(np.percentile(d, 95)),
        max_px=float(d.max()),
        n=int(d.size),
    )
