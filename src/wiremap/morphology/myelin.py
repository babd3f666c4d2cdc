"""Myelin sheaths from the EM image: thick, very dark bands around axons.

Compact myelin is the darkest thing in EM neuropil and, unlike membranes
(1-2 voxels) and extracellular gaps, it is tens of nanometres thick.  So a
tuned filter does it (no training data is needed and none is shipped): smooth
each section a little, keep what is darker than ``threshold``, open with a
disc of ``min_thickness_nm`` (thin dark membranes vanish, sheaths stay),
close small gaps between lamellae, and drop specks below ``min_area_nm2``.
Per section, so it works at any z resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from wiremap.errors import InputError


@dataclass(frozen=True)
class MyelinParams:
    """Filter settings (grey levels of uint8 images, lengths in nm)."""

    threshold: float = 48.0  # smoothed grey level below which a voxel may be myelin
    sigma_nm: float = 6.0  # in-plane Gaussian smoothing before the threshold
    min_thickness_nm: float = 30.0  # sheaths are thicker than this; membranes are not
    close_nm: float = 12.0  # gaps between lamellae to close
    min_area_nm2: float = 40000.0  # smaller dark specks in a section are not myelin
    edge_threshold: float = 70.0  # grey level up to which the sheath's blurred rim is grown back
    edge_nm: float = 4.0  # how far the rim is grown back


def _disc(radius_px: float) -> np.ndarray:
    r = max(int(round(radius_px)), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= radius_px**2 + 1e-9


def myelin_context(
    resolution_nm: tuple[float, float, float], params: MyelinParams | None = None
) -> tuple[int, int, int]:
    """Context (z, y, x voxels) a block needs for the filter to match the whole-volume result."""
    p = params or MyelinParams()
    px = float(resolution_nm[2])
    reach = 4 * p.sigma_nm + p.min_thickness_nm + p.close_nm + 2 * np.sqrt(p.min_area_nm2)
    return (0, int(np.ceil(reach / px)), int(np.ceil(reach / px)))


def myelin_mask(
    image_zyx: np.ndarray, resolution_nm: tuple[float, float, float], params: MyelinParams | None = None
) -> np.ndarray:
    """uint32 mask (1 = myelin) of a uint8 ``(z, y, x)`` image (pure function)."""
    if image_zyx.ndim != 3:
        raise InputError(f"image must be 3-D (z, y, x), got shape {image_zyx.shape}")
    p = params or MyelinParams()
    px = float(resolution_nm[2])
    sigma = p.sigma_nm / px
    opening = _disc(p.min_thickness_nm / 2 / px)
    closing = _disc(p.close_nm / px)
    min_px = p.min_area_nm2 / (px * float(resolution_nm[1]))
    out = np.zeros(image_zyx.shape, np.uint32)
    for z in range(image_zyx.shape[0]):
        section = image_zyx[z].astype(np.float32)
        tissue = image_zyx[z] > 0  # 0: no data (an aligned stack's empty canvas, a blank section)
        if not tissue.any():
            continue
        section[~tissue] = np.median(section[tissue])  # no data must not look like a dark sheath
        if sigma > 0:
            section = ndimage.gaussian_filter(section, sigma, mode="nearest")
        dark = (section < p.threshold) & tissue
        if not dark.any():
            continue
        dark = ndimage.binary_opening(dark, opening)
        dark = ndimage.binary_closing(dark, closing, border_value=0) | dark
        lab, n = ndimage.label(dark)
        if n:
            sizes = np.bincount(lab.ravel())
            keep = sizes >= min_px
            keep[0] = False
            core = keep[lab]
            # smoothing blurs the sheath's edge above the threshold: grow the rim back (hysteresis)
            rim = ndimage.binary_dilation(core, _disc(p.edge_nm / px)) & (section < p.edge_threshold)
            out[z] = core | rim
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (1.0 when both are empty)."""
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
