"""Supervoxels, region graph and mutex agglomeration on affinities with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from wiremap.segment import agglomerate as agg
from wiremap.segment.targets import affinities_from_labels, labels_from_membranes

NN = [(-1, 0, 0), (0, -1, 0), (0, 0, -1)]


def voronoi_labels(shape=(12, 48, 48), n=12, seed=0) -> np.ndarray:
    """Random Voronoi cells (ids 1..n) separated by one-voxel boundaries (0), like gala's labels."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n, 3)) * np.array(shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    d = ((grid[..., None, :] - centres) ** 2).sum(-1)
    lab = (np.argmin(d, -1) + 1).astype(np.uint64)
    edge = np.zeros(shape, bool)
    for axis in range(3):
        diff = np.diff(lab, axis=axis) != 0
        sl = [slice(None)] * 3
        sl[axis] = slice(1, None)
        edge[tuple(sl)] |= diff
    lab[edge] = 0
    return lab


def scores(truth: np.ndarray, seg: np.ndarray) -> tuple[float, float]:
    m = truth > 0
    split, merge = variation_of_information(truth[m], seg[m])
    return float(split + merge), float(adapted_rand_error(truth[m].astype(np.int64), seg[m].astype(np.int64))[0])


def test_affinities_from_labels_known_values():
    lab = np.array([[[1, 1, 0, 2, 2]]], np.uint64)
    aff, mask = affinities_from_labels(lab, NN)
    assert aff[2, 0, 0].tolist() == [0, 1, 0, 0, 1]  # x affinity of p to p-1
    assert mask[2, 0, 0].tolist() == [0, 1, 1, 1, 1]
    assert mask[0].sum() == 0  # no z neighbour in a one-section volume


def test_labels_from_membranes_per_section():
    mem = np.zeros((2, 5, 5), np.uint8)
    mem[:, :, 2] = 1
    lab = labels_from_membranes(mem)
    assert len(np.unique(lab[0][lab[0] > 0])) == 2
    assert set(np.unique(lab[0])).isdisjoint(set(np.unique(lab[1])) - {0})
    assert (lab[mem > 0] == 0).all()


def test_region_edges_across_lower_face():
    svs = np.array([[[5, 5, 7, 7]]], np.uint64)  # x = 0 is the neighbour block's plane
    affs = np.zeros((3, 1, 1, 3), np.float32)
    affs[2] = [[[0.9, 0.2, 0.8]]]
    edges = agg.region_edges(svs, affs, (False, False, True))
    assert edges[["u", "v"]].values.tolist() == [[5, 7]]
    assert edges["count"].tolist() == [1]
    assert edges["aff_sum"].tolist() == pytest.approx([0.2])


@pytest.mark.parametrize("method", ["mean", "mutex"])
def test_agglomeration_threshold_and_cleanup(method):
    sizes = pd.DataFrame({"id": np.array([1, 2, 3, 4], np.uint64), "size": [100, 100, 100, 3]})
    edges = pd.DataFrame(
        {
            "u": np.array([1, 2, 3], np.uint64),
            "v": np.array([2, 3, 4], np.uint64),
            "aff_sum": [9.0, 1.0, 0.1],
            "count": [10, 10, 1],
        }
    )
    table = agg.agglomerate(sizes, edges, threshold=0.5, method=method)
    assert table["segment_id"].tolist() == [1, 1, 2, 3]
    cleaned = agg.agglomerate(sizes, edges, threshold=0.5, min_size=10, method=method)
    assert cleaned["segment_id"].tolist() == [1, 1, 2, 2]  # the 3-voxel piece joins its only neighbour


def test_segment_volume_recovers_cells_from_perfect_affinities():
    truth = voronoi_labels()
    aff, _ = affinities_from_labels(truth, NN)
    noisy = np.clip(aff * 0.9 + 0.05 + np.random.default_rng(1).normal(0, 0.05, aff.shape), 0, 1).astype(np.float32)
    svs, seg, table = agg.segment_volume(noisy, threshold=0.3, min_size=10)
    voi, arand = scores(truth, seg)
    assert voi < 0.05 and arand < 0.01
    assert len(table) >= table["segment_id"].nunique() >= 10
    assert (agg.relabel(svs, table) == seg).all()
    assert seg.min() >= 1  # every voxel belongs to a segment


def test_mean_agglomeration_reaverages_after_merges():
    # 1-2 merge first (0.9); then {1,2}-3 averages 0.6 over 4 contacts + 0.2 over 4 -> 0.4 < 0.5: no merge,
    # although the single edge 1-3 alone (0.6) is above the threshold
    sizes = pd.DataFrame({"id": np.array([1, 2, 3], np.uint64), "size": [100, 100, 100]})
    edges = pd.DataFrame(
        {
            "u": np.array([1, 1, 2], np.uint64),
            "v": np.array([2, 3, 3], np.uint64),
            "aff_sum": [9.0, 2.4, 0.8],
            "count": [10, 4, 4],
        }
    )
    assert agg.agglomerate(sizes, edges, threshold=0.5)["segment_id"].tolist() == [1, 1, 2]
    links = pd.DataFrame({"u": np.array([3], np.uint64), "v": np.array([2], np.uint64), "count": [3]})
    stitched = agg.agglomerate(sizes, edges, threshold=0.5, links=links)  # a face cut: merged first
    assert stitched["segment_id"].tolist() == [1, 1, 1]


def test_relabel_unknown_ids_become_background():
    table = pd.DataFrame({"supervoxel_id": np.array([3, 9], np.uint64), "segment_id": np.array([1, 2], np.uint64)})
    out = agg.relabel(np.array([[[3, 9, 4, 0]]], np.uint64), table)
    assert out.tolist() == [[[1, 2, 0, 0]]]


def test_planar_fragments_stay_in_their_section():
    # two columns of cells (x < 8 and x > 8) through 4 sections, weak z-affinities (as ssTEM predictions)
    truth = np.zeros((4, 16, 17), np.uint64)
    truth[:, :, :8], truth[:, :, 9:] = 1, 2
    aff, _ = affinities_from_labels(truth, NN)
    aff[0] *= 0.6
    svs = agg.fragments(aff, resolution_nm=(30.0, 4.0, 4.0), seed_radius_nm=40.0)  # planar by default
    for z in range(4):
        assert set(np.unique(svs[z])).isdisjoint(np.unique(np.delete(svs, z, axis=0)))
    assert len(np.unique(svs)) == 8  # one fragment per cell and section
    assert len(np.unique(agg.fragments(aff, resolution_nm=(30.0, 4.0, 4.0), planar=False))) < 8
    table = agg.agglomerate(agg.fragment_sizes(svs), agg.region_edges(svs, aff, (False,) * 3), threshold=0.3)
    seg = agg.relabel(svs, table)
    assert scores(truth, seg)[0] < 1e-9 and table["segment_id"].nunique() == 2  # sections linked again
