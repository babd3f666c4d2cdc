"""The synapse table as a Neuroglancer precomputed annotation layer (``layers/synapses``).

One line per synapse, from a point in the presynaptic cell to one in the
postsynaptic cell (points in voxels, ``x, y, z`` as Neuroglancer wants),
with properties ``ei`` (enum E/I), ``color`` (E green, I red, as H01
shows them), ``size``, ``confidence`` and ``ei_confidence``, and the
relationships ``pre_segment`` / ``post_segment``, so the viewer can fetch a
neuron's outgoing or incoming synapses by segment id.  Written with
``neuroglancer.write_annotations.AnnotationWriter`` into a temporary folder,
then copied key by key into the workspace (which may be cloud storage).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import neuroglancer
import numpy as np
import pandas as pd
from neuroglancer.write_annotations import AnnotationWriter

from wiremap.workspace import Workspace

LAYER = "synapses"
E_COLOR = (0, 200, 0)
I_COLOR = (230, 0, 0)


def _properties() -> list[neuroglancer.AnnotationPropertySpec]:
    return [
        neuroglancer.AnnotationPropertySpec(id="ei", type="uint8", enum_values=[0, 1, 2], enum_labels=["?", "E", "I"]),
        neuroglancer.AnnotationPropertySpec(id="color", type="rgb", default="#ffffff"),
        neuroglancer.AnnotationPropertySpec(id="size", type="float32"),
        neuroglancer.AnnotationPropertySpec(id="confidence", type="float32"),
        neuroglancer.AnnotationPropertySpec(id="ei_confidence", type="float32"),
    ]


def write_annotations(ws: Workspace, table: pd.DataFrame, resolution_nm: Sequence[float], layer: str = LAYER) -> int:
    """Write ``table`` (synapse rows with pre/post line end points) as ``layers/<layer>``; returns the count.

    Line ends are the columns ``pre_z, pre_y, pre_x`` and ``post_z, post_y,
    post_x`` when present, else the synapse position itself.
    """
    rz, ry, rx = (float(r) for r in resolution_nm)
    space = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[rx, ry, rz])
    writer = AnnotationWriter(space, "line", relationships=["pre_segment", "post_segment"], properties=_properties())
    pos = table[["x", "y", "z"]].to_numpy(np.float64)
    a = table[["pre_x", "pre_y", "pre_z"]].to_numpy(np.float64) if "pre_x" in table else pos
    b = table[["post_x", "post_y", "post_z"]].to_numpy(np.float64) if "post_x" in table else pos
    a = np.where(np.isfinite(a), a, pos)
    b = np.where(np.isfinite(b), b, pos)
    ei_code = {"E": 1, "I": 2}
    for k, row in enumerate(table.itertuples(index=False)):
        ei = str(getattr(row, "ei", "") or "")
        writer.add_line(
            a[k].tolist(),
            b[k].tolist(),
            id=int(row.id),
            pre_segment=[int(row.pre)],
            post_segment=[int(row.post)],
            ei=ei_code.get(ei, 0),
            color=E_COLOR if ei == "E" else I_COLOR if ei == "I" else (255, 255, 255),
            size=float(row.size),
            confidence=float(row.confidence),
            ei_confidence=float(getattr(row, "ei_confidence", np.nan)),
        )
    key = ws.layer_key(layer)
    ws.delete_prefix(f"{key}/")
    with tempfile.TemporaryDirectory() as tmp:
        if len(table) == 0:
            # AnnotationWriter needs bounds; an empty layer still gets a valid info file.
            writer.lower_bound = np.zeros(3)
            writer.upper_bound = np.ones(3)
        writer.write(tmp)
        root = Path(tmp)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.name != "info":
                ws.write_bytes(f"{key}/{path.relative_to(root).as_posix()}", path.read_bytes())
        ws.write_bytes(f"{key}/info", (root / "info").read_bytes())  # info last: the layer is complete
    return len(table)
