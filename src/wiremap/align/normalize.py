"""Contrast normalisation and defect masks of EM sections, for matching.

* ``normalize_section``: histogram equalisation through a 256-entry look-up
  table built from a strided sample of the tissue.  Any monotone change of
  microscope settings (brightness, contrast, gamma) maps to the same output,
  and the result stays uint8 (1 byte/pixel: a 16k section is 256 MB, not 1 GB).
* ``clahe``: scikit-image's CLAHE, for small images and overlays.
* ``tissue_mask`` / ``is_blank``: where there is tissue; a section with
  almost none is blank (missing, or imaged off the tissue).
* ``fold_mask``: folds and cracks show up as wide bands far darker (folds) or
  brighter (cracks) than tissue; thin membranes vanish under a Gaussian of a
  few pixels, the bands do not.  Narrow folds are only about half as dark as
  tissue, as dark as membranes; what sets them apart is that they are *long
  straight thin lines* crossing much of the section (``line_folds``: a Hough
  transform of the thin dark structure, each candidate line checked for dark
  cover along its length and light tissue on both sides).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage import exposure
from skimage.transform import hough_line, hough_line_peaks


def _sample(img: Any, max_pixels: int = 1 << 20) -> np.ndarray:
    h, w = (int(n) for n in img.shape[-2:])
    step = max(1, int(np.sqrt(h * w / max_pixels)))
    return np.asarray(img[::step, ::step])


def normalize_section(img: Any, mask: np.ndarray | None = None) -> np.ndarray:
    """uint8 histogram-equalised copy of ``img`` (look-up table from a strided sample)."""
    a = np.asarray(img)
    s = _sample(a).astype(np.float32).ravel()
    if mask is not None:
        ms = _sample(np.asarray(mask, bool)).ravel()
        if ms.sum() > 100:
            s = s[ms]
    if a.dtype == np.uint8:
        hist = np.bincount(s.astype(np.uint8), minlength=256).astype(np.float64)
        cdf = np.cumsum(hist)
        # mid-rank of each grey value, so ties map to their centre
        lut = np.clip(255.0 * (cdf - 0.5 * hist) / max(cdf[-1], 1.0), 0, 255).astype(np.uint8)
        return lut[a]
    qs = np.quantile(s, np.linspace(0, 1, 257))
    out = np.interp(a.astype(np.float32), qs, np.linspace(0, 255, 257))
    return out.astype(np.uint8)


def clahe(img: np.ndarray, kernel_size: int | None = None, clip_limit: float = 0.01) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (float32 in [0, 1])."""
    a = np.asarray(img, np.float32)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return exposure.equalize_adapthist(a, kernel_size=kernel_size,
                                       clip_limit=clip_limit).astype(np.float32)


def tissue_mask(img: np.ndarray, sigma: float = 4.0, min_std: float = 2.0) -> np.ndarray:
    """True where the image has texture (local standard deviation above ``min_std`` grey levels)."""
    a = np.asarray(img, np.float32)
    m = ndimage.gaussian_filter(a, sigma)
    v = ndimage.gaussian_filter(a * a, sigma) - m * m
    return np.sqrt(np.maximum(v, 0)) > min_std


def is_blank(img: Any, min_tissue: float = 0.05) -> bool:
    """A section is blank when less than ``min_tissue`` of it (sampled) has texture.

    Texture (local std over 5 grey levels) is eroded first: the straight edge between a blank tile and the empty
    canvas (tiles the stitcher could not place) is textured, but only a thin band.
    """
    s = _sample(img, 1 << 18)
    # detector noise alone gives a local std of ~2-3 grey levels; tissue gives 10 or more
    tex = ndimage.binary_erosion(tissue_mask(s, sigma=2.0, min_std=5.0), iterations=6)
    return float(tex.mean()) < min_tissue


def empty_mask(img: Any, min_area: int = 64) -> np.ndarray:
    """True on canvas no tile covers: exact zeros in connected areas of ``min_area`` px or more.

    Large sections are judged by blocks (a block is empty when all its pixels are 0),
    so labelling runs on a ~1k image whatever the section size.
    """
    a = np.asarray(img)
    h, w = a.shape[-2:]
    f = max(1, min(h, w) // 1024)
    if f > 1:
        hh, ww = h // f * f, w // f * f
        small = a[:hh, :ww].reshape(hh // f, f, ww // f, f).max(axis=(1, 3)) == 0
    else:
        small = a == 0
    if not small.any():
        return np.zeros((h, w), bool)
    lab, n = ndimage.label(small)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes * f * f >= min_area
    keep[0] = False
    small = keep[lab]
    if f == 1:
        return small
    out = np.zeros((h, w), bool)
    up = np.repeat(np.repeat(small, f, axis=0), f, axis=1)
    out[:up.shape[0], :up.shape[1]] = up
    return out


def fold_mask(img: Any, sigma: float = 2.0, dark: float = 0.25, bright: float = 1.8,
              min_area: int = 200, min_extent: float = 0.2, min_elongation: float = 4.0,
              grow: int = 3, lines: bool = True) -> np.ndarray:
    """True on fold (dark) and crack (bright) bands: smoothed intensity far from the median,
    plus (``lines``) the long straight thin dark bands ``line_folds`` finds.

    ``dark``/``bright`` are fractions of the median smoothed tissue intensity.
    A band must cover ``min_area`` pixels and span at least ``min_extent`` of
    the shorter image side and be ``min_elongation`` times longer than its widest
    point (folds and cracks are long and thin; dark cell bodies are not) and touch
    the image edge only at its ends (not dark tissue cut by the edge); kept bands
    are grown by ``grow`` pixels.
    """
    a = np.asarray(img, np.float32)
    g = ndimage.gaussian_filter(a, sigma)
    med = float(np.median(g))
    cand = (g < dark * med) | (g > bright * med) if med > 0 else np.zeros(a.shape, bool)
    out = np.zeros(a.shape, bool)
    if cand.any():
        lab, n = ndimage.label(cand)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = sizes >= min_area
        keep[0] = False
        span = min_extent * min(a.shape)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if keep[i] and sl is not None:
                extent = float(np.hypot(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
                # widest point (twice the largest inscribed radius), not area / extent: a
                # dark cell body with a long tail is no band
                piece = np.pad(lab[sl] == i, 1)
                width = 2.0 * float(ndimage.distance_transform_edt(piece).max())
                # a fold crossing the section touches the image edge only at its two ends;
                # dark tissue lying along the edge (a cell body cut by it) touches it all along
                edge = lab == i
                contact = int(edge[0].sum() + edge[-1].sum() + edge[:, 0].sum() + edge[:, -1].sum())
                keep[i] = extent >= span and extent >= min_elongation * width \
                    and contact <= min(4.0 * max(width, 1.0), extent / 3.0)
        out = keep[lab]
    if lines and med > 0:
        for band in line_folds(g, smoothed=True):
            if (out & band).sum() < 0.3 * band.sum():  # found by intensity: keep that outline
                out |= band
    if grow > 0 and out.any():
        out = ndimage.binary_dilation(out, iterations=grow)
    return out


def line_folds(img: Any, *, sigma: float = 2.0, smoothed: bool = False, dark: float = 0.7,
               max_width: int = 16, min_extent: float = 0.3, min_cover: float = 0.85,
               min_depth: float = 0.25, max_lines: int = 4,
               angle_step_deg: float = 0.5) -> list[np.ndarray]:
    """Masks (bool, image shape) of the long straight thin dark bands of a section: folds.

    A narrow fold is about half as dark as tissue, like a membrane or a myelin
    sheath; it differs by being straight and crossing much of the section.  So:
    thin dark structure (darker than ``dark`` x the local closing, which leaves
    out dark objects wider than ``2 * max_width`` px, such as nuclei) ->
    Hough transform (``angle_step_deg``) -> the ``max_lines`` strongest lines,
    each kept if it crosses at least ``min_extent`` of the shorter image side,
    at least ``min_cover`` of its length lies on thin dark structure (membranes
    curve away from any line after ~100 px; a straight fold does not), and its
    mean profile across the line is a dip at least ``min_depth`` x the median
    deep and at most ``max_width`` px wide with tissue on both sides (not the
    edge of a dark region).  Each band mask is the strip the dip spans (plus the
    angle's uncertainty).
    """
    a = np.asarray(img, np.float32)
    g = a if smoothed else ndimage.gaussian_filter(a, sigma)
    h, w = g.shape
    med = float(np.median(g))
    if med <= 0 or min(h, w) < 4 * max_width:
        return []
    closed = ndimage.grey_closing(g, size=(2 * max_width + 1, 2 * max_width + 1))
    thin = g < dark * closed
    if thin.mean() == 0.0:
        return []
    thetas = np.deg2rad(np.arange(-90.0, 90.0, angle_step_deg))
    acc, th, rho = hough_line(thin, theta=thetas)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    near = ndimage.binary_dilation(thin)
    bands = []
    for _, t, r in zip(*hough_line_peaks(acc, th, rho, num_peaks=max_lines,
                                         min_distance=2 * max_width, min_angle=10), strict=True):
        c, s = float(np.cos(t)), float(np.sin(t))
        ts = np.arange(-float(h + w), float(h + w), 1.0)
        px, py = r * c - ts * s, r * s + ts * c  # points of x cos t + y sin t = r
        ins = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
        if ins.sum() < min_extent * min(h, w):
            continue
        xi, yi = np.rint(px[ins]).astype(int), np.rint(py[ins]).astype(int)
        if near[yi, xi].mean() < min_cover:
            continue
        # mean profile across the line, offsets -3 max_width .. 3 max_width
        offs = np.arange(-3 * max_width, 3 * max_width + 1)
        qx = np.clip(px[ins][None] + offs[:, None] * c, 0, w - 1)
        qy = np.clip(py[ins][None] + offs[:, None] * s, 0, h - 1)
        prof = ndimage.map_coordinates(g, [qy.ravel(), qx.ravel()], order=1).reshape(qx.shape)
        prof = np.median(prof, axis=1) / med
        centre = float(prof[np.abs(offs) <= 1].min())
        side = np.abs(offs) >= 2 * max_width
        left, right = float(np.median(prof[side & (offs < 0)])), float(np.median(prof[side & (offs > 0)]))
        if min(left, right) - centre < min_depth:
            continue
        inside = prof < centre + 0.5 * (min(left, right) - centre)
        lo = hi = int(np.argmin(np.abs(offs)))
        while lo > 0 and inside[lo - 1]:
            lo -= 1
        while hi < len(offs) - 1 and inside[hi + 1]:
            hi += 1
        if offs[hi] - offs[lo] + 1 > max_width:
            continue
        # the band: the strip the dip spans, a little wider (the Hough angle is only
        # good to ``angle_step_deg``)
        dist = xx * c + yy * s - r
        bands.append((dist >= offs[lo] - 1.5) & (dist <= offs[hi] + 1.5))
    return bands


def enhance(img: Any, sigma_lo: float = 1.0, sigma_hi: float = 16.0, *,
            band: int = 2048) -> np.ndarray:
    """Band-pass (difference of Gaussians, float16) for matching between sections.

    Consecutive sections share membranes (cell-sized structure) but not vesicle
    texture or noise (finest scales), and tile seams / vignetting live at the
    coarsest ones; keeping the band between ``sigma_lo`` and ``sigma_hi`` px
    keeps what continues from section to section.  Filtered in row bands of
    ``band`` rows (plus a margin of 4 ``sigma_hi``) and stored as float16, so a
    16k section costs 512 MB, not 1 GB plus temporaries.
    """
    h = int(img.shape[-2])
    m = int(4 * sigma_hi) + 1
    out = np.empty(img.shape[-2:], np.float16)
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        a0, a1 = max(0, r0 - m), min(h, r1 + m)
        a = np.asarray(img[a0:a1], np.float32)
        lo = ndimage.gaussian_filter(a, sigma_lo) if sigma_lo > 0 else a
        res = lo - ndimage.gaussian_filter(a, sigma_hi)
        out[r0:r1] = res[r0 - a0:r0 - a0 + (r1 - r0)]
    return out
