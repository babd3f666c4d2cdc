"""Look at a workspace in Neuroglancer, served locally (no internet needed).

``prepare_view`` writes what the viewer needs next to the data:

* ``segment_properties`` of the segmentation layer (label, description, tags
  for type / E-I / kind, numeric counts), referenced from the layer's
  ``info``, so neurons can be searched in the segment list (``#PC``, ``#I``,
  ``n_post>20``);
* precomputed annotation layers of synapses written with neuroglancer's
  ``AnnotationWriter`` (points; properties ``ei`` (0 = E, 1 = I) and
  ``size``; relationships ``pre``/``post`` indexed by segment), one of all
  synapses (capped at ``max_synapses``, sampled deterministically) and, for
  each selected neuron, its inputs and its outputs.  They live under
  ``connectome/v<N>/annotations/``; versions are immutable, so they are
  written once per version.

``viewer_state`` is the Neuroglancer JSON state (image, segmentation with
its meshes/skeletons when the layer has them, synapses green E / red I).
``open_view`` serves the workspace's files with CORS from 127.0.0.1
(:class:`DataServer`) and the Neuroglancer client bundled in the
``neuroglancer`` package through its own local server, which keeps the
state in this process, so links stay short.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import neuroglancer
import numpy as np
import pandas as pd
from neuroglancer.write_annotations import AnnotationWriter

from wiremap.connectome.queries import Connectome
from wiremap.connectome.tables import local_root
from wiremap.errors import InputError, LayerNotFoundError, WiremapError
from wiremap.volume import Layer
from wiremap.workspace import Workspace

IMAGE_LAYERS = ("aligned", "groundtruth/image", "montage", "raw")
SEGMENTATION_LAYERS = ("segmentation", "neurons", "groundtruth/neurons")
#: Prefixes of the workspace the server exposes (nothing else is readable over HTTP).
SERVED_PREFIXES = ("layers/", "groundtruth/", "connectome/")
#: Keys of a segmentation info and the Neuroglancer sub-sources they provide.
SUBSOURCES = {"segment_properties": "properties", "mesh": "mesh", "skeletons": "skeletons"}
NUMERIC_PROPERTIES = ("n_pre", "n_post", "n_upstream", "n_downstream", "volume_um3")

#: Excitatory synapses green, inhibitory red (property ``ei``: 0 = E, 1 = I).
SYNAPSE_SHADER = """
void main() {
  setColor(prop_ei() == 1u ? vec3(1.0, 0.1, 0.1) : vec3(0.1, 1.0, 0.1));
  setPointMarkerSize(9.0);
  setPointMarkerBorderWidth(0.0);
}
"""


def find_layer(ws: Workspace, names: tuple[str, ...], given: str | None, what: str) -> str | None:
    """The layer to show as ``what``: ``given`` if named (must exist), else the first present."""
    if given:
        if not ws.has_layer(given):
            raise LayerNotFoundError(f"{what} layer {given!r} not found in {ws.url}")
        return given
    return next((n for n in names if ws.has_layer(n)), None)


def segment_properties(neurons: pd.DataFrame) -> dict[str, Any]:
    """The ``neuroglancer_segment_properties`` document of a neuron table (inline form)."""

    def tag(value: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in value)

    tags: list[str] = []
    index: dict[str, int] = {}
    values: list[list[int]] = []
    for row in neurons[["type", "ei", "kind"]].itertuples(index=False):
        mine = []
        for t in (row.type, {"E": "excitatory", "I": "inhibitory"}.get(row.ei, ""), row.kind):
            if t:
                t = tag(str(t))
                if t not in index:
                    index[t] = len(tags)
                    tags.append(t)
                mine.append(index[t])
        values.append(sorted(set(mine)))
    labels = [f"{t or 'untyped'} {ei}".strip() for t, ei in zip(neurons["type"], neurons["ei"], strict=True)]
    descriptions = [
        f"{t or 'untyped'} {ei or '?'}; {pre} out / {post} in synapses"
        for t, ei, pre, post in zip(neurons["type"], neurons["ei"], neurons["n_pre"], neurons["n_post"], strict=True)
    ]
    properties: list[dict[str, Any]] = [
        {"id": "label", "type": "label", "values": labels},
        {"id": "description", "type": "description", "values": descriptions},
        {"id": "tags", "type": "tags", "tags": tags, "values": values},
    ]
    for column in NUMERIC_PROPERTIES:
        if column not in neurons.columns:
            continue
        col = neurons[column].to_numpy(dtype=np.float64)
        if not np.isfinite(col).all():
            continue
        integral = bool((col == np.round(col)).all() and col.max(initial=0) < 2**32)
        properties.append(
            {
                "id": column,
                "type": "number",
                "data_type": "uint32" if integral else "float32",
                "values": [int(v) for v in col] if integral else [float(v) for v in col],
            }
        )
    return {
        "@type": "neuroglancer_segment_properties",
        "inline": {"ids": [str(int(i)) for i in neurons["id"]], "properties": properties},
    }


def write_segment_properties(ws: Workspace, layer: str, neurons: pd.DataFrame) -> str:
    """Write ``<layer>/segment_properties/info`` and reference it from the layer's info."""
    key = ws.layer_key(layer)
    ws.write_json(f"{key}/segment_properties/info", segment_properties(neurons))
    info = ws.read_json(f"{key}/info")
    if info.get("segment_properties") != "segment_properties":
        info["segment_properties"] = "segment_properties"
        ws.write_json(f"{key}/info", info)
    return f"{key}/segment_properties"


def write_synapse_annotations(
    ws: Workspace, key: str, synapses: pd.DataFrame, resolution_nm: tuple[float, float, float]
) -> str:
    """Write ``synapses`` (voxels, z/y/x) as a precomputed point annotation layer at ``key``."""
    space = neuroglancer.CoordinateSpace(
        names=["x", "y", "z"],
        units="nm",
        scales=[resolution_nm[2], resolution_nm[1], resolution_nm[0]],
    )
    writer = AnnotationWriter(
        coordinate_space=space,
        annotation_type="point",
        relationships=["pre", "post"],
        properties=[
            neuroglancer.AnnotationPropertySpec(
                id="ei", type="uint8", enum_values=[0, 1], enum_labels=["excitatory", "inhibitory"]
            ),
            neuroglancer.AnnotationPropertySpec(id="size", type="float32"),
        ],
    )
    sizes = np.nan_to_num(synapses["size"].to_numpy(dtype=np.float64), nan=0.0)
    for sid, pre, post, z, y, x, ei, size in zip(
        synapses["id"],
        synapses["pre"],
        synapses["post"],
        synapses["z"],
        synapses["y"],
        synapses["x"],
        synapses["ei"],
        sizes,
        strict=True,
    ):
        # +0.5: Neuroglancer puts the centre of voxel i at i + 0.5.
        writer.add_point(
            [x + 0.5, y + 0.5, z + 0.5],
            id=int(sid),
            ei=1 if ei == "I" else 0,
            size=float(size),
            pre=int(pre),
            post=int(post),
        )
    if not len(synapses):  # an empty layer still needs bounds
        writer.lower_bound[:] = 0
        writer.upper_bound[:] = 1
    # Written whole, then put in place with ``info`` last: a layer whose info exists is complete.
    root = local_root(ws)
    if root is not None:
        target = root / key
        staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(staged, ignore_errors=True)
        writer.write(staged)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staged, target)
        return key
    with tempfile.TemporaryDirectory(prefix="wiremap-annotations-") as tmp:
        writer.write(tmp)
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        for path in sorted(files, key=lambda p: p.name == "info"):
            ws.write_bytes(f"{key}/{path.relative_to(tmp).as_posix()}", path.read_bytes())
    return key


def prepare_view(
    ws: Workspace,
    client: Connectome,
    *,
    neurons: list[int] = (),  # type: ignore[assignment]
    image: str | None = None,
    segmentation: str | None = None,
    max_synapses: int = 20_000,
) -> dict[str, Any]:
    """Write segment properties and synapse annotations; returns what the state needs."""
    image = find_layer(ws, IMAGE_LAYERS, image, "image")
    seg = find_layer(ws, SEGMENTATION_LAYERS, segmentation, "segmentation")
    known = client.sql("SELECT id FROM neurons WHERE id IN (SELECT unnest(?::UBIGINT[]))", [list(neurons)])
    missing = sorted(set(int(n) for n in neurons) - set(int(i) for i in known["id"]))
    if missing:
        raise InputError(f"neuron(s) {', '.join(map(str, missing))} not in connectome v{client.version}")
    ref = image or seg
    if ref is None:
        raise LayerNotFoundError(f"no image or segmentation layer in {ws.url} to show")
    layer = Layer(ws, ref)
    resolution = layer.info.resolution_nm
    base = f"connectome/v{client.version}/annotations"
    if seg is not None:
        write_segment_properties(ws, seg, client.sql("SELECT * FROM neurons ORDER BY id"))
    annotation_layers: dict[str, str] = {}
    total = int(client.sql("SELECT count(*) AS n FROM synapses")["n"][0])
    if not ws.exists(f"{base}/synapses/info"):
        # Deterministic sample: the synapses with the smallest hash of their id.
        syn = client.sql("SELECT * FROM synapses ORDER BY hash(id) LIMIT ?", [max_synapses])
        write_synapse_annotations(ws, f"{base}/synapses", syn, resolution)
    annotation_layers["synapses"] = f"{base}/synapses"
    for nid in neurons:
        for what, col in (("inputs", "post"), ("outputs", "pre")):
            key = f"{base}/neuron_{int(nid)}_{what}"
            if not ws.exists(f"{key}/info"):
                syn = client.sql(f"SELECT * FROM synapses WHERE {col} = ? ORDER BY id", [int(nid)])
                write_synapse_annotations(ws, key, syn, resolution)
            annotation_layers[f"{nid} {what}"] = key
    focus = None
    if neurons:
        soma = client.sql("SELECT soma_z, soma_y, soma_x FROM neurons WHERE id = ?", [int(neurons[0])])
        zyx = soma.iloc[0].to_numpy(dtype=np.float64)
        if np.isfinite(zyx).all():
            focus = [float(v) for v in zyx]
    return {
        "focus_zyx": focus,
        "image": image,
        "segmentation": seg,
        "annotations": annotation_layers,
        "resolution_nm": resolution,
        "shape_zyx": layer.info.shape_zyx,
        "neurons": [int(n) for n in neurons],
        "n_synapses_shown": min(total, max_synapses),
        "n_synapses": total,
    }


def viewer_state(
    ws: Workspace,
    view: dict[str, Any],
    base_url: str,
    *,
    layout: str = "4panel",
    side_panel: bool = True,
) -> dict[str, Any]:
    """Neuroglancer JSON state for what :func:`prepare_view` wrote, data read from ``base_url``."""
    rz, ry, rx = view["resolution_nm"]
    shape = view["shape_zyx"]
    state: dict[str, Any] = {
        "dimensions": {"x": [rx, "nm"], "y": [ry, "nm"], "z": [rz, "nm"]},
        # Voxel i spans [i, i + 1): start at the centre voxel's middle so points on it are in focus.
        "position": [shape[2] // 2 + 0.5, shape[1] // 2 + 0.5, shape[0] // 2 + 0.5],
        "crossSectionScale": max(shape[1], shape[2]) / 600,
        "projectionScale": max(shape[1] * ry, shape[2] * rx) * 0.75,
        "layers": [],
        "layout": layout,
        "projectionOrientation": [0.28, -0.2, -0.06, 0.94],  # an oblique 3D view
    }
    if view.get("focus_zyx"):  # the selected neuron's soma
        z, y, x = view["focus_zyx"]
        state["position"] = [x + 0.5, y + 0.5, z + 0.5]
    layers = state["layers"]
    if view["image"]:
        layers.append(
            {
                "type": "image",
                "name": "image",
                "source": f"precomputed://{base_url}/{ws.layer_key(view['image'])}",
            }
        )
    seg = view["segmentation"]
    if seg:
        # Meshes ("mesh"), skeletons ("skeletons") and segment properties named in the
        # layer's info are sub-sources Neuroglancer loads from the same URL; they are
        # listed so that the state says what the view shows (once the mesh stage ran).
        url = f"precomputed://{base_url}/{ws.layer_key(seg)}"
        info = ws.read_json(f"{ws.layer_key(seg)}/info")
        extra = {sub: True for key, sub in SUBSOURCES.items() if key in info}
        if "mesh" in info:  # meshes show the selected neurons in 3D; slices would hide them
            state["showSlices"] = False
        source: str | dict[str, Any] = {"url": url, "subsources": {"default": True, **extra}} if extra else url
        layer: dict[str, Any] = {
            "type": "segmentation",
            "name": "neurons",
            "source": source,
            "selectedAlpha": 0.55,
            "notSelectedAlpha": 0.35,
            "objectAlpha": 0.9,
        }
        if view["neurons"]:
            layer["segments"] = [str(n) for n in view["neurons"]]
        if side_panel:  # open on the segment list: search by type, #excitatory, n_post>20, …
            layer["tab"] = "segments"
        layers.append(layer)
        state["selectedLayer"] = {"layer": "neurons", "visible": side_panel}
    for name, key in view["annotations"].items():
        layer = {
            "type": "annotation",
            "name": name,
            "source": f"precomputed://{base_url}/{key}",
            "shader": SYNAPSE_SHADER,
        }
        if seg:
            layer["linkedSegmentationLayer"] = {"pre": "neurons", "post": "neurons"}
        if name != "synapses":
            layer["visible"] = True
        layers.append(layer)
    return state


class _Handler(BaseHTTPRequestHandler):
    """Serves ``/ws/<key>`` from the workspace (with CORS) and ``/state.json``."""

    server: DataServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        return

    def _send(
        self, status: int, body: bytes, ctype: str = "application/octet-stream", extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges")
        self.send_header("Accept-Ranges", "bytes")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_OPTIONS(self) -> None:  # noqa: N802 - CORS pre-flight
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == "/state.json":
            self._send(200, json.dumps(self.server.state).encode(), "application/json")
            return
        key = path[len("/ws/") :] if path.startswith("/ws/") else ""
        if not key.startswith(SERVED_PREFIXES):
            self._send(404, b"not served")
            return
        try:
            body = self.server.ws.read_bytes(key)
        except WiremapError:
            self._send(404, b"not found")
            return
        ctype = "application/json" if key.endswith("/info") else "application/octet-stream"
        wanted = _byte_range(self.headers.get("Range"), len(body))
        if wanted is None:
            self._send(200, body, ctype)
        elif wanted == (0, 0):  # unsatisfiable
            self._send(416, b"", ctype, {"Content-Range": f"bytes */{len(body)}"})
        else:  # multi-resolution meshes are read by byte ranges of one file per segment
            start, end = wanted
            self._send(206, body[start:end], ctype, {"Content-Range": f"bytes {start}-{end - 1}/{len(body)}"})


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single ``bytes=`` range; None: whole file; (0, 0): bad."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), min(size, int(last) + 1) if last else size
    return (start, end) if start < end else (0, 0)


class DataServer(ThreadingHTTPServer):
    """HTTP server on 127.0.0.1 of a workspace's files (``/ws/<key>``) and a viewer state."""

    daemon_threads = True

    def __init__(self, ws: Workspace, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__((host, port), _Handler)
        self.ws = ws
        self.state: dict[str, Any] = {}

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    @property
    def data_url(self) -> str:
        return f"{self.base_url}/ws"

    def start(self) -> DataServer:
        """Serve from a background thread (returns at once)."""
        threading.Thread(target=self.serve_forever, name="wiremap-data", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class View:
    """A running view: the data server and the Neuroglancer viewer (bundled client)."""

    data: DataServer
    viewer: neuroglancer.Viewer
    info: dict[str, Any]

    @property
    def url(self) -> str:
        """The link to open in a browser (state lives in this process; the link is short)."""
        return self.viewer.get_viewer_url()

    @property
    def state(self) -> dict[str, Any]:
        return self.data.state

    def stop(self) -> None:
        self.data.stop()


def open_view(
    workspace: str | Workspace,
    *,
    neurons: list[int] = (),  # type: ignore[assignment]
    version: int | None = None,
    port: int = 0,
    data_port: int = 0,
    layout: str = "4panel",
    max_synapses: int = 20_000,
    image: str | None = None,
    segmentation: str | None = None,
) -> View:
    """Prepare the view of ``workspace`` and start serving it; ``view.url`` is the link.

    The Neuroglancer client comes from the ``neuroglancer`` package's own
    server (bound to 127.0.0.1:``port``); the workspace's files from a
    :class:`DataServer` on ``data_port`` (0: any free port).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    with Connectome(ws, version=version) as client:
        info = prepare_view(
            ws,
            client,
            neurons=list(neurons),
            image=image,
            segmentation=segmentation,
            max_synapses=max_synapses,
        )
    data = DataServer(ws, port=data_port).start()
    data.state = viewer_state(ws, info, data.data_url, layout=layout)
    neuroglancer.set_server_bind_address("127.0.0.1", bind_port=port)
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(data.state))
    return View(data=data, viewer=viewer, info=info)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def screenshot(
    url: str,
    path: str | Path,
    *,
    wait_s: float = 10.0,
    size: tuple[int, int] = (1200, 900),
    chromium: str = "/usr/bin/chromium",
    chromedriver: str = "/usr/bin/chromedriver",
) -> Path:
    """Open ``url`` in headless Chromium (software WebGL), wait, save a PNG screenshot.

    Drives Chromium through chromedriver's W3C WebDriver HTTP protocol with
    plain ``httpx`` (no Selenium).  ``--screenshot`` alone cannot be used:
    it fires before Neuroglancer has fetched and drawn its data.
    """
    import base64
    import shutil
    import subprocess
    import time

    import httpx

    for exe in (chromium, chromedriver):
        if not Path(exe).exists() and shutil.which(exe) is None:
            raise InputError(f"{exe} not found (install Debian's chromium and chromium-driver: `make browser`)")
    port = _free_port()
    driver = subprocess.Popen([chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120, trust_env=False) as http:  # no proxy for 127.0.0.1
            for _ in range(200):
                try:
                    http.get(f"{base}/status")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            with tempfile.TemporaryDirectory(prefix="wiremap-chromium-") as profile:
                args = [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--use-gl=angle",
                    "--use-angle=swiftshader",
                    "--enable-unsafe-swiftshader",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--no-proxy-server",
                    f"--user-data-dir={profile}",
                    f"--window-size={size[0]},{size[1]}",
                ]
                caps = {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                }
                reply = http.post(f"{base}/session", json={"capabilities": {"alwaysMatch": caps}}).json()["value"]
                if "sessionId" not in reply:
                    raise InputError(f"chromium did not start: {reply.get('message', reply)}")
                session = f"{base}/session/{reply['sessionId']}"
                try:
                    http.post(f"{session}/url", json={"url": url})
                    time.sleep(wait_s)
                    png = base64.b64decode(http.get(f"{session}/screenshot").json()["value"])
                finally:
                    http.delete(session)
    finally:
        driver.terminate()
        driver.wait(10)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return out
