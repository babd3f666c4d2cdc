"""``wiremap synth``: synthetic tissue with known answers, imaged like a multi-beam SEM."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from wiremap.cli.options import parse_resolution, parse_shape
from wiremap.workspace import Workspace

console = Console()


def synth(
    workspace: Annotated[str, typer.Argument(help="Workspace directory or URL (created if missing).")],
    shape: Annotated[str, typer.Option(help="Volume size in voxels Z,Y,X.")] = "32,512,512",
    resolution: Annotated[str | None, typer.Option(help="Voxel size in nm Z,Y,X (default: the preset's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same output.")] = 0,
    preset: Annotated[
        str, typer.Option(help="sstem (4x4x30 nm serial sections) or fibsem (8 nm isotropic).")
    ] = "sstem",
    acquisition: Annotated[
        bool, typer.Option(help="Simulate multi-beam tiles (else write `aligned` directly).")
    ] = True,
    defects: Annotated[bool, typer.Option(help="Blank sections, folds, cracks and debris.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace synthetic layers that already exist.")] = False,
) -> None:
    """Synthesise EM tissue with ground truth (neurons, synapses, compartments, skeletons)."""
    from wiremap.synth.stage import SynthConfig, run_synth

    config = SynthConfig(
        shape_zyx=parse_shape(shape),
        resolution_nm=parse_resolution(resolution) if resolution else None,
        seed=seed,
        preset=preset,
        acquisition=acquisition,
        defects=defects,
    )
    ws = Workspace.create(workspace, exist_ok=True)
    with console.status("synthesising") as status:
        report = run_synth(ws, config, overwrite=overwrite, progress=lambda msg: status.update(msg))
    z, y, x = report.shape_zyx
    console.print(
        f"synthesised {z}×{y}×{x} voxels at {'×'.join(f'{r:g}' for r in report.resolution_nm)} nm: "
        f"{report.n_neurons} neurons, {report.n_glia} glia, {report.n_synapses} synapses "
        f"({report.excitatory_fraction:.0%} excitatory), {report.n_tiles} tiles"
    )
    console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))


def register(app: typer.Typer) -> None:
    app.command()(synth)
