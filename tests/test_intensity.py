"""The grey range networks normalise by: percentiles of tissue, not of empty canvas."""

from __future__ import annotations

import numpy as np
import pytest

from wiremap.intensity import grey_range


def test_empty_canvas_does_not_squeeze_the_range():
    rng = np.random.default_rng(0)
    tissue = rng.integers(40, 200, size=(64, 64)).astype(np.uint8)
    aligned = np.zeros((96, 96), np.uint8)  # an aligned section on a larger, empty canvas
    aligned[16:80, 16:80] = tissue
    assert grey_range(aligned) == grey_range(tissue)
    lo, hi = grey_range(tissue)
    assert 40 <= lo < 45 and 195 < hi <= 199


def test_flat_and_empty_images():
    assert grey_range(np.full((8, 8), 7.0)) == (7.0, 8.0)
    assert grey_range(np.zeros((8, 8))) == (0.0, 1.0)  # all no-data: the range of what there is
    assert grey_range(np.zeros(0)) == (0.0, 255.0)
    lo, hi = grey_range(np.linspace(-1, 1, 101))  # float images keep their negative values
    assert lo == pytest.approx(-0.98, abs=0.005) and hi == pytest.approx(0.98, abs=0.005)


def test_each_section_gets_its_own_range_and_a_blank_one_the_stacks(workspace):
    from wiremap.intensity import section_grey_ranges
    from wiremap.volume import Layer, write_volume

    rng = np.random.default_rng(0)
    tissue = rng.integers(40, 201, size=(4, 64, 64))
    stack = tissue.copy()
    stack[2:] = (0.8 * tissue[2:] + 20).astype(stack.dtype)  # microscope settings change after section 1
    stack[1] = 0  # a blank section
    write_volume(workspace, "aligned", stack.astype(np.uint8), resolution_nm=(30, 4, 4))
    ranges = section_grey_ranges(Layer(workspace, "aligned"))
    assert ranges.shape == (4, 2)
    for z in (0, 2, 3):
        assert ranges[z] == pytest.approx(grey_range(stack[z, ::4, ::4]))
    assert ranges[0] == pytest.approx([42, 198], abs=3)
    assert ranges[3][1] - ranges[3][0] == pytest.approx(0.8 * (ranges[0][1] - ranges[0][0]), rel=0.05)
    assert ranges[1] == pytest.approx(grey_range(stack[[0, 2, 3], ::4, ::4]))
