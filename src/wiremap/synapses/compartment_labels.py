"""Compartments of the two partners of each synapse, read from the ``compartments`` layer.

``wiremap synapses`` labels its rows when a ``compartments`` layer exists at
that time.  The compartment rules in turn use synapse polarity (axons are
presynaptic) when a synapse table exists, so the best labels come from
running ``wiremap compartments`` after ``wiremap synapses``; that run then
refreshes the rows' ``pre_compartment`` / ``post_compartment`` with this
module.  The rule is the one ``partners.assign_partners`` uses: the most
common compartment of each partner's voxels near the synapse (here, within
``reach_nm`` in-plane and one section either side of its centre).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wiremap.blockwise import BlockGrid
from wiremap.synapses.partners import COMPARTMENT_NAMES
from wiremap.volume import Layer

REACH_NM = 80.0  # in-plane reach around a synapse centre
BLOCK = (32, 512, 512)  # voxels read at a time


def synapse_compartments(
    table: pd.DataFrame, segmentation: Layer, compartments: Layer, reach_nm: float = REACH_NM
) -> pd.DataFrame:
    """``pre_compartment`` and ``post_compartment`` (names, "" when unknown) of each row of ``table``.

    ``table`` needs ``pre``, ``post`` and the synapse centre ``z, y, x`` in voxels.
    The layers are read block by block (only blocks holding synapses), so the
    cost follows the volume once, not once per synapse.
    """
    res = segmentation.info.resolution_nm
    reach = (1, max(1, int(round(reach_nm / res[1]))), max(1, int(round(reach_nm / res[2]))))
    names = {role: np.full(len(table), "", dtype=object) for role in ("pre", "post")}
    ids = {role: table[role].to_numpy(np.uint64) for role in ("pre", "post")}
    centre = np.rint(table[["z", "y", "x"]].to_numpy(np.float64)).astype(np.int64)
    centre = np.clip(centre, 0, np.asarray(segmentation.info.shape_zyx) - 1)
    grid = BlockGrid(segmentation.roi, BLOCK, reach)
    block_of = (centre - np.asarray(segmentation.roi.offset)) // np.asarray(BLOCK)
    for key in np.unique(block_of, axis=0):
        rows = np.flatnonzero((block_of == key).all(axis=1))
        block = grid.block(tuple(int(k) for k in key))
        seg = segmentation.read(block.read_roi)
        comp = compartments.read(block.read_roi)
        origin = np.asarray(block.read_roi.offset)
        for r in rows:
            c = centre[r] - origin
            window = tuple(slice(max(0, c[a] - reach[a]), c[a] + reach[a] + 1) for a in range(3))
            s, k = seg[window].ravel(), comp[window].ravel()
            for role in ("pre", "post"):
                codes = k[(s == ids[role][r]) & (k > 0)]
                if codes.size:
                    names[role][r] = COMPARTMENT_NAMES.get(int(np.bincount(codes).argmax()), "")
    return pd.DataFrame({"pre_compartment": names["pre"], "post_compartment": names["post"]}, index=table.index)
