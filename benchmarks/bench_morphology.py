"""Meshing + skeletonization throughput (MVoxel/s of segmentation) and compartment / myelin accuracy.

Goal: meshing + skeletonization >= 1 MVoxel/s on 2 cores.  The
baseline, measured in the same run, is the plain whole-volume approach in
one process at the same label resolutions (zmesh over the whole array at the
mesh downsampling, kimimaro over the whole array at the skeleton
downsampling; no blocks, no simplification, no output written).  The
wiremap stages run blockwise on 2 processes with the default config
(meshes at 8 nm, skeletons at 16 nm in-plane) and write every mesh (3 LODs)
and skeleton.  Accuracy against the
synthetic truth: compartment per skeleton node (goal >= 0.95; the
off-diagonal counts of the confusion are listed as ``truth->predicted``),
myelin IoU (goal >= 0.9).
"""

from __future__ import annotations

import tempfile
import time

import kimimaro
import numpy as np
import zmesh

from wiremap.morphology.myelin import iou
from wiremap.morphology.scores import compartment_confusion, node_figures
from wiremap.morphology.stage import MorphologyConfig, run_compartments, run_mesh, run_skeletonize
from wiremap.synth.stage import SynthConfig, run_synth, use_true_segmentation
from wiremap.volume import Layer
from wiremap.workspace import Workspace


def _baseline(seg: np.ndarray, res: tuple[float, float, float], config: MorphologyConfig) -> float:
    start = time.perf_counter()
    for factors, work in ((config.mesh_downsample, "mesh"), (config.skeleton_downsample, "skeleton")):
        labels = np.asfortranarray(seg[:: factors[0], :: factors[1], :: factors[2]].T)
        anisotropy = tuple(r * f for r, f in zip(res, factors, strict=True))[::-1]
        if work == "mesh":
            mesher = zmesh.Mesher(anisotropy)
            mesher.mesh(labels)
            for label in mesher.ids():
                mesher.get(label, normals=False)
        else:
            kimimaro.skeletonize(labels, anisotropy=anisotropy, progress=False, parallel=1)
    return time.perf_counter() - start


def _one(shape: tuple[int, int, int], seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(f"{tmp}/ws")
        run_synth(ws, SynthConfig(shape_zyx=shape, seed=seed, acquisition=False, pyramid_scales=1))
        seg, res = use_true_segmentation(ws)
        config = MorphologyConfig()
        t0 = time.perf_counter()
        mesh = run_mesh(ws, config, progress=False)
        t1 = time.perf_counter()
        skel = run_skeletonize(ws, config, progress=False)
        t2 = time.perf_counter()
        run_compartments(ws, config, progress=False)
        t3 = time.perf_counter()
        baseline = _baseline(seg, res, config)
        nodes = ws.read_table("skeleton_nodes")
        truth_comp = Layer(ws, "groundtruth/compartments").read()
        nodes_scored = node_figures(compartment_confusion(nodes, seg, truth_comp, res))
        myelin_iou = iou(Layer(ws, "myelin").read(), Layer(ws, "groundtruth/myelin").read())
    mvox = seg.size / 1e6
    seconds = t2 - t0
    return {
        "shape_zyx": list(shape),
        "segments": mesh.n_segments,
        "mesh_seconds": round(t1 - t0, 2),
        "skeleton_seconds": round(t2 - t1, 2),
        "compartments_seconds": round(t3 - t2, 2),
        "mvoxel_per_s": round(mvox / seconds, 3),
        "baseline_whole_volume_mvoxel_per_s": round(mvox / baseline, 3),
        "speedup_vs_baseline": round(baseline / seconds, 2),
        "goal_1_mvoxel_per_s": mvox / seconds >= 1.0,
        "compartment_node_accuracy": round(nodes_scored["node_accuracy"], 4),
        "skeleton_nodes": nodes_scored["nodes"],
        "skeleton_nodes_unscored": nodes_scored["nodes_unscored"],
        "compartment_confusion": nodes_scored["confusion"],
        "myelin_iou": round(myelin_iou, 4),
        "skeletons": skel.n_segments,
    }


def run(quick: bool) -> dict:
    cases = [((32, 256, 256), 11)] if quick else [((64, 1024, 1024), 12)]  # 4 default blocks: both workers busy
    return {f"sstem_{'x'.join(map(str, s))}": _one(s, seed) for s, seed in cases}
