"""Blockwise image filters between layers: the smallest real use of the engine.

``smooth_layer`` Gaussian-smooths an image layer into a new one, block by
block with enough context that the result equals smoothing the whole volume
at once (the engine's tests and benchmarks rely on that equality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from wiremap.blockwise import Block, BlockGrid, BlockTask, RunReport, run_blockwise, worker_layer
from wiremap.roi import Roi
from wiremap.volume import Layer, create_layer
from wiremap.workspace import Workspace


def gaussian_context(sigma_zyx: tuple[float, float, float], truncate: float = 4.0) -> tuple[int, int, int]:
    """Voxels of context a Gaussian of ``sigma`` needs to be exact inside a block."""
    return tuple(int(math.ceil(truncate * s)) for s in sigma_zyx)  # type: ignore[return-value]


def smooth(image: np.ndarray, sigma_zyx: tuple[float, float, float]) -> np.ndarray:
    """Gaussian smoothing of a uint8 volume, rounded back to uint8 (pure function)."""
    out = ndimage.gaussian_filter(image.astype(np.float32), sigma_zyx, mode="nearest", truncate=4.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SmoothBlock:
    """Picklable per-block work: read with context, smooth, write the write ROI."""

    workspace_url: str
    source: str
    target: str
    sigma_zyx: tuple[float, float, float]

    def __call__(self, block: Block) -> None:
        data = worker_layer(self.workspace_url, self.source).read(block.read_roi)
        result = smooth(data, self.sigma_zyx)
        inner = block.write_roi.to_slices(relative_to=block.read_roi)
        worker_layer(self.workspace_url, self.target).write(result[inner], block.write_roi.offset)


def smooth_layer(
    ws: Workspace,
    source: str,
    target: str,
    sigma_zyx: tuple[float, float, float],
    *,
    block_shape: tuple[int, int, int] | None = None,
    executor: str = "processes",
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Smooth layer ``source`` into ``target`` blockwise; resumes a killed run."""
    src = Layer(ws, source)
    stage = f"smooth-{target}"
    if not ws.has_layer(target) or overwrite:
        create_layer(
            ws,
            target,
            shape_zyx=src.info.shape_zyx,
            resolution_nm=src.info.resolution_nm,
            dtype="uint8",
            chunk_zyx=src.info.chunk_zyx,
            overwrite=overwrite,
        )
        ws.delete_prefix(f"blocks/{stage}/")
    block_shape = block_shape or tuple(c * 2 for c in src.info.chunk_zyx)  # type: ignore[assignment]
    grid = BlockGrid(Roi.from_shape(src.info.shape_zyx), block_shape, gaussian_context(sigma_zyx))  # type: ignore[arg-type]
    grid.check_aligned(src.info.chunk_zyx)
    task = BlockTask(stage, ws.url, grid, SmoothBlock(ws.url, source, target, sigma_zyx))
    report = run_blockwise(task, executor=executor, workers=workers, scheduler=scheduler, progress=progress)
    ws.write_provenance(
        stage,
        parameters={"sigma_zyx": list(sigma_zyx), "block_shape": list(block_shape)},  # type: ignore[arg-type]
        inputs=[source],
        outputs=[target],
    )
    return report
