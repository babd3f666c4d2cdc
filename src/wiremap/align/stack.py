"""Section-to-section alignment: coarse affine, then dense flow + mesh relaxation.

``align_pair(fixed, moving)`` returns the ``Field`` that pulls ``moving`` into
``fixed``'s frame:

1. contrast normalisation of both (``normalize.normalize_section``), so a change
   of microscope settings does not break matching;
2. coarse: at 1/``coarse_scale`` resolution, a whole-image phase correlation
   gives the translation, a patch flow on top of it gives a robust affine
   (stretch, compression, rotation are absorbed here, *not* in the springs);
3. fine: at full resolution, ``fine_iterations`` rounds of patch flow
   around the current field -> outlier cleaning -> mesh relaxation with the
   affine as rest shape.  Iterating makes the sub-pixel estimate unbiased
   (the last round measures shifts near zero).

``align_stack(sections)`` chains pairs: section z is matched to the last good
*aligned* section, so a stretched section is corrected to its neighbour and
the stretch does not propagate; blank sections are detected, recorded and
bridged (the next section matches the one before the gap); fold/crack masks
are cut out of matching and out of the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField

from wiremap.align import normalize
from wiremap.align.field import Field, triangle_jacobians
from wiremap.align.flow import FlowConfig, clean_flow, estimate_flow, fit_affine, global_shift
from wiremap.align.mesh import MeshConfig, relax
from wiremap.errors import WiremapError


class AlignConfig(BaseModel):
    """Parameters of section-to-section alignment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    coarse_scale: int = 0  # down-sampling factor of the coarse level (0: coarse side ~512 px)
    coarse: FlowConfig = PydField(default_factory=lambda: FlowConfig(
        patch=32, stride=16, max_shift=8, whiten=0.5))
    fine: FlowConfig = PydField(default_factory=lambda: FlowConfig(
        patch=64, stride=32, max_shift=14, whiten=0.5))  # first full-resolution round
    refine: FlowConfig = PydField(default_factory=lambda: FlowConfig(
        patch=32, stride=16, max_shift=4, whiten=0.5))  # later rounds: small, dense patches
    fine_iterations: int = 2  # flow -> relax rounds at full resolution (first uses ``fine``)
    mesh: MeshConfig = PydField(default_factory=MeshConfig)
    normalize: bool = True  # contrast-normalise sections before matching
    mask_folds: bool = True  # detect dark fold/crack bands and cut them from matching
    tear_px: float = 0.4  # cut springs where the mesh misses matches by more (folds seen in flow)


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


def coarse_affine(fixed: np.ndarray, moving: np.ndarray, cfg: AlignConfig,
                  fixed_mask: np.ndarray | None = None,
                  moving_mask: np.ndarray | None = None) -> np.ndarray:
    """2x3 affine pull map (full resolution) from the coarse level."""
    s = cfg.coarse_scale or max(1, min(int(n) for n in fixed.shape[-2:]) // 512)
    fl = downsample(fixed, s) if s > 1 else np.asarray(fixed, np.float32)
    ml = downsample(moving, s) if s > 1 else np.asarray(moving, np.float32)
    fm = None if fixed_mask is None else downsample(fixed_mask, s) > 0.5
    mm = None if moving_mask is None else downsample(moving_mask, s) > 0.5
    shift, _ratio = global_shift(fl, ml)
    prior = Field.from_affine(np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]]]),
                              fl.shape, cfg.coarse.stride)
    flow, ratio = estimate_flow(fl, ml, cfg.coarse, prior=prior, fixed_mask=fm, moving_mask=mm)
    flow = clean_flow(flow)
    a = fit_affine(flow, ratio)
    return _affine_to_full(a, s) if s > 1 else a


@dataclass
class PairResult:
    """A pair alignment: the pull field, the affine part and match statistics."""

    field: Field
    affine: np.ndarray
    n_matches: int
    match_residual_px: float  # mean |relaxed - measured| at valid nodes (last round)
    match_residual_p95_px: float  # its 95th percentile
    n_nodes: int = 0  # nodes of the fine grid
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
    a = coarse_affine(fixed, moving, cfg, fixed_mask, moving_mask)
    fixed_pieces, moving_pieces = _pieces(fixed_mask), _pieces(moving_mask)
    cur = Field.from_affine(a, shape, cfg.fine.stride)
    n_match, res, res95, torn = 0, float("nan"), float("nan"), 0
    for it in range(cfg.fine_iterations):
        fcfg = cfg.fine if it == 0 else cfg.refine
        ref = Field.from_affine(a, shape, fcfg.stride)
        cut = None if fixed_mask is None else _node_cut(fixed_mask, ref)
        flow, ratio = estimate_flow(fixed, moving, fcfg, prior=cur,
                                    fixed_mask=fixed_pieces, moving_mask=moving_pieces)
        flow = clean_flow(flow)
        w = np.isfinite(flow.data[0]).astype(np.float64)
        cur = relax(flow, w, ref, cfg.mesh, cut=cut)
        if cfg.tear_px > 0:
            before = 0 if cut is None else int(cut.sum())
            cur, cut = _tear(flow, w, ref, cur, cut, cfg)
            torn = (0 if cut is None else int(cut.sum())) - before
        ok = w > 0
        n_match = int(ok.sum())
        if n_match:
            r = np.linalg.norm((cur.data - flow.data)[:, ok], axis=0)
            res, res95 = float(r.mean()), float(np.percentile(r, 95))
    return PairResult(cur, a, n_match, res, res95, int(w.size), {"torn_nodes": torn})


def _tear(flow: Field, w: np.ndarray, ref: Field, cur: Field, cut: np.ndarray | None,
          cfg: AlignConfig) -> tuple[Field, np.ndarray | None]:
    """Folds and cracks the image masks missed show up as a line of nodes the smooth mesh
    cannot follow (a displacement jump); cut the springs there and relax again."""
    from scipy import ndimage

    ok = w > 0
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
    return relax(flow, w, ref, cfg.mesh, cut=new_cut), new_cut


def _pieces(mask: np.ndarray | None) -> np.ndarray | None:
    """Label the pieces of tissue a fold mask leaves (uint16; 0 = masked)."""
    from scipy import ndimage

    if mask is None:
        return None
    lab, n = ndimage.label(np.asarray(mask, bool))
    return lab.astype(np.uint16) if n < 65535 else (lab > 0).astype(np.uint16)


def _node_cut(mask: np.ndarray, ref: Field) -> np.ndarray:
    """Nodes whose neighbourhood (one stride) touches masked-out pixels."""
    from scipy import ndimage

    bad = ~np.asarray(mask, bool)
    s = int(ref.stride)
    grown = ndimage.maximum_filter(bad, size=s + 1) if bad.any() else bad
    ny, nx = ref.node_yx()
    iy = np.clip(ny.astype(int), 0, mask.shape[0] - 1)
    ix = np.clip(nx.astype(int), 0, mask.shape[1] - 1)
    return grown[np.ix_(iy, ix)]


@dataclass
class SectionAlignment:
    """Outcome for one section of a stack (``field`` is None for blank sections)."""

    z: int
    status: str  # 'reference' | 'aligned' | 'blank' | 'failed'
    field: Field | None  # pull map: output frame -> this section's pixels
    matched_to: int | None  # z of the section it was matched to
    n_matches: int = 0
    match_fraction: float = 0.0  # valid matches / nodes
    residual_px: float = float("nan")  # mean relaxed-vs-measured mismatch, last round
    residual_p95_px: float = float("nan")
    fold_fraction: float = 0.0  # share of the section masked as fold/crack
    min_jacobian: float = float("nan")
    flags: list[str] = dc_field(default_factory=list)


def section_masks(img: Any, cfg: AlignConfig) -> tuple[np.ndarray | None, float]:
    """Fold/crack mask at full resolution (True = usable) or None when clean; masked share."""
    if not cfg.mask_folds:
        return None, 0.0
    f = max(1, min(int(n) for n in img.shape[-2:]) // 1024)
    small = downsample(img, f) if f > 1 else np.asarray(img, np.float32)
    bad = normalize.fold_mask(small)
    frac = float(bad.mean())
    if frac == 0.0:
        return None, 0.0
    if f > 1:
        bad = np.repeat(np.repeat(bad, f, axis=0), f, axis=1)
        h, w = (int(n) for n in img.shape[-2:])
        full = np.ones((h, w), bool)
        hh, ww = min(h, bad.shape[0]), min(w, bad.shape[1])
        full[:hh, :ww] = ~bad[:hh, :ww]
        return full, frac
    return ~bad, frac


def align_stack(sections: Any, cfg: AlignConfig | None = None, *,
                min_match_fraction: float = 0.3, max_skip: int = 3) -> list[SectionAlignment]:
    """Align every section to the previous good one; returns one record per section.

    A section is matched past a folded predecessor to the last fold-free one (at
    most ``max_skip`` sections back), because near a fold the predecessor's own
    map is interpolated and would drag the next section.

    ``sections`` is a (z, y, x) array or a sequence of 2-D arrays (read lazily,
    one pair at a time).  The first non-blank section is the reference frame.
    Fields are composed (``Field.then``), so nothing is re-rendered between pairs.
    """
    cfg = cfg or AlignConfig()
    out: list[SectionAlignment] = []
    prev: tuple[int, Any, np.ndarray | None, Field] | None = None  # z, image, mask, field
    clean: tuple[int, Any, np.ndarray | None, Field] | None = None  # last fold-free one
    prev_folded = False
    for z in range(len(sections)):
        img = sections[z]
        if normalize.is_blank(img):
            out.append(SectionAlignment(z, "blank", None, None, flags=["blank: bridged"]))
            continue
        mask, frac = section_masks(img, cfg)
        flags = ["fold/crack masked"] if frac > 0 else []
        if prev is None:
            shape = (int(img.shape[-2]), int(img.shape[-1]))
            ident = Field.zeros(shape, cfg.refine.stride if cfg.fine_iterations > 1
                                else cfg.fine.stride)
            out.append(SectionAlignment(z, "reference", ident, None, fold_fraction=frac,
                                        min_jacobian=1.0, flags=flags))
            prev = (z, img, mask, ident)
            prev_folded = mask is not None
            clean = None if prev_folded else prev
            continue
        target = prev
        if prev_folded and clean is not None and z - clean[0] <= max_skip:
            target = clean
            flags.append(f"matched past folded section {prev[0]}")
        pz, pimg, pmask, pfield = target
        if prev[0] != z - 1:
            flags.append(f"bridged gap {prev[0] + 1}..{z - 1}")
        try:
            pair = align_pair(pimg, img, cfg, fixed_mask=pmask, moving_mask=mask)
        except WiremapError as e:  # a fold the mesh cannot absorb: flag, keep going
            out.append(SectionAlignment(z, "failed", None, pz, fold_fraction=frac,
                                        flags=flags + [f"alignment failed: {e}"]))
            continue
        if pair.extras.get("torn_nodes", 0) > 0:
            flags.append(f"fold/crack seen in the flow ({pair.extras['torn_nodes']} nodes cut)")
        total = pfield.then(pair.field)
        frac_m = pair.n_matches / max(pair.n_nodes, 1)
        if frac_m < min_match_fraction:
            flags.append(f"few matches ({frac_m:.0%})")
        jac = float(triangle_jacobians(total).min())
        out.append(SectionAlignment(z, "aligned", total, pz, pair.n_matches, frac_m,
                                    pair.match_residual_px, pair.match_residual_p95_px,
                                    frac, jac, flags))
        prev = (z, img, mask, total)
        prev_folded = mask is not None or pair.extras.get("torn_nodes", 0) > 0
        if not prev_folded:
            clean = prev
    return out
