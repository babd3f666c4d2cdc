"""``wiremap segment``: neurons from an aligned image (affinities, supervoxels, segmentation)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from wiremap.cli.options import (
    ExecutorOpt,
    OverwriteOpt,
    SchedulerOpt,
    WorkersOpt,
    WorkspaceArg,
    execution,
    parse_shape,
)
from wiremap.workspace import Workspace

console = Console()


def segment(
    workspace: WorkspaceArg,
    input: Annotated[str, typer.Option("--input", help="Image layer to segment.")] = "aligned",
    model: Annotated[
        str | None, typer.Option(help="Weight file (default: the shipped model for the resolution).")
    ] = None,
    block_shape: Annotated[str | None, typer.Option(help="Block size Z,Y,X in voxels.")] = None,
    roi: Annotated[str | None, typer.Option(help="Only this region, z0:z1,y0:y1,x0:x1.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Mean-affinity merge threshold (default: the model's).")
    ] = None,
    min_size_nm3: Annotated[
        float | None, typer.Option(help="Merge segments smaller than this volume, nm^3 (default 5e5).")
    ] = None,
    min_contact: Annotated[
        int | None,
        typer.Option(help="Merge on affinity only over >= this many voxel faces (default 4 serial sections, else 0)."),
    ] = None,
    fragment_context_nm: Annotated[
        float | None,
        typer.Option(help="Context around each block for supervoxels, nm (default 480; raise for thick neurites)."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present).")] = None,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment neurons: a 3D U-Net's affinities, watershed supervoxels, mean-affinity agglomeration."""
    from wiremap.segment.stage import SegmentConfig, run_segment

    ws = Workspace.open(workspace)
    config = SegmentConfig(
        input=input,
        model=model,
        block_shape=parse_shape(block_shape, "--block-shape") if block_shape else None,
        roi=roi,
        threshold=threshold,
        device=device,
        **({"fragment_context_nm": fragment_context_nm} if fragment_context_nm is not None else {}),
        **({"min_size_nm3": min_size_nm3} if min_size_nm3 is not None else {}),
        **({"min_contact": min_contact} if min_contact is not None else {}),
    )
    report = run_segment(ws, config, overwrite=overwrite, **execution(ws, executor, workers, scheduler))
    z, y, x = report.shape_zyx
    console.print(
        f"segmented {z}×{y}×{x} voxels: {report.n_supervoxels} supervoxels -> {report.n_segments} segments "
        f"(layers affinities, supervoxels, segmentation; table segment_supervoxels)"
    )
    console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))


def register(app: typer.Typer) -> None:
    app.command()(segment)
