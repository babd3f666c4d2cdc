"""The blockwise engine: grid geometry, executors, retries, and kill-and-resume equality."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from blockwise_ops import FlakyBlock, SlowSmoothBlock
from wiremap.blockwise import (
    BlockGrid,
    BlockTask,
    BlockwiseError,
    done_blocks,
    run_blockwise,
)
from wiremap.errors import InputError
from wiremap.filters import SmoothBlock, gaussian_context, smooth, smooth_layer
from wiremap.roi import Roi
from wiremap.volume import create_layer, open_layer, write_volume

SIGMA = (1.0, 2.0, 2.0)
SHAPE = (32, 96, 128)
BLOCK = (16, 32, 32)


@pytest.fixture
def image_ws(workspace, rng):
    image = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    layer = write_volume(workspace, "raw", image, resolution_nm=(30, 4, 4))
    assert layer.info.chunk_zyx == (16, 96, 128)
    return workspace, image


def _chunked(ws, image):
    """The input again with chunks that the small test blocks align to."""
    layer = create_layer(ws, "raw16", shape_zyx=SHAPE, resolution_nm=(30, 4, 4), dtype="uint8", chunk_zyx=(16, 32, 32))
    layer.write(image)
    return "raw16"


def test_grid_tiles_total_roi_exactly_once():
    total = Roi((2, 3, 4), (20, 50, 33))
    grid = BlockGrid(total, (8, 16, 16), (1, 2, 1))
    count = np.zeros(total.shape, dtype=int)
    ids = set()
    for block in grid.blocks():
        count[block.write_roi.to_slices(relative_to=total)] += 1
        assert total.contains(block.read_roi)
        assert block.read_roi.contains(block.write_roi)
        ids.add(block.block_id)
    assert (count == 1).all()
    assert len(ids) == len(grid) == 3 * 4 * 3
    inner = grid.block((1, 1, 1))
    assert inner.read_roi == inner.write_roi.grow((1, 2, 1))


def test_grid_rejects_unaligned_blocks():
    with pytest.raises(InputError, match="not aligned"):
        BlockGrid(Roi.from_shape((32, 64, 64)), (16, 24, 32)).check_aligned((16, 32, 32))


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_blockwise_equals_whole_volume(image_ws, executor):
    ws, image = image_ws
    source = _chunked(ws, image)
    report = smooth_layer(ws, source, "smooth", SIGMA, block_shape=BLOCK, executor=executor, progress=False)
    assert report.processed == len(BlockGrid(Roi.from_shape(SHAPE), BLOCK)) == 24
    np.testing.assert_array_equal(open_layer(ws, "smooth").read(), smooth(image, SIGMA))
    # a second run finds every block done and does nothing
    again = smooth_layer(ws, source, "smooth", SIGMA, block_shape=BLOCK, executor=executor, progress=False)
    assert (again.processed, again.skipped) == (0, 24)


def test_retries_then_failure_is_reported(image_ws, tmp_path):
    ws, _ = image_ws
    grid = BlockGrid(Roi.from_shape((16, 32, 32)), (16, 16, 16))
    flaky = BlockTask("flaky", ws.url, grid, FlakyBlock(str(tmp_path), failures=1), max_retries=1)
    assert run_blockwise(flaky, executor="serial", progress=False).processed == 4
    (tmp_path / "hard").mkdir()
    hard = BlockTask("hard", ws.url, grid, FlakyBlock(str(tmp_path / "hard"), failures=5), max_retries=1)
    with pytest.raises(BlockwiseError, match="4 block"):
        run_blockwise(hard, executor="processes", progress=False)
    assert done_blocks(ws, "hard") == set()


KILL_SCRIPT = """
import sys
from blockwise_ops import SlowSmoothBlock
from wiremap.blockwise import BlockGrid, BlockTask, run_blockwise
from wiremap.filters import SmoothBlock, gaussian_context
from wiremap.roi import Roi
url = sys.argv[1]
grid = BlockGrid(Roi.from_shape({shape}), {block}, gaussian_context({sigma}))
inner = SmoothBlock(url, "raw16", "smooth", {sigma})
task = BlockTask("smooth-smooth", url, grid, SlowSmoothBlock(inner, 0.4))
run_blockwise(task, executor="processes", workers=2, progress=False)
"""


def _wait_for_markers(ws, stage, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while len(done_blocks(ws, stage)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} blocks finished in {timeout} s")
        time.sleep(0.05)


def test_sigkill_then_resume_is_identical(image_ws):
    ws, image = image_ws
    source = _chunked(ws, image)
    create_layer(ws, "smooth", shape_zyx=SHAPE, resolution_nm=(30, 4, 4), dtype="uint8", chunk_zyx=(16, 32, 32))
    script = KILL_SCRIPT.format(shape=SHAPE, block=BLOCK, sigma=SIGMA)
    proc = subprocess.Popen([sys.executable, "-c", script, ws.url], start_new_session=True)
    try:
        _wait_for_markers(ws, "smooth-smooth", 4)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes, mid-block
        proc.wait()
    finished = done_blocks(ws, "smooth-smooth")
    assert 4 <= len(finished) < 24
    report = smooth_layer(ws, source, "smooth", SIGMA, block_shape=BLOCK, executor="processes", progress=False)
    assert report.skipped == len(finished)
    assert report.processed == 24 - len(finished)
    np.testing.assert_array_equal(open_layer(ws, "smooth").read(), smooth(image, SIGMA))


@pytest.mark.slow
def test_dask_worker_killed_mid_run_still_identical(image_ws):
    from dask.distributed import Client, LocalCluster

    ws, image = image_ws
    _chunked(ws, image)
    create_layer(ws, "smooth", shape_zyx=SHAPE, resolution_nm=(30, 4, 4), dtype="uint8", chunk_zyx=(16, 32, 32))
    grid = BlockGrid(Roi.from_shape(SHAPE), BLOCK, gaussian_context(SIGMA))
    task = BlockTask("smooth-dask", ws.url, grid, SlowSmoothBlock(SmoothBlock(ws.url, "raw16", "smooth", SIGMA), 0.3))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        outcome: dict = {}
        runner = threading.Thread(
            target=lambda: outcome.update(
                report=run_blockwise(task, executor="dask", scheduler=cluster.scheduler_address, progress=False)
            )
        )
        runner.start()
        _wait_for_markers(ws, "smooth-dask", 3)
        with Client(cluster.scheduler_address) as client:
            pids = client.run(os.getpid)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        runner.join(timeout=120)
    assert outcome["report"].processed == 24
    np.testing.assert_array_equal(open_layer(ws, "smooth").read(), smooth(image, SIGMA))


def test_dask_local_cluster_matches_serial(image_ws):
    ws, image = image_ws
    source = _chunked(ws, image)
    smooth_layer(ws, source, "smooth", SIGMA, block_shape=(32, 96, 128), executor="dask", progress=False)
    np.testing.assert_array_equal(open_layer(ws, "smooth").read(), smooth(image, SIGMA))


def test_unknown_executor(image_ws):
    ws, _ = image_ws
    grid = BlockGrid(Roi.from_shape((16, 32, 32)), (16, 32, 32))
    with pytest.raises(InputError, match="executor"):
        run_blockwise(BlockTask("x", ws.url, grid, FlakyBlock(str(Path(".")), 0)), executor="mpi")
