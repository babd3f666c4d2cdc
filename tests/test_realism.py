"""Realism statistics on tiny hand-made images with known answers."""

import numpy as np
import pytest

from wiremap.errors import InputError
from wiremap.realism import (
    boundary_mask,
    cross_section_areas,
    dark_ridge_mask,
    histogram_distance,
    intensity_histogram,
    membrane_fraction,
    radial_power_spectrum,
    regions_from_membrane,
    spectral_slope,
)


def checkerboard(n: int = 64, s: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    return ((yy // s) * (n // s) + (xx // s) + 1).astype(np.uint64)


def test_checkerboard_membrane_fraction():
    lab = checkerboard(64, 8)
    # columns 7,8,15,16,...,55,56 (14 of 64) touch a vertical edge; same for rows
    expected = 1 - (50 / 64) ** 2
    assert membrane_fraction(boundary_mask(lab, 2)) == pytest.approx(expected)
    # width 4: 28 of 64 columns (6..9, 14..17, ..., 54..57)
    assert membrane_fraction(boundary_mask(lab, 4)) == pytest.approx(1 - (36 / 64) ** 2)
    # a stack behaves per section
    assert boundary_mask(np.stack([lab, lab]), 2).shape == (2, 64, 64)


def test_membrane_fraction_rejects_empty():
    with pytest.raises(InputError):
        membrane_fraction(np.zeros((0,), bool))


def test_histogram_and_distance():
    a = np.full((10, 10), 100, np.uint8)
    b = np.full((10, 10), 130, np.uint8)
    ha, hb = intensity_histogram(a), intensity_histogram(b)
    assert ha.sum() == pytest.approx(1.0) and ha[100] == pytest.approx(1.0)
    assert histogram_distance(ha, hb) == pytest.approx(30.0)
    assert histogram_distance(ha, ha) == 0.0
    assert intensity_histogram(a, bins=64)[25] == pytest.approx(1.0)
    with pytest.raises(InputError):
        intensity_histogram(a.astype(np.float32))


def test_sinusoid_spectrum_peak():
    px = 4.0
    yy, xx = np.mgrid[0:128, 0:128]
    img = 100 + 50 * np.sin(2 * np.pi * xx / 16.0)  # period 16 px = 64 nm
    f, p = radial_power_spectrum(img, px, n_bins=64)
    assert p.sum() == pytest.approx(1.0)
    assert f[np.argmax(p)] == pytest.approx(1 / 64.0, abs=0.5 * (f[1] - f[0]))
    assert f[-1] < 0.5 / px


def test_spectral_slope_of_power_law():
    f = np.linspace(0.001, 0.1, 50)
    assert spectral_slope(f, 3.0 * f**-2.5, (0.005, 0.05)) == pytest.approx(-2.5)
    with pytest.raises(InputError):
        spectral_slope(f, f, (1.0, 2.0))


def test_cross_section_areas_counts_pieces():
    lab = np.zeros((2, 20, 20), np.uint64)
    lab[0, 0:5, 0:4] = 1  # 20 px
    lab[0, 10:13, 10:13] = 1  # same label, second piece: 9 px
    lab[1, 2:12, 2:12] = 7  # 100 px
    a = np.sort(cross_section_areas(lab, (4.0, 5.0)))
    np.testing.assert_allclose(a, [9 * 20, 20 * 20, 100 * 20])
    assert len(cross_section_areas(lab, 4.0, min_area_nm2=200)) == 2


def test_regions_from_membrane_and_dark_ridges():
    # bright image with dark 3-px lines every 32 px: ridges found where the lines are
    img = np.full((96, 96), 200, np.uint8)
    mem = np.zeros((96, 96), bool)
    for c in (15, 47, 79):
        mem[:, c - 1 : c + 2] = True
        mem[c - 1 : c + 2, :] = True
    img[mem] = 60
    regions = regions_from_membrane(mem)
    assert regions.max() == 16  # 4 x 4 tiles between the lines (borders included)
    found = dark_ridge_mask(img, pixel_nm=4.0, membrane_nm=12.0)
    assert (found & mem).sum() / mem.sum() > 0.9  # recall
    assert (found & ~mem).sum() / max(found.sum(), 1) < 0.5  # at most a blurred margin
    assert membrane_fraction(found) == pytest.approx(membrane_fraction(mem), rel=0.8)
