"""Neuroglancer view: segment properties, synapse annotation layers, state, server, real browser."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from neuroglancer.read_precomputed_annotations import AnnotationReader
from PIL import Image

from wiremap.connectome import Connectome, build
from wiremap.errors import InputError
from wiremap.view import DataServer, open_view, prepare_view, screenshot, viewer_state
from wiremap.volume import write_volume
from wiremap.workspace import Workspace

IDS = [
    11,
    12,
    13,
    14,
]  # four slabs of neurons side by side in x; 11, 12 excitatory, 13, 14 inhibitory


def make_view_workspace(path: Path) -> tuple[Workspace, pd.DataFrame]:
    ws = Workspace.create(str(path))
    shape = (16, 128, 128)
    labels = np.zeros(shape, np.uint64)
    for i, nid in enumerate(IDS):
        labels[:, :, i * 32 + 2 : (i + 1) * 32 - 2] = nid
    image = np.where(labels > 0, 150, 30).astype(np.uint8)
    write_volume(ws, "groundtruth/image", image, resolution_nm=(30, 8, 8))
    write_volume(ws, "groundtruth/neurons", labels, resolution_nm=(30, 8, 8), kind="segmentation")
    cells = pd.DataFrame(
        {
            "id": IDS,
            "cell_type": ["PC", "PC", "BC", "BC"],
            "ei": ["E", "E", "I", "I"],
            "soma_z": [8.0] * 4,
            "soma_y": [64.0] * 4,
            "soma_x": [16.0, 48.0, 80.0, 112.0],
        }
    )
    rows = []
    for a, pre in enumerate(IDS):
        for b, post in enumerate(IDS):
            if pre != post:
                for k in range(3):  # synapses on the boundary between the two slabs, in slice z = 8
                    rows.append(
                        dict(
                            pre=pre,
                            post=post,
                            z=8.0,
                            y=12.0 + 12 * k + 4 * b,
                            x=16.0 * (a + b) + 16,
                            size=10.0 + k,
                            ei="E" if pre in (11, 12) else "I",
                            post_compartment="dendrite",
                        )
                    )
    syn = pd.DataFrame(rows)
    build(ws, synapses=syn, neurons=cells, source="test")
    return ws, syn


@pytest.fixture(scope="module")
def view_ws(tmp_path_factory):
    return make_view_workspace(tmp_path_factory.mktemp("view") / "ws")


def test_prepare_view_writes_properties_and_annotations(view_ws) -> None:
    ws, syn = view_ws
    with Connectome(ws) as client:
        info = prepare_view(ws, client, neurons=[13])
        with pytest.raises(InputError, match="not in connectome"):
            prepare_view(ws, client, neurons=[99])
    assert info["segmentation"] == "groundtruth/neurons" and info["image"] == "groundtruth/image"
    assert info["focus_zyx"] == [8.0, 64.0, 80.0]
    seg_info = ws.read_json("groundtruth/neurons/info")
    assert seg_info["segment_properties"] == "segment_properties"
    props = ws.read_json("groundtruth/neurons/segment_properties/info")
    assert props["@type"] == "neuroglancer_segment_properties"
    assert props["inline"]["ids"] == ["11", "12", "13", "14"]
    by_id = {p["id"]: p for p in props["inline"]["properties"]}
    assert by_id["label"]["values"] == ["PC E", "PC E", "BC I", "BC I"]
    tags = by_id["tags"]["tags"]
    assert [sorted(tags[i] for i in v) for v in by_id["tags"]["values"]][2] == [
        "BC",
        "inhibitory",
        "neuron",
    ]
    assert by_id["n_post"]["values"] == [9, 9, 9, 9] and by_id["n_post"]["data_type"] == "uint32"

    reader = AnnotationReader(ws.child_spec(info["annotations"]["synapses"]))
    assert reader.annotation_type == "point"
    assert [p.id for p in reader.properties] == ["size", "ei"] or {p.id for p in reader.properties} == {"size", "ei"}
    onto_13 = reader.relationships["post"][13]
    assert len(onto_13) == int((syn.post == 13).sum())
    inputs = AnnotationReader(ws.child_spec(info["annotations"]["13 inputs"]))
    outputs = AnnotationReader(ws.child_spec(info["annotations"]["13 outputs"]))
    got_in = inputs.relationships["post"][13]
    assert len(got_in) == 9 and len(outputs.relationships["pre"][13]) == 9
    eis = sorted(a.props[[p.id for p in inputs.properties].index("ei")] for a in got_in)
    assert eis == [0] * 6 + [1] * 3  # 6 from the two PCs (E), 3 from the other BC (I)
    first = syn.iloc[0]
    point = reader.by_id[1].point
    assert np.allclose(point, [first.x + 0.5, first.y + 0.5, first.z + 0.5])


def test_state_and_data_server(view_ws) -> None:
    ws, _ = view_ws
    with Connectome(ws) as client:
        info = prepare_view(ws, client, neurons=[12])
    server = DataServer(ws).start()
    try:
        state = viewer_state(ws, info, server.data_url)
        names = [layer["name"] for layer in state["layers"]]
        assert names == ["image", "neurons", "synapses", "12 inputs", "12 outputs"]
        seg = state["layers"][1]
        assert seg["source"]["subsources"] == {"default": True, "properties": True}
        assert "showSlices" not in state
        seg_info = ws.read_json("groundtruth/neurons/info")
        ws.write_json("groundtruth/neurons/info", {**seg_info, "mesh": "mesh", "skeletons": "skeletons"})
        try:
            meshed = viewer_state(ws, info, server.data_url)
            subsources = meshed["layers"][1]["source"]["subsources"]
            assert subsources == {"default": True, "properties": True, "mesh": True, "skeletons": True}
            assert meshed["showSlices"] is False  # the 3D panel shows the selected neurons' meshes
        finally:
            ws.write_json("groundtruth/neurons/info", seg_info)
        assert seg["source"]["url"] == f"precomputed://{server.data_url}/groundtruth/neurons"
        assert seg["segments"] == ["12"]
        assert "prop_ei()" in state["layers"][2]["shader"]
        assert state["layers"][2]["linkedSegmentationLayer"] == {
            "pre": "neurons",
            "post": "neurons",
        }
        assert state["dimensions"]["z"] == [30.0, "nm"] and state["position"] == [48.5, 64.5, 8.5]
        r = httpx.get(f"{server.data_url}/groundtruth/neurons/info", trust_env=False)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        assert r.json()["segment_properties"] == "segment_properties"
        assert httpx.get(f"{server.data_url}/wiremap.toml", trust_env=False).status_code == 404  # only data prefixes
        assert httpx.get(f"{server.data_url}/layers/../wiremap.toml", trust_env=False).status_code == 404
        assert httpx.get(f"{server.data_url}/connectome/v1/nothing", trust_env=False).status_code == 404
        # Multi-resolution meshes are fetched by byte ranges.
        ws.write_bytes("connectome/test/blob", bytes(range(100)))
        blob = f"{server.data_url}/connectome/test/blob"
        r = httpx.get(blob, headers={"Range": "bytes=10-19"}, trust_env=False)
        assert r.status_code == 206 and r.content == bytes(range(10, 20))
        assert r.headers["content-range"] == "bytes 10-19/100"
        r = httpx.get(blob, headers={"Range": "bytes=-5"}, trust_env=False)
        assert r.status_code == 206 and r.content == bytes(range(95, 100))
        r = httpx.get(blob, headers={"Range": "bytes=200-"}, trust_env=False)
        assert r.status_code == 416
        assert httpx.get(blob, trust_env=False).content == bytes(range(100))
    finally:
        server.stop()


def _colour_masks(png: Path) -> dict[str, int]:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    green = (g > 150) & (r < 110) & (b < 110)
    red = (r > 150) & (g < 90) & (b < 90)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    coloured = (spread > 40) & ~green & ~red
    return {"green": int(green.sum()), "red": int(red.sum()), "coloured": int(coloured.sum())}


@pytest.mark.skipif(
    not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()),
    reason="Debian's chromium and chromium-driver are not installed (run `make browser`)",
)
def test_browser_shows_segments_and_green_red_synapses(view_ws, tmp_path: Path) -> None:
    ws, _ = view_ws
    view = open_view(ws, neurons=[13], layout="xy")
    try:
        png = screenshot(view.url, tmp_path / "view.png", wait_s=8)
    finally:
        view.stop()
    counts = _colour_masks(png)
    # Segments: the four slabs are tinted by their segment colours over a large area.
    assert counts["coloured"] > 50_000, counts
    # Synapses: excitatory markers green, inhibitory red, both present.
    assert counts["green"] > 100, counts
    assert counts["red"] > 100, counts
