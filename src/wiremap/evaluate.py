"""Evaluation metrics against ground truth: the public face of :mod:`wiremap.evaluation`.

Example:
    >>> import numpy as np
    >>> from wiremap.evaluate import variation_of_information
    >>> variation_of_information(np.array([1, 1, 2, 2]), np.array([3, 3, 3, 3])).split
    1.0
"""

from wiremap.evaluation import (
    ERL,
    PRF,
    VOI,
    ARand,
    ContingencyTable,
    EIAccuracy,
    PointMatch,
    Residual,
    adapted_rand_error,
    alignment_residual,
    contingency_table,
    ei_accuracy,
    expected_run_length,
    match_points,
    segment_to_truth_map,
    synapse_detection_scores,
    synaptic_partner_scores,
    variation_of_information,
)

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
    "variation_of_information",
]
