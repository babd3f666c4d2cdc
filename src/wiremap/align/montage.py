"""Montage the tiles of one section: pair matching, elastic tile meshes, intensity, blending.

Each tile ``t`` gets a map from its pixels ``q`` (tile frame, ``(0, 0)`` = centre
of its top-left pixel) to the section frame (the frame of the nominal
positions)::

    p = nominal_t + q + mesh_t(q)

``mesh_t`` is a ``Field`` over the tile frame (stride ``mesh_stride``); its mean
is the tile's stage error, its shape absorbs lens distortion.  All meshes are
solved in one sparse least-squares system: every match in an overlap says that
two tile points show the same tissue, so their section points must coincide;
springs (membrane + bending) keep each mesh smooth; a weak anchor to the
nominal position fixes the global translation.  Matches the solution cannot
follow are dropped and the system re-solved.

Tiles with no usable match to the main connected group (blank, debris, off
tissue) are *reported* in ``MontageModel.unplaced`` and left out of the render,
never silently placed at their nominal position.

Intensity follows the acquisition model ``tile = (gain * s + offset) * V(r)``,
``V(r) = 1 - vignetting * r^2 / R^2`` (r from the tile centre, R its half
diagonal): vignetting is estimated from the mean of many tiles, gain/offset per
tile from the statistics of matched overlap patches; seams are feathered.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
from pydantic import BaseModel, ConfigDict
from scipy import ndimage

from wiremap.align.field import Field, grid_shape
from wiremap.errors import InputError


class MontageConfig(BaseModel):
    """Parameters of montaging one section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patch: int = 64  # patch length along an overlap (across it: the overlap width)
    search: int = 5  # search radius around the first-pass offset, px
    min_overlap: int = 6  # nominal overlaps thinner than this (px) are not matched
    min_ncc: float = 0.3  # weaker matches are discarded
    mesh_stride: int = 32  # px between mesh nodes of a tile
    membrane: float = 1e-3  # mesh springs (per node pair) relative to a match of weight 1
    bending: float = 0.05  # mesh bending stiffness
    anchor: float = 1e-4  # pull of every node to its nominal position
    outlier_px: float = 2.0  # matches off by more than this (and 3x median) are dropped
    feather_px: float = 16.0  # width of the seam blending ramp
    min_tile_std: float = 2.0  # tiles flatter than this (grey levels) are blank


@dataclass
class PairMatches:
    """Corresponding points of two tiles (tile frames), with their NCC and patch stats."""

    a: int
    b: int
    qa: np.ndarray  # (n, 2) points in tile a
    qb: np.ndarray  # (n, 2) the same tissue in tile b
    ncc: np.ndarray  # (n,)
    stats: np.ndarray  # (n, 4): mean_a, std_a, mean_b, std_b of the common patch


@dataclass
class MontageModel:
    """Everything needed to render a section from its tiles (see module docstring)."""

    nominal: np.ndarray  # (n, 2) nominal top-left per tile
    tile_shapes: list[tuple[int, int]]
    meshes: list[Field | None]  # None: tile not placed
    gain: np.ndarray  # (n,)
    offset: np.ndarray  # (n,)
    vignetting: float
    unplaced: list[int]  # tiles reported as unusable (no match to the main group)
    blank: list[int]  # tiles flagged blank (flat)
    residuals: list[np.ndarray] = field(default_factory=list)  # per kept match, px
    n_matches: int = 0

    def tile_to_section(self, t: int, q: np.ndarray) -> np.ndarray:
        """Section points of tile-frame points ``q`` (..., 2) of tile ``t``."""
        m = self.meshes[t]
        if m is None:
            raise InputError(f"tile {t} was not placed (no usable overlap)")
        q = np.asarray(q, np.float64)
        d = m.at(q[..., 0], q[..., 1])
        return self.nominal[t] + q + np.moveaxis(d, 0, -1)

    def section_to_tile(self, t: int, p: np.ndarray, iterations: int = 4) -> np.ndarray:
        """Inverse of ``tile_to_section`` by fixed-point iteration (meshes are smooth, small)."""
        m = self.meshes[t]
        if m is None:
            raise InputError(f"tile {t} was not placed (no usable overlap)")
        p = np.asarray(p, np.float64)
        q = p - self.nominal[t]
        for _ in range(iterations):
            d = m.at(q[..., 0], q[..., 1])
            q = p - self.nominal[t] - np.moveaxis(d, 0, -1)
        return q


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


def masked_ncc(f: np.ndarray, mf: np.ndarray, g: np.ndarray, mg: np.ndarray,
               min_frac: float = 0.5) -> np.ndarray:
    """Masked normalised cross-correlation (Padfield 2012) of templates ``f`` over images ``g``.

    (N, h, w) and (N, H, W) with H >= h, W >= w; returns (N, H-h+1, W-w+1), the NCC of
    ``f`` placed at each top-left offset in ``g`` over the pixels valid in both
    (``-1`` where fewer than ``min_frac`` of the template's valid pixels overlap).
    """
    n, h, w = f.shape
    hh, ww = g.shape[1:]
    shape = (scipy.fft.next_fast_len(hh, real=True), scipy.fft.next_fast_len(ww, real=True))
    oy, ox = hh - h + 1, ww - w + 1

    def fwd(a):
        return scipy.fft.rfft2(a, s=shape, workers=2)

    def inv(x):  # valid-mode cross-correlation sum_x a(x) b(x + s), s >= 0
        return scipy.fft.irfft2(x, s=shape, workers=2)[:, :oy, :ox]

    f = f * mf
    g = g * mg
    # six forward transforms, six products: 12 FFTs instead of 18
    cmf, cf, cff = np.conj(fwd(mf)), np.conj(fwd(f)), np.conj(fwd(f * f))
    fmg, fg, fgg = fwd(mg), fwd(g), fwd(g * g)
    cnt = inv(cmf * fmg)
    sf, sg = inv(cf * fmg), inv(cmf * fg)
    sff, sgg = inv(cff * fmg), inv(cmf * fgg)
    sfg = inv(cf * fg)
    c = np.maximum(cnt, 1.0)
    num = sfg - sf * sg / c
    den = np.maximum(sff - sf * sf / c, 0) * np.maximum(sgg - sg * sg / c, 0)
    ncc = np.where(den > 1e-6, num / np.sqrt(np.maximum(den, 1e-12)), -1.0)
    need = min_frac * mf.reshape(n, -1).sum(axis=1)[:, None, None]
    return np.where(cnt >= need, np.clip(ncc, -1, 1), -1.0)


def _peak(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel argmax (parabola per axis) and value of each (N, a, b) surface."""
    n, a, b = c.shape
    flat = c.reshape(n, -1).argmax(axis=1)
    iy, ix = np.unravel_index(flat, (a, b))
    rows = np.arange(n)
    val = c[rows, iy, ix]

    def vertex(lo, mid, hi):
        den = lo - 2 * mid + hi
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.clip(np.where(den < 0, 0.5 * (lo - hi) / den, 0.0), -0.5, 0.5)

    oy = np.where((iy > 0) & (iy < a - 1), vertex(c[rows, np.maximum(iy - 1, 0), ix], val,
                                                  c[rows, np.minimum(iy + 1, a - 1), ix]), 0.0)
    ox = np.where((ix > 0) & (ix < b - 1), vertex(c[rows, iy, np.maximum(ix - 1, 0)], val,
                                                  c[rows, iy, np.minimum(ix + 1, b - 1)]), 0.0)
    inner = (iy > 0) & (iy < a - 1) & (ix > 0) & (ix < b - 1)
    return np.stack([iy + oy, ix + ox], axis=1), np.where(inner, val, -1.0)


def match_pair(ta: np.ndarray, tb: np.ndarray, pa: np.ndarray, pb: np.ndarray,
               cfg: MontageConfig, prior: np.ndarray | None = None,
               vignetting: float = 0.0, patch: int | None = None, search: int | None = None,
               min_frac: float = 0.5) -> PairMatches | None:
    """Matches of tile ``tb`` to ``ta`` in their nominal overlap (None when there is none).

    ``pa``/``pb`` are top-left positions (nominal, or refined), ``prior`` an extra
    expected offset of b (px) to search around; patches are divided by the
    vignetting profile before their statistics are taken.
    """
    ha, wa = ta.shape
    hb, wb = tb.shape
    off = pb - pa + (0 if prior is None else prior)  # b's top-left in a's frame
    y0, y1 = max(0.0, off[0]), min(float(ha), off[0] + hb)
    x0, x1 = max(0.0, off[1]), min(float(wa), off[1] + wb)
    if y1 - y0 < cfg.min_overlap / 2 or x1 - x0 < cfg.min_overlap / 2:
        return None
    plen = cfg.patch if patch is None else patch
    ph = _even(min(plen, y1 - y0 - 1))
    pw = _even(min(plen, x1 - x0 - 1))
    ys = _centres(y0, y1, ph)
    xs = _centres(x0, x1, pw)
    s = cfg.search if search is None else search
    fa, ma, gb, mb, tl, bl = [], [], [], [], [], []
    for cy in ys:
        for cx in xs:
            ay, ax = int(round(cy - ph / 2)), int(round(cx - pw / 2))
            ay, ax = min(max(ay, 0), ha - ph), min(max(ax, 0), wa - pw)
            # the same tissue in b, nominally, then the search window around it
            by, bx = int(round(ay - off[0])) - s, int(round(ax - off[1])) - s
            win, ok = _crop(tb, by, bx, ph + 2 * s, pw + 2 * s)
            fa.append(ta[ay:ay + ph, ax:ax + pw].astype(np.float32))
            ma.append(np.ones((ph, pw), np.float32))
            gb.append(win)
            mb.append(ok)
            tl.append((ay, ax))
            bl.append((by, bx))
    f, g, mbs = np.stack(fa), np.stack(gb), np.stack(mb)
    if vignetting > 0:
        va, vb = vignetting_profile((ha, wa), vignetting), vignetting_profile((hb, wb), vignetting)
        for i, ((ay, ax), (by, bx)) in enumerate(zip(tl, bl, strict=True)):
            f[i] /= va[ay:ay + ph, ax:ax + pw]
            vwin, _ = _crop(vb, by, bx, ph + 2 * s, pw + 2 * s)
            g[i] /= np.where(vwin > 0, vwin, 1.0)
    c = masked_ncc(f, np.stack(ma), g, mbs, min_frac=min_frac)
    pk, val = _peak(c)
    tl_a, tl_b = np.asarray(tl, np.float64), np.asarray(bl, np.float64)
    centre = np.array([(ph - 1) / 2.0, (pw - 1) / 2.0])
    qa = tl_a + centre
    qb = tl_b + pk + centre
    stats = np.zeros((len(qa), 4))
    for i in range(len(qa)):
        oy, ox = int(round(pk[i, 0])), int(round(pk[i, 1]))
        wb_ = g[i, oy:oy + ph, ox:ox + pw]
        okb = mbs[i, oy:oy + ph, ox:ox + pw] > 0
        if okb.sum() > 4:
            stats[i] = [f[i][okb].mean(), f[i][okb].std(), wb_[okb].mean(), wb_[okb].std()]
    good = val >= cfg.min_ncc
    if not good.any():
        return PairMatches(-1, -1, qa[:0], qb[:0], val[:0], stats[:0])
    return PairMatches(-1, -1, qa[good], qb[good], val[good], stats[good])


def _centres(lo: float, hi: float, p: int) -> np.ndarray:
    """Patch centres covering [lo, hi) with patches of ``p`` (abutting, not overlapping)."""
    n = max(1, int(np.ceil((hi - lo - p) / p)) + 1)
    return np.linspace(lo + p / 2, hi - p / 2, n) if n > 1 else np.array([(lo + hi) / 2])


def _crop(img: np.ndarray, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((h, w), np.float32)
    ok = np.zeros((h, w), np.float32)
    ys, xs = max(y, 0), max(x, 0)
    ye, xe = min(y + h, img.shape[0]), min(x + w, img.shape[1])
    if ye > ys and xe > xs:
        out[ys - y:ye - y, xs - x:xe - x] = img[ys:ye, xs:xe]
        ok[ys - y:ye - y, xs - x:xe - x] = 1.0
    return out, ok


def _overlap_dims(pa, pb, sa, sb) -> tuple[float, float]:
    oy = min(pa[0] + sa[0], pb[0] + sb[0]) - max(pa[0], pb[0])
    ox = min(pa[1] + sa[1], pb[1] + sb[1]) - max(pa[1], pb[1])
    return oy, ox


def neighbour_pairs(nominal: np.ndarray, shapes: Sequence[tuple[int, int]],
                    min_overlap: float) -> list[tuple[int, int]]:
    """Tile pairs whose nominal rectangles overlap by at least ``min_overlap`` px both ways."""
    nom = np.asarray(nominal, np.float64)
    hw = np.asarray(shapes, np.float64)
    lo, hi = nom, nom + hw
    oy = np.minimum(hi[:, None, 0], hi[None, :, 0]) - np.maximum(lo[:, None, 0], lo[None, :, 0])
    ox = np.minimum(hi[:, None, 1], hi[None, :, 1]) - np.maximum(lo[:, None, 1], lo[None, :, 1])
    a, b = np.nonzero(np.triu((oy >= min_overlap) & (ox >= min_overlap), k=1))
    return list(zip(a.tolist(), b.tolist(), strict=True))


def _bilinear_rows(q: np.ndarray, stride: float, grid: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Node indices (n, 4) and weights (n, 4) of bilinear interpolation at points q (n, 2)."""
    gy, gx = grid
    ty = np.clip(q[:, 0] / stride, 0, gy - 1)
    tx = np.clip(q[:, 1] / stride, 0, gx - 1)
    iy = np.minimum(np.floor(ty).astype(int), max(gy - 2, 0))
    ix = np.minimum(np.floor(tx).astype(int), max(gx - 2, 0))
    fy, fx = ty - iy, tx - ix
    iy1, ix1 = np.minimum(iy + 1, gy - 1), np.minimum(ix + 1, gx - 1)
    idx = np.stack([iy * gx + ix, iy * gx + ix1, iy1 * gx + ix, iy1 * gx + ix1], axis=1)
    w = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)
    return idx, w


def _mesh_regularizer(gy: int, gx: int, membrane: float, bending: float) -> sp.csr_matrix:
    from wiremap.align.mesh import _regularizer

    return _regularizer(gy, gx, None, 1.0, membrane, bending)


def solve_meshes(matches: Sequence[PairMatches], nominal: np.ndarray,
                 shapes: Sequence[tuple[int, int]], tiles_used: Sequence[int],
                 cfg: MontageConfig) -> tuple[dict[int, Field], list[np.ndarray]]:
    """Per-tile meshes from all matches at once (sparse least squares, outliers dropped)."""
    grids = {t: grid_shape(shapes[t], cfg.mesh_stride) for t in tiles_used}
    if not grids:  # nothing placed (a blank section): no meshes, no residuals
        return {}, []
    base, n = {}, 0
    for t in tiles_used:
        base[t] = n
        n += grids[t][0] * grids[t][1]
    rows_i, rows_j, rows_v, rhs, wts, owner = [], [], [], [], [], []
    r = 0
    for k, m in enumerate(matches):
        if m.a not in base or m.b not in base or len(m.qa) == 0:
            continue
        ia, wa = _bilinear_rows(m.qa, cfg.mesh_stride, grids[m.a])
        ib, wb = _bilinear_rows(m.qb, cfg.mesh_stride, grids[m.b])
        cnt = len(m.qa)
        rr = r + np.arange(cnt)
        rows_i += [np.repeat(rr, 4), np.repeat(rr, 4)]
        rows_j += [(ia + base[m.a]).ravel(), (ib + base[m.b]).ravel()]
        rows_v += [wa.ravel(), -wb.ravel()]
        # nom_a + qa + u_a(qa) = nom_b + qb + u_b(qb)
        rhs.append((nominal[m.b] + m.qb) - (nominal[m.a] + m.qa))
        wts.append(np.clip(m.ncc, 0, 1))
        owner.append(np.full(cnt, k))
        r += cnt
    cache: dict[tuple[int, int], sp.csr_matrix] = {}
    for g in set(grids.values()):
        cache[g] = _mesh_regularizer(*g, cfg.membrane, cfg.bending)
    reg = sp.block_diag([cache[grids[t]] for t in tiles_used], format="csr")
    if r == 0:
        zero = {t: Field(np.zeros((2,) + grids[t], np.float32), float(cfg.mesh_stride))
                for t in tiles_used}
        return zero, []
    a_mat = sp.csr_matrix((np.concatenate(rows_v), (np.concatenate(rows_i),
                                                    np.concatenate(rows_j))), shape=(r, n))
    b = np.concatenate(rhs)
    w = np.concatenate(wts)
    own = np.concatenate(owner)
    keep = np.ones(r, bool)
    u = np.zeros((2, n))
    for _round in range(3):
        wk = np.where(keep, w, 0.0)
        normal = (a_mat.T @ sp.diags(wk) @ a_mat + reg + cfg.anchor * sp.eye(n)).tocsc()
        solve = spla.factorized(normal)
        u = np.stack([solve(a_mat.T @ (wk * b[:, c])) for c in range(2)])
        res = np.linalg.norm((a_mat @ u.T) - b, axis=1)
        med = np.median(res[keep]) if keep.any() else 0.0
        new_keep = keep & (res <= max(cfg.outlier_px, 3.0 * med))
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    meshes = {}
    for t in tiles_used:
        gy, gx = grids[t]
        d = u[:, base[t]:base[t] + gy * gx].reshape(2, gy, gx)
        meshes[t] = Field(d.astype(np.float32), float(cfg.mesh_stride))
    residuals = [res[(own == k) & keep] for k in range(len(matches))]
    return meshes, residuals


def estimate_vignetting(tiles: Sequence[np.ndarray]) -> float:
    """Relative brightness loss at tile corners, from the mean of many same-shaped tiles.

    Fits ``mean(q) = a * (1 - v r^2/R^2)`` by least squares (tissue averages out).
    """
    shapes = {t.shape for t in tiles}
    if not tiles or len(shapes) != 1:
        return 0.0
    h, w = tiles[0].shape
    acc = np.zeros((h, w))
    for t in tiles:
        acc += t
    mean = acc / len(tiles)
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (np.hypot(h - 1, w - 1) / 2) ** 2
    a_mat = np.stack([np.ones(r2.size), r2.ravel()], axis=1)
    (a, b), *_ = np.linalg.lstsq(a_mat, mean.ravel(), rcond=None)
    return float(np.clip(-b / a, 0.0, 0.9)) if a > 0 else 0.0


@functools.lru_cache(maxsize=8)
def vignetting_profile(shape: tuple[int, int], v: float) -> np.ndarray:
    """``V(q) = 1 - v r^2 / R^2`` over a tile (cached: all tiles share a few shapes)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (np.hypot(h - 1, w - 1) / 2) ** 2
    return (1.0 - v * r2).astype(np.float32)


def solve_intensity(matches: Sequence[PairMatches], n: int,
                    placed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile gain and offset (tile = gain * s + offset) from matched patch statistics."""
    gain, offset = np.ones(n), np.zeros(n)
    idx = {t: i for i, t in enumerate(placed)}
    rows_a, rows_b, lg, mu = [], [], [], []
    for m in matches:
        if m.a not in idx or m.b not in idx:
            continue
        ok = (m.stats[:, 1] > 1.0) & (m.stats[:, 3] > 1.0)
        for s in m.stats[ok]:
            rows_a.append(idx[m.a])
            rows_b.append(idx[m.b])
            lg.append(np.log(s[1] / s[3]))
            mu.append((s[0], s[2]))
    k = len(placed)
    if not rows_a or k < 2:
        return gain, offset
    e = len(rows_a)
    d = sp.csr_matrix((np.r_[np.ones(e), -np.ones(e), np.ones(k)],
                       (np.r_[np.arange(e), np.arange(e), np.full(k, e)],
                        np.r_[rows_a, rows_b, np.arange(k)])), shape=(e + 1, k))
    logg = spla.lsqr(d, np.r_[lg, 0.0])[0]
    g = np.exp(logg)
    mus = np.asarray(mu)
    # offsets o' = o / g:  o'_a - o'_b = mu_a / g_a - mu_b / g_b, sum o' = 0
    ga, gb = g[rows_a], g[rows_b]
    op = spla.lsqr(d, np.r_[mus[:, 0] / ga - mus[:, 1] / gb, 0.0])[0]
    for i, t in enumerate(placed):
        gain[t] = g[i]
        offset[t] = op[i] * g[i]
    return gain, offset


def _feather(q: np.ndarray, shape: tuple[int, int], ramp: float) -> np.ndarray:
    h, w = shape
    d = np.minimum(np.minimum(q[0] + 0.5, h - 0.5 - q[0]), np.minimum(q[1] + 0.5, w - 0.5 - q[1]))
    return np.clip(d / ramp, 0.0, 1.0) ** 2


def tile_boxes(model: MontageModel) -> dict[int, tuple[float, float, float, float]]:
    """Section-frame bounding boxes (y0, x0, y1, x1) of the placed tiles."""
    out = {}
    for t, m in enumerate(model.meshes):
        if m is None:
            continue
        h, w = model.tile_shapes[t]
        lo = model.nominal[t] + np.nanmin(m.data, axis=(1, 2)) - 1
        hi = model.nominal[t] + np.array([h, w]) + np.nanmax(m.data, axis=(1, 2)) + 1
        out[t] = (lo[0], lo[1], hi[0], hi[1])
    return out


def render_montage_roi(tiles: Any, model: MontageModel, out_offset: tuple[int, int],
                       out_shape: tuple[int, int], *, feather_px: float = 16.0,
                       boxes: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blended, intensity-corrected section pixels of one ROI and their coverage weight.

    ``tiles[t]`` is only read for tiles that touch the ROI (a list, or any
    indexable that loads a tile on access).
    """
    boxes = boxes if boxes is not None else tile_boxes(model)
    y0, x0 = out_offset
    y1, x1 = y0 + out_shape[0], x0 + out_shape[1]
    acc = np.zeros(out_shape, np.float32)
    wsum = np.zeros(out_shape, np.float32)
    for t, (by0, bx0, by1, bx1) in boxes.items():
        if by1 < y0 or bx1 < x0 or by0 >= y1 or bx0 >= x1:
            continue
        # the part of the ROI this tile can touch
        ry0, rx0 = max(y0, int(np.floor(by0))), max(x0, int(np.floor(bx0)))
        ry1, rx1 = min(y1, int(np.ceil(by1)) + 1), min(x1, int(np.ceil(bx1)) + 1)
        if ry1 <= ry0 or rx1 <= rx0:
            continue
        sl = (slice(ry0 - y0, ry1 - y0), slice(rx0 - x0, rx1 - x0))
        ys = np.arange(ry0, ry1, dtype=np.float64)
        xs = np.arange(rx0, rx1, dtype=np.float64)
        mesh = model.meshes[t]
        assert mesh is not None  # boxes only holds placed tiles
        nom = model.nominal[t]
        # invert p = nom + q + mesh(q): sample the mesh on the grid shifted by its mean
        # (separable, cheap); the error is |grad mesh| * |mesh - mean| ~ 0.01 px
        d = mesh.sample(ys - nom[0], xs - nom[1])
        m = d.reshape(2, -1).mean(axis=1)
        d = mesh.sample(ys - nom[0] - m[0], xs - nom[1] - m[1])
        qy = (ys[:, None] - nom[0] - d[0]).astype(np.float32)
        qx = (xs[None, :] - nom[1] - d[1]).astype(np.float32)
        h, w = model.tile_shapes[t]
        inside = (qy > -0.5) & (qy < h - 0.5) & (qx > -0.5) & (qx < w - 0.5)
        if not inside.any():
            continue
        img = np.asarray(tiles[t], np.float32)
        v = ndimage.map_coordinates(img, [qy, qx], order=1, mode="nearest", output=np.float32)
        if model.vignetting > 0:
            r2 = ((qy - (h - 1) / 2) ** 2 + (qx - (w - 1) / 2) ** 2) / (np.hypot(h - 1, w - 1) / 2) ** 2
            v /= (1.0 - model.vignetting * r2).astype(np.float32)
        v = (v - model.offset[t]) / model.gain[t]
        wt = (_feather(np.stack([qy, qx]), (h, w), feather_px) * inside).astype(np.float32)
        acc[sl] += wt * v
        wsum[sl] += wt
    out = np.where(wsum > 0, acc / np.maximum(wsum, 1e-6), 0.0).astype(np.float32)
    return out, wsum


@dataclass
class MontageReport:
    """What an operator needs to know about one montaged section."""

    n_tiles: int
    n_pairs: int
    n_matches: int
    unplaced: list[int]
    blank: list[int]
    residual_mean_px: float  # of the kept matches, after the mesh solve
    residual_p95_px: float


def montage(tiles: Sequence[np.ndarray], nominal_yx: np.ndarray,
            cfg: MontageConfig | None = None, *,
            vignetting: float | None = None) -> tuple[MontageModel, MontageReport]:
    """Solve the placement, meshes and intensity of one section's tiles (no rendering).

    ``nominal_yx`` (n, 2) are the tiles' nominal top-left positions (section frame).
    ``vignetting`` is estimated from these tiles when not given (better: from many
    sections with ``estimate_vignetting``).
    """
    cfg = cfg or MontageConfig()
    n = len(tiles)
    nominal = np.asarray(nominal_yx, np.float64)
    if nominal.shape != (n, 2):
        raise InputError(f"{n} tiles need (n, 2) nominal positions, got shape {nominal.shape}")
    shapes = []
    for i, tile in enumerate(tiles):
        arr = np.asarray(tile)
        if arr.ndim != 2:
            raise InputError(f"tile {i} is not a 2-D greyscale image (shape {arr.shape})")
        shapes.append((int(arr.shape[0]), int(arr.shape[1])))
    blank = [i for i, t in enumerate(tiles) if float(np.asarray(t)[::4, ::4].std()) < cfg.min_tile_std]
    vig = estimate_vignetting([t for i, t in enumerate(tiles) if i not in blank]) \
        if vignetting is None else float(vignetting)
    pairs = [(a, b) for a, b in neighbour_pairs(nominal, shapes, cfg.min_overlap)
             if a not in blank and b not in blank]
    matches = []
    half: dict[int, np.ndarray] = {}  # tiles at half resolution, for the first pass

    def halved(t: int) -> np.ndarray:
        if t not in half:
            img = np.asarray(tiles[t], np.float32)
            hh, ww = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
            half[t] = img[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2).mean(axis=(1, 3))
        return half[t]

    for a, b in pairs:
        ta, tb = np.asarray(tiles[a]), np.asarray(tiles[b])
        # pass 1 (half resolution): the whole overlap, searched as far as the stage may
        # err (tiles never part, so up to the overlap width), accepting a small true overlap
        ov = _overlap_dims(nominal[a], nominal[b], shapes[a], shapes[b])
        wide = int(min(ov)) // 2 + 2
        m0 = match_pair(halved(a), halved(b), nominal[a] / 2, nominal[b] / 2, cfg,
                        patch=2 * cfg.patch, search=max(cfg.search, wide), min_frac=0.15)
        if m0 is None or len(m0.qa) == 0:
            continue
        # half-resolution pixel c is full-resolution 2c + 0.5
        prior = np.median(2 * (m0.qa - m0.qb) - (nominal[b] - nominal[a]), axis=0)
        # pass 2: patches in the true overlap, small search around the pass-1 offset
        m = match_pair(ta, tb, nominal[a], nominal[b], cfg, prior=prior, vignetting=vig)
        if m is not None and len(m.qa):
            m.a, m.b = a, b
            matches.append(m)
    # the main group: the largest connected set of tiles linked by matches
    if matches:
        adj = sp.coo_matrix((np.ones(len(matches)), ([m.a for m in matches], [m.b for m in matches])),
                            shape=(n, n))
        _, lab = csgraph.connected_components(adj, directed=False)
        linked = np.zeros(n, bool)
        linked[[m.a for m in matches]] = True
        linked[[m.b for m in matches]] = True
        sizes = np.bincount(lab[linked], minlength=lab.max() + 1)
        main = int(sizes.argmax())
        placed = [t for t in range(n) if linked[t] and lab[t] == main]
    else:
        placed = [t for t in range(n) if t not in blank][:1] if n - len(blank) == 1 else []
    matches = [m for m in matches if m.a in placed and m.b in placed]
    meshes_d, residuals = solve_meshes(matches, nominal, shapes, placed, cfg)
    gain, offset = solve_intensity(matches, n, placed)
    unplaced = [t for t in range(n) if t not in placed]
    meshes: list[Field | None] = [meshes_d.get(t) for t in range(n)]
    model = MontageModel(nominal, shapes, meshes, gain, offset, vig, unplaced, blank,
                         residuals, int(sum(len(m.qa) for m in matches)))
    allres = np.concatenate(residuals) if residuals and sum(map(len, residuals)) else np.zeros(0)
    report = MontageReport(n, len(pairs), model.n_matches, unplaced, blank,
                           float(allres.mean()) if allres.size else float("nan"),
                           float(np.percentile(allres, 95)) if allres.size else float("nan"))
    return model, report


def render_montage(tiles: Sequence[np.ndarray], model: MontageModel,
                   canvas_shape: tuple[int, int], *, block: int = 1024,
                   feather_px: float = 16.0) -> np.ndarray:
    """The whole section canvas (uint8), block by block."""
    out = np.zeros(canvas_shape, np.uint8)
    boxes = tile_boxes(model)
    for y in range(0, canvas_shape[0], block):
        for x in range(0, canvas_shape[1], block):
            shp = (min(block, canvas_shape[0] - y), min(block, canvas_shape[1] - x))
            v, _ = render_montage_roi(tiles, model, (y, x), shp, feather_px=feather_px,
                                      boxes=boxes)
            out[y:y + shp[0], x:x + shp[1]] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return out
