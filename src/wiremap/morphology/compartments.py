"""Cell parts: soma / axon / dendrite / glia / cilium per skeleton node, per voxel, per synapse.

Codes are ``wiremap.synth.model.Compartment``: 1 soma, 2 axon, 3 dendrite,
4 glia, 5 cilium (0 = unknown / background).

Per segment (pure functions of its skeleton and a few measured features):

1. **glia**: astrocyte processes are sheets and thin veils packed into the
   space neurites leave, so their volume per length of skeleton (mean
   cross-section) is far below any neurite's; a large segment with a small
   cross-section and a thin median radius is glia, all its nodes at once.
2. **soma**: nodes whose boundary distance exceeds ``soma_radius_nm`` and
   ``soma_core_fraction`` of the segment's thickest node (the soma's core,
   not the thick root of a dendrite leaving it), in a compact run (a run
   longer than ``soma_max_elongation`` radii is a dendrite trunk), and
   every node inside the sphere of such a node.
3. **axon vs dendrite**: the geodesic median radius over ``window_nm`` of
   skeleton (which sees past boutons on axons and thin spine necks on
   dendrites) against ``dendrite_radius_nm``, or its upper quartile against
   ``dendrite_upper_radius_nm`` (a thin spiny dendrite: its necks pull the
   median down, but its shaft and heads fill a quarter of the cable, more
   than the boutons of an axon); nodes wrapped by myelin are
   axon whatever their calibre (wrapped: contacts on all sides, not a
   neighbour's sheath touching one side); presynaptic sites vote axon and
   postsynaptic sites vote dendrite where a synapse table exists.
4. **consistency**: runs shorter than ``min_run_nm`` take their neighbours'
   label, and a connected piece (with the soma cut out) that is mostly one
   part becomes all that part; a piece with ``mixed_votes`` synapse votes
   each way holds both (one cell's axon touching its dendrite, or a merge),
   and each node takes the part of the nearest vote along the skeleton.
5. **cilium**: a thin, unbranched, short piece attached to the soma that
   ends inside the volume and makes no synapses; such a piece shorter than
   ``cilium_min_length_nm`` is a bump of the soma's surface, soma.

Voxels take the part of the nearest skeleton node of their own segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from wiremap.morphology.skeletons import SkeletonData
from wiremap.synth.model import Compartment

SOMA, AXON, DENDRITE, GLIA, CILIUM = (
    int(c) for c in (Compartment.SOMA, Compartment.AXON, Compartment.DENDRITE, Compartment.GLIA, Compartment.CILIUM)
)
NAMES = {0: "unknown", SOMA: "soma", AXON: "axon", DENDRITE: "dendrite", GLIA: "glia", CILIUM: "cilium"}


@dataclass(frozen=True)
class CompartmentParams:
    """Thresholds of the rules in the module docstring (nm unless said)."""

    glia_cross_section_nm2: float = 16000.0  # volume / cable below this: glia
    glia_median_radius_nm: float = 50.0  # ... and median radius below this
    glia_min_cable_nm: float = 1500.0  # ... and at least this much skeleton
    soma_radius_nm: float = 700.0  # boundary distance of a soma's core
    soma_core_fraction: float = 0.7  # ... and at least this share of the segment's thickest node
    soma_max_elongation: float = 4.0  # a thick region longer than this many peak radii is a trunk, not a soma
    dendrite_radius_nm: float = 150.0  # geodesic-median radius above this: dendrite
    dendrite_upper_quantile: float = 75.0  # ... or this percentile of the window's radii
    dendrite_upper_radius_nm: float = 190.0  # ... above this (thin spiny dendrites: shaft and heads)
    window_nm: float = 1500.0  # geodesic window of the radius percentiles (each side)
    myelin_contacts: int = 3  # myelin contact points near a node that make it axon
    myelin_reach_nm: float = 120.0  # how far beyond its radius a node sees myelin
    myelin_one_sided: float = 0.5  # longest mean unit vector to the contacts of a node still wrapped
    synapse_reach_nm: float = 600.0  # how far from a synapse a node takes its vote
    min_run_nm: float = 1000.0  # shorter runs of one label take their neighbours' label
    majority: float = 0.75  # a piece this much one part becomes all that part
    mixed_votes: float = 2.0  # votes each way that mark a piece holding both an axon and a dendrite
    cilium_radius_nm: float = 160.0  # cilium: median radius below this
    cilium_max_length_nm: float = 4000.0  # ... and shorter than this
    cilium_min_length_nm: float = 500.0  # shorter unbranched stubs on a soma are soma (its surface)


def _graph(sk: SkeletonData) -> sp.csr_matrix:
    n = len(sk.vertices)
    e = sk.edges.astype(np.int64)
    w = np.linalg.norm(sk.vertices[e[:, 0]] - sk.vertices[e[:, 1]], axis=1) + 1e-6
    g = sp.coo_matrix((w, (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    return (g + g.T).tocsr()


def is_glia(sk: SkeletonData, volume_nm3: float, params: CompartmentParams) -> bool:
    """Segment-level glia call from its mean cross-section and median radius."""
    cable = sk.cable_length()
    if cable < params.glia_min_cable_nm or sk.empty:
        return False
    return (
        volume_nm3 / cable < params.glia_cross_section_nm2 and float(np.median(sk.radii)) < params.glia_median_radius_nm
    )


def soma_nodes(sk: SkeletonData, params: CompartmentParams) -> np.ndarray:
    """Nodes of somata: thick cores (rule 2) and every node inside their spheres."""
    n = len(sk.vertices)
    soma = np.zeros(n, bool)
    thick = sk.radii >= params.soma_radius_nm
    if not thick.any():
        return soma
    core = thick & (sk.radii >= params.soma_core_fraction * sk.radii.max())
    _, comp = _pieces(sk, core)
    for c in np.unique(comp[core]):
        m = core & (comp == c)
        pts = sk.vertices[m]
        if np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)) > params.soma_max_elongation * sk.radii[m].max():
            core[m] = False
    core = np.flatnonzero(core)
    tree = cKDTree(sk.vertices)
    for c in core:
        soma[tree.query_ball_point(sk.vertices[c], float(sk.radii[c]))] = True
    return soma


def myelin_wrapped(sk: SkeletonData, myelin_points_nm: np.ndarray, params: CompartmentParams) -> np.ndarray:
    """Nodes a myelin sheath surrounds: at least ``myelin_contacts`` contact points within reach,
    on all sides (the mean of the unit vectors to them is short).  A neurite that only touches a
    neighbour's sheath sees its contacts on one side (mean vector length ~1)."""
    tree = cKDTree(myelin_points_nm)
    reach = sk.radii.astype(np.float64) + params.myelin_reach_nm
    out = np.zeros(len(sk.vertices), bool)
    for i, near in enumerate(tree.query_ball_point(sk.vertices, reach)):
        if len(near) >= params.myelin_contacts:
            v = myelin_points_nm[near] - sk.vertices[i]
            v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-9
            out[i] = np.linalg.norm(v.mean(axis=0)) <= params.myelin_one_sided
    return out


def geodesic_median_radius(sk: SkeletonData, window_nm: float) -> np.ndarray:
    """Median radius of the nodes within ``window_nm`` along the skeleton of each node."""
    return geodesic_radius_quantiles(sk, window_nm, (50.0,))[:, 0]


def geodesic_radius_quantiles(sk: SkeletonData, window_nm: float, qs: tuple[float, ...]) -> np.ndarray:
    """Percentiles ``qs`` of the radii of the nodes within ``window_nm`` along the skeleton of each node,
    shape (nodes, len(qs))."""
    n = len(sk.vertices)
    if n == 0:
        return np.zeros((0, len(qs)))
    g = _graph(sk)
    out = np.empty((n, len(qs)))
    step = max(1, 2_000_000 // n)  # rows of the distance matrix at a time: bounded memory
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        dist = dijkstra(g, directed=False, indices=rows, limit=window_nm)
        radii = np.where(np.isfinite(dist), sk.radii[None, :].astype(float), np.nan)
        out[rows] = np.nanpercentile(radii, qs, axis=1).T
    return out


def classify_nodes(
    sk: SkeletonData,
    *,
    volume_nm3: float,
    params: CompartmentParams | None = None,
    myelin_points_nm: np.ndarray | None = None,
    pre_points_nm: np.ndarray | None = None,
    post_points_nm: np.ndarray | None = None,
    volume_box_nm: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Compartment code of every node of one segment's skeleton (points are x/y/z nm)."""
    p = params or CompartmentParams()
    n = len(sk.vertices)
    if n == 0:
        return np.zeros(0, np.uint8)
    if is_glia(sk, volume_nm3, p):
        return np.full(n, GLIA, np.uint8)
    labels = np.zeros(n, np.uint8)
    soma = soma_nodes(sk, p)
    # axon vs dendrite from calibre, then myelin and synapse votes
    med, upper = geodesic_radius_quantiles(sk, p.window_nm, (50.0, p.dendrite_upper_quantile)).T
    dendrite = (med > p.dendrite_radius_nm) | (upper > p.dendrite_upper_radius_nm)
    labels[:] = np.where(dendrite, DENDRITE, AXON)
    axon_votes, dendrite_votes = np.zeros(n), np.zeros(n)
    node_tree = cKDTree(sk.vertices)
    if myelin_points_nm is not None and len(myelin_points_nm):
        wrapped = myelin_wrapped(sk, np.asarray(myelin_points_nm, float), p)
        labels[wrapped] = AXON
        axon_votes[wrapped] += 5.0
    for points, votes in ((pre_points_nm, axon_votes), (post_points_nm, dendrite_votes)):
        if points is not None and len(points):
            d, idx = node_tree.query(points, distance_upper_bound=p.synapse_reach_nm)
            np.add.at(votes, idx[np.isfinite(d)], 1.0)
    labels[soma] = SOMA
    labels = _smooth_runs(sk, labels, p.min_run_nm)
    labels = _piece_majority(sk, labels, axon_votes, dendrite_votes, soma, p)
    labels = _cilia(sk, labels, soma, axon_votes - dendrite_votes, p, volume_box_nm)
    return labels


def classify_swc(sk: SkeletonData, *, scale_nm: float = 1000.0, params: CompartmentParams | None = None) -> np.ndarray:
    """Compartment code of every node of a traced neuron (e.g. an SWC from ``swc.read_swc``).

    ``scale_nm`` is the file's unit in nm (1000 for NeuroMorpho's µm); the
    segment volume the glia rule needs is that of the tapered tubes."""
    scaled = SkeletonData(
        np.asarray(sk.vertices, float) * scale_nm,
        sk.edges,
        np.asarray(sk.radii, float) * scale_nm,
        np.zeros(len(sk.vertices), np.uint8),
    )
    e = scaled.edges.astype(np.int64)
    length = np.linalg.norm(scaled.vertices[e[:, 0]] - scaled.vertices[e[:, 1]], axis=1)
    radius = (scaled.radii[e[:, 0]] + scaled.radii[e[:, 1]]) / 2
    volume = float((np.pi * radius**2 * length).sum())
    return classify_nodes(scaled, volume_nm3=volume, params=params)


def _pieces(sk: SkeletonData, keep: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected pieces of the skeleton restricted to nodes in ``keep``."""
    e = sk.edges.astype(np.int64)
    e = e[keep[e[:, 0]] & keep[e[:, 1]]]
    n = len(sk.vertices)
    g = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)


def _node_length(sk: SkeletonData) -> np.ndarray:
    """Half the length of the edges at each node: its share of the cable."""
    e = sk.edges.astype(np.int64)
    w = np.linalg.norm(sk.vertices[e[:, 0]] - sk.vertices[e[:, 1]], axis=1)
    return np.bincount(e.ravel(), np.repeat(w, 2) / 2, minlength=len(sk.vertices)) + 1e-3


def _smooth_runs(sk: SkeletonData, labels: np.ndarray, min_run_nm: float) -> np.ndarray:
    """Runs of axon/dendrite shorter than ``min_run_nm`` take the label of the run around them."""
    out = labels.copy()
    length = _node_length(sk)
    for value, other in ((AXON, DENDRITE), (DENDRITE, AXON)):
        ncomp, comp = _pieces(sk, out == value)
        run = np.bincount(comp, length, minlength=ncomp)
        e = sk.edges.astype(np.int64)
        touches_other = np.zeros(ncomp, bool)
        for a, b in ((0, 1), (1, 0)):
            m = (out[e[:, a]] == value) & (out[e[:, b]] == other)
            touches_other[comp[e[m, a]]] = True
        short = (run < min_run_nm) & touches_other
        flip = (out == value) & short[comp]
        out[flip] = other
    return out


def _piece_majority(
    sk: SkeletonData,
    labels: np.ndarray,
    axon_votes: np.ndarray,
    dendrite_votes: np.ndarray,
    soma: np.ndarray,
    p: CompartmentParams,
) -> np.ndarray:
    """A piece (soma cut out) that is mostly axon or mostly dendrite becomes all of it;
    synapse and myelin votes decide a piece they clearly favour.  A piece with at least
    ``mixed_votes`` votes each way holds an axon and a dendrite (of one cell, or merged):
    each of its nodes takes the part of the nearest voting node along the skeleton."""
    out = labels.copy()
    ncomp, comp = _pieces(sk, ~soma)
    length = _node_length(sk)
    for c in range(ncomp):
        m = (comp == c) & ~soma
        if not m.any():
            continue
        total = length[m].sum()
        axon = length[m & (out == AXON)].sum() / total
        for_axon, for_dendrite = axon_votes[m].sum(), dendrite_votes[m].sum()
        vote = for_dendrite - for_axon
        if min(for_axon, for_dendrite) >= p.mixed_votes:
            out[m] = _nearest_vote(sk, m, axon_votes, dendrite_votes)
        elif vote <= -2 or (vote < 0 and axon >= 0.5):
            out[m] = AXON
        elif vote >= 2 or (vote > 0 and axon < 0.5):
            out[m] = DENDRITE
        elif axon >= p.majority:
            out[m] = AXON
        elif axon <= 1 - p.majority:
            out[m] = DENDRITE
    return out


def _nearest_vote(sk: SkeletonData, m: np.ndarray, axon_votes: np.ndarray, dendrite_votes: np.ndarray) -> np.ndarray:
    """Part of each node of ``m`` from the nearest (along the skeleton) node with a net vote."""
    g = _graph(sk)
    idx = np.flatnonzero(m)
    sub = g[idx][:, idx]
    net = axon_votes[idx] - dendrite_votes[idx]
    dist = {}
    for name, sources in (("axon", np.flatnonzero(net > 0)), ("dendrite", np.flatnonzero(net < 0))):
        dist[name] = dijkstra(sub, directed=False, indices=sources, min_only=True)
    return np.where(dist["axon"] <= dist["dendrite"], AXON, DENDRITE).astype(np.uint8)


def _cilia(
    sk: SkeletonData,
    labels: np.ndarray,
    soma: np.ndarray,
    score: np.ndarray,
    p: CompartmentParams,
    box: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Thin, short, unbranched, synapse-free pieces hanging off a soma and ending inside: cilia."""
    if not soma.any():
        return labels
    out = labels.copy()
    ncomp, comp = _pieces(sk, ~soma)
    e = sk.edges.astype(np.int64)
    deg = np.bincount(e.ravel(), minlength=len(sk.vertices))
    attached = set(comp[e[soma[e[:, 0]] & ~soma[e[:, 1]], 1]]) | set(comp[e[soma[e[:, 1]] & ~soma[e[:, 0]], 0]])
    length = _node_length(sk)
    for c in attached:
        m = (comp == c) & ~soma
        if length[m].sum() < p.cilium_min_length_nm and not (deg[m] >= 3).any() and not score[m].any():
            out[m] = SOMA  # a bump of the soma's surface the skeleton reached, not a process
            continue
        if (deg[m] >= 3).any() or score[m].any() or length[m].sum() > p.cilium_max_length_nm:
            continue
        if np.median(sk.radii[m]) > p.cilium_radius_nm:
            continue
        if box is not None:
            tips = np.flatnonzero(m & (deg == 1))
            near = np.any(
                (sk.vertices[tips] - box[0] < 2 * p.myelin_reach_nm)
                | (box[1] - sk.vertices[tips] < 2 * p.myelin_reach_nm),
                axis=1,
            )
            if near.any():
                continue
        out[m] = CILIUM
    return out


def voxel_compartments(
    labels_zyx: np.ndarray,
    offset_zyx: tuple[int, int, int],
    resolution_nm: tuple[float, float, float],
    skeletons: dict[int, SkeletonData],
) -> np.ndarray:
    """Compartment code of every voxel of a block: that of the nearest node of its segment."""
    out = np.zeros(labels_zyx.shape, np.uint32)
    res = np.asarray(resolution_nm, float)
    flat = labels_zyx.ravel()
    order = np.argsort(flat, kind="stable")
    ids, starts = np.unique(flat[order], return_index=True)
    ends = np.append(starts[1:], len(flat))
    for i, s, t in zip(ids, starts, ends, strict=True):
        sk = skeletons.get(int(i))
        if i == 0 or sk is None or sk.empty:
            continue
        idx = order[s:t]
        zyx = np.stack(np.unravel_index(idx, labels_zyx.shape), axis=1)
        xyz_nm = ((zyx + np.asarray(offset_zyx) + 0.5) * res)[:, ::-1]
        _, nearest = cKDTree(sk.vertices).query(xyz_nm)
        out.reshape(-1)[idx] = sk.compartments[nearest]
    return out


def node_truth(
    vertices_xyz_nm: np.ndarray,
    segment_id: int,
    segmentation_zyx: np.ndarray,
    compartments_zyx: np.ndarray,
    resolution_nm: tuple[float, float, float],
) -> np.ndarray:
    """True compartment at each node: of the nearest voxel of the node's own segment
    (a node of a thin neurite can sit a voxel outside it after downsampling)."""
    res = np.asarray(resolution_nm, float)
    zyx = np.floor(vertices_xyz_nm[:, ::-1] / res).astype(np.int64)
    zyx = np.clip(zyx, 0, np.array(segmentation_zyx.shape) - 1)
    inside = segmentation_zyx[tuple(zyx.T)] == segment_id
    truth = compartments_zyx[tuple(zyx.T)].astype(np.uint8)
    if not inside.all():
        lo = np.maximum(zyx[~inside].min(axis=0) - 3, 0)
        hi = np.minimum(zyx[~inside].max(axis=0) + 4, segmentation_zyx.shape)
        sub = segmentation_zyx[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == segment_id
        pts = np.argwhere(sub)
        if len(pts):
            tree = cKDTree((pts + lo) * res)
            _, j = tree.query(zyx[~inside] * res)
            q = pts[j] + lo
            truth[~inside] = compartments_zyx[tuple(q.T)]
    return truth
