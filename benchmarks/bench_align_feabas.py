"""Section alignment side by side with FEABAS on the same synthetic stacks, scored the same way.

The stacks are those of ``bench_align.bench_synth_stacks``: ``wiremap synth`` 12 x 512 x
512 (seed 4; 7 and 11 unless ``--quick``), with and without acquisition defects, stitched
by ``stitch_stage`` into the ``montage`` layer.  Both aligners get that layer:

* wiremap: ``align_stage(ws, executor="serial", n_overlays=0, overwrite=True,
  cfg=AlignConfig())`` (solve + render), and ``align_stack`` alone (solve only) for a
  like-for-like time; and, for scale, the montage as it stands (identity fields);
* FEABAS 3.0.6 (PyPI ``feabas``), its documented section-alignment workflow
  (``scripts/align_main.py``): one triangle mesh per section (``Mesh.from_bbox``, the
  equilateral mesh ``mesh_from_mask`` makes of a whole-section mask), matches of each
  section with the next by ``match_section_from_initial_matches`` (FFT block matching
  iterated with mesh relaxation), then ``Aligner.run`` (the ``SLM`` stack relaxation,
  sliding window from the middle).  No initial matches, as ``align_main`` does when the
  thumbnail step left none: FEABAS's thumbnails (mip 6) of a 512-px section are 8 px wide.
  Three settings, each run on every stack: ``defaults``, FEABAS's
  ``default_alignment_configs.yaml`` as it stands (matching at mip 2, spacings 400 / 100;
  only the mesh is 512 px, the section's size, since ``Mesh.from_bbox`` cannot mesh a
  512-px section at the default 600), which on 512-px sections leaves one match block per
  pair; ``sized_to_section`` (``_sized_config``); and ``defaults_compare_distance_2``, the
  defaults also matching each section with the one after next (FEABAS's thumbnail default,
  whose z+2 matches are RANSAC-filtered feature matches there, plain block matches here).
  1 worker, ``cpu_budget: 1``.  Blank sections (the simulator's truth) are left out of its
  section list, as a FEABAS user lists them out; no material masks (folds unmasked),
  FEABAS's default when no mask folder exists.  Timed: meshing + matching + optimisation
  (its solve; images are written before).

Scoring is ``wiremap.align.score.score_alignment`` itself for both: FEABAS's aligned meshes
(montage xy -> aligned xy, piecewise affine) are inverted exactly (``cart2bary`` in the
aligned gear, ``bary2cart`` in the montage gear) at every aligned pixel, stored as the
workspace's ``align/fields`` (the "output pixel -> montage pixel" maps ``AlignedFrame`` reads)
and scored against the simulator's truth with the same defect masks, margin and reference
section (wiremap's, the middle one, which FEABAS's ``start_loc: M`` also starts from).  One
common translation of the whole FEABAS stack (its reference section's mean displacement)
puts its aligned frame over the montage canvas, as FEABAS's own ``offset_bbox`` rendering
step does; it changes no section's alignment to another.  Aligned pixels outside a section's
FEABAS mesh take the nearest mesh pixel's map; a section FEABAS leaves unaligned (no matches
linking it to the rest of the stack: no output transform) is scored as it stands in the
montage (identity), listed under ``unaligned``, and both aligners are also scored on the
sections FEABAS did align (``on_sections_feabas_aligned``).  FEABAS's solve is not exactly
repeatable run to run (residuals vary by ~0.01 px).

FEABAS's pinned dependencies clash with wiremap's: it runs in its own interpreter, named by
``WIREMAP_FEABAS_PYTHON`` (a venv with ``pip install feabas``); unset -> skipped.

Run: ``python -m benchmarks.bench_align_feabas [--quick] [--save]`` (``--save`` writes
``benchmarks/results/align-feabas.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# Run by the FEABAS interpreter in a temp dir: argv[1] = job.json (sections as .npy, settings);
# writes the aligned-pixel -> montage-pixel maps as <out>/map_<z>.npy (2, h, w: dy, dx) and
# prints one JSON line (times, match counts).
_FEABAS_ALIGN_CHILD = r"""
import json, os, sys, time
import numpy as np
from scipy import ndimage
job = json.load(open(sys.argv[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")
from PIL import Image
from feabas import dal
from feabas.mesh import Mesh
from feabas.aligner import match_section_from_initial_matches, Aligner
import feabas.constant as const

root, res, conf = job["root"], float(job["resolution_nm"]), job["config"]
zs, h, w = job["sections"], job["height"], job["width"]
names = [f"s{z:03d}" for z in zs]
mesh_dir, match_dir, tform_dir = (os.path.join(root, "align", d) for d in ("mesh", "matches", "tform"))
for d in (mesh_dir, match_dir, tform_dir):
    os.makedirs(d, exist_ok=True)
mip = conf["matching"]["working_mip_level"]
f = 2 ** mip
paths = []
for z, name in zip(zs, names):
    img = np.load(os.path.join(root, f"montage_{z}.npy"))
    if f > 1:  # FEABAS's mipmaps: 2 x 2 means per level (mipmap.py, INTER_AREA)
        img = img[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f).mean((1, 3)).round().astype(np.uint8)
    p = os.path.join(root, "montage", f"mip{mip}", name + ".png")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    Image.fromarray(img).save(p)
    paths.append(p)
w0, c0 = time.perf_counter(), time.process_time()
# meshing: one equilateral mesh over the whole section (no material masks)
for name in names:
    M = Mesh.from_bbox([0, 0, w, h], resolution=res, mesh_size=conf["meshing"]["mesh_size"])
    M.save_to_h5(os.path.join(mesh_dir, name + ".h5"), save_material=True, override_dict={"name": name})
t_mesh = time.perf_counter() - w0
# matching: each section with the next compare_distance ones of the list (thumbnail default 2),
# no initial (thumbnail) matches
n_matches = {}
for a in range(len(names) - 1):
    for b in range(a + 1, min(a + 1 + conf["compare_distance"], len(names))):
        mname = os.path.join(root, "align", "thumb", f"{names[a]}__to__{names[b]}.h5")
        loaders = [dal.MosaicLoader([paths[k]], bboxes=[[0, 0, w // f, h // f]], resolution=res * f)
                   for k in (a, b)]
        n = match_section_from_initial_matches(mname, mesh_dir, loaders, match_dir, conf,
                                               ignore_initial_match=True)
        n_matches[names[a] + "__to__" + names[b]] = int(n or 0)
t_match = time.perf_counter() - w0 - t_mesh
# optimisation: the stack relaxation (Aligner.run as align_main's optimize_main calls it)
opt = conf["optimization"]
algnr = Aligner(mesh_dir, tform_dir, match_dir, section_list=names, mip_level=0,
                **{k: v for k, v in opt["chunk_settings"].items() if k not in ("chunked_to_depth", "pad_junctional")})
algnr.run(num_workers=1, chunked_to_depth=opt["chunk_settings"]["chunked_to_depth"],
          stack_config=opt["stack_config"], slide_window=opt["slide_window"],
          pad_junctional=opt["chunk_settings"]["pad_junctional"])
wall = time.perf_counter() - w0
cpu = time.process_time() - c0
# aligned pixel -> montage pixel, exact inverse of each piecewise-affine mesh; a section
# FEABAS left unaligned (no matches linking it to the rest) keeps its initial mesh (identity)
meshes, unaligned = {}, []
for z, name in zip(zs, names):
    t = os.path.join(tform_dir, name + ".h5")
    if not os.path.exists(t):
        unaligned.append(z)
        t = os.path.join(mesh_dir, name + ".h5")
    M = Mesh.from_h5(t)
    M.change_resolution(res)
    meshes[z] = M
def mean_shift(M):
    return (M.vertices_w_offset(gear=const.MESH_GEAR_MOVING)
            - M.vertices_w_offset(gear=const.MESH_GEAR_INITIAL)).mean(0)
aligned = [z for z in zs if z not in unaligned]
if job["reference"] in aligned:  # common (x, y) translation of the whole stack
    shift = mean_shift(meshes[job["reference"]])
else:
    shift = np.mean([mean_shift(meshes[z]) for z in aligned], 0) if aligned else np.zeros(2)
yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
pix = np.stack([xx.ravel(), yy.ravel()], 1)
outside, roundtrip = {}, 0.0
for z, M in meshes.items():
    sh = np.zeros(2) if z in unaligned else shift
    tid, B = M.cart2bary(pix + sh, const.MESH_GEAR_MOVING)
    ok = tid >= 0
    q = np.full((len(pix), 2), np.nan)
    q[ok] = M.bary2cart(tid[ok], B[ok], const.MESH_GEAR_INITIAL, offsetting=True)
    qy, qx = q[:, 1].reshape(h, w), q[:, 0].reshape(h, w)
    miss = ~ok.reshape(h, w)
    if miss.any():  # outside the aligned mesh: nearest covered pixel's map
        idx = ndimage.distance_transform_edt(miss, return_distances=False, return_indices=True)
        qy, qx = qy[tuple(idx)], qx[tuple(idx)]
    outside[str(z)] = float(miss.mean())
    # check of the inversion: covered pixels' montage points mapped forward land on the pixel
    qs = q[ok][:: 97]
    t2, B2 = M.cart2bary(qs, const.MESH_GEAR_INITIAL)
    k = t2 >= 0
    fwd = M.bary2cart(t2[k], B2[k], const.MESH_GEAR_MOVING, offsetting=True) - sh
    roundtrip = max(roundtrip, float(np.abs(fwd - pix[ok][:: 97][k]).max()) if k.any() else 0.0)
    np.save(os.path.join(root, f"map_{z}.npy"), np.stack([qy - yy, qx - xx]).astype(np.float32))
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "mesh_s": t_mesh, "match_s": t_match,
                  "optimize_s": wall - t_mesh - t_match, "matches": n_matches,
                  "outside_mesh_fraction": outside, "unaligned": unaligned,
                  "inverse_roundtrip_max_px": roundtrip, "common_shift_xy": [float(s) for s in shift]}))
"""

# FEABAS's default_alignment_configs.yaml (repository, v3.0.x), 1 worker.
FEABAS_DEFAULTS = {
    # default_thumbnail_configs.yaml has 2 (z+1 and z+2), but there the z+2 pairs come from feature
    # matching with RANSAC filtering of thumbnails, which 512-px sections do not allow (see
    # ``defaults_compare_distance_2`` for what unfiltered z+2 block matches do)
    "compare_distance": 1,
    "meshing": {"mesh_size": 512},  # 600: Mesh.from_bbox cannot mesh a 512-px section at 600
    "matching": {
        "working_mip_level": 2,
        "loader_config": {"cache_size": 60},
        "matcher_config": {
            "num_workers": 1, "batch_size": 100, "conf_thresh": 0.35, "sigma": 3.5,
            "geodesic_mask": False, "pad": True, "distributor": "cartesian_region",
            "spacings": [400, 100], "shrink_factor": 0.7, "residue_mode": "huber", "residue_len": -2,
            "min_boundary_distance": 20, "stiffness_multiplier_threshold": 0.1,
            "render_weight_threshold": 0.1}},
    "optimization": {
        "chunk_settings": {"chunked_to_depth": 0, "default_chunk_size": 16, "junction_width": 0.2,
                           "pad_junctional": True},
        "stack_config": {"mip_level": 0},
        "slide_window": {
            "start_loc": "M", "window_size": 64, "buffer_size": 16, "residue_mode": "huber",
            "residue_len": -3,
            "elastic_params": {"stiffness_lambda": 1.0, "tol": 1.0e-7, "atol": 0.001,
                               "precondition": "jacobi",
                               "callback_settings": {"timeout": None, "early_stop_thresh": None,
                                                     "chances": None, "eval_step": 10}}}},
}


def _sized_config() -> dict:
    """The defaults with the scale-bound values set for 512-pixel sections: at the defaults the
    finest match blocks (70 px at mip 2) are 280 px at mip 0, so a section holds one or two of
    them and the 600-px mesh is a single cell; here matching runs at mip 0 with spacings
    256 / 96 px (the finest that kept most matches above FEABAS's 0.35 confidence on these
    stacks: 64 px blocks fell to median confidence 0.1) and a 64-px mesh."""
    conf = json.loads(json.dumps(FEABAS_DEFAULTS))
    conf["meshing"]["mesh_size"] = 64
    conf["matching"]["working_mip_level"] = 0
    conf["matching"]["matcher_config"]["spacings"] = [256, 96]
    return conf


FEABAS_CONFIGS = {"defaults": FEABAS_DEFAULTS, "sized_to_section": _sized_config(),
                  "defaults_compare_distance_2": {**FEABAS_DEFAULTS, "compare_distance": 2}}


def _scores(ws, fields: dict[int, bytes]) -> dict:
    """``score_alignment`` of ``ws`` with ``fields`` (section -> stored field) as its alignment."""
    from wiremap.align.score import score_alignment
    from wiremap.align.stage import FIELDS_PREFIX

    ws.delete_prefix(FIELDS_PREFIX)
    for z, b in fields.items():
        ws.write_bytes(f"{FIELDS_PREFIX}{z}.npz", b)
    overall, per = score_alignment(ws)
    return {"residual_mean_px": overall.mean_px, "residual_p95_px": overall.p95_px,
            "residual_max_px": overall.max_px, "n": overall.n,
            "per_section_mean_px": {int(z): round(float(v), 2)
                                    for z, v in zip(per["section"], per["mean_px"], strict=True)}}


def _feabas_stack(exe: str, ws, reference: int, conf: dict) -> tuple[dict, dict[int, bytes]]:
    """FEABAS aligns the montage of ``ws`` with ``conf``: its figures and its maps as stored fields."""
    from wiremap.align.field import Field
    from wiremap.align.stage import field_bytes
    from wiremap.synth.acquisition import load_groundtruth
    from wiremap.volume import Layer

    montage_layer = Layer(ws, "montage")
    vol = montage_layer.read()
    _, h, w = vol.shape
    st = load_groundtruth(ws).sections
    blank = set(st.loc[st["blank"].astype(bool), "section"].astype(int))
    zs = [z for z in range(vol.shape[0]) if z not in blank]
    tmp = Path(tempfile.mkdtemp(prefix="wiremap-feabas-align-"))
    (tmp / "configs").mkdir()
    (tmp / "configs" / "general_configs.yaml").write_text(
        "parallel_framework: process\ncpu_budget: 1\n"
        f"full_resolution: {montage_layer.info.resolution_nm[2]}\n"
        f"section_thickness: {montage_layer.info.resolution_nm[0]}\n")
    for z in zs:
        np.save(tmp / f"montage_{z}.npy", vol[z])
    job = {"root": str(tmp), "sections": zs, "height": h, "width": w, "reference": reference,
           "resolution_nm": montage_layer.info.resolution_nm[2], "config": conf}
    (tmp / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run([exe, "-c", _FEABAS_ALIGN_CHILD, str(tmp / "job.json")], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=3600, check=False)
    if res.returncode != 0:
        return {"error": res.stderr[-3000:]}, {}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    fields = {z: field_bytes(Field(np.load(tmp / f"map_{z}.npy"), 1.0)) for z in zs}
    shutil.rmtree(tmp, ignore_errors=True)
    out["sections"] = zs
    return out, fields


def bench(quick: bool, root: Path, exe: str) -> dict:
    """Per seed and defects setting: wiremap and FEABAS on the same montage, same scorer."""
    from benchmarks.bench_align import stitched_synth_stacks
    from wiremap.align.field import Field
    from wiremap.align.stack import AlignConfig, align_stack
    from wiremap.align.stage import FIELDS_PREFIX, align_stage, field_bytes
    from wiremap.volume import Layer

    out = {}
    for name, ws in stitched_synth_stacks(quick, root):
        vol = Layer(ws, "montage").read()
        w0, c0 = time.perf_counter(), time.process_time()
        align_stack(vol, AlignConfig())
        solve_wall, solve_cpu = time.perf_counter() - w0, time.process_time() - c0
        w0 = time.perf_counter()
        align_stage(ws, executor="serial", n_overlays=0, overwrite=True, cfg=AlignConfig())
        stage_wall = time.perf_counter() - w0
        qc = ws.read_table("align_qc")
        reference = int(qc.loc[qc["status"] == "reference", "z"].iloc[0])
        ours_fields = {int(k[len(FIELDS_PREFIX):-4]): ws.read_bytes(k)
                       for k in ws.list(FIELDS_PREFIX) if k.endswith(".npz")}
        ours = {"solve_wall_s": solve_wall, "solve_cpu_s": solve_cpu, "align_stage_wall_s": stage_wall,
                "sections": sorted(ours_fields), **_scores(ws, ours_fields)}
        h, w = vol.shape[1:]
        still = field_bytes(Field(np.zeros((2, h, w), np.float32), 1.0))
        row = {"reference": reference, "wiremap": ours,
               "montage_unaligned": _scores(ws, dict.fromkeys(ours_fields, still))}
        for cname, conf in FEABAS_CONFIGS.items():
            fe, fe_fields = _feabas_stack(exe, ws, reference, conf)
            if "error" in fe:
                row[f"feabas_{cname}"] = fe
                continue
            fe.update(_scores(ws, fe_fields))
            ratios = {"residual_mean": ours["residual_mean_px"] / fe["residual_mean_px"],
                      "residual_p95": ours["residual_p95_px"] / fe["residual_p95_px"],
                      "solve_wall": ours["solve_wall_s"] / fe["wall_s"],
                      "solve_cpu": ours["solve_cpu_s"] / fe["cpu_s"],
                      "align_stage_wall_over_feabas_wall": ours["align_stage_wall_s"] / fe["wall_s"]}
            common = sorted(set(ours_fields) & set(fe_fields) - set(fe["unaligned"]))
            if fe["unaligned"] and len(common) > 1 and reference in common:
                # also on the sections FEABAS did align, both scored on that set only
                a = _scores(ws, {z: ours_fields[z] for z in common})
                b = _scores(ws, {z: fe_fields[z] for z in common})
                fe["on_sections_feabas_aligned"] = {"sections": common, "wiremap": a, "feabas": b}
                ratios["residual_mean_on_feabas_aligned"] = a["residual_mean_px"] / b["residual_mean_px"]
                ratios["residual_p95_on_feabas_aligned"] = a["residual_p95_px"] / b["residual_p95_px"]
            fe["ratios_wiremap_over_feabas"] = ratios
            row[f"feabas_{cname}"] = fe
        out[name] = row
    return out


def run(quick: bool) -> dict:
    exe = os.environ.get("WIREMAP_FEABAS_PYTHON")
    if not exe:
        return {"skipped": "set WIREMAP_FEABAS_PYTHON to a Python with feabas installed"}
    with tempfile.TemporaryDirectory() as tmp:
        stacks = bench(quick, Path(tmp), exe)
    summary = {}
    for cname in FEABAS_CONFIGS:
        ok = [r[f"feabas_{cname}"]["ratios_wiremap_over_feabas"] for r in stacks.values()
              if "ratios_wiremap_over_feabas" in r[f"feabas_{cname}"]]
        if ok:
            summary[cname] = {k: float(np.mean([r[k] for r in ok]))
                              for k in ("residual_mean", "residual_p95", "solve_wall", "solve_cpu")}
            summary[cname]["stacks"] = len(ok)
    return {"what": "section alignment of the same stitched synth montage, both scored by score_alignment",
            "feabas_configs": FEABAS_CONFIGS, "stacks": stacks, "mean_ratios_wiremap_over_feabas": summary}


if __name__ == "__main__":
    figures = run("--quick" in sys.argv)
    if "skipped" in figures:
        print(figures["skipped"])
        sys.exit(0)
    text = json.dumps(figures, indent=2)
    if "--save" in sys.argv:
        (RESULTS / "align-feabas.json").write_text(text)
    print(text)
