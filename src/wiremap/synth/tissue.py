"""Synthetic neuropil with ground truth: ``generate_tissue(TissueConfig) -> Tissue``.

Pipeline (pure functions, no I/O):

1. ``neuropil.grow_neuropil``: cells as skeletons in nm (somata, spiny and
   smooth dendrites, axons walking from target to target with boutons,
   myelinated fibres, cilia), synapse seeds, mitochondria capsules;
2. ``rasterize.paint_capsules``: each skeleton capsule's core into voxels
   (node id per voxel), then myelin sheaths as shells;
3. ``rasterize.expand_labels``: leftover space goes to the nearest neurite
   (up to ``expand_nm``), the rest to astrocyte processes, so the block is
   densely packed like real neuropil;
4. a 1-2 voxel extracellular gap between different cells, synaptic clefts
   carved between bouton and target, nuclei and mitochondria painted in;
5. tables (cells, synapses) and skeletons.

Everything stochastic draws from one generator seeded by ``config.seed``, so
the same config gives bit-identical output; all sizes are in nm, so the same
physical block at another voxel size is the same tissue, resampled.
"""

from __future__ import annotations

from collections.abc import Callable

import fastremap
import numpy as np
import pandas as pd
import pydantic

from wiremap.errors import ConfigError
from wiremap.synth.model import Compartment, Skeleton, Tissue
from wiremap.synth.morphology import segments
from wiremap.synth.neuropil import Neuropil, grow_neuropil
from wiremap.synth.rasterize import boundary_mask, expand_labels, gap_axes, paint_capsules, paint_masked
from wiremap.synth.wiring import CellType, carve_clefts, default_cell_types, default_connectivity

Range = tuple[float, float]


class TissueConfig(pydantic.BaseModel):
    """What tissue to grow.  Sizes in nm, densities per cubic micrometre."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    shape_zyx: tuple[int, int, int]  # volume size in voxels
    resolution_nm: tuple[float, float, float] = (30.0, 4.0, 4.0)  # voxel size (z, y, x)
    seed: int = 0  # all randomness derives from this
    # -- cells and wiring
    cell_types: dict[str, CellType] = pydantic.Field(default_factory=default_cell_types)  # neuron types
    connectivity: dict[str, dict[str, float]] = pydantic.Field(default_factory=default_connectivity)  # pre->post
    neurons_per_um3: float = 2.0  # neurons (mostly with somata outside) contributing neurites
    # -- packing
    margin_nm: float = 250.0  # world margin around the volume; neurites enter from there
    occupancy_cell_nm: float = 25.0  # grid used to keep neurites apart while growing
    dendrite_fraction: float = 0.22  # share of the volume dendrites (and somata) fill before axons grow
    neurite_fraction: float = 0.75  # share of the volume all neurite cores fill (rest: expansion, glia)
    max_fragments: int = 3000  # cap on neurite fragments entering the volume
    expand_nm: float = 40.0  # neurites swell into free space up to this far; beyond it is glia
    gap_nm: float = 8.0  # extracellular space between touching cells (1-2 voxels at 4 nm)
    astrocytes_per_um3: float = 0.05  # astrocytes sharing the glial processes
    # -- somata
    somata_per_um3: float = 0.03  # somata centred in the volume (scaled-down density so some fit)
    min_volume_for_soma_um3: float = 20.0  # volumes at least this big get at least one soma
    soma_radius_nm: Range = (1000.0, 2500.0)  # soma radius range (2-5 um diameter)
    soma_site_spacing_nm: float = 500.0  # spacing of possible axo-somatic synapses
    cilium_probability: float = 0.5  # chance a soma carries a primary cilium
    cilium_length_nm: Range = (1500.0, 3000.0)  # cilium length range
    cilium_radius_nm: float = 110.0  # cilium radius
    outside_soma_distance_nm: float = 50000.0  # where the virtual soma of an outside cell sits
    # -- dendrites and spines
    dendrite_taper_per_um: float = 0.93  # radius factor per um of dendrite
    dendrite_branch_per_um: float = 0.08  # branching rate of dendrites
    shaft_site_spacing_nm: float = 120.0  # spacing of possible shaft synapses
    spine_density_per_um: float = 4.5  # spines per um of spiny dendrite
    spine_neck_length_nm: Range = (250.0, 800.0)  # spine neck length range
    spine_neck_radius_nm: float = 50.0  # spine neck radius
    spine_head_radius_nm: Range = (130.0, 260.0)  # spine head radius range
    # -- axons
    axon_step_nm: float = 60.0  # step of the axon walk (sets its tortuosity scale)
    axon_branch_per_um: float = 0.15  # collateral branching rate of axons
    bouton_search_nm: float = 2500.0  # how far ahead an axon looks for its next target
    site_reserve_nm: float = 0.0  # room kept free for a bouton at each potential synapse site
    bouton_spacing_nm: float = 1500.0  # mean axon length between synaptic boutons
    contact_synapse_rate: float = 0.5  # chance a touch of an axon and a preferred target is a synapse
    spine_synapse_rate: float = 0.9  # chance a spine head touched by a preferring axon gets its synapse
    contact_reach_nm: float = 80.0  # surfaces this close count as touching (the bouton swells to meet)
    synapse_area_nm2: float = 200000.0  # shaft/soma membrane area per synapse it can receive
    myelinated_axons_per_um3: float = 0.01  # myelinated fibres per volume
    min_volume_for_myelin_um3: float = 8.0  # volumes at least this big get at least one
    myelinated_radius_nm: Range = (150.0, 300.0)  # axon radius inside myelin
    myelin_thickness_nm: Range = (60.0, 140.0)  # sheath thickness
    max_neurite_nm: float = 20000.0  # cap on one fragment's walk
    # -- organelles and synapses
    mito_per_node: float = 0.03  # chance a neurite node starts a mitochondrion
    mito_length_nm: Range = (300.0, 1200.0)  # mitochondrion length range
    mito_radius_nm: Range = (25.0, 130.0)  # mitochondrion radius range (clamped by the neurite)
    cleft_nm: float = 20.0  # synaptic cleft width
    pair_spacing_nm: float = 450.0  # synapses between the same two cells are at least this far apart

    @pydantic.model_validator(mode="after")
    def _check(self) -> TissueConfig:
        if min(self.shape_zyx) < 1 or min(self.resolution_nm) <= 0:
            raise ValueError("shape_zyx and resolution_nm must be positive")
        names = set(self.cell_types)
        bad = [k for k, v in self.connectivity.items() if k not in names or set(v) - names]
        if bad:
            raise ValueError(f"connectivity names unknown cell types: {bad}")
        return self


PRESETS: dict[str, dict] = {
    # serial-section TEM, 4 x 4 nm pixels, 30 nm sections (default)
    "sstem": {"shape_zyx": (64, 1024, 1024), "resolution_nm": (30.0, 4.0, 4.0)},
    # FIB-SEM, 8 nm isotropic
    "fibsem": {"shape_zyx": (128, 128, 128), "resolution_nm": (8.0, 8.0, 8.0)},
}


def preset_config(name: str, **overrides: object) -> TissueConfig:
    """A ``TissueConfig`` from a named preset with keyword overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown tissue preset {name!r}; choose one of {sorted(PRESETS)}")
    try:
        return TissueConfig(**{**PRESETS[name], **overrides})
    except pydantic.ValidationError as e:
        raise ConfigError(f"bad tissue config: {e}") from e


def generate_tissue(config: TissueConfig, progress: Callable[[str, float], None] | None = None) -> Tissue:
    """Grow a block of neuropil and return its voxels, tables and skeletons.

    ``progress(stage, fraction)`` is called with stages ``dendrites``,
    ``axons`` and ``rasterize``.  Notes on the ground truth:

    - ``cells`` holds neuron ids, so two fragments of one neuron that join
      outside the block share an id (run connected components for per-piece
      segmentation scores);
    - synapse normals are unit vectors in physical space (nm), given along
      the voxel axes (z, y, x), pointing from pre to post;
    - skeleton nodes are in nm; ``Skeleton.in_volume`` marks nodes inside the
      block (a cell whose soma lies outside has a virtual root there, far away,
      marked ``False``); every in-volume node lies inside its cell's voxels;
    - ``cell_table`` has an extra column ``soma_radius_nm``.
    """
    def report(stage: str, f: float) -> None:
        if progress is not None:
            progress(stage, f)

    rng = np.random.default_rng(config.seed)
    res = np.array(config.resolution_nm, float)
    shape = (int(config.shape_zyx[0]), int(config.shape_zyx[1]), int(config.shape_zyx[2]))
    grown = grow_neuropil(config, rng, progress)
    report("rasterize", 0.0)
    cells, comps, myelin, node_cell = _voxelize(grown, res, shape, config)
    report("rasterize", 0.6)
    clefts = np.zeros(shape, np.uint32)
    rows = carve_clefts(cells, comps, clefts, res, grown.seeds, config.cleft_nm, config.pair_spacing_nm)
    report("rasterize", 0.8)
    nuclei = _nuclei(grown, cells, res)
    comps[nuclei] = Compartment.SOMA  # the nucleus is part of the soma, whatever neurite is near
    mitos = _mitochondria(grown, cells, res)
    report("rasterize", 1.0)
    cell_table, synapse_table, skeletons = _tables(grown, cells, rows, res, shape)
    return Tissue(
        resolution_nm=tuple(float(r) for r in res),  # type: ignore[arg-type]
        cells=cells, compartments=comps, myelin=myelin, mitochondria=mitos, nuclei=nuclei,
        synapse_clefts=clefts, cell_table=cell_table, synapse_table=synapse_table, skeletons=skeletons,
    )


def _voxelize(grown: Neuropil, res: np.ndarray, shape: tuple[int, int, int], cfg: TissueConfig):
    """Cores, sheaths, expansion, glia and gaps -> (cells, compartments, myelin)."""
    seg = segments(grown.builders)
    n_nodes = sum(len(b.nodes) for b in grown.builders)
    oligos = sorted({int(o) for o in seg["sheath_owner"] if o > 0})
    sheath_id = {o: n_nodes + 1 + i for i, o in enumerate(oligos)}
    n_ids = n_nodes + 1 + len(oligos)
    node_cell = np.zeros(n_ids, np.uint64)
    node_comp = np.zeros(n_ids, np.uint8)
    base = 1
    for b in grown.builders:
        node_cell[base : base + len(b.nodes)] = b.cid
        node_comp[base : base + len(b.nodes)] = b.comps
        base += len(b.nodes)
    for o, i in sheath_id.items():
        node_cell[i] = o
        node_comp[i] = Compartment.GLIA

    best = np.full(shape, np.inf, np.float32)
    owner = np.zeros(shape, np.int32)
    paint_capsules(best, owner, res, seg["p0"], seg["p1"], seg["r0"], seg["r1"], seg["gid"])
    sh = seg["sheath"] > 0
    if sh.any():
        ids = np.array([sheath_id[int(o)] for o in seg["sheath_owner"][sh]], np.int64)
        paint_capsules(best, owner, res, seg["p0"][sh], seg["p1"][sh], seg["r0"][sh] + seg["sheath"][sh],
                       seg["r1"][sh] + seg["sheath"][sh], ids, shell=seg["sheath"][sh])
    del best
    myelin = owner > n_nodes
    filled, far = expand_labels(owner, res, cfg.expand_nm)
    del owner
    cells = node_cell[filled]
    comps = node_comp[filled]
    del filled
    if far.any():
        _astrocytes(cells, comps, far, grown, res)
    del far
    cells[myelin] = 0
    comps[myelin] = Compartment.EXTRACELLULAR
    axes, both = gap_axes(res, cfg.gap_nm)
    gap = boundary_mask(cells, axes, both)
    cells[gap] = 0
    comps[gap] = Compartment.EXTRACELLULAR
    return cells, comps, myelin, node_cell


def _astrocytes(cells: np.ndarray, comps: np.ndarray, far: np.ndarray, grown: Neuropil, res: np.ndarray) -> None:
    """Give voxels far from every neurite to the astrocyte whose territory they lie in."""
    ids = np.array(list(grown.glia_centres), np.uint64)
    ctr = np.array([grown.glia_centres[int(i)] for i in ids])
    yy = (np.arange(cells.shape[1]) * res[1])[:, None]
    xx = (np.arange(cells.shape[2]) * res[2])[None, :]
    for z in range(cells.shape[0]):
        m = far[z]
        if not m.any():
            continue
        d2 = [(z * res[0] - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 for c in ctr]
        lab = ids[np.argmin(np.stack(d2), axis=0)]
        cells[z][m] = lab[m]
        comps[z][m] = Compartment.GLIA


def _nuclei(grown: Neuropil, cells: np.ndarray, res: np.ndarray) -> np.ndarray:
    lab = np.zeros(cells.shape, np.uint8)
    for cid, info in sorted(grown.infos.items()):
        if info.nucleus_nm is not None:
            paint_masked(lab, cells, res, info.nucleus_nm, info.nucleus_nm, info.nucleus_r, info.nucleus_r, 1, cid)
    return lab.astype(bool)


def _mitochondria(grown: Neuropil, cells: np.ndarray, res: np.ndarray) -> np.ndarray:
    lab = np.zeros(cells.shape, np.uint32)
    for a, b, r, cid, mid in grown.mitos:
        paint_masked(lab, cells, res, a, b, r, r, mid, cid)
    lab, _ = fastremap.renumber(lab, in_place=True, preserve_zero=True)
    return lab.astype(np.uint32, copy=False)


def _tables(grown: Neuropil, cells: np.ndarray, rows: list[dict], res: np.ndarray, shape):
    present = set(int(u) for u in fastremap.unique(cells) if u != 0)
    hi = np.array(shape, float) * res
    recs = []
    for cid in sorted(grown.infos):
        info = grown.infos[cid]
        if cid not in present:
            continue
        if info.soma_nm is not None:
            sv = info.soma_nm / res
            inside = bool(np.all(info.soma_nm >= 0) and np.all(info.soma_nm < hi))
        else:
            sv = np.full(3, np.nan)
            inside = False
        recs.append({
            "id": np.uint64(cid), "kind": info.kind, "cell_type": info.cell_type, "ei": info.ei,
            "soma_z": sv[0], "soma_y": sv[1], "soma_x": sv[2], "soma_in_volume": inside,
            "has_cilium": info.has_cilium, "soma_radius_nm": info.soma_r if info.soma_nm is not None else np.nan,
        })
    cell_table = pd.DataFrame.from_records(recs, columns=[
        "id", "kind", "cell_type", "ei", "soma_z", "soma_y", "soma_x", "soma_in_volume", "has_cilium",
        "soma_radius_nm"])
    cell_table["id"] = cell_table["id"].astype(np.uint64)
    ei = {cid: grown.infos[cid].ei for cid in grown.infos}
    syn = pd.DataFrame.from_records(rows, columns=[
        "id", "pre", "post", "z", "y", "x", "nz", "ny", "nx", "size", "post_compartment"])
    syn["ei"] = [ei[int(p)] for p in syn["pre"]]
    syn = syn[["id", "pre", "post", "z", "y", "x", "nz", "ny", "nx", "size", "ei", "post_compartment"]]
    syn = syn.astype({"id": np.uint32, "pre": np.uint64, "post": np.uint64, "size": np.int64})
    skeletons = {b.cid: _snap(b.skeleton(hi), b.cid, cells, res) for b in grown.builders if b.cid in present}
    return cell_table, syn.reset_index(drop=True), skeletons


def _snap(sk: Skeleton, cid: int, cells: np.ndarray, res: np.ndarray) -> Skeleton:
    """Move in-volume nodes that fell on a gap or a neighbour onto their own cell's nearest voxel.

    Neighbours are kept apart only to the growth grid's precision, so about
    1 % of thin-axon nodes end up a voxel or two off their cell; the skeleton
    is ground truth for the voxels, so it follows them.
    """
    assert sk.in_volume is not None
    shape = np.array(cells.shape)
    idx = np.flatnonzero(sk.in_volume)
    vox = np.minimum(np.round(sk.nodes_nm[idx] / res).astype(np.int64), shape - 1)
    wrong = cells[tuple(vox.T)] != cid
    if not wrong.any():
        return sk
    nodes = sk.nodes_nm.copy()
    for i, v in zip(idx[wrong], vox[wrong], strict=True):
        reach = np.ceil((sk.radii_nm[i] + 3 * res.max()) / res).astype(np.int64)
        lo = np.maximum(v - reach, 0)
        hi = np.minimum(v + reach + 1, shape)
        own = np.argwhere(cells[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == cid)
        if own.size:
            p = (own + lo) * res
            nodes[i] = p[np.argmin(((p - nodes[i]) ** 2).sum(1))]
    return Skeleton(nodes_nm=nodes, radii_nm=sk.radii_nm, parents=sk.parents,
                    compartments=sk.compartments, in_volume=sk.in_volume)
