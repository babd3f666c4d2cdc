"""Alignment scored against the acquisition simulator's true section maps.

The volume repeats one real ssTEM image in z, so every section shows the same
tissue and the true alignment is known exactly: for an output pixel ``p`` of the
reference section and its aligned position ``q`` in section z, the volume
points ``section_to_volume(0, p)`` and ``section_to_volume(z, q)`` must agree.
The stack has a blank section, a fold and a change of microscope settings.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from wiremap.align.field import triangle_jacobians
from wiremap.align.stack import AlignConfig, align_stack
from wiremap.synth.acquisition import (
    AcquisitionConfig,
    render_section,
    section_to_volume,
    simulate_acquisition,
)

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


def _stack(seed):
    src = np.load(DATA)["tile_source"]
    vol = np.stack([src] * 8)
    cfg = AcquisitionConfig(beams=7, rescan_fraction=0.0, defects=True, blank_fraction=0.15,
                            fold_fraction=0.2, crack_fraction=0.0, debris_fraction=0.0,
                            regime_change_at=0.5)
    acq = simulate_acquisition(vol, (50, 4, 4), cfg, seed=seed)
    gt = acq.groundtruth
    secs = [np.clip(np.rint(render_section(vol, gt, z)), 0, 255).astype(np.uint8)
            for z in range(len(vol))]
    return gt, secs


@pytest.mark.parametrize("seed", [
    0,  # a fold, a blank section, a contrast change
    1,  # fold jump 15 px: the next section is matched past it
    pytest.param(2, marks=pytest.mark.xfail(
        strict=True, reason="a 23 px fold jump: errors up to ~3 px within 48 px of the fold")),
])
def test_stack_residual_against_simulator_truth(seed):
    gt, secs = _stack(seed)
    status = gt.sections.set_index("section")["status"]
    assert {"blank", "fold"} <= set(status)  # the scenario holds what it claims
    assert gt.sections["regime"].nunique() == 2
    res = align_stack(secs, AlignConfig())
    h, w = gt.section_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    p = np.stack([yy.ravel(), xx.ravel()], 1)
    ref = next(r.z for r in res if r.status == "reference")
    v0 = section_to_volume(gt, ref, p)
    for r in res:
        if status[r.z] == "blank":
            assert r.status == "blank" and r.field is None
            continue
        assert r.status in ("reference", "aligned")
        d = r.field.dense((h, w))
        q = p + np.stack([d[0].ravel(), d[1].ravel()], 1)
        err = np.linalg.norm(section_to_volume(gt, r.z, q) - v0, axis=1).reshape(h, w)
        qi = np.clip(np.rint(q).astype(int), 0, [h - 1, w - 1])
        masked = (gt.masks[ref] > 0) | (gt.masks[r.z][qi[:, 0], qi[:, 1]] > 0).reshape(h, w)
        keep = ~ndimage.binary_dilation(masked, iterations=16)
        keep[:16], keep[-16:], keep[:, :16], keep[:, -16:] = False, False, False, False
        e = err[keep]
        assert e.mean() <= 0.25, (r.z, e.mean())
        assert np.percentile(e, 95) <= 0.5, (r.z, np.percentile(e, 95))
        assert triangle_jacobians(r.field).min() > 0
    fold_z = int(status[status == "fold"].index[0])
    assert any(f.startswith("fold/crack") for f in res[fold_z].flags)
