"""Workspace, layers, ROIs, config and provenance: exact round trips and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wiremap.cli import main
from wiremap.config import WorkspaceConfig, dump_toml, load_toml
from wiremap.errors import (
    ConfigError,
    InputError,
    LayerExistsError,
    LayerNotFoundError,
    WorkspaceError,
)
from wiremap.roi import Roi
from wiremap.volume import build_pyramid, create_layer, open_layer, pyramid_factors, write_volume
from wiremap.workspace import Workspace, kvstore_spec


def test_kvstore_spec_of_urls(monkeypatch, tmp_path):
    assert kvstore_spec(str(tmp_path))["driver"] == "file"
    assert kvstore_spec(f"file://{tmp_path}")["path"] == f"{tmp_path}/"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    s3 = kvstore_spec("s3://bucket/some/prefix")
    assert (s3["bucket"], s3["path"], s3["endpoint"]) == ("bucket", "some/prefix/", "http://127.0.0.1:9000")
    assert kvstore_spec("gs://b/p") == {"driver": "gcs", "bucket": "b", "path": "p/"}
    for bad in ("ftp://x/y", "s3:///nobucket", "file://host/path"):
        with pytest.raises(WorkspaceError):
            kvstore_spec(bad)


def test_create_open_and_refuse_twice(tmp_path):
    ws = Workspace.create(str(tmp_path / "w"), name="demo")
    assert Workspace.open(str(tmp_path / "w")).config.name == "demo"
    with pytest.raises(LayerExistsError):
        Workspace.create(str(tmp_path / "w"))
    with pytest.raises(WorkspaceError, match="no wiremap workspace"):
        Workspace.open(str(tmp_path / "missing"))
    assert ws.layers() == [] and ws.tables() == []


def test_keys_cannot_escape_workspace(workspace):
    for key in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(WorkspaceError):
            workspace.write_bytes(key, b"x")


def test_tables_and_json_round_trip(workspace):
    df = pd.DataFrame({"id": np.array([1, 2**63 + 5], dtype=np.uint64), "type": ["a", "b"]})
    workspace.write_table("neurons", df)
    pd.testing.assert_frame_equal(workspace.read_table("neurons"), df)
    assert workspace.tables() == ["neurons"]
    workspace.write_json("qc/x.json", {"a": np.float32(1.5), "b": np.arange(3)})
    assert workspace.read_json("qc/x.json") == {"a": 1.5, "b": [0, 1, 2]}
    with pytest.raises(LayerNotFoundError):
        workspace.read_table("edges")
    workspace.write_bytes("tables/broken.parquet", b"not parquet")
    with pytest.raises(WorkspaceError, match="Parquet"):
        workspace.read_table("broken")


@pytest.mark.parametrize(
    ("dtype", "kind"), [("uint8", "image"), ("uint32", "segmentation"), ("uint64", "segmentation")]
)
def test_layer_round_trip_is_exact(workspace, rng, dtype, kind):
    info = np.iinfo(dtype)
    data = rng.integers(0, info.max, (9, 40, 70), dtype=dtype, endpoint=True)
    data[0, 0, :3] = [0, info.max, 1]
    layer = write_volume(workspace, "v", data, resolution_nm=(30, 4, 4), kind=kind)
    np.testing.assert_array_equal(open_layer(workspace, "v").read(), data)
    roi = Roi.parse("2:7,5:33,10:69")
    np.testing.assert_array_equal(layer.read(roi), data[2:7, 5:33, 10:69])
    layer.write(np.zeros((1, 2, 3), dtype=dtype), (4, 4, 4))
    assert layer.read(Roi((4, 4, 4), (1, 2, 3))).max() == 0


def test_layer_errors_name_the_problem(workspace):
    write_volume(workspace, "img", np.zeros((2, 8, 8), np.uint8), resolution_nm=(30, 4, 4))
    with pytest.raises(LayerExistsError, match="img"):
        write_volume(workspace, "img", np.ones((2, 8, 8), np.uint8), resolution_nm=(30, 4, 4))
    assert open_layer(workspace, "img").read().max() == 0  # nothing lost
    with pytest.raises(LayerNotFoundError, match="nope"):
        open_layer(workspace, "nope")
    with pytest.raises(InputError, match="outside"):
        open_layer(workspace, "img").read(Roi((0, 0, 0), (3, 8, 8)))
    with pytest.raises(InputError, match="holds uint8"):
        open_layer(workspace, "img").write(np.zeros((1, 1, 1), np.float32))
    with pytest.raises(InputError, match="cannot hold float32"):
        create_layer(workspace, "s", shape_zyx=(1, 2, 2), resolution_nm=(1, 1, 1), dtype="float32", kind="segmentation")
    with pytest.raises(InputError, match="resolution"):
        create_layer(workspace, "s", shape_zyx=(1, 2, 2), resolution_nm=(1, 0, 1), dtype="uint8")


def test_pyramid_means_and_modes(workspace):
    image = np.zeros((4, 8, 8), np.uint8)
    image[:, :4, :4] = 200
    layer = write_volume(workspace, "img", image, resolution_nm=(30, 4, 4), num_scales=3)
    assert layer.info.num_scales == 3
    assert layer.scale_shape(1) == (4, 4, 4) and layer.scale_shape(2) == (4, 2, 2)
    assert layer.read(scale=2)[0].tolist() == [[200, 0], [0, 0]]
    labels = np.ones((8, 8, 8), np.uint64)
    labels[:, :, :3] = 7  # 3 of 4 voxels along x in the first 2x2x2 cell are 7
    seg = write_volume(workspace, "seg", labels, resolution_nm=(8, 8, 8), kind="segmentation")
    seg = build_pyramid(seg, 2)
    assert seg.scale_shape(1) == (4, 4, 4)
    assert seg.read(scale=1)[0, 0].tolist() == [7, 1, 1, 1]
    assert pyramid_factors((30, 4, 4)) == (1, 2, 2) and pyramid_factors((30, 16, 16)) == (2, 2, 2)


def test_roi_parsing_and_algebra():
    roi = Roi.parse("0:4,2:10,3:5")
    assert roi.offset == (0, 2, 3) and roi.shape == (4, 8, 2) and str(roi) == "0:4,2:10,3:5"
    assert roi.intersect(Roi((2, 0, 0), (10, 4, 4))) == Roi((2, 2, 3), (2, 2, 1))
    assert Roi((0, 0, 0), (1, 1, 1)).intersect(Roi((5, 5, 5), (1, 1, 1))).empty
    for bad in ("0:4,2:10", "a:b,0:1,0:1", "4:0,0:1,0:1", "; DROP TABLE,0:1,0:1"):
        with pytest.raises(InputError):
            Roi.parse(bad)


def test_config_is_strict():
    cfg = WorkspaceConfig(name="x")
    text = dump_toml(cfg.to_toml_dict())
    assert WorkspaceConfig.from_toml_dict(load_toml(text, "t")) == cfg
    with pytest.raises(ConfigError, match="unknown section"):
        WorkspaceConfig.from_toml_dict({"workspace": {"name": "x"}, "extra": {}})
    with pytest.raises(ConfigError, match="execution.workers"):
        WorkspaceConfig.from_toml_dict({"workspace": {"name": "x"}, "execution": {"workers": 0}})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml("[workspace", "t")


def test_malformed_config_file_is_a_clear_error(tmp_path):
    ws = Workspace.create(str(tmp_path / "w"))
    ws.write_bytes("wiremap.toml", b'[workspace]\nname = "x"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="colour"):
        Workspace.open(str(tmp_path / "w"))
    assert main(["status", str(tmp_path / "w")]) == 2


def test_provenance_and_staleness(workspace):
    workspace.write_provenance("synth", parameters={"seed": 1}, inputs=[], outputs=["raw"])
    workspace.write_provenance("align", parameters={}, inputs=["raw"], outputs=["aligned"])
    states = {s.stage: s.state for s in workspace.stage_status()}
    assert states["synth"] == states["align"] == "done" and states["segment"] == "missing"
    workspace.write_provenance("synth", parameters={"seed": 2}, inputs=[], outputs=["raw"])
    stale = {s.stage: s for s in workspace.stage_status()}["align"]
    assert stale.state == "stale" and "raw" in stale.reason
    assert workspace.provenance("synth")["parameters"] == {"seed": 2}


def test_cli_init_status_exit_codes(tmp_path, capsys):
    url = str(tmp_path / "w")
    assert main(["init", url]) == 0
    assert main(["init", url]) == 2
    write_volume(Workspace.open(url), "raw", np.zeros((1, 4, 4), np.uint8), resolution_nm=(30, 4, 4))
    assert main(["status", url]) == 0
    out = capsys.readouterr().out
    assert "raw" in out and "missing" in out
    assert main(["status", str(tmp_path / "none")]) == 2
    assert main(["no-such-command"]) == 2
