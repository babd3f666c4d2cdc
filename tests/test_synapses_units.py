"""Synapse pieces on hand-made inputs with known answers: partners, E/I consensus, targets, annotations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from wiremap.synapses.annotations import write_annotations
from wiremap.synapses.detect import DetectParams, candidate_table, cleft_components, filter_candidates
from wiremap.synapses.ei import apply_consensus, neuron_consensus
from wiremap.synapses.partners import assign_partners
from wiremap.synapses.targets import synapse_targets
from wiremap.workspace import Workspace

RES = (30.0, 4.0, 4.0)


def two_cells() -> tuple[np.ndarray, np.ndarray]:
    """Cell 5 above y=20, cell 9 below, a cleft (extracellular) at y=20, x 10..30, z 2..5."""
    seg = np.zeros((8, 40, 40), np.uint64)
    seg[:, :20] = 5
    seg[:, 21:] = 9
    cleft = np.zeros(seg.shape, np.uint32)
    cleft[2:6, 19:22, 10:30] = 1
    return seg, cleft


def test_components_and_candidates():
    _, cleft = two_cells()
    prob = cleft.astype(np.float32) * 0.9
    prob[0, 0:2, 0:2] = 0.9  # a 4-voxel speck: below min volume
    labels, n = cleft_components(prob, RES, DetectParams(0.5, 4 * 480.0 + 1, 0.0))
    assert n == 1
    table = candidate_table(labels, n, prob, offset_zyx=(100, 0, 0))
    assert table.loc[0, "size"] == 4 * 3 * 20
    assert table.loc[0, ["z", "y", "x"]].tolist() == pytest.approx([103.5, 20.0, 19.5])
    assert table.loc[0, "confidence"] == pytest.approx(0.9)
    assert table.loc[0, "core"] == 0  # 0.9 is not above the core threshold (0.9)


def test_partners_follow_side_map_and_direction():
    seg, cleft = two_cells()
    side = np.where(seg == 9, 0.9, 0.1).astype(np.float32)  # 9 looks presynaptic
    ei = np.full(seg.shape, 0.2, np.float32)
    comp = np.where(seg == 9, 2, 3).astype(np.uint32)  # 9 axon, 5 dendrite
    out = assign_partners(cleft, seg, side, ei, RES, comp, reach_nm=16.0)
    assert len(out) == 1
    row = out.iloc[0]
    assert (int(row.pre), int(row.post)) == (9, 5)
    # logit(0.9) - logit(0.1) = ln 81, plus 6 logits for 9 being axon and 5 not
    assert row.partner_confidence == pytest.approx(1 / (1 + np.exp(-np.log(81) - 6.0)))
    assert row.ei_prob == pytest.approx(0.2)
    assert (row.pre_compartment, row.post_compartment) == ("axon", "dendrite")
    assert row.ny == pytest.approx(-1.0, abs=1e-6)  # pre (below) -> post (above): towards -y
    # the opposite side map flips the direction
    flipped = assign_partners(cleft, seg, 1 - side, ei, RES, None, reach_nm=16.0).iloc[0]
    assert (int(flipped.pre), int(flipped.post)) == (5, 9)
    assert flipped.pre_compartment == ""
    # polarity outweighs a weak side map: the axon is presynaptic
    weak = assign_partners(cleft, seg, np.where(seg == 9, 0.4, 0.6).astype(np.float32), ei, RES, comp, 16.0).iloc[0]
    assert (int(weak.pre), int(weak.post)) == (9, 5)


def test_thick_density_marks_the_postsynaptic_side():
    seg, cleft = two_cells()
    image = np.zeros(seg.shape, np.float32)
    image[:, 14:19] = -0.45  # a thick dark density on cell 5's side of the cleft
    flat = np.full(seg.shape, 0.5, np.float32)  # the side map cannot tell
    row = assign_partners(cleft, seg, flat, flat, RES, reach_nm=24.0, image=image).iloc[0]
    assert (int(row.pre), int(row.post)) == (9, 5)
    assert row.dark_post > 0.6 and row.dark_pre == 0.0


def test_partners_need_two_segments():
    seg, cleft = two_cells()
    seg[:] = 5
    out = assign_partners(cleft, seg, np.full(seg.shape, 0.5, np.float32), np.zeros(seg.shape, np.float32), RES)
    assert len(out) == 0


def test_neuron_consensus_outvotes_single_mistakes():
    pre = np.array([1, 1, 1, 2, 2, 3], np.uint64)
    p_e = np.array([0.9, 0.8, 0.001, 0.1, 0.3, 0.6])
    n = neuron_consensus(pre, p_e).set_index("id")
    assert n.loc[1, "ei"] == "E" and n.loc[2, "ei"] == "I" and n.loc[3, "ei"] == "E"
    assert n.loc[1, "n_synapses"] == 3
    table, _ = apply_consensus(pd.DataFrame({"pre": pre, "ei_prob": p_e}))
    assert table["ei"].tolist() == ["E", "E", "E", "I", "I", "E"]
    assert table["ei_synapse"].tolist() == ["E", "E", "I", "I", "I", "E"]
    assert table["ei_confidence"].tolist() == pytest.approx([0.9, 0.8, 0.999, 0.9, 0.7, 0.6])


def test_targets_mark_pre_post_and_type():
    seg, cleft = two_cells()
    syn = pd.DataFrame({"id": [1], "pre": [9], "post": [5], "ei": ["I"]})
    c, side, ei = synapse_targets(cleft, seg, syn, RES, radius_nm=20.0)
    assert c.sum() == cleft.astype(bool).sum()
    assert side[3, 23, 20] == 1.0 and side[3, 17, 20] == 0.0  # 9 (pre) below, 5 (post) above
    assert side[3, 35, 20] == -1.0  # too far from the cleft
    assert side[0, 23, 20] == -1.0  # no cleft in this section
    assert ei[3, 20, 20] == 0.0 and ei[3, 35, 20] == -1.0


def test_annotation_layer_indexes_segments(tmp_path):
    ws = Workspace.create(str(tmp_path / "ws"))
    table = pd.DataFrame(
        {
            "id": np.array([1, 2], np.uint64),
            "pre": np.array([9, 9], np.uint64),
            "post": np.array([5, 7], np.uint64),
            "z": [3.0, 4.0],
            "y": [20.0, 30.0],
            "x": [19.5, 5.0],
            "size": [240.0, 50.0],
            "ei": ["E", "I"],
            "confidence": [0.9, 0.7],
            "ei_confidence": [0.8, 0.6],
            "pre_z": [3.0, 4.0],
            "pre_y": [22.0, 32.0],
            "pre_x": [19.5, 5.0],
            "post_z": [3.0, 4.0],
            "post_y": [18.0, 28.0],
            "post_x": [19.5, 5.0],
        }
    )
    assert write_annotations(ws, table, RES) == 2
    info = json.loads(ws.read_bytes("layers/synapses/info"))
    assert info["annotation_type"] == "line"
    assert [r["id"] for r in info["relationships"]] == ["pre_segment", "post_segment"]
    assert {p["id"] for p in info["properties"]} >= {"ei", "size", "confidence", "color"}
    assert info["dimensions"]["z"] == [30e-9, "m"]
    assert ws.exists("layers/synapses/rel_pre_segment/9")
    assert ws.exists("layers/synapses/rel_post_segment/7")
    assert not ws.exists("layers/synapses/rel_post_segment/9")
    assert ws.exists("layers/synapses/by_id/2")


def test_long_cleft_is_cut_into_synapse_sized_pieces():
    """A 4-section cleft 3 x 200 px (800 nm) long: cut in two at 500 nm, kept whole without a maximum."""
    prob = np.zeros((6, 16, 220), np.float32)
    prob[1:5, 7:10, 10:210] = 0.95  # no valley: one component
    whole, n_whole = cleft_components(prob, RES, DetectParams(0.5, 0.0, 0.0, max_extent_nm=0.0))
    assert n_whole == 1
    cut, n_cut = cleft_components(prob, RES, DetectParams(0.5, 0.0, 0.0, max_extent_nm=500.0))
    assert n_cut == 2
    table = candidate_table(cut, n_cut, prob).sort_values("x")
    assert table["x"].tolist() == pytest.approx([59.5, 159.5], abs=1.0)  # the two halves' centres
    assert table["size"].tolist() == [4 * 3 * 100, 4 * 3 * 100]
    short, n_short = cleft_components(prob[:, :, :110], RES, DetectParams(0.5, 0.0, 0.0, max_extent_nm=500.0))
    assert n_short == 1  # 400 nm: one piece
    one_section = prob.copy()
    one_section[2:5] = 0
    assert cleft_components(one_section, RES, DetectParams(0.5, 0.0, 0.0, min_sections=2))[1] == 0
    assert cleft_components(one_section, RES, DetectParams(0.5, 0.0, 0.0, max_extent_nm=0.0, min_sections=1))[1] == 1


def test_section_stack_gives_neighbours_with_repeated_ends():
    from wiremap.synapses.model import section_stack

    sections = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    stack = section_stack(sections, 0, 4, 1)
    assert stack.shape == (4, 3, 2, 3)
    assert stack[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert section_stack(sections, 1, 3, 0)[:, :, 0, 0].tolist() == [[1], [2]]


def test_candidates_need_a_confident_core():
    """Two clefts of the same size and mean probability; only the one with a confident core is kept."""
    prob = np.zeros((6, 40, 80), np.float32)
    prob[1:5, 10:14, 5:30] = 0.85  # flat: every voxel 0.85
    prob[1:5, 10:14, 45:70] = 0.75
    prob[2:4, 11:13, 50:65] = 0.95  # same mean (about 0.8) but a core of 60 confident voxels
    labels, n = cleft_components(prob, RES, DetectParams(0.5, 0.0, 0.0, max_extent_nm=0.0))
    table = candidate_table(labels, n, prob).sort_values("x").reset_index(drop=True)
    assert table["core"].tolist() == [0, 60]
    kept = filter_candidates(table, RES, DetectParams(min_confidence=0.75, min_core_nm3=50 * 480.0))
    assert kept["x"].tolist() == pytest.approx([table.loc[1, "x"]])
    assert len(filter_candidates(table, RES, DetectParams(min_confidence=0.75, min_core_nm3=0.0))) == 2
