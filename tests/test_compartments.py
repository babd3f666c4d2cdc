"""Compartment rules on small skeletons with known answers: myelin wrapping, soma cores, SWC tracings."""

from __future__ import annotations

import numpy as np

from wiremap.morphology.compartments import (
    AXON,
    CILIUM,
    DENDRITE,
    SOMA,
    CompartmentParams,
    classify_nodes,
    classify_swc,
    myelin_wrapped,
    soma_nodes,
)
from wiremap.morphology.skeletons import SkeletonData
from wiremap.morphology.swc import parse_swc


def _chain(n: int, step: float, radius: float, start=(0.0, 0.0, 0.0)) -> SkeletonData:
    v = np.array(start) + np.arange(n)[:, None] * np.array([step, 0.0, 0.0])
    e = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1).astype(np.uint32)
    return SkeletonData(v, e, np.full(n, radius, np.float32), np.zeros(n, np.uint8))


def _join(a: SkeletonData, b: SkeletonData, at_a: int, at_b: int) -> SkeletonData:
    """One skeleton of two, with an edge from node ``at_a`` of ``a`` to node ``at_b`` of ``b``."""
    n = len(a.vertices)
    edges = np.concatenate([a.edges, b.edges + n, [[at_a, at_b + n]]]).astype(np.uint32)
    return SkeletonData(
        np.concatenate([a.vertices, b.vertices]),
        edges,
        np.concatenate([a.radii, b.radii]),
        np.zeros(n + len(b.vertices), np.uint8),
    )


def _ring(x_nm: np.ndarray, radius: float, angles: np.ndarray) -> np.ndarray:
    return np.array([[x, radius * np.cos(a), radius * np.sin(a)] for x in x_nm for a in angles])


def test_a_sheath_around_a_node_makes_it_axon_a_neighbours_sheath_on_one_side_does_not():
    dend = _chain(40, 100.0, 300.0)  # dendrite calibre
    around = _ring(np.arange(0, 4000, 100), 340.0, np.array([0.0, 2.1, 4.2]))
    one_side = _ring(np.arange(0, 4000, 100), 340.0, np.array([-0.3, 0.0, 0.3]))  # a sheath touching at +y
    p = CompartmentParams()
    assert myelin_wrapped(dend, around, p).all()
    assert not myelin_wrapped(dend, one_side, p).any()
    assert (classify_nodes(dend, volume_nm3=1e12, myelin_points_nm=around) == AXON).all()
    assert (classify_nodes(dend, volume_nm3=1e12, myelin_points_nm=one_side) == DENDRITE).all()


def _soma_along_x() -> SkeletonData:
    """A soma of radius 1500 nm centred at x = 1500: a node's radius is its distance to the sphere's surface."""
    x = np.arange(0, 3001, 100.0)
    return SkeletonData(
        np.stack([x, np.zeros_like(x), np.zeros_like(x)], axis=1),
        np.stack([np.arange(len(x) - 1), np.arange(1, len(x))], axis=1).astype(np.uint32),
        np.maximum(1500.0 - np.abs(x - 1500.0), 100.0).astype(np.float32),
        np.zeros(len(x), np.uint8),
    )


def test_soma_is_the_thick_core_not_the_thick_root_of_a_dendrite():
    soma = _soma_along_x()
    n_soma = len(soma.vertices)
    # a thick dendrite root leaves it at x = 3000: 800 nm radius for 1 um, then 300 nm
    root = _chain(40, 100.0, 300.0, start=(3100.0, 0.0, 0.0))
    root.radii[:10] = 800.0
    sk = _join(soma, root, n_soma - 1, 0)
    got = soma_nodes(sk, CompartmentParams())
    inside = np.linalg.norm(sk.vertices - [1500.0, 0.0, 0.0], axis=1) < 1500.0
    assert got[inside].all()
    assert not got[n_soma:].any()  # the root is dendrite
    old = soma_nodes(sk, CompartmentParams(soma_core_fraction=0.0, soma_max_elongation=np.inf))  # the rule before
    assert old[n_soma:].sum() == 18


def test_a_long_thick_trunk_without_a_soma_is_not_a_soma():
    trunk = _chain(60, 100.0, 900.0)  # 6 um of 900 nm radius: an apical trunk, not a cell body
    assert not soma_nodes(trunk, CompartmentParams()).any()
    blob = _chain(20, 100.0, 1000.0)  # 2 um long, 1 um radius: compact
    assert soma_nodes(blob, CompartmentParams()).all()


def test_classify_swc_reads_micrometre_tracings():
    # soma (type 1, radius 6 um) with two thin stems: 0.5 um (dendrite calibre) and 0.1 um radius
    lines = ["1 1 0 0 0 6 -1"]
    for k in range(30):
        lines.append(f"{k + 2} 3 {7 + k} 0 0 0.5 {k + 1}")
    for k in range(30):
        lines.append(f"{k + 32} 2 {-7 - k} 0 0 0.1 {1 if k == 0 else k + 31}")
    sk = parse_swc("\n".join(lines))
    got = classify_swc(sk, scale_nm=1000.0)
    assert got[0] == SOMA
    assert (got[sk.compartments == DENDRITE] == DENDRITE).all()
    assert (got[sk.compartments == AXON] == AXON).all()


def test_a_thin_spiny_dendrite_is_dendrite_an_axon_with_boutons_stays_axon():
    # shaft 110 nm with a spine every 10 nodes (neck 50, head 220, 3 nodes each): median 110, upper quartile 220
    spiny = _chain(80, 100.0, 110.0)
    for k in range(0, 80, 10):
        spiny.radii[k : k + 3] = 50.0
        spiny.radii[k + 3 : k + 6] = 220.0
    axon = _chain(80, 100.0, 80.0, start=(0.0, 9000.0, 0.0))
    for k in range(0, 80, 15):  # a 300 nm bouton of 250 nm radius every 1.5 um: a fifth of the cable
        axon.radii[k : k + 3] = 250.0
    volume = 1e12
    assert (classify_nodes(spiny, volume_nm3=volume) == DENDRITE).all()
    assert (classify_nodes(axon, volume_nm3=volume) == AXON).all()
    median_only = CompartmentParams(dendrite_upper_radius_nm=np.inf)  # the rule before
    assert (classify_nodes(spiny, volume_nm3=volume, params=median_only) == AXON).all()


def _along_y(y_nm: np.ndarray, radius: float) -> SkeletonData:
    v = np.stack([np.full(len(y_nm), 1500.0), y_nm, np.zeros(len(y_nm))], axis=1)
    e = np.stack([np.arange(len(y_nm) - 1), np.arange(1, len(y_nm))], axis=1).astype(np.uint32)
    return SkeletonData(v, e, np.full(len(y_nm), radius, np.float32), np.zeros(len(y_nm), np.uint8))


def test_a_short_stub_on_a_soma_is_soma_a_long_thin_unbranched_process_is_a_cilium():
    soma = _soma_along_x()
    n_soma = len(soma.vertices)
    stub = _along_y(np.arange(100.0, 1701.0, 100.0), 30.0)  # leaves the soma (radius 1500) for 200 nm
    cilium = _along_y(-np.arange(100.0, 3001.0, 100.0), 100.0)  # ... for 1500 nm
    sk = _join(_join(soma, stub, 15, 0), cilium, 15, 0)
    box = (np.full(3, -10000.0), np.full(3, 10000.0))
    got = classify_nodes(sk, volume_nm3=1e12, volume_box_nm=box)
    outside = np.linalg.norm(sk.vertices - [1500.0, 0.0, 0.0], axis=1) > 1500.0
    n_stub = n_soma + len(stub.vertices)
    assert outside[n_soma:n_stub].sum() == 2 and (got[n_soma:n_stub] == SOMA).all()
    assert outside[n_stub:].sum() == 15 and (got[n_stub:][outside[n_stub:]] == CILIUM).all()
    before = classify_nodes(sk, volume_nm3=1e12, volume_box_nm=box, params=CompartmentParams(cilium_min_length_nm=0))
    assert (before[n_soma:n_stub][outside[n_soma:n_stub]] == CILIUM).all()  # the rule before: a stub cilium


def test_a_piece_with_synapses_both_ways_is_split_at_them_not_flattened():
    # one cell's axon (x < 5000) and dendrite (x >= 5000) joined in one piece, same calibre
    sk = _chain(100, 100.0, 100.0)
    pre = np.array([[500.0, 0.0, 150.0], [2500.0, 0.0, 150.0]])  # boutons on the axon half
    post = np.array([[6500.0, 0.0, 150.0], [8500.0, 0.0, 150.0]])  # spine synapses on the dendrite half
    got = classify_nodes(sk, volume_nm3=1e12, pre_points_nm=pre, post_points_nm=post)
    want = np.where(sk.vertices[:, 0] < 4600.0, AXON, DENDRITE)  # the split halfway between the votes
    assert (got == want).all()
    one_way = classify_nodes(sk, volume_nm3=1e12, post_points_nm=post)
    assert (one_way == DENDRITE).all()  # votes one way still decide the whole piece
