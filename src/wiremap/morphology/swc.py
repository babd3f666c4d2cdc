"""SWC files: the plain-text tree format of neuron reconstructions (NeuroMorpho, navis).

One line per node: ``n T x y z R P`` (id from 1, type, position, radius,
parent id or -1).  wiremap writes positions and radii in nanometres (the
header says so) and types from ``Compartment``: 1 soma, 2 axon, 3 dendrite
(basal), 6 cilium and 7 glia (custom types, as SWC allows), 0 unknown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wiremap.errors import InputError
from wiremap.morphology.skeletons import SkeletonData, to_tree

#: Compartment code -> SWC type, and back.
SWC_TYPE = {0: 0, 1: 1, 2: 2, 3: 3, 4: 7, 5: 6}
COMPARTMENT_OF_TYPE = {v: k for k, v in SWC_TYPE.items()} | {4: 3}  # apical dendrite reads as dendrite


def to_swc(sk: SkeletonData, segment_id: int | None = None) -> str:
    """SWC text of a skeleton (a forest if it has several pieces: one root each)."""
    parents, order = to_tree(sk)
    new_id = np.empty(len(order), np.int64)
    new_id[order] = np.arange(1, len(order) + 1)
    lines = ["# SWC written by wiremap", "# units: nm (x y z radius)"]
    if segment_id is not None:
        lines.append(f"# segment {segment_id}")
    for i in order:
        x, y, z = sk.vertices[i]
        t = SWC_TYPE.get(int(sk.compartments[i]), 0)
        parent = -1 if parents[i] < 0 else int(new_id[parents[i]])
        lines.append(f"{new_id[i]} {t} {x:.3f} {y:.3f} {z:.3f} {float(sk.radii[i]):.3f} {parent}")
    return "\n".join(lines) + "\n"


def write_swc(path: str | Path, sk: SkeletonData, segment_id: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_swc(sk, segment_id))
    return path


def parse_swc(text: str, source: str = "SWC") -> SkeletonData:
    """Read SWC text (any node order, ids need not be consecutive); clear errors on bad lines."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 7:
            raise InputError(f"{source} line {number}: expected 7 columns 'n T x y z R P', got {len(parts)}")
        try:
            rows.append((int(parts[0]), int(float(parts[1])), *map(float, parts[2:6]), int(float(parts[6]))))
        except ValueError:
            raise InputError(f"{source} line {number}: not numbers: {line!r}") from None
    if not rows:
        return SkeletonData(
            np.zeros((0, 3)), np.zeros((0, 2), np.uint32), np.zeros(0, np.float32), np.zeros(0, np.uint8)
        )
    arr = np.array(rows, dtype=np.float64)
    ids = arr[:, 0].astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise InputError(f"{source}: node ids are not unique")
    index = {int(n): k for k, n in enumerate(ids)}
    edges = []
    for k, parent in enumerate(arr[:, 6].astype(np.int64)):
        if parent >= 0:
            if int(parent) not in index:
                raise InputError(f"{source}: node {ids[k]} has parent {parent}, which is not in the file")
            edges.append((index[int(parent)], k))
    comps = np.array([COMPARTMENT_OF_TYPE.get(int(t), 0) for t in arr[:, 1]], np.uint8)
    return SkeletonData(
        arr[:, 2:5].copy(),
        np.array(edges, np.uint32).reshape(-1, 2),
        arr[:, 5].astype(np.float32),
        comps,
    )


def read_swc(path: str | Path) -> SkeletonData:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SWC file {path} does not exist")
    return parse_swc(path.read_text(), str(path))
