"""Fold detection on narrow, mildly dark folds, and a fold-free reference frame.

A narrow fold in the acquisition simulator is only about half as dark as tissue
(folded tissue x 0.35 plus the microscope's offset): as dark as a membrane.  The
detector must find such bands (straight, crossing the section) and must not flag
ordinary dark objects: real ISBI 2012 crops, a nucleus-sized dark disc, a myelin-like
dark ring and dark tissue lying along the image edge.
"""

from pathlib import Path

import numpy as np
import pytest

from wiremap.align import known, normalize
from wiremap.align.stack import AlignConfig, align_stack, reference_section

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


@pytest.fixture(scope="module")
def sections() -> np.ndarray:
    return np.load(DATA)["sections"]


def _mild_fold(img, point=(120, 140), angle_deg=25.0, width=6.0, gain=0.45):
    """``img`` with a straight band of ``width`` px darkened to ``gain`` x the tissue
    (no tissue jump), and the band."""
    h, w = img.shape
    _, band, _ = known.add_fold(img, np.zeros((2, h, w)), point=point, angle_deg=angle_deg,
                                width=width, jump=0)
    out = img.astype(np.float32)
    out[band] *= gain
    return np.clip(out, 0, 255).astype(np.uint8), band


@pytest.mark.parametrize("k,angle,width", [(0, 25.0, 6.0), (1, -60.0, 5.0), (2, 85.0, 10.0)])
def test_narrow_mild_fold_is_found(sections, k, angle, width):
    folded, band = _mild_fold(sections[k], angle_deg=angle, width=width)
    # as dark as membranes: the intensity threshold alone misses it
    assert not normalize.fold_mask(folded, lines=False)[band].mean() > 0.5
    m = normalize.fold_mask(folded)
    assert m[band].mean() > 0.95
    assert m[~band].mean() < 0.06  # the band plus its grown rim, nothing else
    bands = normalize.line_folds(folded)
    assert len(bands) == 1 and (bands[0] & band).sum() > 0.8 * band.sum()


def test_real_sections_and_dark_objects_are_no_folds(sections):
    for s in sections:
        assert not normalize.fold_mask(s).any()
    img = sections[0].astype(np.float32)
    dark = 0.3 * float(np.median(img)) + np.random.default_rng(0).normal(0, 4, img.shape)
    yy, xx = np.mgrid[0:256, 0:256]
    r = np.hypot(yy - 128, xx - 128)
    nucleus = np.where(r < 45, dark, img)
    myelin = np.where((r > 30) & (r < 38), dark, img)
    edge = np.where(xx < 40, 0.5 * dark, img)  # a dark cell body cut by the image edge
    for im in (nucleus, myelin, edge):
        assert not normalize.fold_mask(im.astype(np.uint8)).any()


def test_reference_is_a_fold_free_section(sections):
    h, w = sections.shape[1:]
    imgs = [known.distort(sections[0], np.stack([np.full((h, w), 0.5 * z), np.zeros((h, w))]),
                          noise=3, seed=z) for z in range(5)]
    imgs[2], band = _mild_fold(imgs[2])
    assert reference_section(imgs, AlignConfig()) == 1  # middle (2) is folded
    assert reference_section(imgs, AlignConfig(mask_folds=False)) == 2
    res = align_stack(imgs)
    assert res[1].status == "reference" and res[2].fold_fraction > 0.01
    # section z shows at p what p + 0.5 (z - 1) shows in the reference
    for r in res:
        d = r.field.data[:, 2:-2, 2:-2].reshape(2, -1)
        assert np.allclose(np.median(d, axis=1), [0.5 * (1 - r.z), 0.0], atol=0.15), r.z
    # every section folded: the one nearest the middle is still the reference
    allfold = [_mild_fold(im)[0] for im in imgs]
    assert reference_section(allfold, AlignConfig()) == 2
