"""Blockwise engine overhead: the same Gaussian smoothing as plain NumPy, serial, process pool, Dask.

Ratios are against plain NumPy on the in-memory array (no I/O) measured in
the same run; the blockwise runs include reading and writing precomputed
chunks, so the ratio is the whole price of resumable, out-of-core work.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from wiremap.filters import smooth, smooth_layer
from wiremap.volume import create_layer, open_layer
from wiremap.workspace import Workspace

SIGMA = (1.0, 2.0, 2.0)


def run(quick: bool) -> dict:
    shape = (32, 256, 256) if quick else (64, 1024, 1024)
    block = (32, 128, 128) if quick else (32, 256, 256)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(f"{tmp}/ws")
        layer = create_layer(
            ws, "raw", shape_zyx=shape, resolution_nm=(30, 4, 4), dtype="uint8", chunk_zyx=(32, 128, 128)
        )
        layer.write(image)
        start = time.perf_counter()
        reference = smooth(image, SIGMA)
        seconds = {"numpy": time.perf_counter() - start}
        for executor in ("serial", "processes", "dask"):
            start = time.perf_counter()
            smooth_layer(
                ws, "raw", f"out_{executor}", SIGMA, block_shape=block, executor=executor, workers=2, progress=False
            )
            seconds[executor] = time.perf_counter() - start
        identical = all(
            np.array_equal(open_layer(ws, f"out_{e}").read(), reference) for e in ("serial", "processes", "dask")
        )
    mvox = image.size / 1e6
    return {
        "shape_zyx": list(shape),
        "block_zyx": list(block),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "mvoxel_per_s": {k: round(mvox / v, 2) for k, v in seconds.items()},
        "ratio_to_numpy": {k: round(v / seconds["numpy"], 2) for k, v in seconds.items() if k != "numpy"},
        "processes_vs_dask_speed": round(seconds["dask"] / seconds["processes"], 2),
        "outputs_identical": identical,
    }
