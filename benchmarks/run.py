"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/results/<name>.json``.

Each benchmark module exposes ``run(quick: bool) -> dict`` returning JSON-able
figures, with its baseline measured in the same run so that ratios, not raw
seconds, carry the claims (machines are noisy).

    python -m benchmarks.run              # full sizes (make bench)
    python -m benchmarks.run --quick      # small sizes, a smoke run
    python -m benchmarks.run engine synth # only these
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from wiremap import __version__

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def _flatten(prefix: str, value: object, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, rows)
    elif isinstance(value, float):
        rows.append((prefix, f"{value:.4g}"))
    else:
        rows.append((prefix, str(value)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        console.rule(f"benchmark {name}")
        start = time.perf_counter()
        figures = module.run(quick=args.quick)
        record = {
            "benchmark": name,
            "quick": args.quick,
            "wiremap_version": __version__,
            "machine": {
                "cpus": psutil.cpu_count(),
                "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "seconds": round(time.perf_counter() - start, 2),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "results": figures,
        }
        suffix = "-quick" if args.quick else ""
        (RESULTS / f"{name}{suffix}.json").write_text(json.dumps(record, indent=2))
        table = Table("figure", "value", title=name)
        rows: list[tuple[str, str]] = []
        _flatten("", figures, rows)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
