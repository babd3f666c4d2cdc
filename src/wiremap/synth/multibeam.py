"""Hexagonal multi-beam tile layout and the beam lens model.

A multi-beam SEM images a hexagon of ``3 n^2 + 3 n + 1`` beams at once (61 = rings
0..4), one rectangular tile per beam: a multi-beam field of view (mFoV).  Tiles sit
on a hexagonal lattice: rows ``dy = h (1 - overlap)`` apart, tiles in a row
``dx = w (1 - overlap)`` apart, odd rows shifted by ``dx / 2``.  With axial lattice
coordinates ``(q, r)`` the tile centre is ``(r dy, (q + r / 2) dx)``; one mFoV is
``|q|, |r|, |q + r| <= n``, and mFoVs tile the plane with the axial translations
``(2n + 1, -n)`` and ``(n, n + 1)``, so tiles of neighbouring mFoVs overlap exactly
like neighbours inside one.  Positions are ``(y, x)`` px, pixel centres at integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wiremap.errors import ConfigError


def rings_of(beams: int) -> int:
    """Number of rings ``n`` with ``3 n^2 + 3 n + 1 == beams``; a ConfigError otherwise."""
    n = int(round((-3 + math.sqrt(9 - 12 * (1 - beams))) / 6)) if beams >= 1 else -1
    if n < 0 or 3 * n * n + 3 * n + 1 != beams:
        raise ConfigError(f"beams={beams} is not a hexagonal number (1, 7, 19, 37, 61, 91, ...)")
    return n


def beam_axial(beams: int) -> np.ndarray:
    """Axial ``(q, r)`` of each beam, (beams, 2) int: centre first, then ring by ring, by angle."""
    n = rings_of(beams)
    cells = [(q, r) for q in range(-n, n + 1) for r in range(-n, n + 1) if abs(q + r) <= n]

    def order(c: tuple[int, int]) -> tuple[int, float]:
        q, r = c
        ring = max(abs(q), abs(r), abs(q + r))
        y, x = r * math.sqrt(3) / 2, q + r / 2
        return ring, math.atan2(y, x) % (2 * math.pi)

    return np.array(sorted(cells, key=order), dtype=np.int64)


@dataclass(frozen=True)
class TileLayout:
    """Nominal tile placement of one section: tile ``i`` is beam ``beam[i]`` of mFoV ``mfov[i]``."""

    tile_shape: tuple[int, int]  # (h, w) px
    step_yx: tuple[float, float]  # (dy, dx) lattice spacing, px
    mfov: np.ndarray  # (n,) int64, mFoVs numbered row-major by their centre
    beam: np.ndarray  # (n,) int64
    top_left: np.ndarray  # (n, 2) float64 nominal top-left pixel centre, section frame

    @property
    def centres(self) -> np.ndarray:
        h, w = self.tile_shape
        return self.top_left + np.array([(h - 1) / 2, (w - 1) / 2])


def _centres(
    beams: int,
    tile_shape: tuple[int, int],
    overlap: float,
    mfovs_axial: np.ndarray,
    origin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    n = rings_of(beams)
    h, w = tile_shape
    dy, dx = h * (1 - overlap), w * (1 - overlap)
    ax = beam_axial(beams)
    shift = mfovs_axial @ np.array([[2 * n + 1, -n], [n, n + 1]])  # (m, 2) axial offsets
    q = ax[None, :, 0] + shift[:, None, 0]
    r = ax[None, :, 1] + shift[:, None, 1]
    cy = origin[0] + r * dy
    cx = origin[1] + (q + r / 2) * dx
    m_idx = np.repeat(np.arange(len(mfovs_axial)), beams)
    b_idx = np.tile(np.arange(beams), len(mfovs_axial))
    return m_idx, b_idx, np.stack([cy.ravel(), cx.ravel()], -1), (dy, dx)


def _boundary_covered(centres: np.ndarray, tile_shape: tuple[int, int], lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether the boundary of the box [lo, hi] lies inside the union of tiles.

    The union of lattice tiles with positive overlap has no holes, so a covered
    boundary means a covered box.
    """
    ys = np.arange(lo[0], hi[0] + 1.0)
    xs = np.arange(lo[1], hi[1] + 1.0)
    ys = np.append(ys, hi[0])
    xs = np.append(xs, hi[1])
    pts = np.concatenate(
        [
            np.stack([ys, np.full_like(ys, lo[1])], -1),
            np.stack([ys, np.full_like(ys, hi[1])], -1),
            np.stack([np.full_like(xs, lo[0]), xs], -1),
            np.stack([np.full_like(xs, hi[0]), xs], -1),
        ]
    )
    half = np.array(tile_shape, float) / 2
    inside = np.zeros(len(pts), bool)
    for c in centres:  # a loop over tiles keeps memory at O(points)
        inside |= (np.abs(pts[:, 0] - c[0]) <= half[0]) & (np.abs(pts[:, 1] - c[1]) <= half[1])
    return bool(inside.all())


def plan_layout(
    section_shape: tuple[int, int],
    beams: int,
    overlap: float,
    tile_aspect: float,
    tile_width: int | None,
    margin: float,
) -> TileLayout:
    """Nominal layout covering the section canvas plus ``margin`` px on every side.

    With ``tile_width=None`` the tile size is the smallest for which one mFoV centred on
    the canvas covers it; otherwise as many mFoVs as needed are used (whole mFoVs:
    every beam of an mFoV images, as on the real microscope).
    """
    H, W = section_shape
    lo = np.array([-0.5 - margin, -0.5 - margin])
    hi = np.array([H - 0.5 + margin, W - 0.5 + margin])
    centre = np.array([(H - 1) / 2, (W - 1) / 2])
    one = np.zeros((1, 2), np.int64)

    def shape_for(tw: int) -> tuple[int, int]:
        return max(2, int(round(tw * tile_aspect))), tw

    if tile_width is None:

        def covers(tw: int) -> bool:
            _, _, c, _ = _centres(beams, shape_for(tw), overlap, one, centre)
            return _boundary_covered(c, shape_for(tw), lo, hi)

        # bisection: coverage grows with the tile size (the layout scales about its centre)
        bad, good = 3, 8
        while not covers(good):
            bad, good = good, 2 * good
        while good - bad > 1:
            mid = (bad + good) // 2
            bad, good = (bad, mid) if covers(mid) else (mid, good)
        shp = shape_for(good)
        m_idx, b_idx, c, step = _centres(beams, shp, overlap, one, centre)
    else:
        shp = shape_for(int(tile_width))
        # enough mFoVs in both lattice directions to surely cover the box, then keep
        # those with at least one tile touching it
        _, _, c1, _ = _centres(beams, shp, overlap, one, np.zeros(2))
        span = (c1.max(0) - c1.min(0)).min() / 2 + 1
        k = int(np.ceil((hi - lo).max() / span)) + 2
        a, b = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
        axial = np.stack([a.ravel(), b.ravel()], -1)
        m_idx, b_idx, c, step = _centres(beams, shp, overlap, axial, centre)
        half = np.array(shp, float) / 2
        touch = np.all((c + half > lo) & (c - half < hi), axis=1)
        keep_m = np.unique(m_idx[touch])
        mc = np.array([c[m_idx == m].mean(0) for m in keep_m])
        order = keep_m[np.lexsort((mc[:, 1], mc[:, 0]))]
        rank = {int(m): i for i, m in enumerate(order)}
        sel = np.isin(m_idx, keep_m)
        m_idx = np.array([rank[int(m)] for m in m_idx[sel]], np.int64)
        b_idx, c = b_idx[sel], c[sel]
        srt = np.lexsort((b_idx, m_idx))
        m_idx, b_idx, c = m_idx[srt], b_idx[srt], c[srt]
    h, w = shp
    top_left = c - np.array([(h - 1) / 2, (w - 1) / 2])
    return TileLayout(
        tile_shape=shp,
        step_yx=step,
        mfov=m_idx.astype(np.int64),
        beam=b_idx.astype(np.int64),
        top_left=top_left,
    )


def lens_radius(tile_shape: tuple[int, int]) -> float:
    """Normalising radius ``R`` of the lens model: half the tile diagonal, px."""
    h, w = tile_shape
    return math.hypot(h - 1, w - 1) / 2


def tile_to_section(
    yx: np.ndarray, top_left: np.ndarray, tile_shape: tuple[int, int], lens_k: float | np.ndarray
) -> np.ndarray:
    """Map tile-frame points to the section frame with the radial lens model.

    ``p = top_left + c + d (1 + k |d|^2 / R^2)`` with ``d = yx - c``, ``c`` the tile centre.
    ``top_left`` / ``lens_k`` broadcast against ``yx[..., 0]``.
    """
    h, w = tile_shape
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    d = np.asarray(yx, float) - c
    rho2 = (d**2).sum(-1, keepdims=True) / lens_radius(tile_shape) ** 2
    k = np.asarray(lens_k, float)[..., None]
    return np.asarray(top_left, float) + c + d * (1 + k * rho2)


def section_to_tile(
    p: np.ndarray,
    top_left: np.ndarray,
    tile_shape: tuple[int, int],
    lens_k: float | np.ndarray,
    iterations: int = 30,
) -> np.ndarray:
    """Inverse of :func:`tile_to_section` (fixed-point iteration; ~1e-9 px for |k| < 0.2)."""
    h, w = tile_shape
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    e = np.asarray(p, float) - np.asarray(top_left, float) - c  # = d (1 + k rho^2)
    k = np.asarray(lens_k, float)[..., None]
    R2 = lens_radius(tile_shape) ** 2
    d = e.copy()
    for _ in range(iterations):
        d = e / (1 + k * (d**2).sum(-1, keepdims=True) / R2)
    return d + c
