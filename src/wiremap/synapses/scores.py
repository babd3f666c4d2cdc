"""Synapse figures against ground truth: synthetic workspaces and real masks.

``score_workspace`` compares ``tables/synapses`` with synthetic tissue's
``groundtruth/synapses`` (detection F1, partner F1 within ``max_distance_nm``,
E/I accuracy per matched synapse and per presynaptic neuron).
``score_masks`` compares predicted cleft components with expert synapse
masks (real data): each 3D connected component of the mask is one true
synapse at its centroid.
"""

from __future__ import annotations

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
    ws: Workspace, segmentation: str = "segmentation", max_distance_nm: float = 100.0
) -> dict[str, float]:
    """Detection, partner and E/I figures of ``tables/synapses`` against ``groundtruth/``."""
    pred = ws.read_table("synapses")
    true = ws.read_table("groundtruth/synapses.parquet")
    cells = ws.read_table("groundtruth/cells.parquet")
    truth_layer = Layer(ws, "groundtruth/neurons")
    res = truth_layer.info.resolution_nm
    mapping = None
    if segmentation != "groundtruth/neurons":
        seg = Layer(ws, segmentation).read()
        gt = truth_layer.read()
        if not np.array_equal(seg, gt):
            mapping = segment_to_truth_map(seg, gt, ignore_truth=(0,))
    det = synapse_detection_scores(pred, true, max_distance_nm, res)
    par = synaptic_partner_scores(pred, true, max_distance_nm, res, mapping)
    m = match_points(pred[["z", "y", "x"]].to_numpy(), true[["z", "y", "x"]].to_numpy(), max_distance_nm, res)
    syn_ei = ei_accuracy(pred["ei"].to_numpy()[m.pairs[:, 0]], true["ei"].to_numpy()[m.pairs[:, 1]])
    own_ei = ei_accuracy(pred["ei_synapse"].to_numpy()[m.pairs[:, 0]], true["ei"].to_numpy()[m.pairs[:, 1]])
    # per neuron: the consensus of each predicted presynaptic segment, mapped to its true cell
    neurons = ws.read_table("synapse_ei_neurons") if ws.has_table("synapse_ei_neurons") else pd.DataFrame()
    per_neuron = float("nan")
    n_neurons = 0
    if len(neurons):
        ids = neurons["id"].astype(np.uint64).to_numpy()
        truth_ids = np.array([mapping.get(int(i), 0) for i in ids], dtype=np.uint64) if mapping else ids
        true_ei = cells.set_index("id")["ei"]
        pred_s = pd.Series(neurons["ei"].to_numpy(), index=truth_ids)
        pred_s = pred_s[(pred_s.index != 0) & pred_s.index.isin(true_ei.index)]
        pred_s = pred_s[~pred_s.index.duplicated()]
        if len(pred_s):
            acc = ei_accuracy(pred_s, true_ei.loc[pred_s.index])
            per_neuron, n_neurons = acc.accuracy, acc.n
    return {
        "n_true": int(len(true)),
        "n_pred": int(len(pred)),
        "detection_precision": det.precision,
        "detection_recall": det.recall,
        "detection_f1": det.f1,
        "partner_precision": par.precision,
        "partner_recall": par.recall,
        "partner_f1": par.f1,
        "ei_accuracy_synapse": syn_ei.accuracy,
        "ei_accuracy_synapse_own": own_ei.accuracy,
        "ei_accuracy_neuron": per_neuron,
        "ei_neurons_scored": n_neurons,
    }
