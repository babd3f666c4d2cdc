"""The ``wiremap`` command line: one sub-command per stage.

Each module in ``COMMAND_MODULES`` defines ``register(app)`` adding its
commands.  User mistakes (``WiremapError``) become one red line on stderr and
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from wiremap.errors import WiremapError

COMMAND_MODULES = (
    "wiremap.cli.workspace_cmds",
    "wiremap.cli.volume_cmds",
    "wiremap.cli.synth_cmds",
    "wiremap.cli.align_cmds",
    "wiremap.cli.segment_cmds",
    "wiremap.cli.evaluate_cmds",
    "wiremap.cli.connectome_cmds",
    "wiremap.cli.morphology_cmds",
    "wiremap.cli.synapses_cmds",
)

app = typer.Typer(
    name="wiremap",
    help="From serial-section EM tiles to a queryable, browsable connectome.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wiremap`` script; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except WiremapError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except ValidationError as exc:  # a config built from command-line values
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        err_console.print(f"[red]error:[/red] {where}: {err['msg']}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]aborted[/red]")
        return 130
    except typer.TyperException as exc:  # usage errors: unknown command, bad option value
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
