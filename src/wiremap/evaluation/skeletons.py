"""Expected run length (ERL) of a segmentation, scored on ground-truth skeletons.

ERL (Januszewski et al. 2018, "High-precision automated reconstruction of
neurons with flood-filling networks") is the expected length of correctly
reconstructed neurite one finds when starting at a random point of the
ground-truth skeletons: each skeleton edge is *correct* when both of its
nodes lie in the same predicted segment, the segment is not background and
not a *merge*; the correct edges fall apart into *runs* (connected pieces),
and::

    ERL = sum over skeletons s, runs r of s:  length(r)^2 / total length

``max_erl_nm`` is the same sum for a perfect segmentation, where the runs
are the pieces of each skeleton inside the volume: one per skeleton unless
it leaves the volume and comes back.

Merge-aware (as in the FFN paper): a segment holding nodes of two or more
different skeletons is a merge and every edge inside it counts as broken, so
merging two neurons costs both of them all their length in that segment.

Skeleton nodes are in nanometres ``(z, y, x)``; node ``i`` maps to voxel
``round(nodes_nm[i] / resolution_nm) - offset_zyx``.  Nodes outside the
volume, or marked outside by ``Skeleton.in_volume``, are dropped along with
their edges (the skeletons are cropped to the volume; their length outside
it counts nowhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from wiremap.errors import InputError
from wiremap.synth.model import Skeleton

__all__ = ["ERL", "expected_run_length"]

_PER_SKELETON_COLUMNS = [
    "skeleton_id",  # truth id (key of the skeletons mapping)
    "n_nodes",  # nodes of the skeleton
    "n_nodes_in_volume",  # nodes that fall inside the segmentation
    "length_nm",  # length of edges with both nodes inside the volume
    "correct_length_nm",  # length of correct edges
    "n_runs",  # runs (connected pieces of correct edges)
    "erl_nm",  # this skeleton's own ERL: sum run^2 / length_nm (NaN if length 0)
    "n_split_edges",  # edges whose nodes lie in different segments or background
    "n_merged_edges",  # edges inside a merged segment
]


@dataclass(frozen=True)
class ERL:
    """Expected run length in nm, with the perfect-segmentation bound and details."""

    erl_nm: float  # length-weighted mean run length; NaN when no edge is scored
    max_erl_nm: float  # ERL of a perfect segmentation: sum of in-volume piece^2 / total length
    per_skeleton: pd.DataFrame  # one row per skeleton, columns _PER_SKELETON_COLUMNS
    merged_segment_ids: np.ndarray  # uint64, sorted: segments holding >= 2 skeletons


def _gather(
    skeletons: Mapping[int, Skeleton],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate all skeletons: nodes (nm), global parent index, skeleton index per node."""
    nodes, parents, owner, ids = [], [], [], []
    offset = 0
    for k, (sid, skel) in enumerate(skeletons.items()):
        pts = np.asarray(skel.nodes_nm, dtype=np.float64).reshape(-1, 3)
        par = np.asarray(skel.parents, dtype=np.int64).reshape(-1)
        if len(par) != len(pts):
            raise InputError(f"skeleton {sid}: {len(pts)} nodes but {len(par)} parents")
        if len(par) and (par.min() < -1 or par.max() >= len(pts)):
            raise InputError(f"skeleton {sid}: parent index out of range")
        # Nodes the synthetic model marks as outside the imaged volume count as outside.
        in_volume = getattr(skel, "in_volume", None)
        if in_volume is not None:
            pts = np.where(np.asarray(in_volume, dtype=bool)[:, None], pts, np.nan)
        nodes.append(pts)
        parents.append(np.where(par >= 0, par + offset, -1))
        owner.append(np.full(len(pts), k, dtype=np.int64))
        ids.append(sid)
        offset += len(pts)
    if not nodes:
        z = np.zeros(0, dtype=np.int64)
        return np.zeros((0, 3)), z, z, z
    return (
        np.concatenate(nodes),
        np.concatenate(parents),
        np.concatenate(owner),
        np.asarray(ids, dtype=np.int64),
    )


def _pieces(
    n: int,
    child: np.ndarray,
    par: np.ndarray,
    length: np.ndarray,
    owner: np.ndarray,
    keep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Length and skeleton index of each connected piece of the ``keep`` edges."""
    graph = sparse.coo_array((np.ones(int(keep.sum())), (child[keep], par[keep])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    piece_len = np.bincount(comp[child[keep]], weights=length[keep], minlength=comp.max() + 1)
    piece_owner = np.zeros(len(piece_len), dtype=np.int64)
    piece_owner[comp] = owner
    return piece_len, piece_owner


def expected_run_length(
    skeletons: Mapping[int, Skeleton],
    segmentation: np.ndarray,
    resolution_nm: Sequence[float],
    *,
    offset_zyx: Sequence[int] = (0, 0, 0),
    ignore_segments: Iterable[int] = (0,),
    merge_min_nodes: int = 1,
) -> ERL:
    """Merge-aware expected run length of ``segmentation`` on truth ``skeletons``.

    Args:
        skeletons: truth id -> skeleton (nodes in nm, z/y/x).
        segmentation: predicted labels ``(z, y, x)``.
        resolution_nm: voxel size ``(z, y, x)`` in nm.
        offset_zyx: voxel coordinates (in the skeletons' frame) of
            ``segmentation[0, 0, 0]``, for scoring a crop.
        ignore_segments: labels that are not segments (background): an edge
            with a node there is broken, and they are never merges.
        merge_min_nodes: a skeleton takes part in a merge only where at least
            this many of its nodes lie in the segment (1, the strict FFN rule,
            by default; 2-3 forgives a single node on a boundary).

    Example: a straight 10 nm skeleton cut into runs of 5 and 4 nm (the edge
    across the cut is lost) has ``ERL = (5^2 + 4^2) / 10 = 4.1`` nm.
    """
    seg = np.asarray(segmentation)
    if seg.ndim != 3:
        raise InputError(f"segmentation must be 3-d (z, y, x), got shape {seg.shape}")
    res = np.asarray(resolution_nm, dtype=np.float64)
    if res.shape != (3,) or np.any(res <= 0):
        raise InputError(f"resolution_nm must be 3 positive numbers, got {resolution_nm!r}")
    nodes, parent, owner, skel_ids = _gather(skeletons)
    n_skel = len(skel_ids)

    known = np.all(np.isfinite(nodes), axis=1)
    vox = np.zeros(nodes.shape, dtype=np.int64)
    vox[known] = np.rint(nodes[known] / res).astype(np.int64)
    vox -= np.asarray(offset_zyx, dtype=np.int64)
    inside = known & np.all((vox >= 0) & (vox < np.asarray(seg.shape)), axis=1)
    node_seg = np.zeros(len(nodes), dtype=np.uint64)
    node_seg[inside] = seg[tuple(vox[inside].T)]
    is_segment = inside & ~np.isin(node_seg, np.asarray(list(ignore_segments), dtype=np.uint64))

    # Merges: segments whose nodes come from >= 2 skeletons (each with >= merge_min_nodes nodes).
    pairs = pd.DataFrame({"seg": node_seg[is_segment], "owner": owner[is_segment]})
    per_pair = pairs.groupby(["seg", "owner"], sort=False).size()
    per_pair = per_pair[per_pair >= merge_min_nodes].reset_index()
    n_owners = per_pair.groupby("seg").size()
    merged_ids = np.sort(n_owners.index[n_owners >= 2].to_numpy(dtype=np.uint64))
    node_ok = is_segment & ~np.isin(node_seg, merged_ids)

    # Edges child -> parent, scored only when both nodes are inside the volume.
    child = np.flatnonzero(parent >= 0)
    par = parent[child]
    scored = inside[child] & inside[par]
    child, par = child[scored], par[scored]
    length = np.linalg.norm(nodes[child] - nodes[par], axis=1)
    same = node_seg[child] == node_seg[par]
    correct = same & node_ok[child]
    merged_edge = same & is_segment[child] & ~node_ok[child]
    split_edge = ~same | ~is_segment[child]

    # Runs: connected components of the graph of correct edges.
    n = len(nodes)
    if n == 0:
        empty = pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in _PER_SKELETON_COLUMNS})
        return ERL(float("nan"), float("nan"), empty, merged_ids)
    run_len, run_owner = _pieces(n, child, par, length, owner, correct)
    has_run = run_len > 0
    # A perfect segmentation keeps every in-volume piece of a skeleton whole; pieces are
    # separate where the skeleton leaves the volume and comes back.
    piece_len, piece_owner = _pieces(n, child, par, length, owner, np.ones(len(child), bool))

    edge_owner = owner[child]
    total = np.bincount(edge_owner, weights=length, minlength=n_skel)
    sum_sq = np.bincount(run_owner, weights=run_len**2, minlength=n_skel)
    max_sum_sq = np.bincount(piece_owner, weights=piece_len**2, minlength=n_skel)
    with np.errstate(invalid="ignore", divide="ignore"):
        own_erl = np.where(total > 0, sum_sq / total, np.nan)
    table = pd.DataFrame(
        {
            "skeleton_id": skel_ids,
            "n_nodes": np.bincount(owner, minlength=n_skel),
            "n_nodes_in_volume": np.bincount(owner[inside], minlength=n_skel),
            "length_nm": total,
            "correct_length_nm": np.bincount(
                edge_owner[correct], weights=length[correct], minlength=n_skel
            ),
            "n_runs": np.bincount(run_owner[has_run], minlength=n_skel),
            "erl_nm": own_erl,
            "n_split_edges": np.bincount(edge_owner[split_edge], minlength=n_skel),
            "n_merged_edges": np.bincount(edge_owner[merged_edge], minlength=n_skel),
        },
        columns=_PER_SKELETON_COLUMNS,
    )
    grand = float(total.sum())
    if grand > 0:
        erl, max_erl = float(sum_sq.sum() / grand), float(max_sum_sq.sum() / grand)
    else:
        erl = max_erl = float("nan")
    return ERL(erl_nm=erl, max_erl_nm=max_erl, per_skeleton=table, merged_segment_ids=merged_ids)
