"""Ground truth carried into the aligned frame: labels pulled and points pushed through the exact maps."""

from __future__ import annotations

import numpy as np
import pytest

from wiremap.align.truth import AlignedFrame, pull_section
from wiremap.cli import main
from wiremap.volume import Layer
from wiremap.workspace import Workspace


@pytest.fixture(scope="module")
def aligned_ws(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("truth") / "ws")
    assert main(["synth", url, "--shape", "8,256,256", "--seed", "1"]) == 0
    assert main(["stitch", url]) == 0
    assert main(["align", url, "--executor", "serial"]) == 0
    assert main(["align-truth", url]) == 0
    return Workspace.open(url)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_truth_pulled_into_the_aligned_frame_matches_the_aligned_image(aligned_ws):
    """The clean image pulled through the same maps as the labels lines up with the aligned stack."""
    ws = aligned_ws
    frame = AlignedFrame(ws)
    aligned = Layer(ws, "aligned").read().astype(np.float64)
    clean = Layer(ws, "groundtruth/image").read()
    neurons = Layer(ws, "groundtruth/aligned/neurons").read()
    assert neurons.shape == aligned.shape and neurons.dtype == Layer(ws, "groundtruth/neurons").read().dtype
    scored = 0
    for z in range(aligned.shape[0]):
        if z not in frame.fields:  # blank: nothing shown, nothing scored
            assert not neurons[z].any()
            continue
        pulled = pull_section(frame, clean, z).astype(np.float64)
        seen = pulled > 0
        assert _ncc(aligned[z][seen], pulled[seen]) > 0.9, z
        scored += 1
    assert scored >= 6


def test_points_pushed_into_the_aligned_frame_map_back_exactly(aligned_ws):
    """Synapses (voxels) and skeleton nodes (nm) land where the aligned stack shows their tissue point."""
    ws = aligned_ws
    frame = AlignedFrame(ws)
    syn = ws.read_table("groundtruth/synapses.parquet")
    syn_aligned = ws.read_table("groundtruth/aligned/synapses.parquet")
    nodes = ws.read_table("groundtruth/skeletons.parquet")
    nodes_aligned = ws.read_table("groundtruth/aligned/skeletons.parquet")
    assert len(syn) >= 5 and len(nodes_aligned) == len(nodes)
    keep = nodes["in_volume"].to_numpy()
    assert (nodes_aligned["in_volume"] == nodes["in_volume"]).all() and len(syn_aligned) == len(syn)
    res_z, res_yx = 30.0, 4.0
    cases = [(syn.z, syn[["y", "x"]], syn_aligned[["y", "x"]])]
    cases.append(
        (
            nodes.z_nm[keep] / res_z,
            nodes.loc[keep, ["y_nm", "x_nm"]] / res_yx,
            nodes_aligned.loc[keep, ["y_nm", "x_nm"]] / res_yx,
        )
    )
    checked = 0
    for z, tissue, aligned in cases:
        section = np.clip(np.rint(z.to_numpy()), 0, 7).astype(int)
        for s in np.unique(section):
            rows = section == s
            if s not in frame.fields or not rows.any():
                continue
            v, _ = frame.tissue_points(int(s), aligned.to_numpy()[rows])
            assert np.abs(v - tissue.to_numpy()[rows]).max() < 0.01
            checked += int(rows.sum())
    assert checked > 100
    # the reference section's own warp moves points: the aligned table is not a copy
    assert np.abs(syn_aligned[["y", "x"]].to_numpy() - syn[["y", "x"]].to_numpy()).max() > 0.5


def test_without_acquisition_truth_it_is_a_clear_error(tmp_path):
    url = str(tmp_path / "ws")
    assert main(["synth", url, "--shape", "4,128,128", "--seed", "1", "--no-acquisition"]) == 0
    assert main(["align-truth", url]) == 2
