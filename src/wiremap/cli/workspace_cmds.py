"""``wiremap init`` and ``wiremap status``: create a workspace and see what is in it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from wiremap.volume import Layer
from wiremap.workspace import Workspace

console = Console()


def init(
    workspace: Annotated[str, typer.Argument(help="Directory or URL (file://, s3://, gs://).")],
    name: Annotated[str | None, typer.Option(help="Human-readable dataset name.")] = None,
) -> None:
    """Create an empty workspace."""
    ws = Workspace.create(workspace, name=name)
    console.print(f"created workspace [bold]{ws.config.name}[/bold] at {ws.url}")


def status(workspace: Annotated[str, typer.Argument(help="Directory or URL of the workspace.")]) -> None:
    """List layers, tables and which stages are done, stale or missing."""
    ws = Workspace.open(workspace)
    console.print(f"workspace [bold]{ws.config.name}[/bold] at {ws.url}")
    layers = Table("layer", "kind", "dtype", "shape (z, y, x)", "resolution nm", "scales", title="layers")
    for name in ws.layers():
        raw_info = ws.read_json(f"{ws.layer_key(name)}/info")
        if "scales" not in raw_info:  # annotations (synapses), not a volume
            layers.add_row(
                name, str(raw_info.get("annotation_type", raw_info.get("@type", "?"))).lower(), "", "", "", ""
            )
            continue
        info = Layer(ws, name).info
        layers.add_row(
            name,
            info.kind,
            info.dtype,
            "×".join(map(str, info.shape_zyx)),
            "×".join(f"{r:g}" for r in info.resolution_nm),
            str(info.num_scales),
        )
    console.print(layers)
    tables = Table("table", "rows", title="tables")
    for name in ws.tables():
        rows = ws.read_table(name, columns=[]).shape[0]
        tables.add_row(name, str(rows))
    console.print(tables)
    stages = Table("stage", "state", "finished", "note", title="stages")
    colour = {"done": "green", "stale": "yellow", "missing": "dim"}
    for st in ws.stage_status():
        stages.add_row(st.stage, f"[{colour[st.state]}]{st.state}", st.finished or "", st.reason)
    console.print(stages)
    for table_name, axis in (("montage_qc", "section"), ("align_qc", "z")):
        if ws.has_table(table_name):
            qc = ws.read_table(table_name)
            flagged = qc.loc[qc["attention"], axis].tolist()
            console.print(
                f"{table_name}: {len(qc)} sections, {len(flagged)} flagged for attention"
                + (f": {flagged}" if flagged else "")
            )
    for key in ws.list("evaluation/"):
        if key.endswith(".json"):
            console.print(f"scores in {key}")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(status)
