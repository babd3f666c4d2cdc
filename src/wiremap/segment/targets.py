"""Training targets: affinities from labels, and labels from membrane masks.

Arrays are ``(z, y, x)``.  An affinity for offset ``o`` (negative, e.g.
``(0, -1, 0)``) at voxel ``p`` says whether ``p`` and ``p + o`` belong to the
same object: 1 when both carry the same non-zero label, 0 otherwise.  Label 0
is boundary/background, so it has affinity 0 to everything (as gala's
one-voxel boundaries and ISBI membranes need).  A *mask* of the same shape
says where a target is defined (both voxels inside the volume, and the label
known there); the loss ignores the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage


def _shifted_pairs(shape: Sequence[int], offset: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``a`` (voxels p) and ``b`` (voxels p + offset) over the part where both are inside."""
    a, b = [], []
    for o, s in zip(offset, shape, strict=True):
        if o >= 0:
            a.append(slice(0, s - o))
            b.append(slice(o, s))
        else:
            a.append(slice(-o, s))
            b.append(slice(0, s + o))
    return tuple(a), tuple(b)


def affinities_from_labels(
    labels: np.ndarray, offsets: Sequence[Sequence[int]], known: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_offsets, z, y, x)`` float32 affinities and masks (1 where the target is defined).

    ``known`` (bool, optional) marks voxels whose label is trustworthy; a pair
    with an unknown voxel is masked out.
    """
    n = len(offsets)
    aff = np.zeros((n, *labels.shape), np.float32)
    mask = np.zeros((n, *labels.shape), np.float32)
    for c, off in enumerate(offsets):
        a, b = _shifted_pairs(labels.shape, off)
        la, lb = labels[a], labels[b]
        aff[c][a] = (la == lb) & (la != 0)
        ok = np.ones(la.shape, bool) if known is None else known[a] & known[b]
        mask[c][a] = ok
    return aff, mask


def labels_from_membranes(membrane: np.ndarray) -> np.ndarray:
    """Per-section instance labels (uint64) from a binary membrane mask (1 = membrane).

    Each section's non-membrane pixels are split into 4-connected components;
    ids are unique over the whole stack, 0 on membrane.  Links between sections
    are unknown, so only in-plane affinities of these labels are meaningful.
    """
    out = np.zeros(membrane.shape, np.uint64)
    next_id = 0
    for z in range(membrane.shape[0]):
        lab = cc3d.connected_components(membrane[z] == 0, connectivity=4).astype(np.uint64)
        lab[lab > 0] += np.uint64(next_id)
        next_id = int(lab.max()) if lab.any() else next_id
        out[z] = lab
    return out


def section_z_affinity(
    membrane: np.ndarray, offsets: Sequence[Sequence[int]], min_distance_px: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    """Weak z-affinity targets for membrane-only serial sections.

    Neurites in ssTEM run mostly across sections, so two voxels stacked in z
    that both lie well inside cells (``min_distance_px`` from any membrane in
    both sections) are taken as connected, and a pair touching membrane as
    not; pairs near membranes are left unlabelled (masked).  Only offsets
    with ``dz != 0, dy == dx == 0`` are set; other channels get mask 0.
    """
    inside = np.stack([ndimage.distance_transform_edt(m == 0) for m in membrane]) >= min_distance_px
    on_membrane = membrane > 0
    n = len(offsets)
    aff = np.zeros((n, *membrane.shape), np.float32)
    mask = np.zeros((n, *membrane.shape), np.float32)
    for c, off in enumerate(offsets):
        if off[0] == 0 or off[1] or off[2]:
            continue
        a, b = _shifted_pairs(membrane.shape, off)
        pos = inside[a] & inside[b]
        neg = on_membrane[a] | on_membrane[b]
        aff[c][a] = pos
        mask[c][a] = pos | neg
    return aff, mask
