"""Per-block pieces of segments, written by blockwise passes and gathered per segment.

Meshing and skeletonization see one block at a time, but a segment spans
many blocks.  Each block writes its pieces (for every segment id it holds, a
few arrays of varying length along axis 0) under ``scratch/<stage>/``::

    scratch/<stage>/<block_id>.npz   ids, and per field f: f (concatenated), f_count
    scratch/<stage>/<block_id>.ids   the block's segment ids (raw uint64), for the index

A merge pass then handles segment ids in shards (``id % n_shards``): it
reads only the blocks that hold its ids, so its memory is bounded by the
pieces of one shard, never by the whole volume (the failure mode of
whole-volume merges, igneous issues #126/#180).
"""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

from wiremap.workspace import Workspace

Pieces = dict[int, dict[str, np.ndarray]]


def scratch_prefix(stage: str) -> str:
    return f"scratch/{stage}/"


def write_block_pieces(ws: Workspace, stage: str, block_id: int, pieces: Pieces) -> None:
    """Store one block's pieces (possibly none) for the merge pass."""
    ids = np.array(sorted(pieces), np.uint64)
    arrays: dict[str, np.ndarray] = {"ids": ids}
    fields = sorted({f for p in pieces.values() for f in p})
    for f in fields:
        parts = [pieces[int(i)][f] for i in ids]
        arrays[f + "_count"] = np.array([len(p) for p in parts], np.int64)
        arrays[f] = np.concatenate(parts) if parts else np.zeros(0)
    sink = io.BytesIO()
    np.savez(sink, **arrays)  # type: ignore[arg-type]  # scratch, read once by the merge: compressing cost more than it saved
    prefix = scratch_prefix(stage)
    ws.write_bytes(f"{prefix}{block_id}.npz", sink.getvalue())
    ws.write_bytes(f"{prefix}{block_id}.ids", ids.tobytes())  # last: the index trusts it


def read_block_pieces(ws: Workspace, stage: str, block_id: int, wanted: set[int] | None = None) -> Pieces:
    """Pieces of one block, only of the ``wanted`` ids when given."""
    with np.load(io.BytesIO(ws.read_bytes(f"{scratch_prefix(stage)}{block_id}.npz"))) as z:
        ids = z["ids"].astype(np.uint64)
        fields = [k for k in z.files if k != "ids" and not k.endswith("_count")]
        out: Pieces = {int(i): {} for i in ids if wanted is None or int(i) in wanted}
        for f in fields:
            counts = z[f + "_count"]
            starts = np.concatenate([[0], np.cumsum(counts)])
            data = z[f]
            for k, i in enumerate(ids):
                if int(i) in out:
                    out[int(i)][f] = data[starts[k] : starts[k + 1]]
    return out


def piece_index(ws: Workspace, stage: str) -> dict[int, list[int]]:
    """Segment id -> ids of the blocks holding a piece of it."""
    prefix = scratch_prefix(stage)
    index: dict[int, list[int]] = defaultdict(list)
    for key in ws.list(prefix):
        if key.endswith(".ids"):
            block_id = int(key[len(prefix) : -len(".ids")])
            for i in np.frombuffer(ws.read_bytes(key), np.uint64):
                index[int(i)].append(block_id)
    return dict(index)


def gather(
    ws: Workspace, stage: str, index: dict[int, list[int]], ids: list[int]
) -> dict[int, list[dict[str, np.ndarray]]]:
    """All pieces of ``ids``, read block by block (each needed block once)."""
    wanted = set(ids)
    blocks = sorted({b for i in ids for b in index.get(i, [])})
    out: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in ids}
    for b in blocks:
        for i, piece in read_block_pieces(ws, stage, b, wanted).items():
            out[i].append(piece)
    return out


def shard_ids(ids: list[int], n_shards: int, shard: int) -> list[int]:
    return sorted(i for i in ids if i % n_shards == shard)
