"""``wiremap mesh``, ``skeletonize``, ``compartments`` and ``export-swc``: the shapes and parts of segments."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from wiremap.cli.options import ExecutorOpt as Executor
from wiremap.cli.options import OverwriteOpt as Overwrite
from wiremap.cli.options import SchedulerOpt as Scheduler
from wiremap.cli.options import WorkersOpt as Workers
from wiremap.cli.options import WorkspaceArg as Ws
from wiremap.cli.options import execution, parse_shape
from wiremap.workspace import Workspace

console = Console()

Seg = Annotated[str, typer.Option("--segmentation", help="Segmentation layer.")]
BlockShape = Annotated[str | None, typer.Option(help="Block size Z,Y,X in voxels (full resolution).")]
MeshDownsample = Annotated[str | None, typer.Option(help="Label downsampling Z,Y,X before meshing (default 1,2,2).")]
SkeletonDownsample = Annotated[
    str | None, typer.Option(help="Label downsampling Z,Y,X before skeletonizing (default 1,4,4).")
]


def _config(  # noqa: ANN202
    segmentation: str, block_shape: str | None, image: str = "aligned", **downsample: str | None
):
    """The stage config from CLI options; ``downsample`` is ``mesh_downsample=`` or ``skeleton_downsample=``."""
    from wiremap.morphology.stage import MorphologyConfig

    config = MorphologyConfig(segmentation=segmentation, image=image)
    if block_shape:
        config = replace(config, block_shape=parse_shape(block_shape, "--block-shape"))
    for field_name, value in downsample.items():
        if value:
            config = replace(config, **{field_name: parse_shape(value, "--downsample")})  # type: ignore[arg-type]
    return config


def _run(fn_name: str, workspace: str, config, executor, workers, scheduler, overwrite):  # noqa: ANN001, ANN202
    from wiremap.morphology import stage

    ws = Workspace.open(workspace)
    return getattr(stage, fn_name)(ws, config, overwrite=overwrite, **execution(ws, executor, workers, scheduler))


def _say(what: str, report) -> None:  # noqa: ANN001
    rate = report.voxels / max(sum(report.seconds.values()), 1e-9) / 1e6
    console.print(f"{what} {report.n_segments} segments ({rate:.2f} MVoxel/s)")
    console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))


def mesh(
    workspace: Ws,
    segmentation: Seg = "segmentation",
    block_shape: BlockShape = None,
    downsample: MeshDownsample = None,
    executor: Executor = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Multi-resolution meshes of every segment (Neuroglancer precomputed, next to the segmentation)."""
    config = _config(segmentation, block_shape, mesh_downsample=downsample)
    report = _run("run_mesh", workspace, config, executor, workers, scheduler, overwrite)
    _say("meshed", report)


def skeletonize(
    workspace: Ws,
    segmentation: Seg = "segmentation",
    block_shape: BlockShape = None,
    downsample: SkeletonDownsample = None,
    executor: Executor = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Skeletons with radii of every segment (kimimaro; precomputed, next to the segmentation)."""
    config = _config(segmentation, block_shape, skeleton_downsample=downsample)
    report = _run("run_skeletonize", workspace, config, executor, workers, scheduler, overwrite)
    _say("skeletonized", report)


def compartments(
    workspace: Ws,
    segmentation: Seg = "segmentation",
    image: Annotated[str, typer.Option(help="Image layer for the myelin mask.")] = "aligned",
    block_shape: BlockShape = None,
    executor: Executor = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    overwrite: Overwrite = False,
) -> None:
    """Myelin mask and soma/axon/dendrite/glia/cilium per skeleton node and voxel (after skeletonize)."""
    config = _config(segmentation, block_shape, image)
    report = _run("run_compartments", workspace, config, executor, workers, scheduler, overwrite)
    _say("labelled compartments of", report)


def export_swc(
    workspace: Ws,
    ids: Annotated[list[int], typer.Argument(help="Segment ids to export.")],
    segmentation: Seg = "segmentation",
    out: Annotated[Path, typer.Option("--out", help="Directory for <id>.swc files.")] = Path("."),
) -> None:
    """Write the skeletons of segments as SWC files (nm, compartment as SWC type)."""
    from wiremap.morphology.stage import read_skeleton
    from wiremap.morphology.swc import write_swc

    ws = Workspace.open(workspace)
    for segment_id in ids:
        path = write_swc(out / f"{segment_id}.swc", read_skeleton(ws, segment_id, segmentation), segment_id)
        console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command()(mesh)
    app.command()(skeletonize)
    app.command()(compartments)
    app.command(name="export-swc")(export_swc)
