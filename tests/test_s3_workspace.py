"""A workspace on S3: the same code as on disk, against a local moto S3 server (no network,
dummy credentials).  Layers, tables, JSON, provenance, ``wiremap status`` and volume
import/export all run on ``s3://bucket/ws``."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from wiremap.cli import main  # noqa: E402
from wiremap.errors import LayerExistsError, LayerNotFoundError, WorkspaceError  # noqa: E402
from wiremap.interop import export_volume, import_volume  # noqa: E402
from wiremap.roi import Roi  # noqa: E402
from wiremap.volume import Layer, write_volume  # noqa: E402
from wiremap.workspace import Workspace, kvstore_spec  # noqa: E402

BUCKET = "wiremap-test"
RES = (40.0, 8.0, 8.0)


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on a free local port with one bucket; AWS_* variables point at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.delenv("WIREMAP_S3_ENDPOINT", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=BUCKET)
        try:
            yield client
        finally:
            server.stop()


@pytest.fixture
def s3_ws(s3_server, request):
    """A fresh workspace under its own prefix of the bucket."""
    url = f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}"
    return Workspace.create(url, name="s3-test")


def s3_keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def test_spec_uses_endpoint_and_environment_credentials(s3_server):
    spec = kvstore_spec(f"s3://{BUCKET}/a/b")
    assert spec["driver"] == "s3"
    assert spec["bucket"] == BUCKET
    assert spec["path"] == "a/b/"
    assert spec["endpoint"].startswith("http://127.0.0.1:")
    assert spec["aws_region"] == "us-east-1"
    assert spec["aws_credentials"] == {"type": "environment"}


def test_create_open_and_objects_in_bucket(s3_server, s3_ws):
    assert s3_ws.config.name == "s3-test"
    again = Workspace.open(s3_ws.url)
    assert again.config.name == "s3-test"
    prefix = s3_ws.url[len(f"s3://{BUCKET}/") :]
    assert s3_keys(s3_server, prefix + "/") == [f"{prefix}/wiremap.toml"]
    with pytest.raises(LayerExistsError):
        Workspace.create(s3_ws.url)
    assert Workspace.create(s3_ws.url, exist_ok=True).config.name == "s3-test"
    with pytest.raises(WorkspaceError, match="no wiremap workspace"):
        Workspace.open(f"s3://{BUCKET}/nothing-here")


def test_layers_image_and_segmentation(s3_server, s3_ws):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(6, 20, 18), dtype=np.uint8)
    seg = rng.integers(0, 5, size=(6, 20, 18)).astype(np.uint64) * np.uint64(2**40 + 3)
    write_volume(s3_ws, "raw", image, resolution_nm=RES, num_scales=2)
    write_volume(s3_ws, "seg", seg, resolution_nm=RES, kind="segmentation")
    assert s3_ws.layers() == ["raw", "seg"]
    raw = Layer(s3_ws, "raw")
    assert raw.info.num_scales == 2
    assert np.array_equal(raw.read(), image)
    # Scale 1 halves y and x (z is 40 nm, y/x 8 nm): the mean of 2x2 blocks.
    assert raw.scale_shape(1) == (6, 10, 9)
    assert np.array_equal(Layer(s3_ws, "seg").read(), seg)
    roi = Roi.parse("1:4,5:15,2:9")
    assert np.array_equal(Layer(s3_ws, "seg").read(roi), seg[1:4, 5:15, 2:9])
    patch = np.full((2, 3, 4), 2**63 + 1, np.uint64)
    Layer(s3_ws, "seg").write(patch, (3, 4, 5))
    seg[3:5, 4:7, 5:9] = patch
    assert np.array_equal(Layer(s3_ws, "seg").read(), seg)
    s3_ws.delete_prefix("layers/raw/")
    assert s3_ws.layers() == ["seg"]
    with pytest.raises(LayerNotFoundError):
        Layer(s3_ws, "raw")


def test_tables_json_provenance_status(s3_server, s3_ws):
    neurons = pd.DataFrame({"id": np.array([1, 2**40], np.uint64), "type": ["E", "I"]})
    s3_ws.write_table("neurons", neurons)
    assert s3_ws.tables() == ["neurons"]
    assert s3_ws.has_table("neurons")
    pd.testing.assert_frame_equal(s3_ws.read_table("neurons"), neurons)
    s3_ws.write_json("qc/summary.json", {"ok": True, "voxels": np.int64(12)})
    assert s3_ws.read_json("qc/summary.json") == {"ok": True, "voxels": 12}
    s3_ws.write_provenance("synth", parameters={"seed": 3}, inputs=[], outputs=["raw"])
    s3_ws.write_provenance("align", parameters={}, inputs=["raw"], outputs=["aligned"])
    states = {st.stage: st.state for st in s3_ws.stage_status()}
    assert states["synth"] == "done" and states["align"] == "done"
    assert states["segment"] == "missing"
    # Re-running synth after align makes align stale.
    s3_ws.write_provenance("synth", parameters={"seed": 4}, inputs=[], outputs=["raw"])
    assert {st.stage: st.state for st in s3_ws.stage_status()}["align"] == "stale"
    assert s3_ws.provenance("synth")["parameters"] == {"seed": 4}


def test_cli_status_import_export_on_s3(s3_server, s3_ws, tmp_path, capsys):
    vol = (np.arange(5 * 7 * 9, dtype=np.uint64).reshape(5, 7, 9) % 11) * np.uint64(2**33)
    np.save(tmp_path / "seg.npy", vol)
    args = ["import-volume", str(tmp_path / "seg.npy"), s3_ws.url, "--layer", "seg"]
    args += ["--resolution", "40,8,8", "--kind", "segmentation"]
    assert main(args) == 0
    assert main(args) == 2  # exists
    assert main([*args, "--overwrite"]) == 0  # staged under tmp/, then moved over the old one
    assert s3_ws.list("tmp/") == []
    assert np.array_equal(Layer(s3_ws, "seg").read(), vol)
    assert s3_ws.provenance("import-seg")["outputs"] == ["seg"]
    out = tmp_path / "crop.h5"
    assert main(["export-volume", s3_ws.url, "seg", f"{out}:/labels", "--roi", "1:5,0:7,3:9"]) == 0
    with h5py.File(out, "r") as h5:
        assert np.array_equal(h5["labels"][...], vol[1:5, :, 3:9])
    capsys.readouterr()
    assert main(["status", s3_ws.url]) == 0
    text = capsys.readouterr().out
    assert "seg" in text and "segmentation" in text and "import-seg" in text
    assert main(["status", f"s3://{BUCKET}/absent"]) == 2


def test_python_import_export_on_s3(s3_server, s3_ws, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "img.npy", image)
    result = import_volume(s3_ws, tmp_path / "img.npy", "raw", resolution_nm=RES, num_scales=2)
    assert result.layer.info.num_scales == 2
    out = export_volume(Layer(s3_ws, "raw"), tmp_path / "img.tif")
    assert np.array_equal(tifffile.imread(out), image)
