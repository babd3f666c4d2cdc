"""The real serial-section datasets the shipped networks learn from, and the sections they never saw.

Training scripts read only the ``train`` sections; benchmarks score the
``test`` sections.  One section between them is in neither, so a network's
z-context never reaches a test section.  Files are in ``../shared/data`` (see
its README for provenance and licences).
"""

from __future__ import annotations

from typing import NamedTuple


class SstemDataset(NamedTuple):
    file: str
    image_key: str
    membrane_key: str
    resolution_nm: tuple[float, float, float]  # (z, y, x)
    train: slice
    test: slice


SSTEM_DATASETS = {
    "isbi2012": SstemDataset("isbi2012_membrane.npz", "image", "membrane", (50.0, 4.0, 4.0),
                             train=slice(0, 25), test=slice(26, 30)),
    "vnc_sstem": SstemDataset("vnc_sstem_train.npz", "raw", "membranes", (50.0, 4.6, 4.6),
                              train=slice(0, 6), test=slice(7, 10)),
}
