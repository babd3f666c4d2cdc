"""Cell types, connection rules, and synapses placed where axons touch their targets.

Wiring is built, not found: postsynaptic structures (spine heads, dendrite
shafts, somata) are grown first and offer *sites*; then each axon walks from
site to site, choosing the next one with probability

    connectivity[pre type][post type] * targets[pre type][compartment] * exp(-d / 1 um)

and ending each approach in a bouton that touches the site.  The cleft is
carved later, in voxels, as a thin extracellular sheet between bouton and
target.  Because every synapse is a draw from the type x type rule matrix,
cell types can be recovered from the resulting connectome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pydantic
import scipy.ndimage as ndi

from wiremap.synth.model import Compartment

POST_COMPARTMENTS = ("spine", "dendrite", "soma")


class CellType(pydantic.BaseModel):
    """One neuron type: its sign, shape and whom its axon prefers to contact."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    ei: Literal["E", "I"]  # excitatory or inhibitory (the sign of all its synapses)
    fraction: float = 0.25  # share of neurons of this type
    spiny: bool = False  # dendrites carry spines (pyramidal-like)
    dendrite_radius_nm: tuple[float, float] = (250.0, 500.0)  # range of dendrite radii
    axon_radius_nm: tuple[float, float] = (45.0, 100.0)  # range of axon radii (0.1-0.2 um diameter)
    bouton_radius_nm: tuple[float, float] = (150.0, 260.0)  # range of bouton radii
    axon_share: float = 1.0  # relative number of axon fragments per neuron (local arbour density)
    # preference of this type's axon for each post-synaptic compartment
    targets: dict[str, float] = {"spine": 1.0, "dendrite": 0.05, "soma": 0.0}


def default_cell_types() -> dict[str, CellType]:
    """Two pyramidal-like (spiny, E) and two interneuron-like (I) types."""
    return {
        "pyr_a": CellType(ei="E", fraction=0.4, spiny=True, dendrite_radius_nm=(230.0, 450.0)),
        "pyr_b": CellType(ei="E", fraction=0.4, spiny=True, dendrite_radius_nm=(260.0, 550.0)),
        "basket": CellType(
            ei="I", fraction=0.1, axon_share=3.0, dendrite_radius_nm=(200.0, 400.0),
            bouton_radius_nm=(180.0, 300.0), targets={"spine": 0.0, "dendrite": 0.05, "soma": 1.0},
        ),
        "martinotti": CellType(
            ei="I", fraction=0.1, axon_share=3.0, dendrite_radius_nm=(200.0, 350.0),
            targets={"spine": 0.1, "dendrite": 1.0, "soma": 0.0},
        ),
    }


def default_connectivity() -> dict[str, dict[str, float]]:
    """Type x type preference of pre (row) for post (column).

    Each type has its own row *and* column pattern (a full-rank block
    matrix), so that spectral clustering of the connectome can tell all four
    apart: pyr_a and pyr_b prefer their own kind and drive different
    interneurons, basket cells target pyr_a somata, Martinotti cells pyr_b
    dendrites.
    """
    return {
        "pyr_a": {"pyr_a": 1.0, "pyr_b": 0.1, "basket": 1.0, "martinotti": 0.05},
        "pyr_b": {"pyr_a": 0.1, "pyr_b": 1.0, "basket": 0.05, "martinotti": 1.0},
        "basket": {"pyr_a": 1.0, "pyr_b": 0.2, "basket": 0.05, "martinotti": 0.0},
        "martinotti": {"pyr_a": 0.2, "pyr_b": 1.0, "basket": 0.0, "martinotti": 0.05},
    }


@dataclass
class Sites:
    """Places on postsynaptic structures where a bouton may land."""

    pos: list[np.ndarray] = field(default_factory=list)  # surface point (nm)
    out: list[np.ndarray] = field(default_factory=list)  # outward unit normal of the target
    cell: list[int] = field(default_factory=list)
    ctype: list[int] = field(default_factory=list)
    comp: list[int] = field(default_factory=list)  # index in POST_COMPARTMENTS
    disc: list[float] = field(default_factory=list)  # max cleft radius the target allows (nm)

    def add(self, pos, out, cell, ctype, comp, disc) -> None:
        self.pos.append(np.asarray(pos, float))
        self.out.append(np.asarray(out, float))
        self.cell.append(int(cell))
        self.ctype.append(int(ctype))
        self.comp.append(int(comp))
        self.disc.append(float(disc))

    def freeze(self, lo_nm: np.ndarray, hi_nm: np.ndarray) -> None:
        """Turn lists into arrays, keeping sites inside ``[lo, hi)`` (call once all targets exist)."""
        P = np.array(self.pos).reshape(-1, 3)
        keep = np.all((lo_nm <= P) & (hi_nm > P), axis=1)
        for name in ("pos", "out", "cell", "ctype", "comp", "disc"):
            setattr(self, name, [v for v, k in zip(getattr(self, name), keep, strict=True) if k])
        self.P = np.array(self.pos).reshape(-1, 3)
        self.N = np.array(self.out).reshape(-1, 3)
        self.C = np.array(self.cell, np.int64)
        self.T = np.array(self.ctype, np.int64)
        self.K = np.array(self.comp, np.int64)
        self.D = np.array(self.disc)
        self.used = np.zeros(len(self.C), bool)


def preference(types: list[CellType], names: list[str], conn: dict[str, dict[str, float]]) -> np.ndarray:
    """(pre type, post type, compartment) weight array."""
    w = np.zeros((len(names), len(names), len(POST_COMPARTMENTS)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            for k, c in enumerate(POST_COMPARTMENTS):
                w[i, j, k] = conn.get(a, {}).get(b, 0.0) * types[i].targets.get(c, 0.0)
    return w


def choose_site(
    sites: Sites,
    weights: np.ndarray,
    pre_type: int,
    pre_cell: int,
    rng: np.random.Generator,
    pos: np.ndarray | None = None,
    heading: np.ndarray | None = None,
    search_nm: float = 2500.0,
    scale_nm: float = 1000.0,
) -> int:
    """Pick an unused site for an axon of ``pre_type`` (near ``pos`` if given); -1 if none."""
    if len(sites.C) == 0:
        return -1
    w = weights[pre_type, sites.T, sites.K] * ~sites.used * (pre_cell != sites.C)
    if pos is not None:
        v = sites.P - pos
        d = np.linalg.norm(v, axis=1)
        w = w * (d < search_nm) * np.exp(-d / scale_nm)
        if heading is not None:
            w = w * ((v @ heading) > -0.3 * d)
    tot = w.sum()
    if tot <= 0:
        return -1
    return int(rng.choice(len(w), p=w / tot))


@dataclass
class SynapseSeed:
    """A bouton touching a target, before voxels exist."""

    pre: int
    post: int
    centre_nm: np.ndarray
    normal: np.ndarray  # unit, pre -> post, nm space
    disc_nm: float
    post_compartment: str


def carve_clefts(
    cells: np.ndarray,
    compartments: np.ndarray,
    clefts: np.ndarray,
    res: np.ndarray,
    seeds: list[SynapseSeed],
    cleft_nm: float,
    pair_spacing_nm: float = 0.0,
) -> list[dict]:
    """Cut each synapse's cleft (a thin disc of extracellular voxels) between pre and post.

    Only voxels of the pre cell's axon, the post cell or extracellular space
    are cut.  A synapse is kept only if, afterwards, its cleft touches both the
    pre cell (mostly its axon, on the side the normal points away from) and the
    post cell; otherwise the voxels are restored.  A seed closer than
    ``pair_spacing_nm`` to a kept synapse of the same pre and post cells is
    dropped: steered boutons, spine heads and en-passant contacts each place
    seeds on their own, and two densities between the same two cells closer
    than a bouton is wide are one (perforated) synapse in real tissue, not
    two.  Returns one table row per kept synapse (ids from 1).
    """
    rows: list[dict] = []
    shape = np.array(cells.shape)
    vol_hi = shape * res
    kept: dict[tuple[int, int], list[np.ndarray]] = {}
    for s in seeds:
        if np.any(s.centre_nm < -0.5 * res) or np.any(s.centre_nm > vol_hi - 0.5 * res):
            continue
        near = kept.get((s.pre, s.post), [])
        if pair_spacing_nm > 0 and any(float(np.linalg.norm(c - s.centre_nm)) < pair_spacing_nm for c in near):
            continue
        n = s.normal
        half = max(0.5 * cleft_nm, 0.5 * float(np.abs(n * res).sum()) * 1.01)
        reach = s.disc_nm + 3 * res.max()
        lo = np.maximum(np.floor((s.centre_nm - reach) / res).astype(int), 0)
        hi = np.minimum(np.ceil((s.centre_nm + reach) / res).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(int(lo[i]), int(hi[i])) for i in range(3))
        zz = (np.arange(lo[0], hi[0]) * res[0] - s.centre_nm[0])[:, None, None]
        yy = (np.arange(lo[1], hi[1]) * res[1] - s.centre_nm[1])[None, :, None]
        xx = (np.arange(lo[2], hi[2]) * res[2] - s.centre_nm[2])[None, None, :]
        along = zz * n[0] + yy * n[1] + xx * n[2]
        lat2 = zz**2 + yy**2 + xx**2 - along**2
        c = cells[sl]
        cut = (np.abs(along) <= half) & (lat2 <= s.disc_nm**2)
        cut &= ((c == s.pre) & (compartments[sl] == Compartment.AXON)) | (c == s.post) | (c == 0)
        cut &= clefts[sl] == 0
        if not cut.any():
            continue
        sid = len(rows) + 1
        old_c = c[cut]
        old_k = compartments[sl][cut]
        c[cut] = 0
        compartments[sl][cut] = 0
        shell = ndi.binary_dilation(cut, iterations=1) & ~cut
        pre_side = shell & (c == s.pre)
        post_side = shell & (c == s.post)
        along_full = np.broadcast_to(along, c.shape)
        if (not pre_side.any() or not post_side.any()
                or along_full[pre_side].mean() >= along_full[post_side].mean()
                or np.mean(compartments[sl][pre_side] == Compartment.AXON) < 0.9):
            c[cut] = old_c
            compartments[sl][cut] = old_k
            continue
        clefts[sl][cut] = sid
        kept.setdefault((s.pre, s.post), []).append(np.asarray(s.centre_nm, float))
        idx = np.argwhere(cut) + lo
        ctr = idx.mean(axis=0)
        rows.append({
            "id": sid, "pre": s.pre, "post": s.post,
            "z": ctr[0], "y": ctr[1], "x": ctr[2],
            "nz": n[0], "ny": n[1], "nx": n[2],
            "size": int(cut.sum()), "post_compartment": s.post_compartment,
        })
    return rows
