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
    threshold: Annotated[float, typer.Option(help="Cleft probability threshold.")] = 0.5,
    min_confidence: Annotated[float, typer.Option(help="Minimum mean cleft probability of a synapse.")] = 0.7,
    min_volume_nm3: Annotated[
        float, typer.Option(help="Smaller cleft components are noise (3e5 synthetic, 1e6 for 50 nm ssTEM).")
    ] = 3.0e5,
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
    fields: dict[str, object] = dict(
        image=image,
        segmentation=segmentation,
        compartments=compartments,
        model=model,
        threshold=threshold,
        min_confidence=min_confidence,
        min_volume_nm3=min_volume_nm3,
    )
    if block_shape:
        fields["block_shape"] = parse_shape(block_shape, "--block-shape")
    config = SynapseConfig(**fields)  # type: ignore[arg-type]
    report = run_synapses(ws, config, overwrite=overwrite, **execution(ws, executor, workers, scheduler))
    console.print(
        f"{report.n_synapses} synapses ({report.n_excitatory} excitatory) from {report.n_candidates} clefts; "
        f"E/I of {report.n_neurons} presynaptic segments (tables synapses, synapse_ei_neurons; layer synapses)"
    )
    if evaluate:
        from wiremap.synapses.scores import score_workspace

        if not ws.has_table("groundtruth/synapses.parquet"):
            console.print("[yellow]no groundtruth/synapses in this workspace: nothing to evaluate[/yellow]")
            return
        s = score_workspace(ws, segmentation)
        console.print(
            f"detection P/R/F1 {s['detection_precision']:.3f}/{s['detection_recall']:.3f}/{s['detection_f1']:.3f}, "
            f"partner F1 {s['partner_f1']:.3f}, E/I accuracy {s['ei_accuracy_synapse']:.3f} per synapse, "
            f"{s['ei_accuracy_neuron']:.3f} per neuron ({s['n_pred']} found, {s['n_true']} true)"
        )


def register(app: typer.Typer) -> None:
    app.command()(synapses)
