"""QC outputs of alignment: table, residual plot, overlays, flags."""

from pathlib import Path

import numpy as np
from PIL import Image

from wiremap.align import known, qc
from wiremap.align.stack import AlignConfig, align_stack

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


def test_table_plot_and_overlays(tmp_path):
    src = np.load(DATA)["sections"][2]
    imgs, contents = [], []
    for z in range(3):
        c = known.smooth_warp(src.shape, amplitude=2.0, sigma=64, shift=(z, -z), seed=z)
        imgs.append(known.distort(src, c, noise=5, seed=z))
        contents.append(c)
    imgs.insert(2, np.full(src.shape, 50, np.uint8))
    res = align_stack(imgs, AlignConfig(reference="first"))  # overlays against section 0
    table = qc.alignment_table(res)
    assert list(table["status"]) == ["reference", "aligned", "blank", "aligned"]
    assert list(table["attention"]) == [False, False, True, False]
    assert table.loc[3, "matched_to"] == 1
    assert (table.loc[[1, 3], "residual_p95_px"] < 0.5).all()
    png = qc.plot_residuals(table, tmp_path / "residuals.png")
    im = Image.open(png)
    assert im.size == (800, 320) and im.mode in ("RGB", "RGBA")
    # overlays: after alignment, magenta and green agree far better than before
    from wiremap.align.warp import warp_image

    after = warp_image(imgs[3], res[3].field, src.shape)
    before_ov = qc.overlay(imgs[0], imgs[3]).astype(float)
    after_ov = qc.overlay(imgs[0], after).astype(float)
    assert after_ov.shape == src.shape + (3,)
    mis = lambda ov: np.abs(ov[..., 0] - ov[..., 1])[16:-16, 16:-16].mean()  # noqa: E731
    assert mis(after_ov) < 0.7 * mis(before_ov)
    path = qc.write_png(after_ov.astype(np.uint8), tmp_path / "overlay.png")
    assert Image.open(path).size == (src.shape[1], src.shape[0])
