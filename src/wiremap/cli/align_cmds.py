"""``wiremap stitch``, ``align`` and ``align-truth``: tiles -> montaged sections -> aligned volume (-> its truth)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from wiremap.cli.options import ExecutorOpt, OverwriteOpt, SchedulerOpt, WorkersOpt, WorkspaceArg, execution
from wiremap.workspace import Workspace

console = Console()


def stitch(
    workspace: WorkspaceArg,
    output: Annotated[str, typer.Option(help="Montage layer to write.")] = "montage",
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Montage each section's tiles (match overlaps, elastic tile meshes, intensity correction, blockwise render)."""
    from wiremap.align.stage import stitch_stage

    ws = Workspace.open(workspace)
    with console.status("stitching sections"):
        summary = stitch_stage(ws, output, overwrite=overwrite, **execution(ws, executor, workers, scheduler))
    attention = summary["attention"]
    console.print(
        f"stitched {summary['sections']} sections into layer {output!r}; "
        f"sections needing attention: {attention or 'none'} (table montage_qc)"
    )


def align(
    workspace: WorkspaceArg,
    input: Annotated[str, typer.Option("--input", help="Image layer to align (any uint8 stack).")] = "montage",
    output: Annotated[str, typer.Option(help="Aligned layer to write.")] = "aligned",
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Align sections: coarse then dense flow, elastic mesh, blockwise render; QC under qc/."""
    from wiremap.align.stage import align_stage

    ws = Workspace.open(workspace)
    with console.status("aligning sections"):
        summary = align_stage(ws, input, output, overwrite=overwrite, **execution(ws, executor, workers, scheduler))
    console.print(
        f"aligned {summary['sections']} sections into layer {output!r}: mean match residual "
        f"{summary['residual_mean_px']:.3f} px; blank {summary['blank'] or 'none'}, "
        f"failed {summary['failed'] or 'none'}, "
        f"attention {summary['attention'] or 'none'} (table align_qc, plot qc/align_residuals.png)"
    )


def align_truth(workspace: WorkspaceArg) -> None:
    """Carry a synthetic workspace's ground truth into the aligned frame (groundtruth/aligned/...), so that
    stages run on `aligned` can be scored end to end."""
    from wiremap.align.truth import carry_truth

    ws = Workspace.open(workspace)
    with console.status("mapping ground truth into the aligned frame"):
        written = carry_truth(ws)
    console.print("wrote " + ", ".join(written))


def register(app: typer.Typer) -> None:
    app.command()(stitch)
    app.command()(align)
    app.command("align-truth")(align_truth)
