"""Simulated multi-beam SEM acquisition of a clean synthetic volume, with exact ground truth.

A clean volume (uint8, ``(z, y, x)``) is cut into sections (z slice ``s`` is section
``s``); each section is deformed like real tissue on a wafer and imaged by a hexagonal
multi-beam SEM.  The output is what a stitcher sees (PNG tiles + NOMINAL positions)
plus the answers (TRUE positions, lens model, warp, defects) under ``groundtruth/``.

Coordinate conventions (everywhere in this module)
--------------------------------------------------
* Points are ``(y, x)`` float pairs, last axis of an ``(..., 2)`` array; in pixels.
* Pixel ``(i, j)`` of any image has its CENTRE at ``(y, x) = (i, j)``; it covers
  ``[i - 0.5, i + 0.5) x [j - 0.5, j + 0.5)``.
* Three frames:
  - tile frame:    pixel coordinates inside one tile image, ``(0, 0)`` = centre of its
    top-left pixel;
  - section frame: one frame per section (what stitching should reconstruct), in
    pixels of the volume's xy resolution.  The "section canvas" is the grid
    ``[0, H) x [0, W)`` (H, W = volume ``shape[1:]``); tiles cover it fully and stick
    out of it by a margin, so section-frame points may be negative or >= H / W;
  - volume frame:  ``(y, x)`` pixel coordinates of slice ``z = section`` of the clean volume.
* Tissue beyond the clean volume is its mirror image (scipy ``mode="mirror"``), so a
  section has no artificial edge; ``section_to_volume`` may return points outside
  ``[0, H-1] x [0, W-1]``: score only where the result lies inside.

Tile -> section (true, exact)
    c = ((h - 1) / 2, (w - 1) / 2),  d = yx - c,  R = hypot(h - 1, w - 1) / 2,
    p = (y, x) + c + d * (1 + lens_k * |d|^2 / R^2)
  with ``(y, x)`` the TRUE top-left of the tile and ``lens_k`` its radial (barrel,
  ``lens_k > 0``) distortion; a tile corner is displaced outward by ``lens_k * R`` px.
  The NOMINAL position (manifest) is where the stage meant to put the tile; true =
  nominal + stage jitter.  ``section_to_tile`` inverts the map (fixed-point iteration).

Section -> volume (true, exact)
    q = G(p + sum_k D_k(p))
  G: bilinear interpolation of the warp grid ``warp[s]`` (shape ``(2, gh, gw)``,
  float64, ``warp[s, :, i, j]`` = volume ``(y, x)`` of the section point
  ``(oy + i * step, ox + j * step)``); points beyond the grid use the nearest edge
  cell linearly extrapolated.  G contains the section's affine part
  (stretch/compression ``stretch_y``, ``stretch_x``: the section is the tissue scaled
  by these factors, about the canvas centre; rotation; shift) and a smooth elastic
  warp, both sampled exactly at the nodes, so G *is* the true map (no approximation).
  D_k: one term per fold or crack ``k`` of the section (straight line through
  ``(y, x)`` with unit normal ``(ny, nx)``, section frame), ``d = (p - (y, x)) . (ny, nx)``:
    D_k(p) = sign(d) * jump / 2 * exp(-|d| / decay) * (ny, nx),   sign(0) = +1
  A fold (``jump > 0``) hides ``jump`` px of tissue under a dark band of half width
  ``width / 2`` around the line; a crack (``jump < 0``) opens a bright tissue-free gap
  of ``width`` px whose two edges map to the same tissue line (exactly).
  Use :func:`mirror_into_volume` to fold a mirrored point back into the volume.

Intensity model (for a tile pixel imaging section point p)
    raw   = V(q) (volume, linear interpolation, mirror beyond edges), unless p is
            fold: fold_gain * V(q); crack: crack_value; debris: debris_value;
            blank section: blank_value
    sec   = regime_gain * raw + regime_offset                 (microscope settings of the section)
    tile  = (gain * sec + offset) * (1 - vignetting * |d|^2 / R^2) + N(0, noise_sigma)
    pixel = clip(round(tile), 0, 255) as uint8
  with ``noise_sigma = config.noise_sigma * sqrt(config.dwell_us / dwell_us)``.
  ``render_section`` gives ``sec`` on the section canvas (the "warped section").

Workspace layout written by :func:`write_acquisition` (keys are '/'-separated)
------------------------------------------------------------------------------
tiles/<section:05d>/<scan>/<mfov:03d>_<beam:02d>.png
    8-bit greyscale PNG, shape (tile_height, tile_width).  ``scan`` 0 is the normal
    imaging of the section; scan 1 (some sections only) is a re-imaging at another
    dwell time (slow scan: less noise), with new stage jitter and tile gains.
tiles/manifest.parquet  (what the microscope reports), one row per tile:
    tile_id int64 (row number, shared with the ground-truth tile table),
    section int64, scan int64, mfov int64, beam int64 (0 = centre beam, then ring by ring),
    key str (workspace key of the PNG), height int64, width int64,
    y, x float64: NOMINAL top-left of the tile in the section frame, px,
    stage_y_nm, stage_x_nm float64: the same in nm (px * xy resolution),
    dwell_us float64, regime int64 (microscope settings id: 0, then 1 after the change).
tiles/acquisition.json
    {"format": "wiremap.acquisition/1", "n_sections", "section_shape_yx": [H, W],
     "resolution_nm": [z, y, x], "tile_shape_yx": [h, w], "beams", "overlap",
     "n_tiles", "seed", "config": {...}}
groundtruth/acquisition/tiles.parquet     manifest columns plus TRUE placement:
    y_true, x_true float64 (true top-left, section frame px), lens_k, gain, offset,
    vignetting, noise_sigma float64.
groundtruth/acquisition/sections.parquet  one row per section:
    section, status str ('ok' | 'blank' | 'fold' | 'crack' | 'debris': the worst, in
    this order of precedence), blank, fold, crack, debris bool, n_scans,
    regime, regime_gain, regime_offset, dwell_us, stretch_y, stretch_x,
    rotation_deg, shift_y, shift_x (volume px).
groundtruth/acquisition/defects.parquet   one row per fold/crack/debris blob:
    section, kind ('fold'|'crack'|'debris'), y, x (line point or blob centre, section
    frame px), ny, nx (unit normal of a line; 0 for debris), width, jump, decay (lines),
    ry, rx, angle_deg (debris ellipse radii / rotation; 0 for lines).
groundtruth/acquisition/warp.npz          warp (n_sections, 2, gh, gw) float64,
    origin_yx (2,) float64 = (oy, ox), step float64 (see "Section -> volume").
groundtruth/acquisition/masks.npz         masks (n_sections, H, W) uint8 on the
    section canvas: 0 tissue, 1 fold, 2 crack, 3 debris, 4 blank section.

Helpers for scoring: :func:`load_groundtruth`, :func:`true_tile_to_section`,
:func:`section_to_tile`, :func:`section_to_volume`, :func:`tile_to_volume`,
:func:`defect_codes`, :func:`render_section`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage

from wiremap.errors import ConfigError, InputError
from wiremap.synth import defects as dfx
from wiremap.synth import multibeam as mb

FORMAT = "wiremap.acquisition/1"
GT_PREFIX = "groundtruth/acquisition/"
MANIFEST_KEY = "tiles/manifest.parquet"
META_KEY = "tiles/acquisition.json"


class AcquisitionConfig(BaseModel):
    """How the knife and the multi-beam SEM spoil a clean volume (lengths in px of the xy grid)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- multi-beam geometry
    # beams per multi-beam field of view (hexagonal number: 61 = rings 0..4)
    beams: int = 61
    # overlap fraction between neighbouring tiles
    overlap: float = Field(default=0.08, ge=0.0, lt=0.5)
    # tile width; None: the smallest tile letting one mFoV cover a section, else as many
    # mFoVs as needed
    tile_width_px: int | None = Field(default=None, ge=8)
    # tile height / width (H01 beam tiles are 3876 x 3376 px)
    tile_aspect: float = Field(default=0.871, gt=0.2, le=5.0)
    # sd per axis of a tile's true offset from its nominal position (normal truncated at
    # 2.27 sd); None: (overlap px - 1) / 6, so neighbouring tiles never part
    stage_jitter_px: float | None = Field(default=None, ge=0.0)
    # -- optics and detector
    # mean outward (barrel) radial displacement at a tile corner
    lens_distortion_px: float = Field(default=1.0, ge=0.0)
    # relative sd of the distortion between beams (each beam keeps its own for the run)
    lens_spread: float = Field(default=0.2, ge=0.0)
    # mean relative brightness loss at tile corners
    vignetting: float = Field(default=0.08, ge=0.0, lt=1.0)
    # sd of each tile's contrast factor around 1
    tile_gain_sd: float = Field(default=0.05, ge=0.0)
    # sd of each tile's brightness offset, grey levels
    tile_offset_sd: float = Field(default=4.0, ge=0.0)
    # sd of the Gaussian detector noise at dwell_us, grey levels (scales as 1/sqrt(dwell))
    noise_sigma: float = Field(default=4.0, ge=0.0)
    # pixel dwell time of the first settings regime, microseconds
    dwell_us: float = Field(default=0.2, gt=0.0)
    # -- section deformation (relative to the true tissue)
    # max relative stretch/compression per axis, uniform in [1 - s, 1 + s]
    stretch: float = Field(default=0.02, ge=0.0, lt=0.5)
    # max section rotation, degrees, uniform in [-r, r]
    rotation_deg: float = Field(default=1.0, ge=0.0, le=45.0)
    # max section shift per axis, uniform in [-s, s]
    shift_px: float = Field(default=10.0, ge=0.0)
    # sd of the smooth elastic displacement at its control points
    warp_amplitude_px: float = Field(default=2.0, ge=0.0)
    # spacing of the elastic warp's control points (its correlation length)
    warp_scale_px: float = Field(default=256.0, gt=0.0)
    # node spacing of the stored warp grid (bilinear between nodes, and exact)
    warp_grid_step_px: float = Field(default=16.0, gt=0.0)
    # -- change of microscope settings part-way through the stack
    # fraction of the stack after which the settings change; None: never
    regime_change_at: float | None = Field(default=0.5, ge=0.0, le=1.0)
    # contrast factor of the second regime
    regime_gain: float = Field(default=0.8, gt=0.0)
    # brightness offset of the second regime, grey levels
    regime_offset: float = 20.0
    # dwell time of the second regime / dwell_us
    regime_dwell_factor: float = Field(default=0.5, gt=0.0)
    # -- sections imaged twice (fast vs slow scan)
    # fraction of sections imaged a second time (scan 1)
    rescan_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    # dwell of the re-imaging / the section's dwell (4: half the noise)
    rescan_dwell_factor: float = Field(default=4.0, gt=0.0)
    # -- defects (only with defects=True)
    # switch on blank sections, folds, cracks and debris at the rates below
    defects: bool = False
    # fraction of blank (lost) sections
    blank_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    # fraction of sections with a fold
    fold_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    # fraction of sections with a crack
    crack_fraction: float = Field(default=0.03, ge=0.0, le=1.0)
    # fraction of sections with debris
    debris_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    # range of the dark fold band's width (a fold hides twice its width of tissue)
    fold_width_px: tuple[float, float] = (4.0, 12.0)
    # range of the bright crack gap's width
    crack_width_px: tuple[float, float] = (2.0, 6.0)
    # decay length of the tissue displacement beside a fold or crack
    defect_decay_px: float = Field(default=60.0, gt=0.0)
    # range of the number of debris blobs on a section with debris
    debris_count: tuple[int, int] = (1, 4)
    # range of debris blob radii
    debris_radius_px: tuple[float, float] = (4.0, 24.0)
    # brightness factor of folded (tripled) tissue
    fold_gain: float = Field(default=0.35, ge=0.0)
    # grey level of a crack (bare substrate)
    crack_value: float = 235.0
    # grey level of debris
    debris_value: float = 20.0
    # grey level of a blank section
    blank_value: float = 200.0
    # -- implementation
    # spline order sampling the clean volume (1: linear)
    interpolation_order: int = Field(default=1, ge=0, le=5)
    # zlib level of the tile PNGs
    png_compress_level: int = Field(default=1, ge=0, le=9)

    @model_validator(mode="after")
    def _check(self) -> AcquisitionConfig:
        try:
            mb.rings_of(self.beams)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        if 2 * self.fold_width_px[1] >= 2 * self.defect_decay_px:
            raise ValueError(
                "fold_width_px must stay below defect_decay_px (folds must not invert tissue)"
            )
        for name in ("fold_width_px", "crack_width_px", "debris_count", "debris_radius_px"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi")
        return self


@dataclass
class AcquisitionGroundTruth:
    """The answers: true tile placement, lens, warp and defects (formulas: module docstring)."""

    section_shape: tuple[int, int]  # (H, W) of the section canvas = volume slice
    resolution_nm: tuple[float, float, float]  # (z, y, x) of the clean volume
    tiles: (
        pd.DataFrame
    )  # manifest columns + y_true, x_true, lens_k, gain, offset, vignetting, noise_sigma
    sections: pd.DataFrame  # one row per section
    defects: pd.DataFrame  # one row per fold / crack / debris blob
    warp: np.ndarray  # (n_sections, 2, gh, gw) float64 volume (y, x) at the grid nodes
    warp_origin_yx: tuple[float, float]  # section-frame position of node (0, 0)
    warp_step: float  # node spacing, px
    masks: np.ndarray  # (n_sections, H, W) uint8 defect codes on the canvas


@dataclass
class Acquisition:
    """A simulated acquisition: tiles as the microscope wrote them, plus the ground truth."""

    manifest: pd.DataFrame  # nominal positions, one row per tile, row i = tile_id i
    tiles: list[np.ndarray]  # tiles[i]: uint8 (h, w) image of manifest row i
    groundtruth: AcquisitionGroundTruth
    meta: dict[str, Any] = field(default_factory=dict)


class _Writable(Protocol):
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def write_json(self, key: str, obj: Any) -> None: ...
    def write_table(self, name: str, df: pd.DataFrame) -> None: ...


class _Readable(Protocol):
    def read_bytes(self, key: str) -> bytes: ...
    def read_json(self, key: str) -> Any: ...
    def read_table(self, name: str) -> pd.DataFrame: ...


# -- exact maps ------------------------------------------------------------------------------
def _bilinear(
    grid: np.ndarray, origin: tuple[float, float], step: float, p: np.ndarray
) -> np.ndarray:
    """Bilinear interpolation of ``grid`` (2, gh, gw) at section points ``p`` (..., 2).

    Beyond the grid the nearest edge cell is extrapolated linearly (exact for affine maps).
    Written out (not map_coordinates) because that clamps instead of extrapolating.
    """
    gh, gw = grid.shape[1:]
    fy = (p[..., 0] - origin[0]) / step
    fx = (p[..., 1] - origin[1]) / step
    iy = np.clip(np.floor(fy), 0, gh - 2).astype(np.intp)
    ix = np.clip(np.floor(fx), 0, gw - 2).astype(np.intp)
    ty, tx = fy - iy, fx - ix
    out = np.empty(p.shape, float)
    for a in range(2):
        g = grid[a]
        g00, g01, g10, g11 = g[iy, ix], g[iy, ix + 1], g[iy + 1, ix], g[iy + 1, ix + 1]
        top = g00 + tx * (g01 - g00)
        bot = g10 + tx * (g11 - g10)
        out[..., a] = top + ty * (bot - top)
    return out


def _tile_row(gt: AcquisitionGroundTruth, section: int, tile: int) -> Any:
    row = gt.tiles.iloc[int(tile)]
    if int(row["section"]) != int(section):
        raise InputError(f"tile {tile} belongs to section {int(row['section'])}, not {section}")
    return row


def true_tile_to_section(
    gt: AcquisitionGroundTruth, section: int, tile: int, yx: np.ndarray
) -> np.ndarray:
    """Section-frame points imaged by tile-frame points ``yx`` (..., 2) of tile ``tile_id``."""
    r = _tile_row(gt, section, tile)
    return mb.tile_to_section(
        np.asarray(yx, float),
        np.array([r["y_true"], r["x_true"]]),
        (int(r["height"]), int(r["width"])),
        float(r["lens_k"]),
    )


def section_to_tile(
    gt: AcquisitionGroundTruth, section: int, tile: int, yx: np.ndarray
) -> np.ndarray:
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


def tile_to_volume(
    gt: AcquisitionGroundTruth, section: int, tile: int, yx: np.ndarray
) -> np.ndarray:
    """Volume ``(y, x)`` imaged by tile-frame points ``yx`` of tile ``tile_id``."""
    return section_to_volume(gt, section, true_tile_to_section(gt, section, tile, yx))


def defect_codes(gt: AcquisitionGroundTruth, section: int, yx: np.ndarray) -> np.ndarray:
    """Defect code (0 tissue, 1 fold, 2 crack, 3 debris, 4 blank) at section-frame points ``yx``."""
    p = np.asarray(yx, float)
    if bool(gt.sections["blank"].iloc[section]):
        return np.full(p.shape[:-1], dfx.BLANK, np.uint8)
    return dfx.codes(gt.defects[gt.defects["section"] == section], p)


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
        return ndimage.spline_filter(
            s.astype(np.float32), order=order, mode="mirror", output=np.float32
        )
    return s


def render_section(
    volume: np.ndarray,
    gt: AcquisitionGroundTruth,
    section: int,
    config: AcquisitionConfig | None = None,
) -> np.ndarray:
    """The warped section (``sec`` of the intensity model) on the section canvas, float32 (H, W).

    This is what perfectly stitched tiles with their gains, vignetting, noise and lens
    removed look like.  ``config`` must be the one used to simulate (defaults: default config).
    """
    cfg = config or AcquisitionConfig()
    H, W = gt.section_shape
    p = np.stack(
        np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij"), -1
    )
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


# -- simulation ------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, pool: np.ndarray, fraction: float) -> set[int]:
    k = min(len(pool), int(round(fraction * len(pool))))
    return {int(i) for i in rng.choice(pool, size=k, replace=False)} if k else set()


def _section_warp(
    rng: np.random.Generator, cfg: AcquisitionConfig, shape: tuple[int, int], nodes: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """Warp grid (2, gh, gw) at section-frame ``nodes`` (gh, gw, 2) and the affine parameters."""
    sy, sx = 1 + rng.uniform(-cfg.stretch, cfg.stretch, size=2)
    theta = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    shift = rng.uniform(-cfg.shift_px, cfg.shift_px, size=2)
    c = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    t = math.radians(theta)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    a = rot @ np.diag(
        [1 / sy, 1 / sx]
    )  # section point -> tissue point (section = tissue * stretch)
    q = c + (nodes - c) @ a.T + shift
    # smooth elastic part: random control points every warp_scale_px, cubic spline between them
    lo, hi = nodes[0, 0], nodes[-1, -1]
    n_ctrl = np.ceil((hi - lo) / cfg.warp_scale_px).astype(int) + 3
    ctrl = rng.normal(0.0, cfg.warp_amplitude_px, size=(2, *n_ctrl))
    idx = (nodes - lo) / cfg.warp_scale_px + 1.0
    coords = np.moveaxis(idx, -1, 0)
    for k in range(2):
        q[..., k] += ndimage.map_coordinates(ctrl[k], coords, order=3, mode="nearest")
    params = dict(
        stretch_y=float(sy),
        stretch_x=float(sx),
        rotation_deg=float(theta),
        shift_y=float(shift[0]),
        shift_x=float(shift[1]),
    )
    return np.moveaxis(q, -1, 0).copy(), params


JITTER_BOUND = 2.0 / 0.8796  # |jitter| <= 2.27 sd: a standard normal truncated at 2 has sd 0.8796


def _truncated_normal(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    """Normal samples truncated at +-2, rescaled to unit sd (so |value| <= JITTER_BOUND)."""
    z = rng.standard_normal(size)
    bad = np.abs(z) > 2
    while bad.any():  # rejection keeps the result deterministic for a given generator
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    return z / 0.8796


def _jitter(cfg: AcquisitionConfig, tile_shape: tuple[int, int]) -> float:
    """Stage jitter sd; refuses one letting neighbouring tiles part (gaps no stitcher can fill)."""
    overlap_px = cfg.overlap * min(tile_shape)
    if cfg.stage_jitter_px is None:
        return max(overlap_px - 1.0, 0.0) / 6
    if 2 * JITTER_BOUND * cfg.stage_jitter_px >= overlap_px:
        raise ConfigError(
            f"stage_jitter_px={cfg.stage_jitter_px} can open gaps between tiles that overlap by "
            f"{overlap_px:.1f} px; use at most {overlap_px / (2 * JITTER_BOUND):.2f} "
            "or larger tiles"
        )
    return float(cfg.stage_jitter_px)


def simulate_acquisition(
    volume: np.ndarray,
    resolution_nm: tuple[float, float, float],
    config: AcquisitionConfig | None = None,
    seed: int = 0,
) -> Acquisition:
    """Cut ``volume`` (uint8, (z, y, x)) into sections and image each with a multi-beam SEM.

    Pure and in memory; same inputs and seed, same output.  Formats: module docstring.
    """
    cfg = config or AcquisitionConfig()
    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise InputError(
            f"acquisition needs a uint8 (z, y, x) volume, got {volume.dtype} {volume.shape}"
        )
    if len(resolution_nm) != 3 or min(resolution_nm) <= 0:
        raise InputError(
            f"resolution_nm must be three positive numbers (z, y, x), got {resolution_nm}"
        )
    res = (float(resolution_nm[0]), float(resolution_nm[1]), float(resolution_nm[2]))
    n, H, W = volume.shape
    lens_margin = cfg.lens_distortion_px * (1 + 3 * cfg.lens_spread)
    jitter = cfg.stage_jitter_px or 0.0
    for _ in range(
        2 if cfg.stage_jitter_px is None else 1
    ):  # the auto jitter depends on the tile size
        layout = mb.plan_layout(
            (H, W),
            cfg.beams,
            cfg.overlap,
            cfg.tile_aspect,
            cfg.tile_width_px,
            margin=JITTER_BOUND * jitter * 1.05 + lens_margin + 1,
        )
        jitter = _jitter(cfg, layout.tile_shape)
    h, w = layout.tile_shape
    T = len(layout.beam)
    R = mb.lens_radius((h, w))

    root = np.random.SeedSequence(int(seed))
    stack_ss, beam_ss, *sec_ss = root.spawn(2 + n)
    stack_rng, beam_rng = np.random.default_rng(stack_ss), np.random.default_rng(beam_ss)
    k_beam = (
        cfg.lens_distortion_px / R * (1 + cfg.lens_spread * beam_rng.standard_normal(cfg.beams))
    )
    lens_k = k_beam[layout.beam]

    # which sections are blank / folded / ... / re-imaged, and their settings regime
    allz = np.arange(n)
    blank = _pick(stack_rng, allz, cfg.blank_fraction) if cfg.defects else set()
    rest = np.array(sorted(set(allz.tolist()) - blank), dtype=np.int64)
    kinds: dict[str, set[int]] = {k: set() for k in ("fold", "crack", "debris")}
    if cfg.defects:
        for k in kinds:
            kinds[k] = _pick(stack_rng, rest, getattr(cfg, f"{k}_fraction"))
    rescan = _pick(stack_rng, allz, cfg.rescan_fraction)
    z_change = n if cfg.regime_change_at is None else int(round(cfg.regime_change_at * n))

    # the stored warp grid covers every tile wherever jitter puts it
    pad = 2 * JITTER_BOUND * jitter + 2 * lens_margin + 2 + cfg.warp_grid_step_px
    step = float(cfg.warp_grid_step_px)
    lo = np.floor((layout.top_left.min(0) - pad) / step) * step
    hi = layout.top_left.max(0) + np.array([h, w]) + pad
    gy = np.arange(lo[0], hi[0] + step, step)
    gx = np.arange(lo[1], hi[1] + step, step)
    nodes = np.stack(np.meshgrid(gy, gx, indexing="ij"), -1)

    # tile-frame geometry shared by every tile
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    d = np.stack(np.meshgrid(np.arange(h) - c[0], np.arange(w) - c[1], indexing="ij"), -1)
    rho2 = (d**2).sum(-1) / R**2
    canvas = np.stack(
        np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij"), -1
    )

    warps: list[np.ndarray] = []
    sec_rows: list[dict[str, Any]] = []
    def_rows: list[dict[str, Any]] = []
    tile_rows: list[dict[str, Any]] = []
    tiles: list[np.ndarray] = []
    masks = np.zeros((n, H, W), np.uint8)
    for z in range(n):
        rng = np.random.default_rng(sec_ss[z])
        warp, affine = _section_warp(rng, cfg, (H, W), nodes)
        warps.append(warp)
        regime = int(z >= z_change)
        r_gain, r_off = (cfg.regime_gain, cfg.regime_offset) if regime else (1.0, 0.0)
        dwell = cfg.dwell_us * (cfg.regime_dwell_factor if regime else 1.0)
        my_kinds = {k for k, zs in kinds.items() if z in zs}
        rows = dfx.sample_section_defects(
            rng,
            z,
            (H, W),
            my_kinds,
            cfg.fold_width_px,
            cfg.crack_width_px,
            cfg.defect_decay_px,
            cfg.debris_count,
            cfg.debris_radius_px,
        )
        def_rows += rows
        sec_def = pd.DataFrame(rows, columns=dfx.COLUMNS) if rows else None
        is_blank = z in blank
        if is_blank:
            masks[z] = dfx.BLANK
        elif sec_def is not None:
            masks[z] = dfx.codes(sec_def, canvas)
        status = (
            "blank"
            if is_blank
            else next((k for k in ("fold", "crack", "debris") if k in my_kinds), "ok")
        )
        n_scans = 2 if z in rescan else 1
        sec_rows.append(
            dict(
                section=z,
                status=status,
                blank=is_blank,
                fold="fold" in my_kinds,
                crack="crack" in my_kinds,
                debris="debris" in my_kinds,
                n_scans=n_scans,
                regime=regime,
                regime_gain=r_gain,
                regime_offset=r_off,
                dwell_us=dwell,
                **affine,
            )
        )
        slice_ = _prepared_slice(volume, z, cfg.interpolation_order)
        for scan in range(n_scans):
            jit = jitter * _truncated_normal(rng, (T, 2))
            true_tl = layout.top_left + jit
            gain = 1 + cfg.tile_gain_sd * rng.standard_normal(T)
            off = cfg.tile_offset_sd * rng.standard_normal(T)
            vig = cfg.vignetting * rng.uniform(0.8, 1.2, size=T)
            dw = dwell * (cfg.rescan_dwell_factor if scan else 1.0)
            sigma = cfg.noise_sigma * math.sqrt(cfg.dwell_us / dw)
            p = (true_tl + c)[:, None, None, :] + d[None] * (
                1 + lens_k[:, None, None, None] * rho2[None, ..., None]
            )
            codes = None
            if sec_def is not None and not is_blank:
                codes = dfx.codes(sec_def, p)
                p = p + dfx.displacement(sec_def, p)
            q = _bilinear(warp, (float(lo[0]), float(lo[1])), step, p)
            img = _raw(slice_, q, codes, is_blank, cfg, r_gain, r_off)
            img = img * gain[:, None, None].astype(np.float32) + off[:, None, None].astype(
                np.float32
            )
            img *= (1 - vig[:, None, None] * rho2[None]).astype(np.float32)
            img += np.float32(sigma) * rng.standard_normal(img.shape, dtype=np.float32)
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            base = len(tile_rows)
            for i in range(T):
                m, b = int(layout.mfov[i]), int(layout.beam[i])
                tile_rows.append(
                    dict(
                        tile_id=base + i,
                        section=z,
                        scan=scan,
                        mfov=m,
                        beam=b,
                        key=f"tiles/{z:05d}/{scan}/{m:03d}_{b:02d}.png",
                        height=h,
                        width=w,
                        y=float(layout.top_left[i, 0]),
                        x=float(layout.top_left[i, 1]),
                        stage_y_nm=float(layout.top_left[i, 0]) * res[1],
                        stage_x_nm=float(layout.top_left[i, 1]) * res[2],
                        dwell_us=dw,
                        regime=regime,
                        y_true=float(true_tl[i, 0]),
                        x_true=float(true_tl[i, 1]),
                        lens_k=float(lens_k[i]),
                        gain=float(gain[i]),
                        offset=float(off[i]),
                        vignetting=float(vig[i]),
                        noise_sigma=sigma,
                    )
                )
                tiles.append(img[i])

    gt_tiles = pd.DataFrame(tile_rows)
    manifest = gt_tiles[MANIFEST_COLUMNS].copy()
    defects_df = pd.DataFrame(def_rows, columns=dfx.COLUMNS) if def_rows else dfx.empty_table()
    defects_df = defects_df.astype({"section": "int64"})
    gt = AcquisitionGroundTruth(
        section_shape=(H, W),
        resolution_nm=res,
        tiles=gt_tiles,
        sections=pd.DataFrame(sec_rows),
        defects=defects_df.reset_index(drop=True),
        warp=np.stack(warps),
        warp_origin_yx=(float(lo[0]), float(lo[1])),
        warp_step=step,
        masks=masks,
    )
    meta = {
        "format": FORMAT,
        "n_sections": n,
        "section_shape_yx": [H, W],
        "resolution_nm": list(res),
        "tile_shape_yx": [h, w],
        "beams": cfg.beams,
        "overlap": cfg.overlap,
        "n_tiles": len(tiles),
        "seed": int(seed),
        "config": cfg.model_dump(mode="json"),
    }
    return Acquisition(manifest=manifest, tiles=tiles, groundtruth=gt, meta=meta)


MANIFEST_COLUMNS = [
    "tile_id",
    "section",
    "scan",
    "mfov",
    "beam",
    "key",
    "height",
    "width",
    "y",
    "x",
    "stage_y_nm",
    "stage_x_nm",
    "dwell_us",
    "regime",
]


# -- workspace I/O ---------------------------------------------------------------------------
def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def encode_png(tile: np.ndarray, compress_level: int = 1) -> bytes:
    """8-bit greyscale PNG bytes of a uint8 (h, w) tile."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile), mode="L").save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 (h, w) array of PNG bytes."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def write_acquisition(acq: Acquisition, ws: _Writable) -> None:
    """Write tiles, ground truth, then manifest and ``tiles/acquisition.json`` (the done-marker)."""
    level = int(acq.meta.get("config", {}).get("png_compress_level", 1))
    for key, tile in zip(acq.manifest["key"], acq.tiles, strict=True):
        ws.write_bytes(key, encode_png(tile, level))
    gt = acq.groundtruth
    ws.write_table(GT_PREFIX + "tiles.parquet", gt.tiles)
    ws.write_table(GT_PREFIX + "sections.parquet", gt.sections)
    ws.write_table(GT_PREFIX + "defects.parquet", gt.defects)
    ws.write_bytes(
        GT_PREFIX + "warp.npz",
        _npz_bytes(
            warp=gt.warp, origin_yx=np.array(gt.warp_origin_yx), step=np.array(gt.warp_step)
        ),
    )
    ws.write_bytes(GT_PREFIX + "masks.npz", _npz_bytes(masks=gt.masks))
    ws.write_table(MANIFEST_KEY, acq.manifest)
    ws.write_json(META_KEY, acq.meta)


def read_manifest(ws: _Readable) -> pd.DataFrame:
    """The tile manifest (nominal positions) of a workspace."""
    return ws.read_table(MANIFEST_KEY)


def read_tile(ws: _Readable, key: str) -> np.ndarray:
    """One tile image (uint8 (h, w)) by its manifest ``key``."""
    return decode_png(ws.read_bytes(key))


def load_groundtruth(ws: _Readable) -> AcquisitionGroundTruth:
    """The acquisition ground truth written by :func:`write_acquisition`."""
    meta = ws.read_json(META_KEY)
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
    )
