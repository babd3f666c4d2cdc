"""Quality control an operator looks at: residual tables, a residual plot, overlays, flags.

* ``alignment_table(results)``: one row per section (``stack.SectionAlignment``):
  status, what it was matched to, match count/fraction, residual (mean and p95
  of relaxed-vs-measured flow at the last round, px: between *different*
  sections ~0.5-1 px is normal, it is the content's own change), fold share,
  smallest mesh Jacobian, the neighbours whose candidates were combined and
  how far they disagreed, whether the field is a fallback affine, flags, and
  ``attention`` (True when an operator should look: blank, failed, fallback,
  disagreeing neighbours, few matches, a folded mesh, a large residual).
* ``montage_table(reports)``: the same for stitching (``montage.MontageReport``).
* ``plot_residuals(table, path)``: PNG of residual vs section index, blank and
  flagged sections marked.
* ``overlay(a, b)``: magenta/green overlay (grey where the two agree), for
  before/after images; ``write_png`` saves any uint8 image.

Pure functions over results and arrays; the stage wrapper decides where files go.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def alignment_table(results: Sequence[Any], max_residual_px: float | None = None,
                    min_match_fraction: float = 0.1) -> pd.DataFrame:
    """Per-section QC figures of ``stack.align_stack`` results (see module docstring).

    ``max_residual_px`` (p95 of the match residual) defaults to twice the stack's
    median p95, at least 0.5 px: between different sections a few px is the
    content's own change, so only sections far worse than their stack are flagged.
    """
    p95 = [r.residual_p95_px for r in results if np.isfinite(r.residual_p95_px)]
    if max_residual_px is None:
        max_residual_px = max(0.5, 2.0 * float(np.median(p95))) if p95 else 0.5
    rows = []
    for r in results:
        attention = (r.status in ("blank", "failed") or bool(r.flags and any(
            f.startswith(("few matches", "alignment failed", "fallback", "neighbours disagree"))
            for f in r.flags))
            or (np.isfinite(r.residual_p95_px) and r.residual_p95_px > max_residual_px)
            or (r.status == "aligned" and r.match_fraction < min_match_fraction)
            or (np.isfinite(r.min_jacobian) and r.min_jacobian <= 0))
        rows.append({"z": r.z, "status": r.status,
                     "matched_to": -1 if r.matched_to is None else int(r.matched_to),
                     "n_matches": int(r.n_matches), "match_fraction": float(r.match_fraction),
                     "residual_px": float(r.residual_px),
                     "residual_p95_px": float(r.residual_p95_px),
                     "fold_fraction": float(r.fold_fraction),
                     "min_jacobian": float(r.min_jacobian),
                     "neighbours": ",".join(map(str, getattr(r, "neighbours", []))),
                     "disagreement_px": float(getattr(r, "disagreement_px", float("nan"))),
                     "fallback": bool(getattr(r, "fallback", False)),
                     "flags": "; ".join(r.flags), "attention": bool(attention)})
    return pd.DataFrame(rows, columns=["z", "status", "matched_to", "n_matches",
                                       "match_fraction", "residual_px", "residual_p95_px",
                                       "fold_fraction", "min_jacobian", "neighbours",
                                       "disagreement_px", "fallback", "flags", "attention"])


def montage_table(reports: Sequence[Any], sections: Sequence[int] | None = None,
                  max_residual_px: float = 1.0) -> pd.DataFrame:
    """Per-section QC figures of ``montage.montage`` reports."""
    rows = []
    for i, r in enumerate(reports):
        rows.append({"section": i if sections is None else int(sections[i]),
                     "n_tiles": r.n_tiles, "n_pairs": r.n_pairs, "n_matches": r.n_matches,
                     "unplaced": ",".join(map(str, r.unplaced)),
                     "blank_tiles": ",".join(map(str, r.blank)),
                     "residual_px": r.residual_mean_px, "residual_p95_px": r.residual_p95_px,
                     "attention": bool(r.unplaced) or not (r.residual_p95_px <= max_residual_px)})
    return pd.DataFrame(rows)


def plot_residuals(table: pd.DataFrame, path: str | Path, title: str = "alignment residual",
                   bound_px: float | None = 0.5) -> Path:
    """PNG of the per-section residual (mean and p95) with blank/flagged sections marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    t = table.sort_values("z")
    ax.plot(t["z"], t["residual_px"], "o-", ms=3, label="mean")
    ax.plot(t["z"], t["residual_p95_px"], "s--", ms=3, alpha=0.7, label="p95")
    for z in t.loc[t["status"] == "blank", "z"]:
        ax.axvspan(z - 0.5, z + 0.5, color="0.85", lw=0)
    att = t[t["attention"] & (t["status"] != "blank")]
    if len(att):
        ax.plot(att["z"], np.nan_to_num(att["residual_p95_px"]), "rx", ms=8,
                label="needs attention")
    fold = t[t["fold_fraction"] > 0]
    if len(fold):
        ax.plot(fold["z"], fold["residual_px"], "k^", ms=6, mfc="none", label="fold/crack")
    if bound_px is not None:
        ax.axhline(bound_px, color="r", lw=0.8, alpha=0.5)
    ax.set_xlabel("section z")
    ax.set_ylabel("residual (px)")
    ax.set_title(title + " (grey: blank sections)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RGB uint8: ``a`` in magenta, ``b`` in green; aligned structure looks grey."""
    ua, ub = _unit(a), _unit(b)
    rgb = np.stack([ua, ub, ua], axis=-1)
    return (255 * rgb).astype(np.uint8)


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """Save a uint8 greyscale or RGB image as PNG."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    return path
