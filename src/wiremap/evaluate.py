"""Evaluation metrics against ground truth: the public face of :mod:`wiremap.evaluation`.

Example:
    >>> import numpy as np
    >>> from wiremap.evaluate import variation_of_information
    >>> variation_of_information(np.array([1, 1, 2, 2]), np.array([3, 3, 3, 3])).split
    1.0
"""

from wiremap import evaluation as _evaluation
from wiremap.evaluation import *  # noqa: F403  (the same names, one list: evaluation.__all__)

__all__ = _evaluation.__all__
