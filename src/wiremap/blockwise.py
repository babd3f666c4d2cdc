"""Blockwise processing of volumes: a block grid with context, done-markers, three executors.

Vocabulary (after funkelab/daisy)::

        total_roi
    ┌───────────────────────────────┐
    │   read_roi = write_roi + context (clipped to total_roi)
    │  ┌───────────────┐            │
    │  │ ┌───────────┐ │            │
    │  │ │ write_roi │ │  blocks tile total_roi without overlap in
    │  │ └───────────┘ │  their write ROIs; the last block on each
    │  └───────────────┘  axis shrinks to fit ("shrink" fit mode).
    └───────────────────────────────┘

A ``BlockTask`` names a stage, its grid and a picklable ``process(block)``
that reads what it needs (``block.read_roi``) and writes exactly its
``block.write_roi`` (so re-running a block is harmless).  After ``process``
returns, the executor writes ``blocks/<stage>/<block_id>`` into the
workspace; a later run skips blocks that have a marker, so a run killed at
any point resumes without lost or duplicated work.

Executors share one interface, ``run_blockwise(task, executor=...)``:
  serial     in this process, for debugging
  processes  a local process pool (default)
  dask       a Dask cluster: ``scheduler="tcp://host:8786"`` or a LocalCluster
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from wiremap.errors import InputError, WiremapError
from wiremap.roi import Roi
from wiremap.volume import Layer
from wiremap.workspace import Workspace

log = logging.getLogger(__name__)

EXECUTORS = ("serial", "processes", "dask")


class BlockwiseError(WiremapError):
    """Some blocks failed after all retries."""


@dataclass(frozen=True)
class Block:
    """One unit of blockwise work; ``block_id`` is stable for a given grid."""

    block_id: int
    index: tuple[int, int, int]
    read_roi: Roi
    write_roi: Roi


@dataclass(frozen=True)
class BlockGrid:
    """Blocks of ``block_shape`` tiling ``total_roi``, each read with ``context`` voxels around it."""

    total_roi: Roi
    block_shape: tuple[int, int, int]
    context: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if len(self.block_shape) != 3 or min(self.block_shape) < 1:
            raise InputError(f"block shape must be 3 positive sizes, got {self.block_shape}")
        if len(self.context) != 3 or min(self.context) < 0:
            raise InputError(f"block context must be 3 sizes >= 0, got {self.context}")

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(-(-s // b) for s, b in zip(self.total_roi.shape, self.block_shape, strict=True))  # type: ignore[return-value]

    def __len__(self) -> int:
        gz, gy, gx = self.grid_shape
        return gz * gy * gx

    def block(self, index: Sequence[int]) -> Block:
        gz, gy, gx = self.grid_shape
        iz, iy, ix = index
        offset = tuple(o + i * b for o, i, b in zip(self.total_roi.offset, index, self.block_shape, strict=True))
        write = Roi(offset, self.block_shape).intersect(self.total_roi)  # type: ignore[arg-type]
        read = write.grow(self.context).intersect(self.total_roi)
        return Block((iz * gy + iy) * gx + ix, (iz, iy, ix), read, write)

    def blocks(self) -> Iterator[Block]:
        for index in itertools.product(*(range(g) for g in self.grid_shape)):
            yield self.block(index)

    def check_aligned(self, chunk_zyx: Sequence[int]) -> None:
        """Blocks must cover whole storage chunks, or two workers would rewrite one chunk."""
        for axis, (o, b, c) in enumerate(zip(self.total_roi.offset, self.block_shape, chunk_zyx, strict=True)):
            if o % c or b % c:
                raise InputError(
                    f"block shape {self.block_shape} / offset {self.total_roi.offset} is not aligned "
                    f"with storage chunks {tuple(chunk_zyx)} on axis {'zyx'[axis]}"
                )


@dataclass(frozen=True)
class BlockTask:
    """A stage's blockwise work: ``process(block)`` for every block of ``grid``."""

    stage: str
    workspace_url: str
    grid: BlockGrid
    process: Callable[[Block], Any]
    max_retries: int = 2


@dataclass
class RunReport:
    """What a blockwise run did."""

    total: int
    processed: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)


def marker_prefix(stage: str) -> str:
    return f"blocks/{stage}/"


def done_blocks(ws: Workspace, stage: str) -> set[int]:
    prefix = marker_prefix(stage)
    return {int(k[len(prefix) :]) for k in ws.list(prefix) if k[len(prefix) :].isdigit()}


def reset_markers(ws: Workspace, stage: str) -> None:
    """Forget finished blocks (before recomputing a stage from scratch)."""
    ws.delete_prefix(marker_prefix(stage))


@lru_cache(maxsize=8)
def worker_workspace(url: str) -> Workspace:
    """One open workspace per worker process and URL (block functions open theirs here)."""
    return Workspace.open(url)


@lru_cache(maxsize=32)
def worker_layer(url: str, name: str) -> Layer:
    """One open layer per worker process, workspace and name."""
    return Layer(worker_workspace(url), name)


def clear_worker_caches() -> None:
    """Forget open workspaces and layers: a stage may have recreated a layer since they were opened.

    Called at the start of every run, here (the serial executor's worker) and on the workers of a
    Dask cluster (which outlive runs); a process pool starts fresh each run.
    """
    worker_layer.cache_clear()
    worker_workspace.cache_clear()


def run_block(task: BlockTask, block: Block) -> int:
    """Process one block and write its done-marker; runs inside a worker."""
    task.process(block)
    worker_workspace(task.workspace_url).write_bytes(
        f"{marker_prefix(task.stage)}{block.block_id}", str(block.write_roi).encode()
    )
    return block.block_id


def run_blockwise(
    task: BlockTask,
    *,
    executor: str = "processes",
    workers: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
) -> RunReport:
    """Run every block of ``task`` that has no done-marker yet."""
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    ws = Workspace.open(task.workspace_url)
    finished = done_blocks(ws, task.stage)
    pending = [b for b in task.grid.blocks() if b.block_id not in finished]
    report = RunReport(total=len(task.grid), skipped=len(task.grid) - len(pending))
    runner = {"serial": _run_serial, "processes": _run_processes, "dask": _run_dask}[executor]
    clear_worker_caches()  # the serial executor's worker is this process
    with _progress(task, report, enabled=progress) as advance:
        if pending:
            runner(task, pending, report, advance, workers=workers, scheduler=scheduler)
    if report.failed:
        first = next(iter(report.failed.items()))
        raise BlockwiseError(
            f"stage {task.stage}: {len(report.failed)} block(s) failed after {task.max_retries} "
            f"retries; first: block {first[0]}: {first[1]}"
        )
    return report


class _progress:
    """A rich progress bar of blocks done / total, as a context manager yielding ``advance()``."""

    def __init__(self, task: BlockTask, report: RunReport, enabled: bool) -> None:
        self.bar = Progress(
            TextColumn(f"[bold]{task.stage}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks"),
            TimeElapsedColumn(),
            disable=not enabled,
            transient=False,
        )
        self.task_id = self.bar.add_task(task.stage, total=report.total, completed=report.skipped)

    def __enter__(self) -> Callable[[], None]:
        self.bar.start()
        return lambda: self.bar.advance(self.task_id)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def _run_serial(
    task: BlockTask, pending: list[Block], report: RunReport, advance: Callable[[], None], **_: Any
) -> None:
    for block in pending:
        for attempt in range(task.max_retries + 1):
            try:
                run_block(task, block)
                report.processed += 1
                break
            except WiremapError:
                raise
            except Exception as exc:  # a failing block is retried, then reported
                log.warning("block %d failed (attempt %d): %s", block.block_id, attempt + 1, exc)
                if attempt == task.max_retries:
                    report.failed[block.block_id] = repr(exc)
        advance()


def _run_processes(
    task: BlockTask, pending: list[Block], report: RunReport, advance: Callable[[], None], *, workers: int, **_: Any
) -> None:
    # spawn, not fork: TensorStore and BLAS own threads that a fork would copy in a broken state.
    context = multiprocessing.get_context("spawn")
    attempts = dict.fromkeys((b.block_id for b in pending), 0)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        running: dict[Future[int], Block] = {pool.submit(run_block, task, b): b for b in pending}
        while running:
            completed, _still_running = wait(running, return_when=FIRST_COMPLETED)
            for future in completed:
                block = running.pop(future)
                exc = future.exception()
                if exc is None:
                    report.processed += 1
                    advance()
                elif isinstance(exc, WiremapError):
                    raise exc
                elif attempts[block.block_id] < task.max_retries:
                    attempts[block.block_id] += 1
                    log.warning("block %d failed, retrying: %s", block.block_id, exc)
                    running[pool.submit(run_block, task, block)] = block
                else:
                    report.failed[block.block_id] = repr(exc)
                    advance()


def _run_dask(
    task: BlockTask,
    pending: list[Block],
    report: RunReport,
    advance: Callable[[], None],
    *,
    workers: int,
    scheduler: str | None,
    **_: Any,
) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        logging.getLogger("distributed").setLevel(logging.WARNING)  # scheduler chatter; progress bars show progress
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    client = Client(scheduler or cluster)
    try:
        client.run(clear_worker_caches)
        futures = client.map(
            run_block,
            [task] * len(pending),
            pending,
            pure=False,
            retries=task.max_retries,
            key=[f"{task.stage}-block-{b.block_id}" for b in pending],
        )
        for future in as_completed(futures):
            if future.status == "error":
                exc = future.exception()
                if isinstance(exc, WiremapError):
                    raise exc
                block_id = int(future.key.rsplit("-", 1)[1])
                report.failed[block_id] = repr(exc)
            else:
                report.processed += 1
            advance()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
