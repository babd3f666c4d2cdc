"""``wiremap evaluate``: figures computed from workspace layers and tables, saved beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wiremap.cli import main
from wiremap.synth.model import Compartment, Skeleton
from wiremap.synth.skeleton_table import skeleton_table, skeletons_from_table
from wiremap.volume import write_volume


def test_skeleton_table_round_trip():
    sk = {
        5: Skeleton(
            np.array([[0.0, 1, 2], [3, 4, 5]]), np.array([1.0, 2]), np.array([-1, 0]), np.array([1, 3], np.uint8)
        ),
        9: Skeleton(np.zeros((1, 3)), np.ones(1), np.array([-1]), np.array([Compartment.AXON], np.uint8)),
    }
    back = skeletons_from_table(skeleton_table(sk))
    assert sorted(back) == [5, 9]
    np.testing.assert_array_equal(back[5].nodes_nm, sk[5].nodes_nm)
    np.testing.assert_array_equal(back[5].parents, [-1, 0])
    assert back[9].in_volume.tolist() == [True]


@pytest.fixture
def scored_ws(workspace):
    truth = np.zeros((4, 8, 16), np.uint64)
    truth[:, :, :8] = 1
    truth[:, :, 8:] = 2
    pred = truth.copy()
    pred[:, :, 4:8] = 3  # object 1 split into two equal halves
    write_volume(workspace, "groundtruth/neurons", truth, resolution_nm=(10, 10, 10), kind="segmentation")
    write_volume(workspace, "segmentation", pred, resolution_nm=(10, 10, 10), kind="segmentation")
    line = np.array([[20.0, 40.0, 10.0 * x] for x in range(8)])
    skeletons = {1: Skeleton(line, np.ones(8), np.arange(-1, 7), np.full(8, 2, np.uint8))}
    workspace.write_table("groundtruth/skeletons.parquet", skeleton_table(skeletons))
    return workspace


def test_evaluate_segmentation_cli(scored_ws):
    assert main(["evaluate", "segmentation", scored_ws.url]) == 0
    figures = scored_ws.read_json("evaluation/segmentation.json")
    assert figures["voi_split"] == pytest.approx(0.5)  # half the voxels of truth are in a 2-way even split
    assert figures["voi_merge"] == pytest.approx(0.0)
    # skeleton of 70 nm cut between x=30 and x=40 nm: runs of 30 and 30 nm -> (900 + 900) / 70
    assert figures["erl_nm"] == pytest.approx(1800 / 70)
    assert figures["max_erl_nm"] == pytest.approx(70)


def test_evaluate_synapses_cli(scored_ws):
    truth = pd.DataFrame({"pre": [1, 2], "post": [2, 1], "z": [1.0, 2], "y": [4.0, 4], "x": [2.0, 12]})
    pred = pd.DataFrame({"pre": [1, 1], "post": [2, 2], "z": [1.0, 2], "y": [4.0, 4], "x": [2.0, 12.5]})
    scored_ws.write_table("groundtruth/synapses.parquet", truth)
    scored_ws.write_table("synapses", pred)
    assert main(["evaluate", "synapses", scored_ws.url, "--distance-nm", "20"]) == 0
    figures = scored_ws.read_json("evaluation/synapses.json")
    assert figures["detection_f1"] == 1.0
    assert figures["partner_tp"] == 1 and figures["partner_f1"] == pytest.approx(0.5)
    assert np.isnan(figures["ei_accuracy_synapse"])  # neither table says E or I


def test_evaluate_synapses_scores_ei_per_synapse_and_neuron(scored_ws):
    truth = pd.DataFrame(
        {"pre": [1, 2], "post": [2, 1], "z": [1.0, 2], "y": [4.0, 4], "x": [2.0, 12], "ei": ["E", "I"]}
    )
    pred = truth.assign(pre=[3, 2], ei=["E", "E"], ei_synapse=["E", "I"])  # segment 3 is a piece of cell 1
    scored_ws.write_table("groundtruth/synapses.parquet", truth)
    scored_ws.write_table("groundtruth/cells.parquet", pd.DataFrame({"id": [1, 2], "ei": ["E", "I"]}))
    scored_ws.write_table("synapses", pred)
    scored_ws.write_table("synapse_ei_neurons", pd.DataFrame({"id": [3, 2], "ei": ["E", "E"]}))
    assert main(["evaluate", "synapses", scored_ws.url, "--distance-nm", "20"]) == 0
    figures = scored_ws.read_json("evaluation/synapses.json")
    assert figures["ei_accuracy_synapse"] == pytest.approx(0.5)  # the consensus call of segment 2 is wrong
    assert figures["ei_accuracy_synapse_own"] == pytest.approx(1.0)
    assert figures["ei_accuracy_neuron"] == pytest.approx(0.5) and figures["ei_neurons_scored"] == 2


def test_evaluate_errors(scored_ws):
    assert main(["evaluate", "segmentation", scored_ws.url, "--layer", "missing"]) == 2
    assert main(["evaluate", "segmentation", scored_ws.url, "--roi", "0:9,0:8,0:16"]) == 2
    assert main(["evaluate", "synapses", scored_ws.url]) == 2  # no predicted synapse table


def test_truth_pieces_outside_the_volume_are_not_charged(workspace):
    truth = np.zeros((2, 4, 9), np.uint64)
    truth[:, :, :4] = 5
    truth[:, :, 5:] = 5  # one neuron, two pieces joined outside the volume
    pred = np.zeros_like(truth)
    pred[:, :, :4] = 1
    pred[:, :, 5:] = 2
    write_volume(workspace, "groundtruth/neurons", truth, resolution_nm=(30, 4, 4), kind="segmentation")
    write_volume(workspace, "segmentation", pred, resolution_nm=(30, 4, 4), kind="segmentation")
    assert main(["evaluate", "segmentation", workspace.url, "--skeletons", ""]) == 0
    assert workspace.read_json("evaluation/segmentation.json")["voi_total"] == pytest.approx(0.0)
    assert main(["evaluate", "segmentation", workspace.url, "--skeletons", "", "--no-truth-pieces"]) == 0
    assert workspace.read_json("evaluation/segmentation.json")["voi_split"] == pytest.approx(1.0)
