"""The mesh / skeletonize / compartments stages and CLI on tiny synthetic tissue with its answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wiremap.cli import main
from wiremap.errors import InputError, LayerNotFoundError
from wiremap.morphology.compartments import node_truth
from wiremap.morphology.meshes import decode_multires, edge_balance
from wiremap.morphology.myelin import iou
from wiremap.morphology.stage import (
    MorphologyConfig,
    read_skeleton,
    run_compartments,
    run_mesh,
    run_skeletonize,
    skeleton_ids,
)
from wiremap.morphology.swc import read_swc
from wiremap.synth.render import RenderConfig, render_em
from wiremap.synth.tissue import TissueConfig, generate_tissue
from wiremap.volume import Layer, write_volume
from wiremap.workspace import Workspace

RES = (30.0, 4.0, 4.0)
# blocks of 16 x 160 x 160 split the 24 x 320 x 320 volume 2 x 2 x 2, so merging across blocks is exercised
CONFIG = MorphologyConfig(block_shape=(16, 160, 160))


@pytest.fixture(scope="module")
def tissue_ws(tmp_path_factory):
    """Axons (one myelinated or more), glia; segmentation = the ground truth (the segment stage is not tested here)."""
    tissue = generate_tissue(
        TissueConfig(shape_zyx=(24, 320, 320), seed=4, min_volume_for_myelin_um3=0.1, myelinated_axons_per_um3=1.0)
    )
    image = render_em(tissue, RenderConfig.preset("sstem"), seed=4)
    ws = Workspace.create(str(tmp_path_factory.mktemp("morph") / "ws"))
    write_volume(ws, "segmentation", tissue.cells.astype(np.uint64), resolution_nm=RES, kind="segmentation")
    write_volume(ws, "aligned", image, resolution_nm=RES)
    run_mesh(ws, CONFIG, executor="serial", progress=False)
    run_skeletonize(ws, CONFIG, executor="serial", progress=False)
    run_compartments(ws, CONFIG, executor="serial", progress=False)
    return ws, tissue


def test_meshes_are_closed_inside_their_segment_and_named_in_the_info(tissue_ws):
    ws, tissue = tissue_ws
    info = ws.read_json("layers/segmentation/info")
    assert info["mesh"] == "mesh" and info["skeletons"] == "skeletons"
    assert ws.read_json("layers/segmentation/mesh/info")["@type"] == "neuroglancer_multilod_draco"
    ids = [int(i) for i in np.unique(tissue.cells) if i]
    for i in ids:
        lods = decode_multires(ws.read_bytes(f"layers/segmentation/mesh/{i}.index"),
                               ws.read_bytes(f"layers/segmentation/mesh/{i}"))
        zyx = np.argwhere(tissue.cells == i)
        lo, hi = (zyx.min(0) * RES)[::-1], ((zyx.max(0) + 1) * RES)[::-1]
        v = lods[0].vertices
        assert np.all(v >= lo - 2 * RES[1]) and np.all(v <= hi + 2 * RES[1]), i
        assert edge_balance(lods[0]) > 0.9, i  # fragments re-fused after 16-bit quantisation


def test_skeleton_cable_matches_ground_truth(tissue_ws):
    ws, tissue = tissue_ws
    ratios = []
    for i, truth in tissue.skeletons.items():
        inside = truth.in_volume & (truth.parents >= 0)
        inside &= truth.in_volume[np.maximum(truth.parents, 0)]
        d = truth.nodes_nm[inside] - truth.nodes_nm[truth.parents[inside]]
        true_len = float(np.linalg.norm(d, axis=1).sum())
        if true_len > 3000 and i in skeleton_ids(ws):
            ratios.append(read_skeleton(ws, i).cable_length() / true_len)
    assert len(ratios) >= 3
    # The true axons are random walks in 60 nm steps whose zigzags the rasterised neurite (and so any
    # skeleton of it) smooths away: skeleton cable is 0.5-1.0x of the walk's length here at the default
    # 16 nm skeleton voxels (0.57-1.14x at 8 nm).
    assert all(0.45 < r < 1.4 for r in ratios), ratios


def test_compartment_accuracy_per_node_and_myelin_iou(tissue_ws):
    ws, tissue = tissue_ws
    nodes = ws.read_table("skeleton_nodes")
    right = total = 0
    for i, rows in nodes.groupby("id"):
        truth = node_truth(rows[["x_nm", "y_nm", "z_nm"]].to_numpy(), int(i), tissue.cells, tissue.compartments, RES)
        right += int((truth == rows["compartment"].to_numpy()).sum())
        total += len(rows)
    assert total > 200
    assert right / total >= 0.95
    assert iou(Layer(ws, "myelin").read(), tissue.myelin) >= 0.9
    voxels = Layer(ws, "compartments").read()
    inside = tissue.cells > 0
    assert (voxels[inside] == tissue.compartments[inside]).mean() > 0.8


def test_compartments_after_synapses_label_each_synapse_row(tissue_ws):
    ws, tissue = tissue_ws
    cells, truth = tissue.cells, tissue.compartments
    # "synapses" where two cells face each other across the extracellular gap along x, pre on the left
    gap = 3
    left, right = cells[:, :, :-gap], cells[:, :, gap:]
    facing = (left > 0) & (right > 0) & (left != right) & (truth[:, :, :-gap] > 0) & (truth[:, :, gap:] > 0)
    z, y, x = np.nonzero(facing)
    pick = np.linspace(0, len(z) - 1, 12).astype(int)
    z, y, x = z[pick], y[pick], x[pick]
    table = pd.DataFrame({"id": np.arange(1, 13, dtype=np.uint64), "pre": cells[z, y, x], "post": cells[z, y, x + gap],
                          "z": z.astype(float), "y": y.astype(float), "x": x + gap / 2,
                          "pre_compartment": "", "post_compartment": ""})
    ws.write_table("synapses", table)
    try:
        run_compartments(ws, CONFIG, executor="serial", progress=False)
        labelled = ws.read_table("synapses")
    finally:
        ws.delete_prefix("tables/synapses")
    assert len(labelled) == 12
    # the rows carry what the compartments layer says about each partner at the synapse
    predicted = Layer(ws, "compartments").read()
    names = {1: "soma", 2: "axon", 3: "dendrite"}
    expected_pre = [names.get(int(c), "") for c in predicted[z, y, x]]
    expected_post = [names.get(int(c), "") for c in predicted[z, y, x + gap]]
    agree = (labelled["pre_compartment"].to_numpy() == expected_pre).tolist() + (
        labelled["post_compartment"].to_numpy() == expected_post
    ).tolist()
    assert np.mean(agree) >= 0.9 and (labelled["pre_compartment"] != "").sum() >= 6


def test_export_swc_and_clear_errors(tissue_ws, tmp_path):
    ws, _ = tissue_ws
    i = skeleton_ids(ws)[0]
    assert main(["export-swc", ws.url, str(i), "--out", str(tmp_path)]) == 0
    swc = read_swc(tmp_path / f"{i}.swc")
    sk = read_skeleton(ws, i)
    assert len(swc.vertices) == len(sk.vertices)
    assert np.array_equal(np.sort(swc.compartments), np.sort(sk.compartments))
    assert main(["export-swc", ws.url, "999999", "--out", str(tmp_path)]) == 2  # id with no voxels
    with pytest.raises(LayerNotFoundError):
        run_mesh(ws, MorphologyConfig(segmentation="nope"), executor="serial", progress=False)
    with pytest.raises(InputError):
        run_mesh(ws, MorphologyConfig(segmentation="aligned"), executor="serial", progress=False)


def test_empty_segmentation_gives_empty_results(tmp_path):
    ws = Workspace.create(str(tmp_path / "empty"))
    write_volume(ws, "segmentation", np.zeros((8, 64, 64), np.uint64), resolution_nm=RES, kind="segmentation")
    assert run_mesh(ws, CONFIG, executor="serial", progress=False).n_segments == 0
    assert run_skeletonize(ws, CONFIG, executor="serial", progress=False).n_segments == 0
    assert run_compartments(ws, CONFIG, executor="serial", progress=False).n_segments == 0
    assert not Layer(ws, "compartments").read().any()
