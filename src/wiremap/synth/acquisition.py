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
  - tile frame:    pixel coordinates inside one tile image, ``(0, 0)`` = centre of its top-left pixel;
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
    q = G(p) + sum_k D_k(p)
  G: bilinear interpolation of the warp grid ``warp[s]`` (shape ``(2, gh, gw)``,
  float64, ``warp[s, :, i, j]`` = volume ``(y, x)`` of the section point
  ``(oy + i * step, ox + j * step)``); points beyond the grid use the nearest edge
  cell linearly extrapolated.  G contains the section's affine part
  (stretch/compression ``stretch_y``, ``stretch_x``: the section is the tissue scaled
  by these factors, about the canvas centre; rotation; shift) and a smooth elastic
  warp, both sampled exactly at the nodes, so G *is* the true map (no approximation).
  D_k: one term per fold or crack ``k`` of the section (straight line through
  ``(y, x)`` with unit normal ``(ny, nx)``), with ``d = (p - (y, x)) . (ny, nx)``:
    D_k(p) = sign(d) * jump / 2 * exp(-|d| / decay) * (ny, nx),   sign(0) = +1
  A fold (``jump > 0``) hides ``jump`` px of tissue under a dark band of half width
  ``width / 2`` around the line; a crack (``jump < 0``) opens a bright tissue-free gap
  of ``width`` px whose two edges map to the same tissue line.

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
