"""The ``synth`` stage: synthetic tissue, its EM image, its acquisition, into a workspace.

What it writes (``groundtruth/`` holds the answers every other stage is scored on):

    groundtruth/image            clean EM volume (uint8), as a perfect alignment would give it
    groundtruth/neurons          cell segmentation (uint64; neurons and glia; 0 = extracellular)
    groundtruth/compartments     Compartment codes (uint32 labels: soma 1, axon 2, dendrite 3, glia 4, cilium 5)
    groundtruth/myelin           myelin sheath mask (uint32 labels 0/1)
    groundtruth/mitochondria     mitochondrion instances (uint32)
    groundtruth/synapse_clefts   cleft voxels labelled with the synapse id (uint32)
    groundtruth/cells.parquet    cell table      (see ``wiremap.synth.model.Tissue``)
    groundtruth/synapses.parquet synapse table
    groundtruth/skeletons.parquet one row per skeleton node: id, node, parent, z_nm, y_nm, x_nm,
                                 radius_nm, compartment, in_volume
    layers/aligned               the clean image again, when acquisition is switched off
    tiles/, groundtruth/acquisition/   the simulated microscope's tiles and true transforms
                                 (``wiremap.synth.acquisition``), when acquisition is on
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from wiremap.config import StrictModel
from wiremap.errors import InputError, LayerExistsError
from wiremap.synth.acquisition import AcquisitionConfig, simulate_acquisition, write_acquisition
from wiremap.synth.model import Tissue
from wiremap.synth.multibeam import plan_layout
from wiremap.synth.render import RenderConfig, render_em
from wiremap.synth.skeleton_table import skeleton_table
from wiremap.synth.tissue import PRESETS, TissueConfig, generate_tissue
from wiremap.volume import Layer, write_volume
from wiremap.workspace import Workspace

PRESET_RESOLUTIONS: dict[str, tuple[float, float, float]] = {
    "sstem": (30.0, 4.0, 4.0),
    "fibsem": (8.0, 8.0, 8.0),
}

GROUNDTRUTH_LAYERS = (
    "groundtruth/image",
    "groundtruth/neurons",
    "groundtruth/compartments",
    "groundtruth/myelin",
    "groundtruth/mitochondria",
    "groundtruth/synapse_clefts",
)


class SynthConfig(StrictModel):
    """Parameters of one ``wiremap synth`` run."""

    shape_zyx: tuple[int, int, int] = (32, 512, 512)  # voxels
    resolution_nm: tuple[float, float, float] | None = None  # None: the preset's resolution
    seed: int = 0  # same seed, same tissue, image and tiles
    preset: str = Field("sstem", pattern="^(sstem|fibsem)$")  # serial-section SEM or FIB-SEM
    acquisition: bool = True  # simulate multi-beam tiles and section defects
    defects: bool = True  # blank sections, folds, cracks, debris at AcquisitionConfig's rates
    pyramid_scales: int = Field(3, ge=1, le=8)  # downsampled scales of the image layers

    @property
    def resolution(self) -> tuple[float, float, float]:
        return self.resolution_nm or PRESET_RESOLUTIONS[self.preset]


@dataclass
class SynthReport:
    """What ``run_synth`` made, for the CLI and the demo."""

    shape_zyx: tuple[int, int, int]
    resolution_nm: tuple[float, float, float]
    n_neurons: int
    n_glia: int
    n_synapses: int
    excitatory_fraction: float
    n_tiles: int
    seconds: dict[str, float] = field(default_factory=dict)


def beams_for_section(section_yx: tuple[int, int], min_overlap_px: float = 7.0) -> int:
    """The most beams (61, 37, 19, 7 or 1) whose tiles still overlap by ``min_overlap_px``.

    One multi-beam field of view covers a synthetic section, so a small section
    imaged with 61 beams gets tiles too small for their 8 % overlaps to be
    matched; real sections are far larger than one field of view.
    """
    defaults = AcquisitionConfig()
    for beams in (61, 37, 19, 7):
        layout = plan_layout(
            (int(section_yx[0]), int(section_yx[1])), beams, defaults.overlap, defaults.tile_aspect, None, 0.0
        )
        if min(layout.tile_shape) * defaults.overlap >= min_overlap_px:
            return beams
    return 1


def _outputs(config: SynthConfig) -> list[str]:
    outputs = list(GROUNDTRUTH_LAYERS)
    if not config.acquisition:
        outputs.append("aligned")
    return outputs


def run_synth(
    ws: Workspace,
    config: SynthConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SynthReport:
    """Generate, render and (optionally) acquire synthetic tissue into ``ws``."""
    say = progress or (lambda _msg: None)
    if min(config.shape_zyx) < 1:
        raise InputError(f"synth shape must be positive, got {config.shape_zyx}")
    existing = [name for name in _outputs(config) if ws.has_layer(name)]
    if existing and not overwrite:
        raise LayerExistsError(f"workspace {ws.url} already has {', '.join(existing)} (use --overwrite)")
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    say("growing neurons, glia and synapses")
    tissue_config = TissueConfig(
        **{
            **PRESETS[config.preset],
            "shape_zyx": config.shape_zyx,
            "resolution_nm": config.resolution,
            "seed": config.seed,
        }
    )
    tissue = generate_tissue(tissue_config)
    seconds["geometry"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("rendering EM")
    image = render_em(tissue, RenderConfig.preset(config.preset), seed=config.seed)  # type: ignore[arg-type]
    seconds["render"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("writing ground truth")
    _write_groundtruth(ws, tissue, image, config, overwrite=overwrite)
    seconds["write"] = time.perf_counter() - t0

    n_tiles = 0
    if config.acquisition:
        t0 = time.perf_counter()
        say("imaging sections as multi-beam tiles")
        acq_config = AcquisitionConfig(defects=config.defects, beams=beams_for_section(config.shape_zyx[1:]))
        acquisition = simulate_acquisition(image, config.resolution, acq_config, seed=config.seed)
        write_acquisition(acquisition, ws)
        n_tiles = len(acquisition.manifest)
        seconds["acquisition"] = time.perf_counter() - t0

    cells = tissue.cell_table
    syn = tissue.synapse_table
    ws.write_provenance(
        "synth",
        parameters=config.model_dump(),
        inputs=[],
        outputs=_outputs(config) + ["groundtruth/cells", "groundtruth/synapses", "groundtruth/skeletons"],
    )
    return SynthReport(
        shape_zyx=tissue.shape_zyx,
        resolution_nm=config.resolution,
        n_neurons=int((cells["kind"] == "neuron").sum()),
        n_glia=int((cells["kind"] == "glia").sum()),
        n_synapses=len(syn),
        excitatory_fraction=float((syn["ei"] == "E").mean()) if len(syn) else float("nan"),
        n_tiles=n_tiles,
        seconds=seconds,
    )


def _write_groundtruth(
    ws: Workspace, tissue: Tissue, image: np.ndarray, config: SynthConfig, *, overwrite: bool
) -> None:
    res = config.resolution
    scales = config.pyramid_scales
    write_volume(ws, "groundtruth/image", image, resolution_nm=res, overwrite=overwrite, num_scales=scales)
    write_volume(
        ws,
        "groundtruth/neurons",
        tissue.cells.astype(np.uint64, copy=False),
        resolution_nm=res,
        kind="segmentation",
        overwrite=overwrite,
        num_scales=scales,
    )
    labels = {
        "groundtruth/compartments": tissue.compartments,
        "groundtruth/myelin": tissue.myelin,
        "groundtruth/mitochondria": tissue.mitochondria,
        "groundtruth/synapse_clefts": tissue.synapse_clefts,
    }
    for name, data in labels.items():
        write_volume(
            ws, name, data.astype(np.uint32, copy=False), resolution_nm=res, kind="segmentation", overwrite=overwrite
        )
    ws.write_table("groundtruth/cells.parquet", tissue.cell_table)
    ws.write_table("groundtruth/synapses.parquet", tissue.synapse_table)
    ws.write_table("groundtruth/skeletons.parquet", skeleton_table(tissue.skeletons))
    ws.write_json("groundtruth/tissue.json", {"resolution_nm": list(res), "shape_zyx": list(tissue.shape_zyx)})
    if not config.acquisition:
        write_volume(ws, "aligned", image, resolution_nm=res, overwrite=overwrite, num_scales=scales)


def use_true_segmentation(ws: Workspace, layer: str = "segmentation") -> tuple[np.ndarray, tuple[float, ...]]:
    """Copy ``groundtruth/neurons`` into ``layer`` and return ``(labels, resolution_nm)``.

    Benchmarks and diagnostics of the stages after segmentation (synapses,
    morphology) run on these perfect segments to measure their own errors
    apart from segmentation's.
    """
    truth = Layer(ws, "groundtruth/neurons")
    labels = truth.read()
    write_volume(ws, layer, labels, resolution_nm=truth.info.resolution_nm, kind="segmentation")
    return labels, tuple(truth.info.resolution_nm)
