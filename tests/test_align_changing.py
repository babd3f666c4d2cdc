"""Alignment of *different* consecutive sections (real ssTEM, ISBI 2012 slices 10-12).

Consecutive sections show different tissue, so there is no pixel-exact answer;
what is checked is what must hold anyway: the aligner recovers known warps
applied on top of the real sections (measured against its own alignment of the
unwarped sections), large stage shifts are found rather than lost to a false
correlation peak, hopeless pairs fall back to an affine and say so, and the
bookkeeping (blank detection, empty canvas, neighbour consensus) is right.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from wiremap.align import known, normalize
from wiremap.align.field import Field, triangle_jacobians
from wiremap.align.flow import FlowConfig
from wiremap.align.pair import PairResult
from wiremap.align.stack import AlignConfig, _Candidate, _combine, _Done, align_pair, align_stack

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


@pytest.fixture(scope="module")
def sections() -> np.ndarray:
    return np.load(DATA)["sections"]


def _recovery(u_field, w_field, c_ref, c_z, margin=24):
    """Distance between where the warped-stack field sends a reference pixel and where the
    unwarped-stack field sends the same tissue (px), away from the border."""
    h, w = c_ref.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    du, dw = u_field.dense((h, w)), w_field.dense((h, w))
    sy, sx = yy + c_ref[0], xx + c_ref[1]
    ty = sy + ndimage.map_coordinates(du[0], [sy, sx], order=1, mode="nearest")
    tx = sx + ndimage.map_coordinates(du[1], [sy, sx], order=1, mode="nearest")
    qy, qx = yy + dw[0], xx + dw[1]
    my = qy + ndimage.map_coordinates(c_z[0], [qy, qx], order=1, mode="nearest")
    mx = qx + ndimage.map_coordinates(c_z[1], [qy, qx], order=1, mode="nearest")
    return np.hypot(my - ty, mx - tx)[margin:-margin, margin:-margin]


def test_consecutive_real_sections_are_seen_as_changing(sections):
    r = align_pair(sections[0], sections[1])
    assert r.extras["content"] == "changing" and r.extras["median_peak_ratio"] < 2.0
    same = known.distort(sections[0], known.smooth_warp(sections[0].shape, amplitude=2.0,
                                                        sigma=48, seed=1), noise=3)
    assert align_pair(sections[0], same).extras["content"] == "same"
    # ISBI slices 10 and 11 are ~(18, 8) px apart (whole-image NCC peak), the aligner finds it
    assert np.allclose(r.affine[:, 2], [12.5, 2.7], atol=4.0)


def test_known_warps_on_real_changing_sections_are_recovered(sections):
    h, w = sections.shape[1:]
    cont = [known.smooth_warp((h, w), amplitude=2.0, sigma=64, seed=40 + z,
                              shift=(4 * z - 3, 5 - 3 * z), rotation_deg=0.5 * (z - 1))
            for z in range(3)]
    warped = [known.distort(sections[z], cont[z], noise=3, seed=z) for z in range(3)]
    u, wr = align_stack(sections), align_stack(warped)
    ref = next(r.z for r in wr if r.status == "reference")
    assert ref == 1 == next(r.z for r in u if r.status == "reference")  # the middle section
    for z in (0, 2):
        e = _recovery(u[z].field, wr[z].field, cont[ref], cont[z])
        # content changes between sections: ~1-1.5 px is what pairwise matching resolves
        assert e.mean() < 2.0 and np.percentile(e, 95) < 3.5, (z, e.mean())
        assert triangle_jacobians(wr[z].field).min() > 0
        # a 256 px crop leaves few fine matches: when it falls back it must say so
        assert wr[z].fallback == any(f.startswith("fallback") for f in wr[z].flags)


@pytest.mark.parametrize("shift", [(40, -30), (-60, 20)])
def test_large_stage_shift_is_found_not_lost(sections, shift):
    h, w = sections.shape[1:]
    c = np.stack([np.full((h, w), -float(shift[0])), np.full((h, w), -float(shift[1]))])
    moved = known.distort(sections[1], c, noise=3)
    r0, r1 = align_pair(sections[0], sections[1]), align_pair(sections[0], moved)
    d = (r1.field.data - r0.field.data)[:, 2:-2, 2:-2].reshape(2, -1).mean(axis=1)
    assert np.allclose(d, shift, atol=1.5), d


def test_unrelated_image_falls_back_to_an_affine_and_is_flagged(sections):
    other = np.rot90(np.load(DATA)["tile_source"][:256, :256]).copy()
    res = align_stack([sections[0], other])
    r = res[1]
    assert r.status == "aligned" and r.fallback
    assert any(f.startswith("fallback") for f in r.flags)
    assert np.isfinite(r.field.data).all() and triangle_jacobians(r.field).min() > 0


def test_blank_section_with_a_few_placed_tiles_is_blank():
    rng = np.random.default_rng(0)
    img = np.zeros((256, 256), np.uint8)  # the stitcher placed only two blank tiles
    img[200:, 60:220] = np.clip(198 + rng.normal(0, 3, (56, 160)), 0, 255).astype(np.uint8)
    assert normalize.is_blank(img)
    assert normalize.empty_mask(img).mean() > 0.8
    tissue = np.load(DATA)["sections"][0]
    assert not normalize.is_blank(tissue) and not normalize.empty_mask(tissue).any()


def _cand(z, shift, conf):
    f = Field(np.tile(np.array(shift, np.float32)[:, None, None], (1, 5, 5)), 16.0)
    pr = PairResult(f, np.eye(2, 3), 20, 0.3, 0.6, 25, conf)
    return _Candidate(_Done(z, None, None, f, False, False), pr, f)


def test_neighbour_consensus_leaves_out_the_odd_one():
    cands = [_cand(4, (10.0, 0.0), 5.0), _cand(3, (0.5, 0.0), 3.0), _cand(2, (0.0, 0.5), 3.0)]
    group, dis, total = _combine(cands, AlignConfig())
    assert [c.target.z for c in group] == [3, 2] and dis > 9
    assert np.allclose(total.data[:, 2, 2], [0.25, 0.25], atol=1e-5)
    group, _, total = _combine(cands[1:], AlignConfig())
    assert len(group) == 2


def test_stack_uses_two_neighbours_and_records_them(sections):
    res = align_stack(list(sections))
    assert res[2].neighbours and res[2].neighbours[0] == 1
    assert all(r.status in ("reference", "aligned") for r in res)


def test_changing_content_is_matched_to_a_folded_neighbour_not_past_it(sections):
    """On changing sections a match two sections apart is far worse than the fold's own
    band (masked in matching), so the section after a fold is matched to the folded one;
    on identical content it is matched past it (``test_align_stack``)."""
    h, w = sections.shape[1:]
    c, band, _ = known.add_fold(sections[1], np.zeros((2, h, w)), point=(128, 128),
                                angle_deg=30, width=10, jump=6)
    folded = known.paint_band(known.distort(sections[1], c, noise=3), band)
    res = align_stack([sections[0], folded, sections[2]], AlignConfig(reference="first"))
    assert res[1].fold_fraction > 0.01 and res[1].status == res[2].status == "aligned"
    assert res[2].matched_to == 1
    assert not any("matched past" in f for f in res[2].flags)
    assert triangle_jacobians(res[2].field).min() > 0


def test_changing_content_can_refine_with_larger_patches(sections):
    """With ``refine_changing`` set, consecutive real sections (changing) get the larger
    refinement patches and the same tissue under a known warp keeps the small ones."""
    big = AlignConfig(refine_changing=FlowConfig(patch=96, stride=16, max_shift=4, whiten=0.5,
                                                 min_peak_ratio=1.1),
                      enhance_sigma_changing=(1.0, 6.0))
    r = align_pair(sections[0], sections[1], big)
    assert r.extras["content"] == "changing" and r.extras["patch"] == 96
    assert np.allclose(r.affine[:, 2], [12.5, 2.7], atol=4.0)  # the ~(18, 8) px offset, as before
    assert align_pair(sections[0], sections[1]).extras["patch"] == AlignConfig().refine.patch
    same = known.distort(sections[0], known.smooth_warp(sections[0].shape, amplitude=2.0,
                                                        sigma=48, seed=1), noise=3)
    s = align_pair(sections[0], same, big)
    assert s.extras["content"] == "same" and s.extras["patch"] == AlignConfig().refine.patch


def _walk_cand(z, pos, shift, conf, content):
    f = Field(np.tile(np.array(shift, np.float32)[:, None, None], (1, 5, 5)), 16.0)
    pr = PairResult(f, np.eye(2, 3), 20, 0.3, 0.6, 25, conf, {"content": content})
    return _Candidate(_Done(z, None, None, f, False, False, pos), pr, f)


def test_disagreeing_neighbours_on_changing_content_keep_the_nearest():
    """Two candidates 10 px apart: on changing content the nearer section wins even when
    the farther match is more confident; on the same tissue confidence decides."""
    chg = [_walk_cand(4, 4, (0.0, 0.0), 2.0, "changing"),
           _walk_cand(3, 3, (10.0, 0.0), 5.0, "changing")]
    group, dis, total = _combine(chg, AlignConfig())
    assert [c.target.z for c in group] == [4] and dis > 9
    assert np.allclose(total.data[:, 2, 2], [0.0, 0.0])
    same = [_walk_cand(4, 4, (0.0, 0.0), 2.0, "same"), _walk_cand(3, 3, (10.0, 0.0), 5.0, "same")]
    group, _, total = _combine(same, AlignConfig())
    assert [c.target.z for c in group] == [3]
