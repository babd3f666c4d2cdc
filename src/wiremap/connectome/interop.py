"""Export a connectome version to the formats other tools read, and import tables.

* **neuPrint** (``neuprint_load`` CSVs, the Neo4j bulk-import layout of
  neuPrint): ``Neuprint_Neurons.csv`` (``bodyId:long``, ``pre:int``,
  ``post:int``, ``type:string``, ``somaLocation:point{srid:9}``, ...),
  ``Neuprint_Neuron_Connections.csv`` (``:START_ID(Body-ID)``, ``weight:int``,
  ``:END_ID(Body-ID)``), ``Neuprint_Synapses.csv`` (one pre and one post site
  per synapse, ``location:point{srid:9}`` in voxels x, y, z) and
  ``Neuprint_Synapse_Connections.csv`` (pre site -> post site).
* **CAVE** synapse table (Parquet): ``id, valid, pre_pt_position,
  post_pt_position, ctr_pt_position`` (``[x, y, z]`` voxels; pre/post points
  one voxel either side of the cleft along its normal), ``pre_pt_root_id,
  post_pt_root_id, size``.
* **GraphML / NetworkX**: a directed graph of neurons (type, ei, counts)
  and edges (weight, total_size, ei).

Import goes the other way: :func:`import_tables` reads CSV/Parquet neuron
and synapse tables (neuPrint and CAVE column names are understood), checks
them and builds a new version from them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from wiremap.connectome.queries import Connectome
from wiremap.connectome.schema import read_external
from wiremap.connectome.tables import build
from wiremap.errors import InputError
from wiremap.workspace import Workspace

FORMATS = ("neuprint", "cave", "graphml")


def _point(x: float, y: float, z: float) -> str:
    return f"{{x:{x:g}, y:{y:g}, z:{z:g}}}" if all(map(math.isfinite, (x, y, z))) else ""


def export_neuprint(client: Connectome, out_dir: str | Path) -> list[Path]:
    """Write neuPrint bulk-import CSVs into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    neurons = client.sql("SELECT * FROM neurons ORDER BY id")
    table = pd.DataFrame(
        {
            "bodyId:long": neurons["id"].astype("uint64"),
            "pre:int": neurons["n_pre"],
            "post:int": neurons["n_post"],
            "upstream:int": neurons["n_post"],
            "downstream:int": neurons["n_pre"],
            "type:string": neurons["type"],
            "instance:string": [f"{t}_{i}" if t else "" for t, i in zip(neurons["type"], neurons["id"], strict=True)],
            "status:string": "Traced",
            "ei:string": neurons["ei"],
            "somaLocation:point{srid:9}": [
                _point(x, y, z) for x, y, z in zip(neurons["soma_x"], neurons["soma_y"], neurons["soma_z"], strict=True)
            ],
        }
    )
    for prop in client.properties:
        kind = (
            "boolean"
            if neurons[prop].dtype == bool
            else ("float" if pd.api.types.is_numeric_dtype(neurons[prop]) else "string")
        )
        table[f"{prop}:{kind}"] = neurons[prop]
    files = [out / "Neuprint_Neurons.csv"]
    table.to_csv(files[-1], index=False)
    edges = client.sql("SELECT pre, weight, post FROM edges ORDER BY pre, post")
    edges.columns = [":START_ID(Body-ID)", "weight:int", ":END_ID(Body-ID)"]
    files.append(out / "Neuprint_Neuron_Connections.csv")
    edges.to_csv(files[-1], index=False)
    syn = client.sql("SELECT id, pre, post, z, y, x, nz, ny, nx, confidence FROM synapses ORDER BY id")
    pre_pts, post_pts = _site_points(syn)
    sid = syn["id"].to_numpy(dtype=np.uint64)
    sites = pd.DataFrame(
        {
            ":ID(Syn-ID)": np.concatenate([sid * 2, sid * 2 + 1]),
            "type:string": ["pre"] * len(syn) + ["post"] * len(syn),
            "location:point{srid:9}": [_point(*p) for p in np.concatenate([pre_pts, post_pts])],
            "confidence:float": np.concatenate([syn["confidence"], syn["confidence"]]),
            "bodyId:long": np.concatenate([syn["pre"], syn["post"]]),
        }
    )
    files.append(out / "Neuprint_Synapses.csv")
    sites.to_csv(files[-1], index=False)
    files.append(out / "Neuprint_Synapse_Connections.csv")
    pd.DataFrame({":START_ID(Syn-ID)": sid * 2, ":END_ID(Syn-ID)": sid * 2 + 1}).to_csv(files[-1], index=False)
    return files


def _site_points(syn: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Pre and post points (x, y, z) one voxel either side of the cleft along its normal."""
    ctr = syn[["x", "y", "z"]].to_numpy(dtype=np.float64)
    normal = np.nan_to_num(syn[["nx", "ny", "nz"]].to_numpy(dtype=np.float64))
    return ctr - normal, ctr + normal


def export_cave(client: Connectome, path: str | Path) -> Path:
    """Write a CAVE-style synapse table (Parquet) to ``path``."""
    syn = client.sql("SELECT * FROM synapses ORDER BY id")
    pre_pts, post_pts = _site_points(syn)
    table = pd.DataFrame(
        {
            "id": syn["id"],
            "valid": True,
            "pre_pt_position": list(pre_pts.round(2)),
            "post_pt_position": list(post_pts.round(2)),
            "ctr_pt_position": list(syn[["x", "y", "z"]].to_numpy(dtype=np.float64)),
            "pre_pt_root_id": syn["pre"],
            "post_pt_root_id": syn["post"],
            "size": syn["size"],
            "ei": syn["ei"],
            "post_compartment": syn["post_compartment"],
            "confidence": syn["confidence"],
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return path


def to_networkx(client: Connectome, *, min_weight: int = 1) -> nx.DiGraph:
    """The connectome as a directed graph: nodes are neuron ids with their properties."""
    graph = nx.DiGraph(version=client.version, workspace=client.ws.url)
    neurons = client.sql("SELECT * FROM neurons ORDER BY id")
    for row in neurons.to_dict(orient="records"):
        nid = int(row.pop("id"))
        graph.add_node(nid, **{k: _plain(v) for k, v in row.items() if _plain(v) is not None})
    edges = client.sql("SELECT * FROM edges WHERE weight >= ? ORDER BY pre, post", [int(min_weight)])
    graph.add_edges_from(
        (int(a), int(b), {"weight": int(w), "total_size": float(s), "ei": e})
        for a, b, w, s, e in zip(
            edges["pre"],
            edges["post"],
            edges["weight"],
            edges["total_size"].fillna(0.0),
            edges["ei"],
            strict=True,
        )
    )
    return graph


def _plain(value: Any) -> Any:
    """A GraphML-writable value (None for NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def export_graphml(client: Connectome, path: str | Path, *, min_weight: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(to_networkx(client, min_weight=min_weight), path)
    return path


def export(client: Connectome, fmt: str, out: str | Path) -> list[Path]:
    """Export in ``fmt`` (``neuprint``: a directory; ``cave``/``graphml``: a file)."""
    if fmt == "neuprint":
        return export_neuprint(client, out)
    if fmt == "cave":
        return [export_cave(client, out)]
    if fmt == "graphml":
        return [export_graphml(client, out)]
    raise InputError(f"unknown export format {fmt!r} (use one of {', '.join(FORMATS)})")


def import_tables(
    ws: Workspace, *, synapses: str | Path, neurons: str | Path | None = None, note: str = ""
) -> dict[str, Any]:
    """Build a new version from external synapse (and neuron) tables in CSV or Parquet."""
    syn = read_external(synapses, "synapse")
    neu = read_external(neurons, "neuron") if neurons is not None else None
    source = f"import:{Path(synapses).name}" + (f"+{Path(neurons).name}" if neurons is not None else "")
    return build(ws, synapses=syn, neurons=neu, source=source, note=note)
