"""Figures of the simulated multi-beam acquisition for the README.

    .venv/bin/python scripts/make_acquisition_figures.py [--out docs]

Writes ``acquisition_tile.png`` (one beam tile as the microscope saw it,
beside the clean tissue it came from) and ``acquisition_layout.png`` (the
61-beam hexagonal field of view: nominal tile outlines over the section).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from wiremap.synth.acquisition import read_manifest, read_tile
from wiremap.synth.stage import SynthConfig, run_synth
from wiremap.volume import open_layer
from wiremap.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs", type=Path)
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(f"{tmp}/ws")
        run_synth(ws, SynthConfig(shape_zyx=(4, 1024, 1024), seed=3, pyramid_scales=1))
        section = open_layer(ws, "groundtruth/image").read()[1]
        manifest = read_manifest(ws)
        first = manifest[(manifest["section"] == 1) & (manifest["scan"] == 0)]
        centre = first[first["beam"] == 0].iloc[0]
        tile = read_tile(ws, centre["key"])

    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(section, cmap="gray", vmin=0, vmax=255)
    for row in first.itertuples():
        ax.add_patch(Rectangle((row.x - 0.5, row.y - 0.5), row.width, row.height, fill=False, lw=0.8, ec="#ffcc00"))
    ax.set_title(f"61-beam field of view: {len(first)} tiles, nominal positions, section 1")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.out / "acquisition_layout.png", dpi=110)

    y0, x0 = int(round(centre["y"])), int(round(centre["x"]))
    clean = section[max(y0, 0) : y0 + tile.shape[0], max(x0, 0) : x0 + tile.shape[1]]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    axes[0].imshow(clean, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("clean tissue at the nominal position")
    axes[1].imshow(tile, cmap="gray", vmin=0, vmax=255)
    axes[1].set_title("centre beam tile (warp, jitter, lens, gain, noise)")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.out / "acquisition_tile.png", dpi=110)


if __name__ == "__main__":
    main()
