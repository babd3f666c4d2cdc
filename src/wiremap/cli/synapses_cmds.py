"""``wiremap synapses``: synapses with partners, size and E/I, as a table and an annotation layer."""

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


def synapses(
    workspace: WorkspaceArg,
    image: Annotated[str, typer.Option(help="Image layer to look for synapses in.")] = "aligned",
    segmentation: Annotated[str, typer.Option(help="Segmentation layer the partners are taken from.")] = "segmentation",
    compartments: Annotated[str, typer.Option(help="Compartment layer (used when it exists).")] = "compartments",
    model: Annotated[str | None, typer.Option(help="Weight file (default: the shipped synapses_sstem.pt).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Cleft probability threshold (default 0.4).")] = None,
    min_confidence: Annotated[
        float | None, typer.Option(help="Minimum mean cleft probability of a synapse (default 0.8).")
    ] = None,
    min_volume_nm3: Annotated[
        float | None, typer.Option(help="Smaller cleft components are noise (default 3e5).")
    ] = None,
    min_sections: Annotated[
        int | None, typer.Option(help="Clefts seen in fewer sections are dropped (default 2).")
    ] = None,
    max_extent_nm: Annotated[
        float | None, typer.Option(help="Longer cleft components are cut into pieces this long (default 600).")
    ] = None,
    min_core_nm3: Annotated[
        float | None, typer.Option(help="Minimum volume of a synapse's confident voxels, p > 0.9 (default 2e5).")
    ] = None,
    block_shape: Annotated[str | None, typer.Option(help="Block size Z,Y,X in voxels.")] = None,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
    evaluate: Annotated[bool, typer.Option(help="Print figures against groundtruth/ (synthetic workspaces).")] = False,
) -> None:
    """Detect synapses, assign pre/post partners, call excitatory/inhibitory (tables/synapses, layers/synapses)."""
    from wiremap.synapses.stage import SynapseConfig, run_synapses

    ws = Workspace.open(workspace)
    fields: dict[str, object] = dict(image=image, segmentation=segmentation, compartments=compartments, model=model)
    tuning = dict(
        threshold=threshold,
        min_confidence=min_confidence,
        min_volume_nm3=min_volume_nm3,
        min_sections=min_sections,
        max_extent_nm=max_extent_nm,
        min_core_nm3=min_core_nm3,
    )
    fields |= {k: v for k, v in tuning.items() if v is not None}  # the rest: SynapseConfig's defaults
    if block_shape:
        fields["block_shape"] = parse_shape(block_shape, "--block-shape")
    config = SynapseConfig(**fields)  # type: ignore[arg-type]
    report = run_synapses(ws, config, overwrite=overwrite, **execution(ws, executor, workers, scheduler))
    console.print(
        f"{report.n_synapses} synapses ({report.n_excitatory} excitatory) from {report.n_candidates} clefts; "
        f"E/I of {report.n_neurons} presynaptic segments (tables synapses, synapse_ei_neurons; layer synapses)"
    )
    if evaluate:
        if not ws.has_table("groundtruth/synapses.parquet"):
            console.print("[yellow]no groundtruth/synapses in this workspace: nothing to evaluate[/yellow]")
            return
        from wiremap.cli.evaluate_cmds import synapses as evaluate_synapses

        evaluate_synapses(workspace, segmentation=segmentation)


def register(app: typer.Typer) -> None:
    app.command()(synapses)
