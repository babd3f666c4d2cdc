"""Section defects of serial-section EM: folds, cracks and debris, as exact formulas.

A defect table (one row per defect, columns documented in
``wiremap.synth.acquisition``) is the ground truth; the functions here evaluate it
at any section-frame point, so rendering and scoring use the very same formulas.
Folds and cracks are straight lines across the section (point ``(y, x)``, unit normal
``(ny, nx)``); with ``d`` the signed distance to the line they displace the tissue by
``sign(d) * jump / 2 * exp(-|d| / decay)`` along the normal and cover ``|d| < width/2``.
Debris are ellipses lying on top of the section; they hide tissue, move nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TISSUE, FOLD, CRACK, DEBRIS, BLANK = 0, 1, 2, 3, 4
KIND_CODE = {"fold": FOLD, "crack": CRACK, "debris": DEBRIS}
COLUMNS = [
    "section",
    "kind",
    "y",
    "x",
    "ny",
    "nx",
    "width",
    "jump",
    "decay",
    "ry",
    "rx",
    "angle_deg",
]


def empty_table() -> pd.DataFrame:
    """A defect table with no rows and the right column dtypes."""
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    df["section"] = df["section"].astype("int64")
    df["kind"] = df["kind"].astype(object)
    return df


def _line(
    rng: np.random.Generator,
    section: int,
    kind: str,
    shape: tuple[int, int],
    width: float,
    decay: float,
) -> dict:
    H, W = shape
    y = rng.uniform(0.2, 0.8) * (H - 1)
    x = rng.uniform(0.2, 0.8) * (W - 1)
    a = rng.uniform(0, math.pi)
    # a fold doubles the tissue over (2 layers hidden under the band); the two edges of a
    # crack map to the same line of tissue
    jump = 2.0 * width if kind == "fold" else -width * math.exp(width / (2 * decay))
    return dict(
        section=section,
        kind=kind,
        y=y,
        x=x,
        ny=math.sin(a),
        nx=math.cos(a),
        width=width,
        jump=jump,
        decay=decay,
        ry=0.0,
        rx=0.0,
        angle_deg=0.0,
    )


def sample_section_defects(
    rng: np.random.Generator,
    section: int,
    shape: tuple[int, int],
    kinds: set[str],
    fold_width: tuple[float, float],
    crack_width: tuple[float, float],
    decay: float,
    debris_count: tuple[int, int],
    debris_radius: tuple[float, float],
) -> list[dict]:
    """Random defects of the given ``kinds`` for one section (rows of a defect table)."""
    rows: list[dict] = []
    if "fold" in kinds:
        rows.append(_line(rng, section, "fold", shape, rng.uniform(*fold_width), decay))
    if "crack" in kinds:
        rows.append(_line(rng, section, "crack", shape, rng.uniform(*crack_width), decay))
    if "debris" in kinds:
        H, W = shape
        for _ in range(int(rng.integers(debris_count[0], debris_count[1] + 1))):
            r = rng.uniform(*debris_radius)
            rows.append(
                dict(
                    section=section,
                    kind="debris",
                    y=rng.uniform(0, H - 1),
                    x=rng.uniform(0, W - 1),
                    ny=0.0,
                    nx=0.0,
                    width=0.0,
                    jump=0.0,
                    decay=0.0,
                    ry=r * rng.uniform(0.6, 1.0),
                    rx=r * rng.uniform(0.6, 1.0),
                    angle_deg=rng.uniform(0, 180),
                )
            )
    return rows


def _lines(defects: pd.DataFrame) -> pd.DataFrame:
    return defects[defects["kind"].isin(["fold", "crack"])]


def displacement(defects: pd.DataFrame, p: np.ndarray) -> np.ndarray:
    """Sum of fold/crack displacements ``D_k(p)`` (volume px) at section points ``p`` (..., 2)."""
    out = np.zeros(np.shape(p), float)
    for r in _lines(defects).itertuples():
        n = np.array([r.ny, r.nx])
        d = (p[..., 0] - r.y) * r.ny + (p[..., 1] - r.x) * r.nx
        mag = np.where(d >= 0, 0.5, -0.5) * r.jump * np.exp(-np.abs(d) / r.decay)
        out += mag[..., None] * n
    return out


def codes(defects: pd.DataFrame, p: np.ndarray) -> np.ndarray:
    """Defect code (TISSUE/FOLD/CRACK/DEBRIS) at section points ``p`` (..., 2); debris wins."""
    out = np.zeros(np.shape(p)[:-1], np.uint8)
    for r in _lines(defects).itertuples():
        d = (p[..., 0] - r.y) * r.ny + (p[..., 1] - r.x) * r.nx
        out[np.abs(d) < r.width / 2] = KIND_CODE[r.kind]
    for r in defects[defects["kind"] == "debris"].itertuples():
        t = math.radians(r.angle_deg)
        dy, dx = p[..., 0] - r.y, p[..., 1] - r.x
        u = (dy * math.cos(t) + dx * math.sin(t)) / r.ry
        v = (-dy * math.sin(t) + dx * math.cos(t)) / r.rx
        out[u * u + v * v <= 1.0] = DEBRIS
    return out
