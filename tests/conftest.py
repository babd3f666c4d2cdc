"""Shared fixtures: tiny workspaces and deterministic inputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).parent

# Worker processes (process pool, Dask) import test block functions from here.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def workspace(tmp_path: Path):
    from wiremap.workspace import Workspace

    return Workspace.create(str(tmp_path / "ws"))
