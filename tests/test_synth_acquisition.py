"""Acquisition simulator: tiles, true placement, warp and defects agree with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from wiremap.errors import ConfigError, InputError, WorkspaceError
from wiremap.synth import defects as dfx
from wiremap.synth import multibeam as mb
from wiremap.synth.acquisition import (
    AcquisitionConfig,
    defect_codes,
    load_groundtruth,
    mirror_into_volume,
    read_manifest,
    read_tile,
    render_section,
    section_to_tile,
    section_to_volume,
    simulate_acquisition,
    tile_to_volume,
    true_tile_to_section,
    volume_to_section,
    write_acquisition,
)

RES = (30.0, 8.0, 8.0)


def texture(shape: tuple[int, int, int], seed: int = 0, sigma: float = 2.5) -> np.ndarray:
    """Smooth random EM-like texture, uint8, mean ~128."""
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.standard_normal(shape), (0, sigma, sigma))
    v = 128 + 45 * v / v.std()
    return np.clip(v, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def vol() -> np.ndarray:
    return texture((8, 256, 256))


@pytest.fixture(scope="module")
def acq(vol: np.ndarray):
    # small tiles with 15 % overlap: several mFoVs per section, room for 1 px of stage jitter
    cfg = AcquisitionConfig(noise_sigma=2.0, rescan_fraction=0.25, tile_width_px=40, overlap=0.15, stage_jitter_px=1.0)
    return simulate_acquisition(vol, RES, cfg, seed=3), cfg


def test_deterministic(vol: np.ndarray) -> None:
    cfg = AcquisitionConfig(defects=True, fold_fraction=0.3, debris_fraction=0.3)
    a = simulate_acquisition(vol[:3], RES, cfg, seed=7)
    b = simulate_acquisition(vol[:3], RES, cfg, seed=7)
    c = simulate_acquisition(vol[:3], RES, cfg, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a.tiles, b.tiles, strict=True))
    assert a.groundtruth.tiles.equals(b.groundtruth.tiles)
    assert np.array_equal(a.groundtruth.warp, b.groundtruth.warp)
    assert not np.array_equal(a.tiles[0], c.tiles[0])


def reassemble(acq, section: int, use_true: bool) -> np.ndarray:
    """Section canvas from scan-0 tiles: each pixel from the tile it lies deepest in,
    lens undone, tile gain/offset/vignetting undone."""
    gt = acq.groundtruth
    H, W = gt.section_shape
    t = gt.tiles[(gt.tiles["section"] == section) & (gt.tiles["scan"] == 0)]
    p = np.stack(np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij"), -1)
    h, w = int(t["height"].iloc[0]), int(t["width"].iloc[0])
    cy = (t["y_true"] if use_true else t["y"]).to_numpy() + (h - 1) / 2
    cx = (t["x_true"] if use_true else t["x"]).to_numpy() + (w - 1) / 2
    depth = np.minimum((h - 1) / 2 - np.abs(p[..., 0, None] - cy), (w - 1) / 2 - np.abs(p[..., 1, None] - cx))
    best = depth.argmax(-1)  # the tile in which the pixel lies deepest
    out = np.zeros((H, W))
    R2 = mb.lens_radius((h, w)) ** 2
    for i, row in enumerate(t.itertuples()):
        sel = best == i
        if not sel.any():
            continue
        # without the truth: what a stitcher with nominal positions and no lens model does
        nominal = p[sel] - np.array([row.y, row.x])
        uv = section_to_tile(gt, section, row.tile_id, p[sel]) if use_true else nominal
        img = acq.tiles[row.tile_id].astype(float)
        val = ndimage.map_coordinates(img, uv.T, order=1, mode="nearest")
        rho2 = ((uv - [(h - 1) / 2, (w - 1) / 2]) ** 2).sum(-1) / R2
        out[sel] = (val / (1 - row.vignetting * rho2) - row.offset) / row.gain
    return out


def test_tiles_at_true_positions_reproduce_warped_section(acq, vol: np.ndarray) -> None:
    a, cfg = acq
    for s in (1, 6):  # one section of each settings regime
        ref = render_section(vol, a.groundtruth, s, cfg)
        good = reassemble(a, s, use_true=True) - ref
        bad = reassemble(a, s, use_true=False) - ref
        rms_good = float(np.sqrt(np.mean(good[4:-4, 4:-4] ** 2)))
        rms_bad = float(np.sqrt(np.mean(bad[4:-4, 4:-4] ** 2)))
        # noise 2 grey levels (bilinear resampling of the tile lowers it) + resampling error
        assert rms_good < 2.5, rms_good
        assert rms_bad > 4 * rms_good


def test_nominal_and_true_positions_differ_by_the_jitter(acq) -> None:
    a, cfg = acq
    t = a.groundtruth.tiles
    dy, dx = (t["y_true"] - t["y"]).to_numpy(), (t["x_true"] - t["x"]).to_numpy()
    n = len(t)
    n_mfov = int(t["mfov"].max()) + 1
    assert n_mfov > 1 and n == (8 + 2) * 61 * n_mfov  # 2 of 8 sections re-imaged
    jitter = cfg.stage_jitter_px
    for e in (dy, dx):
        assert abs(e.mean()) < 4 * jitter / np.sqrt(n)
        assert abs(e.std() - jitter) < 0.1 * jitter
        assert np.abs(e).max() <= 2.28 * jitter
    m = a.manifest  # what a stitcher sees: nominal positions only
    assert "y_true" not in m.columns and np.array_equal(m["y"], t["y"])


def test_overlap_and_coverage() -> None:
    for width in (None, 40):  # one mFoV sized to the section; several mFoVs of small tiles
        lay = mb.plan_layout((256, 300), 61, 0.08, 0.871, width, margin=5.0)
        h, w = lay.tile_shape
        c = lay.centres
        if width is None:
            assert lay.mfov.max() == 0 and len(c) == 61
        else:
            assert lay.mfov.max() >= 3 and w == 40
        # each tile's nearest neighbours overlap by 8 % along the neighbour direction
        dy = np.abs(c[:, None, 0] - c[None, :, 0])
        dx = np.abs(c[:, None, 1] - c[None, :, 1])
        row_nb = (dy < 1e-6) & (dx > 0) & (dx < w)
        assert row_nb.any(axis=1).mean() > 0.9
        assert np.allclose((w - dx[row_nb]) / w, 0.08)
        col_nb = (np.abs(dy - lay.step_yx[0]) < 1e-6) & (dx < w)
        assert np.allclose((h - dy[col_nb]) / h, 0.08)
        # every canvas pixel (and the margin) is inside some tile
        yy, xx = np.meshgrid(np.arange(-5, 261, 3.0), np.arange(-5, 305, 3.0), indexing="ij")
        pts = np.stack([yy.ravel(), xx.ravel()], -1)
        inside = (np.abs(pts[:, None] - c[None]) <= np.array([h, w]) / 2).all(-1).any(-1)
        assert inside.all()


def test_beam_numbering() -> None:
    ax = mb.beam_axial(61)
    assert len({tuple(v) for v in ax}) == 61 and tuple(ax[0]) == (0, 0)
    ring = np.max(np.abs(np.c_[ax, ax.sum(1)]), 1)
    assert np.all(np.diff(ring) >= 0) and ring.max() == 4
    with pytest.raises(ConfigError):
        mb.rings_of(60)


def test_lens_model_inverts_and_displaces_corners() -> None:
    shape = (45, 52)
    k = 1.5 / mb.lens_radius(shape)
    corner = np.array([0.0, 0.0])
    p = mb.tile_to_section(corner, np.zeros(2), shape, k)
    c = np.array([22.0, 25.5])
    assert np.isclose(np.linalg.norm(p - c) - np.linalg.norm(corner - c), 1.5)
    uv = np.random.default_rng(0).uniform(0, 44, (100, 2))
    back = mb.section_to_tile(mb.tile_to_section(uv, np.array([3.0, -2.0]), shape, k), np.array([3.0, -2.0]), shape, k)
    assert np.abs(back - uv).max() < 1e-9


def test_blank_section_is_blank(vol: np.ndarray) -> None:
    cfg = AcquisitionConfig(
        defects=True,
        blank_fraction=0.25,
        fold_fraction=0,
        crack_fraction=0,
        debris_fraction=0,
        rescan_fraction=0,
        regime_change_at=None,
    )
    a = simulate_acquisition(vol, RES, cfg, seed=1)
    sec = a.groundtruth.sections
    blanks = sec.index[sec["blank"]].tolist()
    assert len(blanks) == 2 and set(sec.loc[blanks, "status"]) == {"blank"}
    assert (sec.loc[~sec["blank"], "status"] == "ok").all()
    t = a.groundtruth.tiles
    h, w = a.tiles[0].shape
    d = np.stack(np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij"), -1)
    rho2 = (d**2).sum(-1) / mb.lens_radius((h, w)) ** 2
    for row in t.itertuples():
        flat = (a.tiles[row.tile_id] / (1 - row.vignetting * rho2) - row.offset) / row.gain
        if row.section in blanks:
            assert abs(flat.mean() - cfg.blank_value) < 1.0
            assert flat.std() < 1.5 * cfg.noise_sigma
        else:
            assert flat.std() > 5 * cfg.noise_sigma
    for s in blanks:
        assert (a.groundtruth.masks[s] == 4).all()
        assert (defect_codes(a.groundtruth, s, np.zeros((3, 2))) == 4).all()


def test_true_warp_maps_a_dot_to_where_it_appears() -> None:
    vol = np.full((4, 360, 380), 60, np.uint8)
    dots = {0: (180.3, 190.7), 1: (97.0, 250.2), 2: (240.6, 70.4), 3: (20.5, 350.0)}
    yy, xx = np.mgrid[:360, :380]
    for z, (y, x) in dots.items():
        vol[z] = np.clip(60 + 180 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.6**2)), 0, 255)
    cfg = AcquisitionConfig(
        noise_sigma=1.0,
        warp_amplitude_px=3.0,
        stretch=0.03,
        rotation_deg=2.0,
        lens_distortion_px=2.0,
        rescan_fraction=0.0,
    )
    a = simulate_acquisition(vol, RES, cfg, seed=5)
    gt = a.groundtruth
    found = 0
    for row in gt.tiles.itertuples():
        img = a.tiles[row.tile_id].astype(float)
        bg = np.median(img)
        i, j = np.unravel_index(np.argmax(img - bg), img.shape)
        h, w = img.shape
        if img[i, j] - bg < 60 or not (6 <= i < h - 6 and 6 <= j < w - 6):
            continue
        win = np.clip(img[i - 6 : i + 7, j - 6 : j + 7] - bg, 0, None)
        wy, wx = np.mgrid[i - 6 : i + 7, j - 6 : j + 7]
        centroid = np.array([(win * wy).sum(), (win * wx).sum()]) / win.sum()
        q = mirror_into_volume(tile_to_volume(gt, row.section, row.tile_id, centroid), (360, 380))
        assert np.linalg.norm(q - dots[row.section]) < 0.5, (row.tile_id, q, dots[row.section])
        found += 1
    assert found >= 4
    for z, dot in dots.items():  # and in the rendered (warped) section
        sec = render_section(vol, gt, z, cfg) - 60 * cfg.regime_gain ** (z >= 2) - (cfg.regime_offset if z >= 2 else 0)
        i, j = np.unravel_index(np.argmax(sec), sec.shape)
        win = np.clip(sec[i - 6 : i + 7, j - 6 : j + 7], 0, None)
        wy, wx = np.mgrid[i - 6 : i + 7, j - 6 : j + 7]
        p = np.array([(win * wy).sum(), (win * wx).sum()]) / win.sum()
        assert np.linalg.norm(section_to_volume(gt, z, p) - dot) < 0.5
        # the inverse map finds the dot's section position from its volume position
        assert np.linalg.norm(volume_to_section(gt, z, np.array(dot)) - p) < 0.5
    pts = np.random.default_rng(1).uniform(-30, 390, (200, 2))
    back = volume_to_section(gt, 1, section_to_volume(gt, 1, pts))
    assert np.abs(back - pts).max() < 1e-6


def test_folds_and_cracks_displace_tissue_and_are_masked(vol: np.ndarray) -> None:
    cfg = AcquisitionConfig(
        defects=True,
        blank_fraction=0,
        fold_fraction=0.5,
        crack_fraction=0.5,
        debris_fraction=0.25,
        rescan_fraction=0,
        regime_change_at=None,
    )
    a = simulate_acquisition(vol, RES, cfg, seed=2)
    gt = a.groundtruth
    assert set(gt.defects["kind"]) == {"fold", "crack", "debris"}
    for r in gt.defects.itertuples():
        s = r.section
        ref = render_section(vol, gt, s, cfg)
        n = np.array([r.ny, r.nx])
        p0 = np.array([r.y, r.x])
        if r.kind == "debris":
            assert gt.masks[s, int(round(r.y)) % 256, int(round(r.x)) % 256] == 3 or not (
                0 <= r.y < 256 and 0 <= r.x < 256
            )
            continue
        # across the line the tissue jumps by `jump` (section px, before the smooth warp)
        e = 1e-6
        jump = (section_to_volume(gt, s, p0 + e * n) - section_to_volume(gt, s, p0 - e * n)) @ n
        assert abs(jump - r.jump) < 0.05 * abs(r.jump)
        code = 1 if r.kind == "fold" else 2
        assert defect_codes(gt, s, p0) == code
        inband = gt.masks[s] == code
        assert inband.sum() > 0.5 * r.width * 256
        if r.kind == "crack":  # the gap is bare and bright; its two edges show the same tissue
            assert np.allclose(ref[inband], cfg.crack_value)
            edge = r.width / 2
            one = gt.defects.iloc[[r.Index]]
            for side in (1, -1):
                pe = p0 + side * edge * n
                assert np.allclose(pe + dfx.displacement(one, pe), p0)
        else:
            assert ref[inband].mean() < 0.5 * ref[gt.masks[s] == 0].mean()


def test_settings_change_and_slow_scan_noise() -> None:
    vol = np.full((8, 160, 160), 150, np.uint8)
    cfg = AcquisitionConfig(rescan_fraction=1.0, noise_sigma=4.0, vignetting=0.0)
    a = simulate_acquisition(vol, RES, cfg, seed=0)
    t = a.groundtruth.tiles
    assert (t.groupby("section")["regime"].first().to_numpy() == [0] * 4 + [1] * 4).all()
    for (regime, scan), g in t.groupby(["regime", "scan"]):
        flat = np.stack([(a.tiles[i] - o) / gn for i, o, gn in zip(g.tile_id, g.offset, g.gain, strict=True)])
        expect_mean = 150 * cfg.regime_gain + cfg.regime_offset if regime else 150.0
        dwell = cfg.dwell_us * (cfg.regime_dwell_factor if regime else 1) * (cfg.rescan_dwell_factor if scan else 1)
        expect_sd = cfg.noise_sigma * np.sqrt(cfg.dwell_us / dwell)
        assert abs(flat.mean() - expect_mean) < 0.3
        assert abs(flat.std() - expect_sd) < 0.1 * expect_sd + 0.15  # + rounding to integers
        assert np.allclose(g["dwell_us"], dwell)


def test_write_and_load_roundtrip(tmp_path, vol: np.ndarray) -> None:
    from wiremap.workspace import Workspace

    cfg = AcquisitionConfig(defects=True, fold_fraction=0.5, rescan_fraction=0.5)
    a = simulate_acquisition(vol[:2, :96, :128], RES, cfg, seed=4)
    ws = Workspace.create(str(tmp_path / "ws"))
    write_acquisition(a, ws)
    m = read_manifest(ws)
    assert m.equals(a.manifest)
    for i in (0, len(m) - 1):
        assert np.array_equal(read_tile(ws, m["key"].iloc[i]), a.tiles[i])
    assert m["key"].iloc[0] == "tiles/00000/0/000_00.png"
    gt = load_groundtruth(ws)
    assert gt.tiles.equals(a.groundtruth.tiles) and gt.defects.equals(a.groundtruth.defects)
    assert np.array_equal(gt.masks, a.groundtruth.masks)
    assert AcquisitionConfig(**gt.config) == cfg  # so the true section renders from disk alone
    assert np.array_equal(render_section(vol[:2, :96, :128], gt, 1),
                          render_section(vol[:2, :96, :128], a.groundtruth, 1, cfg))  # fmt: skip
    p = np.random.default_rng(0).uniform(-20, 120, (50, 2))
    for s in (0, 1):
        assert np.array_equal(section_to_volume(gt, s, p), section_to_volume(a.groundtruth, s, p))
    assert np.array_equal(true_tile_to_section(gt, 0, 3, p), true_tile_to_section(a.groundtruth, 0, 3, p))
    assert ws.read_json("tiles/acquisition.json")["tile_shape_yx"] == list(a.tiles[0].shape)
    # a rewrite with fewer sections leaves no stale tile behind
    small = simulate_acquisition(vol[:1, :96, :128], RES, cfg, seed=4)
    write_acquisition(small, ws)
    assert sorted(k for k in ws.list("tiles/") if k.endswith(".png")) == sorted(small.manifest["key"])
    assert len(load_groundtruth(ws).sections) == 1
    ws.write_json("tiles/acquisition.json", {"format": "something/else"})
    with pytest.raises(WorkspaceError):
        load_groundtruth(ws)


def test_bad_input() -> None:
    with pytest.raises(InputError):
        simulate_acquisition(np.zeros((2, 32, 32), np.float32), RES)
    with pytest.raises(InputError):
        simulate_acquisition(np.zeros((32, 32), np.uint8), RES)
    with pytest.raises(ValueError):
        AcquisitionConfig(bogus=1)
    with pytest.raises(ValueError):
        AcquisitionConfig(beams=60)


def test_mfov_jitter_is_shared_by_the_beams_of_an_mfov(vol: np.ndarray) -> None:
    cfg = AcquisitionConfig(tile_width_px=40, overlap=0.15, stage_jitter_px=0.2,
                            mfov_jitter_px=0.9, rescan_fraction=0.0)  # fmt: skip
    a = simulate_acquisition(vol[:4], RES, cfg, seed=0)
    t = a.groundtruth.tiles.assign(dy=lambda f: f.y_true - f.y, dx=lambda f: f.x_true - f.x)
    per_mfov = t.groupby(["section", "mfov"])[["dy", "dx"]].transform("mean")
    within = (t[["dy", "dx"]] - per_mfov).to_numpy()
    shared = t.groupby(["section", "mfov"])[["dy", "dx"]].mean().to_numpy()
    assert len(shared) >= 16
    assert abs(within.std() - 0.2) < 0.03
    assert 0.6 < shared.std() < 1.2
    # jitter that could open a gap between neighbouring tiles is refused
    with pytest.raises(ConfigError, match="gaps"):
        simulate_acquisition(vol[:1], RES, cfg.model_copy(update={"mfov_jitter_px": 1.0}))


@pytest.mark.slow
def test_full_size_acquisition_within_budget() -> None:
    """64 sections of 1024 x 1024 in < 60 s of one core, PNG encoding included."""
    import time

    from wiremap.synth.acquisition import encode_png

    big = np.concatenate([texture((8, 1024, 1024), seed=s) for s in range(8)])
    t0 = time.process_time()
    a = simulate_acquisition(big, RES, AcquisitionConfig(defects=True), seed=0)
    n_bytes = sum(len(encode_png(tile)) for tile in a.tiles)
    cpu = time.process_time() - t0
    assert n_bytes > 0 and len(a.tiles) >= 64 * 61
    assert cpu < 60, cpu
