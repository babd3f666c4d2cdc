"""The ``synapses`` stage: detect synapses blockwise, find their partners, call E/I, write table and layer.

Inputs: an image layer (default ``aligned``), a segmentation layer (default
``segmentation``) of the same shape and resolution, and optionally a
``compartments`` layer (codes as ``wiremap.synth.model.Compartment``).
Outputs:

  tables/synapses            one row per synapse (``wiremap.connectome.schema``
                             columns, plus ei_synapse, ei_confidence, partner_confidence)
  tables/synapse_ei_neurons  per presynaptic segment: id, ei, ei_confidence, n_synapses
  layers/synapses            Neuroglancer annotation lines pre -> post (``annotations.py``)

Each block is read with context (more than a synapse is long), and keeps the
synapses whose centroid lies in its write ROI, so every synapse is found
once; its partial table goes to ``blocks/synapses-parts/<block>.parquet``,
then its done-marker, so a killed run resumes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from wiremap.blockwise import Block, BlockGrid, BlockTask, reset_markers, run_blockwise, worker_workspace
from wiremap.config import StrictModel
from wiremap.errors import InputError
from wiremap.intensity import section_grey_ranges
from wiremap.roi import Roi
from wiremap.synapses.annotations import write_annotations
from wiremap.synapses.detect import DetectParams, candidate_table, cleft_components, filter_candidates
from wiremap.synapses.ei import EIRule, appearance_ei_prob, apply_consensus
from wiremap.synapses.model import load_model, normalize, predict_sections
from wiremap.synapses.partners import assign_partners
from wiremap.volume import Layer
from wiremap.workspace import Workspace

log = logging.getLogger(__name__)

STAGE = "synapses"
PARTS = "blocks/synapses-parts/"
TABLE_COLUMNS = (
    "id",
    "pre",
    "post",
    "z",
    "y",
    "x",
    "nz",
    "ny",
    "nx",
    "size",
    "ei",
    "pre_compartment",
    "post_compartment",
    "confidence",
    "ei_confidence",
    "ei_synapse",
    "partner_confidence",
)


class SynapseConfig(StrictModel):
    """Parameters of one ``wiremap synapses`` run."""

    image: str = "aligned"  # image layer (uint8)
    segmentation: str = "segmentation"  # segment ids the partners are taken from
    compartments: str = "compartments"  # compartment codes; used when the layer exists
    model: str | None = None  # weight file; None: the shipped synapses_sstem.pt
    threshold: float = Field(default=0.4, gt=0, lt=1)  # cleft probability that counts as cleft
    min_volume_nm3: float = Field(default=3.0e5, ge=0)  # smaller cleft components are noise
    min_confidence: float = Field(default=0.8, ge=0, le=1)  # minimum mean cleft probability of a synapse
    seed_threshold: float = Field(default=0.9, ge=0, lt=1)  # > threshold: split touching clefts at probability valleys
    connectivity: Literal[6, 18, 26] = 6  # voxel linking of a cleft (6 merges touching clefts least)
    max_extent_nm: float = Field(default=600.0, ge=0)  # > 0: cut longer cleft components into pieces this long
    min_sections: int = Field(default=2, ge=1)  # cleft components seen in fewer sections are dropped
    min_core_nm3: float = Field(default=2.0e5, ge=0)  # minimum volume of confident (> seed_threshold) voxels
    reach_nm: float = Field(default=40.0, gt=0)  # how far from the cleft partner voxels are looked for
    block_shape: tuple[int, int, int] = (32, 512, 512)  # write ROI of one block (voxels)
    context_nm: tuple[float, float, float] = (300.0, 800.0, 800.0)  # context around a block (z, y, x), nm

    def detect_params(self) -> DetectParams:
        return DetectParams(
            self.threshold,
            self.min_volume_nm3,
            self.min_confidence,
            self.seed_threshold,
            self.connectivity,
            self.max_extent_nm,
            self.min_sections,
            self.min_core_nm3,
        )


@dataclass
class SynapseReport:
    """What a run found."""

    n_synapses: int
    n_candidates: int  # cleft components before partner assignment
    n_excitatory: int
    n_neurons: int  # presynaptic segments with a consensus E/I call
    blocks: int
    warnings: list[str]


@dataclass(frozen=True)
class SynapseBlock:
    """Picklable per-block work (see module doc)."""

    workspace_url: str
    config: SynapseConfig
    use_compartments: bool
    grey_ranges: np.ndarray  # (sections, 2): each section's grey range (``section_grey_ranges``)
    resolution_nm: tuple[float, float, float]
    torch_threads: int = 0  # 0: torch's default; 1 in pool workers (the pool has the parallelism)

    def __call__(self, block: Block) -> None:
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        ws = worker_workspace(self.workspace_url)
        table = detect_block(
            Layer(ws, self.config.image).read(block.read_roi),
            Layer(ws, self.config.segmentation).read(block.read_roi),
            Layer(ws, self.config.compartments).read(block.read_roi) if self.use_compartments else None,
            self.config,
            self.grey_ranges[block.read_roi.offset[0] : block.read_roi.end[0]],
            self.resolution_nm,
            block.read_roi,
            block.write_roi,
        )
        ws.write_table(f"{PARTS}{block.block_id}.parquet", table)


def detect_block(
    image: np.ndarray,
    segmentation: np.ndarray,
    compartments: np.ndarray | None,
    config: SynapseConfig,
    grey_ranges: np.ndarray,
    resolution_nm: tuple[float, float, float],
    read_roi: Roi,
    write_roi: Roi,
) -> pd.DataFrame:
    """Synapses of one block whose centroid lies in ``write_roi`` (global voxel coordinates).

    ``grey_ranges`` holds ``(lo, hi)`` of each section of the block: sections are normalised one by one, so a
    change of microscope settings part-way through a stack does not dim or wash out half of it.
    """
    model = load_model(config.model)
    lo, hi = grey_ranges[:, 0, None, None], grey_ranges[:, 1, None, None]
    prob = predict_sections(model, image, lo, hi, resolution_nm[2])
    norm = normalize(image, lo, hi)
    rule = EIRule(**model.meta.get("ei_rule", {}))
    return synapses_from_prob(prob, norm, segmentation, compartments, config, rule, resolution_nm, read_roi, write_roi)


def synapses_from_prob(
    prob: np.ndarray,
    norm: np.ndarray,
    segmentation: np.ndarray,
    compartments: np.ndarray | None,
    config: SynapseConfig,
    rule: EIRule,
    resolution_nm: tuple[float, float, float],
    read_roi: Roi,
    write_roi: Roi,
) -> pd.DataFrame:
    """Candidates, partners and E/I from network outputs ``prob`` (3, z, y, x) and the normalised image."""
    params = config.detect_params()
    labels, n = cleft_components(prob[0], resolution_nm, params)
    cand = candidate_table(labels, n, prob[0], read_roi.offset, core_threshold=params.seed_threshold)
    cand = filter_candidates(cand, resolution_nm, params)
    lo, hi = np.asarray(write_roi.offset), np.asarray(write_roi.end)
    pos = np.floor(cand[["z", "y", "x"]].to_numpy())
    cand = cand[np.all((pos >= lo) & (pos < hi), axis=1)]
    keep = np.zeros(n + 1, bool)
    keep[cand["label"].to_numpy()] = True
    labels = np.where(keep[labels], labels, 0).astype(np.uint32)
    partners = assign_partners(
        labels, segmentation, prob[1], prob[2], resolution_nm, compartments, config.reach_nm, image=norm
    )
    partners["ei_prob"] = appearance_ei_prob(partners["dark_pre"], partners["dark_post"], partners["ei_prob"], rule)
    out = cand.merge(partners, on="label", how="left")  # unpaired candidates keep pre = post = 0
    out["pre"] = out["pre"].fillna(0).astype(np.uint64)
    out["post"] = out["post"].fillna(0).astype(np.uint64)
    for role in ("pre", "post"):
        for axis, off in zip("zyx", read_roi.offset, strict=False):
            out[f"{role}_{axis}"] = out[f"{role}_{axis}"] + off
    return out.drop(columns=["label"]).reset_index(drop=True)


def check_inputs(ws: Workspace, config: SynapseConfig) -> tuple[Layer, Layer, bool]:
    """Open the layers; a missing or inconsistent one is an :class:`InputError`."""
    image = Layer(ws, config.image)
    if not ws.has_layer(config.segmentation):
        raise InputError(
            f"segmentation layer {config.segmentation!r} not found in {ws.url}: run `wiremap segment` "
            f"or pass --segmentation (layers: {', '.join(ws.layers()) or 'none'})"
        )
    seg = Layer(ws, config.segmentation)
    if image.info.shape_zyx != seg.info.shape_zyx:
        raise InputError(
            f"segmentation {config.segmentation!r} has shape {seg.info.shape_zyx} but image {config.image!r} "
            f"has {image.info.shape_zyx}: they must cover the same voxels"
        )
    if not np.allclose(image.info.resolution_nm, seg.info.resolution_nm):
        raise InputError(
            f"segmentation {config.segmentation!r} resolution {seg.info.resolution_nm} nm differs from "
            f"image {config.image!r} resolution {image.info.resolution_nm} nm"
        )
    if seg.info.kind != "segmentation" and not seg.info.dtype.startswith("uint"):
        raise InputError(f"layer {config.segmentation!r} holds {seg.info.dtype}, not segment ids")
    use_comp = ws.has_layer(config.compartments)
    if use_comp and Layer(ws, config.compartments).info.shape_zyx != image.info.shape_zyx:
        log.warning("compartments layer %r has another shape; synapse compartments left empty", config.compartments)
        use_comp = False
    return image, seg, use_comp


def run_synapses(
    ws: Workspace,
    config: SynapseConfig | None = None,
    *,
    executor: str = "processes",
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynapseReport:
    """Run the stage (see module doc); resumes a killed run unless ``overwrite``."""
    config = config or SynapseConfig()
    image, _, use_comp = check_inputs(ws, config)
    load_model(config.model)  # a bad weight file fails here, not in every worker
    res = image.info.resolution_nm
    if overwrite or ws.provenance(STAGE) is not None:
        reset_markers(ws, STAGE)
        ws.delete_prefix(PARTS)
    context = tuple(int(math.ceil(c / r)) for c, r in zip(config.context_nm, res, strict=False))
    grid = BlockGrid(image.roi, config.block_shape, context)  # type: ignore[arg-type]
    warnings: list[str] = []
    grey = section_grey_ranges(image)
    if np.median(grey[:, 1] - grey[:, 0]) <= 1.0:
        warnings.append(f"image {config.image!r} has (almost) no contrast: no synapses can be seen")
    task = BlockTask(
        STAGE, ws.url, grid, SynapseBlock(ws.url, config, use_comp, grey, res, 0 if executor == "serial" else 1)
    )
    run_blockwise(task, executor=executor, workers=workers, scheduler=scheduler, progress=progress)
    parts = [ws.read_table(k) for k in sorted(ws.list(PARTS)) if k.endswith(".parquet")]
    parts = [p for p in parts if len(p)]
    raw = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    n_candidates = len(raw)
    table, neurons = finish_table(raw)
    if n_candidates > len(table):
        warnings.append(f"{n_candidates - len(table)} cleft(s) dropped: not between two segments")
    if len(table) == 0:
        warnings.append("no synapses found")
    if not use_comp:
        warnings.append(f"no {config.compartments!r} layer: pre/post compartments left empty")
    for w in warnings:
        log.warning(w)
    ws.write_table("synapses", table[list(TABLE_COLUMNS)])
    ws.write_table("synapse_ei_neurons", neurons)
    write_annotations(ws, table, res)
    ws.write_provenance(
        STAGE,
        parameters=config.model_dump(),
        inputs=[config.image, config.segmentation] + ([config.compartments] if use_comp else []),
        outputs=["tables/synapses", "tables/synapse_ei_neurons", "layers/synapses"],
    )
    ws.delete_prefix(PARTS)
    return SynapseReport(
        n_synapses=len(table),
        n_candidates=n_candidates,
        n_excitatory=int((table["ei"] == "E").sum()),
        n_neurons=len(neurons),
        blocks=len(grid),
        warnings=warnings,
    )


def finish_table(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Block rows -> the final table (ids 1..N in z, y, x order, E/I consensus) and the neuron E/I table."""
    if len(raw) == 0 or not ((raw["pre"] != 0) & (raw["post"] != 0)).any():
        cols = {c: pd.Series(dtype="f8") for c in TABLE_COLUMNS}
        for c in ("id", "pre", "post"):
            cols[c] = pd.Series(dtype="uint64")
        for c in ("ei", "pre_compartment", "post_compartment", "ei_synapse"):
            cols[c] = pd.Series(dtype=object)
        table = pd.DataFrame(cols)
        _, neurons = apply_consensus(pd.DataFrame({"pre": pd.Series(dtype="uint64"), "ei_prob": pd.Series(dtype="f8")}))
        return table, neurons
    raw = raw[(raw["pre"] != 0) & (raw["post"] != 0)]
    raw = raw.sort_values(["z", "y", "x"], kind="stable").reset_index(drop=True)
    raw["id"] = np.arange(1, len(raw) + 1, dtype=np.uint64)
    table, neurons = apply_consensus(raw)
    for c in ("pre_compartment", "post_compartment"):
        table[c] = table[c].fillna("").astype(str)
    return table, neurons
