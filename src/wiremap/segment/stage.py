"""The ``segment`` stage: image layer -> ``affinities``, ``supervoxels``, ``segmentation`` + table.

Four blockwise passes through the engine and one global step::

  segment-predict  image (block + model.context halo) -> U-Net -> affinities
                   (uint8, 3 channels z/y/x)
  segment-fragments affinities (block + ``fragment_context_nm``) -> watershed
                   supervoxels of the block (so fragments at faces match the
                   whole-volume ones)
  segment-graph    supervoxels (block + 1 voxel below each lower face) and affinities
                   -> region-graph edges and supervoxel sizes, one small Parquet per block
                   under ``segment/graph/``
  (global)         agglomeration of the whole graph (mean affinity or mutex), small-segment cleanup ->
                   ``tables/segment_supervoxels.parquet`` (supervoxel_id, segment_id, size)
  segment-relabel  supervoxels -> segmentation through that table

The first pass resumes from its done-markers; the others rerun whenever the
one before them did anything.  Everything is checked before anything is
written: a missing or non-image input, an unusable model file, an ROI
outside the volume or a resolution the model was not made for are
``WiremapError``\\s and leave the workspace untouched.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import numpy as np
import pandas as pd
import tensorstore as ts
from pydantic import Field

from wiremap.blockwise import Block, BlockGrid, BlockTask, reset_markers, run_blockwise, worker_layer
from wiremap.config import StrictModel
from wiremap.errors import InputError, LayerExistsError
from wiremap.intensity import grey_range
from wiremap.roi import Roi
from wiremap.segment import agglomerate as agg
from wiremap.segment.infer import (
    Model,
    choose_variant,
    default_model_path,
    load_model,
    pick_device,
    predict_affinities,
)
from wiremap.volume import Layer, create_layer
from wiremap.workspace import Workspace

OUTPUTS = ("affinities", "supervoxels", "segmentation")
TABLE = "segment_supervoxels"
RUN_KEY = "segment/run.json"  # what the outputs were made from: a resumed run must match it
GRAPH_PREFIX = "segment/graph/"
INPUT_DTYPES = ("uint8", "uint16", "float32")
DEFAULT_BLOCK = {"anisotropic": (32, 256, 256), "isotropic": (64, 128, 128)}
BASE_CHUNK = (16, 64, 64)


class SegmentConfig(StrictModel):
    """Parameters of one ``wiremap segment`` run."""

    input: str = "aligned"  # image layer to segment
    model: str | None = None  # weight file; None: the shipped model for the layer's resolution
    block_shape: tuple[int, int, int] | None = None  # voxels (z, y, x); None: the model's default
    roi: str | None = None  # "z0:z1,y0:y1,x0:x1" to segment part of the volume; None: all of it
    threshold: float | None = Field(default=None, gt=0, lt=1)  # merge when mean affinity exceeds it; None: the model's
    method: str = Field(default="mean", pattern="^(mean|mutex)$")  # agglomeration: waterz-style mean or mutex
    # segments smaller than this join their best neighbour (5e5 nm^3: a 100 nm ball; 64 voxels before.  Mean VOI
    # against truth pieces, synthetic ssTEM validation seeds 2000, 2001, 3000-3003: 0.829 -> 0.773; gala train
    # 0.337 -> 0.338 at its threshold, so unchanged on FIB-SEM)
    min_size_nm3: float = Field(default=5e5, ge=0)
    # (mean agglomeration) pairs touching on fewer voxel faces are not merged on their affinity.  None: 4 for
    # serial sections, whose section-by-section supervoxels can overlap the next section's by a few voxels only,
    # where a mean affinity is noise (validation seeds 0.773 -> 0.760 with 5e5 nm^3); 0 for isotropic data,
    # whose 3D supervoxels touch over surfaces (gala train: no gain at its threshold)
    min_contact: int | None = Field(default=None, ge=0)
    # merge the two pieces of a fragment cut by a block face first, whatever their affinity, when both
    # blocks saw them as one fragment.  Off by default: these forced merges added false merges (with the
    # 480 nm fragment context: gala train VOI 0.395 with them vs 0.339 without at 32x64x64 blocks, test
    # 0.398 either way; synthetic ssTEM seed 7, 16x512x512: equal to the whole-array result within 0.001
    # VOI with them, 0.09 without, but VOI to truth 2.581 vs 2.557); the pieces of a cut fragment have
    # high affinity across the face and merge by affinity anyway.
    face_links: bool = False
    # affinity context (nm, each side) around a block for its supervoxels, so that fragments near a face
    # match the whole-volume ones (see FragmentBlock); 0 keeps one voxel
    fragment_context_nm: float = Field(default=480.0, ge=0)
    device: str | None = None  # "cpu", "cuda"; None: CUDA when present
    resolution_tolerance: float = Field(default=2.0, ge=1)  # allowed ratio between layer and model voxel size

    def min_size_voxels(self, resolution_nm: tuple[float, float, float]) -> int:
        """``min_size_nm3`` in voxels of this resolution."""
        return int(np.ceil(self.min_size_nm3 / float(np.prod(resolution_nm))))

    def min_contact_for(self, resolution_nm: tuple[float, float, float]) -> int:
        """``min_contact``, or its default for this resolution (see the field)."""
        if self.min_contact is not None:
            return self.min_contact
        return 4 if agg.is_serial_section(resolution_nm) else 0


@dataclass
class SegmentReport:
    """What a ``segment`` run did."""

    shape_zyx: tuple[int, int, int]
    n_supervoxels: int
    n_segments: int
    model: str
    seconds: dict[str, float]


def read_affinities(layer: Layer, roi: Roi) -> np.ndarray:
    """``(3, z, y, x)`` float32 affinities of a uint8 3-channel layer."""
    (z0, y0, x0), (z1, y1, x1) = roi.offset, roi.end
    data = layer.store()[x0:x1, y0:y1, z0:z1, :].read().result()
    return data.transpose(3, 2, 1, 0).astype(np.float32) / 255.0


def _quantize(affs: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(affs * 255.0), 0, 255).astype(np.uint8)


def create_affinity_layer(ws: Workspace, name: str, shape_zyx, resolution_nm, chunk_zyx) -> Layer:
    """A 3-channel uint8 precomputed image (z, y, x affinities; viewable as RGB)."""
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": ws.child_spec(ws.layer_key(name)),
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 3},
        "scale_metadata": {
            "size": list(reversed(shape_zyx)),
            "resolution": list(reversed(resolution_nm)),
            "chunk_size": list(reversed(chunk_zyx)),
            "encoding": "raw",
            "voxel_offset": [0, 0, 0],
        },
        "create": True,
    }
    ts.open(spec).result()
    return Layer(ws, name)


@dataclass(frozen=True)
class PredictBlock:
    """Per-block work of ``segment-predict`` (picklable): the block's affinities."""

    workspace_url: str
    source: str
    model_path: str
    lo: float
    hi: float
    device: str | None
    threads: int

    def __call__(self, block: Block) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        model = load_model(self.model_path)
        image = worker_layer(self.workspace_url, self.source).read(block.read_roi)
        affs = _quantize(predict_affinities(model, image, self.lo, self.hi, pick_device(self.device))[:3])
        w = block.write_roi
        (z0, y0, x0), (z1, y1, x1) = w.offset, w.end
        inner = (slice(0, 3), *w.to_slices(relative_to=block.read_roi))
        worker_layer(self.workspace_url, "affinities").store()[x0:x1, y0:y1, z0:z1, :].write(
            affs[inner].transpose(3, 2, 1, 0)
        ).result()


def fragment_overlap(
    resolution_nm: tuple[float, float, float], context_nm: float, planar: bool
) -> tuple[int, int, int]:
    """Voxels of affinity context around a block for its supervoxels (``context_nm`` per axis; 1 section in z
    when fragments are planar, since a section's boundary map only uses the z-affinities to its neighbours)."""
    out = [max(1, int(np.ceil(context_nm / r))) for r in resolution_nm]
    if planar:
        out[0] = 1
    return tuple(out)  # type: ignore[return-value]


@dataclass(frozen=True)
class FragmentBlock:
    """Per-block work of ``segment-fragments`` (picklable).

    Supervoxels are computed on the block grown by ``overlap`` voxels of the
    stored affinities (inside the ROI) and cropped to the block.  The context
    is wide, about half a micron: a watershed seed is a distance maximum
    within ``seed_radius_nm``, and a neuron cut by the edge of the grown
    region loses its seed to a neighbour's and is flooded across their
    membrane; cropped to the block, that false merge sits at the face and
    the agglomeration cannot undo it.  With the 16 voxels of the network's
    context, gala test lost 0.04 VOI to one such merge at a face (0.44
    blockwise vs 0.40 whole-array); with 48 (480 nm) the blockwise result
    equals the whole-array one within 0.001 VOI on gala train and test and
    two block sizes.  The labels this block gives the plane just outside
    each face are kept (``segment/graph/<id>-halo.npz``) for ``face_links``.
    """

    workspace_url: str
    resolution_nm: tuple[float, float, float]
    total_roi: Roi
    overlap: tuple[int, int, int]
    seed_radius_nm: float | None = None

    def __call__(self, block: Block) -> None:
        w = block.write_roi
        grown = w.grow(self.overlap).intersect(self.total_roi)
        affs = read_affinities(worker_layer(self.workspace_url, "affinities"), grown)
        local = agg.fragments(affs, resolution_nm=self.resolution_nm, seed_radius_nm=self.seed_radius_nm)
        svs = agg.supervoxel_ids(local, block.block_id)
        core = w.to_slices(relative_to=grown)
        inside = svs[core]
        worker_layer(self.workspace_url, "supervoxels").write(np.ascontiguousarray(inside), w.offset)
        # the planes just outside each face, in this block's ids (0 where there is no such plane
        # or where the fragment does not reach into the block)
        present = np.unique(inside)
        halo = {}
        for axis in range(3):
            for side, name in ((-1, "lower"), (1, "upper")):
                plane = w.offset[axis] - 1 if side < 0 else w.end[axis]
                index = plane - grown.offset[axis]
                if 0 <= index < svs.shape[axis]:
                    sl = tuple(index if a == axis else core[a] for a in range(3))
                    view = svs[sl]
                    halo[f"{name}{axis}"] = np.where(np.isin(view, present), view, 0)
        sink = io.BytesIO()
        np.savez_compressed(sink, **halo)  # type: ignore[arg-type]
        Workspace.open(self.workspace_url).write_bytes(f"{GRAPH_PREFIX}{block.block_id}-halo.npz", sink.getvalue())


def _halo(ws: Workspace, block_id: int, key: str) -> np.ndarray | None:
    with np.load(io.BytesIO(ws.read_bytes(f"{GRAPH_PREFIX}{block_id}-halo.npz"))) as data:
        return data[key] if key in data.files else None


@dataclass(frozen=True)
class GraphBlock:
    """Per-block work of ``segment-graph``: edges inside the block and across its lower faces,
    and *links*: pieces on the two sides of a lower face that both blocks see as one fragment."""

    workspace_url: str
    grid: BlockGrid

    def __call__(self, block: Block) -> None:
        ws = Workspace.open(self.workspace_url)
        w = block.write_roi
        total = self.grid.total_roi
        lower = tuple(o > t for o, t in zip(w.offset, total.offset, strict=True))
        grown = Roi(
            tuple(o - int(b) for o, b in zip(w.offset, lower, strict=True)),  # type: ignore[arg-type]
            tuple(s + int(b) for s, b in zip(w.shape, lower, strict=True)),  # type: ignore[arg-type]
        )
        svs = worker_layer(self.workspace_url, "supervoxels").read(grown)
        affs = read_affinities(worker_layer(self.workspace_url, "affinities"), w)
        edges = agg.region_edges(svs, affs, lower)  # type: ignore[arg-type]
        inside = svs[tuple(slice(int(b), None) for b in lower)]
        sizes = agg.fragment_sizes(inside)
        links = []
        for axis in range(3):
            if not lower[axis]:
                continue
            below = list(block.index)
            below[axis] -= 1
            neighbour = self.grid.block(below).block_id
            mine_in = inside[tuple(0 if a == axis else slice(None) for a in range(3))]
            theirs_out = svs[tuple(0 if a == axis else slice(int(lower[a]), None) for a in range(3))]
            my_view = _halo(ws, block.block_id, f"lower{axis}")
            their_view = _halo(ws, neighbour, f"upper{axis}")
            if my_view is None or their_view is None:
                continue
            agree = (my_view == mine_in) & (their_view == theirs_out) & (mine_in != 0) & (theirs_out != 0)
            links.append(agg.count_pairs(mine_in[agree], theirs_out[agree]))
        links_df = pd.concat(links) if links else agg.count_pairs(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        ws.write_table(f"{GRAPH_PREFIX}{block.block_id}-edges.parquet", edges)
        ws.write_table(f"{GRAPH_PREFIX}{block.block_id}-sizes.parquet", sizes)
        ws.write_table(f"{GRAPH_PREFIX}{block.block_id}-links.parquet", links_df)


@lru_cache(maxsize=2)
def _mapping(url: str, token: str) -> pd.DataFrame:
    return Workspace.open(url).read_table(TABLE, columns=["supervoxel_id", "segment_id"])


@dataclass(frozen=True)
class RelabelBlock:
    """Per-block work of ``segment-relabel``; ``token`` names the table version (worker cache key)."""

    workspace_url: str
    token: str

    def __call__(self, block: Block) -> None:
        svs = worker_layer(self.workspace_url, "supervoxels").read(block.write_roi)
        seg = agg.relabel(svs, _mapping(self.workspace_url, self.token))
        worker_layer(self.workspace_url, "segmentation").write(seg, block.write_roi.offset)


def resolve_model(config: SegmentConfig, resolution_nm: tuple[float, float, float]) -> Model:
    """The model to use, checked against the layer's resolution."""
    path = config.model or str(default_model_path(choose_variant(resolution_nm)))
    model = load_model(str(path))
    trained = model.meta.get("resolution_nm")
    if trained:
        ratios = [r / t for r, t in zip(resolution_nm, trained, strict=True)]
        in_plane = max(ratios[1], 1 / ratios[1])
        if in_plane > config.resolution_tolerance:
            raise InputError(
                f"layer resolution {tuple(resolution_nm)} nm is more than {config.resolution_tolerance:g}x away "
                f"from the model's {tuple(trained)} nm in y/x; downsample the input or pass a model made for it"
            )
    return model


def _sample_percentiles(layer: Layer, roi: Roi) -> tuple[float, float]:
    """Global intensity range from at most ~4M voxels spread over the ROI (slab-wise reads)."""
    n_slabs = min(roi.shape[0], 8)
    zs = np.linspace(roi.offset[0], roi.end[0] - 1, n_slabs).astype(int)
    step = max(1, int(np.sqrt(roi.shape[1] * roi.shape[2] * n_slabs / 4e6)))
    samples = []
    for z in zs:
        plane = layer.read(Roi((int(z), roi.offset[1], roi.offset[2]), (1, roi.shape[1], roi.shape[2])))
        samples.append(plane[0, ::step, ::step].ravel())
    return grey_range(np.concatenate(samples))


def _check_resumable(ws: Workspace, run_key: dict) -> None:
    """Existing outputs are resumed only when they come from the same model, input and blocks.

    Otherwise a resumed run would keep blocks predicted by another model (or from
    another input) and silently mix them into the new segmentation.
    """
    before = ws.read_json(RUN_KEY) if ws.exists(RUN_KEY) else None
    if before == run_key:
        return
    if before is None:
        what = "but do not record what they were made from"
    else:
        what = "from a run with another " + ", ".join(sorted(k for k in run_key if before.get(k) != run_key[k]))
    raise LayerExistsError(f"layers {', '.join(OUTPUTS)} exist {what}; use --overwrite to replace them")


def run_segment(
    ws: Workspace,
    config: SegmentConfig,
    *,
    executor: str = "processes",
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SegmentReport:
    """Segment ``config.input`` into neurons; see the module docstring for what is written."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    src = Layer(ws, config.input)
    info = src.info
    if info.kind != "image" or info.dtype not in INPUT_DTYPES:
        raise InputError(
            f"layer {config.input!r} is a {info.kind} layer of {info.dtype}; segmentation needs an image "
            f"layer of {', '.join(INPUT_DTYPES)}"
        )
    model = resolve_model(config, info.resolution_nm)
    roi = Roi.parse(config.roi) if config.roi else src.roi
    if not src.roi.contains(roi) or roi.empty:
        raise InputError(f"ROI {roi} lies outside layer {config.input!r} (extent {src.roi})")
    pool = model.config.pool_total
    block_shape = tuple(config.block_shape or DEFAULT_BLOCK[model.config.variant])
    if any(b % p for b, p in zip(block_shape, pool, strict=True)) or min(block_shape) < 1:
        raise InputError(f"block shape {block_shape} must be a multiple of the network's pooling {pool}")
    block_shape = tuple(min(b, -(-s // p) * p) for b, s, p in zip(block_shape, roi.shape, pool, strict=True))
    chunk = tuple(gcd(b, c) for b, c in zip(block_shape, BASE_CHUNK, strict=True))
    if any(o % c for o, c in zip(roi.offset, chunk, strict=True)):
        raise InputError(f"ROI offset {roi.offset} must be a multiple of the storage chunk {chunk}")
    existing = [n for n in OUTPUTS if ws.has_layer(n)]
    if existing and not overwrite:
        for name in existing:
            have = Layer(ws, name).info
            if have.shape_zyx != info.shape_zyx or have.chunk_zyx != tuple(
                min(c, s) for c, s in zip(chunk, info.shape_zyx, strict=True)
            ):
                raise LayerExistsError(
                    f"layer {name!r} exists with another shape or chunking; use --overwrite to replace it"
                )
    lo, hi = _sample_percentiles(src, roi)
    run_key = {
        "input": config.input,
        "roi": [list(roi.offset), list(roi.shape)],
        "block_shape": list(block_shape),
        "fragment_context_nm": config.fragment_context_nm,
        "model_sha256": model.meta.get("sha256"),
        "intensity_range": [float(lo), float(hi)],
    }
    if existing and not overwrite and len(existing) == len(OUTPUTS):
        _check_resumable(ws, run_key)
    seconds["check"] = time.perf_counter() - t0

    # -- create outputs (or keep them, to resume) --------------------------------
    if overwrite or len(existing) < len(OUTPUTS):
        for name in OUTPUTS:
            if ws.has_layer(name):
                ws.delete_prefix(f"{ws.layer_key(name)}/")
        shape_chunk = tuple(min(c, s) for c, s in zip(chunk, info.shape_zyx, strict=True))
        create_affinity_layer(ws, "affinities", info.shape_zyx, info.resolution_nm, shape_chunk)
        for name in ("supervoxels", "segmentation"):
            create_layer(
                ws,
                name,
                shape_zyx=info.shape_zyx,
                resolution_nm=info.resolution_nm,
                dtype="uint64",
                kind="segmentation",
                chunk_zyx=shape_chunk,
            )
        for stage in ("segment-predict", "segment-fragments", "segment-graph", "segment-relabel"):
            reset_markers(ws, stage)
        ws.write_json(RUN_KEY, run_key)
    context = model.context
    grid = BlockGrid(roi, block_shape, context)  # type: ignore[arg-type]
    threads = max(1, (os.cpu_count() or 1) // (1 if executor == "serial" else workers))
    run = dict(executor=executor, workers=workers, scheduler=scheduler, progress=progress)

    t = time.perf_counter()
    seed_radius = model.meta.get("seed_radius_nm")
    predict = PredictBlock(ws.url, config.input, model.source, lo, hi, config.device, threads)
    report = run_blockwise(BlockTask("segment-predict", ws.url, grid, predict), **run)  # type: ignore[arg-type]
    seconds["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    plain = BlockGrid(roi, block_shape)  # type: ignore[arg-type]
    planar = agg.is_serial_section(info.resolution_nm)
    overlap = fragment_overlap(info.resolution_nm, config.fragment_context_nm, planar)
    fragment = FragmentBlock(ws.url, info.resolution_nm, roi, overlap, seed_radius)
    if report.processed:
        reset_markers(ws, "segment-fragments")
    report = run_blockwise(BlockTask("segment-fragments", ws.url, plain, fragment), **run)  # type: ignore[arg-type]
    seconds["fragments"] = time.perf_counter() - t

    t = time.perf_counter()
    if report.processed:
        reset_markers(ws, "segment-graph")
    run_blockwise(BlockTask("segment-graph", ws.url, plain, GraphBlock(ws.url, plain)), **run)  # type: ignore[arg-type]
    edges = pd.concat([ws.read_table(f"{GRAPH_PREFIX}{b.block_id}-edges.parquet") for b in plain.blocks()])
    sizes = pd.concat([ws.read_table(f"{GRAPH_PREFIX}{b.block_id}-sizes.parquet") for b in plain.blocks()])
    links = pd.concat([ws.read_table(f"{GRAPH_PREFIX}{b.block_id}-links.parquet") for b in plain.blocks()])
    threshold = config.threshold or float(model.meta.get("threshold", 0.5))
    table = agg.agglomerate(
        sizes,
        edges,
        threshold=threshold,
        min_size=config.min_size_voxels(info.resolution_nm),
        min_contact=config.min_contact_for(info.resolution_nm),
        links=links if config.face_links else None,
        method=config.method,
    )
    ws.write_table(TABLE, table)
    seconds["agglomerate"] = time.perf_counter() - t

    t = time.perf_counter()
    reset_markers(ws, "segment-relabel")
    token = f"{time.time_ns()}"
    run_blockwise(BlockTask("segment-relabel", ws.url, plain, RelabelBlock(ws.url, token)), **run)  # type: ignore[arg-type]
    seconds["relabel"] = time.perf_counter() - t

    ws.write_provenance(
        "segment",
        parameters={
            **config.model_dump(),
            "block_shape": list(block_shape),
            "threshold": threshold,
            "model_sha256": model.meta.get("sha256"),
            "intensity_range": [lo, hi],
        },
        inputs=[config.input],
        outputs=[*OUTPUTS, f"tables/{TABLE}"],
    )
    return SegmentReport(
        shape_zyx=roi.shape,
        n_supervoxels=len(table),
        n_segments=int(table["segment_id"].nunique()),
        model=model.source,
        seconds=seconds,
    )
