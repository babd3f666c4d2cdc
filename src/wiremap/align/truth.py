"""Synthetic ground truth carried into the aligned frame, so stages run on ``aligned`` can be scored.

The aligned stack lives in its reference section's frame, the synthetic truth
in the tissue's own frame.  For an aligned pixel ``p`` of section ``z`` the
solved field gives the montage pixel ``q = p + d_z(p)``, and the simulator the
tissue point ``V_z(p) = S_z(q + o_z)`` (``o_z``: the montage frame's offset,
:func:`montage_offsets`).  The same map scores the alignment
(:mod:`wiremap.align.score`).  So:

- label layers are pulled: ``truth_aligned[z, p] = truth[z, round(V_z(p))]``,
  0 (not scored) where the section has no field (blank), where ``q`` falls in
  a fold / crack / debris mask, or where ``V_z(p)`` leaves the volume;
- points (synapses in voxels, skeleton nodes in nm) are pushed: ``p`` with
  ``V_z(p) = v``, found by the fixed-point iteration ``p += v - V_z(p)``
  (``V_z`` is close to a rigid map, so it converges in a few steps), through
  the nearest section that has a field.

Alignment errors then show up in every downstream score, as they would on
real data.  Written under ``groundtruth/aligned/`` (layers and tables of the
same names as their tissue-frame originals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wiremap.align.field import Field
from wiremap.align.stage import load_fields
from wiremap.errors import InputError
from wiremap.synth.acquisition import load_groundtruth, section_to_volume
from wiremap.volume import Layer, create_layer
from wiremap.workspace import Workspace

PREFIX = "groundtruth/aligned/"
LABEL_LAYERS = ("neurons", "compartments", "myelin", "mitochondria", "synapse_clefts")
ROWS_PER_PASS = 256  # aligned rows mapped at once: bounds memory on wide sections


def montage_offsets(tiles: pd.DataFrame) -> dict[int, np.ndarray]:
    """Per section, true minus nominal tile position, averaged over the scan the stitcher used (the last).

    The stitcher anchors tiles at their nominal stage positions, so its montage sits at minus this
    offset from the true section frame.
    """
    last = tiles.groupby("section")["scan"].transform("max")
    used = tiles[tiles["scan"] == last]
    delta = used.assign(dy=used["y_true"] - used["y"], dx=used["x_true"] - used["x"])
    means = delta.groupby("section")[["dy", "dx"]].mean()
    return {int(s): row.to_numpy(np.float64) for s, row in means.iterrows()}


class AlignedFrame:
    """The exact map from aligned pixels to tissue points, per section, for a synthetic workspace."""

    def __init__(self, ws: Workspace) -> None:
        if not ws.exists("groundtruth/acquisition/tiles.parquet"):
            raise InputError(f"{ws.url} has no acquisition ground truth (only synthetic tiles have one)")
        self.fields: dict[int, Field] = load_fields(ws)
        if not self.fields:
            raise InputError(f"{ws.url} has no alignment fields: run `wiremap align` first")
        self.gt = load_groundtruth(ws)
        self.offsets = montage_offsets(self.gt.tiles)

    def tissue_points(self, z: int, yx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tissue ``(y, x)`` shown at aligned points ``yx`` (N, 2) of section ``z``, and the montage
        points they were read from (N, 2)."""
        q = yx + self.fields[z].at(yx[:, 0], yx[:, 1]).T
        return section_to_volume(self.gt, z, q + self.offsets[z]), q

    def in_defect(self, z: int, montage_yx: np.ndarray) -> np.ndarray:
        """True where montage points fall in a defect mask (or off the canvas)."""
        h, w = self.gt.section_shape
        qi = np.rint(montage_yx).astype(np.int64)
        inside = (qi[:, 0] >= 0) & (qi[:, 0] < h) & (qi[:, 1] >= 0) & (qi[:, 1] < w)
        out = ~inside
        out[inside] = self.gt.masks[z][qi[inside, 0], qi[inside, 1]] > 0
        return out

    def aligned_points(self, z: int, tissue_yx: np.ndarray, iterations: int = 30) -> np.ndarray:
        """Aligned points showing tissue points ``tissue_yx`` (N, 2) of section ``z`` (which has a field)."""
        p = np.array(tissue_yx, np.float64)
        for _ in range(iterations):
            v, _ = self.tissue_points(z, p)
            p += tissue_yx - v
        return p


def pull_section(frame: AlignedFrame, truth: np.ndarray, z: int) -> np.ndarray:
    """Section ``z`` of ``truth`` (z, y, x) as the aligned stack shows it (0 where nothing is shown)."""
    _, h, w = truth.shape
    section = np.zeros((h, w), truth.dtype)
    if z not in frame.fields:
        return section
    for y0 in range(0, h, ROWS_PER_PASS):
        ys, xs = np.mgrid[y0 : min(y0 + ROWS_PER_PASS, h), 0:w]
        yx = np.stack([ys.ravel(), xs.ravel()], 1).astype(np.float64)
        v, q = frame.tissue_points(z, yx)
        vi = np.rint(v).astype(np.int64)
        ok = (vi[:, 0] >= 0) & (vi[:, 0] < h) & (vi[:, 1] >= 0) & (vi[:, 1] < w) & ~frame.in_defect(z, q)
        values = np.zeros(len(yx), truth.dtype)
        values[ok] = truth[z, vi[ok, 0], vi[ok, 1]]
        section[y0 : y0 + ys.shape[0]] = values.reshape(ys.shape)
    return section


def _push_points(frame: AlignedFrame, z: np.ndarray, yx: np.ndarray, n_z: int) -> np.ndarray:
    """Aligned ``(y, x)`` of tissue points at (fractional) sections ``z``, through each point's nearest
    section that has a field (a blank section shows nothing, its neighbours show the same tissue)."""
    with_field = np.array(sorted(frame.fields))
    section = np.clip(np.rint(z).astype(np.int64), 0, n_z - 1)
    section = with_field[np.abs(section[:, None] - with_field[None, :]).argmin(1)]
    out = np.empty_like(yx, dtype=np.float64)
    for s in np.unique(section):
        rows = section == s
        out[rows] = frame.aligned_points(int(s), yx[rows])
    return out


def carry_truth(ws: Workspace) -> list[str]:
    """Write ``groundtruth/aligned/*`` (label layers, synapse and skeleton tables); returns what was written."""
    frame = AlignedFrame(ws)
    aligned = Layer(ws, "aligned")
    written = []
    for name in LABEL_LAYERS:
        source = f"groundtruth/{name}"
        if not ws.has_layer(source):
            continue
        truth_layer = Layer(ws, source)
        if truth_layer.info.shape_zyx != aligned.info.shape_zyx:
            raise InputError(f"{source} has shape {truth_layer.info.shape_zyx}, aligned {aligned.info.shape_zyx}")
        out = create_layer(
            ws,
            PREFIX + name,
            shape_zyx=truth_layer.info.shape_zyx,
            resolution_nm=truth_layer.info.resolution_nm,
            dtype=truth_layer.info.dtype,
            kind="segmentation",
            overwrite=True,
        )
        truth = truth_layer.read()
        for z in range(truth.shape[0]):
            out.write(pull_section(frame, truth, z)[None], (z, 0, 0))
        written.append(PREFIX + name)
    n_z = aligned.info.shape_zyx[0]
    res = np.asarray(aligned.info.resolution_nm)
    if ws.exists("groundtruth/synapses.parquet"):
        syn = ws.read_table("groundtruth/synapses.parquet")
        yx = _push_points(frame, syn["z"].to_numpy(), syn[["y", "x"]].to_numpy(np.float64), n_z)
        ws.write_table(PREFIX + "synapses.parquet", syn.assign(y=yx[:, 0], x=yx[:, 1]))
        written.append(PREFIX + "synapses.parquet")
    if ws.exists("groundtruth/skeletons.parquet"):
        nodes = ws.read_table("groundtruth/skeletons.parquet")
        inside = nodes["in_volume"].to_numpy(bool)  # nodes outside the volume keep their place
        vox = nodes.loc[inside, ["y_nm", "x_nm"]].to_numpy(np.float64) / res[1:]
        yx = _push_points(frame, nodes.loc[inside, "z_nm"].to_numpy() / res[0], vox, n_z)
        nodes.loc[inside, "y_nm"], nodes.loc[inside, "x_nm"] = yx[:, 0] * res[1], yx[:, 1] * res[2]
        ws.write_table(PREFIX + "skeletons.parquet", nodes)
        written.append(PREFIX + "skeletons.parquet")
    ws.write_provenance("align-truth", parameters={}, inputs=["groundtruth", "align/fields"], outputs=written)
    return written
