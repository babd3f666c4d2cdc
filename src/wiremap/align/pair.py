"""Alignment of one section to another: verified coarse affine, then confidence-weighted mesh.

``align_pair(fixed, moving)`` returns the ``Field`` that pulls ``moving`` into
``fixed``'s frame.  It is built for *different* sections (30-50 nm apart:
membranes continue but shift, vesicles and noise do not), and stays exact
when both show the same tissue:

1. contrast normalisation (``normalize.normalize_section``) and a band-pass
   (``normalize.enhance``) that keeps the cell-sized structure consecutive
   sections share and drops noise, vesicle texture and illumination;
2. coarse, at 1/``coarse_scale`` resolution: the ``k`` best whole-image
   translations (``flow.shift_candidates``, bounded by ``max_shift_px``) are
   each *verified* by a patch flow; the one most patches agree with wins
   (weighted by a Gaussian prior of width ``max_shift_px / 2`` on the shift,
   as stage coordinates pre-align sections), and
   a robust affine is fitted to its matches (a false global peak can no
   longer send a section 80 px off);
3. fine, at full resolution: ``fine_iterations`` rounds of patch flow
   -> neighbour-agreement cleaning -> mesh relaxation with the affine as rest
   shape.  Each round decides from the median peak ratio whether both images
   show the same tissue (sharp peaks, ratio >= ``same_content_ratio``): then
   every match counts fully and the soft ``mesh`` follows it; or different
   tissue (consecutive sections: weak peaks, ratio ~1.2-1.5): then each data
   spring is weighted by its confidence (``(ratio - 1)`` to ``weight_power``)
   and the stiff ``mesh_changing`` (bending-dominated, so smooth warps cost
   little) averages the apparent motion of oblique neurites over many patches
   instead of following each one (optionally the later rounds match larger
   patches, ``refine_changing``, on a narrower band-pass, ``enhance_sigma_changing``);
4. sanity: a field whose elastic part (field minus affine) exceeds
   ``max_elastic_px``, a mesh that cannot be unfolded, or too few matches
   fall back to the affine (flagged in ``extras['fallback']``).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from scipy import ndimage

from wiremap.align import normalize
from wiremap.align.field import Field
from wiremap.align.flow import FlowConfig, clean_flow, estimate_flow, fit_affine, shift_candidates
from wiremap.align.mesh import MeshConfig, MeshFoldError, relax


class AlignConfig(BaseModel):
    """Parameters of section-to-section alignment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    coarse_scale: int = 0  # down-sampling factor of the coarse level (0: coarse side ~128 px)
    max_shift_px: float = 128.0  # search radius of the coarse translation, full-res px
    candidates: int = 3  # whole-image translation peaks verified by a coarse patch flow
    enhance_sigma: tuple[float, float] = (1.0, 16.0)  # band-pass for matching, full-res px
    coarse: FlowConfig = PydField(default_factory=lambda: FlowConfig(
        patch=32, stride=8, max_shift=6, whiten=0.5, min_peak_ratio=1.1))
    fine: FlowConfig = PydField(default_factory=lambda: FlowConfig(
        patch=64, stride=32, max_shift=8, whiten=0.5, min_peak_ratio=1.1))  # first round
    refine: FlowConfig = PydField(default_factory=lambda: FlowConfig(
        patch=48, stride=16, max_shift=4, whiten=0.5, min_peak_ratio=1.1))  # later rounds
    fine_iterations: int = 2  # flow -> relax rounds at full resolution (first uses ``fine``)
    # later rounds on different content (``None``: ``refine``/``enhance_sigma`` as for the same
    # tissue), e.g. FlowConfig(patch=96, ...) and (1.0, 6.0): larger patches and a narrower
    # band-pass lower the *pair* error on synthetic changing stacks by ~15 %, but only its
    # part that does not add up along the stack (each section's own warp), so stack residuals
    # stay the same (2.47 vs 2.55 px mean, 6.8 vs 6.5 px p95 on 18 unseen stacks): off by default
    refine_changing: FlowConfig | None = None
    enhance_sigma_changing: tuple[float, float] | None = None
    mesh: MeshConfig = PydField(default_factory=MeshConfig)  # same content: follow every match
    mesh_changing: MeshConfig = PydField(default_factory=lambda: MeshConfig(
        stiffness=0.03, bending=3.0, cut_stiffness=0.0003))  # different content: stiff
    same_content_ratio: float = 2.0  # median peak ratio above which both show the same tissue
    confident_ratio: float = 3.0  # peak ratio at which a match gets the full data weight
    weight_power: float = 2.0  # data weight = (peak-ratio excess / that at ``confident_ratio``)^power
    min_weight: float = 0.002  # data weight of the weakest accepted match
    max_elastic_px: float = 24.0  # fields bending further from their affine are wild
    min_matches: int = 6  # fewer fine matches: fall back to the affine
    refit_affine: bool = False  # refit the mesh's rest affine to each full-resolution round
    max_linear: float = 0.15  # |affine linear part - identity| beyond this: keep the shift only
    normalize: bool = True  # contrast-normalise sections before matching
    mask_folds: bool = True  # detect dark fold/crack bands and cut them from matching
    tear_px: float = 0.4  # cut springs where the mesh misses matches by more (folds seen in flow)
    neighbours: int = 2  # previous sections each section is matched to (solved jointly)
    detrend_sections: float = 0.0  # >0: remove chain drift slower than this (Gaussian sigma, sections)
    detrend_elastic_only: bool = False  # detrend only the non-affine part of the fields
    reference: Literal["first", "middle"] = "middle"  # frame: first or middle non-blank section
    max_disagreement_px: float = 3.0  # neighbours disagreeing more (p95): keep the best only
    # changing content: re-weighted relaxations (Tukey biweight of the node's miss, scale
    # ``robust_scale`` x the median miss), so patches that follow a large object's own motion
    # stop pulling the mesh; 0 rounds: plain confidence weights.  3 rounds at 4.0 lower the
    # content floor (clean undeformed synthetic volume) from 1.36 to 1.29 px, but stack
    # residuals on 18 unseen synthetic stacks stay the same (2.56 vs 2.55 px): off by default
    robust_rounds: int = 0
    robust_scale: float = 2.5


def downsample(img: Any, factor: int) -> np.ndarray:
    """Block mean by ``factor`` (float32), row band by row band to bound memory."""
    h, w = (int(n) for n in img.shape[-2:])
    hh, ww = h // factor, w // factor
    out = np.empty((hh, ww), np.float32)
    band = max(1, 4096 // factor)
    for r0 in range(0, hh, band):
        r1 = min(hh, r0 + band)
        a = np.asarray(img[r0 * factor:r1 * factor, :ww * factor], np.float32)
        out[r0:r1] = a.reshape(r1 - r0, factor, ww, factor).mean(axis=(1, 3))
    return out


def _affine_to_full(a: np.ndarray, s: int) -> np.ndarray:
    """Coarse-level affine (pixel centres ``s*c + (s-1)/2``) as a full-resolution one."""
    o = (s - 1) / 2.0
    lin = a[:, :2]
    t = s * a[:, 2] + o - lin @ np.array([o, o])
    return np.concatenate([lin, t[:, None]], axis=1)


def _coarse_factor(shape: tuple[int, int], cfg: AlignConfig) -> int:
    return cfg.coarse_scale or int(np.clip(min(shape) // 128, 1, 32))


def _weights(ratio: np.ndarray, valid: np.ndarray, cfg: AlignConfig) -> np.ndarray:
    """Data-spring stiffness from the peak ratio: full at ``confident_ratio``, soft near 1."""
    x = np.clip((ratio - 1.0) / max(cfg.confident_ratio - 1.0, 1e-6), 0.0, 1.0)
    w = np.maximum(x ** cfg.weight_power, cfg.min_weight)
    return np.where(valid, w, 0.0)


def coarse_affine(fixed: np.ndarray, moving: np.ndarray, cfg: AlignConfig,
                  fixed_mask: np.ndarray | None = None,
                  moving_mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """2x3 affine pull map (full resolution) from the coarse level, and what was seen there.

    ``fixed``/``moving`` are contrast-normalised sections (full resolution).
    """
    s = _coarse_factor(fixed.shape[-2:], cfg)
    lo, hi = cfg.enhance_sigma
    fl = downsample(fixed, s) if s > 1 else np.asarray(fixed, np.float32)
    ml = downsample(moving, s) if s > 1 else np.asarray(moving, np.float32)
    fl = normalize.enhance(fl, max(lo / s, 0.5), max(hi / s, 3.0))
    ml = normalize.enhance(ml, max(lo / s, 0.5), max(hi / s, 3.0))
    fm = None if fixed_mask is None else downsample(fixed_mask, s) > 0.5
    mm = None if moving_mask is None else downsample(moving_mask, s) > 0.5
    best = None
    for shift, rel in shift_candidates(fl, ml, cfg.max_shift_px / s, k=cfg.candidates):
        prior = Field.from_affine(np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]]]),
                                  fl.shape, cfg.coarse.stride)
        flow, ratio = estimate_flow(fl, ml, cfg.coarse, prior=prior, fixed_mask=fm, moving_mask=mm)
        flow = clean_flow(flow)
        ok = np.isfinite(flow.data[0])
        # sections are pre-aligned by the stage: among similar scores prefer small shifts
        prior_w = np.exp(-0.5 * (np.hypot(*shift) * s / (0.5 * cfg.max_shift_px)) ** 2)
        score = float(_weights(ratio, ok, cfg).sum()) * prior_w
        if best is None or score > best[0]:
            best = (score, shift, flow, ratio, ok, rel)
    assert best is not None  # shift_candidates yields at least one peak
    score, shift, flow, ratio, ok, rel = best
    info = {"coarse_scale": s, "coarse_matches": int(ok.sum()), "coarse_nodes": int(ok.size),
            "coarse_peak_rel": rel}
    if ok.sum() >= 6:
        a = fit_affine(flow, _weights(ratio, ok, cfg))
        if np.abs(a[:, :2] - np.eye(2)).max() > cfg.max_linear:
            info["coarse_affine_rejected"] = True
            a = np.array([[1.0, 0, 0], [0, 1.0, 0]])
            a[:, 2] = np.nanmedian(flow.data[:, ok], axis=1)
    else:
        a = np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]]])
    return (_affine_to_full(a, s) if s > 1 else a), info


@dataclass
class PairResult:
    """A pair alignment: the pull field, the affine part and match statistics."""

    field: Field
    affine: np.ndarray
    n_matches: int
    match_residual_px: float  # mean |relaxed - measured| at valid nodes (last round)
    match_residual_p95_px: float  # its 95th percentile
    n_nodes: int = 0  # nodes of the fine grid
    confidence: float = 0.0  # sum of data weights of the last round (quality, for combining)
    extras: dict = dc_field(default_factory=dict)


def align_pair(fixed: Any, moving: Any, cfg: AlignConfig | None = None, *,
               fixed_mask: np.ndarray | None = None,
               moving_mask: np.ndarray | None = None) -> PairResult:
    """Field pulling ``moving`` into ``fixed``'s frame (see module docstring).

    Masks are True where tissue may be matched (False on folds, cracks, blanks).
    """
    cfg = cfg or AlignConfig()
    if cfg.normalize:
        fixed = normalize.normalize_section(fixed)
        moving = normalize.normalize_section(moving)
    shape = (int(fixed.shape[-2]), int(fixed.shape[-1]))
    a, extras = coarse_affine(fixed, moving, cfg, fixed_mask, moving_mask)
    lo, hi = cfg.enhance_sigma
    fe, me = normalize.enhance(fixed, lo, hi), normalize.enhance(moving, lo, hi)
    fixed_pieces, moving_pieces = _pieces(fixed_mask), _pieces(moving_mask)
    last = cfg.refine if cfg.fine_iterations > 1 else cfg.fine
    cur = Field.from_affine(a, shape, cfg.fine.stride)
    n_match, res, res95, torn, conf, nodes = 0, float("nan"), float("nan"), 0, 0.0, 0
    changing = False  # decided by the first round
    try:
        for it in range(cfg.fine_iterations):
            fcfg = cfg.fine if it == 0 else cfg.refine
            if it > 0 and changing:
                fcfg = cfg.refine_changing or cfg.refine
                if cfg.enhance_sigma_changing is not None and it == 1:
                    fe = normalize.enhance(fixed, *cfg.enhance_sigma_changing)
                    me = normalize.enhance(moving, *cfg.enhance_sigma_changing)
            ref = Field.from_affine(a, shape, fcfg.stride)
            cut = None if fixed_mask is None else _node_cut(fixed_mask, ref)
            flow, ratio = estimate_flow(fe, me, fcfg, prior=cur,
                                        fixed_mask=fixed_pieces, moving_mask=moving_pieces)
            flow = clean_flow(flow)
            valid = np.isfinite(flow.data[0])
            # decided again each round: after the first, the patches are aligned and the
            # peaks of identical content are sharp whatever the elastic warp was
            med = float(np.median(ratio[valid])) if valid.any() else 0.0
            same = med >= cfg.same_content_ratio
            if it == 0:
                changing = not same
            mesh = cfg.mesh if same else cfg.mesh_changing
            extras["content"], extras["median_peak_ratio"] = ("same" if same else "changing"), med
            extras["patch"] = fcfg.patch
            w = valid.astype(np.float64) if same else _weights(ratio, valid, cfg)
            nodes = int(w.size)
            if int((w > 0).sum()) < cfg.min_matches:
                cur = cur.resample(shape, fcfg.stride)
                n_match = int((w > 0).sum())
                break
            if cfg.refit_affine and int((w > 0).sum()) >= 4 * cfg.min_matches:
                # the full-resolution matches pin the affine better than the coarse level:
                # the mesh's rest shape must not keep a coarse stretch that is not there
                a_fine = fit_affine(flow, w)
                if np.abs(a_fine[:, :2] - np.eye(2)).max() <= cfg.max_linear:
                    a = a_fine
                    ref = Field.from_affine(a, shape, fcfg.stride)
            cur = relax(flow, w, ref, mesh, cut=cut)
            if not same and cfg.robust_rounds > 0:
                cur, w = _reweighted(flow, w, ref, cur, mesh, cut, cfg)
            if cfg.tear_px > 0:
                before = 0 if cut is None else int(cut.sum())
                cur, cut = _tear(flow, w, ref, cur, cut, cfg, mesh)
                torn = (0 if cut is None else int(cut.sum())) - before
            ok = w > 0
            n_match, conf = int(ok.sum()), float(w.sum())
            r = np.linalg.norm((cur.data - flow.data)[:, ok], axis=0)
            res, res95 = float(r.mean()), float(np.percentile(r, 95))
    except MeshFoldError as e:
        extras["fallback"] = f"affine (mesh: {e})"
    if changing and cfg.fine_iterations > 1 and cfg.refine_changing is not None:
        last = cfg.refine_changing
    affine_field = Field.from_affine(a, shape, last.stride)
    if "fallback" in extras:
        cur = affine_field
    extras["torn_nodes"] = torn
    if "fallback" not in extras:
        elastic = np.linalg.norm(cur.resample_like(affine_field).data - affine_field.data, axis=0)
        if n_match < cfg.min_matches:
            extras["fallback"] = f"affine ({n_match} fine matches)"
        elif float(elastic.max()) > cfg.max_elastic_px:
            extras["fallback"] = f"affine (elastic part {float(elastic.max()):.0f} px)"
        if "fallback" in extras:
            cur = affine_field
    return PairResult(cur, a, n_match, res, res95, nodes, conf, extras)


def _reweighted(flow: Field, w: np.ndarray, ref: Field, cur: Field, mesh: MeshConfig,
                cut: np.ndarray | None, cfg: AlignConfig) -> tuple[Field, np.ndarray]:
    """IRLS with Tukey's biweight: a node's data weight shrinks with its miss from the relaxed
    mesh (zero beyond ``robust_scale`` x the median miss); returns the field and the weights.

    Between different sections a patch dominated by one large oblique object measures that
    object's motion (several px), not the section's; such patches miss the smooth mesh by
    more than the rest, and down-weighting them lowers the error that adds up along a stack."""
    w0 = w
    ok = w0 > 0
    for _ in range(cfg.robust_rounds):
        r = np.linalg.norm(np.nan_to_num(cur.data - flow.data), axis=0)
        scale = cfg.robust_scale * max(float(np.median(r[ok])), 1e-3)
        w = np.where(ok & (r < scale), w0 * (1.0 - (r / scale) ** 2) ** 2, 0.0)
        if int((w > 0).sum()) < cfg.min_matches:
            return cur, w0
        cur = relax(flow, w, ref, mesh, cut=cut)
    return cur, w


def _tear(flow: Field, w: np.ndarray, ref: Field, cur: Field, cut: np.ndarray | None,
          cfg: AlignConfig, mesh: MeshConfig) -> tuple[Field, np.ndarray | None]:
    """Folds and cracks the image masks missed show up as a line of nodes the smooth mesh
    cannot follow (a displacement jump); cut the springs there and relax again.

    Only confident matches count: between different sections weak matches miss the
    smooth mesh by their noise, which is no tear."""
    ok = w >= 0.5 ** cfg.weight_power  # peak ratio at least halfway to ``confident_ratio``
    if ok.sum() < 9:
        return cur, cut
    r = np.where(ok, np.linalg.norm(np.nan_to_num(cur.data - flow.data), axis=0), 0.0)
    med = float(np.median(r[ok]))
    tear = r > max(cfg.tear_px, 4.0 * med)
    lab, n = ndimage.label(tear, structure=np.ones((3, 3)))
    if n == 0:
        return cur, cut
    # a tear is a line: keep components spanning at least 4 nodes
    keep = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        keep[i] = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) >= 4
    tear = keep[lab]
    if not tear.any():
        return cur, cut
    tear = ndimage.binary_dilation(tear)
    new_cut = tear if cut is None else (cut | tear)
    return relax(flow, w, ref, mesh, cut=new_cut), new_cut


def _pieces(mask: np.ndarray | None) -> np.ndarray | None:
    """Label the pieces of tissue a fold mask leaves (uint16; 0 = masked)."""
    if mask is None:
        return None
    lab, n = ndimage.label(np.asarray(mask, bool))
    return lab.astype(np.uint16) if n < 65535 else (lab > 0).astype(np.uint16)


def _node_cut(mask: np.ndarray, ref: Field) -> np.ndarray:
    """Nodes whose neighbourhood (one stride) touches masked-out pixels."""
    bad = ~np.asarray(mask, bool)
    s = int(ref.stride)
    grown = ndimage.maximum_filter(bad, size=s + 1) if bad.any() else bad
    ny, nx = ref.node_yx()
    iy = np.clip(ny.astype(int), 0, mask.shape[0] - 1)
    ix = np.clip(nx.astype(int), 0, mask.shape[1] - 1)
    return grown[np.ix_(iy, ix)]
