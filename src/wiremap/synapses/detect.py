"""Candidate synapses from a cleft probability map (pure functions).

Thresholding the cleft channel and taking 3D connected components (6-
connectivity by default, so a cleft seen in consecutive sections is one
synapse while clefts touching at an edge stay apart), split at probability
valleys between confident seeds, gives one candidate per cleft; components smaller than ``min_volume_nm3`` or
seen in fewer than ``min_sections`` sections are noise, and components longer than ``max_extent_nm`` are
several touching synapses, cut along their length.  Each candidate's position is its probability-weighted centroid in
voxels ``(z, y, x)``, its ``size`` the voxel count, its ``confidence`` the
mean cleft probability over it and its ``core`` the count of its confident
voxels (above ``seed_threshold``).  A candidate is kept when its mean
probability and its confident volume are both high enough: on synthetic and
real ssTEM alike, the volume of confident voxels separates synapses from dark
specks better than size or mean probability alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cc3d
import fastremap
import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.segmentation import watershed


@dataclass(frozen=True)
class DetectParams:
    """Thresholds of candidate extraction (defaults chosen on training data, see the model card)."""

    threshold: float = 0.4  # cleft probability that counts as cleft
    min_volume_nm3: float = 3.0e5  # smaller components are dropped
    min_confidence: float = 0.8  # components whose mean probability is lower are dropped
    seed_threshold: float = 0.9  # confident voxels: seeds that split components at valleys, and the core
    connectivity: Literal[6, 18, 26] = 6  # how voxels (and sections) link into one cleft
    max_extent_nm: float = 600.0  # > 0: longer components are cut into pieces about this long (touching clefts)
    min_sections: int = 2  # components seen in fewer sections are dropped (isolated dark specks)
    min_core_nm3: float = 2.0e5  # candidates with less volume above seed_threshold are dropped


def cleft_components(
    cleft_prob: np.ndarray, resolution_nm: Sequence[float], params: DetectParams = DetectParams()
) -> tuple[np.ndarray, int]:
    """``(labels uint32, n)``: 3D components of ``cleft_prob > threshold`` big enough to keep."""
    mask = cleft_prob > params.threshold
    if not mask.any():
        return np.zeros(cleft_prob.shape, np.uint32), 0
    voxel_nm3 = float(np.prod(resolution_nm))
    min_voxels = int(np.ceil(params.min_volume_nm3 / voxel_nm3))
    conn = params.connectivity
    labels = cc3d.connected_components(mask, connectivity=conn, out_dtype=np.uint32)
    if min_voxels > 1:
        labels = cc3d.dust(labels, threshold=min_voxels, connectivity=conn, in_place=True)
    if params.seed_threshold > params.threshold:
        labels = split_at_valleys(cleft_prob, labels > 0, params.seed_threshold, min_voxels, conn)
    labels, n = cc3d.connected_components(labels, connectivity=conn, out_dtype=np.uint32, return_N=True)
    if params.min_sections > 1 and n:
        labels, n = drop_thin(labels, params.min_sections)
    if params.max_extent_nm > 0 and n:
        labels, n = split_long(labels, resolution_nm, params.max_extent_nm)
    return labels, int(n)


def drop_thin(labels: np.ndarray, min_sections: int) -> tuple[np.ndarray, int]:
    """Remove components that span fewer than ``min_sections`` sections (z), renumbered 1..n.

    A synaptic density is seen in several serial sections, so a dark
    in-plane streak in one section only is far more often membrane or an
    organelle than a synapse (on real ssTEM, most false detections were such
    one-section components).
    """
    slices = ndimage.find_objects(labels)
    keep = np.zeros(len(slices) + 1, bool)
    for k, sl in enumerate(slices, start=1):
        keep[k] = sl is not None and sl[0].stop - sl[0].start >= min_sections
    out = np.where(keep[labels], labels, 0).astype(np.uint32)
    out, _ = fastremap.renumber(out, in_place=True)
    return out.astype(np.uint32, copy=False), int(out.max())


def split_long(labels: np.ndarray, resolution_nm: Sequence[float], max_extent_nm: float) -> tuple[np.ndarray, int]:
    """Cut components longer than ``max_extent_nm`` into ``ceil(length / max_extent_nm)`` pieces.

    Synapses on one long contact touch and have no probability valley
    between them, so they arrive as one elongated component; a synaptic
    density is rarely longer than a few hundred nm, so such a component is
    cut along its length.  Length is the span along the component's first
    principal axis (nm); the cut is k-means of the voxel positions (nm),
    started from points spread evenly along that axis, so it is
    deterministic.  k-means is hand-written here (a few Lloyd steps) so that
    a cluster left empty keeps its centre quietly; ``scipy.cluster.vq.kmeans2``
    (with ``minit="matrix"``) warns or raises there.
    """
    res = np.asarray(resolution_nm, dtype=np.float64)
    out = labels.copy()
    n = int(labels.max())
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        local = np.argwhere(labels[sl] == k)
        if len(local) < 8:
            continue
        pts = local * res
        centred = pts - pts.mean(axis=0)
        _, vecs = np.linalg.eigh(centred.T @ centred)
        along = centred @ vecs[:, -1]
        span = float(along.max() - along.min())
        parts = int(np.ceil(span / max_extent_nm))
        if parts < 2:
            continue
        order = np.argsort(along, kind="stable")
        centres = np.stack([pts[c].mean(axis=0) for c in np.array_split(order, parts)])
        for _ in range(10):
            near = np.argmin(((pts[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
            new = np.stack([pts[near == j].mean(axis=0) if (near == j).any() else centres[j] for j in range(parts)])
            if np.allclose(new, centres):
                break
            centres = new
        offset = np.array([s.start for s in sl])
        for j in range(1, parts):
            idx = local[near == j] + offset
            if len(idx):
                n += 1
                out[idx[:, 0], idx[:, 1], idx[:, 2]] = n
    out, _ = fastremap.renumber(out, in_place=True)
    return out.astype(np.uint32, copy=False), int(out.max())


def split_at_valleys(
    cleft_prob: np.ndarray,
    mask: np.ndarray,
    seed_threshold: float,
    min_seed: int,
    connectivity: Literal[6, 18, 26] = 26,
) -> np.ndarray:
    """Split touching clefts: seeded watershed of ``-cleft_prob`` inside ``mask``.

    Seeds are components of ``cleft_prob > seed_threshold`` of at least
    ``min_seed // 4`` voxels; adjacent synapses whose densities fade towards
    their rims meet in a valley of the probability and are cut there.  Parts
    of the mask no seed reaches keep their own component.
    """
    seeds = cc3d.connected_components(cleft_prob > seed_threshold, connectivity=connectivity, out_dtype=np.uint32)
    if min_seed > 4:
        seeds = cc3d.dust(seeds, threshold=max(min_seed // 4, 1), connectivity=connectivity, in_place=True)
    seeds = np.where(mask, seeds, 0).astype(np.uint32)
    split = watershed(-cleft_prob, markers=seeds, mask=mask).astype(np.uint32)
    rest = mask & (split == 0)
    if rest.any():
        extra = cc3d.connected_components(rest, connectivity=connectivity, out_dtype=np.uint32)
        split = np.where(rest, extra + split.max(), split)
    return split


def candidate_table(
    labels: np.ndarray,
    n: int,
    cleft_prob: np.ndarray,
    offset_zyx: Sequence[int] = (0, 0, 0),
    core_threshold: float = DetectParams.seed_threshold,
) -> pd.DataFrame:
    """One row per component ``label`` (1..n): z, y, x (global voxels), size, confidence, core.

    ``core`` counts the component's voxels above ``core_threshold``.
    """
    if n == 0:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=t)
                for c, t in (
                    ("label", "int64"),
                    ("z", "f8"),
                    ("y", "f8"),
                    ("x", "f8"),
                    ("size", "f8"),
                    ("confidence", "f8"),
                    ("core", "f8"),
                )
            }
        )
    index = np.arange(1, n + 1)
    weights = cleft_prob.astype(np.float64)
    mass = ndimage.sum_labels(weights, labels, index)
    size = ndimage.sum_labels(np.ones_like(weights), labels, index) if labels.size < 2**31 else None
    size = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64) if size is None else size
    centre = np.asarray(ndimage.center_of_mass(weights, labels, index), dtype=np.float64).reshape(n, 3)
    centre += np.asarray(offset_zyx, dtype=np.float64)
    return pd.DataFrame(
        {
            "label": index.astype(np.int64),
            "z": centre[:, 0],
            "y": centre[:, 1],
            "x": centre[:, 2],
            "size": size,
            "confidence": mass / np.maximum(size, 1),
            "core": ndimage.sum_labels(cleft_prob > core_threshold, labels, index).astype(np.float64),
        }
    )


def filter_candidates(
    table: pd.DataFrame, resolution_nm: Sequence[float], params: DetectParams = DetectParams()
) -> pd.DataFrame:
    """Drop candidates whose mean probability is below ``min_confidence`` or confident volume below
    ``min_core_nm3``."""
    core_nm3 = table["core"] * float(np.prod(resolution_nm))
    keep = (table["confidence"] >= params.min_confidence) & (core_nm3 >= params.min_core_nm3)
    return table[keep].reset_index(drop=True)


def kept_components(
    cleft_prob: np.ndarray, resolution_nm: Sequence[float], params: DetectParams = DetectParams()
) -> np.ndarray:
    """Labels (uint32, 1..n) of the candidates that pass every filter, without partners (for scoring masks)."""
    labels, n = cleft_components(cleft_prob, resolution_nm, params)
    table = candidate_table(labels, n, cleft_prob, core_threshold=params.seed_threshold)
    table = filter_candidates(table, resolution_nm, params)
    keep = np.zeros(n + 1, bool)
    keep[table["label"].to_numpy()] = True
    out = np.where(keep[labels], labels, 0).astype(np.uint32)
    out, _ = fastremap.renumber(out, in_place=True)
    return out.astype(np.uint32, copy=False)
