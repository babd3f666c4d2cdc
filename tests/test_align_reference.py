"""The stack's reference frame: the middle section, walked up and down.

Matching changing sections follows the content's own apparent motion a little,
and that error adds up along the walk from the reference; anchoring the frame at
the middle section halves the longest walk.  Checked with known answers: a stack
whose content slides by a constant step per section (the fields must measure the
distance to the middle section, with the right sign on both sides), and the
blank / fold / contrast-change stack of ``test_align_stack`` walked downwards
across its blank.
"""

from pathlib import Path

import numpy as np
import pytest

from test_align_stack import _fold_exclusion, _stack
from wiremap.align import known
from wiremap.align.field import triangle_jacobians
from wiremap.align.stack import AlignConfig, align_stack, reference_section

DATA = Path(__file__).parent / "data" / "isbi2012_align_crops.npz"


@pytest.fixture(scope="module")
def sections() -> np.ndarray:
    return np.load(DATA)["sections"]


def _sliding(src, n=7, step=0.8):
    h, w = src.shape
    return [known.distort(src, np.stack([np.full((h, w), step * z), np.zeros((h, w))]),
                          noise=3, seed=z) for z in range(n)]


def test_middle_reference_halves_the_longest_walk(sections):
    imgs = _sliding(sections[0])
    mid = align_stack(imgs)
    first = align_stack(imgs, AlignConfig(reference="first"))
    assert reference_section(imgs, AlignConfig()) == 3 and mid[3].status == "reference"
    assert first[0].status == "reference"
    for r in mid:  # pixel p of section z shows what p + 0.8 * (z - 3) shows in section 3
        d = r.field.data[:, 2:-2, 2:-2].reshape(2, -1).mean(axis=1)
        assert np.allclose(d, [0.8 * (3 - r.z), 0.0], atol=0.1), (r.z, d)
        assert r.z == 3 or r.matched_to == r.z + (1 if r.z < 3 else -1)
    drift = lambda res: max(float(np.abs(r.field.data[0]).mean()) for r in res)  # noqa: E731
    assert drift(first) == pytest.approx(4.8, abs=0.2)
    assert drift(mid) == pytest.approx(2.4, abs=0.2)


def test_downward_walk_bridges_a_blank_and_a_fold(sections):
    imgs, contents, bands = _stack(sections[0])  # blank at 1, fold at 3, contrast change at 4
    res = align_stack(imgs, AlignConfig())
    assert [r.status for r in res] == ["aligned", "blank", "reference", "aligned", "aligned",
                                       "aligned"]
    assert res[0].matched_to == 2 and "bridged gap 1..1" in res[0].flags
    assert res[3].fold_fraction > 0.01 and res[4].matched_to == 2  # past the folded section
    errs = []
    for r in res:
        if r.status != "aligned":
            continue
        ex = None if bands[r.z] is None else _fold_exclusion(r.field, bands[r.z])
        e = known.pull_residual(r.field, contents[2], contents[r.z], exclude=ex)
        assert e.mean() <= 0.25 and np.percentile(e, 95) <= 0.5, (r.z, e.mean())
        assert triangle_jacobians(r.field).min() > 0
        errs.append(e)
    assert np.concatenate(errs).mean() <= 0.15


def test_blank_middle_section_moves_the_reference_to_its_neighbour(sections):
    imgs = _sliding(sections[1], n=5)
    imgs[2] = np.full_like(imgs[2], 200)
    assert reference_section(imgs, AlignConfig()) == 1
    res = align_stack(imgs)
    assert [r.status for r in res] == ["aligned", "reference", "blank", "aligned", "aligned"]
    assert res[3].matched_to == 1
    d = res[3].field.data[:, 2:-2, 2:-2].reshape(2, -1).mean(axis=1)
    assert np.allclose(d, [-1.6, 0.0], atol=0.15)
