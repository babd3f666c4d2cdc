"""Stack alignment: every section matched to its previous ones, the chain kept in check.

``align_stack(sections)`` picks the reference frame (``reference_section``: by
default the non-blank section nearest the middle of the stack) and walks from it
up to the last section and down to the first; "previous" below means previous
along the walk.  On changing sections each match follows a little of the
content's own apparent motion (oblique neurites), which adds up along a walk;
starting in the middle halves the longest walk.  Section z is aligned
(``pair.align_pair``) to up to ``neighbours`` previous good sections, and each
match composed with that section's own field (``Field.then``) gives a
candidate field for z.  Candidates that agree (p95 node distance within
``max_disagreement_px``) are averaged, weighted by match confidence: on
changing content the measurement noise of different pairs is partly
independent, so the average drifts less along the chain than a single chain
would (on changing content the nearest wins when candidates disagree: a match
two sections apart is several times worse there); a candidate that
disagrees with the others (a false match, a pair across a bad section) is left
out and the section is flagged.  Pair fields
that would be wild fall back to their affine inside ``align_pair`` and are
flagged; fallback candidates only count when nothing better exists.

Blank sections are detected, recorded and bridged; fold/crack masks are cut
out of matching and out of the mesh, and a section is matched past a folded
predecessor to the last fold-free one (at most ``max_skip`` sections back),
because near a fold the predecessor's own map is interpolated -- when
consecutive sections show the same tissue; on changing content the folded
predecessor is matched (fold masked), as a match two sections apart is worse.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from wiremap.align import normalize
from wiremap.align.field import Field, triangle_jacobians
from wiremap.align.pair import AlignConfig, PairResult, align_pair, coarse_affine, downsample
from wiremap.errors import WiremapError

__all__ = ["AlignConfig", "PairResult", "SectionAlignment", "align_pair", "align_stack",
           "coarse_affine", "downsample", "reference_section", "section_masks"]


@dataclass
class SectionAlignment:
    """Outcome for one section of a stack (``field`` is None for blank sections)."""

    z: int
    status: str  # 'reference' | 'aligned' | 'blank' | 'failed'
    field: Field | None  # pull map: output frame -> this section's pixels
    matched_to: int | None  # z of the main section it was matched to
    n_matches: int = 0
    match_fraction: float = 0.0  # valid matches / nodes
    residual_px: float = float("nan")  # mean relaxed-vs-measured mismatch, last round
    residual_p95_px: float = float("nan")
    fold_fraction: float = 0.0  # share of the section masked as fold/crack
    min_jacobian: float = float("nan")
    flags: list[str] = dc_field(default_factory=list)
    neighbours: list[int] = dc_field(default_factory=list)  # sections whose candidates were used
    disagreement_px: float = float("nan")  # p95 distance between neighbour candidates
    fallback: bool = False  # the field is a fallback (affine), not a relaxed mesh


def section_masks(img: Any, cfg: AlignConfig) -> tuple[np.ndarray | None, float]:
    """Usable-tissue mask at full resolution (True = usable) or None when all is usable,
    and the share masked as fold/crack.  Canvas no tile covers (exact zeros: tiles the
    stitcher could not place) is masked too, but is no fold."""
    a = np.asarray(img)
    empty = normalize.empty_mask(a)
    if not cfg.mask_folds:
        return (None if not empty.any() else ~empty), 0.0
    f = max(1, min(int(n) for n in img.shape[-2:]) // 1024)
    small = downsample(a, f) if f > 1 else a.astype(np.float32)
    if empty.any():  # fill the empty canvas with tissue grey, or it reads as a dark fold
        small_empty = downsample(empty, f) > 0.5 if f > 1 else empty
        small = np.where(small_empty, np.median(small[~small_empty]) if (~small_empty).any()
                         else 0.0, small).astype(np.float32)
    bad = normalize.fold_mask(small)
    frac = float(bad.mean())
    if frac == 0.0 and not empty.any():
        return None, 0.0
    if f > 1:
        bad = np.repeat(np.repeat(bad, f, axis=0), f, axis=1)
        h, w = (int(n) for n in img.shape[-2:])
        full = np.zeros((h, w), bool)
        hh, ww = min(h, bad.shape[0]), min(w, bad.shape[1])
        full[:hh, :ww] = bad[:hh, :ww]
        bad = full
    return ~(bad | empty), frac


@dataclass
class _Done:
    """A section already aligned: what later sections match against."""

    z: int
    image: Any
    mask: np.ndarray | None
    field: Field
    folded: bool
    fallback: bool
    pos: int = 0  # place along the walk (z for a forward walk; distance from the reference)


@dataclass
class _Candidate:
    target: _Done
    pair: PairResult
    total: Field

    @property
    def fallback(self) -> bool:
        return "fallback" in self.pair.extras


def _targets(done: list[_Done], z: int, cfg: AlignConfig, max_skip: int,
             pos: int | None = None) -> tuple[list[_Done], list[str]]:
    """The previous sections to match ``z`` (at ``pos`` along the walk) to (nearest first),
    and flags saying why."""
    flags: list[str] = []
    pos = z if pos is None else pos
    near = done[-max(1, cfg.neighbours):][::-1]
    if near[0].pos != pos - 1:
        a, b = sorted((near[0].z, z))
        flags.append(f"bridged gap {a + 1}..{b - 1}")
    if any(d.folded for d in near):
        clean = [d for d in done if not d.folded and pos - d.pos <= max_skip]
        if clean:
            use = [d for d in near if not d.folded]
            if all(clean[-1] is not u for u in use):
                use.append(clean[-1])
            folded = [d.z for d in near if d.folded]
            flags.append(f"matched past folded section {','.join(map(str, folded))}")
            near = sorted(use, key=lambda d: -d.z)
    return near, flags


def _disagreement(a: Field, b: Field, border: int = 1) -> float:
    d = np.linalg.norm(a.data - b.resample_like(a).data, axis=0)
    if min(d.shape) > 2 * border + 2:
        d = d[border:-border, border:-border]
    return float(np.percentile(d, 95))


def _combine(cands: list[_Candidate], cfg: AlignConfig) -> tuple[list[_Candidate], float, Field]:
    """Consensus of candidate fields: the largest agreeing group (nearest first on ties),
    averaged by match confidence; returns the group, the largest disagreement, the field."""
    good = [c for c in cands if not c.fallback] or cands
    n = len(good)
    dis = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dis[i, j] = dis[j, i] = _disagreement(good[i].total, good[j].total)
    agree = dis <= cfg.max_disagreement_px
    conf = np.array([c.pair.confidence for c in good])
    # most agreeing partners first, then confidence (the nearest usually has the most); on
    # changing content the nearest first: a match further back can be confidently wrong
    # (larger patches give sharp peaks to the motion of large objects too)
    changing = all(c.pair.extras.get("content") == "changing" for c in good)
    best = max(range(n), key=lambda i: (int(agree[i].sum()), good[i].target.pos if changing else 0,
                                        conf[i]))
    group = [good[j] for j in range(n) if agree[best, j]]
    w = np.array([max(c.pair.confidence, 1e-3) ** 2 for c in group])
    base = group[0].total
    data = sum(wi * c.total.resample_like(base).data for wi, c in zip(w, group, strict=True)) / w.sum()
    return group, float(dis.max()) if n > 1 else float("nan"), base.with_data(data)


def reference_section(sections: Any, cfg: AlignConfig) -> int:
    """The section whose frame the stack is aligned to: the first non-blank, fold-free one,
    or (``cfg.reference == 'middle'``) the one nearest the middle of the stack.

    A folded reference would put its fold's displacement (tissue pushed apart on both
    sides of the band) into the frame of every other section, which then has to bend
    round a fold it does not have; so a folded section is the reference only when
    every non-blank section is folded (``cfg.mask_folds`` off: folds are not looked for)."""
    n = len(sections)
    order = range(n) if cfg.reference == "first" else \
        sorted(range(n), key=lambda z: (abs(z - (n - 1) // 2), z))
    folded = None
    for z in order:
        if normalize.is_blank(sections[z]):
            continue
        if cfg.mask_folds and section_masks(sections[z], cfg)[1] > 0:
            folded = int(z) if folded is None else folded
            continue
        return int(z)
    return 0 if folded is None else folded


def align_stack(sections: Any, cfg: AlignConfig | None = None, *,
                min_match_fraction: float = 0.1, max_skip: int = 3) -> list[SectionAlignment]:
    """Align every section to its good neighbours towards the reference; one record per section.

    ``sections`` is a (z, y, x) array or a sequence of 2-D arrays (read lazily;
    ``cfg.neighbours`` + 1 sections are held at a time).  The reference frame is
    ``reference_section``: with ``cfg.reference == 'middle'`` the stack is walked from
    the middle section up and down, so that no section is more than half the stack
    away from the frame it is aligned to.  The matching error of changing sections
    accumulates along each walk (the content's own apparent motion), so halving the
    walks halves the largest accumulated error.  Fields are composed
    (``Field.then``), so nothing is re-rendered between pairs.
    """
    cfg = cfg or AlignConfig()
    n = len(sections)
    ref = reference_section(sections, cfg) if n else 0
    up = _walk(sections, list(range(ref, n)), cfg, min_match_fraction, max_skip)
    down = _walk(sections, list(range(ref, -1, -1)), cfg, min_match_fraction, max_skip) \
        if ref > 0 else []
    out = sorted(down[1:] + up, key=lambda r: r.z)
    if cfg.detrend_sections > 0:
        detrend(out, cfg.detrend_sections, cfg.detrend_elastic_only)
    return out


def _walk(sections: Any, order: list[int], cfg: AlignConfig, min_match_fraction: float,
          max_skip: int) -> list[SectionAlignment]:
    """Align the sections ``order`` (consecutive z, up or down) each to its previous good
    ones along the walk; the first non-blank one is the reference."""
    out: list[SectionAlignment] = []
    done: list[_Done] = []
    for pos, z in enumerate(order):
        img = sections[z]
        if normalize.is_blank(img):
            out.append(SectionAlignment(z, "blank", None, None, flags=["blank: bridged"]))
            continue
        mask, frac = section_masks(img, cfg)
        flags = ["fold/crack masked"] if frac > 0 else []
        if not done:
            shape = (int(img.shape[-2]), int(img.shape[-1]))
            ident = Field.zeros(shape, cfg.refine.stride if cfg.fine_iterations > 1
                                else cfg.fine.stride)
            out.append(SectionAlignment(z, "reference", ident, None, fold_fraction=frac,
                                        min_jacobian=1.0, flags=flags))
            done.append(_Done(z, img, mask, ident, frac > 0, False, pos))
            continue
        targets, tflags = _targets(done, z, cfg, max_skip, pos)
        flags += tflags
        cands, errors = [], []
        for t in targets:
            try:
                pair = align_pair(t.image, img, cfg, fixed_mask=t.mask, moving_mask=mask)
            except WiremapError as e:  # a fold the mesh cannot absorb: try the next one
                errors.append(f"{t.z}: {e}")
                continue
            cands.append(_Candidate(t, pair, t.field.then(pair.field)))
        if not cands:
            out.append(SectionAlignment(z, "failed", None, targets[0].z, fold_fraction=frac,
                                        flags=flags + [f"alignment failed: {'; '.join(errors)}"]))
            continue
        group, dis, total = _combine(cands, cfg)
        if (frac > 0 or any(c.pair.extras.get("torn_nodes", 0) for c in group)) \
                and len(group) > 1:
            # a fold is cut differently in each pair: averaging would blur its edges
            group = group[:1]
            total = group[0].total
        main = group[0]
        pair = main.pair
        if all(cands[0] is not g for g in group) and not cands[0].fallback:
            flags.append(f"neighbours disagree ({dis:.1f} px): nearest section {cands[0].target.z} "
                         f"left out, used {','.join(str(g.target.z) for g in group)}")
        fallback = all(c.fallback for c in group)
        if fallback:
            flags.append(f"fallback: {pair.extras['fallback']}")
        if pair.extras.get("torn_nodes", 0) > 0:
            flags.append(f"fold/crack seen in the flow ({pair.extras['torn_nodes']} nodes cut)")
        frac_m = pair.n_matches / max(pair.n_nodes, 1)
        if frac_m < min_match_fraction:
            flags.append(f"few matches ({frac_m:.0%})")
        jac = float(triangle_jacobians(total).min())
        out.append(SectionAlignment(z, "aligned", total, main.target.z, pair.n_matches, frac_m,
                                    pair.match_residual_px, pair.match_residual_p95_px,
                                    frac, jac, flags, [c.target.z for c in group], dis, fallback))
        # later sections match past a folded one (its map is interpolated near the fold), but
        # only where consecutive sections show the same tissue: on changing content a match
        # two sections apart follows twice the content's motion and loses most shared
        # structure (~3 px off on synthetic tissue against ~0.5 px for the next section),
        # while the fold, masked in matching, only spoils its own band
        folded = (frac > 0 or pair.extras.get("torn_nodes", 0) > 0) \
            and pair.extras.get("content") != "changing"
        done.append(_Done(z, img, mask, total, folded, fallback, pos))
        keep = done[-max(cfg.neighbours, 1):]
        clean = [d for d in done if not d.folded]
        if clean and all(clean[-1] is not d for d in keep):
            keep.insert(0, clean[-1])
        done = keep  # bounded memory: the nearest sections and the last fold-free one
    return out


def detrend(results: list[SectionAlignment], sigma: float, elastic_only: bool = False) -> None:
    """Remove the chain's slow drift in place: each field minus the Gaussian-weighted mean
    (``sigma`` sections) of its neighbours' fields, plus that mean at the reference.

    Pairwise matching of changing sections follows the apparent motion of oblique
    neurites, and the chain adds it up section after section; the sections' own
    deformations are independent from one section to the next.  What changes slowly
    along z is therefore drift, and is taken out; what changes from one section to the
    next is kept.  The reference keeps the identity.  (Additive on node displacements:
    exact for translations, first order for the rest.)
    """
    have = [r for r in results if r.field is not None and r.status in ("reference", "aligned")]
    if len(have) < 3:
        return
    fields = [r.field for r in have if r.field is not None]
    base = fields[0]
    zs = np.array([r.z for r in have], np.float64)
    data = np.stack([f.resample_like(base).data for f in fields])
    lin = np.stack([_affine_part(d) for d in data]) if elastic_only else np.zeros_like(data)
    data = data - lin
    g = np.exp(-0.5 * ((zs[:, None] - zs[None, :]) / sigma) ** 2)
    trend = np.tensordot(g / g.sum(axis=1, keepdims=True), data, axes=1)
    ref = next(i for i, r in enumerate(have) if r.status == "reference")
    for i, r in enumerate(have):
        if r.status == "reference":
            continue
        r.field = base.with_data(data[i] - trend[i] + trend[ref] + lin[i])
        r.min_jacobian = float(triangle_jacobians(r.field).min())
        r.flags.append(f"drift removed (sigma {sigma:g} sections)")


def _affine_part(d: np.ndarray) -> np.ndarray:
    """Least-squares affine fit of a node field ``(2, gy, gx)``, evaluated on its nodes."""
    gy, gx = d.shape[1:]
    yy, xx = np.mgrid[0:gy, 0:gx]
    a = np.stack([np.ones(gy * gx), yy.ravel(), xx.ravel()], 1)
    coef = np.linalg.lstsq(a, d.reshape(2, -1).T.astype(np.float64), rcond=None)[0]
    return (a @ coef).T.reshape(d.shape)
