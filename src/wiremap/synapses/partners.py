"""Pre- and postsynaptic segments of each candidate, from the segmentation, the side map and the density.

Around each cleft component (grown in-plane by ``reach_nm``) the two
segments with the most voxels are the partners: the cleft lies between
them.  Which one is presynaptic is decided by two cues, summed as log-odds:
the network's side probability (1 = presynaptic; the per-voxel form of
Synful's direction vectors, no vector is needed when the segmentation says
where each cell is), the synaptic density (an asymmetric synapse's thick
postsynaptic density makes the postsynaptic side darker next to the cleft)
and, when a compartment layer is given, polarity (the axon is presynaptic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from wiremap.synapses.ei import logit

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
    "dark_pre",
    "dark_post",
)

DARK_LEVEL = -0.3  # normalised grey level below which a voxel counts as dense (dark)
DENSITY_WEIGHT = 10.0  # direction logits per unit of dark-fraction difference (thick density = post)
AXON_WEIGHT = 6.0  # direction logits per unit of axon-fraction difference (the axon is presynaptic)
AXON_CODE = 2

#: Compartment codes of a ``compartments`` layer (as ``wiremap.synth.model.Compartment``) -> table names.
COMPARTMENT_NAMES = {1: "soma", 2: "axon", 3: "dendrite"}


def grown_voxels(labels: np.ndarray, reach_px: int) -> tuple[np.ndarray, np.ndarray]:
    """``(label, flat index)`` of every voxel within ``reach_px`` (in-plane disk) of each component.

    Works per component inside its padded bounding box (``find_objects``),
    so the cost follows the synapses, not the block; a voxel near two
    components counts for both.
    """
    r = max(int(reach_px), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (yy**2 + xx**2 <= r * r)[None]
    out_lab, out_idx = [], []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        box = (
            sl[0],
            slice(max(sl[1].start - r, 0), min(sl[1].stop + r, labels.shape[1])),
            slice(max(sl[2].start - r, 0), min(sl[2].stop + r, labels.shape[2])),
        )
        mine = labels[box] == k
        if r:
            mine = ndimage.binary_dilation(mine, structure=disk)
        zz, yy_, xx_ = np.nonzero(mine)
        flat = np.ravel_multi_index((zz + box[0].start, yy_ + box[1].start, xx_ + box[2].start), labels.shape)
        out_lab.append(np.full(len(flat), k, np.int64))
        out_idx.append(flat)
    if not out_lab:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_lab), np.concatenate(out_idx)


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
    image: np.ndarray | None = None,
    dark_level: float = DARK_LEVEL,
    density_weight: float = DENSITY_WEIGHT,
    axon_weight: float = AXON_WEIGHT,
) -> pd.DataFrame:
    """One row per component label that touches two segments (see module doc).

    ``image`` is the normalised image (``model.normalize``); with it, each
    partner's ``dark`` fraction next to the cleft (voxels below
    ``dark_level``: membrane plus synaptic density) is measured over its
    voxels outside every cleft component (a segmentation that leaves no
    extracellular space gives the cleft's own dark voxels to both partners,
    which would hide the asymmetry of the densities), and the
    difference adds ``density_weight`` logits per unit to the direction
    (the thicker density is postsynaptic).  ``partner_confidence`` is the
    probability of the chosen direction; ``ei_prob`` the mean E probability
    over the grown component.  Compartments (when given) are the most common
    code of each partner's voxels next to the cleft.
    """
    empty = pd.DataFrame({c: pd.Series(dtype="f8") for c in PARTNER_COLUMNS})
    if labels.max() == 0:
        return empty
    lab, where = grown_voxels(labels, int(round(reach_nm / float(resolution_nm[2]))))
    ei_by_label = pd.Series(ei_prob.ravel()[where]).groupby(lab).mean()
    seg = segmentation.ravel()[where]
    keep = seg != 0
    lab, seg, idx = lab[keep], seg[keep], where[keep]
    if len(lab) == 0:
        return empty
    zz, yy, xx = np.unravel_index(idx, labels.shape)
    outside = labels.ravel()[idx] == 0
    dark = (image.ravel()[idx] < dark_level) & outside if image is not None else np.zeros(len(idx), bool)
    df = pd.DataFrame(
        {
            "label": lab,
            "seg": seg,
            "side": side_prob.ravel()[idx].astype(np.float64),
            "dark": dark.astype(np.float64),
            "outside": outside.astype(np.float64),
            "axon": (compartments.ravel()[idx] == AXON_CODE).astype(np.float64) if compartments is not None else 0.0,
            "n": 1,
            "cz": zz,
            "cy": yy,
            "cx": xx,
        }
    )
    per = df.groupby(["label", "seg"], sort=True).sum().reset_index()
    per = per[per["n"] >= 3]
    # the two cells the cleft lies between: the two with the most voxels next to it
    top = per.sort_values(["label", "n", "seg"], ascending=[True, False, True]).groupby("label").head(2)
    first = top.drop_duplicates("label", keep="first")
    second = top[~top.index.isin(first.index)]
    pair = first.merge(second, on="label", suffixes=("_a", "_b"))
    side_a = pair["side_a"] / pair["n_a"]
    side_b = pair["side_b"] / pair["n_b"]
    dark_a = pair["dark_a"] / np.maximum(pair["outside_a"], 1)
    dark_b = pair["dark_b"] / np.maximum(pair["outside_b"], 1)
    axon_a = pair["axon_a"] / pair["n_a"]
    axon_b = pair["axon_b"] / pair["n_b"]
    score = logit(side_a) - logit(side_b) + density_weight * (dark_b - dark_a)  # > 0: a is presynaptic
    score = score + axon_weight * (axon_a - axon_b)
    a_pre = (score >= 0).to_numpy()
    out = pd.DataFrame({"label": pair["label"].to_numpy()})
    for role, mine in (("pre", a_pre), ("post", ~a_pre)):
        for col in ("seg", "n", "cz", "cy", "cx", "dark", "outside"):
            out[f"{role}_{col}"] = np.where(mine, pair[f"{col}_a"], pair[f"{col}_b"])
    out["pre"] = out.pop("pre_seg")
    out["post"] = out.pop("post_seg")
    for role in ("pre", "post"):
        n = out.pop(f"{role}_n")
        for axis in "zyx":
            out[f"{role}_{axis}"] = out.pop(f"{role}_c{axis}") / n
        out[f"dark_{role}"] = out.pop(f"{role}_dark") / np.maximum(out.pop(f"{role}_outside"), 1)
    # line ends: where each partner's voxels next to the cleft are on average (voxels)
    vec = (out[["post_z", "post_y", "post_x"]].to_numpy() - out[["pre_z", "pre_y", "pre_x"]].to_numpy()) * np.asarray(
        resolution_nm, dtype=np.float64
    )
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.where(norm > 0, vec / np.where(norm > 0, norm, 1), np.nan)
    out["nz"], out["ny"], out["nx"] = vec[:, 0], vec[:, 1], vec[:, 2]
    out["partner_confidence"] = 1.0 / (1.0 + np.exp(-np.abs(score.to_numpy())))
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
