"""Compare synthetic EM renderings with real EM: figures and a table in docs/.

Usage::

    .venv/bin/python scripts/compare_realism.py [--data /work/shared/data] [--out docs]

For each real data set (ISBI 2012 ssTEM, VNC ssTEM, gala FIB-SEM) it builds
synthetic tissue at the same voxel size, renders it with
``wiremap.synth.render.render_em`` (the ``sstem`` or ``fibsem`` preset) and
measures both with ``wiremap.realism``.  Tissue comes from
``wiremap.synth.tissue.generate_tissue`` when that module exists; otherwise
from :func:`toy_tissue` below, a neuropil of straight neurites (a power
diagram of tilted lines) with mitochondria, glia and synapses, which is
enough to judge the renderer but not the geometry.

Writes ``docs/realism_*.png``, ``docs/synth_section.png`` and
``docs/realism.md`` (the table; the prose around it is kept between the
markers ``<!-- table -->`` / ``<!-- /table -->``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from wiremap import realism as R  # noqa: E402
from wiremap.synth.model import Compartment, Tissue  # noqa: E402
from wiremap.synth.render import RenderConfig, render_em  # noqa: E402

# --------------------------------------------------------------------------- toy tissue


def toy_tissue(
    shape: tuple[int, int, int],
    res: tuple[float, float, float],
    seed: int,
    profiles_per_um2: float = 24.0,
    synapses_per_um3: float = 6.0,
    myelinated: int = 0,
) -> Tissue:
    """Neuropil of straight neurites: every voxel belongs to the nearest tilted line.

    A power diagram (nearest line, weighted by a log-normal radius) through
    a 4D k-d tree: the extra coordinate ``sqrt(W - w^2)`` turns the power
    distance ``d^2 - w^2`` into a Euclidean one.  Most lines run along z
    (round profiles), a third run in the section plane (elongated ones).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    ext = np.array(shape, float) * np.array(res)
    area_um2 = ext[1] * ext[2] * 1e-6
    n = max(8, int(profiles_per_um2 * area_um2 * 1.3))
    p = np.column_stack([rng.uniform(0, ext[0], n), rng.uniform(0, ext[1], n), rng.uniform(0, ext[2], n)])
    d = rng.standard_normal((n, 3))
    inplane = rng.random(n) < 0.35
    d[:, 0] = np.where(inplane, 0.1 * d[:, 0], 1.5 + np.abs(d[:, 0]))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    w = 60.0 * rng.lognormal(0, 0.45, n) * np.where(inplane, 0.6, 1.0)  # nm, ~ neurite radius
    wmax = float((w**2).max())
    # sample each line every 15 nm across the whole volume
    span = float(np.linalg.norm(ext))
    t = np.arange(-span, span, 15.0)
    pts = p[:, None, :] + t[None, :, None] * d[:, None, :]
    own = np.repeat(np.arange(n), len(t))
    pts = pts.reshape(-1, 3)
    inside = np.all((pts > -200) & (pts < ext + 200), axis=1)
    pts, own = pts[inside], own[inside]
    extra = np.sqrt(wmax - w[own] ** 2)
    tree = cKDTree(np.column_stack([pts, extra]))
    yy, xx = np.mgrid[0:ny, 0:nx]
    cells = np.zeros(shape, np.uint64)
    for k in range(nz):
        q = np.column_stack([np.full(ny * nx, k * res[0]), yy.ravel() * res[1], xx.ravel() * res[2], np.zeros(ny * nx)])
        _, idx = tree.query(q, workers=1)
        cells[k] = (own[idx] + 1).reshape(ny, nx)
    kind = np.where(rng.random(n) < 0.08, "glia", "neuron")
    neuron_comp = np.where(rng.random(n) < 0.5, Compartment.AXON, Compartment.DENDRITE)
    comp_of = np.concatenate([[0], np.where(kind == "glia", Compartment.GLIA, neuron_comp)])
    comp = comp_of.astype(np.uint8)[cells.astype(np.intp)]
    # a little extracellular space where boundaries meet a smooth random field
    blob = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0.5, 25, 25))
    ecs = R.boundary_mask(cells, 2) & (blob > np.quantile(blob, 0.85))
    cells[ecs], comp[ecs] = 0, 0
    myelin = np.zeros(shape, bool)
    for i in np.flatnonzero((kind == "neuron") & ~inplane)[:myelinated]:
        own_vox = cells == i + 1
        core = np.stack([ndi.binary_erosion(s, iterations=10) for s in own_vox])
        sheath = own_vox & ~core
        myelin |= sheath
        cells[sheath], comp[sheath] = 0, 0
        comp[core] = Compartment.AXON
    # mitochondria: capsules along a quarter of the neurites
    mito = np.zeros(shape, np.uint32)
    zz = np.arange(nz)[:, None, None] * res[0]
    ygrid, xgrid = yy[None] * res[1], xx[None] * res[2]
    mid = 0
    for i in np.flatnonzero(kind == "neuron"):
        if rng.random() > 0.3:
            continue
        c0 = p[i] + d[i] * rng.uniform(-200, 200)
        half, r = rng.uniform(150, 450), min(rng.uniform(45, 90), 0.7 * w[i])
        vz, vy, vx = zz - c0[0], ygrid - c0[1], xgrid - c0[2]
        tt = np.clip(vz * d[i][0] + vy * d[i][1] + vx * d[i][2], -half, half)
        dist2 = (vz - tt * d[i][0]) ** 2 + (vy - tt * d[i][1]) ** 2 + (vx - tt * d[i][2]) ** 2
        m = (dist2 < r * r) & (cells == i + 1)
        m = np.stack([ndi.binary_erosion(s, iterations=2) for s in m])
        if m.any():
            mid += 1
            mito[m] = mid
    clefts, synapses = _toy_synapses(cells, comp, kind, res, rng, synapses_per_um3)
    cell_table = pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.uint64),
            "kind": kind,
            "cell_type": "toy",
            "ei": "",
            "soma_z": np.nan,
            "soma_y": np.nan,
            "soma_x": np.nan,
            "soma_in_volume": False,
            "has_cilium": False,
        }
    )
    return Tissue(
        resolution_nm=tuple(float(r) for r in res),  # type: ignore[arg-type]
        cells=cells,
        compartments=comp,
        myelin=myelin,
        mitochondria=mito,
        nuclei=np.zeros(shape, bool),
        synapse_clefts=clefts,
        cell_table=cell_table,
        synapse_table=synapses,
    )


def _toy_synapses(cells, comp, kind, res, rng, per_um3):
    """Clefts on axon-dendrite boundaries: a disc of ECS between the two, ~250 nm wide."""
    shape = cells.shape
    vol_um3 = float(np.prod(np.array(shape) * np.array(res))) * 1e-9
    n_syn = max(1, int(per_um3 * vol_um3))
    edge = R.boundary_mask(cells, 2) & (cells > 0)
    cand = np.argwhere(edge & (comp == Compartment.AXON))
    clefts = np.zeros(shape, np.uint32)
    rows = []
    for _ in range(20 * n_syn):
        if len(rows) >= n_syn or len(cand) == 0:
            break
        z, y, x = cand[rng.integers(len(cand))]
        pre = int(cells[z, y, x])
        win = cells[z, max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        posts = [int(o) for o in np.unique(win) if o not in (0, pre) and kind[int(o) - 1] == "neuron"]
        if not posts or kind[pre - 1] != "neuron":
            continue
        post = posts[0]
        rad = rng.uniform(90, 160)
        lo = [max(0, int(c - math.ceil(rad / r)) - 1) for c, r in zip((z, y, x), res, strict=True)]
        hi = [min(s, int(c + math.ceil(rad / r)) + 2) for c, r, s in zip((z, y, x), res, shape, strict=True)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        gz, gy, gx = np.mgrid[sl]
        dd = np.sqrt(((gz - z) * res[0]) ** 2 + ((gy - y) * res[1]) ** 2 + ((gx - x) * res[2]) ** 2)
        sub = cells[sl]
        band = R.boundary_mask(np.where(np.isin(sub, [pre, post]), sub, 0), 2)
        m = (dd < rad) & band & np.isin(sub, [pre, post]) & (clefts[sl] == 0)
        if m.sum() < 6:
            continue
        sid = len(rows) + 1
        clefts[sl][m] = sid
        sub[m] = 0
        comp[sl][m] = 0
        near = dd < rad + 80
        a = np.argwhere((sub == pre) & near).mean(0)
        b = np.argwhere((sub == post) & near).mean(0)
        nv = (b - a) * np.array(res)
        nv = nv / max(np.linalg.norm(nv), 1e-9) / np.array(res)
        nv = nv / np.linalg.norm(nv)
        c = np.argwhere(m).mean(0) + np.array(lo)
        rows.append(
            {
                "id": sid, "pre": pre, "post": post, "z": c[0], "y": c[1], "x": c[2],
                "nz": nv[0], "ny": nv[1], "nx": nv[2], "size": int(m.sum()),
                "ei": "E" if rng.random() < 0.7 else "I", "post_compartment": "dendrite",
            }
        )  # fmt: skip
    return clefts, pd.DataFrame(rows)


def make_tissue(shape, res, seed):
    """Tissue from the project's generator, or ``None`` when it is not there yet."""
    try:
        from wiremap.synth.tissue import TissueConfig, generate_tissue  # type: ignore
    except ImportError:
        return None
    cfg = TissueConfig(shape_zyx=shape, resolution_nm=res, seed=seed)
    return generate_tissue(cfg)


# --------------------------------------------------------------------------- measuring

LOW_BAND = (1 / 200.0, 1 / 20.0)  # cycles/nm: neurites down to membranes
HIGH_BAND = (1 / 20.0, 1 / 8.0)  # membranes down to a 4 nm pixel's Nyquist


def measure(image, pixel_nm, regions, min_area_nm2=2000.0):
    """The realism statistics of one stack; ``regions`` are 2D-cut neurite labels."""
    hist = R.intensity_histogram(image)
    freq, power = R.radial_power_spectrum(image, pixel_nm)
    areas = R.cross_section_areas(regions, pixel_nm, min_area_nm2=min_area_nm2)
    area_um2 = image.shape[0] * image.shape[1] * image.shape[2] * pixel_nm**2 * 1e-6
    high = (HIGH_BAND[0], min(HIGH_BAND[1], 0.5 / pixel_nm))
    return {
        "hist": hist,
        "freq": freq,
        "power": power,
        "areas": areas,
        "mean": float(image.mean()),
        "std": float(image.std()),
        "p5": float(np.percentile(image, 5)),
        "p50": float(np.percentile(image, 50)),
        "p95": float(np.percentile(image, 95)),
        "ridge": R.membrane_fraction(R.dark_ridge_mask(image, pixel_nm)),
        "density": len(areas) / area_um2,
        "area_median_k": float(np.median(areas)) / 1e3 if len(areas) else float("nan"),
        "area_q1": float(np.percentile(areas, 25)) if len(areas) else float("nan"),
        "area_q3": float(np.percentile(areas, 75)) if len(areas) else float("nan"),
        "slope_low": R.spectral_slope(freq, power, LOW_BAND),
        "slope_high": R.spectral_slope(freq, power, high) if high[1] > high[0] else float("nan"),
    }


def spectrum_gap(a, b):
    """Mean |log10 ratio| of two normalised spectra over their common frequencies."""
    f = a["freq"][a["freq"] <= b["freq"].max()]
    pb = np.interp(f, b["freq"], b["power"])
    pa = a["power"][: len(f)]
    ok = (pa > 0) & (pb > 0)
    return float(np.mean(np.abs(np.log10(pa[ok] / pb[ok]))))


def load_real(data: Path):
    """(name, image stack, pixel nm, z nm, neurite regions, preset) of each real data set."""
    out = []
    d = np.load(data / "isbi2012_membrane.npz")
    mem = d["membrane"].astype(bool)
    out.append(("ISBI 2012 ssTEM", d["image"], 4.0, 50.0, R.regions_from_membrane(mem), "sstem"))
    d = np.load(data / "vnc_sstem_train.npz")
    mem = d["membranes"].astype(bool)
    out.append(("VNC ssTEM", d["raw"], 4.6, 50.0, R.regions_from_membrane(mem), "sstem"))
    d = np.load(data / "gala_fibsem.npz")
    out.append(("gala FIB-SEM", d["train_image"], 10.0, 10.0, d["train_labels"], "fibsem"))
    return out


def synth_regions(cells: np.ndarray, pixel_nm: float) -> np.ndarray:
    """Neurite pieces of synthetic labels, cut by a ~18 nm membrane band like real annotations."""
    width = max(1, int(round(18.0 / pixel_nm)))
    if width < 2:
        return cells
    return R.regions_from_membrane(R.boundary_mask(cells, width))


# --------------------------------------------------------------------------- figures


KEYS = ("real", "gen", "toy")
LABELS = {"real": "real", "gen": "synthetic (generator)", "toy": "synthetic (toy)"}


def _to_grey(path: Path) -> None:
    """Rewrite a grey-only RGBA figure as 8-bit grey: a third of the size."""
    Image.open(path).convert("L").save(path, optimize=True)


def _crop(a, n):
    return a[: min(n, a.shape[0]), : min(n, a.shape[1])]


def figures(results, out: Path) -> None:
    n = len(results)
    fig, ax = plt.subplots(n, 3, figsize=(12, 4 * n))
    for i, r in enumerate(results):
        side = int(round(1024 / r["pixel_nm"])) if r["pixel_nm"] < 8 else 200
        ax[i, 0].imshow(_crop(r["real"]["img"], side), cmap="gray", vmin=0, vmax=255)
        ax[i, 0].set_title(f"real: {r['name']}", fontsize=9)
        for j, key in enumerate(KEYS[1:], start=1):
            if key in r:
                ax[i, j].imshow(_crop(r[key]["img"], side), cmap="gray", vmin=0, vmax=255)
                ax[i, j].set_title(f"{LABELS[key]} ({r['pixel_nm']:g} nm px)", fontsize=9)
        for a in ax[i]:
            a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "realism_sections.png", dpi=90)
    plt.close(fig)
    _to_grey(out / "realism_sections.png")

    fig, ax = plt.subplots(1, n, figsize=(4.5 * n, 3.2))
    for i, r in enumerate(results):
        for key in KEYS:
            if key in r:
                ax[i].plot(r[key]["hist"], label=LABELS[key])
        ax[i].set_title(r["name"])
        ax[i].set_xlabel("grey level")
        ax[i].legend()
    fig.tight_layout()
    fig.savefig(out / "realism_histograms.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.arange(n)
    for j, key in enumerate(KEYS):
        vals = [r[key]["ridge"] if key in r else 0.0 for r in results]
        ax.bar(x + 0.27 * (j - 1), vals, 0.27, label=LABELS[key])
    ax.set_xticks(x, [r["name"] for r in results], fontsize=8)
    ax.set_ylabel("membrane fraction (dark ridges)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "realism_membrane.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(1, n, figsize=(4.5 * n, 3.2))
    bins = np.logspace(np.log10(2e3), np.log10(2e6), 40)
    for i, r in enumerate(results):
        for key in (k for k in KEYS if k in r):
            a, lab = r[key]["areas"], LABELS[key]
            ax[i].hist(a, bins=bins, density=False, weights=np.full(len(a), 1 / max(len(a), 1)),
                       histtype="step", label=f"{lab} ({len(a)})")  # fmt: skip
        ax[i].set_xscale("log")
        ax[i].set_xlabel("cross-section area (nm²)")
        ax[i].set_title(r["name"])
        ax[i].legend()
    fig.tight_layout()
    fig.savefig(out / "realism_areas.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(1, n, figsize=(4.5 * n, 3.2))
    for i, r in enumerate(results):
        for key in (k for k in KEYS if k in r):
            ax[i].loglog(r[key]["freq"][1:], r[key]["power"][1:], label=LABELS[key])
        ax[i].set_xlabel("cycles / nm")
        ax[i].set_title(r["name"])
        ax[i].legend()
    fig.tight_layout()
    fig.savefig(out / "realism_spectra.png", dpi=90)
    plt.close(fig)


ROWS = [
    ("grey mean", "mean", "{:.0f}"),
    ("grey std", "std", "{:.0f}"),
    ("grey p5 / p50 / p95", None, None),
    ("membrane fraction", "ridge", "{:.3f}"),
    ("sections per µm²", "density", "{:.1f}"),
    ("median area (10³ nm²)", "area_median_k", "{:.1f}"),
    ("area quartiles (10³ nm²)", None, None),
    ("slope low", "slope_low", "{:.2f}"),
    ("slope high", "slope_high", "{:.2f}"),
]


def table(results) -> str:
    """Markdown table: one row per (data set, real / generator / toy), one column per statistic."""
    head = ["data set", "image"] + [label for label, _, _ in ROWS] + ["EMD to real", "spectrum gap"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in results:
        for k in (k for k in KEYS if k in r):
            s = r[k]
            cells = [r["name"], LABELS[k]]
            for label, key, fmt in ROWS:
                if key is not None:
                    cells.append("–" if np.isnan(s[key]) else fmt.format(s[key]))
                elif label.startswith("grey p5"):
                    cells.append(f"{s['p5']:.0f} / {s['p50']:.0f} / {s['p95']:.0f}")
                else:
                    cells.append(f"{s['area_q1'] / 1e3:,.1f}-{s['area_q3'] / 1e3:,.1f}")
            cells += ["", ""] if k == "real" else [f"{s['emd']:.1f}", f"{s['spec_gap']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(results, seconds: float, out: Path) -> None:
    md = out / "realism.md"
    tab = (
        "<!-- table -->\n"
        "Generated by `scripts/compare_realism.py` (seed 0; "
        f"{seconds:.0f} s). Generator: `wiremap.synth.tissue.generate_tissue` defaults;\n"
        "toy: the script's fly-sized neuropil of straight neurites. Both rendered with\n"
        "`render_em` at the data set's voxel size (`sstem` / `fibsem` preset).\n\n"
        + table(results)
        + "\n<!-- /table -->"
    )
    if md.exists() and "<!-- table -->" in md.read_text():
        text = md.read_text()
        a, b = text.index("<!-- table -->"), text.index("<!-- /table -->") + len("<!-- /table -->")
        md.write_text(text[:a] + tab + text[b:])
    else:
        md.write_text("# Realism of synthetic EM\n\n" + tab + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = []
    for name, img, px, dz, regions, preset in load_real(args.data):
        shape = (8, 512, 512) if px < 8 else (24, 200, 200)
        res = (dz, px, px)
        real_s = measure(img, px, regions)
        real_s["img"] = img[len(img) // 2]
        r = {"name": name, "pixel_nm": px, "real": real_s}
        tissues = {"gen": make_tissue(shape, res, args.seed), "toy": toy_tissue(shape, res, args.seed)}
        for key, tissue in tissues.items():
            if tissue is None:
                continue
            syn = render_em(tissue, RenderConfig.preset(preset), seed=args.seed)
            s = measure(syn, px, synth_regions(tissue.cells, px))
            s["img"] = syn[len(syn) // 2]
            s["emd"] = R.histogram_distance(real_s["hist"], s["hist"])
            s["spec_gap"] = spectrum_gap(real_s, s)
            r[key] = s
        results.append(r)
    figures(results, args.out)
    # one section for the README: 4 x 4 um of a 4 x 4 x 30 nm block big enough
    # (24 um^3) for the generator to place a soma and a myelinated axon
    res = (30.0, 4.0, 4.0)
    tissue = make_tissue((48, 1024, 1024), res, 2) or toy_tissue((3, 768, 768), res, 1, myelinated=1)
    img = render_em(tissue, RenderConfig(), seed=args.seed)
    k = int(np.argmax((tissue.nuclei | tissue.myelin).sum(axis=(1, 2)))) if len(img) > 3 else 1
    Image.fromarray(img[k]).save(args.out / "synth_section.png", optimize=True)
    write_markdown(results, time.time() - t0, args.out)


if __name__ == "__main__":
    main()
