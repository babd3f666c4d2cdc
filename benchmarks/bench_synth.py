"""Synthetic tissue throughput: geometry, EM rendering, acquisition and writing, MVoxel/s.

The issue's goal: 64 x 1024 x 1024 voxels (4 x 4 x 30 nm) with acquisition in
under 5 minutes on 2 cores.  Peak memory of the process is reported too.
"""

from __future__ import annotations

import resource
import tempfile
import time

from wiremap.synth.stage import SynthConfig, run_synth
from wiremap.workspace import Workspace


def _one(shape: tuple[int, int, int], preset: str, acquisition: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(f"{tmp}/ws")
        start = time.perf_counter()
        report = run_synth(ws, SynthConfig(shape_zyx=shape, preset=preset, seed=1, acquisition=acquisition))
        seconds = time.perf_counter() - start
    voxels = shape[0] * shape[1] * shape[2]
    return {
        "shape_zyx": list(shape),
        "preset": preset,
        "acquisition": acquisition,
        "seconds": round(seconds, 2),
        "mvoxel_per_s": round(voxels / 1e6 / seconds, 3),
        "step_seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "neurons": report.n_neurons,
        "synapses": report.n_synapses,
        "tiles": report.n_tiles,
    }


def run(quick: bool) -> dict:
    cases = (
        [((16, 256, 256), "sstem", True), ((32, 96, 96), "fibsem", False)]
        if quick
        else [((64, 512, 512), "sstem", True), ((64, 1024, 1024), "sstem", True), ((128, 128, 128), "fibsem", False)]
    )
    results = {f"{p}_{'x'.join(map(str, s))}": _one(s, p, a) for s, p, a in cases}
    results["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    if not quick:
        big = results["sstem_64x1024x1024"]["seconds"]
        results["goal_64x1024x1024_under_300s"] = big < 300
    return results
