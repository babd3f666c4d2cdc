"""Patch-wise flow between two images: cross-correlation peaks on a node grid.

``estimate_flow(fixed, moving, cfg, prior=...)`` cuts a patch around every node
of the output grid from ``fixed`` and the same patch of ``moving`` *rendered
through the prior field*, correlates them with FFTs (optionally whitened:
``whiten=1`` is phase correlation, ``0`` plain cross-correlation), and returns
the prior plus the measured residual shift (sub-pixel by a parabola through
the peak).  Each match gets a confidence, the ratio of the highest to the
second-highest correlation peak (as in SOFIMA's ``peak_ratio``); weak or
off-image matches are ``NaN``.  Node rows are processed in chunks, so memory
is bounded by ``chunk_rows`` rows of patches whatever the image size.

Why our own and not ``skimage.registration.phase_cross_correlation``: that
handles one pair per call (~1 ms each); a 16k section has 260k patches, which
batched FFTs do ~50x faster, and we need the peak ratio as a confidence.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict

from wiremap.align.field import Field, grid_shape
from wiremap.align.warp import render_roi


class FlowConfig(BaseModel):
    """How patches are matched at one scale."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patch: int = 64  # patch side in pixels (even)
    stride: int = 32  # pixels between nodes of the flow grid
    max_shift: int = 12  # search radius around the prior, pixels
    whiten: float = 0.5  # spectral whitening exponent: 0 = cross-correlation, 1 = phase corr.
    min_peak_ratio: float = 1.3  # matches with a weaker best/second peak ratio are invalid
    min_valid: float = 0.6  # minimum fraction of a patch inside the image and the mask
    render_order: int = 1  # spline order when rendering ``moving`` through the prior
    chunk_rows: int = 8  # node rows per batch (memory: chunk_rows * gx * patch^2 * 16 B)


def _patches(img: np.ndarray, valid: np.ndarray, stride: int, p: int) -> tuple[np.ndarray, ...]:
    v = sliding_window_view(img, (p, p))[::stride, ::stride]
    m = sliding_window_view(valid, (p, p))[::stride, ::stride]
    return v.reshape(-1, p, p), m.reshape(-1, p, p)


def _same_piece(labels: np.ndarray, stride: int, p: int) -> np.ndarray:
    """Per patch, pixels in the same mask piece as the patch centre (all pieces if the
    centre is masked), so a patch next to a fold only sees its own side."""
    lab = sliding_window_view(labels, (p, p))[::stride, ::stride].reshape(-1, p, p)
    centre = lab[:, p // 2, p // 2][:, None, None]
    return (lab == centre) | ((centre == 0) & (lab > 0))


def _read_padded(img: Any, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """``img[y0:y1, x0:x1]`` as float32, zero outside the image, plus the inside mask."""
    h, w = img.shape[-2:]
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    ok = np.zeros(out.shape, bool)
    ys, ye, xs, xe = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = np.asarray(img[ys:ye, xs:xe], np.float32)
        ok[ys - y0:ye - y0, xs - x0:xe - x0] = True
    return out, ok


def _prepare(a: np.ndarray, ok: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = window * ok
    sw = w.sum(axis=(1, 2))
    mean = (a * w).sum(axis=(1, 2)) / np.maximum(sw, 1e-6)
    z = (a - mean[:, None, None]) * w
    return z, sw / window.sum()


def correlate(f: np.ndarray, m: np.ndarray, max_shift: int,
              whiten: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel shift (N, 2) of ``m`` relative to ``f`` (``m(x + d) ~ f(x)``) and peak ratio (N,).

    ``f`` and ``m`` are (N, Py, Px) zero-mean windowed patches.
    """
    n, py, px = f.shape
    ff = scipy.fft.rfft2(f, workers=2)
    fm = scipy.fft.rfft2(m, workers=2)
    x = np.conj(ff) * fm
    if whiten > 0:
        x /= np.abs(x) ** whiten + 1e-6
    c = scipy.fft.irfft2(x, s=(py, px), workers=2)
    r = min(max_shift + 1, min(py, px) // 2 - 1)
    # shifts -r..r in both axes, gathered from the periodic correlation
    c = c[:, np.arange(-r, r + 1) % py][:, :, np.arange(-r, r + 1) % px]
    flat = c.reshape(n, -1).argmax(axis=1)
    iy, ix = np.unravel_index(flat, c.shape[1:])
    rows = np.arange(n)
    peak = c[rows, iy, ix]
    # sub-pixel: parabola through the peak and its neighbours, per axis
    iyc, ixc = np.clip(iy, 1, 2 * r - 1), np.clip(ix, 1, 2 * r - 1)

    def vertex(lo, mid, hi):
        den = lo - 2 * mid + hi
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(den < 0, 0.5 * (lo - hi) / den, 0.0)
        return np.clip(off, -0.5, 0.5)

    dy = iyc - r + vertex(c[rows, iyc - 1, ixc], c[rows, iyc, ixc], c[rows, iyc + 1, ixc])
    dx = ixc - r + vertex(c[rows, iyc, ixc - 1], c[rows, iyc, ixc], c[rows, iyc, ixc + 1])
    # second peak: the maximum outside a 5x5 neighbourhood of the first
    yy = np.arange(2 * r + 1)
    near = (np.abs(yy[None, :, None] - iy[:, None, None]) <= 2) & \
           (np.abs(yy[None, None, :] - ix[:, None, None]) <= 2)
    second = np.where(near, -np.inf, c).reshape(n, -1).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(second > 0, peak / second, np.where(peak > 0, 10.0, 0.0))
    at_edge = (iy == 0) | (iy == 2 * r) | (ix == 0) | (ix == 2 * r)
    ratio = np.where(at_edge, 0.0, ratio)
    return np.stack([dy, dx], axis=1).astype(np.float32), ratio.astype(np.float32)


def estimate_flow(fixed: Any, moving: Any, cfg: FlowConfig | None = None, *,
                  prior: Field | None = None, fixed_mask: np.ndarray | None = None,
                  moving_mask: np.ndarray | None = None) -> tuple[Field, np.ndarray]:
    """Flow field from ``fixed`` (output frame) to ``moving`` and its confidence.

    Returns ``(field, ratio)``: ``field`` on the ``cfg.stride`` grid of ``fixed``
    (prior + measured residual, NaN where the match is invalid) and the peak
    ratio per node (0 where invalid).  Masks are non-zero where the image may be
    used (tissue outside folds); integer masks label the pieces a fold cuts the
    tissue into, and a patch only uses the piece under its centre.
    ``moving_mask`` is warped with the prior.
    """
    cfg = cfg or FlowConfig()
    h, w = (int(n) for n in fixed.shape[-2:])
    s, p = cfg.stride, cfg.patch
    gy, gx = grid_shape((h, w), s)
    half = p // 2
    prior_f = prior.resample((h, w), s) if prior is not None else Field.zeros((h, w), s)
    base = prior_f.data
    win = np.outer(np.hanning(p + 2)[1:-1], np.hanning(p + 2)[1:-1]).astype(np.float32)
    out = np.full((2, gy, gx), np.nan, np.float32)
    ratio_out = np.zeros((gy, gx), np.float32)
    x0, x1 = -half, (gx - 1) * s + half
    for i0 in range(0, gy, cfg.chunk_rows):
        i1 = min(i0 + cfg.chunk_rows, gy)
        y0, y1 = i0 * s - half, (i1 - 1) * s + half
        f, fok = _read_padded(fixed, y0, y1, x0, x1)
        flab = None
        if fixed_mask is not None:
            flab, _ = _read_padded(fixed_mask, y0, y1, x0, x1)
            fok &= flab > 0
        mv = render_roi(moving, prior_f, (y0, x0), (y1 - y0, x1 - x0), order=cfg.render_order,
                        cval=np.nan)
        mok = np.isfinite(mv)
        mlab = None
        if moving_mask is not None:
            mlab = render_roi(np.asarray(moving_mask, np.float32), prior_f, (y0, x0),
                              (y1 - y0, x1 - x0), order=0, cval=0.0)
            mok &= mlab > 0
        mv = np.where(mok, mv, 0.0).astype(np.float32)
        fp, fo = _patches(f, fok, s, p)
        mp, mo = _patches(mv, mok, s, p)
        if flab is not None:
            fo = fo & _same_piece(flab, s, p)
        if mlab is not None:
            mo = mo & _same_piece(mlab, s, p)
        fz, fval = _prepare(fp, fo, win)
        mz, mval = _prepare(mp, mo, win)
        shift, ratio = correlate(fz, mz, cfg.max_shift, cfg.whiten)
        good = (fval >= cfg.min_valid) & (mval >= cfg.min_valid) & (ratio >= cfg.min_peak_ratio)
        good &= (fz.std(axis=(1, 2)) > 1e-3) & (mz.std(axis=(1, 2)) > 1e-3)
        rows = i1 - i0
        shift = shift.reshape(rows, gx, 2)
        good = good.reshape(rows, gx)
        for c in range(2):
            out[c, i0:i1] = np.where(good, base[c, i0:i1] + shift[..., c], np.nan)
        ratio_out[i0:i1] = np.where(good, ratio.reshape(rows, gx), 0.0)
    return Field(out, float(s)), ratio_out


def global_shift(fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float]:
    """Translation ``(dy, dx)`` with ``moving(p + d) ~ fixed(p)`` over whole images, and its
    peak ratio (phase correlation, for a coarse start at low resolution)."""
    h = min(fixed.shape[0], moving.shape[0])
    w = min(fixed.shape[1], moving.shape[1])
    p = max(h, w)
    f = np.zeros((1, p, p), np.float32)
    m = np.zeros((1, p, p), np.float32)
    wy = np.hanning(h + 2)[1:-1].astype(np.float32)
    wx = np.hanning(w + 2)[1:-1].astype(np.float32)
    win = np.outer(wy, wx)
    a = np.asarray(fixed[:h, :w], np.float32)
    b = np.asarray(moving[:h, :w], np.float32)
    f[0, :h, :w] = (a - a.mean()) * win
    m[0, :h, :w] = (b - b.mean()) * win
    d, r = correlate(f, m, p // 2 - 2, 1.0)
    return d[0].astype(np.float64), float(r[0])


def fit_affine(field: Field, weights: np.ndarray | None = None, *, trim: float = 3.0,
               iterations: int = 3) -> np.ndarray:
    """Robust least-squares 2x3 affine pull map (yx) of a flow field's valid nodes.

    Iteratively drops nodes whose residual exceeds ``trim`` times the median
    residual, so folds and bad matches do not bend the fit.
    """
    ny, nx = field.node_yx()
    yy, xx = np.meshgrid(ny, nx, indexing="ij")
    d = field.data
    ok = np.isfinite(d[0]) & np.isfinite(d[1])
    wts = np.ones(ok.shape) if weights is None else np.asarray(weights, np.float64)
    ok &= wts > 0
    if ok.sum() < 3:
        return np.array([[1.0, 0, 0], [0, 1.0, 0]])
    a_mat = np.stack([yy[ok], xx[ok], np.ones(ok.sum())], axis=1)
    tgt = np.stack([yy[ok] + d[0][ok], xx[ok] + d[1][ok]], axis=1)
    wv = wts[ok]
    keep = np.ones(len(wv), bool)
    sol = np.zeros((3, 2))
    for _ in range(iterations):
        sw = np.sqrt(wv[keep])[:, None]
        sol, *_ = np.linalg.lstsq(a_mat[keep] * sw, tgt[keep] * sw, rcond=None)
        res = np.linalg.norm(a_mat @ sol - tgt, axis=1)
        med = np.median(res[keep]) + 0.05
        keep = res <= trim * med
        if keep.sum() < 3:
            break
    return sol.T.copy()


def clean_flow(field: Field, max_deviation: float = 2.0, min_neighbours: int = 2) -> Field:
    """Invalidate nodes that disagree with the median of their valid 3x3 neighbours.

    A node is kept if it differs from that median by at most ``max_deviation`` px
    and has at least ``min_neighbours`` valid neighbours (isolated matches are
    more often wrong than right).
    """
    d = field.data
    gy, gx = field.grid
    pad = np.pad(d, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    stack = np.stack([pad[:, dy:dy + gy, dx:dx + gx] for dy in range(3) for dx in range(3)
                      if (dy, dx) != (1, 1)], axis=1)  # (2, 8, gy, gx)
    count = np.isfinite(stack[0]).sum(axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(stack, axis=1)
    dev = np.linalg.norm(d - med, axis=0)
    bad = ~(dev <= max_deviation) | (count < min_neighbours)
    return field.with_data(np.where(bad[None], np.nan, d))


def shift_candidates(fixed: np.ndarray, moving: np.ndarray, max_shift: float, *, k: int = 3,
                     whiten: float = 0.3) -> list[tuple[np.ndarray, float]]:
    """The ``k`` best translations ``(dy, dx)`` (``moving(p + d) ~ fixed(p)``) within
    ``max_shift`` px over whole images, each with its correlation relative to the best.

    Between different sections the best whole-image peak is sometimes a false one
    (a periodic structure, tile seams); the caller verifies each candidate with a
    patch flow and keeps the one most patches agree with.  Images are zero-padded
    to twice their size, so the correlation does not wrap around.
    """
    h = min(fixed.shape[0], moving.shape[0])
    w = min(fixed.shape[1], moving.shape[1])
    py, px = 2 * h, 2 * w
    win = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1]).astype(np.float32)
    a = np.asarray(fixed[:h, :w], np.float32)
    b = np.asarray(moving[:h, :w], np.float32)
    fa = scipy.fft.rfft2((a - a.mean()) * win, s=(py, px), workers=2)
    fb = scipy.fft.rfft2((b - b.mean()) * win, s=(py, px), workers=2)
    x = np.conj(fa) * fb
    if whiten > 0:
        x /= np.abs(x) ** whiten + 1e-6
    c = scipy.fft.irfft2(x, s=(py, px), workers=2)
    r = int(min(max_shift, h - 2, w - 2))
    iy, ix = np.arange(-r, r + 1) % py, np.arange(-r, r + 1) % px
    c = c[np.ix_(iy, ix)]
    from scipy import ndimage

    peaks = (c == ndimage.maximum_filter(c, size=5, mode="nearest")) & (c > 0)
    ys, xs = np.nonzero(peaks)
    if len(ys) == 0:
        return [(np.zeros(2), 0.0)]
    order = np.argsort(-c[ys, xs])[:k]
    best = float(c[ys[order[0]], xs[order[0]]])
    return [(np.array([ys[i] - r, xs[i] - r], np.float64), float(c[ys[i], xs[i]]) / best)
            for i in order]
