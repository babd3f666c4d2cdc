"""Alignment of a workspace scored against the acquisition simulator's true maps.

For an output pixel ``p`` of the aligned stack, section ``z``'s field says
which montage pixel ``q_z(p)`` it shows; the simulator says which tissue point
(volume ``(y, x)``) that montage pixel images.  A perfect pipeline shows the
same tissue column in every section: ``V_z(p) = V_ref(p)``.  The residual is
``|V_z(p) - V_ref(p)|`` in pixels, over tissue (defect masks dilated by
``margin`` and a border of ``margin`` are left out), for every aligned section.

The map ``p -> V_z(p)`` is :class:`wiremap.align.truth.AlignedFrame` (which
also undoes the montage frame's offset from the true section frame, so that
it is not charged to the alignment, which rightly compensates it).

``error_decomposition`` splits the error vectors into the part one affine map
per section explains and the rest, which tells an operator whether a better
global solve (drift, shear) or a different elastic model could help.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from wiremap.align.truth import AlignedFrame
from wiremap.errors import InputError
from wiremap.evaluate import Residual, alignment_residual
from wiremap.workspace import Workspace


@dataclass
class SectionErrors:
    """Error vectors ``V_z(p) - V_ref(p)`` (N, 2) of one section on the scoring grid, and which count."""

    z: int
    error_yx: np.ndarray
    in_tissue: np.ndarray


def alignment_errors(ws: Workspace, *, stride: int = 4,
                     margin: int = 16) -> tuple[np.ndarray, int, list[SectionErrors]]:
    """The scoring grid (N, 2), the reference section and every other aligned section's errors."""
    frame = AlignedFrame(ws)
    fields, gt = frame.fields, frame.gt
    h, w = gt.section_shape
    ys, xs = np.mgrid[margin : h - margin : stride, margin : w - margin : stride]
    grid = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64)

    def tissue_points(z: int) -> tuple[np.ndarray, np.ndarray]:
        v, q = frame.tissue_points(z, grid)
        bad = ndimage.binary_dilation(gt.masks[z] > 0, iterations=margin)
        qi = np.clip(np.rint(q).astype(int), 0, [h - 1, w - 1])
        return v, ~bad[qi[:, 0], qi[:, 1]]

    qc_table = ws.read_table("align_qc")
    reference = int(qc_table.loc[qc_table["status"] == "reference", "z"].iloc[0])
    v_ref, ok_ref = tissue_points(reference)
    sections = []
    for z in sorted(fields):
        if z != reference:
            v, ok = tissue_points(z)
            sections.append(SectionErrors(z, v - v_ref, ok & ok_ref))
    if not sections:
        raise InputError("only one aligned section: nothing to score")
    return grid, reference, sections


def score_alignment(ws: Workspace, *, stride: int = 4, margin: int = 16) -> tuple[Residual, pd.DataFrame]:
    """Residual of the aligned stack against truth: overall, and one row per section."""
    _, _, sections = alignment_errors(ws, stride=stride, margin=margin)
    rows = []
    for s in sections:
        r = alignment_residual(s.error_yx, np.zeros_like(s.error_yx), s.in_tissue)
        rows.append({"section": s.z, "mean_px": r.mean_px, "p95_px": r.p95_px, "max_px": r.max_px, "n": r.n})
    errors = np.concatenate([s.error_yx for s in sections])
    overall = alignment_residual(errors, np.zeros_like(errors), np.concatenate([s.in_tissue for s in sections]))
    return overall, pd.DataFrame(rows)


def error_decomposition(grid: np.ndarray, reference: int, sections: list[SectionErrors]) -> dict[str, float]:
    """Mean residual (px) as scored, and what is left once each section's best affine
    map of its own errors is taken out (what no global solve of one affine per section
    could remove), and the same on the sections next to the reference only (one
    matching step: no accumulation along the stack)."""
    design = np.c_[np.ones(len(grid)), grid]

    def split(s: SectionErrors) -> tuple[np.ndarray, np.ndarray]:
        ok = s.in_tissue
        coef = np.linalg.lstsq(design[ok], s.error_yx[ok], rcond=None)[0]
        return np.linalg.norm(s.error_yx[ok], axis=1), np.linalg.norm((s.error_yx - design @ coef)[ok], axis=1)

    by_section = {s.z: split(s) for s in sections if s.in_tissue.sum() >= 3}
    ref_next = [p for z, p in by_section.items() if abs(z - reference) == 1]
    return {"mean_px": float(np.concatenate([p[0] for p in by_section.values()]).mean()),
            "after_best_affine_per_section_mean_px": float(np.concatenate([p[1] for p in by_section.values()]).mean()),
            "next_to_reference_mean_px": float(np.concatenate([p[0] for p in ref_next]).mean())
            if ref_next else float("nan"),
            "next_to_reference_after_best_affine_mean_px": float(np.concatenate([p[1] for p in ref_next]).mean())
            if ref_next else float("nan")}
