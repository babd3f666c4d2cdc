"""Real EM crops through every volume stage from the command line, as a lab with its own data would run them.

Synthetic tissue cannot show everything real images do (``wiremap mesh`` once
aborted the process on real 4.6 nm ssTEM), so small real crops from
``tests/data`` (provenance in its README) go import -> segment -> mesh ->
skeletonize -> compartments -> synapses -> connectome -> viewer state -> SWC,
and each stage must finish and leave its outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wiremap.cli import main as cli_main
from wiremap.volume import Layer
from wiremap.workspace import Workspace

DATA = Path(__file__).parent / "data"
CROPS = {
    # ssTEM at the VNC volume's 4.6 nm pixels: not a power-of-two lattice, as many microscopes give
    "sstem": (np.load(DATA / "isbi2012_align_crops.npz")["sections"], "50,4.6,4.6"),
    "fibsem": (np.load(DATA / "gala_fibsem_test_crop.npz")["image"], "10,10,10"),
}


@pytest.mark.parametrize("name", sorted(CROPS))
def test_every_volume_stage_runs_on_a_real_crop(tmp_path, name):
    image, resolution = CROPS[name]
    np.save(tmp_path / "crop.npy", image)
    url = str(tmp_path / "ws")
    assert cli_main(["init", url]) == 0
    assert (
        cli_main(["import-volume", str(tmp_path / "crop.npy"), url, "--layer", "aligned", "--resolution", resolution])
        == 0
    )
    serial = ["--executor", "serial"]
    for stage in ("segment", "mesh", "skeletonize", "compartments", "synapses"):
        assert cli_main([stage, url, *serial]) == 0, stage
    assert cli_main(["connectome", "build", url]) == 0
    assert cli_main(["view", url, "--no-serve"]) == 0
    ws = Workspace.open(url)
    segmentation = Layer(ws, "segmentation").read()
    assert segmentation.shape == image.shape and len(np.unique(segmentation)) > 5
    nodes = ws.read_table("skeleton_nodes")
    assert len(nodes) > 0 and set(nodes["compartment"].unique()) <= {0, 1, 2, 3, 4, 5}
    assert any(k.endswith(".index") for k in ws.list(f"{ws.layer_key('segmentation')}/mesh/"))
    segment = int(nodes["id"].iloc[0])
    assert cli_main(["export-swc", url, str(segment), "--out", str(tmp_path / "swc")]) == 0
    assert (tmp_path / "swc" / f"{segment}.swc").stat().st_size > 0
