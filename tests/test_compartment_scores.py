"""Compartment figures against ground truth on a hand-made workspace with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wiremap.cli import main as cli_main
from wiremap.errors import InputError
from wiremap.morphology.compartments import AXON, DENDRITE
from wiremap.morphology.scores import score_workspace
from wiremap.volume import write_volume
from wiremap.workspace import Workspace

RES = (30.0, 4.0, 4.0)


def _workspace(tmp_path) -> Workspace:
    """Segment 7 along x: axon for x < 50, dendrite from there, no truth (0) beyond x = 90; 10 nodes, the last
    4 called axon: 2 wrong, 1 unscored."""
    ws = Workspace.create(str(tmp_path / "ws"))
    seg = np.zeros((4, 16, 100), np.uint64)
    seg[:, 4:12, :] = 7
    comp = np.where(seg > 0, np.where(np.arange(100)[None, None, :] < 50, AXON, DENDRITE), 0).astype(np.uint32)
    comp[:, :, 90:] = 0
    write_volume(ws, "segmentation", seg, resolution_nm=RES, kind="segmentation")
    write_volume(ws, "groundtruth/compartments", comp, resolution_nm=RES, kind="segmentation")
    x_nm = (np.arange(10) * 10 + 5) * RES[2]  # voxel x = 5, 15, ..., 95
    pred = np.array([AXON] * 5 + [DENDRITE] * 2 + [AXON] * 3, np.uint8)
    nodes = pd.DataFrame(
        {
            "id": np.full(10, 7, np.uint64),
            "node": np.arange(10),
            "parent": np.arange(-1, 9),
            "x_nm": x_nm,
            "y_nm": np.full(10, 8 * RES[1]),
            "z_nm": np.full(10, 2 * RES[0]),
            "radius_nm": np.full(10, 16.0),
            "compartment": pred,
        }
    )
    ws.write_table("skeleton_nodes", nodes)
    myelin = np.zeros(seg.shape, np.uint32)
    myelin[:, 0:2, :50] = 1
    truth_myelin = np.zeros(seg.shape, np.uint32)
    truth_myelin[:, 0:2, :] = 1
    write_volume(ws, "myelin", myelin, resolution_nm=RES, kind="segmentation")
    write_volume(ws, "groundtruth/myelin", truth_myelin, resolution_nm=RES, kind="segmentation")
    return ws


def test_node_accuracy_confusion_and_myelin_iou(tmp_path):
    ws = _workspace(tmp_path)
    figures = score_workspace(ws)
    assert figures["nodes"] == 9 and figures["nodes_unscored"] == 1
    assert figures["node_accuracy"] == pytest.approx(7 / 9)
    assert figures["confusion"] == {"dendrite->axon": 2}
    assert figures["myelin_iou"] == pytest.approx(0.5) and figures["myelin_truth_voxels"] == 4 * 2 * 100


def test_cli_saves_figures_and_refuses_a_workspace_without_nodes(tmp_path):
    ws = _workspace(tmp_path)
    assert cli_main(["evaluate", "compartments", ws.url]) == 0
    saved = ws.read_json("evaluation/compartments.json")
    assert saved["node_accuracy"] == pytest.approx(7 / 9) and saved["nodes dendrite->axon"] == 2
    empty = Workspace.create(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="skeleton_nodes"):
        score_workspace(empty)
    assert cli_main(["evaluate", "compartments", empty.url]) == 2
