"""Statistics of EM images, to compare synthetic renderings with real EM.

Every function takes arrays ``(z, y, x)`` (a single 2D section ``(y, x)`` is
accepted where it makes sense) and a pixel size in nanometres, and measures
what a connectomics reader judges by eye:

- the grey-level histogram (:func:`intensity_histogram`, compared with the
  earth mover's distance :func:`histogram_distance`, in grey levels);
- how much of the image is membrane, from labels (:func:`boundary_mask`) or
  from the image alone (:func:`dark_ridge_mask`, a Sato black-ridge filter at
  membrane scale, so real and synthetic images are measured the same way);
- the sizes of neurite cross-sections (:func:`cross_section_areas`, nm^2 of
  2D connected pieces of each label per section);
- the radially averaged power spectrum (:func:`radial_power_spectrum`) in
  cycles per nm, normalised to unit total power so that images of different
  contrast compare by texture and sharpness only; :func:`spectral_slope`
  summarises it.

Why these: histogram and membrane fraction are what a segmentation network
keys on first; the cross-section sizes check the geometry at the scale of
neurites; the power spectrum catches blur, noise and texture differences that
the other numbers miss.
"""

from __future__ import annotations

import cc3d
import numpy as np
from skimage.filters import sato

from wiremap.errors import InputError

__all__ = [
    "boundary_mask",
    "cross_section_areas",
    "dark_ridge_mask",
    "histogram_distance",
    "intensity_histogram",
    "membrane_fraction",
    "radial_power_spectrum",
    "regions_from_membrane",
    "spectral_slope",
]


def _as_stack(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        return a[None]
    if a.ndim != 3:
        raise InputError(f"{name} must be 2D (y, x) or 3D (z, y, x), got shape {a.shape}")
    return a


def intensity_histogram(image: np.ndarray, bins: int = 256) -> np.ndarray:
    """Normalised histogram (sums to 1) of ``uint8`` grey levels 0-255 in ``bins`` equal bins."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"intensity_histogram wants a uint8 image, got {image.dtype}")
    h = np.bincount(image.ravel(), minlength=256).astype(np.float64)
    if bins != 256:
        h = np.add.reduceat(h, np.linspace(0, 256, bins + 1).astype(int)[:-1])
    return h / max(h.sum(), 1.0)


def histogram_distance(h1: np.ndarray, h2: np.ndarray) -> float:
    """Earth mover's (Wasserstein-1) distance of two 256-bin histograms, in grey levels."""
    c1 = np.cumsum(np.asarray(h1, float) / max(np.sum(h1), 1e-12))
    c2 = np.cumsum(np.asarray(h2, float) / max(np.sum(h2), 1e-12))
    return float(np.abs(c1 - c2).sum() * 256.0 / len(c1))


def boundary_mask(labels: np.ndarray, width_px: int = 2) -> np.ndarray:
    """Pixels within a boundary band between different labels, per 2D section.

    ``width_px=2`` marks the two pixels either side of every label change
    (4-connectivity), 0 counting as a label; larger even widths dilate the
    band symmetrically.  This is how the membrane fraction of a labelling is
    defined here.
    """
    lab = _as_stack(labels, "labels")
    if width_px < 1:
        raise InputError(f"width_px must be >= 1, got {width_px}")
    b = np.zeros(lab.shape, bool)
    dy = lab[:, 1:, :] != lab[:, :-1, :]
    dx = lab[:, :, 1:] != lab[:, :, :-1]
    b[:, 1:, :] |= dy
    b[:, :-1, :] |= dy
    b[:, :, 1:] |= dx
    b[:, :, :-1] |= dx
    extra = (width_px - 2 + 1) // 2
    for _ in range(max(extra, 0)):
        g = b.copy()
        g[:, 1:, :] |= b[:, :-1, :]
        g[:, :-1, :] |= b[:, 1:, :]
        g[:, :, 1:] |= b[:, :, :-1]
        g[:, :, :-1] |= b[:, :, 1:]
        b = g
    return b if np.asarray(labels).ndim == 3 else b[0]


def membrane_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels that are membrane in a boolean mask."""
    mask = np.asarray(mask)
    if mask.size == 0:
        raise InputError("membrane_fraction of an empty mask")
    return float(np.count_nonzero(mask) / mask.size)


def dark_ridge_mask(
    image: np.ndarray, pixel_nm: float, membrane_nm: float = 24.0, threshold: float = 0.08
) -> np.ndarray:
    """Membrane-like pixels found from the image alone: dark ridges at membrane scale.

    Each section is scaled to its 1st-99th percentile range, then filtered
    with Sato's black-ridge filter at sigma ``membrane_nm / 2`` (in pixels of
    ``pixel_nm``); pixels whose response exceeds ``threshold`` are membrane.
    The same settings applied to real and synthetic images give comparable
    fractions whatever the labelling convention of the real data.  The
    defaults were chosen on real ssTEM: against the expert membrane labels
    they reach F1 0.66 (ISBI 2012) and 0.61 (VNC) and mark 24 % / 19 % of the
    pixels, where the labels mark 22 % / 21 %.
    """
    img = _as_stack(image, "image").astype(np.float32)
    sigma = max(membrane_nm / 2.0 / pixel_nm, 0.5)
    out = np.zeros(img.shape, bool)
    for k, sec in enumerate(img):
        lo, hi = np.percentile(sec, [1, 99])
        s = np.clip((sec - lo) / max(hi - lo, 1e-6), 0, 1)
        out[k] = sato(s, sigmas=[sigma], black_ridges=True, mode="reflect") > threshold
    return out if np.asarray(image).ndim == 3 else out[0]


def regions_from_membrane(membrane: np.ndarray) -> np.ndarray:
    """Per-section 2D connected components (4-connected) of non-membrane pixels, uint32."""
    mem = _as_stack(membrane, "membrane").astype(bool)
    out = np.zeros(mem.shape, np.uint32)
    for k, sec in enumerate(mem):
        out[k] = cc3d.connected_components(~sec, connectivity=4).astype(np.uint32)
    return out if np.asarray(membrane).ndim == 3 else out[0]


def cross_section_areas(
    labels: np.ndarray, pixel_nm: tuple[float, float] | float, min_area_nm2: float = 0.0
) -> np.ndarray:
    """Areas (nm^2) of the 2D connected pieces of every non-zero label, over all sections.

    A neurite cut by a section may appear as several pieces; each piece is
    one cross-section.  Pieces smaller than ``min_area_nm2`` are dropped (real
    labellings have slivers that are no neurite).
    """
    lab = _as_stack(labels, "labels")
    yx = np.broadcast_to(np.asarray(pixel_nm, dtype=float), (2,))
    px_area = float(yx[0] * yx[1])
    areas = []
    for sec in lab:
        cc = cc3d.connected_components(sec, connectivity=4)
        cnt = np.bincount(cc.ravel().astype(np.intp))[1:]
        areas.append(cnt[cnt > 0] * px_area)
    a = np.concatenate(areas) if areas else np.empty(0)
    return a[a >= min_area_nm2]


def radial_power_spectrum(
    image: np.ndarray, pixel_nm: float, n_bins: int = 64, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum, averaged over sections.

    Returns ``(freq, power)``: bin centres in cycles per nm (up to Nyquist,
    ``0.5 / pixel_nm``) and the mean ``|FFT|^2`` in each annulus.  Each
    section is mean-subtracted and Hann-windowed; with ``normalize`` the
    power sums to 1 over the bins, so only the shape of the spectrum counts.
    """
    img = _as_stack(image, "image").astype(np.float64)
    _, ny, nx = img.shape
    win = np.outer(np.hanning(ny), np.hanning(nx))
    fy = np.fft.fftfreq(ny, d=pixel_nm)
    fx = np.fft.fftfreq(nx, d=pixel_nm)
    fr = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    nyq = 0.5 / pixel_nm
    edges = np.linspace(0, nyq, n_bins + 1)
    which = np.digitize(fr.ravel(), edges) - 1
    valid = (which >= 0) & (which < n_bins)
    p = np.zeros(n_bins)
    for sec in img:
        f = np.fft.fft2((sec - sec.mean()) * win)
        p += np.bincount(which[valid], (np.abs(f) ** 2).ravel()[valid], minlength=n_bins)
    cnt = np.bincount(which[valid], minlength=n_bins).astype(float)
    p = p / np.maximum(cnt, 1) / len(img)
    if normalize:
        p = p / max(p.sum(), 1e-300)
    return 0.5 * (edges[1:] + edges[:-1]), p


def spectral_slope(freq: np.ndarray, power: np.ndarray, band: tuple[float, float]) -> float:
    """Least-squares slope of log10(power) against log10(freq) within ``band`` (cycles/nm)."""
    sel = (freq >= band[0]) & (freq <= band[1]) & (power > 0)
    if sel.sum() < 2:
        raise InputError(f"fewer than two spectrum bins in band {band}")
    return float(np.polyfit(np.log10(freq[sel]), np.log10(power[sel]), 1)[0])
