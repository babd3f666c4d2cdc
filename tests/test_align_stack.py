"""Section alignment on real ssTEM crops (ISBI 2012) with known warps, scored in pixels."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from wiremap.align import known
from wiremap.align.field import triangle_jacobians
from wiremap.align.stack import AlignConfig, align_pair, align_stack

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


@pytest.fixture(scope="module")
def sections() -> np.ndarray:
    return np.load(DATA)["sections"]


def _warped(src, seed, **kw):
    c = known.smooth_warp(src.shape, amplitude=3.0, sigma=48, seed=seed, **kw)
    return c, known.distort(src, c, noise=6, seed=seed)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_pair_recovers_elastic_warp_and_stretch(sections, k):
    src = sections[k]
    cf, fixed = _warped(src, 10 + k)
    cm, moving = _warped(src, 20 + k, stretch=(0.03, -0.02), shift=(3.3, -5.6),
                         rotation_deg=1.0)
    res = align_pair(fixed, moving, AlignConfig())
    err = known.pull_residual(res.field, cf, cm)
    assert err.mean() <= 0.25
    assert np.percentile(err, 95) <= 0.5
    assert triangle_jacobians(res.field).min() > 0
    # the stretch went into the affine part, not the springs
    assert abs(res.affine[0, 0] - 1.0) > 0.015


def _stack(src):
    """6 sections: a blank at 1, a fold at 3, a contrast change (gamma) at 4."""
    shape = src.shape
    contents, imgs, bands = [], [], []
    for z in range(5):
        c = known.smooth_warp(shape, amplitude=3.0, sigma=48, seed=z,
                              stretch=(0.02 * (z % 2), -0.015 * (z == 2)),
                              shift=(2 * z, -3 * z), rotation_deg=0.5 * z)
        band = None
        if z == 2:
            c, band, _ = known.add_fold(src, c, point=(128, 128), angle_deg=30, width=10, jump=6)
        kw = dict(gain=0.7, gamma=0.6, offset=30) if z == 3 else {}
        im = known.distort(src, c, noise=6, seed=z, **kw)
        if band is not None:
            im = known.paint_band(im, band)
        contents.append(c)
        imgs.append(im)
        bands.append(band)
    imgs.insert(1, np.full(shape, 200, np.uint8))
    contents.insert(1, None)
    bands.insert(1, None)
    return imgs, contents, bands


def _fold_exclusion(field, band, grow=16):
    """Output pixels that map into the fold band grown by one mesh spacing."""
    h, w = band.shape
    d = field.dense((h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    qy = np.clip(np.rint(yy + d[0]).astype(int), 0, h - 1)
    qx = np.clip(np.rint(xx + d[1]).astype(int), 0, w - 1)
    return ndimage.binary_dilation(band, iterations=grow)[qy, qx]


def test_stack_with_blank_fold_and_contrast_change(sections):
    imgs, contents, bands = _stack(sections[0])
    res = align_stack(imgs, AlignConfig(reference="first"))  # bookkeeping of a forward walk
    assert [r.status for r in res] == ["reference", "blank", "aligned", "aligned", "aligned",
                                       "aligned"]
    assert res[1].field is None and "blank: bridged" in res[1].flags
    assert res[2].matched_to == 0
    assert res[3].fold_fraction > 0.01  # the fold was found and masked
    assert res[4].matched_to == 2  # matched past the folded section
    errs = []
    for r in res[2:]:
        ex = None if bands[r.z] is None else _fold_exclusion(r.field, bands[r.z])
        e = known.pull_residual(r.field, contents[0], contents[r.z], exclude=ex)
        assert e.mean() <= 0.25, (r.z, e.mean())
        assert np.percentile(e, 95) <= 0.5, (r.z, np.percentile(e, 95))
        assert triangle_jacobians(r.field).min() > 0
        errs.append(e)
    allerr = np.concatenate(errs)
    assert allerr.mean() <= 0.15


def test_fold_does_not_drag_the_tissue_beside_it(sections):
    """Without masking, the fold's jump smears into its neighbourhood."""
    imgs, contents, bands = _stack(sections[1])
    fold_z = 3
    sub = [imgs[0], imgs[fold_z]]
    masked = align_stack(sub, AlignConfig())[1]
    plain = align_stack(sub, AlignConfig(mask_folds=False))[1]
    ex = _fold_exclusion(masked.field, bands[fold_z])
    e_masked = known.pull_residual(masked.field, contents[0], contents[fold_z], exclude=ex)
    e_plain = known.pull_residual(plain.field, contents[0], contents[fold_z], exclude=ex)
    assert np.percentile(e_masked, 95) <= 0.5
    assert np.percentile(e_masked, 95) < np.percentile(e_plain, 95)


def test_all_blank_stack_is_reported_not_crashed():
    imgs = [np.zeros((128, 128), np.uint8), np.full((128, 128), 7, np.uint8)]
    res = align_stack(imgs)
    assert [r.status for r in res] == ["blank", "blank"]
