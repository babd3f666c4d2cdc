"""The training script's augmentation: serial-section misalignment moves image and labels together."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def _script():
    path = Path(__file__).parents[1] / "scripts" / "train_segment.py"
    spec = importlib.util.spec_from_file_location("train_segment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shift_of(before: np.ndarray, after: np.ndarray, max_px: int) -> tuple[int, int] | None:
    for dy in range(-max_px, max_px + 1):
        for dx in range(-max_px, max_px + 1):
            if np.array_equal(np.roll(before, (dy, dx), axis=(0, 1)), after):
                return dy, dx
    return None


def test_misalignment_moves_each_section_with_its_labels_and_leaves_the_source_alone():
    train = _script()
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 1000, (12, 24, 24)).astype(np.uint64)
    image = rng.random((12, 24, 24)).astype(np.float32)
    source = labels.copy(), image.copy()
    out_image, out_labels = train.misalign_sections([image, labels], np.random.default_rng(1), 3)
    shifts = [_shift_of(labels[z], out_labels[z], 3) for z in range(12)]
    assert all(s is not None for s in shifts)  # every section is its input under one shift of <= 3 px
    assert shifts[0] == (0, 0) and len(set(shifts)) > 2  # the first stays; others move differently
    for z, s in enumerate(shifts):
        assert np.array_equal(np.roll(image[z], s, axis=(0, 1)), out_image[z])  # the image moved with it
    assert (labels == source[0]).all() and (image == source[1]).all()
