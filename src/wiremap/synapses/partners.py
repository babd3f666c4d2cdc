"""Pre- and postsynaptic segments of each candidate, from the side map and the segmentation.

Around each cleft component (grown in-plane by ``reach_nm``) every segment
that it touches collects the network's side probability (1 = presynaptic).
The presynaptic partner is the segment with the most "pre mass" (sum of the
side probability over its voxels there), the postsynaptic one the *other*
segment with the most "post mass" (sum of 1 - side).  Mass, not the mean,
so that a sliver of a third cell at the cleft's rim cannot win.  This is the
voxel-wise form of Synful's direction vectors: no vector is needed when the
segmentation says where each cell is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

PARTNER_COLUMNS = (
    "label",
    "pre",
    "post",
    "partner_confidence",
    "ei_prob",
    "pre_compartment",
    "post_compartment",
    "pre_z",
    "pre_y",
    "pre_x",
    "post_z",
    "post_y",
    "post_x",
    "nz",
    "ny",
    "nx",
)

#: Compartment codes of a ``compartments`` layer (as ``wiremap.synth.model.Compartment``) -> table names.
COMPARTMENT_NAMES = {1: "soma", 2: "axon", 3: "dendrite"}


def grow_labels(labels: np.ndarray, reach_px: int) -> np.ndarray:
    """Labels grown in-plane by ``reach_px`` (a disk); where two grow into each other the larger id wins."""
    if reach_px <= 0:
        return labels
    r = reach_px
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (yy**2 + xx**2 <= r * r)[None]
    return ndimage.grey_dilation(labels, footprint=disk)


def _mode_per_group(keys: np.ndarray, values: np.ndarray) -> dict[int, int]:
    """Most frequent non-zero value per key."""
    ok = values > 0
    if not ok.any():
        return {}
    df = pd.DataFrame({"k": keys[ok], "v": values[ok]})
    counts = df.groupby(["k", "v"]).size().reset_index(name="n")
    best = counts.sort_values(["k", "n", "v"], ascending=[True, False, True]).drop_duplicates("k")
    return dict(zip(best["k"].astype(int), best["v"].astype(int), strict=False))


def assign_partners(
    labels: np.ndarray,
    segmentation: np.ndarray,
    side_prob: np.ndarray,
    ei_prob: np.ndarray,
    resolution_nm: Sequence[float],
    compartments: np.ndarray | None = None,
    reach_nm: float = 40.0,
) -> pd.DataFrame:
    """One row per component label that touches two segments (see module doc).

    ``partner_confidence`` is the mean side probability on the pre segment
    minus that on the post segment (0..1); ``ei_prob`` the mean E probability
    over the grown component.  Compartments (when given) are the most common
    code of each partner's voxels next to the cleft.
    """
    empty = pd.DataFrame({c: pd.Series(dtype="f8") for c in PARTNER_COLUMNS})
    if labels.max() == 0:
        return empty
    grown = grow_labels(labels, int(round(reach_nm / float(resolution_nm[2]))))
    where = np.flatnonzero(grown.ravel())
    lab = grown.ravel()[where].astype(np.int64)
    ei_by_label = pd.Series(ei_prob.ravel()[where]).groupby(lab).mean()
    seg = segmentation.ravel()[where]
    keep = seg != 0
    lab, seg, idx = lab[keep], seg[keep], where[keep]
    if len(lab) == 0:
        return empty
    side = side_prob.ravel()[idx].astype(np.float64)
    zz, yy, xx = np.unravel_index(idx, labels.shape)
    df = pd.DataFrame(
        {"label": lab, "seg": seg, "pre_mass": side, "post_mass": 1.0 - side, "n": 1, "cz": zz, "cy": yy, "cx": xx}
    )
    per = df.groupby(["label", "seg"], sort=True).sum().reset_index()
    per = per[per["n"] >= 3]
    pre = per.sort_values(["label", "pre_mass"], ascending=[True, False]).drop_duplicates("label")
    rest = per.merge(pre[["label", "seg"]].rename(columns={"seg": "pre"}), on="label")
    rest = rest[rest["seg"] != rest["pre"]]
    post = rest.sort_values(["label", "post_mass"], ascending=[True, False]).drop_duplicates("label")
    cols = ["label", "seg", "pre_mass", "n", "cz", "cy", "cx"]
    out = pre[cols].rename(
        columns={"seg": "pre", "pre_mass": "m_pre", "n": "n_pre", "cz": "pre_z", "cy": "pre_y", "cx": "pre_x"}
    )
    out = out.merge(
        post[cols].rename(
            columns={"seg": "post", "pre_mass": "m_post", "n": "n_post", "cz": "post_z", "cy": "post_y", "cx": "post_x"}
        ),
        on="label",
    )
    # line ends: where each partner's voxels next to the cleft are on average (voxels)
    for role in ("pre", "post"):
        for axis in "zyx":
            out[f"{role}_{axis}"] = out[f"{role}_{axis}"] / out[f"n_{role}"]
    vec = (out[["post_z", "post_y", "post_x"]].to_numpy() - out[["pre_z", "pre_y", "pre_x"]].to_numpy()) * np.asarray(
        resolution_nm, dtype=np.float64
    )
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.where(norm > 0, vec / np.where(norm > 0, norm, 1), np.nan)
    out["nz"], out["ny"], out["nx"] = vec[:, 0], vec[:, 1], vec[:, 2]
    out["partner_confidence"] = (out["m_pre"] / out["n_pre"] - out["m_post"] / out["n_post"]).clip(0, 1)
    out["ei_prob"] = ei_by_label.reindex(out["label"]).to_numpy()
    out["pre_compartment"] = ""
    out["post_compartment"] = ""
    if compartments is not None and len(out):
        comp = compartments.ravel()[idx]
        pairs = pd.DataFrame({"label": lab, "seg": seg, "comp": comp})
        for role in ("pre", "post"):
            sel = pairs.merge(out[["label", role]].rename(columns={role: "seg"}), on=["label", "seg"])
            modes = _mode_per_group(sel["label"].to_numpy(), sel["comp"].to_numpy())
            out[f"{role}_compartment"] = [COMPARTMENT_NAMES.get(modes.get(int(k), 0), "") for k in out["label"]]
    out["pre"] = out["pre"].astype(np.uint64)
    out["post"] = out["post"].astype(np.uint64)
    return out[list(PARTNER_COLUMNS)].reset_index(drop=True)
