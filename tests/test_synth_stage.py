"""``wiremap synth`` into a workspace: every output there, deterministic, never overwritten by accident."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wiremap.cli import main
from wiremap.errors import LayerExistsError
from wiremap.synth.stage import GROUNDTRUTH_LAYERS, SynthConfig, run_synth
from wiremap.volume import open_layer
from wiremap.workspace import Workspace

SHAPE = (6, 160, 160)


def _synth(url: str, seed: int, acquisition: bool = True) -> Workspace:
    ws = Workspace.create(url)
    run_synth(ws, SynthConfig(shape_zyx=SHAPE, seed=seed, acquisition=acquisition, pyramid_scales=2))
    return ws


def test_synth_writes_layers_tables_tiles_and_provenance(tmp_path):
    ws = _synth(str(tmp_path / "a"), seed=5)
    for name in GROUNDTRUTH_LAYERS:
        layer = open_layer(ws, name)
        assert layer.info.shape_zyx == SHAPE and layer.info.resolution_nm == (30.0, 4.0, 4.0)
    assert open_layer(ws, "groundtruth/neurons").info.dtype == "uint64"
    assert open_layer(ws, "groundtruth/image").info.num_scales == 2
    cells = ws.read_table("groundtruth/cells.parquet")
    labels = np.unique(open_layer(ws, "groundtruth/neurons").read())
    assert set(labels[labels > 0]) <= set(cells["id"].astype(np.uint64))
    skeletons = ws.read_table("groundtruth/skeletons.parquet")
    assert set(skeletons["id"]) <= set(cells["id"])
    manifest = ws.read_table("tiles/manifest.parquet")
    assert manifest["section"].nunique() == SHAPE[0]
    assert ws.exists(manifest["key"].iloc[0])
    assert not ws.has_layer("aligned")  # with acquisition, alignment makes it
    assert ws.provenance("synth")["parameters"]["seed"] == 5


def test_same_seed_same_workspace_contents(tmp_path):
    a = _synth(str(tmp_path / "a"), seed=11, acquisition=False)
    b = _synth(str(tmp_path / "b"), seed=11, acquisition=False)
    c = _synth(str(tmp_path / "c"), seed=12, acquisition=False)
    for name in ("groundtruth/image", "groundtruth/neurons", "aligned"):
        np.testing.assert_array_equal(open_layer(a, name).read(), open_layer(b, name).read())
    pd.testing.assert_frame_equal(a.read_table("groundtruth/cells.parquet"), b.read_table("groundtruth/cells.parquet"))
    pd.testing.assert_frame_equal(
        a.read_table("groundtruth/synapses.parquet"), b.read_table("groundtruth/synapses.parquet")
    )
    assert not np.array_equal(open_layer(a, "aligned").read(), open_layer(c, "aligned").read())


def test_existing_outputs_are_not_replaced_without_overwrite(tmp_path):
    ws = _synth(str(tmp_path / "a"), seed=1, acquisition=False)
    before = open_layer(ws, "aligned").read()
    with pytest.raises(LayerExistsError, match="--overwrite"):
        run_synth(ws, SynthConfig(shape_zyx=SHAPE, seed=2, acquisition=False))
    np.testing.assert_array_equal(open_layer(ws, "aligned").read(), before)
    assert main(["synth", ws.url, "--shape", "6,160,160", "--seed", "2", "--no-acquisition"]) == 2
    assert main(["synth", ws.url, "--shape", "6,160", "--seed", "2"]) == 2
    assert main(["synth", ws.url, "--preset", "confocal"]) == 2


def test_small_sections_get_fewer_beams_with_matchable_overlaps():
    from wiremap.synth.stage import beams_for_section

    assert beams_for_section((4096, 4096)) == beams_for_section((1024, 1024)) == 61
    assert [beams_for_section((n, n)) for n in (512, 384, 256, 64)] == [37, 19, 7, 1]
