"""Ground truth of a simulated acquisition: the exact maps between tile, section and volume.

Formats, frames and formulas are documented in :mod:`wiremap.synth.acquisition`; this
module holds the answers (``AcquisitionGroundTruth``), reads them back from a workspace,
and evaluates them at any point, so that scoring code (stitching seam residuals,
alignment residuals) uses the very formulas the simulator rendered with.  Points are
``(y, x)`` in the last axis of ``(..., 2)`` float arrays, pixel centres at integers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from scipy import ndimage

from wiremap.errors import InputError, WorkspaceError
from wiremap.synth import defects as dfx
from wiremap.synth import multibeam as mb

if TYPE_CHECKING:
    from wiremap.synth.acquisition import AcquisitionConfig

FORMAT = "wiremap.acquisition/1"
GT_PREFIX = "groundtruth/acquisition/"
MANIFEST_KEY = "tiles/manifest.parquet"
META_KEY = "tiles/acquisition.json"


@dataclass
class AcquisitionGroundTruth:
    """The answers: true tile placement, lens, warp and defects (formulas: module docstring)."""

    section_shape: tuple[int, int]  # (H, W) of the section canvas = volume slice
    resolution_nm: tuple[float, float, float]  # (z, y, x) of the clean volume
    tiles: pd.DataFrame  # manifest columns + y_true, x_true, lens_k, gain, offset, vignetting, noise_sigma
    sections: pd.DataFrame  # one row per section
    defects: pd.DataFrame  # one row per fold / crack / debris blob
    warp: np.ndarray  # (n_sections, 2, gh, gw) float64 volume (y, x) at the grid nodes
    warp_origin_yx: tuple[float, float]  # section-frame position of node (0, 0)
    warp_step: float  # node spacing, px
    masks: np.ndarray  # (n_sections, H, W) uint8 defect codes on the canvas
    config: dict[str, Any] = field(default_factory=dict)  # AcquisitionConfig used, as JSON


class _Readable(Protocol):
    def read_bytes(self, key: str) -> bytes: ...
    def read_json(self, key: str) -> Any: ...
    def read_table(self, name: str) -> pd.DataFrame: ...


# -- exact maps ------------------------------------------------------------------------------
def _bilinear(grid: np.ndarray, origin: tuple[float, float], step: float, p: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``grid`` (2, gh, gw) at section points ``p`` (..., 2).

    Beyond the grid the nearest edge cell is extrapolated linearly (exact for affine maps).
    Written out (not map_coordinates) because that clamps instead of extrapolating.
    """
    gh, gw = grid.shape[1:]
    fy = (p[..., 0] - origin[0]) / step
    fx = (p[..., 1] - origin[1]) / step
    iy = np.clip(np.floor(fy), 0, gh - 2).astype(np.intp)
    ix = np.clip(np.floor(fx), 0, gw - 2).astype(np.intp)
    ty, tx = (fy - iy)[..., None], (fx - ix)[..., None]
    rows = np.ascontiguousarray(grid.reshape(2, -1).T)  # (gh * gw, 2): one gather per corner
    k = iy * gw + ix
    g00, g01 = np.take(rows, k, axis=0), np.take(rows, k + 1, axis=0)
    g10, g11 = np.take(rows, k + gw, axis=0), np.take(rows, k + gw + 1, axis=0)
    top = g00 + tx * (g01 - g00)
    bot = g10 + tx * (g11 - g10)
    return top + ty * (bot - top)


def _tile_row(gt: AcquisitionGroundTruth, section: int, tile: int) -> Any:
    row = gt.tiles.iloc[int(tile)]
    if int(row["section"]) != int(section):
        raise InputError(f"tile {tile} belongs to section {int(row['section'])}, not {section}")
    return row


def true_tile_to_section(gt: AcquisitionGroundTruth, section: int, tile: int, yx: np.ndarray) -> np.ndarray:
    """Section-frame points imaged by tile-frame points ``yx`` (..., 2) of tile ``tile_id``."""
    r = _tile_row(gt, section, tile)
    return mb.tile_to_section(
        np.asarray(yx, float),
        np.array([r["y_true"], r["x_true"]]),
        (int(r["height"]), int(r["width"])),
        float(r["lens_k"]),
    )


def section_to_tile(gt: AcquisitionGroundTruth, section: int, tile: int, yx: np.ndarray) -> np.ndarray:
    """Tile-frame points of tile ``tile_id`` that image section-frame points ``yx`` (inverse)."""
    r = _tile_row(gt, section, tile)
    return mb.section_to_tile(
        np.asarray(yx, float),
        np.array([r["y_true"], r["x_true"]]),
        (int(r["height"]), int(r["width"])),
        float(r["lens_k"]),
    )


def section_to_volume(gt: AcquisitionGroundTruth, section: int, yx: np.ndarray) -> np.ndarray:
    """Volume ``(y, x)`` (slice z = section) of the tissue seen at section-frame points ``yx``."""
    p = np.asarray(yx, float)
    d = gt.defects[gt.defects["section"] == section]
    if len(d):
        p = p + dfx.displacement(d, p)
    return _bilinear(gt.warp[section], gt.warp_origin_yx, gt.warp_step, p)


def volume_to_section(gt: AcquisitionGroundTruth, section: int, yx: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Section-frame points showing volume points ``yx`` (inverse of :func:`section_to_volume`).

    Fixed-point iteration ``p += q - S(p)``, which converges because the section map is
    close to the identity (|stretch - 1|, rotation and warp gradients are small).  Tissue
    hidden under a fold has no preimage: for it the result lands near the fold line.
    """
    q = np.asarray(yx, float)
    p = q.copy()
    for _ in range(iterations):
        p = p + (q - section_to_volume(gt, section, p))
    return p


def mirror_into_volume(yx: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Fold points beyond the volume back in (scipy ``mode="mirror"``: about edge pixel centres)."""
    out = np.array(yx, float)
    for a, n in enumerate(shape_yx):
        if n == 1:
            out[..., a] = 0.0
            continue
        period = 2 * (n - 1)
        r = np.mod(out[..., a], period)
        out[..., a] = np.where(r > n - 1, period - r, r)
    return out


def tile_to_volume(gt: AcquisitionGroundTruth, section: int, tile: int, yx: np.ndarray) -> np.ndarray:
    """Volume ``(y, x)`` imaged by tile-frame points ``yx`` of tile ``tile_id``."""
    return section_to_volume(gt, section, true_tile_to_section(gt, section, tile, yx))


def defect_codes(gt: AcquisitionGroundTruth, section: int, yx: np.ndarray) -> np.ndarray:
    """Defect code (0 tissue, 1 fold, 2 crack, 3 debris, 4 blank) at section-frame points ``yx``."""
    p = np.asarray(yx, float)
    if bool(gt.sections["blank"].iloc[section]):
        return np.full(p.shape[:-1], dfx.BLANK, np.uint8)
    return dfx.codes(gt.defects[gt.defects["section"] == section], p)


def decode_png(data: bytes) -> np.ndarray:
    """uint8 (h, w) array of PNG bytes."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def read_manifest(ws: _Readable) -> pd.DataFrame:
    """The tile manifest (nominal positions) of a workspace."""
    return ws.read_table(MANIFEST_KEY)


def read_tile(ws: _Readable, key: str) -> np.ndarray:
    """One tile image (uint8 (h, w)) by its manifest ``key``."""
    return decode_png(ws.read_bytes(key))


def load_groundtruth(ws: _Readable) -> AcquisitionGroundTruth:
    """The acquisition ground truth written by :func:`write_acquisition`."""
    meta = ws.read_json(META_KEY)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise WorkspaceError(f"{META_KEY} is not a {FORMAT} acquisition (format: {got})")
    warp = np.load(io.BytesIO(ws.read_bytes(GT_PREFIX + "warp.npz")))
    masks = np.load(io.BytesIO(ws.read_bytes(GT_PREFIX + "masks.npz")))["masks"]
    H, W = meta["section_shape_yx"]
    return AcquisitionGroundTruth(
        section_shape=(int(H), int(W)),
        resolution_nm=tuple(meta["resolution_nm"]),  # type: ignore[arg-type]
        tiles=ws.read_table(GT_PREFIX + "tiles.parquet"),
        sections=ws.read_table(GT_PREFIX + "sections.parquet"),
        defects=ws.read_table(GT_PREFIX + "defects.parquet"),
        warp=warp["warp"],
        warp_origin_yx=tuple(float(v) for v in warp["origin_yx"]),  # type: ignore[arg-type]
        warp_step=float(warp["step"]),
        masks=masks,
        config=dict(meta.get("config", {})),
    )


# -- the intensity model ---------------------------------------------------------------------
def _raw(
    slice_: np.ndarray,
    q: np.ndarray,
    codes: np.ndarray | None,
    blank: bool,
    cfg: AcquisitionConfig,
    gain: float,
    offset: float,
) -> np.ndarray:
    """Section intensity ``sec`` (float32) at volume points ``q`` with defect ``codes``."""
    if blank:
        raw = np.full(q.shape[:-1], cfg.blank_value, np.float32)
    else:
        coords = np.moveaxis(q, -1, 0).reshape(2, -1)
        raw = ndimage.map_coordinates(
            slice_,
            coords,
            order=cfg.interpolation_order,
            mode="mirror",
            output=np.float32,
            prefilter=False,
        ).reshape(q.shape[:-1])
        if codes is not None:
            raw[codes == dfx.FOLD] *= cfg.fold_gain
            raw[codes == dfx.CRACK] = cfg.crack_value
            raw[codes == dfx.DEBRIS] = cfg.debris_value
    return raw * np.float32(gain) + np.float32(offset)


def _prepared_slice(volume: np.ndarray, z: int, order: int) -> np.ndarray:
    s = volume[z]
    if order > 1:
        return ndimage.spline_filter(s.astype(np.float32), order=order, mode="mirror", output=np.float32)
    return s


def render_section(
    volume: np.ndarray,
    gt: AcquisitionGroundTruth,
    section: int,
    config: AcquisitionConfig | None = None,
) -> np.ndarray:
    """The warped section (``sec`` of the intensity model) on the section canvas, float32 (H, W).

    This is what perfectly stitched tiles with their gains, vignetting, noise and lens
    removed look like.  ``config``: the one used to simulate (default: ``gt.config``).
    """
    if config is None:
        from wiremap.synth.acquisition import AcquisitionConfig  # a cycle at import time otherwise

        config = AcquisitionConfig(**gt.config)
    cfg = config
    H, W = gt.section_shape
    p = np.stack(np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij"), -1)
    s = gt.sections.iloc[section]
    q = section_to_volume(gt, section, p)
    has_def = bool((gt.defects["section"] == section).any())
    codes = defect_codes(gt, section, p) if has_def else None
    return _raw(
        _prepared_slice(volume, section, cfg.interpolation_order),
        q,
        codes,
        bool(s["blank"]),
        cfg,
        float(s["regime_gain"]),
        float(s["regime_offset"]),
    )
