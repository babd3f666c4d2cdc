"""Cell-part figures against ground truth: compartment accuracy per skeleton node and myelin IoU.

Each node of ``tables/skeleton_nodes`` (written by ``wiremap compartments``)
is scored against the true compartment at its position
(``compartments.node_truth``: the nearest voxel of its own segment, since a
node of a thin neurite can sit just outside it after downsampling).  Nodes
whose true code is 0 (extracellular space under another segmentation's
segment, a blank section of an aligned stack) are not scored but counted.
The confusion counts ``truth -> predicted`` by name, so a reader sees which
parts are taken for which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wiremap.errors import InputError
from wiremap.morphology.compartments import NAMES, node_truth
from wiremap.morphology.myelin import iou
from wiremap.volume import Layer
from wiremap.workspace import Workspace

N_CODES = len(NAMES)


def compartment_confusion(
    nodes: pd.DataFrame,
    segmentation: np.ndarray,
    truth: np.ndarray,
    resolution_nm: tuple[float, float, float],
) -> np.ndarray:
    """``(codes, codes)`` node counts, true compartment code x predicted code."""
    confusion = np.zeros((N_CODES, N_CODES), np.int64)
    for segment, rows in nodes.groupby("id"):
        true = node_truth(rows[["x_nm", "y_nm", "z_nm"]].to_numpy(), int(segment), segmentation, truth, resolution_nm)
        pred = rows["compartment"].to_numpy().astype(np.int64)
        np.add.at(confusion, (np.minimum(true, N_CODES - 1), np.minimum(pred, N_CODES - 1)), 1)
    return confusion


def confusion_by_name(confusion: np.ndarray) -> dict[str, int]:
    """The off-diagonal counts as ``{"truth->predicted": n}``."""
    n = confusion.shape[0]
    return {
        f"{NAMES[t]}->{NAMES[p]}": int(confusion[t, p])
        for t in range(n)
        for p in range(n)
        if t != p and confusion[t, p]
    }


def node_figures(confusion: np.ndarray) -> dict[str, Any]:
    """Accuracy over the scored nodes (true code > 0), their count, the unscored count and the confusion by
    name, from a :func:`compartment_confusion`."""
    scored = confusion.copy()
    scored[0] = 0
    total = int(scored.sum())
    return {
        "node_accuracy": float(np.trace(scored)) / total if total else float("nan"),
        "nodes": total,
        "nodes_unscored": int(confusion[0].sum()),
        "confusion": confusion_by_name(scored),
    }


def score_workspace(
    ws: Workspace,
    *,
    segmentation: str = "segmentation",
    truth: str = "groundtruth/compartments",
    myelin: str = "myelin",
    myelin_truth: str = "groundtruth/myelin",
) -> dict[str, Any]:
    """Node accuracy over the scored nodes, node counts, confusion and (when both layers exist) myelin IoU."""
    if not ws.has_table("skeleton_nodes"):
        raise InputError(f"no skeleton_nodes table in {ws.url}: run `wiremap compartments` first")
    for name in (segmentation, truth):
        if not ws.has_layer(name):
            raise InputError(f"layer {name!r} not found in {ws.url}")
    seg_layer = Layer(ws, segmentation)
    confusion = compartment_confusion(
        ws.read_table("skeleton_nodes"), seg_layer.read(), Layer(ws, truth).read(), seg_layer.info.resolution_nm
    )
    figures = node_figures(confusion)
    if ws.has_layer(myelin) and ws.has_layer(myelin_truth):
        true_myelin = Layer(ws, myelin_truth).read()
        figures["myelin_iou"] = iou(Layer(ws, myelin).read(), true_myelin)  # 1.0 when both are empty
        figures["myelin_truth_voxels"] = int(np.count_nonzero(true_myelin))
    return figures
