"""Scores against ground truth: segmentation, skeletons, synapses, alignment, E/I.

Pure functions on arrays and tables (no I/O), each returning a small frozen
dataclass.  One module per idea:

- :mod:`.segmentation`: contingency table, VOI (bits), adapted Rand error,
  segment -> truth max-overlap map
- :mod:`.skeletons`: merge-aware expected run length (ERL, nm)
- :mod:`.points`: optimal point matching, synapse detection and partner F1
- :mod:`.alignment`: residual of placed vs. true positions (pixels)
- :mod:`.classification`: E/I label accuracy

``wiremap.evaluate`` re-exports all of it.
"""

from wiremap.evaluation.alignment import Residual, alignment_residual
from wiremap.evaluation.classification import EIAccuracy, ei_accuracy
from wiremap.evaluation.points import (
    PRF,
    PointMatch,
    match_points,
    synapse_detection_scores,
    synaptic_partner_scores,
)
from wiremap.evaluation.segmentation import (
    VOI,
    ARand,
    ContingencyTable,
    adapted_rand_error,
    contingency_table,
    segment_to_truth_map,
    truth_pieces,
    variation_of_information,
)
from wiremap.evaluation.skeletons import ERL, expected_run_length

__all__ = [
    "ERL",
    "PRF",
    "VOI",
    "ARand",
    "ContingencyTable",
    "EIAccuracy",
    "PointMatch",
    "Residual",
    "adapted_rand_error",
    "alignment_residual",
    "contingency_table",
    "ei_accuracy",
    "expected_run_length",
    "match_points",
    "segment_to_truth_map",
    "synapse_detection_scores",
    "synaptic_partner_scores",
    "truth_pieces",
    "variation_of_information",
]
