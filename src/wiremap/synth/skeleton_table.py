"""Skeletons as one long Parquet-friendly table, one row per node, and back.

Columns: id (uint64 cell id), node (index within the skeleton), parent
(node index, -1 at the root), z_nm, y_nm, x_nm, radius_nm, compartment
(``Compartment`` code), in_volume (bool).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wiremap.synth.model import Skeleton

COLUMNS = ["id", "node", "parent", "z_nm", "y_nm", "x_nm", "radius_nm", "compartment", "in_volume"]


def skeleton_table(skeletons: dict[int, Skeleton]) -> pd.DataFrame:
    """All skeletons as one long table, one row per node (node ids local to each skeleton)."""
    parts = []
    for cell_id, sk in sorted(skeletons.items()):
        n = len(sk.parents)
        in_volume = sk.in_volume if sk.in_volume is not None else np.ones(n, bool)
        parts.append(
            pd.DataFrame(
                {
                    "id": np.full(n, cell_id, np.uint64),
                    "node": np.arange(n, dtype=np.int64),
                    "parent": sk.parents.astype(np.int64),
                    "z_nm": sk.nodes_nm[:, 0],
                    "y_nm": sk.nodes_nm[:, 1],
                    "x_nm": sk.nodes_nm[:, 2],
                    "radius_nm": sk.radii_nm,
                    "compartment": sk.compartments.astype(np.uint8),
                    "in_volume": in_volume.astype(bool),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)


def skeletons_from_table(table: pd.DataFrame) -> dict[int, Skeleton]:
    """Inverse of :func:`skeleton_table`."""
    result = {}
    for cell_id, rows in table.groupby("id", sort=True):
        rows = rows.sort_values("node")
        result[int(cell_id)] = Skeleton(
            nodes_nm=rows[["z_nm", "y_nm", "x_nm"]].to_numpy(np.float64),
            radii_nm=rows["radius_nm"].to_numpy(np.float64),
            parents=rows["parent"].to_numpy(np.int64),
            compartments=rows["compartment"].to_numpy(np.uint8),
            in_volume=rows["in_volume"].to_numpy(bool),
        )
    return result
