"""Workspace stages around the pure align functions: ``stitch`` and ``align``.

``stitch_stage(ws)``: tiles (``tiles/manifest.parquet`` + PNGs) -> layer ``montage``.
Each section's tile model is solved (``montage.montage``: one section's tiles
in memory) and stored under ``stitch/models/<z>.npz``; the canvas is then rendered
*blockwise through the engine*, each block reading only the tiles that touch it
(``montage.render_montage_roi``), so the canvas size is bounded by storage, not
memory.  QC table ``montage_qc``; sections whose tiles cannot all be placed are
listed there.

``align_stage(ws, input, output)``: any (z, y, x) uint8 image layer -> an aligned
layer of the same shape.  Fields are solved section by section
(``stack.align_stack``), stored under ``align/fields/<z>.npz``, then the output is
rendered *blockwise through the engine* (each block reads only the source
window its pull coordinates touch).  QC: table ``align_qc``, plot
``qc/align_residuals.png``, before/after overlays ``qc/align_overlay_<z>.png``.

Both write provenance last, so an interrupted run is visibly unfinished.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from wiremap.align import qc
from wiremap.align.field import Field
from wiremap.align.montage import (
    MontageConfig,
    MontageModel,
    estimate_vignetting,
    montage,
    render_montage_roi,
)
from wiremap.align.stack import AlignConfig, align_stack
from wiremap.align.warp import render_roi
from wiremap.blockwise import BlockGrid, BlockTask, reset_markers, run_blockwise, worker_workspace
from wiremap.errors import InputError, WiremapError
from wiremap.roi import Roi
from wiremap.volume import Layer, create_layer
from wiremap.workspace import Workspace

FIELDS_PREFIX = "align/fields/"
MODELS_PREFIX = "stitch/models/"


class _LayerSections:
    """Sections of a layer, read one z slice at a time (what ``align_stack`` iterates)."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.shape = layer.info.shape_zyx

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, z: int) -> np.ndarray:
        return self.layer.read(Roi((z, 0, 0), (1, self.shape[1], self.shape[2])))[0]


class _LayerSlice:
    """One z slice of a layer as a sliceable 2-D source (reads only the asked window)."""

    def __init__(self, layer: Layer, z: int) -> None:
        self.layer, self.z = layer, z
        self.shape = tuple(layer.info.shape_zyx[1:])

    def __getitem__(self, sl: tuple[slice, slice]) -> np.ndarray:
        ys, xs = sl
        roi = Roi((self.z, ys.start, xs.start), (1, ys.stop - ys.start, xs.stop - xs.start))
        return self.layer.read(roi)[0]


def field_bytes(f: Field) -> bytes:
    """A field as the stage stores it under ``align/fields/<z>.npz`` (data, stride, origin)."""
    buf = io.BytesIO()
    np.savez(buf, data=f.data, stride=f.stride, origin=np.asarray(f.origin))
    return buf.getvalue()


def _field_from_bytes(b: bytes) -> Field:
    d = np.load(io.BytesIO(b))
    return Field(d["data"], float(d["stride"]), (float(d["origin"][0]), float(d["origin"][1])))


def load_fields(ws: Workspace) -> dict[int, Field]:
    """The solved section fields (aligned pixel -> input-layer pixel), by section; blank sections have none."""
    return {
        int(key[len(FIELDS_PREFIX) : -len(".npz")]): _field_from_bytes(ws.read_bytes(key))
        for key in ws.list(FIELDS_PREFIX)
        if key.endswith(".npz")
    }


@dataclass(frozen=True)
class RenderBlock:
    """Picklable block function: render the aligned sections of one block."""

    url: str
    source: str
    output: str

    def __call__(self, block: Any) -> None:
        ws = Workspace.open(self.url)
        src, out = Layer(ws, self.source), Layer(ws, self.output)
        (z0, y0, x0), shape = block.write_roi.offset, block.write_roi.shape
        res = np.zeros(shape, np.uint8)
        for k in range(shape[0]):
            key = f"{FIELDS_PREFIX}{z0 + k}.npz"
            if not ws.exists(key):  # blank or failed section: left empty (reported in QC)
                continue
            f = _field_from_bytes(ws.read_bytes(key))
            r = render_roi(_LayerSlice(src, z0 + k), f, (y0, x0), shape[1:], order=1)
            res[k] = np.clip(np.rint(r), 0, 255).astype(np.uint8)
        out.write(res, (z0, y0, x0))


def align_stage(ws: Workspace, input_layer: str = "montage", output_layer: str = "aligned", *,
                cfg: AlignConfig | None = None, block_yx: int = 1024, executor: str = "processes",
                workers: int = 2, scheduler: str | None = None, overwrite: bool = False,
                n_overlays: int = 3) -> dict:
    """Align ``input_layer`` into ``output_layer`` (see module docstring); returns a summary."""
    cfg = cfg or AlignConfig()
    src = Layer(ws, input_layer)
    info = src.info
    if info.dtype != "uint8":
        raise InputError(f"align needs a uint8 image layer, {input_layer!r} holds {info.dtype}")
    sections = _LayerSections(src)
    results = align_stack(sections, cfg)
    ws.delete_prefix(FIELDS_PREFIX)
    for r in results:
        if r.field is not None:
            ws.write_bytes(f"{FIELDS_PREFIX}{r.z}.npz", field_bytes(r.field))
    table = qc.alignment_table(results)
    ws.write_table("align_qc", table)
    png = qc.plot_residuals(table, _tmp_png())
    ws.write_bytes("qc/align_residuals.png", png.read_bytes())
    out = create_layer(ws, output_layer, shape_zyx=info.shape_zyx,
                       resolution_nm=info.resolution_nm, dtype="uint8",
                       chunk_zyx=(1, min(block_yx, info.shape_zyx[1]),
                                  min(block_yx, info.shape_zyx[2])), overwrite=overwrite)
    grid = BlockGrid(Roi.from_shape(info.shape_zyx), (1, block_yx, block_yx))
    stage = f"align-render-{output_layer}"
    reset_markers(ws, stage)
    report = run_blockwise(BlockTask(stage, ws.url, grid, RenderBlock(ws.url, input_layer,
                                                                      output_layer)),
                           executor=executor, workers=workers, scheduler=scheduler, progress=False)
    if report.failed:
        raise WiremapError(f"{len(report.failed)} render blocks failed: "
                           f"{next(iter(report.failed.values()))}")
    aligned = [r for r in results if r.status == "aligned"]
    for r in aligned[:n_overlays]:
        prev = r.matched_to if r.matched_to is not None else r.z
        before = qc.overlay(sections[prev], sections[r.z])
        plane = (1, int(info.shape_zyx[1]), int(info.shape_zyx[2]))
        after_prev = out.read(Roi((prev, 0, 0), plane))[0]
        after = qc.overlay(after_prev, out.read(Roi((r.z, 0, 0), plane))[0])
        ws.write_bytes(f"qc/align_overlay_{r.z}.png",
                       qc.write_png(np.concatenate([before, after], axis=1), _tmp_png()).read_bytes())
    summary = {"sections": len(results), "blank": [r.z for r in results if r.status == "blank"],
               "failed": [r.z for r in results if r.status == "failed"],
               "attention": [int(z) for z in table.loc[table["attention"], "z"]],
               "residual_mean_px": float(np.nanmean(table["residual_px"]))
               if table["residual_px"].notna().any() else float("nan")}
    ws.write_provenance("align", parameters={"config": json.loads(cfg.model_dump_json()),
                                             "summary": summary},
                        inputs=[input_layer], outputs=[output_layer])
    return summary


def _tmp_png():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkstemp(suffix=".png")[1])


def _model_bytes(model: MontageModel, keys: list[str]) -> bytes:
    """A solved section montage (what rendering needs) and its tiles' keys, as npz."""
    arrays: dict[str, Any] = {
        "nominal": np.asarray(model.nominal, np.float64),
        "tile_shapes": np.asarray(model.tile_shapes, np.int64).reshape(-1, 2),
        "gain": np.asarray(model.gain, np.float64), "offset": np.asarray(model.offset, np.float64),
        "vignetting": np.float64(model.vignetting), "keys": np.asarray(keys, dtype=str)}
    for t, m in enumerate(model.meshes):
        if m is not None:
            arrays[f"mesh{t}"] = m.data
            arrays[f"mesh{t}_grid"] = np.array([m.stride, m.origin[0], m.origin[1]], np.float64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _model_from_bytes(b: bytes) -> tuple[MontageModel, list[str]]:
    d = np.load(io.BytesIO(b))
    keys = [str(k) for k in d["keys"]]
    meshes: list[Field | None] = []
    for t in range(len(keys)):
        if f"mesh{t}" in d.files:
            g = d[f"mesh{t}_grid"]
            meshes.append(Field(d[f"mesh{t}"], float(g[0]), (float(g[1]), float(g[2]))))
        else:
            meshes.append(None)
    shapes = [(int(h), int(w)) for h, w in d["tile_shapes"]]
    model = MontageModel(d["nominal"], shapes, meshes, d["gain"], d["offset"],
                         float(d["vignetting"]), [], [])
    return model, keys


class _Tiles:
    """A section's tiles, read from the workspace only when a block touches them."""

    def __init__(self, ws: Workspace, keys: list[str]) -> None:
        self.ws, self.keys = ws, keys

    def __getitem__(self, t: int) -> np.ndarray:
        from wiremap.synth.acquisition import read_tile

        return read_tile(self.ws, self.keys[t])


@dataclass(frozen=True)
class MontageBlock:
    """Picklable block function: render the montaged sections of one block from their models."""

    url: str
    output: str

    def __call__(self, block: Any) -> None:
        ws = worker_workspace(self.url)
        out = Layer(ws, self.output)
        (z0, y0, x0), shape = block.write_roi.offset, block.write_roi.shape
        res = np.zeros(shape, np.uint8)
        for k in range(shape[0]):
            key = f"{MODELS_PREFIX}{z0 + k}.npz"
            if not ws.exists(key):  # no tiles for this section: left empty
                continue
            model, keys = _model_from_bytes(ws.read_bytes(key))
            v, _ = render_montage_roi(_Tiles(ws, keys), model, (y0, x0), shape[1:])
            res[k] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
        out.write(res, (z0, y0, x0))


def stitch_stage(ws: Workspace, output_layer: str = "montage", *,
                 cfg: MontageConfig | None = None, overwrite: bool = False, block_yx: int = 1024,
                 executor: str = "processes", workers: int = 2,
                 scheduler: str | None = None) -> dict:
    """Montage every section of the workspace's tiles into ``output_layer`` (models solved
    section by section, canvas rendered blockwise through the engine)."""
    from wiremap.synth.acquisition import META_KEY, read_manifest, read_tile

    cfg = cfg or MontageConfig()
    if not ws.exists(META_KEY):
        raise InputError(f"no tiles in {ws.url}: {META_KEY} is missing")
    meta = ws.read_json(META_KEY)
    man = read_manifest(ws)
    need = {"section", "key", "y", "x"}
    if not need <= set(man.columns):
        raise InputError(f"tile manifest lacks columns {sorted(need - set(man.columns))}")
    if "scan" in man.columns:  # re-imaged sections: keep the last (slowest, cleanest) scan
        last = man.groupby("section")["scan"].transform("max")
        man = man[man["scan"] == last]
    canvas = (int(meta["section_shape_yx"][0]), int(meta["section_shape_yx"][1]))
    sections = sorted(int(s) for s in man["section"].unique())
    res_nm = tuple(float(v) for v in meta.get("resolution_nm", (30.0, 4.0, 4.0)))

    def load(key: str) -> np.ndarray:
        try:
            t = read_tile(ws, key)
        except WiremapError as e:
            raise InputError(f"tile {key!r} listed in the manifest cannot be read: {e}") from e
        if t.ndim != 2 or t.dtype != np.uint8:
            raise InputError(f"tile {key!r} is {t.dtype} {t.shape}, expected 2-D uint8")
        return t

    shape_zyx = (max(sections) + 1,) + canvas
    create_layer(ws, output_layer, shape_zyx=shape_zyx, resolution_nm=res_nm, dtype="uint8",
                 chunk_zyx=(1, min(block_yx, canvas[0]), min(block_yx, canvas[1])),
                 overwrite=overwrite)
    ws.delete_prefix(MODELS_PREFIX)
    sample = [load(k) for k in man["key"].iloc[:: max(1, len(man) // 200)]]
    vig = estimate_vignetting(sample)
    reports = []
    for s in sections:
        rows = man[man["section"] == s]
        tiles = [load(k) for k in rows["key"]]
        model, rep = montage(tiles, rows[["y", "x"]].to_numpy(), cfg, vignetting=vig)
        ws.write_bytes(f"{MODELS_PREFIX}{s}.npz", _model_bytes(model, list(rows["key"])))
        reports.append(rep)
    stage = f"stitch-render-{output_layer}"
    reset_markers(ws, stage)
    grid = BlockGrid(Roi.from_shape(shape_zyx), (1, block_yx, block_yx))
    report = run_blockwise(BlockTask(stage, ws.url, grid, MontageBlock(ws.url, output_layer)),
                           executor=executor, workers=workers, scheduler=scheduler, progress=False)
    if report.failed:
        raise WiremapError(f"{len(report.failed)} montage render blocks failed: "
                           f"{next(iter(report.failed.values()))}")
    table = qc.montage_table(reports, sections)
    ws.write_table("montage_qc", table)
    summary = {"sections": len(sections), "vignetting": vig,
               "attention": [int(s) for s in table.loc[table["attention"], "section"]]}
    ws.write_provenance("stitch", parameters={"config": json.loads(cfg.model_dump_json()),
                                              "summary": summary},
                        inputs=["tiles"], outputs=[output_layer])
    return summary
