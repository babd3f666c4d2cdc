"""Neuron and glia trees in nanometres: tortuous, branching, kept apart while they grow.

Every neurite is grown as a persistent random walk (direction noise plus
momentum) whose radius wobbles along its length.  A coarse isotropic
occupancy grid (``Occupancy``) records which cell's core fills which grid
cell, so a walk steers around neurites already there instead of passing
through them: real neurites touch but never interpenetrate, and skeleton
nodes must end up inside their own cell's voxels.

Positions are ``(z, y, x)`` in nm; the imaged volume spans ``[0, shape * res)``
and the "world" adds a margin around it so that neurites enter from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from wiremap.synth.model import Compartment, Skeleton


class Occupancy:
    """Which cell owns each cell of a coarse isotropic grid (0 = free).

    The grid is padded by ``pad`` cells on every side so that a ball of up to
    ``pad`` cells around any point of the world is one flat fancy-index (no
    bounds checks): this is the inner loop of every walk step.
    """

    def __init__(self, lo_nm: np.ndarray, hi_nm: np.ndarray, cell_nm: float, pad: int = 24) -> None:
        self.lo = np.asarray(lo_nm, dtype=np.float64)
        self.cell = float(cell_nm)
        self.shape = tuple(int(np.ceil(s)) for s in (np.asarray(hi_nm) - self.lo) / self.cell)
        self.pad = int(pad)
        self.grid = np.zeros(tuple(s + 2 * self.pad for s in self.shape), dtype=np.int32)
        self.owner = self.grid[tuple(slice(self.pad, self.pad + s) for s in self.shape)]
        self._flat = self.grid.reshape(-1)
        st = self.grid.shape
        self._strides = np.array([st[1] * st[2], st[2], 1], dtype=np.int64)
        self._balls: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        self._lo = [float(v) for v in self.lo]
        self._s0, self._s1 = int(self._strides[0]), int(self._strides[1])
        self._box = self.owner

    def set_box(self, lo_nm: np.ndarray, hi_nm: np.ndarray) -> None:
        """Choose the box whose owned share ``fill`` reports (e.g. the imaged volume)."""
        a = np.clip(np.floor((lo_nm - self.lo) / self.cell).astype(int), 0, self.shape)
        b = np.clip(np.ceil((hi_nm - self.lo) / self.cell).astype(int), 0, self.shape)
        self._box = self.owner[a[0] : b[0], a[1] : b[1], a[2] : b[2]]

    def fill(self) -> float:
        """Owned share of the box set by ``set_box``."""
        return float(np.count_nonzero(self._box)) / max(1, self._box.size)

    def _ball(self, radius_nm: float) -> tuple[int, np.ndarray, np.ndarray]:
        key = max(0, int(round(2.0 * radius_nm / self.cell)))
        ball = self._balls.get(key)
        if ball is None:
            rc = key / 2.0  # radius in grid cells
            k = int(np.ceil(rc))
            g = np.mgrid[-k : k + 1, -k : k + 1, -k : k + 1].reshape(3, -1).T
            g = g[(g**2).sum(1) <= max(rc, 0.5) ** 2]
            ball = (k, g, g @ self._strides)
            self._balls[key] = ball
        return ball

    def _index(self, p_nm: np.ndarray, radius_nm: float) -> np.ndarray:
        """Flat indices into ``grid`` of the ball around ``p_nm``."""
        k, offs, flat = self._ball(radius_nm)
        lo, cell, pad, gs = self._lo, self.cell, self.pad, self.grid.shape
        c0 = int((p_nm[0] - lo[0]) // cell) + pad
        c1 = int((p_nm[1] - lo[1]) // cell) + pad
        c2 = int((p_nm[2] - lo[2]) // cell) + pad
        if k <= c0 < gs[0] - k and k <= c1 < gs[1] - k and k <= c2 < gs[2] - k:
            return (c0 * self._s0 + c1 * self._s1 + c2) + flat
        ii = np.array([c0, c1, c2], dtype=np.int64) + offs
        ok = np.all((ii >= 0) & (ii < self.grid.shape), axis=1)
        return ii[ok] @ self._strides

    def blocked(self, p_nm: np.ndarray, radius_nm: float, allow: tuple[int, ...]) -> bool:
        """True when another cell's core lies within ``radius_nm`` of ``p_nm``."""
        v = self._flat[self._index(p_nm, radius_nm)]
        v = v[v != 0]
        if v.size == 0:
            return False
        for a in allow:
            v = v[v != a]
        return v.size > 0

    def _set(self, idx: np.ndarray, oid: int) -> None:
        idx = idx[self._flat[idx] == 0]
        if idx.size:
            self._flat[idx] = oid

    def mark(self, p_nm: np.ndarray, radius_nm: float, oid: int) -> None:
        self._set(self._index(p_nm, radius_nm), oid)

    def mark_segment(self, a: np.ndarray, b: np.ndarray, radius_nm: float, oid: int) -> None:
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / self.cell)))
        d = (b - a) / n
        self._set(np.concatenate([self._index(a + i * d, radius_nm) for i in range(1, n + 1)]), oid)

    def fraction(self, lo_nm: np.ndarray, hi_nm: np.ndarray) -> float:
        """Fraction of grid cells inside the box ``[lo, hi)`` that are owned."""
        a = np.clip(np.floor((lo_nm - self.lo) / self.cell).astype(int), 0, self.shape)
        b = np.clip(np.ceil((hi_nm - self.lo) / self.cell).astype(int), 0, self.shape)
        sub = self.owner[a[0] : b[0], a[1] : b[1], a[2] : b[2]]
        return float(np.count_nonzero(sub)) / max(1, sub.size)


@dataclass
class CellBuilder:
    """A growing skeleton of one cell; node 0 is the root."""

    cid: int
    nodes: list[np.ndarray] = field(default_factory=list)
    radii: list[float] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    comps: list[int] = field(default_factory=list)
    sheath: list[float] = field(default_factory=list)  # myelin thickness (nm), 0 = bare
    sheath_owner: list[int] = field(default_factory=list)  # id of the myelinating glia, 0 = none
    tag: list[int] = field(default_factory=list)  # 0 shaft/soma, 1 spine neck, 2 bouton, 3 spine head
    virtual: list[bool] = field(default_factory=list)  # True: node is not drawn (far-away soma)

    def add(self, p: np.ndarray, r: float, parent: int, comp: int, *, sheath: float = 0.0,
            sheath_owner: int = 0, virtual: bool = False, tag: int = 0) -> int:
        self.nodes.append(np.asarray(p, dtype=np.float64))
        self.radii.append(float(r))
        self.parents.append(int(parent))
        self.comps.append(int(comp))
        self.sheath.append(float(sheath))
        self.sheath_owner.append(int(sheath_owner))
        self.tag.append(int(tag))
        self.virtual.append(bool(virtual))
        return len(self.nodes) - 1

    def skeleton(self, vol_hi_nm: np.ndarray) -> Skeleton:
        nodes = np.array(self.nodes, dtype=np.float64).reshape(-1, 3)
        inside = np.all((nodes >= 0) & (nodes < vol_hi_nm), axis=1) & ~np.array(self.virtual, bool)
        return Skeleton(
            nodes_nm=nodes,
            radii_nm=np.array(self.radii, dtype=np.float64),
            parents=np.array(self.parents, dtype=np.int64),
            compartments=np.array(self.comps, dtype=np.uint8),
            in_volume=inside,
        )


def unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.array([0.0, 0.0, 1.0])


def perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to ``d``."""
    v = rng.normal(size=3)
    v -= v.dot(d) * d
    return unit(v)


def random_direction(rng: np.random.Generator, z_weight: float = 1.0) -> np.ndarray:
    """Random unit vector; ``z_weight`` < 1 flattens directions into the yx plane."""
    v = rng.normal(size=3)
    v[0] *= z_weight
    return unit(v)


@dataclass
class Walk:
    """How one neurite walks: step length, wiggle, radius wobble (all nm / radians)."""

    radius: float
    comp: int
    step: float
    wiggle: float = 0.25  # std of direction noise per step (radians-ish)
    wobble: float = 0.2  # relative std of radius variation
    taper: float = 1.0  # radius factor per micrometre
    min_radius: float = 40.0
    clearance: float = 5.0  # extra free space demanded around the core (nm)
    sheath: float = 0.0  # myelin thickness (nm)
    sheath_owner: int = 0  # id of the myelinating glia cell


def walk(
    occ: Occupancy,
    rng: np.random.Generator,
    cell: CellBuilder,
    parent: int,
    pos: np.ndarray,
    direction: np.ndarray,
    spec: Walk,
    max_len: float,
    in_world: Callable[[np.ndarray], bool],
    *,
    target: np.ndarray | None = None,
    zones: list[tuple[np.ndarray, float, int]] = (),  # type: ignore[assignment]
    on_node: Callable[[int, np.ndarray, np.ndarray, float], None] | None = None,
    tries: int = 6,
) -> tuple[int, np.ndarray, np.ndarray, bool]:
    """Grow one unbranched neurite; returns (last node, position, direction, reached target).

    The walk stops when it leaves the world, is blocked on all ``tries`` or has
    walked ``max_len``; with a ``target`` it bends towards it and stops on it.
    """
    d = unit(direction)
    r_base = spec.radius
    wob = 0.0
    walked = 0.0
    last = parent
    reached = False
    while walked < max_len:
        wob = 0.8 * wob + 0.6 * rng.normal()
        r = max(spec.min_radius, r_base * (1.0 + spec.wobble * np.tanh(wob)))
        step = max(spec.step, 0.7 * r) if target is None else spec.step
        pull = np.zeros(3)
        if target is not None:
            to = target - pos
            dist = float(np.linalg.norm(to))
            if dist <= step * 1.2:
                reached = True
                break
            pull = to / dist * (0.6 if dist > 4 * step else 2.0)
        ok = False
        cand = pos
        for k in range(tries):
            nd = unit(d + (spec.wiggle * (1 + k)) * rng.normal(size=3) + pull)
            cand = pos + step * nd
            own = (cell.cid, *(c for p, rad, c in zones if np.linalg.norm(cand - p) < rad))
            if not occ.blocked(cand, r + spec.sheath + spec.clearance, own) and (
                len(own) == 1 or not occ.blocked(cand, 0.0, (cell.cid,))  # never centred in the target
            ):
                ok = True
                break
        if not ok or not in_world(cand):
            break
        d = nd
        last = cell.add(cand, r, last, spec.comp, sheath=spec.sheath, sheath_owner=spec.sheath_owner)
        occ.mark_segment(pos, cand, r + spec.sheath, cell.cid)
        if on_node is not None:
            on_node(last, cand, d, r)
        pos = cand
        walked += step
        r_base = max(spec.min_radius, r_base * spec.taper ** (step / 1000.0))
    return last, pos, d, reached


def add_spine(
    occ: Occupancy,
    rng: np.random.Generator,
    cell: CellBuilder,
    node: int,
    axis: np.ndarray,
    neck_len: float,
    neck_r: float,
    head_r: float,
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Sprout a spine (neck + head) from dendrite ``node``; returns (head node, centre, out dir)."""
    base = cell.nodes[node]
    r_d = cell.radii[node]
    for _ in range(3):
        out = unit(perpendicular(axis, rng) + 0.3 * rng.normal(size=3))
        neck_end = base + out * (r_d + neck_len)
        head = neck_end + out * head_r * 0.8
        if occ.blocked(head, head_r + 15.0, (cell.cid,)) or occ.blocked(
            base + out * (r_d + 0.5 * neck_len), neck_r + 10.0, (cell.cid,)
        ):
            continue
        n1 = cell.add(base + out * r_d * 0.7, neck_r, node, Compartment.DENDRITE, tag=1)
        n2 = cell.add(neck_end, neck_r, n1, Compartment.DENDRITE, tag=1)
        n3 = cell.add(head, head_r, n2, Compartment.DENDRITE, tag=3)
        occ.mark_segment(cell.nodes[n1], neck_end, neck_r, cell.cid)
        occ.mark(head, head_r, cell.cid)
        return n3, head, out
    return None


def segments(cells: list[CellBuilder]) -> dict[str, np.ndarray]:
    """All drawable capsules of all cells, with the global node id of each capsule's child node.

    Global node ids start at 1 (0 = background) in the order of ``cells``.
    A root (or a child of a virtual node) becomes a sphere.
    """
    p0, p1, r0, r1, sh, so, gid = [], [], [], [], [], [], []
    base = 1
    for c in cells:
        nodes = np.array(c.nodes).reshape(-1, 3)
        rad = np.array(c.radii)
        par = np.array(c.parents)
        virt = np.array(c.virtual, bool)
        shv = np.array(c.sheath)
        sov = np.array(c.sheath_owner, np.int64)
        idx = np.flatnonzero(~virt)
        pa = par[idx]
        sphere = (pa < 0) | virt[np.maximum(pa, 0)]
        pp = np.where(sphere, idx, pa)
        # a neurite leaving a soma is a cylinder from the soma centre, not a cone
        from_soma = ~sphere & (np.array(c.comps)[pp] == 1) & (np.array(c.comps)[idx] != 1)
        # ... and it starts near the soma's surface, so the soma keeps its nucleus region
        start = nodes[pp] + 0.75 * (nodes[idx] - nodes[pp])
        p0.append(np.where(from_soma[:, None], start, nodes[pp]))
        p1.append(nodes[idx])
        r0.append(np.where(from_soma, rad[idx], rad[pp]))
        r1.append(rad[idx])
        sh.append(np.minimum(shv[pp], shv[idx]))
        so.append(sov[idx])
        gid.append(base + idx)
        base += len(c.nodes)
    return {
        "p0": np.concatenate(p0) if p0 else np.zeros((0, 3)),
        "p1": np.concatenate(p1) if p1 else np.zeros((0, 3)),
        "r0": np.concatenate(r0) if r0 else np.zeros(0),
        "r1": np.concatenate(r1) if r1 else np.zeros(0),
        "sheath": np.concatenate(sh) if sh else np.zeros(0),
        "sheath_owner": np.concatenate(so) if so else np.zeros(0, np.int64),
        "gid": np.concatenate(gid).astype(np.int64) if gid else np.zeros(0, np.int64),
    }
