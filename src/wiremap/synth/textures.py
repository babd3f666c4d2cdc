"""Drawing primitives of the EM renderer (``render.py``): noise, bands, stripes, sprites, label shapes.

Each is vectorised numpy over a whole section (no loop over pixels) and
deterministic from its generator or hash, so a cell looks the same in every
section it crosses.
"""

from __future__ import annotations

import math
from functools import cache

import edt
import fastremap
import numpy as np
from scipy import ndimage as ndi


def hash_uniform(ids: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Uniform [0, 1) per id from splitmix64 of (id, seed, salt): stable across sections."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B1 + salt * 0x85EBCA77) % 2**64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


@cache
def grid(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Unit-std Gaussian noise correlated over ``scale_px`` pixels.

    Coarse noise is drawn on a grid ``scale_px/2`` times smaller, blurred and
    bilinearly enlarged: the same look as a large Gaussian filter at a
    fraction of the cost.
    """
    if scale_px <= 2.0:
        n = rng.standard_normal(shape, dtype=np.float32)
        if scale_px > 0.3:
            ndi.gaussian_filter(n, scale_px, output=n)
    else:
        f = scale_px / 2.0
        small = (int(math.ceil(shape[0] / f)) + 2, int(math.ceil(shape[1] / f)) + 2)
        n = rng.standard_normal(small, dtype=np.float32)
        ndi.gaussian_filter(n, 2.0, output=n, mode="wrap")
        n = ndi.zoom(n, f, order=1)[: shape[0], : shape[1]]
        if n.shape != shape:  # zoom rounding: pad by edge values
            n = np.pad(n, [(0, shape[0] - n.shape[0]), (0, shape[1] - n.shape[1])], mode="edge")
    sd = float(n.std())
    n /= sd if sd > 0 else 1.0
    return n


def dark_band(edge: np.ndarray, px_nm: tuple[float, float], width_nm: float) -> np.ndarray:
    """Opacity (0-1) of a dark band of full width ``width_nm`` centred on boundary pixels."""
    if not edge.any():
        return np.zeros(edge.shape, np.float32)
    d = edt.edt(~edge, anisotropy=px_nm, black_border=False)
    sigma = max(width_nm, 1e-3) / 2.355
    # Gaussian profile through a lookup table (steps of sigma/8): far cheaper than exp
    steps = np.arange(34, dtype=np.float32) / 8.0
    table = np.exp(-0.5 * steps**2).astype(np.float32)
    table[-1] = 0.0
    d += np.float32(0.5 * min(px_nm))  # distance to the boundary line, not the pixel centre
    d *= np.float32(8.0 / sigma)
    np.minimum(d, 33, out=d)
    return table[d.astype(np.intp)]


def label_axes(lab: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, ...]:
    """Long-axis direction and elongation (0 round .. 1 line) of every 2D label.

    Returns per-label ``cos``, ``sin``, ``elongation`` and original ``ids``,
    and ``ren``, the per-pixel index into them (second moments via bincount).
    """
    ren, remap = fastremap.renumber(lab, in_place=False, preserve_zero=False)
    ren = ren.astype(np.intp, copy=False).ravel()
    n = int(ren.max()) + 1
    w = np.bincount(ren, minlength=n).astype(np.float64)
    w[w == 0] = 1
    my = np.bincount(ren, yy.ravel(), n) / w
    mx = np.bincount(ren, xx.ravel(), n) / w
    cyy = np.bincount(ren, (yy.ravel().astype(np.float64)) ** 2, n) / w - my**2
    cxx = np.bincount(ren, (xx.ravel().astype(np.float64)) ** 2, n) / w - mx**2
    cxy = np.bincount(ren, yy.ravel().astype(np.float64) * xx.ravel(), n) / w - my * mx
    theta = 0.5 * np.arctan2(2 * cxy, cxx - cyy)  # long axis angle from +x toward +y
    tr = cxx + cyy
    root = np.sqrt(np.maximum((cxx - cyy) ** 2 + 4 * cxy**2, 0))
    elong = np.where(tr > 0, root / np.maximum(tr, 1e-9), 0.0)
    ids = np.zeros(n, dtype=np.uint64)
    ids[np.fromiter(remap.values(), np.intp, len(remap))] = np.fromiter(remap.keys(), np.uint64, len(remap))
    shape = lab.shape
    f32 = np.float32
    return np.cos(theta).astype(f32), np.sin(theta).astype(f32), elong.astype(f32), ren.reshape(shape), ids


def stripes(coord_nm: np.ndarray, rng: np.random.Generator, spacing_nm: float, width_nm: float) -> np.ndarray:
    """Lines at random (Poisson) positions along a coordinate: a 1D lookup table, vectorised."""
    length = 8192  # nm; the pattern repeats, far beyond any neurite's width
    n = max(1, int(length / max(spacing_nm, 1.0)))
    table = np.zeros(length, np.float32)
    table[rng.integers(0, length, n)] = 1.0
    sigma = max(width_nm / 2.355, 0.5)
    table = ndi.gaussian_filter1d(table, sigma, mode="wrap") * np.float32(math.sqrt(2 * math.pi) * sigma)
    np.minimum(table, 1.0, out=table)
    # length is a power of two: the bit mask wraps negative coordinates too
    return table[coord_nm.astype(np.int64) & (length - 1)]


def stamp(
    dark: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    ry: np.ndarray,
    rx: np.ndarray,
    angle: np.ndarray,
    strength: np.ndarray,
    wall: float,
    allowed: np.ndarray | None = None,
    owner: np.ndarray | None = None,
    owner_map: np.ndarray | None = None,
) -> None:
    """Draw K elliptical rings (``wall`` px thick; ``wall<=0``: filled dots) into ``dark`` (max).

    All sprites are evaluated at once on a common window; ``allowed`` masks
    pixels, ``owner``/``owner_map`` keep sprite ``k`` inside label
    ``owner[k]`` (vesicles only inside the presynaptic cell).
    """
    k = len(cy)
    if k == 0:
        return
    r = int(math.ceil(float(max(ry.max(), rx.max())) + 2))
    off = np.arange(-r, r + 1, dtype=np.float32)
    iy = np.round(cy).astype(np.intp)
    ix = np.round(cx).astype(np.intp)
    py = iy[:, None, None] + off.astype(np.intp)[None, :, None]
    px = ix[:, None, None] + off.astype(np.intp)[None, None, :]
    dy = (py - cy[:, None, None]).astype(np.float32)
    dx = (px - cx[:, None, None]).astype(np.float32)
    ca = np.cos(angle)[:, None, None].astype(np.float32)
    sa = np.sin(angle)[:, None, None].astype(np.float32)
    u = (dx * ca + dy * sa) / rx[:, None, None]
    v = (-dx * sa + dy * ca) / ry[:, None, None]
    rho = np.sqrt(u * u + v * v)
    if wall > 0:
        rmean = 0.5 * (rx + ry)[:, None, None]
        val = np.exp(-0.5 * ((rho - 1.0) * rmean / (wall / 2.355)) ** 2)
    else:
        val = np.clip(1.2 - rho, 0.0, 1.0) ** 0.7
    val = val * strength[:, None, None]
    py, px = np.broadcast_arrays(py, px)
    ok = (py >= 0) & (py < dark.shape[0]) & (px >= 0) & (px < dark.shape[1]) & (val > 0.02)
    flat = np.where(ok, py * dark.shape[1] + px, 0)
    if allowed is not None:
        ok &= allowed.ravel()[flat]
    if owner is not None and owner_map is not None:
        ok &= owner_map.ravel()[flat] == owner[:, None, None]
    flat, val = flat[ok], val[ok]
    order = np.argsort(val, kind="stable")  # last write wins on duplicates: keep the max
    cur = dark.ravel()
    cur[flat[order]] = np.maximum(cur[flat[order]], val[order])
