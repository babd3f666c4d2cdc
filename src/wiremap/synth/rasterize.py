"""Skeleton capsules to voxels: cores, space filling, extracellular gaps.

Voxel ``i`` along an axis has its centre at ``i * res`` nm.  Capsules (two
spheres and the cone between them) are drawn one at a time, but each only
inside its own bounding box and fully vectorised there, so the cost is the
sum of capsule volumes, not capsules x volume.  Overlaps are resolved by the
signed distance to the capsule surface (the voxel goes to the surface it is
deepest inside), which gives smooth contact faces between touching neurites.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi


def _bbox(a: np.ndarray, b: np.ndarray, r: float, res: np.ndarray, shape: tuple[int, ...]):
    lo = np.floor((np.minimum(a, b) - r) / res).astype(np.int64)
    hi = np.ceil((np.maximum(a, b) + r) / res).astype(np.int64) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, shape)
    if np.any(hi <= lo):
        return None
    return lo, hi


def capsule_sdf(lo, hi, res, a, b, ra, rb, shell: float = 0.0):
    """Signed distance (nm) to a capsule's surface on the voxel box ``[lo, hi)``.

    With ``shell`` > 0 the capsule is a hollow tube of that wall thickness:
    voxels deeper than ``shell`` inside get +inf (outside).
    """
    f4 = np.float32
    zz = (np.arange(lo[0], hi[0]) * res[0] - a[0]).astype(f4)[:, None, None]
    yy = (np.arange(lo[1], hi[1]) * res[1] - a[1]).astype(f4)[None, :, None]
    xx = (np.arange(lo[2], hi[2]) * res[2] - a[2]).astype(f4)[None, None, :]
    ab = (b - a).astype(f4)
    l2 = float(ab.astype(np.float64).dot(ab))
    if l2 > 0:
        # projection parameter along the axis, then distance to the projected point
        t = zz * f4(ab[0] / l2) + yy * f4(ab[1] / l2) + xx * f4(ab[2] / l2)
        np.clip(t, f4(0.0), f4(1.0), out=t)
        d2 = np.square(zz - t * ab[0])
        d2 += np.square(yy - t * ab[1])
        d2 += np.square(xx - t * ab[2])
        rad = t
        rad *= f4(rb - ra)
        rad += f4(ra)
    else:
        d2 = np.square(zz) + np.square(yy) + np.square(xx)
        rad = f4(max(ra, rb))
    dist = np.sqrt(d2, out=d2)
    dist -= rad
    if shell > 0:
        dist[dist < -f4(shell)] = np.inf
    return dist


def paint_capsules(
    best: np.ndarray,
    owner: np.ndarray,
    res: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    r0: np.ndarray,
    r1: np.ndarray,
    ids: np.ndarray,
    shell: np.ndarray | None = None,
) -> None:
    """Draw capsules into ``owner`` (id per voxel), keeping the deepest surface in ``best``."""
    shape = best.shape
    for k in range(len(ids)):
        a, b = p0[k], p1[k]
        ra, rb = float(r0[k]), float(r1[k])
        box = _bbox(a, b, max(ra, rb), res, shape)
        if box is None:
            continue
        lo, hi = box
        sh = 0.0 if shell is None else float(shell[k])
        sdf = capsule_sdf(lo, hi, res, a, b, ra, rb, sh)
        sl = tuple(slice(int(lo[i]), int(hi[i])) for i in range(3))
        sub = best[sl]
        m = sdf < sub
        m &= sdf < 0
        if m.any():
            sub[m] = sdf[m]
            owner[sl][m] = ids[k]


def paint_masked(
    label: np.ndarray,
    host_label: np.ndarray,
    res: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    ra: float,
    rb: float,
    value: int,
    host: int,
) -> int:
    """Draw one capsule into ``label`` where ``host_label == host`` and ``label`` is free."""
    box = _bbox(a, b, max(ra, rb), res, label.shape)
    if box is None:
        return 0
    lo, hi = box
    sl = tuple(slice(int(lo[i]), int(hi[i])) for i in range(3))
    m = capsule_sdf(lo, hi, res, a, b, ra, rb) < 0
    m &= host_label[sl] == host
    sub = label[sl]
    m &= sub == 0
    sub[m] = value
    return int(m.sum())


def expand_labels(owner: np.ndarray, res: np.ndarray, max_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Give each background voxel the id of its nearest labelled voxel (Voronoi fill).

    Returns the filled ids and the mask of voxels farther than ``max_nm`` from any
    label (left for glia).  Uses scipy's exact EDT feature transform.
    """
    if not owner.any():
        return owner.copy(), np.ones(owner.shape, bool)
    # The feature transform is the slow step: run it on every f-th pixel in y/x
    # (8 nm) and copy its answer to the background pixels between; labelled
    # pixels keep their own id, so only the Voronoi faces get 8 nm steps.
    f = max(1, int(round(8.0 / max(res[1], res[2]))))
    sub = owner[:, ::f, ::f]
    dist, ind = ndi.distance_transform_edt(sub == 0, sampling=(res[0], res[1] * f, res[2] * f),
                                           return_indices=True)
    near = sub[tuple(ind)]
    del ind
    far = dist > max_nm
    del dist
    if f > 1:
        near = np.repeat(np.repeat(near, f, axis=1), f, axis=2)[:, : owner.shape[1], : owner.shape[2]]
        far = np.repeat(np.repeat(far, f, axis=1), f, axis=2)[:, : owner.shape[1], : owner.shape[2]]
    bg = owner == 0
    filled = np.where(bg, near, owner)
    far &= bg
    return filled, far


def boundary_mask(cells: np.ndarray, axes: tuple[int, ...], both_sides: bool) -> np.ndarray:
    """Voxels of a cell that touch a different, non-zero cell along ``axes`` (face neighbours).

    One-sided (only the higher id's voxel) when ``both_sides`` is False, so the
    gap is one voxel wide; both sides give two voxels.
    """
    out = np.zeros(cells.shape, bool)
    for ax in axes:
        n = cells.shape[ax]
        if n < 2:
            continue
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax] = slice(0, n - 1)
        b[ax] = slice(1, n)
        ca, cb = cells[tuple(a)], cells[tuple(b)]
        diff = (ca != cb) & (ca != 0) & (cb != 0)
        if both_sides:
            out[tuple(a)] |= diff
            out[tuple(b)] |= diff
        else:
            out[tuple(a)] |= diff & (ca > cb)
            out[tuple(b)] |= diff & (cb > ca)
    return out


def gap_axes(res: np.ndarray, gap_nm: float) -> tuple[tuple[int, ...], bool]:
    """Which axes get an extracellular gap, and whether on both sides of a contact."""
    fine = float(min(res))
    axes = tuple(i for i in range(3) if res[i] <= 2.0 * gap_nm)
    both = gap_nm >= 1.5 * fine
    return axes, both


def dilate_xy(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary dilation within each z slice (cheap helper for small boxes)."""
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndi.generate_binary_structure(2, 1)
    return ndi.binary_dilation(mask, structure=st, iterations=iterations)
