"""``wiremap import-volume`` and ``wiremap export-volume``: volumes in and out of a workspace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from wiremap.errors import InputError
from wiremap.interop import Progress as ProgressCallback
from wiremap.interop import export_volume, import_volume
from wiremap.roi import Roi
from wiremap.volume import Layer
from wiremap.workspace import Workspace

console = Console()


def parse_resolution(text: str) -> tuple[float, float, float]:
    """``"40,4,4"`` -> (40.0, 4.0, 4.0) in nm (z, y, x); a clear error on anything else."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--resolution {text!r}: expected Z,Y,X in nm, e.g. 40,4,4") from None
    if len(values) != 3:
        raise InputError(f"--resolution {text!r}: expected 3 values Z,Y,X in nm, e.g. 40,4,4")
    return values  # type: ignore[return-value]


@contextmanager
def section_progress(what: str) -> Iterator[ProgressCallback]:
    """A progress bar of sections copied, fed by the interop ``progress`` callback."""
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def import_volume_cmd(
    src: Annotated[
        str,
        typer.Argument(
            help="vol.npy, vol.npz[:key], stack.tif, slices/, vol.h5[:/path] or vol.zarr[:path]."
        ),
    ],
    workspace: Annotated[str, typer.Argument(help="Directory or URL of the workspace.")],
    layer: Annotated[str, typer.Option("--layer", help="Name of the new layer.")],
    resolution: Annotated[
        str, typer.Option("--resolution", help="Voxel size in nm, Z,Y,X (e.g. 40,4,4).")
    ],
    kind: Annotated[str, typer.Option("--kind", help="image or segmentation.")] = "image",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing layer.")
    ] = False,
    scales: Annotated[
        int, typer.Option("--scales", help="Pyramid levels to build (1 = full resolution only).")
    ] = 1,
) -> None:
    """Import a volume file (NumPy, TIFF, PNG/TIFF slices, HDF5, Zarr) as a layer."""
    ws = Workspace.open(workspace)
    with section_progress(f"importing {layer}") as progress:
        result = import_volume(
            ws,
            src,
            layer,
            resolution_nm=parse_resolution(resolution),
            kind=kind,
            overwrite=overwrite,
            num_scales=scales,
            progress=progress,
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    info = result.layer.info
    console.print(
        f"imported {result.source} as {info.kind} layer [bold]{info.name}[/bold]: "
        f"{info.dtype} {'×'.join(map(str, info.shape_zyx))} (z, y, x), {info.num_scales} scale(s)",
        highlight=False,
    )


def export_volume_cmd(
    workspace: Annotated[str, typer.Argument(help="Directory or URL of the workspace.")],
    name: Annotated[str, typer.Argument(help="Layer to export.")],
    dest: Annotated[
        str, typer.Argument(help="out.npy, out.tif or out.h5[:/path] (default path /data).")
    ],
    roi: Annotated[
        str | None, typer.Option("--roi", help="z0:z1,y0:y1,x0:x1 (default: whole layer).")
    ] = None,
) -> None:
    """Export a layer (or an ROI of it) to NumPy, TIFF or HDF5."""
    ws = Workspace.open(workspace)
    box = Roi.parse(roi) if roi else None
    with section_progress(f"exporting {name}") as progress:
        path = export_volume(Layer(ws, name), dest, box, progress=progress)
    console.print(f"exported layer [bold]{name}[/bold] to {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("import-volume")(import_volume_cmd)
    app.command("export-volume")(export_volume_cmd)
