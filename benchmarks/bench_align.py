"""Stitching and alignment speed, accuracy and memory against their targets.

Figures (all measured in this run):
* ``stitch``: montage (match + mesh solve + intensity) and render of simulated
  multi-beam tiles of real ssTEM texture -> MPixel/s of section canvas, and the
  seam residual against the simulator's true tile maps;
* ``align``: ``align_pair`` (coarse + flow + relax) + blockwise render of a section
  warped by a known smooth warp + stretch -> MPixel/s and residual;
* ``memory``: peak RSS of aligning + rendering one large section (16k x 16k, 4k in
  quick mode) in a fresh subprocess (psutil), sections held as uint8;
* ``baseline``: one order-1 ``scipy.ndimage.map_coordinates`` pass over the same
  pixels, the machine-speed yardstick the rates are divided by.
* ``--changing`` (``run_changing``; ``--save`` writes ``results/align-changing.json``):
  alignment of *different* consecutive sections: ``wiremap synth`` stacks, with and
  without acquisition defects, scored against the simulator's truth, each aligned
  in the same run from its first section (the earlier default) and from its middle
  one (``AlignConfig()``), with ratios (plus the content floor: the aligner on the
  clean undeformed volume, whose true fields are zero, and the errors left once
  each section's best affine map of them is taken out; fold sections found by the
  aligner's fold detection vs the simulator's; and stitching of the synth
  tiles vs truth), the 30 ISBI 2012 sections (field magnitude, consecutive NCC raw
  vs aligned) and VNC sections with known warps applied independently (recovered
  vs applied).

Rates use CPU time of this process (``time.process_time``) as well as wall time:
the benchmark machine is shared, and CPU time is what the 2-core target means.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from scipy import ndimage

from wiremap.align import known
from wiremap.align.field import Field, triangle_jacobians
from wiremap.align.montage import estimate_vignetting, montage, neighbour_pairs, render_montage
from wiremap.align.stack import AlignConfig, align_pair
from wiremap.align.warp import warp_image

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "isbi2012_align_crops.npz"
SHARED = Path("/work/shared/data")  # real stacks (see its README.md); only ``--changing`` reads them


def _texture(n: int) -> np.ndarray:
    """An n x n uint8 image of real ssTEM texture (a crop mirrored out to size)."""
    src = np.load(DATA)["tile_source"]
    reps = -(-n // src.shape[0]) + 1
    return np.pad(src, ((0, reps * src.shape[0]), (0, reps * src.shape[1])), mode="symmetric")[:n, :n]


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def baseline_rate(n: int = 2048) -> float:
    """MPixel/s of one bilinear remap (scipy) of an n x n uint8 image, CPU time."""
    img = _texture(n)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    yy += 0.3
    xx -= 0.7
    _, _, cpu = _timed(lambda: ndimage.map_coordinates(img, [yy, xx], order=1,
                                                       output=np.float32))
    return n * n / 1e6 / cpu


def bench_stitch(quick: bool) -> dict:
    from wiremap.synth.acquisition import (
        AcquisitionConfig,
        section_to_tile,
        simulate_acquisition,
        true_tile_to_section,
    )

    n = 768 if quick else 1536
    base = _texture(n)
    vol = np.stack([base, base[::-1], base[:, ::-1], base.T])
    cfg = AcquisitionConfig(beams=19, regime_change_at=None, rescan_fraction=0.0)
    acq = simulate_acquisition(vol, (50, 4, 4), cfg, seed=1)
    gt, man = acq.groundtruth, acq.manifest
    vig = estimate_vignetting(acq.tiles)
    canvas = tuple(gt.section_shape)
    wall = cpu = 0.0
    errs = []
    for sec in range(vol.shape[0]):
        idx = np.nonzero(man["section"].to_numpy() == sec)[0]
        tiles = [acq.tiles[i] for i in idx]
        nom = man.loc[idx, ["y", "x"]].to_numpy()
        (model, _rep), w1, c1 = _timed(lambda: montage(tiles, nom, vignetting=vig))  # noqa: B023
        _, w2, c2 = _timed(lambda: render_montage(tiles, model, canvas))  # noqa: B023
        wall += w1 + w2
        cpu += c1 + c2
        for a, b in neighbour_pairs(model.nominal, model.tile_shapes, 6):
            h, w = model.tile_shapes[a]
            yy, xx = np.mgrid[0:h:3, 0:w:3]
            q = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
            qb = section_to_tile(gt, sec, int(idx[b]),
                                 true_tile_to_section(gt, sec, int(idx[a]), q))
            hb, wb = model.tile_shapes[b]
            ins = (qb[:, 0] >= 0) & (qb[:, 0] <= hb - 1) & (qb[:, 1] >= 0) & (qb[:, 1] <= wb - 1)
            if ins.any():
                d = model.tile_to_section(a, q[ins]) - model.tile_to_section(b, qb[ins])
                errs.append(np.linalg.norm(d, axis=1))
    e = np.concatenate(errs)
    mpx = vol.shape[0] * canvas[0] * canvas[1] / 1e6
    return {"sections": int(vol.shape[0]), "canvas_yx": list(canvas),
            "tiles_per_section": int(len(acq.tiles) // vol.shape[0]),
            "tile_yx": list(acq.tiles[0].shape),
            "mpx_per_s_cpu": mpx / cpu, "mpx_per_s_wall": mpx / wall,
            "seam_residual_mean_px": float(e.mean()),
            "seam_residual_p95_px": float(np.percentile(e, 95))}


def bench_align(quick: bool) -> dict:
    n = 1024 if quick else 2048
    src = _texture(n)
    content = known.smooth_warp((n, n), amplitude=3.0, sigma=n / 8, stretch=(0.015, -0.01),
                                shift=(6.0, -9.0), rotation_deg=0.5, seed=2)
    moving = known.distort(src, content, noise=5.0)
    pair, w1, c1 = _timed(lambda: align_pair(src, moving, AlignConfig()))
    _, w2, c2 = _timed(lambda: warp_image(moving, pair.field, (n, n), dtype=np.uint8))
    err = known.pull_residual(pair.field, np.zeros_like(content), content)
    mpx = n * n / 1e6
    return {"size": n, "mpx_per_s_cpu": mpx / (c1 + c2), "mpx_per_s_wall": mpx / (w1 + w2),
            "render_share": (c2 / (c1 + c2)), "residual_mean_px": float(err.mean()),
            "residual_p95_px": float(np.percentile(err, 95)),
            "min_jacobian": float(triangle_jacobians(pair.field).min())}


_MEMORY_CHILD = r"""
import json, sys, time, threading
import numpy as np, psutil
sys.path.insert(0, {root!r})
from benchmarks.bench_align import _texture, large_section_pair
from wiremap.align.stack import AlignConfig, align_pair
from wiremap.align.warp import warp_image
n = {n}
proc = psutil.Process()
peak = [0]
stop = threading.Event()
def watch():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
fixed, moving = large_section_pair(n)
before = proc.memory_info().rss
t0, c0 = time.perf_counter(), time.process_time()
pair = align_pair(fixed, moving, AlignConfig())
out = warp_image(moving, pair.field, (n, n), dtype=np.uint8)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
stop.set()
peak[0] = max(peak[0], proc.memory_info().rss)
print(json.dumps({{"size": n, "peak_rss_gb": peak[0] / 2**30, "inputs_rss_gb": before / 2**30,
                  "wall_s": wall, "cpu_s": cpu, "matches": pair.n_matches}}))
"""


def large_section_pair(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two n x n uint8 sections: real texture and a copy under a known smooth warp,
    rendered blockwise (no dense float copy)."""
    fixed = _texture(n)
    stride = 256
    f = Field.from_affine(np.array([[1.004, 0.002, 5.0], [-0.002, 0.997, -7.0]]), (n, n), stride)
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.standard_normal(f.data.shape), (0, 2, 2))
    smooth *= 2.0 / max(np.abs(smooth).max(), 1e-9)
    f = f.with_data(f.data + smooth.astype(np.float32))
    moving = warp_image(fixed, f, (n, n), dtype=np.uint8, order=1)
    return fixed, moving


def bench_memory(quick: bool) -> dict:
    n = 4096 if quick else 16384
    root = str(Path(__file__).resolve().parent.parent)
    code = _MEMORY_CHILD.format(root=root, n=n)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=3600, check=False)
    if res.returncode != 0:
        return {"size": n, "error": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


_FEABAS_CHILD = r"""
import json, sys, time
import numpy as np
from feabas.stitcher import Stitcher
from feabas import constant as const
job = json.load(open(sys.argv[1]))
wall = cpu = 0.0
errs = []
for sec in job["sections"]:
    d = np.load(sec["npz"])
    nom, shapes = d["nom"], d["shapes"]
    bb = np.stack([nom[:, 1], nom[:, 0], nom[:, 1] + shapes[:, 1], nom[:, 0] + shapes[:, 0]], 1)
    w0, c0 = time.perf_counter(), time.process_time()
    st = Stitcher(sec["paths"], bb)
    st.dispatch_matchers(num_workers=1, min_overlap_width=6)
    st.initialize_meshes(mesh_sizes=[75, 150, 300])
    st.optimize_translation(target_gear=const.MESH_GEAR_FIXED)
    st.optimize_elastic(target_gear=const.MESH_GEAR_MOVING)
    st.normalize_coordinates()
    wall += time.perf_counter() - w0
    cpu += time.process_time() - c0
    def to_sec(t, q):  # tile pixel (y, x) -> stitched (y, x); FEABAS works in (x, y)
        m = st.meshes[t]
        tid, b = m.cart2bary(q[:, ::-1].copy(), const.MESH_GEAR_INITIAL)
        return m.bary2cart(tid, b, const.MESH_GEAR_MOVING, offsetting=True)[:, ::-1]
    a, b, qa, qb = d["a"], d["b"], d["qa"], d["qb"]
    sa, sb = np.zeros((len(a), 2)), np.zeros((len(a), 2))
    for t in range(len(sec["paths"])):
        if (a == t).any():
            sa[a == t] = to_sec(t, qa[a == t])
        if (b == t).any():
            sb[b == t] = to_sec(t, qb[b == t])
    errs.append(np.linalg.norm(sa - sb, axis=1))
e = np.concatenate(errs)
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "seam_residual_mean_px": float(np.nanmean(e)),
                  "seam_residual_p95_px": float(np.nanpercentile(e, 95))}))
"""


def bench_feabas(quick: bool) -> dict:
    """Side by side with FEABAS's ``Stitcher`` (default settings) on the same tiles.

    FEABAS's dependencies clash with ours, so it runs in its own interpreter, named by
    the environment variable ``WIREMAP_FEABAS_PYTHON`` (a venv with ``pip install
    feabas``); its working directory gets the ``configs/general_configs.yaml`` it needs.
    """
    import os
    import tempfile

    from PIL import Image

    from wiremap.synth.acquisition import (
        AcquisitionConfig,
        section_to_tile,
        simulate_acquisition,
        true_tile_to_section,
    )

    exe = os.environ.get("WIREMAP_FEABAS_PYTHON")
    if not exe:
        return {"skipped": "set WIREMAP_FEABAS_PYTHON to a Python with feabas installed"}
    n = 768 if quick else 1536
    base = _texture(n)
    vol = np.stack([base, base[::-1], base[:, ::-1], base.T])
    acq = simulate_acquisition(vol, (50, 4, 4), AcquisitionConfig(
        beams=19, regime_change_at=None, rescan_fraction=0.0), seed=1)
    gt, man = acq.groundtruth, acq.manifest
    vig = estimate_vignetting(acq.tiles)
    tmp = Path(tempfile.mkdtemp(prefix="wiremap-feabas-"))
    (tmp / "configs").mkdir()
    (tmp / "configs" / "general_configs.yaml").write_text(
        "parallel_framework: process\ncpu_budget: 2\nfull_resolution: 4\n")
    job, ours_wall, ours_cpu, ours_err = {"sections": []}, 0.0, 0.0, []
    for sec in range(vol.shape[0]):
        idx = np.nonzero(man["section"].to_numpy() == sec)[0]
        tiles = [acq.tiles[i] for i in idx]
        nom = man.loc[idx, ["y", "x"]].to_numpy()
        shapes = [t.shape for t in tiles]
        paths = []
        for k, t in enumerate(tiles):
            p = tmp / f"s{sec}_t{k:03d}.png"
            Image.fromarray(t).save(p)
            paths.append(str(p))
        qa_l, qb_l, a_l, b_l = [], [], [], []
        for a, b in neighbour_pairs(nom, shapes, 6):
            h, w = shapes[a]
            yy, xx = np.mgrid[0:h:3, 0:w:3]
            q = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
            qb = section_to_tile(gt, sec, int(idx[b]), true_tile_to_section(gt, sec, int(idx[a]), q))
            hb, wb = shapes[b]
            ins = (qb[:, 0] >= 0) & (qb[:, 0] <= hb - 1) & (qb[:, 1] >= 0) & (qb[:, 1] <= wb - 1)
            qa_l.append(q[ins])
            qb_l.append(qb[ins])
            a_l += [a] * int(ins.sum())
            b_l += [b] * int(ins.sum())
        qa, qb, av, bv = np.concatenate(qa_l), np.concatenate(qb_l), np.array(a_l), np.array(b_l)
        np.savez(tmp / f"s{sec}.npz", nom=nom, shapes=np.array(shapes), a=av, b=bv, qa=qa, qb=qb)
        job["sections"].append({"npz": str(tmp / f"s{sec}.npz"), "paths": paths})
        (model, _r), w1, c1 = _timed(lambda: montage(tiles, nom, vignetting=vig))  # noqa: B023
        ours_wall += w1
        ours_cpu += c1
        sa, sb = np.zeros_like(qa), np.zeros_like(qb)
        for t in np.unique(av):
            sa[av == t] = model.tile_to_section(int(t), qa[av == t])
        for t in np.unique(bv):
            sb[bv == t] = model.tile_to_section(int(t), qb[bv == t])
        ours_err.append(np.linalg.norm(sa - sb, axis=1))
    (tmp / "job.json").write_text(json.dumps(job))
    res = subprocess.run([exe, "-c", _FEABAS_CHILD, str(tmp / "job.json")], cwd=tmp,
                         capture_output=True, text=True, timeout=3600, check=False)
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    fe = json.loads(res.stdout.strip().splitlines()[-1])
    e = np.concatenate(ours_err)
    ours = {"wall_s": ours_wall, "cpu_s": ours_cpu, "seam_residual_mean_px": float(e.mean()),
            "seam_residual_p95_px": float(np.percentile(e, 95))}
    return {"what": "match + solve of the same simulated tiles (no rendering)",
            "feabas": fe, "wiremap": ours,
            "ratios_wiremap_over_feabas": {
                "wall": ours["wall_s"] / fe["wall_s"],
                "seam_mean": ours["seam_residual_mean_px"] / fe["seam_residual_mean_px"],
                "seam_p95": ours["seam_residual_p95_px"] / fe["seam_residual_p95_px"]}}


def _seam_residual(gt, model, idx: np.ndarray, sec: int) -> np.ndarray:
    """Per-point distance (px) between where the stitched model puts the same tissue seen by
    two overlapping tiles (true maps say which points those are)."""
    from wiremap.synth.acquisition import section_to_tile, true_tile_to_section

    errs = []
    for a, b in neighbour_pairs(model.nominal, model.tile_shapes, 6):
        h, w = model.tile_shapes[a]
        yy, xx = np.mgrid[0:h:3, 0:w:3]
        q = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
        qb = section_to_tile(gt, sec, int(idx[b]), true_tile_to_section(gt, sec, int(idx[a]), q))
        hb, wb = model.tile_shapes[b]
        ins = (qb[:, 0] >= 0) & (qb[:, 0] <= hb - 1) & (qb[:, 1] >= 0) & (qb[:, 1] <= wb - 1)
        if ins.any():
            d = model.tile_to_section(a, q[ins]) - model.tile_to_section(b, qb[ins])
            errs.append(np.linalg.norm(d, axis=1))
    return np.concatenate(errs) if errs else np.zeros(0)


def _synth_stitch_truth(ws) -> dict:
    """Stitching of ``wiremap synth`` tiles against truth: seam residual, and each tile's
    placement (model position of its centre) vs its true position, after removing the
    section's common offset (the montage frame is anchored to nominal positions)."""
    from wiremap.synth.acquisition import load_groundtruth, read_manifest, read_tile, true_tile_to_section

    gt, man = load_groundtruth(ws), read_manifest(ws)
    last = man.groupby("section")["scan"].transform("max")
    man = man[man["scan"] == last]
    vig = estimate_vignetting([read_tile(ws, k) for k in man["key"].iloc[::7]])
    seams, place = [], []
    for sec in sorted(man["section"].unique()):
        rows = man[man["section"] == sec]
        if bool(gt.sections.set_index("section").loc[sec, "blank"]):
            continue
        tiles = [read_tile(ws, k) for k in rows["key"]]
        model, rep = montage(tiles, rows[["y", "x"]].to_numpy(), vignetting=vig)
        idx = rows["tile_id"].to_numpy()
        seams.append(_seam_residual(gt, model, idx, int(sec)))
        d = []
        for t in range(len(tiles)):
            if t in rep.unplaced:
                continue
            c = (np.array(tiles[t].shape, float) - 1) / 2
            d.append(model.tile_to_section(t, c[None])[0]
                     - true_tile_to_section(gt, int(sec), int(idx[t]), c[None])[0])
        d = np.array(d)
        place.append(np.linalg.norm(d - d.mean(axis=0), axis=1))
    e, p = np.concatenate(seams), np.concatenate(place)
    return {"seam_residual_mean_px": float(e.mean()), "seam_residual_p95_px": float(np.percentile(e, 95)),
            "tile_placement_mean_px": float(p.mean()), "tile_placement_p95_px": float(np.percentile(p, 95))}


def stitched_synth_stacks(quick: bool, root: Path):
    """``(name, workspace)`` of each benchmark stack: ``wiremap synth`` 12 x 512 x 512, seeds 4 / 7 / 11 (4 when
    quick), with and without defects, stitched into ``montage``."""
    from wiremap.align.stage import stitch_stage
    from wiremap.synth.stage import SynthConfig, run_synth
    from wiremap.workspace import Workspace

    for seed in ([4] if quick else [4, 7, 11]):
        for defects in (True, False):
            name = f"seed{seed}" + ("" if defects else "_no_defects")
            ws = Workspace.create(str(root / name))
            run_synth(ws, SynthConfig(shape_zyx=(12, 512, 512), seed=seed, defects=defects, pyramid_scales=1))
            stitch_stage(ws)
            yield name, ws


def bench_synth_stacks(quick: bool, root: Path) -> dict:
    """``wiremap synth`` -> stitch -> align -> evaluate, per seed, with and without acquisition
    defects; each stack aligned twice in this run: from its first section (the earlier
    default, ``before``) and from its middle section (``AlignConfig()``), with ratios.
    Plus the content floor: the same aligner on the clean, undeformed synthetic volume,
    whose true fields are zero; and each run's error split into what one affine map per
    section explains and the rest (``score.error_decomposition``)."""
    from wiremap.align.score import alignment_errors, error_decomposition, score_alignment
    from wiremap.align.stack import align_stack
    from wiremap.align.stage import align_stage
    from wiremap.synth.acquisition import load_groundtruth
    from wiremap.volume import Layer

    def scored(ws, cfg: AlignConfig) -> dict:
        t0 = time.perf_counter()
        align_stage(ws, executor="serial", n_overlays=0, overwrite=True, cfg=cfg)
        dt = time.perf_counter() - t0
        overall, per = score_alignment(ws)
        qc = ws.read_table("align_qc")
        return {"residual_mean_px": overall.mean_px, "residual_p95_px": overall.p95_px,
                "residual_max_px": overall.max_px,
                "reference": int(qc.loc[qc["status"] == "reference", "z"].iloc[0]),
                "per_section_mean_px": {int(z): round(float(v), 2)
                                        for z, v in zip(per["section"], per["mean_px"], strict=True)},
                "flags": [f for f in qc["flags"] if f],
                "min_jacobian": float(qc["min_jacobian"].min()), "align_s": dt,
                "mpx_per_s_wall": len(qc) * float(np.prod(ws_shape(ws))) / 1e6 / dt,
                "decomposition": error_decomposition(*alignment_errors(ws))}

    def ws_shape(ws) -> tuple[int, int]:
        return tuple(Layer(ws, "montage").info.shape_zyx[1:])

    out = {}
    for name, ws in stitched_synth_stacks(quick, root):
        before = scored(ws, AlignConfig(reference="first"))
        after = scored(ws, AlignConfig())
        clean = Layer(ws, "groundtruth/image").read()
        floor = [float(np.linalg.norm(r.field.data, axis=0)[2:-2, 2:-2].mean())
                 for r in align_stack(clean, AlignConfig(reference="first"))
                 if r.field is not None]
        st = load_groundtruth(ws).sections
        qc = ws.read_table("align_qc").set_index("z")
        flagged = {int(z) for z in qc.index if float(qc.loc[z, "fold_fraction"]) > 0}
        folds = {int(z) for z in st.loc[st["fold"].astype(bool), "section"]}
        out[name] = {
            "statuses": st["status"].tolist(),
            "folds": {"true": sorted(folds), "detected": sorted(flagged & folds),
                      "false": sorted(flagged - folds)},
            "before_first_reference": before,
            "after_middle_reference": after,
            "ratios_after_over_before": {
                k: after[f"residual_{k}_px"] / before[f"residual_{k}_px"]
                for k in ("mean", "p95", "max")},
            "clean_volume_field_mean_px": float(np.mean(floor[1:])),
            "clean_volume_last_section_px": floor[-1],
            "stitch_truth": None if name.endswith("_no_defects") else _synth_stitch_truth(ws)}
    return out


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    x = ndimage.gaussian_filter(x.astype(float), 2)[40:-40, 40:-40]
    y = ndimage.gaussian_filter(y.astype(float), 2)[40:-40, 40:-40]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def bench_isbi(quick: bool) -> dict:
    """The 30 ISBI 2012 sections as given: field magnitude and consecutive-section NCC."""
    from wiremap.align.stack import align_stack

    vol = np.load(SHARED / "isbi2012_membrane.npz")["image"][: 10 if quick else 30]
    t0 = time.perf_counter()
    res = align_stack(vol, AlignConfig())
    dt = time.perf_counter() - t0
    al = np.stack([warp_image(vol[r.z], r.field, vol.shape[1:]) for r in res])
    mags = [float(np.linalg.norm(r.field.data, axis=0)[2:-2, 2:-2].mean()) for r in res]
    pair = [float(np.linalg.norm((res[z].field.data - res[z - 1].field.data), axis=0).mean())
            for z in range(1, len(res))]
    return {"sections": len(vol), "field_mean_px": float(np.mean(mags[1:])),
            "field_mean_px_by_section": [round(m, 1) for m in mags],
            "consecutive_field_change_mean_px": float(np.mean(pair)),
            "consecutive_ncc_raw": float(np.mean([_ncc(vol[z - 1], vol[z]) for z in range(1, len(vol))])),
            "consecutive_ncc_aligned": float(np.mean([_ncc(al[z - 1], al[z]) for z in range(1, len(al))])),
            "flags": sum(bool(r.flags) for r in res), "align_s": dt}


def bench_vnc(quick: bool) -> dict:
    """VNC sections with known elastic warps + shifts + rotations applied independently:
    recovered vs applied, measured against the aligner's own result on the unwarped
    sections (isolates recovery from the sections' own content change) and against
    the identity (what the raw stack's registration says)."""
    from wiremap.align.stack import align_stack

    n, size = (6, 512) if quick else (10, 1024)
    vol = np.load(SHARED / "vnc_sstem_train.npz")["raw"][:n, :size, :size]
    h, w = vol.shape[1:]
    cont = [known.smooth_warp((h, w), amplitude=4.0, sigma=256.0, seed=100 + z,
                              stretch=(0.01 * np.sin(z), -0.01 * np.cos(z)),
                              shift=(3 * np.sin(2 * z), 4 * np.cos(3 * z)),
                              rotation_deg=0.5 * np.sin(z)) for z in range(n)]
    warped = [known.distort(vol[z], cont[z], noise=3, seed=z) for z in range(n)]
    u = align_stack(vol, AlignConfig())
    t0 = time.perf_counter()
    wr = align_stack(warped, AlignConfig())
    dt = time.perf_counter() - t0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    inner = (slice(32, h - 32), slice(32, w - 32))
    ref = next(r.z for r in wr if r.status == "reference")
    assert ref == next(r.z for r in u if r.status == "reference")
    sy, sx = yy + cont[ref][0], xx + cont[ref][1]
    own, ident, per = [], [], []
    for z in (z for z in range(n) if z != ref):
        du, dw = u[z].field.dense((h, w)), wr[z].field.dense((h, w))
        ty = sy + ndimage.map_coordinates(du[0], [sy, sx], order=1, mode="nearest")
        tx = sx + ndimage.map_coordinates(du[1], [sy, sx], order=1, mode="nearest")
        qy, qx = yy + dw[0], xx + dw[1]
        my = qy + ndimage.map_coordinates(cont[z][0], [qy, qx], order=1, mode="nearest")
        mx = qx + ndimage.map_coordinates(cont[z][1], [qy, qx], order=1, mode="nearest")
        own.append(np.hypot(my - ty, mx - tx)[inner])
        ident.append(np.hypot(my - sy, mx - sx)[inner])
        per.append(round(float(own[-1].mean()), 2))
    a, b = np.concatenate(own), np.concatenate(ident)
    return {"sections": n, "size": size, "recovery_vs_own_mean_px": float(a.mean()),
            "recovery_vs_own_p95_px": float(np.percentile(a, 95)),
            "recovery_vs_own_by_section": per,
            "vs_identity_mean_px": float(b.mean()), "vs_identity_p95_px": float(np.percentile(b, 95)),
            "unwarped_field_mean_px": float(np.mean([np.linalg.norm(r.field.data, axis=0).mean()
                                                     for r in u if r.z != ref])),
            "reference": int(ref),
            "align_s": dt}


def run_changing(quick: bool) -> dict:
    """Alignment of changing sections: synthetic stacks scored against truth, real
    ISBI and VNC stacks."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        synth = bench_synth_stacks(quick, Path(tmp))
    runs = [v for v in synth.values()]
    summary = {f"{k}_{w}": float(np.mean([r[k][f"residual_{w}_px"] for r in runs]))
               for k in ("before_first_reference", "after_middle_reference")
               for w in ("mean", "p95", "max")}
    summary |= {f"after_middle_reference_{k}": float(np.mean([r["after_middle_reference"]["decomposition"][k]
                                                              for r in runs]))
                for k in runs[0]["after_middle_reference"]["decomposition"] if k != "mean_px"}
    return {"synth": synth, "synth_summary": summary, "isbi": bench_isbi(quick),
            "vnc": bench_vnc(quick), "targets": {"align_mean_px": 0.25, "align_p95_px": 0.5}}


def run(quick: bool) -> dict:
    base = baseline_rate(1024 if quick else 2048)
    stitch = bench_stitch(quick)
    align = bench_align(quick)
    memory = bench_memory(quick)
    feabas = bench_feabas(quick)
    return {
        "feabas_comparison": feabas,
        "baseline_remap_mpx_per_s_cpu": base,
        "stitch": stitch,
        "align": align,
        "memory": memory,
        "ratios": {"stitch_vs_remap": stitch["mpx_per_s_cpu"] / base,
                   "align_vs_remap": align["mpx_per_s_cpu"] / base},
        "targets": {"stitch_mpx_per_s": 5.0, "align_mpx_per_s": 1.0, "peak_memory_gb_16k": 4.0,
                    "seam_mean_px": 0.5, "seam_p95_px": 1.0, "align_mean_px": 0.25,
                    "align_p95_px": 0.5},
        "cpu_count": psutil.cpu_count(),
    }


if __name__ == "__main__":
    if "--changing" in sys.argv:
        figures = run_changing("--quick" in sys.argv)
        text = json.dumps(figures, indent=2)
        if "--save" in sys.argv:  # benchmarks/results/align-changing[-quick].json
            name = "align-changing" + ("-quick" if "--quick" in sys.argv else "")
            (Path(__file__).resolve().parent / "results" / f"{name}.json").write_text(text)
        print(text)
    else:
        print(json.dumps(run("--quick" in sys.argv), indent=2))
