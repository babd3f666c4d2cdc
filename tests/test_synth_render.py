"""EM rendering of synthetic tissue: determinism, contrast of membranes, synapses, vesicles."""

import numpy as np
import pandas as pd
import pydantic
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from wiremap.errors import InputError
from wiremap.realism import boundary_mask
from wiremap.synth.model import Compartment, Tissue
from wiremap.synth.render import RenderConfig, render_em

RES = (30.0, 4.0, 4.0)
# no noise, drift or random organelles: only what a test looks at
CLEAN = dict(
    noise_gray=0.0,
    drift_gray=0.0,
    gradient_gray=0.0,
    organelle_density=0.0,
    glycogen_density=0.0,
    microtubule_contrast=0.0,
    grain_contrast=0.0,
    cloud_contrast=0.0,
    cell_gray_jitter=0.0,
    speckle_contrast=0.0,
)


def make_tissue(cells, comp=None, mito=None, myelin=None, clefts=None, synapses=None) -> Tissue:
    cells = cells.astype(np.uint64)
    comp = comp if comp is not None else np.where(cells > 0, Compartment.AXON, 0).astype(np.uint8)
    zero = np.zeros(cells.shape, bool)
    ids = np.unique(cells[cells > 0])
    return Tissue(
        resolution_nm=RES,
        cells=cells,
        compartments=comp,
        myelin=myelin if myelin is not None else zero,
        mitochondria=mito if mito is not None else np.zeros(cells.shape, np.uint32),
        nuclei=zero.copy(),
        synapse_clefts=clefts if clefts is not None else np.zeros(cells.shape, np.uint32),
        cell_table=pd.DataFrame({"id": ids, "kind": "neuron"}),
        synapse_table=synapses if synapses is not None else pd.DataFrame(),
    )


def voronoi_tissue(shape=(4, 96, 96), n=24, seed=0) -> Tissue:
    """2D Voronoi cells extruded through z, shifting by a pixel per section."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, shape[1], (n, 2))
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]]
    cells = np.zeros(shape, np.uint64)
    for k in range(shape[0]):
        _, idx = cKDTree(pts).query(np.column_stack([yy.ravel() + k, xx.ravel()]))
        cells[k] = idx.reshape(shape[1:]) + 1
    return make_tissue(cells)


def synapse_tissue() -> Tissue:
    """Two synapses across straight clefts: 1 -> 2 excitatory, 3 -> 4 inhibitory (normal +x)."""
    nz, ny, nx = 3, 96, 192
    cells = np.zeros((nz, ny, nx), np.uint64)
    cells[:, :, 0:48], cells[:, :, 48:96] = 1, 2
    cells[:, :, 96:144], cells[:, :, 144:192] = 3, 4
    clefts = np.zeros((nz, ny, nx), np.uint32)
    clefts[:, 24:72, 46:50], clefts[:, 24:72, 142:146] = 1, 2
    cells[clefts > 0] = 0
    comp = np.where(np.isin(cells, [1, 3]), Compartment.AXON, Compartment.DENDRITE)
    comp = np.where(cells > 0, comp, 0).astype(np.uint8)
    syn = pd.DataFrame(
        {
            "id": [1, 2],
            "pre": [1, 3],
            "post": [2, 4],
            "z": [1.0, 1.0],
            "y": [47.5, 47.5],
            "x": [47.5, 143.5],
            "nz": [0.0, 0.0],
            "ny": [0.0, 0.0],
            "nx": [1.0, 1.0],
            "size": [576, 576],
            "ei": ["E", "I"],
            "post_compartment": ["dendrite", "dendrite"],
        }
    )
    return make_tissue(cells, comp=comp, clefts=clefts, synapses=syn)


def test_dtype_shape_and_determinism():
    t = voronoi_tissue()
    a = render_em(t, RenderConfig(), seed=3)
    b = render_em(t, RenderConfig(), seed=3)
    c = render_em(t, RenderConfig(), seed=4)
    assert a.dtype == np.uint8 and a.shape == t.shape_zyx
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.5
    f = render_em(t, RenderConfig.preset("fibsem"), seed=3)
    assert f.shape == t.shape_zyx and not np.array_equal(f, a)


def test_membranes_darker_than_cytoplasm():
    t = voronoi_tissue()
    img = render_em(t, RenderConfig(), seed=0).astype(float)
    edge = boundary_mask(t.cells, 2)
    interior = np.stack([ndi.distance_transform_edt(~e) >= 6 for e in edge])
    assert img[interior].mean() - img[edge].mean() > 50
    # per boundary pixel, not just on average: 90 % are darker than the interior median
    assert np.mean(img[edge] < np.median(img[interior])) > 0.9


def test_compartment_grey_levels_are_ordered():
    t = voronoi_tissue(n=16, seed=1)
    cells = t.cells
    comp = np.where(cells > 0, Compartment.AXON, 0).astype(np.uint8)
    # the three largest cells become myelinated axon, mitochondrion host and glia
    myelin_id, mito_id, glia_id = np.argsort(np.bincount(cells[0].ravel().astype(int)))[::-1][:3]
    comp[cells == glia_id] = Compartment.GLIA
    inner = np.stack([ndi.binary_erosion(s == mito_id, iterations=6) for s in cells])
    mito = inner.astype(np.uint32)
    # myelin: a ring inside cell `myelin_id`, around its core
    core = np.stack([ndi.binary_erosion(s == myelin_id, iterations=8) for s in cells])
    ring = np.stack([ndi.binary_erosion(s == myelin_id, iterations=3) for s in cells]) & ~core
    cells = cells.copy()
    cells[ring] = 0
    comp[ring] = 0
    t = make_tissue(cells, comp=comp, mito=mito, myelin=ring)
    img = render_em(t, RenderConfig(noise_gray=0, organelle_density=0, glycogen_density=0), 0)
    far = np.stack([ndi.distance_transform_edt(~e) >= 4 for e in boundary_mask(cells, 2)])
    axon = (comp == Compartment.AXON) & (mito == 0) & far
    mean = {
        k: img[m].mean()
        for k, m in {
            "myelin": ring,
            "mito": (mito > 0) & far,
            "axon": axon,
            "glia": (comp == Compartment.GLIA) & far,
        }.items()
    }
    assert mean["myelin"] + 20 < mean["mito"] < mean["axon"] - 20 < mean["glia"] - 25


def test_nucleus_envelope_and_glycogen():
    # one soma (left) with a round nucleus, one glial cell (right)
    cells = np.ones((3, 96, 192), np.uint64)
    cells[:, :, 96:] = 2
    comp = np.where(cells == 1, Compartment.SOMA, Compartment.GLIA).astype(np.uint8)
    yy, xx = np.mgrid[0:96, 0:192]
    r = np.hypot(yy - 48, xx - 48)
    t = make_tissue(cells, comp=comp)
    t.nuclei = np.broadcast_to(r < 30, cells.shape).copy()
    quiet = RenderConfig(noise_gray=0, organelle_density=0, glycogen_density=0)
    img = render_em(t, quiet, 0).astype(float)
    envelope = np.abs(r - 30) < 1.5
    assert img[1][envelope].mean() < img[1][r < 12].mean() - 40
    assert img[1][envelope].mean() < img[1][(r > 36) & (xx < 90)].mean() - 40
    # glycogen granules darken glia only
    glyco = render_em(t, quiet.model_copy(update={"glycogen_density": 300.0}), 0).astype(float)
    glia = (cells[1] == 2) & (xx > 100)
    assert glyco[1][glia].mean() < img[1][glia].mean() - 3
    np.testing.assert_array_equal(glyco[1][xx < 90], img[1][xx < 90])


def test_sections_mix_a_little_across_z():
    # a boundary only in the middle section: the slab PSF shows a faint copy next door
    cells = np.ones((3, 64, 64), np.uint64)
    cells[1, :, 32:] = 2
    t = make_tissue(cells)
    mixed = render_em(t, RenderConfig(**CLEAN), 0).astype(float)
    sharp = render_em(t, RenderConfig(**dict(CLEAN, psf_sigma_z_nm=0.0)), 0).astype(float)
    w = RenderConfig().psf_sigma_z_nm
    assert w > 0
    for img, lo, hi in ((mixed, 2, 40), (sharp, -1, 1)):
        ghost = img[0, :, 30:34].mean() - img[0, :, 5:20].mean()
        assert -hi < ghost < -lo
    assert mixed[1, :, 30:34].mean() > sharp[1, :, 30:34].mean() + 5  # and the original fades


def _post_profile(img, x0, step):
    """Mean grey level along x from the cleft edge ``x0`` into one cell (rows across the cleft)."""
    xs = x0 + step * np.arange(20)
    return img[1, 32:64, :].astype(float).mean(axis=0)[xs]


def test_excitatory_and_inhibitory_densities_differ():
    t = synapse_tissue()
    img = render_em(t, RenderConfig(vesicles_per_synapse=0, **CLEAN), seed=0)
    e_post, e_pre = _post_profile(img, 50, 1), _post_profile(img, 45, -1)
    i_post, i_pre = _post_profile(img, 146, 1), _post_profile(img, 141, -1)
    cyto = img[1, 32:64, 70:80].mean()
    thr = 0.5 * (cyto + RenderConfig().psd_gray)

    def width(p):  # dark pixels from the cleft outward
        return int(np.argmax(p >= thr)) if (p >= thr).any() else len(p)

    # asymmetric (E): thick post density, much thinner pre; symmetric (I): thin on both sides
    assert width(e_post) * 4 >= 0.6 * RenderConfig().e_post_density_nm
    assert width(e_post) >= width(e_pre) + 4
    assert width(i_post) * 4 <= 20 and abs(width(i_post) - width(i_pre)) <= 1
    assert width(e_post) >= width(i_post) + 4
    # and darker: mean over the first 40 nm of the post side
    assert e_post[:10].mean() + 30 < i_post[:10].mean()
    # away from the synapses the two boundaries look the same
    assert abs(img[1, 5:15, 40:56].mean() - img[1, 5:15, 136:152].mean()) < 3


def test_vesicles_only_inside_presynaptic_cells():
    t = synapse_tissue()
    cfg = dict(CLEAN, psf_sigma_xy_nm=0.0, psf_sigma_z_nm=0.0)
    with_v = render_em(t, RenderConfig(vesicles_per_synapse=150, **cfg), seed=2)
    without = render_em(t, RenderConfig(vesicles_per_synapse=0, **cfg), seed=2)
    changed = with_v != without
    assert changed.sum() > 500  # many vesicles were drawn
    assert set(np.unique(t.cells[changed]).tolist()) == {1, 3}  # pre cells only
    assert (with_v[changed] < without[changed]).all()  # vesicles darken
    # clustered at the active zone: most vesicle pixels within 250 nm of the cleft
    dist_px = np.abs(np.nonzero(changed)[2][:, None] - np.array([46, 142])[None]).min(axis=1)
    assert np.mean(dist_px * 4 <= 250) > 0.9


def test_bad_input_and_config():
    t = voronoi_tissue()
    t.myelin = np.zeros((1, 2, 2), bool)
    with pytest.raises(InputError):
        render_em(t, RenderConfig(), 0)
    with pytest.raises(pydantic.ValidationError):
        RenderConfig(membrane_thicknes_nm=3)
    with pytest.raises(ValueError):
        RenderConfig.preset("confocal")  # type: ignore[arg-type]
    cfg = RenderConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.noise_gray = 0  # type: ignore[misc]
