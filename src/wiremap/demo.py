"""``make demo``: the whole pipeline, end to end, on embedded synthetic tissue.

Synthesises a small volume imaged as multi-beam tiles (with section defects),
then runs every stage through the same commands a user types: stitch and
align the tiles (scored against the simulator's true maps), then segment,
mesh, skeletonize, detect synapses and label compartments on the aligned
stack (scored against the synthetic answers carried into the aligned frame),
build the connectome and query it.
Prints the figures and where to look.  A few minutes on two cores.

    python -m wiremap.demo [--workspace demo_workspace] [--shape 16,512,512] [--seed 7]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wiremap.cli import main as wiremap
from wiremap.cli.options import parse_shape
from wiremap.errors import WiremapError
from wiremap.workspace import Workspace

console = Console()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default="demo_workspace", help="where to write (replaced if it exists)")
    parser.add_argument("--shape", default="16,512,512", help="synthetic volume Z,Y,X in voxels")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        return run_demo(Path(args.workspace), parse_shape(args.shape), args.seed)
    except WiremapError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2


class _Steps:
    """Runs ``wiremap`` commands in order, timing each, stopping at the first failure."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, title: str, *args: str) -> None:
        console.rule(f"[bold]{title}[/bold]: wiremap {' '.join(args)}")
        start = time.perf_counter()
        code = wiremap(list(args))
        self.seconds[title] = time.perf_counter() - start
        if code != 0:
            raise WiremapError(f"demo step {title!r} failed with exit code {code}")


def run_demo(path: Path, shape: tuple[int, int, int], seed: int) -> int:
    if path.exists():
        if not (path / "wiremap.toml").exists():
            raise WiremapError(f"{path} exists and is not a wiremap workspace; not replacing it")
        shutil.rmtree(path)
    ws_url = str(path)
    step = _Steps()
    started = time.perf_counter()
    step("synthesise tissue and tiles", "synth", ws_url, "--shape", ",".join(map(str, shape)), "--seed", str(seed))
    # Part 1, microscope to volume: tiles -> montage -> aligned, scored against the true section maps.
    step("stitch tiles into sections", "stitch", ws_url)
    step("align sections", "align", ws_url)
    step("score alignment", "evaluate", "alignment", ws_url)
    # Part 2, volume to connectome, on the aligned stack.  The synthetic truth lives in the tissue's own
    # frame; `align-truth` carries it through the exact maps into the aligned frame, so every score below
    # includes what stitching and alignment got wrong, as it would on real data.
    truth = "groundtruth/aligned/"
    step("carry the ground truth into the aligned frame", "align-truth", ws_url)
    step("segment neurons", "segment", ws_url)
    step(
        "score segmentation",
        "evaluate",
        "segmentation",
        ws_url,
        "--truth",
        truth + "neurons",
        "--skeletons",
        truth + "skeletons.parquet",
    )
    step("mesh", "mesh", ws_url)
    step("skeletonize", "skeletonize", ws_url)
    # synapses first: the compartment rules use their polarity (axons are presynaptic), then label each
    # synapse row's pre/post compartment
    step("detect synapses", "synapses", ws_url)
    step("compartments and myelin", "compartments", ws_url)
    step(
        "score compartments",
        "evaluate",
        "compartments",
        ws_url,
        "--truth",
        truth + "compartments",
        "--myelin-truth",
        truth + "myelin",
    )
    step(
        "score synapses",
        "evaluate",
        "synapses",
        ws_url,
        "--truth",
        truth + "synapses.parquet",
        "--truth-segmentation",
        truth + "neurons",
    )
    step("build the connectome", "connectome", "build", ws_url)
    step("excitatory neurons with the most inputs", "query", ws_url, "neurons", "--ei", "E", "--limit", "5")
    step("strongest connections", "query", ws_url, "adjacencies", "--limit", "5")
    step("prepare the viewer (URL below is live while `wiremap view` runs)", "view", ws_url, "--no-serve")
    step("status", "status", ws_url)
    _summary(Workspace.open(ws_url), step.seconds, time.perf_counter() - started)
    return 0


def _summary(ws: Workspace, seconds: dict[str, float], total: float) -> None:
    table = Table("figure", "value", title="wiremap demo: results against the synthetic ground truth")
    wanted = {
        "alignment": ("residual_mean_px", "residual_p95_px"),
        "segmentation": ("voi_split", "voi_merge", "arand", "erl_nm", "max_erl_nm"),
        "compartments": ("node_accuracy", "myelin_iou"),
        "synapses": (
            "detection_precision",
            "detection_recall",
            "detection_f1",
            "partner_f1",
            "ei_accuracy_synapse",
            "ei_accuracy_neuron",
        ),
    }
    for what, keys in wanted.items():
        key = f"evaluation/{what}.json"
        if not ws.exists(key):
            continue
        figures = ws.read_json(key)
        for name in keys:
            if name in figures:
                value = figures[name]
                table.add_row(f"{what}: {name}", f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + f"; total {total:.0f} s\n")
    root = Path(ws.url).resolve()
    console.print("[bold]Where to look[/bold]")
    console.print(f"  workspace:        {root}")
    console.print(f"  what is done:     .venv/bin/wiremap status {root}")
    console.print(f"  alignment QC:     {root / 'qc'} (residual plot, before/after overlays)")
    console.print(f"  scores:           {root / 'evaluation'}")
    console.print(f"  connectome:       {root / 'connectome.duckdb'} and {root / 'tables'}")
    console.print(f"  ask it:           .venv/bin/wiremap query {root} neurons --ei E")
    console.print(f"  browse it:        .venv/bin/wiremap view {root}   (serves it and prints the Neuroglancer URL)")


if __name__ == "__main__":
    sys.exit(main())
