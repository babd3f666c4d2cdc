"""Robust re-weighting of the changing-content mesh (``AlignConfig.robust_rounds``).

Between different sections a patch dominated by one large oblique object measures
that object's own motion.  Known answer: a smooth field (affine) measured with
noise, where a block of nodes (a large object) moves 3 px on its own (too little
for the mesh's outlier test); the re-weighted mesh must stay on the smooth field
there, the plain one is pulled.
"""

import numpy as np

from wiremap.align.field import Field
from wiremap.align.mesh import relax
from wiremap.align.pair import AlignConfig, _reweighted


def _flow():
    rng = np.random.default_rng(3)
    truth = Field.from_affine(np.array([[1.01, 0.004, 3.0], [-0.004, 0.99, -2.0]]), (512, 512), 16)
    d = truth.data + rng.normal(0, 0.8, truth.data.shape).astype(np.float32)
    obj = (slice(8, 16), slice(10, 18))  # 128 x 128 px moving 3 px along y
    d[0][obj] += 3.0
    return truth, truth.with_data(d), obj


def test_object_motion_does_not_pull_the_robust_mesh():
    truth, flow, obj = _flow()
    cfg = AlignConfig(robust_rounds=3, robust_scale=4.0)
    w = np.full(flow.grid, 0.05)
    ref = Field.from_affine(np.array([[1.0, 0, 3.0], [0, 1.0, -2.0]]), (512, 512), 16)
    plain = relax(flow, w, ref, cfg.mesh_changing)
    robust, wr = _reweighted(flow, w, ref, plain, cfg.mesh_changing, None, cfg)
    err = lambda f: np.linalg.norm(f.data - truth.data, axis=0)  # noqa: E731
    assert err(plain)[obj].mean() > 1.0  # the plain mesh follows the object a good part
    assert err(robust)[obj].mean() < 0.6 * err(plain)[obj].mean()
    assert err(robust).mean() < 0.8 * err(plain).mean()
    assert wr[obj].mean() < 0.5 * wr.mean()  # the object's nodes lost most of their weight


def test_too_few_matches_keep_the_plain_mesh():
    truth, flow, _ = _flow()
    cfg = AlignConfig(robust_rounds=2, min_matches=10_000)
    w = np.full(flow.grid, 0.05)
    plain = relax(flow, w, truth, cfg.mesh_changing)
    out, wr = _reweighted(flow, w, truth, plain, cfg.mesh_changing, None, cfg)
    assert out is plain and np.array_equal(wr, w)
