"""Evaluation metrics on tiny inputs whose answers are known by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import maximum_bipartite_matching
from skimage.metrics import adapted_rand_error as sk_adapted_rand_error
from skimage.metrics import variation_of_information as sk_variation_of_information

from wiremap import evaluate as ev
from wiremap.errors import InputError
from wiremap.evaluation import points as points_module
from wiremap.evaluation import segmentation as segmentation_module
from wiremap.synth.model import Skeleton

# ----------------------------------------------------------------------------- segmentation


def test_identical_segmentations_score_perfectly():
    truth = np.array([[[1, 1, 2], [3, 3, 2], [0, 4, 4]]], dtype=np.uint64)
    voi = ev.variation_of_information(truth.copy(), truth)
    assert (voi.split, voi.merge, voi.total) == (0.0, 0.0, 0.0)
    arand = ev.adapted_rand_error(truth.copy(), truth)
    assert arand.error == pytest.approx(0.0, abs=1e-15)
    assert (arand.precision, arand.recall) == (1.0, 1.0)


def test_split_into_two_equal_halves_costs_one_bit_of_split():
    truth = np.ones((2, 4, 4), dtype=np.uint64)
    seg = truth.copy()
    seg[:, :, 2:] = 2
    voi = ev.variation_of_information(seg, truth)
    assert voi.split == pytest.approx(1.0)
    assert voi.merge == 0.0
    assert voi.total == pytest.approx(1.0)
    # Rand: 2 segments of 16 voxels inside one object of 32: precision 1, recall 1/2.
    arand = ev.adapted_rand_error(seg, truth)
    assert arand.precision == 1.0
    assert arand.recall == pytest.approx((16**2 * 2) / 32**2)
    assert arand.error == pytest.approx(1 - 2 * 0.5 / 1.5)


def test_merge_of_two_equal_objects_costs_one_bit_of_merge():
    truth = np.ones((2, 4, 4), dtype=np.uint64)
    truth[:, :, 2:] = 2
    seg = np.full_like(truth, 9)
    voi = ev.variation_of_information(seg, truth)
    assert voi.merge == pytest.approx(1.0)
    assert voi.split == 0.0
    arand = ev.adapted_rand_error(seg, truth)
    assert arand.recall == 1.0
    assert arand.precision == pytest.approx(0.5)


def test_four_way_split_is_two_bits():
    truth = np.full((1, 4, 4), 5, dtype=np.uint64)
    seg = np.arange(4).repeat(4).reshape(1, 4, 4) + 1
    assert ev.variation_of_information(seg, truth).split == pytest.approx(2.0)


def test_scores_are_invariant_to_label_permutation():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, size=(4, 8, 8)).astype(np.uint64)
    seg = rng.integers(1, 9, size=(4, 8, 8)).astype(np.uint64)
    # Relabel both arrays with a random bijection onto large uint64 ids (0 stays 0 in truth).
    new_truth_ids = np.concatenate([[0], rng.permutation(5) * 1000 + 2**40]).astype(np.uint64)
    new_seg_ids = np.concatenate([[0], rng.permutation(8) + 2**62]).astype(np.uint64)
    truth2, seg2 = new_truth_ids[truth], new_seg_ids[seg]
    a, b = ev.variation_of_information(seg, truth), ev.variation_of_information(seg2, truth2)
    assert a.split == pytest.approx(b.split) and a.merge == pytest.approx(b.merge)
    assert a.split > 0.5 and a.merge > 0.5
    ra, rb = ev.adapted_rand_error(seg, truth), ev.adapted_rand_error(seg2, truth2)
    assert ra.error == pytest.approx(rb.error) and 0.3 < ra.error < 1


def test_two_by_two_by_hand():
    truth = np.array([[1, 1], [1, 2]])
    seg = np.array([[1, 1], [2, 2]])
    # Overlaps n_ij: (s1,t1)=2, (s2,t1)=1, (s2,t2)=1; segment sizes 2,2; truth sizes 3,1.
    arand = ev.adapted_rand_error(seg, truth)
    assert arand.precision == pytest.approx(6 / 8)
    assert arand.recall == pytest.approx(6 / 10)
    assert arand.error == pytest.approx(1 - 2 * 0.75 * 0.6 / 1.35)  # = 1/3
    assert arand.error == pytest.approx(1 / 3)
    voi = ev.variation_of_information(seg, truth)
    # H(S|T) = -(1/2 log2(2/3) + 1/4 log2(1/3)); H(T|S) = -2 * 1/4 log2(1/2) = 1/2 (segment 2)
    assert voi.split == pytest.approx(-(0.5 * math.log2(2 / 3) + 0.25 * math.log2(1 / 3)))
    assert voi.merge == pytest.approx(0.5)


def test_truth_background_is_ignored_and_predicted_zero_is_unassigned_for_arand():
    truth = np.array([[1, 1], [0, 2]])
    seg = np.array([[1, 1], [1, 2]])
    # The voxel with truth 0 is not scored: what is left is a perfect match.
    assert ev.adapted_rand_error(seg, truth).error == pytest.approx(0.0, abs=1e-15)
    assert ev.variation_of_information(seg, truth).total == 0.0
    # Without ignoring it, label 0 is one more object and segment 1 merges it.
    assert ev.variation_of_information(seg, truth, ignore_truth=()).merge > 0
    # Predicted 0 = unassigned singletons: (1,1)=2 plus two singletons.
    truth = np.array([[1, 1], [1, 2]])
    seg = np.array([[1, 1], [0, 0]])
    arand = ev.adapted_rand_error(seg, truth)
    assert arand.precision == pytest.approx((4 + 2) / (4 + 2))
    assert arand.recall == pytest.approx((4 + 2) / (9 + 1))
    assert arand.error == pytest.approx(0.25)


def test_contingency_table_and_shared_table():
    seg = np.array([3, 3, 4, 4, 4, 0], dtype=np.uint64)
    truth = np.array([7, 7, 7, 8, 0, 8], dtype=np.uint64)
    t = ev.contingency_table(seg, truth)
    got = sorted(zip(t.segment_ids.tolist(), t.truth_ids.tolist(), t.counts.tolist(), strict=True))
    assert got == [(0, 8, 1), (3, 7, 2), (4, 7, 1), (4, 8, 1)]
    assert t.n_voxels == 5
    assert ev.variation_of_information(table=t) == ev.variation_of_information(seg, truth)
    assert ev.adapted_rand_error(table=t) == ev.adapted_rand_error(seg, truth)


def test_agrees_with_scikit_image_on_random_labels():
    rng = np.random.default_rng(42)
    truth = rng.integers(0, 12, size=(6, 20, 20))
    seg = (truth * 3 + rng.integers(0, 3, size=truth.shape)) % 17 + 1  # no predicted 0
    seg[rng.random(truth.shape) < 0.2] = 5
    voi = ev.variation_of_information(seg, truth)
    # skimage: (H(image1 | image0), H(image0 | image1)) in bits, image0 = truth.
    sk_split, sk_merge = sk_variation_of_information(truth, seg, ignore_labels=[0])
    assert voi.split == pytest.approx(sk_split, rel=1e-12)
    assert voi.merge == pytest.approx(sk_merge, rel=1e-12)
    # skimage counts voxel pairs without self-pairs (sum n^2 - N) and names the
    # truth-normalised ratio "precision"; ours follows CREMI (self-pairs counted,
    # precision normalised by predicted segment sizes). Convert and compare.
    t = ev.contingency_table(seg, truth)
    n = t.n_voxels
    sum_ab = float((t.counts.astype(float) ** 2).sum())
    arand = ev.adapted_rand_error(table=t)
    sum_a = sum_ab / arand.precision  # sum of squared segment sizes
    sum_b = sum_ab / arand.recall  # sum of squared truth sizes
    sk_err, sk_prec, sk_rec = sk_adapted_rand_error(truth, seg, ignore_labels=(0,))
    assert sk_prec == pytest.approx((sum_ab - n) / (sum_b - n), rel=1e-12)
    assert sk_rec == pytest.approx((sum_ab - n) / (sum_a - n), rel=1e-12)
    assert sk_err == pytest.approx(1 - 2 * (sum_ab - n) / (sum_a + sum_b - 2 * n), rel=1e-12)
    # The self-pairs matter little on a real-sized volume.
    assert arand.error == pytest.approx(sk_err, abs=0.01)


def _brute_table(seg: np.ndarray, truth: np.ndarray) -> list[tuple[int, int, int]]:
    pairs, counts = np.unique(np.stack([seg.ravel(), truth.ravel()]), axis=1, return_counts=True)
    return [(int(s), int(t), int(c)) for (s, t), c in zip(pairs.T, counts, strict=True) if t != 0]


@pytest.mark.parametrize("chunk", [segmentation_module._CHUNK, 7])
def test_contingency_table_matches_brute_force(monkeypatch, chunk):
    # chunk=7 puts run boundaries at chunk edges; many labels take the hashing branch.
    monkeypatch.setattr(segmentation_module, "_CHUNK", chunk)
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 4, size=(3, 5, 40)).repeat(2, axis=2)
    seg = rng.integers(1, 6, size=truth.shape) * (rng.random(truth.shape) < 0.7)
    t = ev.contingency_table(seg, truth)
    got = list(zip(t.segment_ids.tolist(), t.truth_ids.tolist(), t.counts.tolist(), strict=True))
    assert sorted(got) == _brute_table(seg, truth)
    assert got == sorted(got, key=lambda row: (row[1], row[0]))  # sorted by (truth, segment)
    many_t = rng.permutation(20_000).astype(np.uint64) + 1  # 20k x 20k possible pairs
    many_s = rng.permutation(20_000).astype(np.uint64) * 3 + 2**50
    many_s[::2] = many_s[1::2]
    t = ev.contingency_table(many_s, many_t)
    got = list(zip(t.segment_ids.tolist(), t.truth_ids.tolist(), t.counts.tolist(), strict=True))
    assert sorted(got) == _brute_table(many_s, many_t)
    assert t.n_voxels == 20_000


def test_ignore_truth_is_exact_for_large_uint64_ids():
    # 2**62 and 2**62 + 1 are the same float64: ignoring one must not drop the other.
    truth = np.array([2**62, 2**62 + 1, 0, 5], dtype=np.uint64)
    t = ev.contingency_table(np.ones(4, dtype=np.uint64), truth, ignore_truth=(2**62 + 1, 0))
    assert t.truth_ids.tolist() == [5, 2**62]
    assert ev.contingency_table(np.ones(4, np.uint64), truth, ignore_truth=(-1,)).n_voxels == 4


def test_segment_to_truth_map_max_overlap_ties_and_background():
    seg = np.array([1, 1, 1, 2, 2, 3, 3, 0])
    truth = np.array([4, 4, 5, 0, 0, 9, 8, 4])
    assert ev.segment_to_truth_map(seg, truth) == {1: 4, 2: 0, 3: 8}
    assert ev.segment_to_truth_map(seg, truth, ignore_truth=(0,)) == {1: 4, 3: 8}


def test_mismatched_shapes_raise_input_error():
    with pytest.raises(InputError, match="shape"):
        ev.variation_of_information(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(InputError, match="integer"):
        ev.adapted_rand_error(np.zeros((2, 2)), np.zeros((2, 2), int))


# ----------------------------------------------------------------------------- ERL


def _line(x0: float, x1: float, step: float = 1.0, y: float = 0.0, z: float = 0.0) -> Skeleton:
    xs = np.arange(x0, x1 + step / 2, step)
    nodes = np.stack([np.full_like(xs, z), np.full_like(xs, y), xs], axis=1)
    parents = np.arange(len(xs)) - 1
    n = len(xs)
    return Skeleton(nodes, np.ones(n), parents.astype(np.int64), np.full(n, 2, np.uint8))


def test_erl_perfect_split_and_background():
    skeletons = {7: _line(0, 10)}  # 11 nodes, 10 edges of 1 nm, along x
    seg = np.full((1, 1, 11), 3, dtype=np.uint64)
    perfect = ev.expected_run_length(skeletons, seg, (1, 1, 1))
    assert perfect.erl_nm == pytest.approx(10.0)
    assert perfect.max_erl_nm == pytest.approx(10.0)
    assert perfect.merged_segment_ids.tolist() == []
    row = perfect.per_skeleton.iloc[0]
    assert (row.skeleton_id, row.n_runs, row.n_split_edges, row.length_nm) == (7, 1, 0, 10.0)

    # Split in the middle: nodes 0..5 in one segment, 6..10 in another; edge 5-6 is lost.
    seg[..., 6:] = 4
    split = ev.expected_run_length(skeletons, seg, (1, 1, 1))
    assert split.erl_nm == pytest.approx((5**2 + 4**2) / 10)  # 4.1, about L/2
    assert split.max_erl_nm == pytest.approx(10.0)
    row = split.per_skeleton.iloc[0]
    assert (row.n_runs, row.n_split_edges, row.correct_length_nm) == (2, 1, 9.0)

    # A background voxel under node 3 breaks its two edges: runs 0-2 (2 nm) and 4-10 (6 nm).
    seg[...] = 3
    seg[0, 0, 3] = 0
    hole = ev.expected_run_length(skeletons, seg, (1, 1, 1))
    assert hole.erl_nm == pytest.approx((2**2 + 6**2) / 10)


def test_erl_merge_zeroes_both_merged_skeletons():
    skeletons = {1: _line(0, 10, y=0), 2: _line(0, 10, y=2), 3: _line(0, 4, y=4)}
    seg = np.zeros((1, 5, 11), dtype=np.uint64)
    seg[0, 0:3, :] = 5  # skeletons 1 and 2 in one segment: a merge
    seg[0, 4, :] = 6
    res = ev.expected_run_length(skeletons, seg, (1, 1, 1))
    assert res.merged_segment_ids.tolist() == [5]
    assert res.erl_nm == pytest.approx(4**2 / (10 + 10 + 4))
    assert res.max_erl_nm == pytest.approx((100 + 100 + 16) / 24)
    table = res.per_skeleton.set_index("skeleton_id")
    assert table.loc[1, "erl_nm"] == 0.0 and table.loc[2, "erl_nm"] == 0.0
    assert table.loc[1, "n_merged_edges"] == 10 and table.loc[3, "erl_nm"] == 4.0

    # A single stray node of skeleton 2 in segment 6 is a merge by default, not with min 2.
    seg[0, 2, 10] = 6
    strict = ev.expected_run_length(skeletons, seg, (1, 1, 1))
    assert strict.merged_segment_ids.tolist() == [5, 6]
    lenient = ev.expected_run_length(skeletons, seg, (1, 1, 1), merge_min_nodes=2)
    assert lenient.merged_segment_ids.tolist() == [5]
    assert lenient.erl_nm == pytest.approx(16 / 24)


def test_erl_resolution_crop_and_branches():
    # A Y-shaped skeleton in nm at 40 x 8 x 8 nm voxels: trunk along z, two branches along x.
    nodes = np.array(
        [[0, 0, 0], [40, 0, 0], [80, 0, 0], [80, 0, 8], [80, 0, 16], [80, 0, -8], [80, 0, -16]],
        dtype=float,
    )
    nodes[:, 2] += 32  # keep x inside the volume
    parents = np.array([-1, 0, 1, 2, 3, 2, 5])
    skel = Skeleton(nodes, np.ones(7), parents, np.full(7, 3, np.uint8))
    seg = np.full((3, 1, 9), 1, dtype=np.uint64)
    seg[2, 0, 5:] = 2  # the +x branch (x voxels 5, 6) is a different segment
    res = ev.expected_run_length({11: skel}, seg, (40, 8, 8))
    # Edges: 40 + 40 (trunk) + 8 + 8 (+x) + 8 + 8 (-x) = 112 nm; the +x branch is cut
    # at its first edge, so runs are trunk + -x branch (96 nm) and the 8 nm +x tip.
    assert res.max_erl_nm == pytest.approx(112.0)
    assert res.erl_nm == pytest.approx((96**2 + 8**2) / 112)
    # Crop: a volume holding only z voxels 1..2 (offset 1): the trunk's first edge is cut away.
    crop = ev.expected_run_length({11: skel}, seg[1:], (40, 8, 8), offset_zyx=(1, 0, 0))
    assert crop.per_skeleton.loc[0, "n_nodes_in_volume"] == 6
    assert crop.max_erl_nm == pytest.approx(72.0)
    assert crop.erl_nm == pytest.approx((56**2 + 8**2) / 72)


def test_erl_nodes_outside_volume_are_ignored():
    skeletons = {1: _line(-5, 15)}
    seg = np.ones((1, 1, 11), dtype=np.uint64)
    res = ev.expected_run_length(skeletons, seg, (1, 1, 1))
    assert res.per_skeleton.loc[0, "n_nodes_in_volume"] == 11
    assert res.erl_nm == pytest.approx(10.0)
    # Leaving the volume (nodes 4-6 at y = 5) and coming back: two 3 nm pieces, and a
    # perfect segmentation scores the maximum, (3^2 + 3^2) / 6 = 3.
    line = _line(0, 10)
    line.nodes_nm[4:7, 1] = 5.0
    res = ev.expected_run_length({1: line}, seg, (1, 1, 1))
    assert res.per_skeleton.loc[0, "length_nm"] == 6.0
    assert res.erl_nm == pytest.approx(3.0) and res.max_erl_nm == pytest.approx(3.0)


def _naive_erl(skeletons: dict, seg: np.ndarray, res: tuple) -> float:
    """ERL by the definition, one skeleton at a time with networkx (independent check)."""
    import networkx as nx

    def segment_of(point):
        v = tuple(np.rint(np.asarray(point) / res).astype(int))
        return int(seg[v]) if all(0 <= a < n for a, n in zip(v, seg.shape, strict=True)) else None

    owners: dict[int, set] = {}
    for sid, sk in skeletons.items():
        for p in sk.nodes_nm:
            s = segment_of(p)
            if s:
                owners.setdefault(s, set()).add(sid)
    merged = {s for s, o in owners.items() if len(o) > 1}
    total, acc = 0.0, 0.0
    for sk in skeletons.values():
        g = nx.Graph()
        for c, p in enumerate(sk.parents):
            a, b = segment_of(sk.nodes_nm[c]), segment_of(sk.nodes_nm[p]) if p >= 0 else None
            if p < 0 or a is None or b is None:
                continue
            length = float(np.linalg.norm(sk.nodes_nm[c] - sk.nodes_nm[p]))
            total += length
            if a == b and a != 0 and a not in merged:
                g.add_edge(c, int(p), length=length)
        for comp in nx.connected_components(g):
            acc += g.subgraph(comp).size(weight="length") ** 2
    return acc / total


def _random_tree(rng: np.random.Generator, n: int, shape_nm: np.ndarray) -> Skeleton:
    nodes = np.empty((n, 3))
    parents = np.full(n, -1, dtype=np.int64)
    nodes[0] = rng.uniform(0, shape_nm)
    for k in range(1, n):
        parents[k] = rng.integers(0, k)
        nodes[k] = nodes[parents[k]] + rng.normal(0, 6, 3)
    return Skeleton(nodes, np.ones(n), parents, np.full(n, 3, np.uint8))


def test_erl_agrees_with_a_naive_implementation_on_random_trees():
    rng = np.random.default_rng(11)
    res = (8.0, 4.0, 4.0)
    shape = (12, 24, 24)
    ratios = []
    for _ in range(4):
        # Three random trees, skeleton k kept inside the y slab k (8 voxels = 32 nm wide).
        skeletons = {}
        for k in range(3):
            sk = _random_tree(rng, 40, np.array(shape) * res)
            np.clip(sk.nodes_nm, [0, 32 * k + 2, 0], [88, 32 * k + 29, 92], out=sk.nodes_nm)
            skeletons[10 + k] = sk
        perfect = (10 + np.indices(shape)[1] // 8).astype(np.uint64)
        # Split along a random x plane, merge 11 into 10 in one corner, punch holes.
        seg = perfect * 10 + (np.indices(shape)[2] > rng.integers(4, 20))
        corner = seg[:6, :12]
        corner[(corner // 10 == 10) | (corner // 10 == 11)] = 1
        seg[rng.random(shape) < 0.02] = 0
        for s in (perfect, seg):
            got = ev.expected_run_length(skeletons, s, res)
            assert got.erl_nm == pytest.approx(_naive_erl(skeletons, s, res))
            ratios.append(got.erl_nm / got.max_erl_nm)
    assert ratios[0::2] == pytest.approx([1.0] * 4)
    assert 0 < min(ratios[1::2]) < 0.5  # non-trivial cases were checked


def test_erl_honours_in_volume_flags():
    # Duck-typed skeleton: Skeleton.in_volume marks nodes not drawn in the volume.
    line = _line(0, 10)
    flags = np.ones(11, dtype=bool)
    flags[8:] = False
    skel = SimpleNamespace(nodes_nm=line.nodes_nm, parents=line.parents, in_volume=flags)
    seg = np.ones((1, 1, 11), dtype=np.uint64)
    res = ev.expected_run_length({1: skel}, seg, (1, 1, 1))
    assert res.per_skeleton.loc[0, "n_nodes_in_volume"] == 8
    assert res.erl_nm == pytest.approx(7.0)


# ----------------------------------------------------------------------------- points


def test_match_points_distance_threshold_is_inclusive():
    true = [[0, 0, 0]]
    m = ev.match_points([[0, 0, 2.0]], true, max_distance=2.0)
    assert m.pairs.tolist() == [[0, 0]]
    m = ev.match_points([[0, 0, 2.001]], true, max_distance=2.0)
    assert m.pairs.shape == (0, 2)
    assert m.unmatched_pred.tolist() == [0] and m.unmatched_true.tolist() == [0]


def test_match_points_tie_gives_one_pair():
    # Two predictions equally far from one true point: exactly one is matched.
    pairs, up, ut = ev.match_points([[0, 0, -1], [0, 0, 1]], [[0, 0, 0]], max_distance=1)
    assert len(pairs) == 1 and len(up) == 1 and len(ut) == 0
    assert set(pairs[:, 0].tolist()) | set(up.tolist()) == {0, 1}


def test_match_points_beats_greedy_and_minimises_distance():
    # Greedy (closest first) pairs B-X (0.9) and leaves A and Y alone; optimal pairs both.
    pred = [[0, 0, 0.0], [0, 0, 1.9]]  # A, B
    true = [[0, 0, 1.0], [0, 0, 3.5]]  # X, Y
    m = ev.match_points(pred, true, max_distance=1.6)
    assert m.pairs.tolist() == [[0, 0], [1, 1]]
    # Same number of pairs either way: the smaller total distance wins.
    m = ev.match_points([[0, 0, 0], [0, 0, 1]], [[0, 0, 1.4], [0, 0, 0.4]], max_distance=2)
    assert m.pairs.tolist() == [[0, 1], [1, 0]]


def test_match_points_uses_resolution():
    pred, true = [[1, 0, 0]], [[0, 0, 0]]  # one section apart
    assert len(ev.match_points(pred, true, 30, resolution_nm=(40, 4, 4)).pairs) == 0
    assert len(ev.match_points(pred, true, 40, resolution_nm=(40, 4, 4)).pairs) == 1
    assert len(ev.match_points(np.zeros((0, 3)), true, 40).pairs) == 0
    # 2-d points (y, x), unit spacing by default.
    assert ev.match_points([[0, 0], [5, 5]], [[0, 1]], 1.0).pairs.tolist() == [[0, 0]]
    with pytest.raises(InputError, match="coordinates"):
        ev.match_points([[0, 0]], [[0, 1]], 1.0, resolution_nm=(1, 1, 1))


def _brute_force(pred: np.ndarray, true: np.ndarray, max_d: float) -> tuple[int, float]:
    d = np.linalg.norm(pred[:, None] - true[None], axis=2)
    big = 1e6
    cost = np.where(d <= max_d, d, big)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < big
    return int(ok.sum()), float(cost[r, c][ok].sum())


@pytest.mark.parametrize("dense_limit", [points_module._DENSE_LIMIT, 0])
def test_match_points_is_optimal_on_random_clouds(monkeypatch, dense_limit):
    # dense_limit=0 sends every multi-point component through the sparse LAPJVsp path.
    monkeypatch.setattr(points_module, "_DENSE_LIMIT", dense_limit)
    rng = np.random.default_rng(3)
    for _ in range(5):
        pred = rng.uniform(0, 20, size=(60, 3))
        true = rng.uniform(0, 20, size=(50, 3))
        pairs, up, ut = ev.match_points(pred, true, max_distance=4.0)
        n, total = _brute_force(pred, true, 4.0)
        assert len(pairs) == n
        dist = np.linalg.norm(pred[pairs[:, 0]] - true[pairs[:, 1]], axis=1)
        assert dist.sum() == pytest.approx(total)
        assert len(set(pairs[:, 0].tolist())) == n and len(set(pairs[:, 1].tolist())) == n
        assert len(up) == 60 - n and len(ut) == 50 - n


def test_match_points_100k_points_is_maximum():
    rng = np.random.default_rng(0)
    n = 100_000
    true = rng.uniform(0, 1000, size=(n, 3))
    pred = true[rng.permutation(n)[:90_000]] + rng.normal(0, 3, size=(90_000, 3))
    pred = np.vstack([pred, rng.uniform(0, 1000, size=(10_000, 3))])
    pairs, up, ut = ev.match_points(pred, true, max_distance=10.0)
    dist = np.linalg.norm(pred[pairs[:, 0]] - true[pairs[:, 1]], axis=1)
    assert dist.max() <= 10.0
    assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))
    # As many pairs as a maximum-cardinality matching (Hopcroft-Karp) of the candidates.
    from scipy.spatial import cKDTree

    cand = cKDTree(pred).sparse_distance_matrix(cKDTree(true), 10.0, output_type="coo_matrix")
    graph = sparse.csr_array((np.ones(cand.nnz), (cand.row, cand.col)), shape=cand.shape)
    best = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    assert len(pairs) == best
    assert len(up) + len(pairs) == n and len(ut) + len(pairs) == n


def _synapses(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["z", "y", "x", "pre", "post"])


def test_synapse_detection_scores():
    true = _synapses([(0, 0, 0, 1, 2), (0, 0, 50, 1, 3), (5, 0, 0, 2, 3)])
    pred = _synapses([(0, 0, 1, 9, 9), (0, 0, 52, 9, 9), (0, 0, 100, 9, 9), (0, 0, 101, 9, 9)])
    s = ev.synapse_detection_scores(pred, true, max_distance_nm=20, resolution_nm=(40, 8, 8))
    # x=1 voxel = 8 nm (match), x=52 vs 50 = 16 nm (match), z=5 sections away: missed.
    assert (s.tp, s.fp, s.fn) == (2, 2, 1)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    empty = ev.synapse_detection_scores(pred.iloc[:0], true, 20, (40, 8, 8))
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 0.0, 0.0)
    with pytest.raises(InputError, match="column"):
        ev.synapse_detection_scores(pred.drop(columns="z"), true, 20, (40, 8, 8))


def test_synaptic_partner_scores_swapped_and_mapped():
    true = _synapses([(0, 0, 0, 1, 2), (0, 0, 50, 1, 3), (0, 0, 100, 2, 3)])
    pred = _synapses([(0, 0, 1, 1, 2), (0, 0, 51, 3, 1), (0, 0, 101, 2, 3)])
    s = ev.synaptic_partner_scores(pred, true, 20, (40, 8, 8))
    # The second prediction has pre and post swapped: wrong.
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    # Predicted segment ids mapped to truth: 10->1, 20->2, 30->3; 40 unmapped.
    pred_seg = _synapses([(0, 0, 1, 10, 20), (0, 0, 51, 10, 30), (0, 0, 101, 40, 30)])
    mapping = {10: 1, 20: 2, 30: 3}
    s = ev.synaptic_partner_scores(pred_seg, true, 20, (40, 8, 8), segment_to_truth=mapping)
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    # Detection alone would have counted all three.
    assert ev.synapse_detection_scores(pred_seg, true, 20, (40, 8, 8)).tp == 3


def test_partner_matching_prefers_the_synapse_with_the_right_partners():
    # Two true synapses close together (polyadic); the prediction sits nearer the
    # one with other partners but carries the partners of the farther one.
    true = _synapses([(0, 0, 0, 1, 2), (0, 0, 2, 1, 3)])
    pred = _synapses([(0, 0, 0, 1, 3)])
    s = ev.synaptic_partner_scores(pred, true, 20, (40, 8, 8))
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)


# ----------------------------------------------------------------------------- alignment, E/I


def test_alignment_residual_known_offsets():
    true = np.stack([np.zeros(20), np.arange(20.0) * 10], axis=1)
    offsets = np.stack([np.zeros(20), np.arange(20.0)], axis=1)  # point i is i px off in x
    r = ev.alignment_residual(true + offsets, true)
    assert r.n == 20 and r.mean_px == pytest.approx(9.5) and r.max_px == 19.0
    assert r.p95_px == pytest.approx(0.95 * 19)  # linear interpolation on 0..19
    # 3-4-5 offsets; NaN rows and masked rows are left out.
    pred = np.array([[3.0, 4.0], [np.nan, 0.0], [6.0, 8.0], [100.0, 0.0]])
    r = ev.alignment_residual(pred, np.zeros((4, 2)), mask=[True, True, True, False])
    assert (r.n, r.mean_px, r.max_px) == (2, 7.5, 10.0)
    assert r.p95_px == pytest.approx(5 + 0.95 * 5)
    # A (H, W, 2) grid of positions works the same way.
    grid = np.zeros((4, 5, 2))
    r = ev.alignment_residual(grid + [0.0, 2.0], grid)
    assert (r.n, r.mean_px, r.p95_px, r.max_px) == (20, 2.0, 2.0, 2.0)
    assert ev.alignment_residual(np.full((2, 2), np.nan), np.zeros((2, 2))).n == 0
    with pytest.raises(InputError):
        ev.alignment_residual(np.zeros((3, 2)), np.zeros((4, 2)))


def test_ei_accuracy_per_synapse_and_per_neuron():
    a = ev.ei_accuracy(["E", "E", "I", "I", "E"], ["E", "I", "I", "", "E"])
    assert a.n == 4 and a.accuracy == pytest.approx(0.75)
    assert a.e_recall == 1.0 and a.i_recall == 0.5 and a.balanced_accuracy == 0.75
    # Per neuron, aligned by id; a neuron missing from the prediction counts as wrong.
    true = pd.Series({10: "E", 11: "I", 12: "I", 13: None})
    pred = pd.Series({12: "I", 10: "E", 99: "I"})
    b = ev.ei_accuracy(pred, true)
    assert (b.n, b.accuracy, b.e_recall, b.i_recall) == (3, 2 / 3, 1.0, 0.5)
    with pytest.raises(InputError):
        ev.ei_accuracy(["E"], ["E", "I"])


def test_truth_pieces_splits_a_neuron_joined_outside_the_volume():
    from wiremap.evaluate import truth_pieces

    truth = np.zeros((2, 3, 7), np.uint64)
    truth[:, :, :3] = 9
    truth[:, :, 4:] = 9  # the same neuron twice, joined outside the volume
    truth[1, 0, 3] = 4
    pieces = truth_pieces(truth)
    assert pieces.dtype == np.uint64
    assert len(np.unique(pieces[truth == 9])) == 2
    assert len(np.unique(pieces[truth == 4])) == 1 and (pieces[truth == 0] == 0).all()
    with pytest.raises(InputError):
        truth_pieces(truth[0])


def test_section_scores_average_each_section_on_its_own():
    truth = np.zeros((2, 4, 4), np.uint64)
    truth[:, :, :2], truth[:, :, 2:] = 1, 2
    seg = truth.copy()
    seg[0, :2, :2] = 3  # section 0: object 1 cut into two equal halves (1 bit of split over half its voxels)
    seg[1] = 5  # section 1: both objects in one segment (1 bit of merge)
    scores = segmentation_module.section_scores(seg, truth)
    assert scores["voi_split"] == pytest.approx(0.5 * 0.5)
    assert scores["voi_merge"] == pytest.approx(0.5 * 1.0)
    assert scores["voi"] == pytest.approx(0.75)
    perfect = segmentation_module.section_scores(truth, truth)
    assert perfect == {"voi": 0.0, "voi_split": 0.0, "voi_merge": 0.0, "arand": 0.0}
    with pytest.raises(InputError, match="dimensions"):
        segmentation_module.section_scores(truth[0], truth[0])
