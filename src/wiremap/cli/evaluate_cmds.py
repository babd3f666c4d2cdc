"""``wiremap evaluate …``: score a workspace's results against ground truth.

Scores are printed and saved under ``evaluation/<what>.json`` in the
workspace, so that a run's figures stay next to its outputs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wiremap import evaluate as ev
from wiremap.errors import InputError
from wiremap.roi import Roi
from wiremap.synth.skeleton_table import skeletons_from_table
from wiremap.volume import Layer
from wiremap.workspace import Workspace

console = Console()
evaluate_app = typer.Typer(
    help="Score results against ground truth (VOI, ARAND, ERL, F1, residuals).", no_args_is_help=True
)


def _report(ws: Workspace, what: str, figures: dict[str, Any]) -> None:
    table = Table("metric", "value", title=f"{what} vs ground truth")
    for key, value in figures.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    ws.write_json(f"evaluation/{what}.json", figures)


@evaluate_app.command("segmentation")
def segmentation(
    workspace: Annotated[str, typer.Argument(help="Workspace directory or URL.")],
    layer: Annotated[str, typer.Option(help="Segmentation layer to score.")] = "segmentation",
    truth: Annotated[str, typer.Option(help="Ground-truth segmentation layer.")] = "groundtruth/neurons",
    skeletons: Annotated[
        str | None, typer.Option(help="Ground-truth skeleton table for ERL ('' to skip).")
    ] = "groundtruth/skeletons.parquet",
    roi: Annotated[str | None, typer.Option(help="Score only z0:z1,y0:y1,x0:x1.")] = None,
    truth_pieces: Annotated[
        bool, typer.Option(help="Split truth ids into their connected pieces inside the scored region first.")
    ] = True,
) -> None:
    """VOI split/merge (bits), adapted Rand error and expected run length.

    A neuron that leaves the volume and comes back has one truth id but pieces
    that no segmentation of this volume can know belong together; by default
    the truth is therefore relabelled into 6-connected pieces before VOI and
    ARAND (ERL follows the skeletons, which cross the gaps).
    """
    ws = Workspace.open(workspace)
    pred_layer, truth_layer = Layer(ws, layer), Layer(ws, truth)
    if pred_layer.info.shape_zyx != truth_layer.info.shape_zyx:
        raise InputError(f"{layer} has shape {pred_layer.info.shape_zyx} but {truth} has {truth_layer.info.shape_zyx}")
    region = Roi.parse(roi) if roi else pred_layer.roi
    pred, gt = pred_layer.read(region), truth_layer.read(region)
    scored_truth = ev.truth_pieces(gt) if truth_pieces else gt
    table = ev.contingency_table(pred, scored_truth)
    voi = ev.variation_of_information(table=table)
    rand = ev.adapted_rand_error(table=table)
    figures: dict[str, Any] = {
        "voi_split": voi.split,
        "voi_merge": voi.merge,
        "voi_total": voi.total,
        "arand": rand.error,
        "rand_precision": rand.precision,
        "rand_recall": rand.recall,
        "truth_pieces": truth_pieces,
    }
    if skeletons:
        erl = ev.expected_run_length(
            skeletons_from_table(ws.read_table(skeletons)),
            pred,
            truth_layer.info.resolution_nm,
            offset_zyx=region.offset,
        )
        figures.update(erl_nm=erl.erl_nm, max_erl_nm=erl.max_erl_nm, merged_segments=len(erl.merged_segment_ids))
    _report(ws, "segmentation", figures)


@evaluate_app.command("synapses")
def synapses(
    workspace: Annotated[str, typer.Argument(help="Workspace directory or URL.")],
    table: Annotated[str, typer.Option(help="Predicted synapse table.")] = "synapses",
    truth: Annotated[str, typer.Option(help="Ground-truth synapse table.")] = "groundtruth/synapses.parquet",
    segmentation: Annotated[
        str | None, typer.Option(help="Segmentation whose ids the table uses (maps them to truth ids).")
    ] = "segmentation",
    truth_segmentation: Annotated[str, typer.Option(help="Ground-truth segmentation.")] = "groundtruth/neurons",
    distance_nm: Annotated[float, typer.Option(help="Match predictions within this distance.")] = 100.0,
) -> None:
    """Synapse detection and synaptic partner precision / recall / F1; E/I accuracy per synapse and neuron."""
    from wiremap.synapses.scores import score_workspace

    ws = Workspace.open(workspace)
    figures = score_workspace(
        ws, segmentation, distance_nm, table=table, truth=truth, truth_segmentation=truth_segmentation
    )
    _report(ws, "synapses", figures)


@evaluate_app.command("compartments")
def compartments(
    workspace: Annotated[str, typer.Argument(help="Workspace directory or URL.")],
    segmentation: Annotated[str, typer.Option(help="Segmentation the skeletons were made from.")] = "segmentation",
    truth: Annotated[str, typer.Option(help="Ground-truth compartment layer.")] = "groundtruth/compartments",
    myelin: Annotated[str, typer.Option(help="Myelin mask layer.")] = "myelin",
    myelin_truth: Annotated[str, typer.Option(help="Ground-truth myelin layer.")] = "groundtruth/myelin",
) -> None:
    """Compartment accuracy per skeleton node (soma, axon, dendrite, glia, cilium), what is taken for what,
    and myelin IoU."""
    from wiremap.morphology.scores import score_workspace

    ws = Workspace.open(workspace)
    figures = score_workspace(ws, segmentation=segmentation, truth=truth, myelin=myelin, myelin_truth=myelin_truth)
    confusion = figures.pop("confusion")
    _report(ws, "compartments", figures | {f"nodes {pair}": n for pair, n in confusion.items()})


@evaluate_app.command("alignment")
def alignment(workspace: Annotated[str, typer.Argument(help="Workspace directory or URL (synthetic tiles).")]) -> None:
    """Residual (px) of the aligned stack against the simulator's true section maps."""
    from wiremap.align.score import score_alignment

    ws = Workspace.open(workspace)
    overall, per_section = score_alignment(ws)
    ws.write_table("evaluation/alignment_sections.parquet", per_section)
    worst = per_section.sort_values("p95_px", ascending=False).head(3)
    _report(
        ws,
        "alignment",
        {
            "residual_mean_px": overall.mean_px,
            "residual_p95_px": overall.p95_px,
            "residual_max_px": overall.max_px,
            "points": overall.n,
            "sections_scored": len(per_section),
            "worst_sections": ", ".join(f"{int(r.section)} ({r.p95_px:.2f})" for r in worst.itertuples()),
        },
    )


def register(app: typer.Typer) -> None:
    app.add_typer(evaluate_app, name="evaluate")
