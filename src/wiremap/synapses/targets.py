"""Training targets of the synapse network, from ground-truth clefts, cells and synapses.

All arrays are ``(z, y, x)``.  ``cleft`` is 0/1; ``side`` and ``ei`` are
float32 with -1 meaning "not scored" (they are defined only near a cleft, see
``network.py``).  Distances are in-plane (per section), as the network sees
one section at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

IGNORE = -1.0


def synapse_targets(
    clefts: np.ndarray,
    cells: np.ndarray,
    synapses: pd.DataFrame,
    resolution_nm: Sequence[float],
    radius_nm: float = 150.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cleft, side, ei)`` targets from cleft ids, cell ids and the synapse table.

    Each voxel within ``radius_nm`` (in-plane) of a cleft takes the nearest
    cleft's synapse: ``side`` is 1 in its presynaptic cell, 0 in its
    postsynaptic cell; ``ei`` is 1 (E) or 0 (I) there and on the cleft itself.
    """
    cleft = (clefts > 0).astype(np.uint8)
    side = np.full(clefts.shape, IGNORE, np.float32)
    ei = np.full(clefts.shape, IGNORE, np.float32)
    if not cleft.any() or len(synapses) == 0:
        return cleft, side, ei
    ids = synapses["id"].to_numpy(np.int64)
    size = int(max(ids.max(), int(clefts.max()))) + 1
    pre = np.zeros(size, np.uint64)
    post = np.zeros(size, np.uint64)
    is_e = np.full(size, IGNORE, np.float32)
    pre[ids] = synapses["pre"].to_numpy(np.uint64)
    post[ids] = synapses["post"].to_numpy(np.uint64)
    is_e[ids] = (synapses["ei"].astype(str).to_numpy() == "E").astype(np.float32)
    sampling = tuple(float(r) for r in resolution_nm[1:])
    for z in range(clefts.shape[0]):
        if not cleft[z].any():
            continue
        dist, (iy, ix) = ndimage.distance_transform_edt(cleft[z] == 0, sampling=sampling, return_indices=True)
        near = dist <= radius_nm
        sid = clefts[z][iy, ix].astype(np.int64)
        sid = np.where(near, sid, 0)
        cz = cells[z].astype(np.uint64)
        on_pre = near & (cz == pre[sid]) & (cz != 0)
        on_post = near & (cz == post[sid]) & (cz != 0)
        side[z][on_pre] = 1.0
        side[z][on_post] = 0.0
        scored = on_pre | on_post | (cleft[z] > 0)
        ei[z][scored] = is_e[sid[scored]]
    return cleft, side, ei
