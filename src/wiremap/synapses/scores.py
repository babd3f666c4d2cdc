"""Synapse figures against ground truth: synthetic workspaces and real masks.

``score_workspace`` compares ``tables/synapses`` with synthetic tissue's
``groundtruth/synapses`` (detection F1, partner F1 within ``max_distance_nm``,
E/I accuracy per matched synapse and per presynaptic neuron).
``score_masks`` compares predicted cleft components with expert synapse
masks (real data): each 3D connected component of the mask is one true
synapse at its centroid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cc3d
import numpy as np
import pandas as pd
from scipy import ndimage

from wiremap.evaluate import (
    PRF,
    ei_accuracy,
    match_points,
    segment_to_truth_map,
    synapse_detection_scores,
    synaptic_partner_scores,
)
from wiremap.volume import Layer
from wiremap.workspace import Workspace


def _centroids(labels: np.ndarray, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros((0, 3))
    return np.asarray(ndimage.center_of_mass(np.ones(labels.shape, np.float32), labels, np.arange(1, n + 1))).reshape(
        n, 3
    )


def score_masks(
    pred_labels: np.ndarray, truth_mask: np.ndarray, resolution_nm: Sequence[float], max_distance_nm: float = 100.0
) -> PRF:
    """Detection scores of predicted components against the components of a true mask (3D, 26-connected)."""
    truth, n_t = cc3d.connected_components(truth_mask > 0, connectivity=26, return_N=True)
    n_p = int(pred_labels.max())
    pred = _centroids(pred_labels, n_p)
    true = _centroids(truth, int(n_t))
    m = match_points(pred, true, max_distance_nm, resolution_nm)
    tp = len(m.pairs)
    return PRF.from_counts(tp, len(pred) - tp, len(true) - tp)


def score_workspace(
    ws: Workspace,
    segmentation: str | None = "segmentation",
    max_distance_nm: float = 100.0,
    *,
    table: str = "synapses",
    truth: str = "groundtruth/synapses.parquet",
    truth_segmentation: str = "groundtruth/neurons",
) -> dict[str, float]:
    """Detection, partner and E/I figures of the synapse ``table`` against the ``truth`` table.

    ``truth`` is ``groundtruth/…`` of a synthetic workspace (``groundtruth/aligned/…`` for stages run on
    the aligned stack).  The table's segment ids are mapped to truth ids through ``segmentation`` (None:
    they are truth ids already).  E/I figures are NaN when a table has no E/I column.
    """
    pred = ws.read_table(table)
    true = ws.read_table(truth)
    truth_layer = Layer(ws, truth_segmentation)
    res = truth_layer.info.resolution_nm
    mapping = None
    if segmentation and segmentation != truth_segmentation:
        seg = Layer(ws, segmentation).read()
        gt = truth_layer.read()
        if not np.array_equal(seg, gt):
            mapping = segment_to_truth_map(seg, gt, ignore_truth=(0,))
    det = synapse_detection_scores(pred, true, max_distance_nm, res)
    par = synaptic_partner_scores(pred, true, max_distance_nm, res, mapping)
    figures: dict[str, float] = {"n_true": int(len(true)), "n_pred": int(len(pred))}
    figures |= {f"detection_{k}": v for k, v in dataclasses.asdict(det).items()}
    figures |= {f"partner_{k}": v for k, v in dataclasses.asdict(par).items()}
    return figures | _ei_figures(ws, pred, true, max_distance_nm, res, mapping)


def _ei_figures(
    ws: Workspace,
    pred: pd.DataFrame,
    true: pd.DataFrame,
    max_distance_nm: float,
    res: Sequence[float],
    mapping: dict[int, int] | None,
) -> dict[str, float]:
    """E/I accuracy per matched synapse (neuron consensus and own call) and per presynaptic neuron."""
    out = {
        "ei_accuracy_synapse": float("nan"),
        "ei_accuracy_synapse_own": float("nan"),
        "ei_accuracy_neuron": float("nan"),
        "ei_neurons_scored": 0,
    }
    if "ei" not in true.columns or len(pred) == 0 or len(true) == 0:
        return out
    m = match_points(pred[["z", "y", "x"]].to_numpy(), true[["z", "y", "x"]].to_numpy(), max_distance_nm, res)
    for column, key in (("ei", "ei_accuracy_synapse"), ("ei_synapse", "ei_accuracy_synapse_own")):
        if column in pred.columns and len(m.pairs):
            out[key] = ei_accuracy(
                pred[column].to_numpy()[m.pairs[:, 0]], true["ei"].to_numpy()[m.pairs[:, 1]]
            ).accuracy
    # per neuron: the consensus of each predicted presynaptic segment, mapped to its true cell
    if not (ws.has_table("synapse_ei_neurons") and ws.exists("groundtruth/cells.parquet")):
        return out
    neurons = ws.read_table("synapse_ei_neurons")
    if len(neurons):
        ids = neurons["id"].astype(np.uint64).to_numpy()
        truth_ids = np.array([mapping.get(int(i), 0) for i in ids], dtype=np.uint64) if mapping else ids
        true_ei = ws.read_table("groundtruth/cells.parquet").set_index("id")["ei"]
        pred_s = pd.Series(neurons["ei"].to_numpy(), index=truth_ids)
        pred_s = pred_s[(pred_s.index != 0) & pred_s.index.isin(true_ei.index)]
        pred_s = pred_s[~pred_s.index.duplicated()]
        if len(pred_s):
            acc = ei_accuracy(pred_s, true_ei.loc[pred_s.index])
            out["ei_accuracy_neuron"], out["ei_neurons_scored"] = acc.accuracy, acc.n
    return out
