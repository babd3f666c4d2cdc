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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from wiremap.align.truth import AlignedFrame
from wiremap.errors import InputError
from wiremap.evaluate import Residual, alignment_residual
from wiremap.workspace import Workspace


def score_alignment(ws: Workspace, *, stride: int = 4, margin: int = 16) -> tuple[Residual, pd.DataFrame]:
    """Residual of the aligned stack against truth: overall, and one row per section."""
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
    rows, errors, masks = [], [], []
    for z in sorted(fields):
        if z == reference:
            continue
        v, ok = tissue_points(z)
        keep = ok & ok_ref
        r = alignment_residual(v, v_ref, keep)
        rows.append({"section": z, "mean_px": r.mean_px, "p95_px": r.p95_px, "max_px": r.max_px, "n": r.n})
        errors.append(v)
        masks.append(keep)
    if not rows:
        raise InputError("only one aligned section: nothing to score")
    overall = alignment_residual(np.concatenate(errors), np.tile(v_ref, (len(errors), 1)), np.concatenate(masks))
    return overall, pd.DataFrame(rows)
