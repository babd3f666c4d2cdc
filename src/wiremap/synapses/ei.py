"""Excitatory / inhibitory calls: per synapse from appearance, then per presynaptic neuron.

Per synapse, ``appearance_ei_prob`` combines two cues as log-odds: the
density asymmetry (Gray type I, excitatory synapses have a postsynaptic
density much thicker than the presynaptic one; type II, inhibitory ones are
symmetric), measured as the difference of the dark fractions next to the
cleft on the post and pre sides, and the network's E probability averaged
over the cleft and the cells next to it (its ``ei`` channel, a fully-
convolutional patch classifier that also sees vesicle shape).  A neuron
releases one kind of transmitter (Dale's principle), so the calls of all
synapses of one presynaptic segment are pooled: the sum of their log-odds
(each clipped to +-``clip``, so one confident mistake cannot outvote many)
gives the neuron's call and its confidence.  The synapse table keeps both:
``ei`` is the neuron's consensus, ``ei_synapse`` and ``ei_confidence`` the
synapse's own call and its confidence in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

EPS = 1e-4


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class EIRule:
    """How the cues are weighed; stored in the model file's ``meta['ei_rule']``."""

    asymmetry_threshold: float = 0.05  # dark_post - dark_pre at which E and I are equally likely
    asymmetry_scale: float = 0.04  # asymmetry per logit
    net_weight: float = 0.0  # weight of the network's E log-odds


def appearance_ei_prob(
    dark_pre: np.ndarray, dark_post: np.ndarray, net_prob: np.ndarray, rule: EIRule = EIRule()
) -> np.ndarray:
    """P(excitatory) per synapse from density asymmetry and the network's E channel."""
    asym = np.asarray(dark_post, dtype=np.float64) - np.asarray(dark_pre, dtype=np.float64)
    z = (np.nan_to_num(asym) - rule.asymmetry_threshold) / rule.asymmetry_scale
    z = z + rule.net_weight * logit(np.nan_to_num(np.asarray(net_prob, dtype=np.float64), nan=0.5))
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def synapse_calls(ei_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(label, confidence)`` per synapse: 'E' where ``ei_prob >= 0.5``; confidence in 0.5..1."""
    p = np.nan_to_num(np.asarray(ei_prob, dtype=np.float64), nan=0.5)
    labels = np.where(p >= 0.5, "E", "I").astype(object)
    return labels, np.maximum(p, 1 - p)


def neuron_consensus(pre: np.ndarray, ei_prob: np.ndarray, clip: float = 3.0) -> pd.DataFrame:
    """One row per presynaptic segment: id, ei ('E'|'I'), ei_confidence (0.5..1), n_synapses."""
    if len(pre) == 0:
        return pd.DataFrame(
            {
                "id": pd.Series(dtype="uint64"),
                "ei": pd.Series(dtype=object),
                "ei_confidence": pd.Series(dtype="f8"),
                "n_synapses": pd.Series(dtype="int64"),
            }
        )
    p = np.nan_to_num(np.asarray(ei_prob, dtype=np.float64), nan=0.5)
    votes = pd.DataFrame({"id": np.asarray(pre, dtype=np.uint64), "v": np.clip(logit(p), -clip, clip)})
    agg = votes.groupby("id")["v"].agg(["sum", "size"]).reset_index()
    prob_e = 1.0 / (1.0 + np.exp(-agg["sum"].to_numpy()))
    return pd.DataFrame(
        {
            "id": agg["id"].to_numpy(np.uint64),
            "ei": np.where(prob_e >= 0.5, "E", "I").astype(object),
            "ei_confidence": np.maximum(prob_e, 1 - prob_e),
            "n_synapses": agg["size"].to_numpy(np.int64),
        }
    )


def apply_consensus(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add ``ei`` (neuron consensus), ``ei_synapse`` and ``ei_confidence`` to a table with ``pre, ei_prob``."""
    out = table.copy()
    own, conf = synapse_calls(out["ei_prob"].to_numpy())
    out["ei_synapse"] = own
    out["ei_confidence"] = conf
    neurons = neuron_consensus(out["pre"].to_numpy(), out["ei_prob"].to_numpy())
    lookup = dict(zip(neurons["id"].astype(np.uint64).tolist(), neurons["ei"], strict=False))
    out["ei"] = [lookup.get(int(p), "") for p in out["pre"].astype(np.uint64)]
    return out, neurons
