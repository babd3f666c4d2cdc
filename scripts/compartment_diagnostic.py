"""Where compartment calls go wrong on synthetic tissue: confusion per node and the pieces carrying the errors.

For each seed: ``wiremap synth`` (no acquisition), the true segmentation as
``segmentation``, then skeletonize + compartments with the default config;
every node is scored against ``groundtruth/compartments`` (as
``benchmarks/bench_morphology.py`` does).  Pieces are the connected parts
of a skeleton once its soma nodes are cut out; the table lists those with
errors: cable, radius quartiles, whether they touch a soma, true and
predicted parts.

    python scripts/compartment_diagnostic.py --shape 64 1024 1024 --seeds 31 32
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pandas as pd
import torch

from wiremap.morphology.compartments import NAMES, SOMA, _node_length, _pieces, node_truth
from wiremap.morphology.skeletons import SkeletonData
from wiremap.morphology.stage import MorphologyConfig, run_compartments, run_skeletonize
from wiremap.synth.stage import SynthConfig, run_synth, use_true_segmentation
from wiremap.volume import Layer
from wiremap.workspace import Workspace


def _mix(codes: np.ndarray) -> str:
    counts = np.bincount(codes, minlength=6)
    return " ".join(f"{NAMES[k]}:{counts[k]}" for k in range(6) if counts[k])


def diagnose(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Confusion (truth x predicted) and the error pieces of one synthetic volume."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(f"{tmp}/ws")
        run_synth(ws, SynthConfig(shape_zyx=shape, seed=seed, acquisition=False, pyramid_scales=1))
        seg, res = use_true_segmentation(ws)
        config = MorphologyConfig()
        run_skeletonize(ws, config, executor="serial", progress=False)
        run_compartments(ws, config, executor="serial", progress=False)
        truth_comp = Layer(ws, "groundtruth/compartments").read()
        nodes = ws.read_table("skeleton_nodes")
    confusion = np.zeros((6, 6), np.int64)
    rows = []
    for i, t in nodes.groupby("id"):
        xyz = t[["x_nm", "y_nm", "z_nm"]].to_numpy()
        truth = node_truth(xyz, int(i), seg, truth_comp, res)
        pred = t["compartment"].to_numpy().astype(np.int64)
        np.add.at(confusion, (truth, pred), 1)
        parent = t["parent"].to_numpy()
        child = np.flatnonzero(parent >= 0)
        edges = np.stack([parent[child], child], axis=1).astype(np.uint32)
        sk = SkeletonData(xyz, edges, t["radius_nm"].to_numpy(), pred.astype(np.uint8))
        soma = pred == SOMA
        n_pieces, piece = _pieces(sk, ~soma)
        length = _node_length(sk)
        near_soma = np.zeros(n_pieces, bool)
        cross = soma[edges[:, 0]] != soma[edges[:, 1]]
        near_soma[piece[np.where(soma[edges[cross, 0]], edges[cross, 1], edges[cross, 0])]] = True
        for c in range(n_pieces):
            m = (piece == c) & ~soma
            wrong = int((truth[m] != pred[m]).sum())
            if not wrong:
                continue
            r = sk.radii[m]
            rows.append(
                {
                    "seed": seed,
                    "segment": int(i),
                    "nodes": int(m.sum()),
                    "wrong": wrong,
                    "cable_nm": round(float(length[m].sum())),
                    "radius_p25_p50_p75": "/".join(str(round(float(v))) for v in np.percentile(r, [25, 50, 75])),
                    "on_soma": bool(near_soma[c]),
                    "segment_has_soma": bool(soma.any()),
                    "truth": _mix(truth[m]),
                    "predicted": _mix(pred[m]),
                }
            )
    return confusion, pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512))
    parser.add_argument("--seeds", type=int, nargs="+", default=[31])
    args = parser.parse_args()
    torch.set_num_threads(1)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 200)
    total = np.zeros((6, 6), np.int64)
    for seed in args.seeds:
        confusion, errors = diagnose(tuple(args.shape), seed)
        total += confusion
        print(f"seed {seed}: node accuracy {np.trace(confusion) / max(confusion.sum(), 1):.4f}")
        if len(errors):
            print(errors.sort_values("wrong", ascending=False).head(25).to_string(index=False))
    names = [NAMES[k] for k in range(6)]
    print("confusion (rows truth, columns predicted)")
    print(pd.DataFrame(total, index=names, columns=names).to_string())
    print(f"pooled node accuracy {np.trace(total) / max(total.sum(), 1):.4f}")


if __name__ == "__main__":
    main()
