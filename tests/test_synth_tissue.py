"""Synthetic tissue geometry: determinism, ground-truth consistency, wiring rules."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from wiremap.errors import ConfigError
from wiremap.synth.model import Compartment
from wiremap.synth.tissue import PRESETS, TissueConfig, generate_tissue, preset_config

TINY = {"shape_zyx": (24, 384, 384), "resolution_nm": (30.0, 4.0, 4.0)}
# a bit bigger and denser in somata/synapse sites, so that rules show in the statistics
RICH = {
    "shape_zyx": (32, 512, 512), "resolution_nm": (30.0, 4.0, 4.0), "seed": 3,
    "somata_per_um3": 0.3, "soma_radius_nm": (700.0, 900.0), "myelinated_axons_per_um3": 0.2,
    "min_volume_for_myelin_um3": 1.0, "cilium_probability": 1.0,
}


@pytest.fixture(scope="module")
def tiny():
    return generate_tissue(TissueConfig(**TINY))


@pytest.fixture(scope="module")
def rich():
    return generate_tissue(TissueConfig(**RICH))


def _same(a, b) -> bool:
    arrays = ("cells", "compartments", "myelin", "mitochondria", "nuclei", "synapse_clefts")
    if not all(np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays):
        return False
    if not (a.cell_table.equals(b.cell_table) and a.synapse_table.equals(b.synapse_table)):
        return False
    if a.skeletons.keys() != b.skeletons.keys():
        return False
    return all(np.array_equal(a.skeletons[k].nodes_nm, b.skeletons[k].nodes_nm) for k in a.skeletons)


def test_same_seed_is_bit_identical_and_other_seed_differs(tiny):
    again = generate_tissue(TissueConfig(**TINY))
    assert _same(tiny, again)
    other = generate_tissue(TissueConfig(**TINY, seed=1))
    assert not np.array_equal(tiny.cells, other.cells)


def test_volumes_have_the_documented_types_and_shapes(tiny):
    shape = TINY["shape_zyx"]
    for name, dtype in [("cells", np.uint64), ("compartments", np.uint8), ("myelin", bool),
                        ("mitochondria", np.uint32), ("nuclei", bool), ("synapse_clefts", np.uint32)]:
        arr = getattr(tiny, name)
        assert arr.shape == shape and arr.dtype == dtype, name
    assert tiny.resolution_nm == (30.0, 4.0, 4.0)


def test_neuropil_is_densely_packed_with_thin_gaps(tiny, rich):
    ecs = float((rich.cells == 0).mean())
    assert 0.01 < ecs < 0.25  # a thin extracellular space, no big holes
    c = tiny.cells
    # every pair of different cells touching in-plane is separated by background
    assert not np.any((c[:, :, 1:] != c[:, :, :-1]) & (c[:, :, 1:] != 0) & (c[:, :, :-1] != 0))
    assert not np.any((c[:, 1:, :] != c[:, :-1, :]) & (c[:, 1:, :] != 0) & (c[:, :-1, :] != 0))
    neurons = tiny.cell_table[tiny.cell_table.kind == "neuron"]
    assert len(neurons) >= 5
    assert (~neurons.soma_in_volume).sum() >= 4  # mostly neurites of cells whose soma is elsewhere
    assert neurons.loc[~neurons.soma_in_volume, "soma_z"].isna().all()


def test_compartments_consistent_with_cells(rich):
    t = rich
    cells, comps = t.cells, t.compartments
    assert np.array_equal(comps == Compartment.EXTRACELLULAR, cells == 0)
    assert not np.any(t.myelin & (cells != 0))
    assert not np.any((t.synapse_clefts > 0) & (cells != 0))
    assert not np.any((t.mitochondria > 0) & (cells == 0))
    assert np.all(comps[t.nuclei] == Compartment.SOMA)
    kinds = t.cell_table.set_index("id").kind
    glia = np.isin(cells, kinds[kinds == "glia"].index.to_numpy(np.uint64))
    assert np.all(comps[glia] == Compartment.GLIA)
    assert np.all(comps[(cells != 0) & ~glia] != Compartment.GLIA)
    # organelles and special structures are present
    assert t.myelin.any() and t.nuclei.any() and t.mitochondria.max() >= 5
    assert (comps == Compartment.CILIUM).any()
    assert set(t.cell_table.cell_type) >= {"astrocyte", "oligodendrocyte"}
    cil = t.cell_table[t.cell_table.has_cilium]
    assert len(cil) >= 1 and cil.soma_in_volume.all()
    cil_ids = np.unique(cells[comps == Compartment.CILIUM])
    assert set(cil_ids.tolist()) <= set(cil.id.tolist())


def test_synapses_sit_between_pre_axon_and_post(rich):
    t = rich
    syn = t.synapse_table
    assert len(syn) >= 8
    ct = t.cell_table.set_index("id")
    res = np.array(t.resolution_nm)
    # two synapses between the same two cells are at least a bouton apart (centroids: a little less)
    for _, pair in syn.groupby(["pre", "post"]):
        xyz = pair[["z", "y", "x"]].to_numpy() * res
        gaps = np.linalg.norm(xyz[:, None] - xyz[None], axis=2)[np.triu_indices(len(pair), 1)]
        assert np.all(gaps > 0.5 * TissueConfig(**RICH).pair_spacing_nm)
    for row in syn.itertuples():
        cleft = t.synapse_clefts == row.id
        assert cleft.sum() == row.size > 0
        z, y, x = np.nonzero(cleft)
        lo = np.maximum([z.min() - 2, y.min() - 3, x.min() - 3], 0)
        hi = np.array([z.max() + 3, y.max() + 4, x.max() + 4])
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        cl = cleft[sl]
        shell = ndi.binary_dilation(cl, iterations=1) & ~cl
        cells = t.cells[sl]
        comps = t.compartments[sl]
        pre = shell & (cells == row.pre)
        post = shell & (cells == row.post)
        assert pre.any() and post.any(), row.id
        assert np.mean(comps[pre] == Compartment.AXON) > 0.8  # the bouton is axon
        # the normal points from the pre side to the post side (in nm)
        n = np.array([row.nz, row.ny, row.nx])
        assert abs(np.linalg.norm(n) - 1) < 1e-6
        side = (np.argwhere(post).mean(0) - np.argwhere(pre).mean(0)) * res
        assert side @ n > 0, row.id
        assert row.ei == ct.loc[row.pre, "ei"]
        assert ct.loc[row.pre, "kind"] == "neuron" and ct.loc[row.post, "kind"] == "neuron"
        assert row.pre != row.post
        centre = np.array([row.z, row.y, row.x])
        assert np.all(np.abs(centre - [z.mean(), y.mean(), x.mean()]) < 1e-6)


def test_wiring_follows_the_type_rules(rich):
    syn = rich.synapse_table
    ct = rich.cell_table.set_index("id")
    pre_t = ct.loc[syn.pre.to_numpy(), "cell_type"].to_numpy()
    post_c = syn.post_compartment.to_numpy()
    types = TissueConfig(**RICH).cell_types
    for t_name, comp in zip(pre_t, post_c, strict=True):
        assert types[t_name].targets[comp] > 0  # zero preference never happens
    # E axons contact spines and dendrites, basket cells somata
    assert set(post_c[syn.ei.to_numpy() == "E"]) <= {"spine", "dendrite"}
    assert not np.any(post_c[pre_t == "basket"] == "spine")
    # only basket cells contact somata (all other types have zero preference), and they do
    assert set(pre_t[post_c == "soma"]) == {"basket"}


def test_a_custom_rule_matrix_is_obeyed():
    names = ["pyr_a", "pyr_b", "basket", "martinotti"]
    conn = {a: {b: 0.0 for b in names} for a in names}
    conn["pyr_a"]["pyr_b"] = 1.0
    conn["pyr_b"]["pyr_a"] = 1.0
    t = generate_tissue(TissueConfig(**{**TINY, "shape_zyx": (32, 512, 512)}, connectivity=conn, seed=5))
    syn = t.synapse_table
    assert len(syn) >= 3
    ct = t.cell_table.set_index("id")
    pairs = set(zip(ct.loc[syn.pre.to_numpy(), "cell_type"], ct.loc[syn.post.to_numpy(), "cell_type"],
                    strict=True))
    assert pairs <= {("pyr_a", "pyr_b"), ("pyr_b", "pyr_a")}
    assert (syn.post_compartment == "spine").sum() >= 1  # excitatory axons find spines


def test_skeleton_nodes_lie_inside_their_cell(rich):
    t = rich
    res = np.array(t.resolution_nm)
    shape = np.array(t.shape_zyx)
    neurons = set(t.cell_table.id[t.cell_table.kind == "neuron"].tolist())
    assert set(t.skeletons) == neurons
    n_in = 0
    for cid, sk in t.skeletons.items():
        assert sk.parents[0] == -1 and np.all(sk.parents[1:] < np.arange(1, len(sk.parents)))
        inside = np.all((sk.nodes_nm >= 0) & (sk.nodes_nm < shape * res), axis=1)
        assert np.all(sk.in_volume <= inside)
        vox = np.minimum(np.round(sk.nodes_nm[sk.in_volume] / res).astype(int), shape - 1)
        assert np.all(t.cells[tuple(vox.T)] == cid), cid
        n_in += int(sk.in_volume.sum())
        comps = set(sk.compartments.tolist())
        assert Compartment.AXON in comps or Compartment.DENDRITE in comps
    assert n_in > 100
    # trees branch: dendrites and axons have nodes with two or more children
    branched = {Compartment.AXON: 0, Compartment.DENDRITE: 0}
    for sk in t.skeletons.values():
        kids = np.bincount(sk.parents[sk.parents >= 0], minlength=len(sk.parents))
        for comp in branched:
            branched[comp] += int(np.sum((kids >= 2) & (sk.compartments == comp)))
    assert branched[Compartment.AXON] > 0 and branched[Compartment.DENDRITE] > 0


def test_same_physical_block_at_another_resolution_is_the_same_tissue():
    a = generate_tissue(TissueConfig(shape_zyx=(16, 120, 120), resolution_nm=(30.0, 4.0, 4.0), seed=2))
    b = generate_tissue(TissueConfig(shape_zyx=(60, 60, 60), resolution_nm=(8.0, 8.0, 8.0), seed=2))
    assert list(a.skeletons) == list(b.skeletons)
    for k in a.skeletons:
        assert np.array_equal(a.skeletons[k].parents, b.skeletons[k].parents)
    # labels agree on most of the common grid (sampling differs at boundaries)
    za = (np.arange(60) * 8 / 30).round().astype(int).clip(0, 15)
    ya = (np.arange(60) * 2).clip(0, 119)
    sub = a.cells[np.ix_(za, ya, ya)]
    both = (sub != 0) & (b.cells != 0)
    assert (sub[both] == b.cells[both]).mean() > 0.85


def test_presets_and_config_errors():
    assert PRESETS["sstem"]["resolution_nm"] == (30.0, 4.0, 4.0)
    assert PRESETS["fibsem"]["resolution_nm"] == (8.0, 8.0, 8.0)
    assert preset_config("fibsem", shape_zyx=(8, 8, 8)).resolution_nm == (8.0, 8.0, 8.0)
    with pytest.raises(ConfigError):
        preset_config("nope")
    with pytest.raises(ConfigError):
        preset_config("sstem", bogus=1)
    with pytest.raises(ValueError):
        TissueConfig(shape_zyx=(4, 4, 4), connectivity={"ghost": {}})
