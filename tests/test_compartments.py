"""Compartment rules on small skeletons with known answers: myelin wrapping, soma cores, SWC tracings."""

from __future__ import annotations

import numpy as np

from wiremap.morphology.compartments import (
    AXON,
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


def test_soma_is_the_thick_core_not_the_thick_root_of_a_dendrite():
    # a soma of radius 1500 nm centred at x = 1500: a node's radius is its distance to the sphere's surface
    x = np.arange(0, 3001, 100.0)
    soma = SkeletonData(
        np.stack([x, np.zeros_like(x), np.zeros_like(x)], axis=1),
        np.stack([np.arange(len(x) - 1), np.arange(1, len(x))], axis=1).astype(np.uint32),
        np.maximum(1500.0 - np.abs(x - 1500.0), 100.0).astype(np.float32),
        np.zeros(len(x), np.uint8),
    )
    # a thick dendrite root leaves it at x = 3000: 800 nm radius for 1 um, then 300 nm
    root = _chain(40, 100.0, 300.0, start=(3100.0, 0.0, 0.0))
    root.radii[:10] = 800.0
    sk = _join(soma, root, len(x) - 1, 0)
    got = soma_nodes(sk, CompartmentParams())
    inside = np.linalg.norm(sk.vertices - [1500.0, 0.0, 0.0], axis=1) < 1500.0
    assert got[inside].all()
    assert not got[len(x) :].any()  # the root is dendrite
    old = soma_nodes(sk, CompartmentParams(soma_core_fraction=0.0, soma_max_elongation=np.inf))  # the rule before
    assert old[len(x) :].sum() == 18


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
