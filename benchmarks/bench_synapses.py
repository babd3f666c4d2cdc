"""Synapse detection + partner assignment speed (goal >= 50,000 voxels/s on 2 cores) and accuracy.

Synthetic sstem tissue (seed 7, never used in training) with its true
neurons as the segmentation; ``run_synapses`` with a 2-process pool, wall
time, so the rate is what a user on a 2-core machine gets.  Baseline in the
same run: blockwise Gaussian smoothing (``wiremap.filters.smooth_layer``, the
engine's own yardstick) of the same image with the same pool.
"""

from __future__ import annotations

import os
import tempfile
import time

from wiremap.filters import smooth_layer
from wiremap.synapses.scores import score_workspace
from wiremap.synapses.stage import SynapseConfig, run_synapses
from wiremap.synth.stage import SynthConfig, run_synth
from wiremap.volume import Layer, write_volume
from wiremap.workspace import Workspace


def run(quick: bool) -> dict:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    shape = (24, 256, 256) if quick else (32, 512, 512)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(f"{tmp}/ws")
        run_synth(ws, SynthConfig(shape_zyx=shape, seed=7, acquisition=False, pyramid_scales=1))
        truth = Layer(ws, "groundtruth/neurons")
        write_volume(ws, "segmentation", truth.read(), resolution_nm=truth.info.resolution_nm, kind="segmentation")
        voxels = shape[0] * shape[1] * shape[2]
        config = SynapseConfig(compartments="groundtruth/compartments", block_shape=(shape[0], 256, 256))
        t0 = time.perf_counter()
        report = run_synapses(ws, config, executor="processes", workers=2, progress=False)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        smooth_layer(ws, "aligned", "smoothed", (1.0, 2.0, 2.0), block_shape=(16, 256, 256), workers=2, progress=False)
        base = time.perf_counter() - t0
        scores = score_workspace(ws)
    rate = voxels / seconds
    return {
        "shape_zyx": list(shape),
        "synapses_found": report.n_synapses,
        "seconds": seconds,
        "voxels_per_s": rate,
        "target_voxels_per_s": 50_000,
        "meets_target": rate >= 50_000,
        "baseline_smooth_voxels_per_s": voxels / base,
        "ratio_to_baseline": rate / (voxels / base),
        "accuracy": scores,
    }
