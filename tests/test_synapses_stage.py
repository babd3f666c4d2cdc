"""The ``synapses`` stage on tiny synthetic tissue: figures against the truth, bad input, the CLI."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from wiremap.cli import main as cli_main
from wiremap.errors import InputError
from wiremap.synapses.scores import score_workspace
from wiremap.synapses.stage import TABLE_COLUMNS, SynapseConfig, run_synapses
from wiremap.synth.stage import SynthConfig, run_synth, use_true_segmentation
from wiremap.volume import write_volume
from wiremap.workspace import Workspace

SHAPE = (20, 256, 256)


@pytest.fixture(scope="module")
def synth_ws(tmp_path_factory):
    """Seed 41 (training uses 2001+), true neurons copied into ``segmentation``, stage run once."""
    url = str(tmp_path_factory.mktemp("syn") / "ws")
    ws = Workspace.create(url)
    run_synth(ws, SynthConfig(shape_zyx=SHAPE, seed=41, acquisition=False, pyramid_scales=1))
    use_true_segmentation(ws)
    config = SynapseConfig(compartments="groundtruth/compartments", block_shape=(20, 128, 128))
    report = run_synapses(ws, config, executor="serial", progress=False)
    return ws, report


def test_figures_against_truth(synth_ws):
    ws, report = synth_ws
    s = score_workspace(ws)
    assert s["n_true"] >= 8
    # Regression guards at the shipped model's level on this small volume (measured: detection P 1.0,
    # R 0.875, F1 0.93, partner F1 0.93, E/I 1.0 per synapse and per neuron, 6 of 7 synapses from their own
    # appearance; with one grey range for the whole stack: R 0.75 and 6 of 6).  Eight synapses are too few
    # to rank models: on six unseen 32x512x512 seeds see `benchmarks/results/synapses.json`.
    assert s["detection_f1"] >= 0.7, s
    assert s["detection_precision"] >= 0.8, s
    assert s["partner_f1"] >= 0.6, s
    assert s["ei_accuracy_synapse_own"] >= 0.85, s
    assert s["ei_accuracy_synapse"] >= 0.8, s
    assert s["ei_accuracy_neuron"] >= 0.9, s
    assert report.n_synapses == s["n_pred"]


def test_table_columns_and_compartments(synth_ws):
    ws, _ = synth_ws
    table = ws.read_table("synapses")
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table["id"].tolist() == list(range(1, len(table) + 1))
    assert (table["pre"] != table["post"]).all() and (table["pre"] > 0).all()
    assert set(table["ei"]) <= {"E", "I"}
    assert ((table["ei_confidence"] >= 0.5) & (table["ei_confidence"] <= 1)).all()
    assert set(table["post_compartment"]) <= {"dendrite", "soma", "axon", ""}
    assert (table["post_compartment"] == "dendrite").mean() >= 0.8  # synthetic synapses are axo-dendritic
    assert np.allclose(np.linalg.norm(table[["nz", "ny", "nx"]].to_numpy(), axis=1), 1.0)
    neurons = ws.read_table("synapse_ei_neurons")
    assert set(neurons["id"]) == set(table["pre"])
    assert ws.exists("layers/synapses/info")


def test_rerun_is_resumable_and_identical(synth_ws):
    ws, _ = synth_ws
    before = ws.read_table("synapses")
    config = SynapseConfig(compartments="groundtruth/compartments", block_shape=(20, 128, 128))
    run_synapses(ws, config, executor="serial", progress=False, overwrite=True)
    after = ws.read_table("synapses")
    assert before.equals(after)


def test_missing_and_inconsistent_segmentation(tmp_path):
    ws = Workspace.create(str(tmp_path / "ws"))
    write_volume(ws, "aligned", np.full((4, 64, 64), 128, np.uint8), resolution_nm=(30, 4, 4))
    with pytest.raises(InputError, match="segmentation layer 'segmentation' not found"):
        run_synapses(ws, progress=False)
    write_volume(ws, "segmentation", np.ones((4, 64, 32), np.uint64), resolution_nm=(30, 4, 4), kind="segmentation")
    with pytest.raises(InputError, match="shape"):
        run_synapses(ws, progress=False)
    assert cli_main(["synapses", str(tmp_path / "ws"), "--executor", "serial"]) == 2


def test_empty_volume_gives_empty_table_and_warning(tmp_path, caplog):
    ws = Workspace.create(str(tmp_path / "ws"))
    write_volume(ws, "aligned", np.zeros((4, 64, 64), np.uint8), resolution_nm=(30, 4, 4))
    write_volume(ws, "segmentation", np.zeros((4, 64, 64), np.uint64), resolution_nm=(30, 4, 4), kind="segmentation")
    with caplog.at_level(logging.WARNING):
        report = run_synapses(ws, executor="serial", progress=False)
    assert report.n_synapses == 0
    assert any("no synapses" in w for w in report.warnings)
    assert len(ws.read_table("synapses")) == 0
    assert ws.exists("layers/synapses/info")
