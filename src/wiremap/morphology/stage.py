"""The ``mesh``, ``skeletonize`` and ``compartments`` stages: blockwise, then merged per segment.

Outputs (next to the segmentation layer, so Neuroglancer finds them from its ``info``)::

    layers/<seg>/mesh/            multi-resolution meshes; <seg>/info gets "mesh": "mesh"
    layers/<seg>/skeletons/       skeletons with radius + compartment; info gets "skeletons"
    layers/myelin                 myelin mask (uint32 0/1) from the image
    layers/compartments           Compartment code per voxel (uint32)
    tables/skeleton_nodes.parquet id, node, parent, x_nm, y_nm, z_nm, radius_nm, compartment

Each stage runs in two passes: blocks (meshing / skeletonizing / measuring
a downsampled block with one voxel of overlap) writing pieces to
``scratch/<stage>/``, then shards of segment ids (``id % n_shards``) that
gather their pieces, merge and write.  Both passes leave done-markers, so a
killed run resumes.  Labels are downsampled by striding, as igneous meshes
and skeletonizes lower mips: meshes at ``mesh_downsample`` (default
(1, 2, 2): 8 nm in-plane from 4 nm), skeletons at ``skeleton_downsample``
(default (1, 4, 4): 16 nm, nearer isotropic with 30 nm sections, and
about 5x faster for TEASAR than 8 nm while neurites stay many voxels wide).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import pandas as pd

from wiremap.blockwise import Block, BlockGrid, BlockTask, run_blockwise, worker_layer, worker_workspace
from wiremap.errors import InputError, LayerNotFoundError
from wiremap.morphology import fragments
from wiremap.morphology.compartments import CompartmentParams, classify_nodes, voxel_compartments
from wiremap.morphology.meshes import TriMesh, encode_multires, merge_meshes, mesh_block, multires_info, simplify
from wiremap.morphology.myelin import MyelinParams, myelin_context, myelin_mask
from wiremap.morphology.skeletons import (
    SkeletonData,
    TeasarParams,
    decode_precomputed,
    encode_precomputed,
    merge_pieces,
    skeleton_info,
    skeletonize_block,
    to_tree,
)
from wiremap.roi import Roi
from wiremap.synapses.compartment_labels import synapse_compartments
from wiremap.volume import Layer, create_layer
from wiremap.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MorphologyConfig:
    """Parameters shared by the three stages."""

    segmentation: str = "segmentation"  # label layer to mesh / skeletonize
    image: str = "aligned"  # image layer for the myelin mask
    block_shape: tuple[int, int, int] = (64, 512, 512)  # voxels (full resolution)
    mesh_downsample: tuple[int, int, int] = (1, 2, 2)  # label downsampling (z, y, x) before meshing
    skeleton_downsample: tuple[int, int, int] = (1, 4, 4)  # label downsampling (z, y, x) before TEASAR
    num_lods: int = 3  # mesh levels of detail
    block_reduction: float = 4.0  # face reduction of block meshes (borders kept)
    teasar: TeasarParams = field(default_factory=TeasarParams)
    dust_nm: float = 500.0  # skeletons with less cable are dropped
    tick_nm: float = 300.0  # terminal branches shorter than this are removed
    myelin: MyelinParams = field(default_factory=MyelinParams)
    compartments: CompartmentParams = field(default_factory=CompartmentParams)


@dataclass
class MorphologyReport:
    """What a stage made."""

    n_segments: int
    seconds: dict[str, float]
    voxels: int


def _check(ws: Workspace, config: MorphologyConfig) -> Layer:
    if not ws.has_layer(config.segmentation):
        raise LayerNotFoundError(
            f"segmentation layer {config.segmentation!r} not found in {ws.url} (run `wiremap segment` first, "
            f"or pass --segmentation)"
        )
    seg = Layer(ws, config.segmentation)
    if seg.info.kind != "segmentation":
        raise InputError(f"layer {config.segmentation!r} is an {seg.info.kind} layer, not a segmentation")
    for factors in (config.mesh_downsample, config.skeleton_downsample):
        bad = [b for b, f in zip(config.block_shape, factors, strict=True) if b % f]
        if bad or min(factors) < 1:
            raise InputError(f"block shape {config.block_shape} must be a multiple of downsample {factors}")
    return seg


def _grid(seg: Layer, config: MorphologyConfig) -> BlockGrid:
    shape = tuple(min(b, s) for b, s in zip(config.block_shape, seg.info.shape_zyx, strict=True))
    factors = np.lcm(config.mesh_downsample, config.skeleton_downsample)
    shape = tuple(max(int(f), (b // int(f)) * int(f)) for b, f in zip(shape, factors, strict=True))
    return BlockGrid(seg.roi, shape)  # type: ignore[arg-type]


def _read_downsampled(
    url: str, name: str, block: Block, factors: tuple[int, int, int]
) -> tuple[np.ndarray, tuple, tuple, tuple]:
    """Labels of the block plus one downsampled voxel on its high sides, downsampled by striding;
    with the block's offset in downsampled voxels and which faces are faces of the volume."""
    layer = worker_layer(url, name)
    total = layer.roi
    write = block.write_roi
    read = Roi(write.offset, tuple(s + f for s, f in zip(write.shape, factors, strict=True))).intersect(total)  # type: ignore[arg-type]
    data = layer.read(read)[:: factors[0], :: factors[1], :: factors[2]]
    offset = tuple(o // f for o, f in zip(write.offset, factors, strict=True))
    low = tuple(o == 0 for o in write.offset)
    high = tuple(e >= t for e, t in zip(write.end, total.end, strict=True))
    return data, offset, low, high  # type: ignore[return-value]


def _resolution(url: str, name: str, factors: tuple[int, int, int]) -> tuple[float, float, float]:
    res = worker_layer(url, name).info.resolution_nm
    return tuple(r * f for r, f in zip(res, factors, strict=True))  # type: ignore[return-value]


class _RunOptions(TypedDict):
    """How ``run_blockwise`` runs a pass (passed through from the stage's arguments)."""

    executor: str
    workers: int
    scheduler: str | None
    progress: bool


def _shard_grid(n_shards: int) -> BlockGrid:
    return BlockGrid(Roi((0, 0, 0), (n_shards, 1, 1)), (1, 1, 1))


def _run_two_passes(
    ws: Workspace,
    stage: str,
    grid: BlockGrid,
    block_work: Callable[[Block], object],
    shard_work_factory: Callable[[dict[int, list[int]], int], Callable[[Block], object]],
    *,
    run: _RunOptions,
    overwrite: bool,
) -> tuple[int, dict[str, float]]:
    """Blocks write pieces, then shards of segment ids merge them; seconds of each pass."""
    seconds: dict[str, float] = {}
    if overwrite:
        for prefix in (f"blocks/{stage}/", f"blocks/{stage}-merge/", fragments.scratch_prefix(stage)):
            ws.delete_prefix(prefix)
    t0 = time.perf_counter()
    run_blockwise(BlockTask(stage, ws.url, grid, block_work), **run)
    seconds["blocks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = fragments.piece_index(ws, stage)
    ids = sorted(index)
    n_shards = max(1, min(len(ids), len(grid) * 2))
    if ids:
        work = shard_work_factory(index, n_shards)
        run_blockwise(BlockTask(f"{stage}-merge", ws.url, _shard_grid(n_shards), work), **run)
    seconds["merge"] = time.perf_counter() - t0
    return len(ids), seconds


def _add_info_key(ws: Workspace, seg: str, key: str, value: str) -> None:
    info_key = f"{ws.layer_key(seg)}/info"
    info = ws.read_json(info_key)
    if info.get(key) != value:
        info[key] = value
        ws.write_json(info_key, info)


# -- meshes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeshBlock:
    url: str
    config: MorphologyConfig

    def __call__(self, block: Block) -> None:
        c = self.config
        data, offset, low, high = _read_downsampled(self.url, c.segmentation, block, c.mesh_downsample)
        res = _resolution(self.url, c.segmentation, c.mesh_downsample)
        meshes = mesh_block(data, res, offset, low, high)
        pieces = {}
        for i, m in meshes.items():
            m = simplify(m, c.block_reduction, preserve_border=True)
            pieces[i] = {"vertices": m.vertices.astype(np.float64), "faces": m.faces}
        fragments.write_block_pieces(worker_workspace(self.url), "mesh", block.block_id, pieces)


@dataclass(frozen=True)
class MeshMerge:
    url: str
    config: MorphologyConfig
    index: dict[int, list[int]]
    n_shards: int

    def __call__(self, block: Block) -> None:
        ws = worker_workspace(self.url)
        c = self.config
        ids = fragments.shard_ids(list(self.index), self.n_shards, block.index[0])
        res = _resolution(self.url, c.segmentation, c.mesh_downsample)
        prefix = f"{ws.layer_key(c.segmentation)}/mesh/"
        for i, pieces in fragments.gather(ws, "mesh", self.index, ids).items():
            mesh = merge_meshes([TriMesh(p["vertices"], p["faces"]) for p in pieces])
            if mesh.empty:
                continue
            manifest, data = encode_multires(mesh, c.num_lods, res)
            ws.write_bytes(f"{prefix}{i}", data)
            ws.write_bytes(f"{prefix}{i}.index", manifest)  # manifest last: it names the data


def run_mesh(
    ws: Workspace,
    config: MorphologyConfig | None = None,
    *,
    executor: str = "processes",
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> MorphologyReport:
    """Multi-resolution meshes of every segment into ``layers/<seg>/mesh``."""
    config = config or MorphologyConfig()
    return _run_segment_stage(
        ws,
        config,
        "mesh",
        "mesh",
        multires_info(_check(ws, config).info.resolution_nm),
        MeshBlock(ws.url, config),
        lambda index, n_shards: MeshMerge(ws.url, config, index, n_shards),
        _RunOptions(executor=executor, workers=workers, scheduler=scheduler, progress=progress),
        overwrite,
    )


def _run_segment_stage(
    ws: Workspace,
    config: MorphologyConfig,
    stage: str,
    directory: str,
    info: dict,
    block_work: Callable[[Block], object],
    shard_work_factory: Callable[[dict[int, list[int]], int], Callable[[Block], object]],
    run: _RunOptions,
    overwrite: bool,
) -> MorphologyReport:
    """What meshing and skeletonizing share: ``<seg>/<directory>/info``, both passes, the segmentation's
    info key naming the directory, provenance."""
    seg = _check(ws, config)
    prefix = f"{ws.layer_key(config.segmentation)}/{directory}/"
    if overwrite:
        ws.delete_prefix(prefix)
    ws.write_json(f"{prefix}info", info)
    n, seconds = _run_two_passes(
        ws, stage, _grid(seg, config), block_work, shard_work_factory, run=run, overwrite=overwrite
    )
    _add_info_key(ws, config.segmentation, directory, directory)
    if n == 0:
        log.warning("segmentation %r has no segments: nothing written to %s", config.segmentation, prefix)
    ws.write_provenance(
        stage, parameters=_params(config), inputs=[config.segmentation], outputs=[f"{config.segmentation}/{directory}"]
    )
    return MorphologyReport(n, seconds, int(np.prod(seg.info.shape_zyx)))


def _params(config: MorphologyConfig) -> dict:
    from dataclasses import asdict

    return asdict(config)


# -- skeletons ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkeletonBlock:
    url: str
    config: MorphologyConfig

    def __call__(self, block: Block) -> None:
        c = self.config
        data, offset, _, _ = _read_downsampled(self.url, c.segmentation, block, c.skeleton_downsample)
        res = _resolution(self.url, c.segmentation, c.skeleton_downsample)
        pieces = skeletonize_block(data, res, offset, c.teasar)
        fragments.write_block_pieces(worker_workspace(self.url), "skeletonize", block.block_id, pieces)


@dataclass(frozen=True)
class SkeletonMerge:
    url: str
    config: MorphologyConfig
    index: dict[int, list[int]]
    n_shards: int

    def __call__(self, block: Block) -> None:
        ws = worker_workspace(self.url)
        c = self.config
        ids = fragments.shard_ids(list(self.index), self.n_shards, block.index[0])
        prefix = f"{ws.layer_key(c.segmentation)}/skeletons/"
        for i, pieces in fragments.gather(ws, "skeletonize", self.index, ids).items():
            sk = merge_pieces(pieces, i, dust_nm=c.dust_nm, tick_nm=c.tick_nm)
            if not sk.empty:
                ws.write_bytes(f"{prefix}{i}", encode_precomputed(sk))


def run_skeletonize(
    ws: Workspace,
    config: MorphologyConfig | None = None,
    *,
    executor: str = "processes",
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> MorphologyReport:
    """Skeletons (radius per vertex; compartment 0 until ``run_compartments``) into ``layers/<seg>/skeletons``."""
    config = config or MorphologyConfig()
    return _run_segment_stage(
        ws,
        config,
        "skeletonize",
        "skeletons",
        skeleton_info(),
        SkeletonBlock(ws.url, config),
        lambda index, n_shards: SkeletonMerge(ws.url, config, index, n_shards),
        _RunOptions(executor=executor, workers=workers, scheduler=scheduler, progress=progress),
        overwrite,
    )


def skeleton_ids(ws: Workspace, segmentation: str = "segmentation") -> list[int]:
    """Ids of the segments that have a skeleton."""
    prefix = f"{ws.layer_key(segmentation)}/skeletons/"
    return sorted(int(k[len(prefix) :]) for k in ws.list(prefix) if k[len(prefix) :].isdigit())


def read_skeleton(ws: Workspace, segment_id: int, segmentation: str = "segmentation") -> SkeletonData:
    """One segment's skeleton; a clear error when it has none."""
    key = f"{ws.layer_key(segmentation)}/skeletons/{int(segment_id)}"
    if not ws.exists(key):
        raise LayerNotFoundError(
            f"segment {segment_id} has no skeleton in {ws.url} (run `wiremap skeletonize`; ids with no voxels "
            f"or only dust have none)"
        )
    return decode_precomputed(ws.read_bytes(key))


# -- myelin and compartments ----------------------------------------------------------------------
@dataclass(frozen=True)
class MyelinBlock:
    url: str
    config: MorphologyConfig

    def __call__(self, block: Block) -> None:
        c = self.config
        image = worker_layer(self.url, c.image)
        mask = myelin_mask(image.read(block.read_roi), image.info.resolution_nm, c.myelin)
        worker_layer(self.url, "myelin").write(
            mask[block.write_roi.to_slices(relative_to=block.read_roi)], block.write_roi.offset
        )


@dataclass(frozen=True)
class FeatureBlock:
    """Per segment in a block: voxel count and myelin contact points (segment voxels next to myelin)."""

    url: str
    config: MorphologyConfig
    has_myelin: bool

    def __call__(self, block: Block) -> None:
        from scipy import ndimage

        c = self.config
        seg = worker_layer(self.url, c.segmentation)
        labels = seg.read(block.write_roi)
        ids, counts = np.unique(labels, return_counts=True)
        pieces: fragments.Pieces = {
            int(i): {"voxels": np.array([n], np.int64), "myelin_pts": np.zeros((0, 3))}
            for i, n in zip(ids, counts, strict=True)
            if i
        }
        if self.has_myelin and pieces:
            my = worker_layer(self.url, "myelin").read(block.write_roi) > 0
            if my.any():
                near = ndimage.binary_dilation(my, np.ones((1, 5, 5), bool)) & (labels > 0) & ~my
                sub = np.zeros_like(near)
                sub[:, ::4, ::4] = near[:, ::4, ::4]  # a sparse sample is enough to count contacts
                zyx = np.argwhere(sub)
                res = np.asarray(seg.info.resolution_nm)
                xyz = ((zyx + np.asarray(block.write_roi.offset) + 0.5) * res)[:, ::-1]
                owner = labels[tuple(zyx.T)]
                for i in np.unique(owner):
                    pieces[int(i)]["myelin_pts"] = xyz[owner == i]
        fragments.write_block_pieces(worker_workspace(self.url), "compartments", block.block_id, pieces)


@dataclass(frozen=True)
class ClassifyShard:
    url: str
    config: MorphologyConfig
    index: dict[int, list[int]]
    n_shards: int
    synapses: pd.DataFrame | None

    def __call__(self, block: Block) -> None:
        ws = worker_workspace(self.url)
        c = self.config
        seg = worker_layer(self.url, c.segmentation)
        res = np.asarray(seg.info.resolution_nm)
        box = (np.zeros(3), (np.asarray(seg.info.shape_zyx) * res)[::-1])
        ids = [i for i in fragments.shard_ids(list(self.index), self.n_shards, block.index[0])]
        have = set(skeleton_ids(ws, c.segmentation))
        ids = [i for i in ids if i in have]
        rows = []
        prefix = f"{ws.layer_key(c.segmentation)}/skeletons/"
        for i, pieces in fragments.gather(ws, "compartments", self.index, ids).items():
            sk = read_skeleton(ws, i, c.segmentation)
            volume = float(sum(int(p["voxels"].sum()) for p in pieces)) * float(np.prod(res))
            myelin_pts = np.concatenate([p["myelin_pts"].reshape(-1, 3) for p in pieces]) if pieces else None
            pre = post = None
            if self.synapses is not None:
                s = self.synapses
                pre = (s.loc[s.pre == i, ["x", "y", "z"]].to_numpy(float) + 0.5) * res[::-1]
                post = (s.loc[s.post == i, ["x", "y", "z"]].to_numpy(float) + 0.5) * res[::-1]
            sk.compartments = classify_nodes(
                sk,
                volume_nm3=volume,
                params=c.compartments,
                myelin_points_nm=myelin_pts,
                pre_points_nm=pre,
                post_points_nm=post,
                volume_box_nm=box,
            )
            ws.write_bytes(f"{prefix}{i}", encode_precomputed(sk))
            parents, _ = to_tree(sk)
            rows.append(
                pd.DataFrame(
                    {
                        "id": np.full(len(parents), i, np.uint64),
                        "node": np.arange(len(parents)),
                        "parent": parents,
                        "x_nm": sk.vertices[:, 0],
                        "y_nm": sk.vertices[:, 1],
                        "z_nm": sk.vertices[:, 2],
                        "radius_nm": sk.radii,
                        "compartment": sk.compartments,
                    }
                )
            )
        table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=NODE_COLUMNS)
        ws.write_table(f"scratch/compartments/nodes-{block.index[0]}.parquet", table)


NODE_COLUMNS = ["id", "node", "parent", "x_nm", "y_nm", "z_nm", "radius_nm", "compartment"]


@dataclass(frozen=True)
class VoxelBlock:
    url: str
    config: MorphologyConfig

    def __call__(self, block: Block) -> None:
        ws = worker_workspace(self.url)
        c = self.config
        seg = worker_layer(self.url, c.segmentation)
        labels = seg.read(block.write_roi)
        have = set(skeleton_ids(ws, c.segmentation))
        skels = {int(i): read_skeleton(ws, int(i), c.segmentation) for i in np.unique(labels) if int(i) in have}
        out = voxel_compartments(labels, block.write_roi.offset, seg.info.resolution_nm, skels)
        worker_layer(self.url, "compartments").write(out, block.write_roi.offset)


def run_compartments(
    ws: Workspace,
    config: MorphologyConfig | None = None,
    *,
    executor: str = "processes",
    workers: int = 2,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> MorphologyReport:
    """Myelin mask, compartment per skeleton node (skeletons rewritten, ``tables/skeleton_nodes``)
    and per voxel (``layers/compartments``).  Needs ``run_skeletonize`` first."""
    config = config or MorphologyConfig()
    seg = _check(ws, config)
    if not skeleton_ids(ws, config.segmentation) and not ws.exists(
        f"{ws.layer_key(config.segmentation)}/skeletons/info"
    ):
        raise LayerNotFoundError(
            f"no skeletons of {config.segmentation!r} in {ws.url}: run `wiremap skeletonize` first"
        )
    seconds: dict[str, float] = {}
    kw = _RunOptions(executor=executor, workers=workers, scheduler=scheduler, progress=progress)
    stages = ("myelin", "compartments", "compartments-merge", "compartments-voxels")
    if overwrite:
        for s in stages:
            ws.delete_prefix(f"blocks/{s}/")
        ws.delete_prefix(fragments.scratch_prefix("compartments"))
    grid = BlockGrid(seg.roi, tuple(min(b, s) for b, s in zip(config.block_shape, seg.info.shape_zyx, strict=True)))  # type: ignore[arg-type]
    has_myelin = False
    t0 = time.perf_counter()
    if ws.has_layer(config.image):
        image = Layer(ws, config.image)
        if image.info.shape_zyx != seg.info.shape_zyx:
            raise InputError(
                f"image layer {config.image!r} {image.info.shape_zyx} and segmentation {config.segmentation!r} "
                f"{seg.info.shape_zyx} differ in shape"
            )
        if not ws.has_layer("myelin") or overwrite:
            create_layer(
                ws,
                "myelin",
                shape_zyx=seg.info.shape_zyx,
                resolution_nm=seg.info.resolution_nm,
                dtype="uint32",
                kind="segmentation",
                chunk_zyx=seg.info.chunk_zyx,
                overwrite=True,
            )
            ws.delete_prefix("blocks/myelin/")
        mgrid = BlockGrid(seg.roi, grid.block_shape, myelin_context(seg.info.resolution_nm, config.myelin))
        run_blockwise(BlockTask("myelin", ws.url, mgrid, MyelinBlock(ws.url, config)), **kw)
        has_myelin = True
    else:
        log.warning("image layer %r not found: no myelin mask, compartments from geometry alone", config.image)
    seconds["myelin"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_blockwise(BlockTask("compartments", ws.url, grid, FeatureBlock(ws.url, config, has_myelin)), **kw)
    index = fragments.piece_index(ws, "compartments")
    synapse_table = ws.read_table("synapses") if ws.has_table("synapses") else None
    if synapse_table is not None and not {"pre", "post", "z", "y", "x"} <= set(synapse_table.columns):
        log.warning("tables/synapses lacks pre/post/z/y/x columns: not used for compartments")
        synapse_table = None
    synapses = synapse_table[["pre", "post", "z", "y", "x"]] if synapse_table is not None else None
    n_shards = max(1, min(len(index), len(grid) * 2))
    ws.delete_prefix("scratch/compartments/nodes-")
    ws.delete_prefix("blocks/compartments-merge/")
    run_blockwise(
        BlockTask(
            "compartments-merge",
            ws.url,
            _shard_grid(n_shards),
            ClassifyShard(ws.url, config, index, n_shards, synapses),
        ),
        **kw,
    )
    tables = [ws.read_table(k) for k in ws.list("scratch/compartments/nodes-") if k.endswith(".parquet")]
    tables = [t for t in tables if len(t)]
    nodes = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=NODE_COLUMNS)
    ws.write_table("skeleton_nodes", nodes)
    seconds["classify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    create_layer(
        ws,
        "compartments",
        shape_zyx=seg.info.shape_zyx,
        resolution_nm=seg.info.resolution_nm,
        dtype="uint32",
        kind="segmentation",
        chunk_zyx=seg.info.chunk_zyx,
        overwrite=True,
    )
    ws.delete_prefix("blocks/compartments-voxels/")
    run_blockwise(BlockTask("compartments-voxels", ws.url, grid, VoxelBlock(ws.url, config)), **kw)
    seconds["voxels"] = time.perf_counter() - t0
    outputs = ["compartments", "skeleton_nodes"] + (["myelin"] if has_myelin else [])
    if synapse_table is not None:  # the synapse rows' compartments, now that the rules have seen synapse polarity
        t0 = time.perf_counter()
        labels = synapse_compartments(synapse_table, seg, Layer(ws, "compartments"))
        synapse_table[["pre_compartment", "post_compartment"]] = labels
        ws.write_table("synapses", synapse_table)
        outputs.append("tables/synapses")
        seconds["synapse compartments"] = time.perf_counter() - t0
    ws.write_provenance(
        "compartments",
        parameters=_params(config),
        inputs=[config.segmentation, f"{config.segmentation}/skeletons"] + ([config.image] if has_myelin else []),
        outputs=outputs,
    )
    return MorphologyReport(int(nodes["id"].nunique()) if len(nodes) else 0, seconds, int(np.prod(seg.info.shape_zyx)))
