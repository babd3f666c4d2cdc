"""Train the shipped segmentation networks (``src/wiremap/models/segment_*.pt``).

    .venv/bin/python scripts/train_segment.py --variant isotropic --iterations 1500
    .venv/bin/python scripts/train_segment.py --variant anisotropic --iterations 1500

Data (all real, from ``../shared/data``; see its README), plus synthetic
tissue (``wiremap.synth``) when ``--synthetic N`` asks for N training volumes:

  isotropic    gala_fibsem.npz train volume (dense labels; its test volume is
               never read here), synthetic ``fibsem`` tissue
  anisotropic  isbi2012_membrane.npz and vnc_sstem_train.npz (membranes ->
               per-section instances: in-plane affinities, plus weak z-affinities,
               see ``targets.section_z_affinity``), their training sections only
               (``wiremap.models.splits``: the last sections are the benchmark's
               real test), synthetic ``sstem`` tissue

Augmentation: flips and axis swaps, gamma, contrast, brightness, noise, blur,
and (anisotropic) blank or low-contrast sections.  Loss: class-balanced
binary cross-entropy on all affinity channels (long-range ones are an
auxiliary target), ignoring a margin at the patch border.  Seeded: the same
command gives the same weights on the same machine (CPU, one thread).
Checkpoints go to ``--out`` every ``--checkpoint-every`` iterations (250).

Fine-tuning a shipped model (its architecture is taken from the weights):

    .venv/bin/python scripts/train_segment.py --variant anisotropic \
        --init src/wiremap/models/segment_anisotropic.pt --synthetic 12 \
        --schedule cosine --lr 1e-3 --iterations 900 --time-limit 1500 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from wiremap.intensity import grey_range
from wiremap.models.splits import SSTEM_DATASETS
from wiremap.segment.infer import normalize_image, save_model
from wiremap.segment.network import NetworkConfig, UNet3D, flops_per_voxel
from wiremap.segment.targets import affinities_from_labels, labels_from_membranes, section_z_affinity

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PATCH = {"isotropic": (48, 48, 48), "anisotropic": (10, 112, 112)}
MARGIN = {"isotropic": (6, 6, 6), "anisotropic": (1, 8, 8)}


def load_sources(variant: str, data: Path, synthetic: int, synthetic_seed: int = 1000) -> list[dict]:
    """Training volumes: image (float32, normalised), labels, and how to make targets."""
    out: list[dict] = []
    if variant == "isotropic":
        d = np.load(data / "gala_fibsem.npz")
        out.append(
            {
                "name": "gala_train",
                "image": d["train_image"],
                "labels": d["train_labels"].astype(np.uint64),
                "kind": "labels",
                "weight": 1.0,
            }
        )
    else:
        for name, ds in SSTEM_DATASETS.items():
            d = np.load(data / ds.file)
            out.append({"name": name, "image": d[ds.image_key][ds.train], "membrane": d[ds.membrane_key][ds.train],
                        "kind": "membrane", "weight": 1.0})
    n_real = len(out)
    for seed in range(synthetic):
        out.append(synthetic_source(variant, synthetic_seed + seed))
        out[-1]["weight"] = n_real / synthetic  # synthetic as a whole weighs as much as the real data
    for s in out:
        lo, hi = grey_range(s["image"][:, ::4, ::4])
        s["image"] = normalize_image(s["image"], lo, hi)
        if s["kind"] == "membrane":
            s["labels"] = labels_from_membranes(s["membrane"])
    return out


def synthetic_source(variant: str, seed: int) -> dict:
    """One synthetic volume (tissue + rendered EM) for training; seeds >= 1000 never used for tests."""
    from wiremap.synth.render import RenderConfig, render_em
    from wiremap.synth.tissue import TissueConfig, generate_tissue

    if variant == "isotropic":
        shape, res, preset = (64, 160, 160), (8.0, 8.0, 8.0), "fibsem"
    else:
        shape, res, preset = (24, 384, 384), (30.0, 4.0, 4.0), "sstem"
    tissue = generate_tissue(TissueConfig(shape_zyx=shape, resolution_nm=res, seed=seed))
    image = render_em(tissue, RenderConfig.preset(preset), seed)
    return {
        "name": f"synth_{preset}_{seed}",
        "image": image,
        "labels": np.asarray(tissue.cells, np.uint64),
        "kind": "labels",
        "weight": 1.0,
        "resolution_nm": res,
    }


def misalign_sections(arrays: list[np.ndarray], rng: np.random.Generator, max_px: int) -> list[np.ndarray]:
    """Copies of ``(z, y, x)`` arrays with half the sections after the first moved by up to ``max_px``
    in y and x, the same shift in every array (np.roll: it wraps at most ``max_px`` pixels, inside
    the loss margin)."""
    out = [a.copy() for a in arrays]  # crops are views of the training volumes
    for z in range(1, out[0].shape[0]):
        if rng.random() < 0.5:
            shift = tuple(int(v) for v in rng.integers(-max_px, max_px + 1, 2))
            for a in out:
                a[z] = np.roll(a[z], shift, axis=(0, 1))
    return out


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    extra: np.ndarray | None,
    variant: str,
    rng: np.random.Generator,
    misalign_px: int = 0,
):
    """Geometric (shared by all arrays) then intensity augmentation of one crop.

    ``misalign_px`` (serial sections): half the sections are moved in y/x by up to that many
    pixels, image and labels together, as an alignment's residual would leave them; the
    targets then say that two cells laid over each other by the shift are not connected.
    """
    arrays = [image, labels] + ([extra] if extra is not None else [])
    if misalign_px and variant == "anisotropic":
        arrays = misalign_sections(arrays, rng, misalign_px)
    axes = (0, 1, 2) if variant == "isotropic" else (1, 2)
    for ax in axes:
        if rng.random() < 0.5:
            arrays = [np.flip(a, ax) for a in arrays]
    if variant == "isotropic":
        perm = (0, *rng.permutation([1, 2])) if rng.random() < 0.5 else tuple(rng.permutation(3))
    else:
        perm = (0, 2, 1) if rng.random() < 0.5 else (0, 1, 2)
    arrays = [np.ascontiguousarray(a.transpose(perm)) for a in arrays]
    img = arrays[0]
    # intensity: in [0, 1] space, gamma then contrast/brightness, blur, noise
    x = np.clip(img + 0.5, 0, 1)
    x = x ** np.exp(rng.uniform(-0.5, 0.5))
    x = (x - 0.5) * rng.uniform(0.6, 1.4) + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.3:
        s = rng.uniform(0.3, 1.2)
        x = ndimage.gaussian_filter(x, (s if variant == "isotropic" else 0, s, s))
    x = x + rng.normal(0, rng.uniform(0, 0.08), x.shape)
    if variant == "anisotropic":
        for z in range(x.shape[0]):
            u = rng.random()
            if u < 0.04:
                x[z] = rng.uniform(-0.3, 0.3)  # missing section
            elif u < 0.15:
                x[z] = x[z] * rng.uniform(0.5, 1.5) + rng.uniform(-0.2, 0.2)  # section contrast jitter
    return x.astype(np.float32), arrays[1], (arrays[2] if extra is not None else None)


def sample(sources: list[dict], config: NetworkConfig, rng: np.random.Generator, misalign_px: int = 0):
    """One training example: input (1, z, y, x), targets and masks (n, z, y, x)."""
    weights = np.array([s["weight"] for s in sources])
    src = sources[rng.choice(len(sources), p=weights / weights.sum())]
    patch = PATCH[config.variant]
    shape = src["image"].shape
    start = [int(rng.integers(0, max(s - p, 0) + 1)) for s, p in zip(shape, patch, strict=True)]
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True))
    image, labels = src["image"][sl], src["labels"][sl]
    membrane = src["membrane"][sl] if src["kind"] == "membrane" else None
    image, labels, membrane = augment(image, labels, membrane, config.variant, rng, misalign_px)
    pad = [(0, p - s) for s, p in zip(image.shape, patch, strict=True)]
    if any(b for _, b in pad):  # a volume smaller than the patch (vnc: 10 sections)
        image = np.pad(image, pad)
        labels = np.pad(labels, pad)
        membrane = np.pad(membrane, pad) if membrane is not None else None
        known = np.pad(np.ones(image.shape, bool)[tuple(slice(0, s) for s in shape)], pad)
    else:
        known = None
    if src["kind"] == "membrane":
        planar = [o if o[0] == 0 else (0, 0, 0) for o in config.offsets]
        aff, mask = affinities_from_labels(labels, planar, known)
        for c, o in enumerate(config.offsets):
            if o[0] != 0:
                mask[c] = 0
        zaff, zmask = section_z_affinity(membrane, config.offsets)
        aff = np.where(zmask > 0, zaff, aff)
        mask = np.maximum(mask, zmask) if known is None else np.maximum(mask, zmask * known)
    else:
        aff, mask = affinities_from_labels(labels, config.offsets, known)
    m = MARGIN[config.variant]
    border = np.zeros(image.shape, np.float32)
    border[tuple(slice(a, s - a) for a, s in zip(m, image.shape, strict=True))] = 1
    return image[None], aff, mask * border


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE with positives and negatives of each channel weighted equally (boundaries are rare)."""
    dims = (0, 2, 3, 4)
    pos = (target * mask).sum(dims, keepdim=True)
    neg = ((1 - target) * mask).sum(dims, keepdim=True)
    total = pos + neg + 1e-6
    w_pos = (0.5 * total / (pos + 1)).clamp(max=20)
    w_neg = (0.5 * total / (neg + 1)).clamp(max=20)
    weight = mask * torch.where(target > 0.5, w_pos, w_neg)
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return loss / mask.sum().clamp(min=1)


def tune_threshold(model_path: Path, variant: str, data: Path) -> dict:
    """Pick merge threshold and seed radius with the best mean VOI on validation volumes (never gala test).

    isotropic: chosen on gala's train volume (real FIB-SEM) alone; synthetic
    fibsem seed 2000 is scored and reported but does not vote, because its
    optimum (smaller fragments, lower threshold) transfers badly to real
    tissue: on the ensemble it chose radius 40 nm / threshold 0.2, which gave
    gala test VOI 0.65 instead of 0.40.  anisotropic: synthetic sstem seed
    2000 (the only ssTEM-like volume with 3D truth) and the training sections
    of the real ssTEM stacks, scored section by section against the instances
    their membrane masks enclose (their links across sections are unknown);
    each of the three volumes has one vote.
    """
    from wiremap.evaluation.segmentation import section_scores, truth_pieces, variation_of_information
    from wiremap.segment import agglomerate as agg
    from wiremap.segment.infer import load_model, predict_affinities
    from wiremap.segment.stage import SegmentConfig

    model = load_model(str(model_path))
    volumes = []
    if variant == "isotropic":
        d = np.load(data / "gala_fibsem.npz")
        volumes.append(("gala_train", d["train_image"], d["train_labels"], (10.0, 10.0, 10.0)))
    else:
        for name, ds in SSTEM_DATASETS.items():
            d = np.load(data / ds.file)
            volumes.append((f"{name}_train_sections", d[ds.image_key][ds.train],
                            labels_from_membranes(d[ds.membrane_key][ds.train]), ds.resolution_nm))
    syn = synthetic_source(variant, 2000)
    volumes.append((syn["name"], syn["image"], syn["labels"], tuple(syn["resolution_nm"])))
    votes = np.array([not (variant == "isotropic" and v[0].startswith("synth")) for v in volumes])
    thresholds = [round(float(t), 2) for t in np.arange(0.15, 0.65, 0.05)]
    radii = [40.0, 60.0, 80.0, 120.0]  # seed radius of the supervoxel watershed, nm
    vois = np.zeros((len(volumes), len(radii), len(thresholds)))
    cleanup = SegmentConfig()  # the stage's small-segment and small-contact rules
    for i, (name, image, labels, res) in enumerate(volumes):
        per_section = name.endswith("_train_sections")
        if not per_section:
            labels = truth_pieces(labels)  # what `wiremap evaluate segmentation` scores against
        lo, hi = grey_range(image[:, ::4, ::4])
        affs = np.round(predict_affinities(model, image, lo, hi)[:3] * 255) / 255
        for k, radius in enumerate(radii):
            svs = agg.supervoxel_ids(agg.fragments(affs, resolution_nm=res, seed_radius_nm=radius), 0)
            edges, sizes = agg.region_edges(svs, affs, (False, False, False)), agg.fragment_sizes(svs)
            for j, t in enumerate(thresholds):
                small, contact = cleanup.min_size_voxels(res), cleanup.min_contact_for(res)
                table = agg.agglomerate(sizes, edges, threshold=t, min_size=small, min_contact=contact)
                seg = agg.relabel(svs, table)
                vois[i, k, j] = section_scores(seg, labels)["voi"] if per_section \
                    else variation_of_information(seg, labels).total
    mean = vois[votes].mean(axis=0)
    k, j = np.unravel_index(int(np.argmin(mean)), mean.shape)
    return {
        "threshold": float(thresholds[j]),
        "seed_radius_nm": float(radii[k]),
        "validation": {v[0]: float(vois[i, k, j]) for i, v in enumerate(volumes)},
        "selected_on": [v[0] for v, keep in zip(volumes, votes, strict=True) if keep],
    }


CARD_DATA = {
    "isotropic": (
        "- `gala_fibsem.npz` train volume (Janelia FlyEM FIB-SEM, *Drosophila* medulla, ~10 nm; gala, "
        "BSD-style HHMI licence): dense neuron labels, 0 = one-voxel boundary.\n"
        "- synthetic `fibsem` tissue from `wiremap.synth` (8 nm isotropic), seeds {synthetic} "
        "(validation seed 2000)."
    ),
    "anisotropic": (
        "- `isbi2012_membrane.npz` (ISBI 2012 challenge ssTEM, *Drosophila* larva VNC, 4x4x50 nm; "
        "cite Cardona et al. 2010, Arganda-Carreras et al. 2015): membranes -> per-section instances; "
        "sections 0-24 (26-29 are the benchmark's real test, `wiremap.models.splits`).\n"
        "- `vnc_sstem_train.npz` (Gerhard et al., *Segmented anisotropic ssTEM dataset of neural tissue*, "
        "figshare doi:10.6084/m9.figshare.856713, **CC BY-NC-SA 3.0**: this model is trained on it, so "
        "non-commercial use only): membranes -> per-section instances; sections 0-5 (7-9: test).\n"
        "- synthetic `sstem` tissue from `wiremap.synth` (4x4x30 nm), seeds {synthetic} (validation seed 2000)."
    ),
}


POOLING = {"anisotropic": "pools y/x only, for serial sections", "isotropic": "pools z/y/x, for FIB-SEM"}


def _training_lines(meta: dict) -> list[str]:
    """How the weights were made: one command, or one per ensemble member plus the combining one."""
    variant = meta["variant"]
    default = (
        f".venv/bin/python scripts/train_segment.py --variant {variant} --fmaps {meta.get('fmaps')} "
        f"--synthetic {meta.get('synthetic')} --iterations {meta['iterations']}"
    )
    if not meta.get("members"):
        return [f"- command: `{meta.get('command') or default}` (CPU, 1 thread, seed {meta['seed']})"]
    lines = [f"- ensemble of {len(meta['members'])} networks of one architecture; affinity probabilities are averaged:"]
    for m in meta["members"]:
        lines.append(
            f"  - `{m['file']}` ({m.get('iterations')} iterations in all, sha256 {str(m.get('sha256'))[:12]}): "
            f"`{m.get('command') or 'see git history of this card'}`"
        )
    files = " ".join(f"<{m['file']}>" for m in meta["members"])
    lines.append(f"  - combined: `.venv/bin/python scripts/train_segment.py --variant {variant} --combine {files}`")
    lines.append("- last member's training:")
    return lines


def write_card(path: Path, meta: dict) -> None:
    """The model card next to the weights: data, targets, size, cost, how it was made."""
    variant = meta["variant"]
    lines = [
        f"# segment_{variant}.pt",
        "",
        f"3D U-Net ({variant}: {POOLING[variant]}) "
        "predicting nearest-neighbour and long-range affinities; used by `wiremap segment`.",
        "",
        "## Data",
        CARD_DATA[variant].format(synthetic="-".join(str(v) for v in meta.get("synthetic_seeds") or []) or "none"),
        "",
        "The gala **test** volume is never used for training or threshold selection.",
        "",
        "## Training",
        *_training_lines(meta),
        f"- {meta['iterations']} iterations, batch {meta['batch']}, patch {tuple(meta['patch_zyx'])} (z, y, x), "
        f"Adam + {meta.get('schedule', 'onecycle')} lr {meta['lr']}, class-balanced BCE; "
        f"final loss {meta['final_loss']:.3f}; "
        f"{meta['train_seconds'] / 60:.0f} min on a shared 2-core CPU",
        "- augmentation: flips, axis swaps, gamma, contrast, brightness, blur, noise; "
        "ssTEM: blank and low-contrast sections",
        "",
        "## Size and cost",
        f"- {meta.get('levels', 3)} resolution levels, {meta['fmaps']} feature maps at full resolution, "
        f"{'batch normalisation after each convolution, ' if meta.get('batch_norm') else ''}"
        f"{meta['parameters']:,} parameters, offsets {meta.get('offsets')}",
        f"- {meta['flops_per_voxel'] / 1e6:.3f} MFLOP per voxel (torch.utils.flop_counter; LSD ~0.9, FFN ~150)",
        f"- input resolution ~{tuple(meta['resolution_nm'])} nm (z, y, x); "
        f"receptive radius {meta.get('receptive_radius')} voxels",
        "",
        "## Metric",
        f"- merge threshold {meta.get('threshold')} (mean affinity) and supervoxel seed radius "
        f"{meta.get('seed_radius_nm')} nm, chosen for the best VOI on "
        f"{', '.join(meta.get('selected_on') or (meta.get('validation') or {}).keys())}; validation: "
        + ", ".join(f"{k} VOI {v:.3f}" for k, v in (meta.get("validation") or {}).items()),
        "- test figures (gala test volume, unseen synthetic tissue) with baselines: "
        "`benchmarks/results/segment.json` (`make bench`)",
        "",
    ]
    path.write_text("\n".join(lines))


def combine(args: argparse.Namespace) -> int:
    """``--combine``: an :class:`Ensemble` of trained weight files (same architecture), tuned and carded."""
    from wiremap.segment.infer import load_model
    from wiremap.segment.network import Ensemble

    models = [load_model(str(p)) for p in args.combine]
    if any(m.config.variant != args.variant for m in models):
        raise SystemExit(f"--combine needs {args.variant} models")
    members = [m.network for m in models]
    if any(isinstance(m, Ensemble) for m in members):
        raise SystemExit("--combine takes single networks, not ensembles")
    network = Ensemble(members)  # type: ignore[arg-type]
    meta = {k: v for k, v in models[-1].meta.items() if k not in ("sha256", "members")}
    meta["members"] = [
        {
            "file": p.name,
            "sha256": m.meta.get("sha256"),
            "iterations": m.meta.get("init", {}).get("total_iterations") or m.meta.get("iterations"),
            "command": m.meta.get("command"),
        }
        for p, m in zip(args.combine, models, strict=True)
    ]
    meta["flops_per_voxel"] = flops_per_voxel(network)
    meta["parameters"] = sum(p.numel() for p in network.parameters())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"segment_{args.variant}.pt"
    save_model(path, network, meta)
    if not args.no_tune:
        meta.update(tune_threshold(path, args.variant, args.data))
        save_model(path, network, meta)
    write_card(path.with_suffix(".md"), meta)
    print(json.dumps(meta, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("isotropic", "anisotropic"), required=True)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--fmaps", type=int, default=12)
    parser.add_argument("--levels", type=int, default=3, help="U-Net resolution levels (context grows ~2x per level)")
    parser.add_argument("--batch-norm", action="store_true", help="batch normalisation after each convolution")
    parser.add_argument(
        "--misalign-px", type=int, default=0, help="serial sections: move half the sections by up to this many pixels"
    )
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic", type=int, default=0, help="synthetic training volumes to add")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--init", type=Path, default=None, help="start from these weights (fine-tuning; architecture from the file)"
    )
    parser.add_argument(
        "--synthetic-seed", type=int, default=1000, help="first synthetic training seed (>= 1000: never a test seed)"
    )
    parser.add_argument(
        "--schedule",
        choices=("onecycle", "cosine"),
        default="onecycle",
        help="lr schedule: one-cycle (from scratch) or short warm-up then cosine decay (fine-tuning)",
    )
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up share of the iterations")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument(
        "--time-limit", type=float, default=None, help="seconds: stop early (and save) when training takes longer"
    )
    parser.add_argument("--no-tune", action="store_true", help="skip the merge-threshold search at the end")
    parser.add_argument("--out", type=Path, default=Path("train_segment_out"))
    parser.add_argument("--tune-only", type=Path, default=None, help="only pick the merge threshold of these weights")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        help="only write an ensemble (mean affinity probability) of these weight files to --out, then tune it",
    )
    args = parser.parse_args(argv)
    if args.combine is not None:
        return combine(args)
    if args.tune_only is not None:
        from wiremap.segment.infer import load_model

        model = load_model(str(args.tune_only))
        meta = {k: v for k, v in model.meta.items() if k != "sha256"}
        meta.update(tune_threshold(args.tune_only, args.variant, args.data))
        save_model(args.tune_only, model.network, meta)
        write_card(args.tune_only.with_suffix(".md"), meta)
        print(json.dumps(meta, indent=1))
        return 0

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    config = NetworkConfig(variant=args.variant, fmaps=args.fmaps, levels=args.levels, batch_norm=args.batch_norm)
    network = UNet3D(config)
    init_meta: dict = {}
    if args.init is not None:
        from wiremap.segment.infer import load_model

        init = load_model(str(args.init))
        if init.config.variant != args.variant:
            parser.error(f"--init {args.init} is a {init.config.variant} model")
        config = init.config
        network = UNet3D(config)
        network.load_state_dict(init.network.state_dict())
        init_meta = init.meta
        args.fmaps = config.fmaps
    sources = load_sources(args.variant, args.data, args.synthetic, args.synthetic_seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    if args.schedule == "onecycle":
        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=args.lr, total_steps=args.iterations, pct_start=args.warmup
        )
    else:
        warm = max(1, int(args.warmup * args.iterations))
        clock = {"start": time.time()}

        def factor(step: int) -> float:
            # progress: iterations done or (with --time-limit) time spent, whichever is further,
            # so a run cut short by the time limit still ends at a low learning rate
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, args.iterations - warm)
            if args.time_limit is not None:
                t = max(t, (time.time() - clock["start"]) / args.time_limit)
            return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(1.0, t)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.schedule == "cosine":
        clock["start"] = started
    history = []
    for it in range(1, args.iterations + 1):
        batch = [sample(sources, config, rng, args.misalign_px) for _ in range(args.batch)]
        x, y, m = (torch.from_numpy(np.stack(b)) for b in zip(*batch, strict=True))
        loss = balanced_bce(network(x), y, m)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(float(loss.detach()))
        if it % 50 == 0:
            print(f"it {it} loss {np.mean(history[-50:]):.4f} {time.time() - started:.0f}s", flush=True)
        out_of_time = args.time_limit is not None and time.time() - started > args.time_limit
        if it % args.checkpoint_every == 0 or it == args.iterations or out_of_time:
            meta = {
                "command": ".venv/bin/python scripts/train_segment.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                "variant": args.variant,
                "resolution_nm": [8.0, 8.0, 8.0] if args.variant == "isotropic" else [40.0, 4.0, 4.0],
                "iterations": it,
                "seed": args.seed,
                "batch": args.batch,
                "lr": args.lr,
                "patch_zyx": list(PATCH[args.variant]),
                "sources": [s["name"] for s in sources],
                "final_loss": float(np.mean(history[-50:])),
                "train_seconds": round(time.time() - started, 1),
                "flops_per_voxel": flops_per_voxel(network),
                "parameters": sum(p.numel() for p in network.parameters()),
                "fmaps": args.fmaps,
                "levels": config.levels,
                "batch_norm": config.batch_norm,
                "misalign_px": args.misalign_px,
                "synthetic": args.synthetic,
                "offsets": [list(o) for o in config.offsets],
                "receptive_radius": list(config.receptive_radius),
                "schedule": args.schedule,
                "synthetic_seeds": [args.synthetic_seed, args.synthetic_seed + args.synthetic - 1]
                if args.synthetic
                else [],
            }
            if args.init is not None:
                meta["init"] = {
                    "file": args.init.name,
                    "iterations": init_meta.get("iterations"),
                    "sha256": init_meta.get("sha256"),
                    "total_iterations": (init_meta.get("total_iterations") or init_meta.get("iterations") or 0) + it,
                }
            save_model(args.out / f"segment_{args.variant}.pt", network, meta)
            (args.out / f"segment_{args.variant}.json").write_text(json.dumps(meta, indent=1))
            if out_of_time:
                print(f"time limit reached after {it} iterations", flush=True)
                break
    path = args.out / f"segment_{args.variant}.pt"
    if args.no_tune:
        return 0
    meta.update(tune_threshold(path, args.variant, args.data))
    save_model(path, network, meta)
    (args.out / f"segment_{args.variant}.json").write_text(json.dumps(meta, indent=1))
    write_card(path.with_suffix(".md"), meta)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
