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
  with ``(y, x)`` the TRUE top-left of the tile (section-frame position of the centre
  of its pixel (0, 0), were there no lens distortion) and ``lens_k`` its radial
  (barrel, ``lens_k > 0``) distortion: a tile corner moves outward by ``lens_k * R`` px.
  The NOMINAL position (manifest) is where the stage meant to put the tile; true =
  nominal + stage jitter (per tile, plus per mFoV when asked; truncated normals, so
  neighbouring tiles always overlap).
  ``section_to_tile`` inverts the map (fixed-point iteration).  Tiles lie on a hexagonal
  lattice, mFoV by mFoV (see ``wiremap.synth.multibeam``).

Section -> volume (true, exact)
    q = G(p + sum_k D_k(p))
  G: bilinear interpolation of the warp grid ``warp[s]`` (shape ``(2, gh, gw)``,
  float64, ``warp[s, :, i, j]`` = volume ``(y, x)`` of the section point
  ``(oy + i * step, ox + j * step)``); points beyond the grid use the nearest edge
  cell linearly extrapolated.  The node values are, exactly,
    c + Rot(rotation_deg) @ diag(1 / stretch_y, 1 / stretch_x) @ (node - c) + shift + e(node)
  with c = ((H - 1) / 2, (W - 1) / 2), Rot(t) = [[cos t, -sin t], [sin t, cos t]] in
  (y, x), and e a smooth random elastic displacement; the section is the tissue
  stretched by ``stretch_y``, ``stretch_x``.  G *is* the true map (no approximation).
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
    sec   = regime_gain * raw + regime_offset        (the section's microscope settings)
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
    ry, rx, angle_deg (debris ellipse, 0 for lines: with t = angle, (dy, dx) = p - (y, x),
    debris where ((dy cos t + dx sin t) / ry)^2 + ((-dy sin t + dx cos t) / rx)^2 <= 1).
groundtruth/acquisition/warp.npz          warp (n_sections, 2, gh, gw) float64,
    origin_yx (2,) float64 = (oy, ox), step float64 (see "Section -> volume").
groundtruth/acquisition/masks.npz         masks (n_sections, H, W) uint8 on the
    section canvas: 0 tissue, 1 fold, 2 crack, 3 debris, 4 blank section.

Helpers for scoring (defined in ``acquisition_truth``, importable from here):
:func:`load_groundtruth`, :func:`read_manifest`, :func:`read_tile`,
:func:`true_tile_to_section`, :func:`section_to_tile`, :func:`section_to_volume`,
:func:`volume_to_section`, :func:`tile_to_volume`, :func:`mirror_into_volume`,
:func:`defect_codes`, :func:`render_section`.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage

from wiremap.errors import ConfigError, InputError
from wiremap.synth import defects as dfx
from wiremap.synth import multibeam as mb
from wiremap.synth.acquisition_truth import (  # re-exported: the scoring helpers
    FORMAT,
    GT_PREFIX,
    MANIFEST_KEY,
    META_KEY,
    AcquisitionGroundTruth,
    _bilinear,
    _prepared_slice,
    _raw,
    decode_png,
    defect_codes,
    load_groundtruth,
    mirror_into_volume,
    read_manifest,
    read_tile,
    render_section,
    section_to_tile,
    section_to_volume,
    tile_to_volume,
    true_tile_to_section,
    volume_to_section,
)  # fmt: skip

__all__ = [
    "FORMAT", "GT_PREFIX", "MANIFEST_KEY", "META_KEY", "Acquisition", "AcquisitionConfig",
    "AcquisitionGroundTruth", "decode_png", "defect_codes", "encode_png", "load_groundtruth",
    "mirror_into_volume", "read_manifest", "read_tile", "render_section", "section_to_tile",
    "section_to_volume", "simulate_acquisition", "tile_to_volume", "true_tile_to_section",
    "volume_to_section", "write_acquisition",
]  # fmt: skip


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
    # sd per axis of a stage offset shared by all tiles of one mFoV (truncated likewise); on a
    # real multi-beam SEM the stage moves per mFoV while beams keep their relative positions
    mfov_jitter_px: float = Field(default=0.0, ge=0.0)
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
            raise ValueError("fold_width_px must stay below defect_decay_px (folds must not invert tissue)")
        for name in ("fold_width_px", "crack_width_px", "debris_count", "debris_radius_px"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi")
        return self


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
    a = rot @ np.diag([1 / sy, 1 / sx])  # section point -> tissue point (section = tissue * stretch)
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
    """Per-tile jitter sd; refuses jitter letting neighbouring tiles part (unfillable gaps)."""
    overlap_px = cfg.overlap * min(tile_shape)
    if cfg.stage_jitter_px is None:
        return max((overlap_px - 1.0) / 6 - cfg.mfov_jitter_px, 0.0)
    total = cfg.stage_jitter_px + cfg.mfov_jitter_px
    if 2 * JITTER_BOUND * total >= overlap_px:
        raise ConfigError(
            f"stage_jitter_px + mfov_jitter_px = {total} can open gaps between tiles that "
            f"overlap by {overlap_px:.1f} px; use at most {overlap_px / (2 * JITTER_BOUND):.2f} "
            "in all, or larger tiles"
        )
    return float(cfg.stage_jitter_px)


@dataclass(frozen=True)
class _Plan:
    """What all sections share: tile layout, jitter, beam lenses, warp nodes, tile geometry."""

    layout: mb.TileLayout
    jitter: float  # sd of the stage jitter, px
    lens_k: np.ndarray  # (T,) radial distortion of each tile (fixed per beam)
    nodes: np.ndarray  # (gh, gw, 2) section-frame positions of the warp-grid nodes
    d: np.ndarray  # (h, w, 2) tile pixel minus tile centre
    rho2: np.ndarray  # (h, w) |d|^2 / R^2


def _plan(cfg: AcquisitionConfig, shape: tuple[int, int], rng: np.random.Generator) -> _Plan:
    lens_margin = cfg.lens_distortion_px * (1 + 3 * cfg.lens_spread)
    jitter = cfg.stage_jitter_px or 0.0
    for _ in range(2 if cfg.stage_jitter_px is None else 1):  # auto jitter depends on tile size
        margin = JITTER_BOUND * (jitter + cfg.mfov_jitter_px) * 1.05 + lens_margin + 1
        layout = mb.plan_layout(shape, cfg.beams, cfg.overlap, cfg.tile_aspect, cfg.tile_width_px, margin=margin)
        jitter = _jitter(cfg, layout.tile_shape)
    h, w = layout.tile_shape
    R = mb.lens_radius((h, w))
    k_beam = cfg.lens_distortion_px / R * (1 + cfg.lens_spread * rng.standard_normal(cfg.beams))
    # the stored warp grid covers every tile wherever the jitter puts it
    pad = 2 * JITTER_BOUND * (jitter + cfg.mfov_jitter_px) + 2 * lens_margin + 2
    pad += cfg.warp_grid_step_px
    step = float(cfg.warp_grid_step_px)
    lo = np.floor((layout.top_left.min(0) - pad) / step) * step
    hi = layout.top_left.max(0) + np.array([h, w]) + pad
    gy, gx = np.arange(lo[0], hi[0] + step, step), np.arange(lo[1], hi[1] + step, step)
    nodes = np.stack(np.meshgrid(gy, gx, indexing="ij"), -1)
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    d = np.stack(np.meshgrid(np.arange(h) - c[0], np.arange(w) - c[1], indexing="ij"), -1)
    return _Plan(layout, jitter, k_beam[layout.beam], nodes, d, (d**2).sum(-1) / R**2)


def _stack_choices(
    cfg: AcquisitionConfig, n: int, rng: np.random.Generator
) -> tuple[set[int], dict[str, set[int]], set[int]]:
    """Blank sections, sections per defect kind, re-imaged sections (exact counts)."""
    allz = np.arange(n)
    blank = _pick(rng, allz, cfg.blank_fraction) if cfg.defects else set()
    rest = np.array(sorted(set(allz.tolist()) - blank), dtype=np.int64)
    kinds: dict[str, set[int]] = {k: set() for k in ("fold", "crack", "debris")}
    if cfg.defects:
        for k in kinds:
            kinds[k] = _pick(rng, rest, getattr(cfg, f"{k}_fraction"))
    return blank, kinds, _pick(rng, allz, cfg.rescan_fraction)


def _image_scan(
    cfg: AcquisitionConfig,
    plan: _Plan,
    slice_: np.ndarray,
    gt_maps: tuple[np.ndarray, tuple[float, float], float, pd.DataFrame | None],
    sec: dict[str, Any],
    dwell: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Image one section once: (T, h, w) uint8 tiles and their true parameters."""
    warp, origin, step, sec_def = gt_maps
    T = len(plan.lens_k)
    true_tl = plan.layout.top_left + plan.jitter * _truncated_normal(rng, (T, 2))
    if cfg.mfov_jitter_px > 0:  # drawn only when asked, so other outputs keep their streams
        n_mfov = int(plan.layout.mfov.max()) + 1
        shared = cfg.mfov_jitter_px * _truncated_normal(rng, (n_mfov, 2))
        true_tl += shared[plan.layout.mfov]
    gain = 1 + cfg.tile_gain_sd * rng.standard_normal(T)
    off = cfg.tile_offset_sd * rng.standard_normal(T)
    vig = cfg.vignetting * rng.uniform(0.8, 1.2, size=T)
    sigma = cfg.noise_sigma * math.sqrt(cfg.dwell_us / dwell)
    h, w = plan.layout.tile_shape
    centre = true_tl + np.array([(h - 1) / 2, (w - 1) / 2])
    scale = 1 + plan.lens_k[:, None, None, None] * plan.rho2[None, ..., None]
    p = centre[:, None, None, :] + plan.d[None] * scale  # the lens model, every tile at once
    codes = None
    if sec_def is not None and not sec["blank"]:
        codes = dfx.codes(sec_def, p)
        p = p + dfx.displacement(sec_def, p)
    q = _bilinear(warp, origin, step, p)
    img = _raw(slice_, q, codes, sec["blank"], cfg, sec["regime_gain"], sec["regime_offset"])
    img = img * gain[:, None, None].astype(np.float32) + off[:, None, None].astype(np.float32)
    img *= (1 - vig[:, None, None] * plan.rho2[None]).astype(np.float32)
    img += np.float32(sigma) * rng.standard_normal(img.shape, dtype=np.float32)
    truth = pd.DataFrame(
        {"y_true": true_tl[:, 0], "x_true": true_tl[:, 1], "lens_k": plan.lens_k, "gain": gain,
         "offset": off, "vignetting": vig, "noise_sigma": sigma}
    )  # fmt: skip
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), truth


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
        raise InputError(f"acquisition needs a uint8 (z, y, x) volume, got {volume.dtype} {volume.shape}")
    if len(resolution_nm) != 3 or min(resolution_nm) <= 0:
        raise InputError(f"resolution_nm must be 3 positive numbers (z, y, x), got {resolution_nm}")
    res = (float(resolution_nm[0]), float(resolution_nm[1]), float(resolution_nm[2]))
    n, H, W = volume.shape
    stack_ss, beam_ss, *sec_ss = np.random.SeedSequence(int(seed)).spawn(2 + n)
    plan = _plan(cfg, (H, W), np.random.default_rng(beam_ss))
    blank, kinds, rescan = _stack_choices(cfg, n, np.random.default_rng(stack_ss))
    z_change = n if cfg.regime_change_at is None else int(round(cfg.regime_change_at * n))
    origin = (float(plan.nodes[0, 0, 0]), float(plan.nodes[0, 0, 1]))
    step = float(cfg.warp_grid_step_px)
    lay = plan.layout
    h, w = lay.tile_shape
    canvas = np.stack(np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij"), -1)

    warps, sec_rows, def_rows, frames, tiles = [], [], [], [], []  # type: ignore[var-annotated]
    masks = np.zeros((n, H, W), np.uint8)
    for z in range(n):
        rng = np.random.default_rng(sec_ss[z])
        warp, affine = _section_warp(rng, cfg, (H, W), plan.nodes)
        warps.append(warp)
        my_kinds = {k for k, zs in kinds.items() if z in zs}
        rows = dfx.sample_section_defects(
            rng, z, (H, W), my_kinds, cfg.fold_width_px, cfg.crack_width_px,
            cfg.defect_decay_px, cfg.debris_count, cfg.debris_radius_px,
        )  # fmt: skip
        def_rows += rows
        sec_def = pd.DataFrame(rows, columns=dfx.COLUMNS) if rows else None
        regime = int(z >= z_change)
        sec = dict(
            section=z,
            status="blank" if z in blank else next((k for k in kinds if k in my_kinds), "ok"),
            blank=z in blank, fold="fold" in my_kinds, crack="crack" in my_kinds,
            debris="debris" in my_kinds, n_scans=2 if z in rescan else 1, regime=regime,
            regime_gain=cfg.regime_gain if regime else 1.0,
            regime_offset=cfg.regime_offset if regime else 0.0,
            dwell_us=cfg.dwell_us * (cfg.regime_dwell_factor if regime else 1.0), **affine,
        )  # fmt: skip
        sec_rows.append(sec)
        if sec["blank"]:
            masks[z] = dfx.BLANK
        elif sec_def is not None:
            masks[z] = dfx.codes(sec_def, canvas)
        slice_ = _prepared_slice(volume, z, cfg.interpolation_order)
        for scan in range(int(sec["n_scans"])):
            dwell = float(sec["dwell_us"]) * (cfg.rescan_dwell_factor if scan else 1.0)
            imgs, truth = _image_scan(cfg, plan, slice_, (warp, origin, step, sec_def), sec, dwell, rng)
            mb_ids = zip(lay.mfov, lay.beam, strict=True)
            keys = [f"tiles/{z:05d}/{scan}/{m:03d}_{b:02d}.png" for m, b in mb_ids]
            frames.append(pd.concat([pd.DataFrame({
                "section": z, "scan": scan, "mfov": lay.mfov, "beam": lay.beam, "key": keys,
                "height": h, "width": w, "y": lay.top_left[:, 0], "x": lay.top_left[:, 1],
                "stage_y_nm": lay.top_left[:, 0] * res[1],
                "stage_x_nm": lay.top_left[:, 1] * res[2],
                "dwell_us": dwell, "regime": regime}), truth], axis=1))  # fmt: skip
            tiles.extend(imgs)

    gt_tiles = pd.concat(frames, ignore_index=True)
    gt_tiles.insert(0, "tile_id", np.arange(len(gt_tiles), dtype=np.int64))
    defects_df = pd.DataFrame(def_rows, columns=dfx.COLUMNS) if def_rows else dfx.empty_table()
    gt = AcquisitionGroundTruth(
        section_shape=(H, W), resolution_nm=res, tiles=gt_tiles, sections=pd.DataFrame(sec_rows),
        defects=defects_df.astype({"section": "int64"}).reset_index(drop=True),
        warp=np.stack(warps), warp_origin_yx=origin, warp_step=step, masks=masks,
        config=cfg.model_dump(mode="json"),
    )  # fmt: skip
    meta = {
        "format": FORMAT, "n_sections": n, "section_shape_yx": [H, W], "resolution_nm": list(res),
        "tile_shape_yx": [h, w], "beams": cfg.beams, "overlap": cfg.overlap,
        "n_tiles": len(tiles), "seed": int(seed), "config": cfg.model_dump(mode="json"),
    }  # fmt: skip
    manifest = gt_tiles[MANIFEST_COLUMNS].copy()
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
    Image.fromarray(np.ascontiguousarray(tile), mode="L").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def write_acquisition(acq: Acquisition, ws: _Writable, threads: int = 8) -> None:
    """Write tiles, ground truth, then manifest and ``tiles/acquisition.json`` (the done-marker).

    A workspace that can delete (``delete_prefix``, as ``wiremap.workspace.Workspace``)
    first loses its old marker, tiles and acquisition ground truth, so an interrupted
    rewrite is visibly incomplete (no marker) and no stale tile survives a new run.
    Tiles are encoded and written by ``threads`` threads: writes of many small files are
    latency-bound (on a local disk as on a bucket) and zlib releases the GIL.
    """
    delete = getattr(ws, "delete_prefix", None)  # optional: plain key-value sinks work too
    if delete is not None:
        for prefix in (META_KEY, "tiles/", GT_PREFIX):
            delete(prefix)
    level = int(acq.meta.get("config", {}).get("png_compress_level", 1))

    def put(item: tuple[str, np.ndarray]) -> None:
        ws.write_bytes(item[0], encode_png(item[1], level))

    items = list(zip(acq.manifest["key"], acq.tiles, strict=True))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for _ in pool.map(put, items):  # re-raises the first failed write
            pass
    gt = acq.groundtruth
    ws.write_table(GT_PREFIX + "tiles.parquet", gt.tiles)
    ws.write_table(GT_PREFIX + "sections.parquet", gt.sections)
    ws.write_table(GT_PREFIX + "defects.parquet", gt.defects)
    ws.write_bytes(
        GT_PREFIX + "warp.npz",
        _npz_bytes(warp=gt.warp, origin_yx=np.array(gt.warp_origin_yx), step=np.array(gt.warp_step)),
    )
    ws.write_bytes(GT_PREFIX + "masks.npz", _npz_bytes(masks=gt.masks))
    ws.write_table(MANIFEST_KEY, acq.manifest)
    ws.write_json(META_KEY, acq.meta)
