"""The command line's shared option formats (``Z,Y,X`` triples) and shared options."""

from __future__ import annotations

from typing import Annotated, TypedDict

import typer

from wiremap.errors import InputError
from wiremap.workspace import Workspace


def parse_triple(text: str, what: str, cast: type = float) -> tuple:
    """``"30,4,4"`` -> ``(30.0, 4.0, 4.0)``; a clear error naming ``what`` otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise InputError(f"{what} must be three comma-separated values Z,Y,X, got {text!r}")
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        raise InputError(f"{what} must be numbers Z,Y,X, got {text!r}") from None
    if min(values) <= 0:
        raise InputError(f"{what} must be positive, got {text!r}")
    return values


def parse_shape(text: str, what: str = "--shape") -> tuple[int, int, int]:
    return parse_triple(text, what, int)  # type: ignore[return-value]


def parse_resolution(text: str, what: str = "--resolution") -> tuple[float, float, float]:
    return parse_triple(text, what, float)  # type: ignore[return-value]


# Arguments and options that many commands share, so that they read and behave alike.
WorkspaceArg = Annotated[str, typer.Argument(help="Directory or URL of the workspace.")]
ExecutorOpt = Annotated[str | None, typer.Option(help="serial, processes or dask (default: workspace config).")]
WorkersOpt = Annotated[int | None, typer.Option(help="Local worker processes (default: workspace config).")]
SchedulerOpt = Annotated[str | None, typer.Option(help="Dask scheduler address tcp://host:port.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Recompute from scratch, replacing existing outputs.")]


class Execution(TypedDict):
    """Executor keywords that every blockwise stage takes."""

    executor: str
    workers: int
    scheduler: str | None


def execution(ws: Workspace, executor: str | None, workers: int | None, scheduler: str | None) -> Execution:
    """Executor keywords for a stage: the command line wins, else the workspace's ``[execution]``."""
    config = ws.config.execution
    return {
        "executor": executor or config.executor,
        "workers": workers or config.workers,
        "scheduler": scheduler or config.scheduler,
    }
