"""Montage of simulated multi-beam tiles of a real ssTEM image, scored on the true tile maps."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from wiremap.align.montage import (
    estimate_vignetting,
    montage,
    neighbour_pairs,
    render_montage,
)
from wiremap.errors import InputError
from wiremap.synth.acquisition import (
    AcquisitionConfig,
    section_to_tile,
    simulate_acquisition,
    true_tile_to_section,
)

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


@pytest.fixture(scope="module")
def acq():
    src = np.load(DATA)["tile_source"]
    # eight sections of real texture (the image's symmetries), enough tiles for a flat field
    vol = np.stack([src, src[::-1], src[:, ::-1], src.T, src[::-1, ::-1], src.T[::-1],
                    src.T[:, ::-1], src.T[::-1, ::-1]])
    cfg = AcquisitionConfig(beams=7, regime_change_at=None, rescan_fraction=0.0,
                            lens_distortion_px=1.5, vignetting=0.1, tile_gain_sd=0.08,
                            tile_offset_sd=6.0)
    return simulate_acquisition(vol, (50, 4, 4), cfg, seed=3)


def _section(acq, sec):
    idx = np.nonzero(acq.manifest["section"].to_numpy() == sec)[0]
    tiles = [acq.tiles[i] for i in idx]
    return idx, tiles, acq.manifest.loc[idx, ["y", "x"]].to_numpy()


def seam_errors(acq, sec, idx, model, step=2):
    """|montage(a, qa) - montage(b, qb)| for true correspondences qa <-> qb in every overlap."""
    gt = acq.groundtruth
    errs = []
    for a, b in neighbour_pairs(model.nominal, model.tile_shapes, 6):
        if model.meshes[a] is None or model.meshes[b] is None:
            continue
        h, w = model.tile_shapes[a]
        yy, xx = np.mgrid[0:h:step, 0:w:step]
        q = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
        qb = section_to_tile(gt, sec, int(idx[b]), true_tile_to_section(gt, sec, int(idx[a]), q))
        hb, wb = model.tile_shapes[b]
        ins = (qb[:, 0] >= 0) & (qb[:, 0] <= hb - 1) & (qb[:, 1] >= 0) & (qb[:, 1] <= wb - 1)
        if ins.any():
            d = model.tile_to_section(a, q[ins]) - model.tile_to_section(b, qb[ins])
            errs.append(np.linalg.norm(d, axis=1))
    return np.concatenate(errs)


@pytest.mark.parametrize("sec", [0, 1, 2])
def test_seam_residual_within_bounds(acq, sec):
    idx, tiles, nom = _section(acq, sec)
    vig = estimate_vignetting(acq.tiles)
    model, report = montage(tiles, nom, vignetting=vig)
    assert report.unplaced == [] and report.blank == []
    e = seam_errors(acq, sec, idx, model)
    assert e.mean() <= 0.5 and np.percentile(e, 95) <= 1.0
    # the nominal positions alone are far off: the test measures something
    nominal_only = dataclasses.replace(
        model, meshes=[m.with_data(np.zeros_like(m.data)) for m in model.meshes])
    assert seam_errors(acq, sec, idx, nominal_only).mean() > 1.0


def test_intensity_correction_recovers_gains_and_flattens_seams(acq):
    idx, tiles, nom = _section(acq, 0)
    truth = acq.groundtruth.tiles.loc[idx]
    model, _ = montage(tiles, nom, vignetting=estimate_vignetting(acq.tiles))
    g_true = truth["gain"].to_numpy()
    assert np.abs(model.gain / np.exp(np.log(model.gain).mean())
                  - g_true / np.exp(np.log(g_true).mean())).max() < 0.03
    assert abs(model.vignetting - truth["vignetting"].mean()) < 0.05
    # in every overlap, the corrected tiles agree on the same tissue much better than raw
    assert _overlap_bias(acq, 0, idx, tiles, model) < 0.3 * _overlap_bias(
        acq, 0, idx, tiles, _without_intensity(model))
    img = render_montage(tiles, model, tuple(acq.groundtruth.section_shape))
    assert img.shape == tuple(acq.groundtruth.section_shape) and img.dtype == np.uint8


def _without_intensity(model):
    return dataclasses.replace(model, gain=np.ones_like(model.gain),
                               offset=np.zeros_like(model.offset), vignetting=0.0)


def _corrected(model, t, tile, q):
    h, w = model.tile_shapes[t]
    v = ndimage.map_coordinates(tile.astype(float), q.T, order=1)
    r2 = ((q[:, 0] - (h - 1) / 2) ** 2 + (q[:, 1] - (w - 1) / 2) ** 2) / (np.hypot(h - 1, w - 1) / 2) ** 2
    return (v / (1 - model.vignetting * r2) - model.offset[t]) / model.gain[t]


def _overlap_bias(acq, sec, idx, tiles, model):
    """Mean over overlaps of |mean difference| between the two tiles' values of one tissue."""
    gt = acq.groundtruth
    out = []
    for a, b in neighbour_pairs(model.nominal, model.tile_shapes, 6):
        h, w = model.tile_shapes[a]
        yy, xx = np.mgrid[0:h, 0:w]
        q = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
        qb = section_to_tile(gt, sec, int(idx[b]), true_tile_to_section(gt, sec, int(idx[a]), q))
        hb, wb = model.tile_shapes[b]
        ins = (qb[:, 0] >= 0) & (qb[:, 0] <= hb - 1) & (qb[:, 1] >= 0) & (qb[:, 1] <= wb - 1)
        if ins.sum() > 100:
            d = _corrected(model, a, tiles[a], q[ins]) - _corrected(model, b, tiles[b], qb[ins])
            out.append(abs(d.mean()))
    return float(np.mean(out))


def test_blank_tile_is_reported_not_placed(acq):
    idx, tiles, nom = _section(acq, 0)
    tiles = list(tiles)
    tiles[2] = np.full_like(tiles[2], 200)
    model, report = montage(tiles, nom)
    assert 2 in report.blank and 2 in report.unplaced
    assert model.meshes[2] is None
    assert all(model.meshes[t] is not None for t in range(len(tiles)) if t != 2)


def test_bad_tiles_raise_clear_errors(acq):
    idx, tiles, nom = _section(acq, 0)
    with pytest.raises(InputError, match="tile 1"):
        montage([tiles[0], np.zeros((4, 4, 3), np.uint8)] + tiles[2:], nom)
    with pytest.raises(InputError, match="positions"):
        montage(tiles, nom[:-1])


def test_all_blank_section_is_reported_not_crashed():
    rng = np.random.default_rng(0)
    tiles = [np.clip(200 + rng.normal(0, 1, (64, 72)), 0, 255).astype(np.uint8) for _ in range(3)]
    nominal = np.array([[0.0, 0.0], [0.0, 66.0], [58.0, 33.0]])
    model, rep = montage(tiles, nominal)
    assert rep.unplaced == [0, 1, 2] and rep.n_matches == 0
    assert render_montage(tiles, model, (128, 144)).max() == 0
