"""Excitatory/inhibitory (E/I) label accuracy, per synapse or per neuron.

Labels are the strings ``'E'`` and ``'I'`` used by the synapse and cell
tables.  A true label that is missing (``''``, ``None``, NaN) means unknown:
that item is not scored.  A missing or other predicted label counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wiremap.errors import InputError

__all__ = ["EIAccuracy", "ei_accuracy"]


@dataclass(frozen=True)
class EIAccuracy:
    """E/I accuracy; a recall is NaN when its class is absent from the truth."""

    accuracy: float  # fraction of scored items labelled right (NaN when n == 0)
    balanced_accuracy: float  # mean of the defined recalls (robust to E >> I)
    e_recall: float  # fraction of true E predicted E
    i_recall: float  # fraction of true I predicted I
    n: int  # items scored


def _labels(values: Sequence | np.ndarray | pd.Series) -> pd.Series:
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return s.astype(object).where(s.notna(), "").astype(str).str.upper()


def ei_accuracy(
    pred: Sequence | np.ndarray | pd.Series,
    true: Sequence | np.ndarray | pd.Series,
) -> EIAccuracy:
    """Score predicted E/I labels against the truth.

    Two ``pd.Series`` are aligned on their index (per neuron: index by
    neuron id; items missing from ``pred`` count as wrong); anything else is
    compared position by position and must have equal lengths.

    Example:
        >>> ei_accuracy(["E", "E", "I", "I"], ["E", "I", "I", ""])
        EIAccuracy(accuracy=0.6666666666666666, balanced_accuracy=0.75, e_recall=1.0, \
i_recall=0.5, n=3)
    """
    if isinstance(pred, pd.Series) and isinstance(true, pd.Series):
        p, t = _labels(pred).reindex(true.index).fillna(""), _labels(true)
    else:
        p, t = _labels(pred), _labels(true)
        if len(p) != len(t):
            raise InputError(f"pred has {len(p)} labels but true has {len(t)}")
    p, t = p.to_numpy(dtype=str), t.to_numpy(dtype=str)
    scored = t != ""
    p, t = p[scored], t[scored]
    right = p == t

    def frac(sel: np.ndarray) -> float:
        return float(right[sel].mean()) if sel.any() else float("nan")

    e_rec, i_rec = frac(t == "E"), frac(t == "I")
    return EIAccuracy(
        accuracy=frac(np.ones(len(t), dtype=bool)),
        balanced_accuracy=float(np.nanmean([e_rec, i_rec])) if len(t) else float("nan"),
        e_recall=e_rec,
        i_recall=i_rec,
        n=int(len(t)),
    )
