"""Drift removal along z (``stack.detrend``), optionally of the fields' elastic part only.

Known answer: fields made of a per-section translation (independent from one
section to the next, kept as measured) plus an elastic bump that grows steadily
along z (drift).  Removing the elastic trend keeps every field's affine part
exactly and shrinks the drifting bump; the full detrend also moves translations.
"""

import numpy as np

from wiremap.align.field import Field
from wiremap.align.stack import SectionAlignment, _affine_part, detrend


def _stack(n=7):
    yy, xx = np.mgrid[0:9, 0:9]
    bump = np.exp(-((yy - 3.0) ** 2 + (xx - 5.0) ** 2) / 4.0)
    rng = np.random.default_rng(3)
    out = []
    for z in range(n):
        t = np.zeros(2) if z == 0 else rng.uniform(-5, 5, 2)
        data = t[:, None, None] + 0.5 * z * np.stack([bump, -bump])
        out.append(SectionAlignment(z, "reference" if z == 0 else "aligned",
                                    Field(data.astype(np.float32), 16.0), None if z == 0 else z - 1))
    return out


def _elastic(f):
    return f.data - _affine_part(f.data)


def test_elastic_detrend_keeps_affine_parts_and_removes_the_drifting_bump():
    before, after = _stack(), _stack()
    detrend(after, 1.5, elastic_only=True)
    assert np.array_equal(after[0].field.data, before[0].field.data)  # the reference keeps identity
    for b, a in zip(before[1:], after[1:], strict=True):
        assert np.allclose(_affine_part(a.field.data), _affine_part(b.field.data), atol=1e-4)
        assert any(f.startswith("drift removed") for f in a.flags)
    mid = 3
    assert np.abs(_elastic(after[mid].field)).max() < 0.5 * np.abs(_elastic(before[mid].field)).max()


def test_full_detrend_also_moves_translations():
    before, after = _stack(), _stack()
    detrend(after, 1.5)
    moved = [np.abs(a.field.data.mean(axis=(1, 2)) - b.field.data.mean(axis=(1, 2))).max()
             for b, a in zip(before[1:], after[1:], strict=True)]
    assert max(moved) > 1.0
