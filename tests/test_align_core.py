"""Field, flow, mesh and warp building blocks of alignment, on known answers."""

from pathlib import Path

import numpy as np
import pytest

from wiremap.align import known, normalize
from wiremap.align.field import Field, grid_shape, triangle_jacobians
from wiremap.align.flow import FlowConfig, clean_flow, estimate_flow, fit_affine, global_shift
from wiremap.align.mesh import MeshConfig, relax
from wiremap.align.warp import render_roi, warp_image

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    return np.load(DATA)["sections"][0]


def test_grid_and_affine_field_are_exact():
    assert grid_shape((256, 256), 16) == (17, 17)
    assert grid_shape((257, 100), 16) == (17, 8)
    a = np.array([[1.02, 0.01, 3.0], [-0.02, 0.98, -2.0]])
    f = Field.from_affine(a, (100, 120), 16)
    d = f.dense((100, 120))
    yy, xx = np.mgrid[0:100, 0:120]
    assert np.allclose(d[0], a[0, 0] * yy + a[0, 1] * xx + a[0, 2] - yy, atol=1e-3)
    assert np.allclose(d[1], a[1, 0] * yy + a[1, 1] * xx + a[1, 2] - xx, atol=1e-3)
    assert fit_affine(f) == pytest.approx(a, abs=1e-4)


def test_composition_of_translations_adds():
    f = Field.zeros((64, 64), 16).with_data(np.stack([np.full((5, 5), 2.0), np.full((5, 5), -1.0)]))
    g = Field.zeros((64, 64), 16).with_data(np.stack([np.full((5, 5), 0.5), np.full((5, 5), 3.0)]))
    h = f.then(g)
    assert np.allclose(h.data[0], 2.5) and np.allclose(h.data[1], 2.0)


def test_jacobian_detects_a_fold():
    f = Field.zeros((64, 64), 16)
    assert triangle_jacobians(f).min() == pytest.approx(1.0)
    d = f.data.copy()
    d[1, 2, 2] = 20.0  # node pushed past its right neighbour
    assert triangle_jacobians(f.with_data(d)).min() < 0


@pytest.mark.parametrize("shift", [(0.0, 0.0), (2.3, -1.7), (-5.5, 4.25)])
def test_flow_recovers_subpixel_translation(img, shift):
    c = np.zeros((2,) + img.shape)
    c[0], c[1] = shift
    moving = known.distort(img, c)  # moving(q) shows img(q + shift): the flow is -shift
    flow, ratio = estimate_flow(img, moving, FlowConfig(patch=64, stride=32))
    ok = np.isfinite(flow.data[0])
    assert ok.mean() > 0.5
    assert np.abs(flow.data[0][ok] + shift[0]).mean() < 0.15
    assert np.abs(flow.data[1][ok] + shift[1]).mean() < 0.15
    assert (ratio[ok] >= 1.3).all()
    d, r = global_shift(img, moving)
    assert d == pytest.approx((-shift[0], -shift[1]), abs=0.3)


def test_flow_on_blank_is_invalid():
    blank = np.full((128, 128), 90, np.uint8)
    flow, ratio = estimate_flow(blank, blank, FlowConfig(patch=32, stride=32))
    assert np.isnan(flow.data).all() and (ratio == 0).all()


def test_relax_fills_holes_drops_outliers_and_keeps_smooth_field():
    rng = np.random.default_rng(0)
    truth = Field.from_affine(np.array([[1.01, 0.0, 2.0], [0.0, 0.99, -1.0]]), (256, 256), 16)
    d = truth.data + rng.normal(0, 0.05, truth.data.shape).astype(np.float32)
    d[:, 5:8, 5:8] = np.nan  # a hole
    d[:, 12, 3] = [9.0, -9.0]  # an outlier
    flow = clean_flow(truth.with_data(d))
    assert np.isnan(flow.data[0, 12, 3])  # cleaned before the mesh sees it
    d2 = d.copy()
    d2[:, 12, 3] = [7.0, 1.0]  # uncleaned, 4 px off: the mesh drops it
    out = relax(truth.with_data(d2), reference=truth)
    assert np.isfinite(out.data).all()
    assert np.abs(out.data - truth.data).max() < 0.2
    assert triangle_jacobians(out).min() > 0


def test_cut_springs_let_two_sides_move_apart():
    f = Field.zeros((256, 256), 16)
    d = f.data.copy()
    d[1, :, 9:] = 6.0  # right half shifted by 6 px
    d[:, :, 8] = np.nan  # the fold column has no data
    cut = np.zeros(f.grid, bool)
    cut[:, 8] = True
    soft = relax(f.with_data(d), cut=cut, cfg=MeshConfig(outlier_rounds=0))
    stiff = relax(f.with_data(d), cfg=MeshConfig(outlier_rounds=0, stiffness=1.0))
    assert np.abs(soft.data[1, :, 10:] - 6.0).max() < 0.1
    assert np.abs(soft.data[1, :, :7]).max() < 0.1
    assert np.abs(stiff.data[1, :, 10] - 6.0).max() > np.abs(soft.data[1, :, 10] - 6.0).max()


class _Recording:
    """Array wrapper that records the windows read from it."""

    def __init__(self, a):
        self.a, self.shape, self.reads = a, a.shape, []

    def __getitem__(self, sl):
        self.reads.append(sl)
        return self.a[sl]


def test_blockwise_render_matches_whole_and_reads_only_its_window(img):
    f = Field.from_affine(np.array([[1.0, 0.02, 4.0], [-0.02, 1.0, -3.0]]), img.shape, 32)
    whole = render_roi(img, f, (0, 0), img.shape)
    blocks = warp_image(img, f, img.shape, block=64)
    assert np.allclose(whole, blocks, atol=1e-4)
    src = _Recording(img)
    render_roi(src, f, (64, 64), (32, 32))
    (ys, xs), = src.reads
    assert ys.stop - ys.start < 48 and xs.stop - xs.start < 48
    # pull semantics: output (y, x) shows source (y, x) + field
    assert whole[100, 120] == pytest.approx(img.astype(np.float32)[
        100 + 4 + round(0.02 * 120), 120 - 3 + round(-0.02 * 100)], abs=40)


def test_normalize_makes_gamma_change_nearly_invisible(img):
    changed = np.clip(255 * (img / 255.0) ** 0.5 * 0.8 + 20, 0, 255).astype(np.uint8)
    a = normalize.normalize_section(img).astype(float)
    b = normalize.normalize_section(changed).astype(float)
    assert np.abs(a - b).mean() < 4.0
    assert np.abs(img.astype(float) - changed).mean() > 20


def test_blank_and_fold_detection(img):
    assert not normalize.is_blank(img)
    assert normalize.is_blank(np.full((256, 256), 128, np.uint8))
    assert not normalize.fold_mask(img).any()
    c = np.zeros((2,) + img.shape)
    _, band, _ = known.add_fold(img, c, point=(100, 128), angle_deg=10, width=8, jump=0)
    folded = known.paint_band(img, band)
    m = normalize.fold_mask(folded)
    assert m[band].mean() > 0.9 and m[~band].mean() < 0.1


def test_iterative_solver_matches_direct():
    rng = np.random.default_rng(1)
    truth = Field.from_affine(np.array([[1.01, 0.0, 2.0], [0.0, 0.99, -1.0]]), (256, 256), 16)
    d = truth.data + rng.normal(0, 0.1, truth.data.shape).astype(np.float32)
    d[:, 3:6, 3:6] = np.nan
    direct = relax(truth.with_data(d), reference=truth)
    cg = relax(truth.with_data(d), reference=truth, cfg=MeshConfig(direct_max_nodes=0))
    assert np.abs(direct.data - cg.data).max() < 1e-3
