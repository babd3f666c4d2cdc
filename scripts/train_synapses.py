"""Train the shipped synapse network (``src/wiremap/models/synapses_sstem.pt``).

    .venv/bin/python scripts/train_synapses.py --iterations 600

Data, at ``--pixel-nm`` (8.5 nm: 4 nm and 4.6 nm sections are mean-pooled 2x2):

  synthetic   ``--synthetic`` volumes of ``wiremap.synth`` sstem tissue (seeds
              2001, 2002, ...; evaluation uses other seeds): cleft, pre/post
              side and E/I targets from the ground truth (``targets.py``)
  real        ``../shared/data/vnc_sstem_train.npz`` sections 0-5 (expert
              synapse masks; cleft target only).  Section 6 is a gap and
              sections 7-9 are held out for evaluation (``--evaluate``).
              CC BY-NC-SA 3.0: the model card says so.

Each batch is half synthetic, half real patches, 60% of them centred near a
synapse.  Augmentation: flips and rotations, scale 0.8-1.25, gamma,
contrast, brightness, noise and blur, so that the weights do not fit the
grey levels of one dataset.  Loss: binary cross-entropy (+ soft Dice) on the
cleft channel, masked binary cross-entropy on side and E/I near true clefts.
Seeded: the same command gives the same weights on the same machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from wiremap.intensity import grey_range
from wiremap.synapses.model import normalize, pool_sections, save_model
from wiremap.synapses.network import SynapseNet, SynapseNetConfig
from wiremap.synapses.targets import synapse_targets

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
REAL_TRAIN = (0, 1, 2, 3, 4, 5)
REAL_TEST = (7, 8, 9)


FACE_ON_NZ = 0.7  # |z component| of a cleft normal above which a synapse is face-on (cut en face)


def _pool_targets(cleft: np.ndarray, side: np.ndarray, ei: np.ndarray, f: int):
    soft = pool_sections(cleft.astype(np.float32), f)
    return (
        soft,
        side[:, ::f, ::f][:, : soft.shape[1], : soft.shape[2]],
        ei[:, ::f, ::f][:, : soft.shape[1], : soft.shape[2]],
    )


def face_on_mask(clefts: np.ndarray, synapses, f: int) -> np.ndarray:
    """Pooled 0/1 mask of the clefts of face-on synapses (normal near z), which a 2D network sees worst."""
    ids = synapses["id"].to_numpy(np.int64)[np.abs(synapses["nz"].to_numpy()) > FACE_ON_NZ]
    mask = np.isin(clefts, ids).astype(np.float32) if len(ids) else np.zeros(clefts.shape, np.float32)
    return (pool_sections(mask, f) > 0).astype(np.float32)


def _save_source(path: Path, image, clefts, cells, table, resolution_nm, pixel_nm: float) -> None:
    """Targets of one labelled volume, pooled to ``pixel_nm``, cached at ``path``."""
    cleft, side, ei = synapse_targets(clefts, cells, table, resolution_nm)
    f = max(1, round(pixel_nm / resolution_nm[2]))
    face = face_on_mask(clefts, table, f)
    soft, side, ei = _pool_targets(cleft, side, ei, f)
    np.savez_compressed(path, image=pool_sections(image, f), cleft=soft, side=side, ei=ei, face=face)


def _load_source(path: Path, name: str) -> dict:
    d = np.load(path)
    image = d["image"]
    lo, hi = grey_range(image)
    return {
        "name": name,
        "image": normalize(image, lo, hi),
        "cleft": d["cleft"],
        "side": d["side"],
        "ei": d["ei"],
        "face": d["face"],
    }


def synth_source(seed: int, shape: tuple[int, int, int], cache: Path, pixel_nm: float) -> dict:
    """One synthetic volume, targets and all, pooled to ``pixel_nm`` (cached on disk)."""
    path = cache / f"synth_{seed}_{'x'.join(map(str, shape))}_v3.npz"
    if not path.exists():
        from wiremap.synth.render import RenderConfig, render_em
        from wiremap.synth.tissue import PRESETS, TissueConfig, generate_tissue

        cfg = TissueConfig(**{**PRESETS["sstem"], "shape_zyx": shape, "seed": seed})
        tissue = generate_tissue(cfg)
        image = render_em(tissue, RenderConfig.preset("sstem"), seed=seed)
        _save_source(
            path, image, tissue.synapse_clefts, tissue.cells, tissue.synapse_table, cfg.resolution_nm, pixel_nm
        )
    return _load_source(path, f"synth{seed}")


def acquired_source(seed: int, shape: tuple[int, int, int], cache: Path, pixel_nm: float) -> dict:
    """One synthetic volume through the simulated microscope, ``stitch`` and ``align``, with its ground truth
    carried into the aligned frame (``align-truth``): noise, blur, contrast changes and alignment errors as
    the pipeline sees them (cached on disk)."""
    path = cache / f"acquired_{seed}_{'x'.join(map(str, shape))}_v1.npz"
    if not path.exists():
        from wiremap.volume import Layer
        from wiremap.workspace import Workspace

        url = str(cache / f"acquired_{seed}_ws")
        shutil.rmtree(url, ignore_errors=True)
        wiremap = [sys.executable, "-m", "wiremap"]
        subprocess.run([*wiremap, "synth", url, "--shape", ",".join(map(str, shape)), "--seed", str(seed)], check=True)
        for stage in ("stitch", "align", "align-truth"):
            subprocess.run([*wiremap, stage, url], check=True)
        ws = Workspace.open(url)
        aligned = Layer(ws, "aligned")
        truth = "groundtruth/aligned/"
        _save_source(
            path,
            aligned.read(),
            Layer(ws, truth + "synapse_clefts").read(),
            Layer(ws, truth + "neurons").read(),
            ws.read_table(truth + "synapses.parquet"),
            aligned.info.resolution_nm,
            pixel_nm,
        )
        shutil.rmtree(url, ignore_errors=True)
    return _load_source(path, f"acquired{seed}")


def real_source(sections: tuple[int, ...], pixel_nm: float) -> dict:
    d = np.load(DATA / "vnc_sstem_train.npz")
    raw = d["raw"][list(sections)]
    syn = (d["synapses"][list(sections)] > 0).astype(np.float32)
    f = max(1, round(pixel_nm / 4.6))
    image = pool_sections(raw, f)
    lo, hi = grey_range(image)
    cleft = pool_sections(syn, f)
    ignore = np.full(cleft.shape, -1.0, np.float32)
    face = np.zeros(cleft.shape, np.float32)
    return {
        "name": "vnc",
        "image": normalize(image, lo, hi),
        "cleft": cleft,
        "side": ignore,
        "ei": ignore,
        "face": face,
    }


def sample(
    src: dict, rng: np.random.Generator, patch: int, face_fraction: float = 0.0, context: int = 0
) -> tuple[np.ndarray, ...]:
    """One augmented patch: image (2 context + 1, P, P) and targets (4, P, P): cleft, side, ei, face-on cleft.

    ``face_fraction`` of the synapse-centred patches are centred on face-on clefts (when the source has any).
    With ``context`` > 0 the image has the neighbouring sections as channels
    (repeated at the volume's ends, and 10% of the time a neighbour is
    replaced by the middle section, as the stage does at the ends).
    """
    img = src["image"]
    z_n, y_n, x_n = img.shape
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    size = min(int(round(patch * scale)), y_n, x_n)
    if rng.random() < 0.6:
        if "where" not in src:
            src["where"] = np.argwhere(src["cleft"] > 0.5)
            src["where_face"] = np.argwhere(src["face"] > 0.5)
        w = src["where_face"] if len(src["where_face"]) and rng.random() < face_fraction else src["where"]
        z, cy, cx = w[rng.integers(len(w))] if len(w) else (rng.integers(z_n), y_n // 2, x_n // 2)
        cy += rng.integers(-size // 3, size // 3 + 1)
        cx += rng.integers(-size // 3, size // 3 + 1)
        y0 = int(np.clip(cy - size // 2, 0, y_n - size))
        x0 = int(np.clip(cx - size // 2, 0, x_n - size))
    else:
        z, y0, x0 = rng.integers(z_n), rng.integers(y_n - size + 1), rng.integers(x_n - size + 1)
    sl = (int(z), slice(y0, y0 + size), slice(x0, x0 + size))
    zs = np.clip(int(z) + np.arange(-context, context + 1), 0, z_n - 1)
    for j in range(len(zs)):
        if j != context and rng.random() < 0.1:
            zs[j] = int(z)
    sections = [img[int(k), sl[1], sl[2]] for k in zs]
    stack = np.stack([*sections, src["cleft"][sl], src["side"][sl], src["ei"][sl], src["face"][sl]])
    c = len(zs)
    k = int(rng.integers(4))
    stack = np.rot90(stack, k, axes=(1, 2))
    if rng.random() < 0.5:
        stack = stack[:, :, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(stack))[None]
    if size != patch:
        smooth = F.interpolate(t[:, : c + 1], size=(patch, patch), mode="bilinear", align_corners=False)
        near = F.interpolate(t[:, c + 1 :], size=(patch, patch), mode="nearest")
        t = torch.cat([smooth, near], 1)
    a = t[0].numpy().copy()
    # a low-resolution pixel is cleft if any of its full-resolution pixels is: mean-pooled
    # thin clefts are ~0.5 and would teach the network to sit on the threshold
    a[c] = (a[c] > 0.2).astype(np.float32)
    x = np.clip(a[:c] + 0.5, 0, 1) ** float(np.exp(rng.uniform(-0.35, 0.35)))
    x = (x - 0.5) * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, (0, *(2 * [rng.uniform(0.3, 1.0)])))
    x = x + rng.normal(0, rng.uniform(0, 0.08), x.shape)
    return x.astype(np.float32), a[c:].astype(np.float32)


def widen_input(state: dict, net: SynapseNet) -> dict:
    """Weights of a 2D network for a 2.5D one: the middle input channel gets the old filters, the others 0.

    The widened network starts out computing exactly what the 2D one did and
    learns to use the neighbouring sections from there.
    """
    key = "down.0.0.weight"
    want = net.state_dict()[key].shape[1]
    w = state[key]
    if w.shape[1] == want:
        return state
    wide = torch.zeros(w.shape[0], want, *w.shape[2:], dtype=w.dtype)
    wide[:, want // 2] = w[:, w.shape[1] // 2]
    return {**state, key: wide}


def loss_fn(logits: torch.Tensor, target: torch.Tensor, face_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Cleft BCE (+ Dice; face-on cleft pixels weighted ``face_weight``), masked BCE on side and E/I."""
    cleft_t = target[:, 0]
    weight = 1.0 + (face_weight - 1.0) * target[:, 3] if target.shape[1] > 3 and face_weight != 1.0 else None
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], cleft_t, weight=weight, pos_weight=torch.tensor(3.0))
    p = torch.sigmoid(logits[:, 0])
    dice = 1 - (2 * (p * cleft_t).sum() + 1) / (p.sum() + cleft_t.sum() + 1)
    parts = {"cleft": bce.item(), "dice": dice.item()}
    total = bce + 0.5 * dice
    for c, name in ((1, "side"), (2, "ei")):
        mask = target[:, c] >= 0
        if mask.any():
            lc = F.binary_cross_entropy_with_logits(logits[:, c][mask], target[:, c][mask])
            total = total + 0.5 * lc
            parts[name] = lc.item()
    return total, parts


def evaluate_real(model_path: str, sections: tuple[int, ...], params_list: list) -> list[dict]:
    """Real-data detection scores of a model on vnc sections (kept 3D components, 100 nm), as the stage keeps them."""
    from wiremap.synapses.detect import kept_components
    from wiremap.synapses.model import load_model, predict_sections
    from wiremap.synapses.scores import score_masks

    d = np.load(DATA / "vnc_sstem_train.npz")
    raw, syn = d["raw"][list(sections)], d["synapses"][list(sections)]
    lo, hi = grey_range(d["raw"][:, ::7, ::7])
    res = (50.0, 4.6, 4.6)
    prob = predict_sections(load_model(model_path), raw, lo, hi, res[2])
    rows = []
    for params in params_list:
        prf = score_masks(kept_components(prob[0], res, params), syn, res)
        rows.append(
            {
                "params": params,
                "precision": prf.precision,
                "recall": prf.recall,
                "f1": prf.f1,
                "tp": prf.tp,
                "fp": prf.fp,
                "fn": prf.fn,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--fmaps", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pixel-nm", type=float, default=8.5)
    ap.add_argument("--synthetic", type=int, default=4)
    ap.add_argument("--synth-shape", default="24,384,384")
    ap.add_argument("--cache", default="/tmp/wiremap_synapse_train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", default=None, help="start from these weights")
    ap.add_argument("--face-weight", type=float, default=1.0, help="loss weight of face-on cleft pixels")
    ap.add_argument("--face-fraction", type=float, default=0.0, help="share of synapse patches on face-on clefts")
    ap.add_argument("--synthetic-first", type=int, default=2001, help="first synthetic training seed")
    ap.add_argument("--acquired", type=int, default=0, help="synthetic volumes through acquisition and alignment")
    ap.add_argument("--acquired-shape", default="16,384,384")
    ap.add_argument("--acquired-first", type=int, default=3001, help="first acquired training seed")
    ap.add_argument("--time-limit", type=float, default=0.0, help="stop (and save) after this many seconds")
    ap.add_argument("--context-sections", type=int, default=0, help="neighbouring sections as input (2.5D)")
    ap.add_argument("--out", default=str(ROOT / "src" / "wiremap" / "models" / "synapses_sstem.pt"))
    ap.add_argument("--evaluate", default=None, help="only score this weight file on real sections")
    args = ap.parse_args()
    if args.evaluate:
        from wiremap.synapses.detect import DetectParams

        torch.set_num_threads(args.threads)
        grid = [DetectParams(t, v, c) for t in (0.3, 0.4, 0.5) for v in (3e5, 1e6) for c in (0.7, 0.8)]
        for name, secs in (("train 0-5", REAL_TRAIN), ("held-out 7-9", REAL_TEST)):
            for row in evaluate_real(args.evaluate, secs, grid):
                print(name, row, flush=True)
        return
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(v) for v in args.synth_shape.split(","))
    t0 = time.time()
    first = args.synthetic_first
    synth = [synth_source(first + i, shape, cache, args.pixel_nm) for i in range(args.synthetic)]  # type: ignore[arg-type]
    acq_shape = tuple(int(v) for v in args.acquired_shape.split(","))
    synth += [
        acquired_source(args.acquired_first + i, acq_shape, cache, args.pixel_nm)  # type: ignore[arg-type]
        for i in range(args.acquired)
    ]
    real = [real_source(REAL_TRAIN, args.pixel_nm)]
    print(f"data ready in {time.time() - t0:.0f}s", flush=True)

    net = SynapseNet(SynapseNetConfig(fmaps=args.fmaps, context_sections=args.context_sections))
    if args.init:
        net.load_state_dict(widen_input(torch.load(args.init, weights_only=True)["state_dict"], net))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iterations, pct_start=0.1)
    meta = {
        "pixel_nm": args.pixel_nm,
        "trained_on": [
            f"wiremap.synth sstem seeds {first}..{first + args.synthetic - 1}",
            f"acquired and aligned synthetic seeds {args.acquired_first}..{args.acquired_first + args.acquired - 1}",
            "vnc_sstem_train.npz sections 0-5 (CC BY-NC-SA 3.0)",
        ],
        "args": vars(args),
    }
    log = []
    t0 = time.time()
    for it in range(1, args.iterations + 1):
        batch = [
            sample(
                synth[rng.integers(len(synth))] if b % 2 == 0 else real[0],
                rng,
                args.patch,
                args.face_fraction,
                args.context_sections,
            )
            for b in range(args.batch)
        ]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]))
        net.train()
        loss, parts = loss_fn(net(x), y, args.face_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        log.append(parts)
        if it % 25 == 0:
            mean = {k: round(float(np.mean([p[k] for p in log[-25:] if k in p])), 4) for k in log[-1]}
            print(f"it {it} {time.time() - t0:.0f}s {mean}", flush=True)
        out_of_time = bool(args.time_limit) and time.time() - t0 > args.time_limit
        if it % 100 == 0 or it == args.iterations or out_of_time:
            save_model(args.out, net.eval(), {**meta, "iterations": it})
        if out_of_time:
            print(f"time limit reached after {it} iterations", flush=True)
            break
    (cache / "train_log.json").write_text(json.dumps(log))


if __name__ == "__main__":
    main()
