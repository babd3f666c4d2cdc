"""Workspace stages: simulated tiles -> montage -> aligned, with QC and clear errors."""

from pathlib import Path

import numpy as np
import pytest

from wiremap.align.stage import align_stage, stitch_stage
from wiremap.errors import InputError
from wiremap.roi import Roi
from wiremap.synth.acquisition import AcquisitionConfig, simulate_acquisition, write_acquisition
from wiremap.volume import Layer
from wiremap.workspace import Workspace

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    src = np.load(DATA)["tile_source"]
    vol = np.stack([src, src, src])  # same tissue: after alignment the sections must agree
    acq = simulate_acquisition(vol, (50, 4, 4), AcquisitionConfig(
        beams=7, regime_change_at=None, rescan_fraction=0.0, shift_px=6.0), seed=5)
    w = Workspace.create(str(tmp_path_factory.mktemp("align") / "ws"))
    write_acquisition(acq, w)
    return w


def _ncc(a, b):
    a = a[40:-40, 40:-40].astype(float)
    b = b[40:-40, 40:-40].astype(float)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_stitch_then_align(ws):
    s = stitch_stage(ws)
    assert s["sections"] == 3 and s["attention"] == []
    mont = Layer(ws, "montage").read()
    assert mont.shape == (3, 384, 384) and mont.dtype == np.uint8
    summary = align_stage(ws, "montage", "aligned", executor="serial", block_yx=128)
    assert summary["blank"] == [] and summary["failed"] == []
    al = Layer(ws, "aligned").read(Roi((0, 0, 0), (3, 384, 384)))
    for z in (1, 2):
        assert _ncc(al[0], al[z]) > _ncc(mont[0], mont[z]) + 0.1
        assert _ncc(al[0], al[z]) > 0.8
    assert ws.has_table("align_qc") and ws.has_table("montage_qc")
    assert ws.exists("qc/align_residuals.png") and ws.exists("qc/align_overlay_2.png")  # reference: section 1
    assert ws.provenance("align")["outputs"] == ["aligned"]


def test_missing_tile_is_a_clear_error(ws, tmp_path):
    other = Workspace.create(str(tmp_path / "ws2"))
    for key in ws.list("tiles/"):
        if not key.endswith("_03.png"):
            other.write_bytes(key, ws.read_bytes(key))
    with pytest.raises(InputError, match="_03.png"):
        stitch_stage(other)


def test_align_refuses_non_uint8_layer(ws):
    from wiremap.volume import create_layer

    create_layer(ws, "f32", shape_zyx=(2, 64, 64), resolution_nm=(50, 4, 4), dtype="float32")
    with pytest.raises(InputError, match="uint8"):
        align_stage(ws, "f32", "out", executor="serial")


def test_montage_is_rendered_blockwise_from_stored_models(ws):
    """Small render blocks, each reading only the tiles that touch it, give the section
    rendered whole in memory (up to the mesh inversion's ROI mean, ~0.01 px)."""
    from wiremap.align.montage import render_montage, render_montage_roi
    from wiremap.align.stage import MODELS_PREFIX, _model_from_bytes
    from wiremap.synth.acquisition import read_tile

    stitch_stage(ws, "montage_blocks", executor="serial", block_yx=128, overwrite=True)
    blocks = Layer(ws, "montage_blocks").read()
    assert len(ws.list("blocks/stitch-render-montage_blocks/")) == 3 * 3 * 3
    for z in range(3):
        model, keys = _model_from_bytes(ws.read_bytes(f"{MODELS_PREFIX}{z}.npz"))
        whole = render_montage([read_tile(ws, k) for k in keys], model, blocks.shape[1:])
        diff = np.abs(whole.astype(int) - blocks[z])
        assert diff.mean() < 0.05 and np.percentile(diff, 99.9) <= 2, (z, diff.mean())

    class Counting:
        def __init__(self):
            self.read = set()

        def __getitem__(self, t):
            self.read.add(t)
            return read_tile(ws, keys[t])

    tiles = Counting()
    render_montage_roi(tiles, model, (0, 0), (128, 128))
    assert 0 < len(tiles.read) < len(keys)  # a corner block reads only its own tiles
