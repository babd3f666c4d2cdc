"""Alignment of a workspace scored against the acquisition simulator's true maps.

For an output pixel ``p`` of the aligned stack, section ``z``'s field says
which montage pixel ``q_z(p)`` it shows; the simulator says which tissue point
(volume ``(y, x)``) that montage pixel images.  A perfect pipeline shows the
same tissue column in every section: ``V_z(p) = V_ref(p)``.  The residual is
``|V_z(p) - V_ref(p)|`` in pixels, over tissue (defect masks dilated by
``margin`` and a border of ``margin`` are left out), for every aligned section.

The montage frame is the stitcher's: tiles are anchored to their nominal stage
positions, so it sits at minus the mean stage jitter of the section's tiles
from the true section frame.  That offset is known here and undone, so that
it is not charged to the alignment, which rightly compensates it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from wiremap.align.stage import load_fields
from wiremap.errors import InputError
from wiremap.evaluate import Residual, alignment_residual
from wiremap.synth.acquisition import load_groundtruth, section_to_volume
from wiremap.workspace import Workspace


def _montage_offsets(tiles: pd.DataFrame) -> dict[int, np.ndarray]:
    """Per section, true minus nominal tile position, averaged over the scan the stitcher used (the last)."""
    last = tiles.groupby("section")["scan"].transform("max")
    used = tiles[tiles["scan"] == last]
    delta = used.assign(dy=used["y_true"] - used["y"], dx=used["x_true"] - used["x"])
    means = delta.groupby("section")[["dy", "dx"]].mean()
    return {int(s): row.to_numpy(np.float64) for s, row in means.iterrows()}


def score_alignment(ws: Workspace, *, stride: int = 4, margin: int = 16) -> tuple[Residual, pd.DataFrame]:
    """Residual of the aligned stack against truth: overall, and one row per section."""
    if not ws.exists("groundtruth/acquisition/tiles.parquet"):
        raise InputError(f"{ws.url} has no acquisition ground truth (only synthetic tiles can be scored)")
    fields = load_fields(ws)
    if not fields:
        raise InputError(f"{ws.url} has no alignment fields: run `wiremap align` first")
    gt = load_groundtruth(ws)
    offsets = _montage_offsets(gt.tiles)
    h, w = gt.section_shape
    ys, xs = np.mgrid[margin : h - margin : stride, margin : w - margin : stride]
    grid = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64)

    def tissue_points(z: int) -> tuple[np.ndarray, np.ndarray]:
        d = fields[z].at(grid[:, 0], grid[:, 1]).T
        q = grid + d
        bad = ndimage.binary_dilation(gt.masks[z] > 0, iterations=margin)
        qi = np.clip(np.rint(q).astype(int), 0, [h - 1, w - 1])
        return section_to_volume(gt, z, q + offsets[z]), ~bad[qi[:, 0], qi[:, 1]]

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
