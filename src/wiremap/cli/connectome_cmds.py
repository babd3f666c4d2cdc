"""``wiremap connectome …``, ``wiremap query``, ``wiremap serve`` and ``wiremap view``."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from wiremap.connectome import (
    Connectome,
    NeuronCriteria,
    build,
    fetch_adjacencies,
    fetch_downstream,
    fetch_neurons,
    fetch_shortest_path,
    fetch_synapses,
    fetch_upstream,
    import_groundtruth,
    versions,
)
from wiremap.errors import InputError
from wiremap.workspace import Workspace

console = Console()
Ws = Annotated[str, typer.Argument(help="Directory or URL of the workspace.")]
Version = Annotated[int | None, typer.Option("--version", "-v", help="Connectome version (default: latest).")]

connectome_app = typer.Typer(help="Build, import, export and list connectome versions.", no_args_is_help=True)
query_app = typer.Typer(help="Ask a connectome questions (neuPrint-style).", no_args_is_help=True)


def _summary(record: dict[str, Any]) -> None:
    console.print(
        f"connectome [bold]v{record['version']}[/bold] ({record['source']}): "
        f"{record['n_neurons']} neurons, {record['n_synapses']} synapses, "
        f"{record['n_edges']} edges in {record.get('build_seconds', 0):.1f} s"
    )


@connectome_app.command("build")
def build_cmd(workspace: Ws, note: Annotated[str, typer.Option(help="Free text kept with the version.")] = "") -> None:
    """Build the next version from tables/synapses (and tables/neurons if present)."""
    _summary(build(Workspace.open(workspace), note=note))


@connectome_app.command("import")
def import_cmd(
    workspace: Ws,
    synapses: Annotated[str | None, typer.Option(help="Synapse table (.csv/.tsv/.parquet).")] = None,
    neurons: Annotated[str | None, typer.Option(help="Neuron table (.csv/.tsv/.parquet).")] = None,
    from_groundtruth: Annotated[bool, typer.Option(help="Use the synthetic ground truth.")] = False,
    note: Annotated[str, typer.Option(help="Free text kept with the version.")] = "",
) -> None:
    """Build a version from external tables or from synthetic ground truth."""
    from wiremap.connectome.interop import import_tables

    ws = Workspace.open(workspace)
    if from_groundtruth == (synapses is not None):
        raise InputError("give either --synapses FILE (optionally --neurons FILE) or --from-groundtruth")
    if from_groundtruth:
        _summary(import_groundtruth(ws, note=note))
    else:
        _summary(import_tables(ws, synapses=synapses, neurons=neurons, note=note))  # type: ignore[arg-type]


@connectome_app.command("versions")
def versions_cmd(workspace: Ws) -> None:
    """List the versions built in a workspace."""
    _print(versions(Workspace.open(workspace)), "table")


@connectome_app.command("export")
def export_cmd(
    workspace: Ws,
    fmt: Annotated[str, typer.Option("--format", help="neuprint (a directory), cave or graphml (a file).")],
    out: Annotated[str, typer.Option(help="Output directory or file.")],
    version: Version = None,
) -> None:
    """Export a version to neuPrint CSVs, a CAVE synapse table or GraphML."""
    from wiremap.connectome.interop import export

    with Connectome(workspace, version=version) as client:
        files = export(client, fmt, out)
    for f in files:
        console.print(f"wrote {f}")


def _print(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        sys.stdout.write(df.to_json(orient="records") + "\n")
    elif fmt == "table":
        table = Table(*map(str, df.columns))
        for row in df.itertuples(index=False):
            table.add_row(*("" if isinstance(v, float) and v != v else str(v) for v in row))
        console.print(table)
        console.print(f"{len(df)} rows")
    else:
        raise InputError(f"unknown output format {fmt!r} (use table, csv or json)")


Fmt = Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")]
Limit = Annotated[int | None, typer.Option(help="At most this many rows.")]
Ids = Annotated[list[int] | None, typer.Option(help="Neuron id (repeat for several).")]


@query_app.callback()
def query_main(ctx: typer.Context, workspace: Ws, version: Version = None) -> None:
    """wiremap query WS <question> [options]"""
    ctx.obj = {"workspace": workspace, "version": version}


def _client(ctx: typer.Context) -> Connectome:
    return Connectome(ctx.obj["workspace"], version=ctx.obj["version"])


def _criteria(
    ids: list[int] | None,
    type_: str | None,
    regex: bool = False,
    ei: str | None = None,
    min_pre: int | None = None,
    min_post: int | None = None,
) -> NeuronCriteria | None:
    if not ids and type_ is None and ei is None and min_pre is None and min_post is None:
        return None
    return NeuronCriteria(bodyId=ids or None, type=type_, regex=regex, ei=ei, min_pre=min_pre, min_post=min_post)


@query_app.command("neurons")
def q_neurons(
    ctx: typer.Context,
    id: Ids = None,  # noqa: A002
    type: Annotated[str | None, typer.Option(help="Cell type (exact, or a regex with --regex).")] = None,  # noqa: A002
    regex: bool = False,
    ei: Annotated[str | None, typer.Option(help="E or I.")] = None,
    min_pre: Annotated[int | None, typer.Option(help="At least this many output synapses.")] = None,
    min_post: Annotated[int | None, typer.Option(help="At least this many input synapses.")] = None,
    limit: Limit = None,
    fmt: Fmt = "table",
) -> None:
    """Neurons matching the filters."""
    with _client(ctx) as c:
        _print(
            fetch_neurons(_criteria(id, type, regex, ei, min_pre, min_post), limit=limit, client=c),
            fmt,
        )


@query_app.command("synapses")
def q_synapses(
    ctx: typer.Context,
    pre: Ids = None,
    post: Ids = None,
    pre_type: Annotated[str | None, typer.Option()] = None,
    post_type: Annotated[str | None, typer.Option()] = None,
    ei: Annotated[str | None, typer.Option(help="E or I.")] = None,
    post_compartment: Annotated[str | None, typer.Option(help="dendrite, spine, soma or axon.")] = None,
    limit: Limit = None,
    fmt: Fmt = "table",
) -> None:
    """Synapses between neurons (every synapse onto a soma: --post ID --post-compartment soma)."""
    with _client(ctx) as c:
        df = fetch_synapses(
            _criteria(pre, pre_type),
            _criteria(post, post_type),
            ei=ei,
            post_compartment=post_compartment,
            limit=limit,
            client=c,
        )
        _print(df, fmt)


@query_app.command("adjacencies")
def q_adjacencies(
    ctx: typer.Context,
    source: Ids = None,
    target: Ids = None,
    source_type: Annotated[str | None, typer.Option()] = None,
    target_type: Annotated[str | None, typer.Option()] = None,
    min_weight: Annotated[int, typer.Option(help="At least this many synapses.")] = 1,
    limit: Limit = None,
    fmt: Fmt = "table",
) -> None:
    """Connections between two sets of neurons, strongest first."""
    with _client(ctx) as c:
        df = fetch_adjacencies(
            _criteria(source, source_type),
            _criteria(target, target_type),
            min_weight,
            limit=limit,
            client=c,
        )
        _print(df, fmt)


@query_app.command("upstream")
def q_upstream(ctx: typer.Context, neuron: int, min_weight: int = 1, limit: Limit = None, fmt: Fmt = "table") -> None:
    """Input partners of a neuron, strongest first."""
    with _client(ctx) as c:
        _print(fetch_upstream(neuron, min_weight=min_weight, limit=limit, client=c), fmt)


@query_app.command("downstream")
def q_downstream(ctx: typer.Context, neuron: int, min_weight: int = 1, limit: Limit = None, fmt: Fmt = "table") -> None:
    """Output partners of a neuron, strongest first."""
    with _client(ctx) as c:
        _print(fetch_downstream(neuron, min_weight=min_weight, limit=limit, client=c), fmt)


@query_app.command("path")
def q_path(ctx: typer.Context, source: int, target: int, min_weight: int = 1, fmt: Fmt = "table") -> None:
    """Strongest path (edge cost 1/weight) from one neuron to another."""
    with _client(ctx) as c:
        _print(fetch_shortest_path(source, target, min_weight=min_weight, client=c), fmt)


def serve(
    workspace: Ws,
    host: Annotated[str, typer.Option(help="Address to bind (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    version: Version = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="WIREMAP_API_TOKEN", help="Allow edits with this bearer token."),
    ] = None,
    max_limit: Annotated[int, typer.Option(help="Largest page size.")] = 10_000,
) -> None:
    """Serve the connectome queries over HTTP (JSON); read-only unless --token is given."""
    from wiremap.connectome.api import serve as run

    console.print(
        f"serving connectome of {workspace} at http://{host}:{port}/docs "
        f"({'writable with token' if token else 'read-only'})"
    )
    run(workspace, host=host, port=port, version=version, token=token, max_limit=max_limit)


def view(
    workspace: Ws,
    neuron: Annotated[
        list[int] | None, typer.Option(help="Show this neuron's inputs and outputs (repeatable).")
    ] = None,
    version: Version = None,
    port: Annotated[int, typer.Option(help="Port of the viewer (0: any free one).")] = 0,
    layout: Annotated[str, typer.Option(help="xy, 3d, 4panel, xy-3d, …")] = "4panel",
    max_synapses: Annotated[int, typer.Option(help="Synapses in the overview layer.")] = 20_000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Prepare, print the URL and exit.")] = False,
    screenshot: Annotated[
        str | None, typer.Option(help="Save a PNG of the view (headless Chromium), then exit.")
    ] = None,
) -> None:
    """Open the workspace in Neuroglancer (served locally) and print the URL."""
    from wiremap.view import open_view
    from wiremap.view import screenshot as take_screenshot

    v = open_view(
        workspace,
        neurons=neuron or [],
        version=version,
        port=port,
        layout=layout,
        max_synapses=max_synapses,
    )
    print(v.url, flush=True)
    if screenshot:
        try:
            console.print(f"wrote {take_screenshot(v.url, screenshot)}")
        finally:
            v.stop()
        return
    if no_serve:
        v.stop()
        return
    console.print("serving; press Ctrl-C to stop", style="dim")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        v.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(connectome_app, name="connectome")
    app.add_typer(query_app, name="query")
    app.command()(serve)
    app.command()(view)
