"""Grow a block of neuropil in nanometres: somata, dendrites with spines, axons with boutons.

Order matters and mirrors how the wiring is made: somata that fit, then their
dendrites, then dendrites of cells whose somata lie outside (entering from the
world's border), until dendrites fill their share of the volume; then
myelinated fibres; then axons, which walk from target to target (see
``wiring``) until neurites fill ``neurite_fraction`` of the volume.  All
sizes are physical, so the geometry does not depend on the voxel size.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from wiremap.synth.contacts import contact_synapses
from wiremap.synth.model import Compartment
from wiremap.synth.morphology import (
    CellBuilder,
    Occupancy,
    Walk,
    add_spine,
    perpendicular,
    random_direction,
    unit,
    walk,
)
from wiremap.synth.wiring import POST_COMPARTMENTS, Sites, SynapseSeed, choose_site, preference

if TYPE_CHECKING:
    from wiremap.synth.tissue import TissueConfig


@dataclass
class CellInfo:
    """One cell's identity and soma (nm)."""

    cid: int
    kind: str  # 'neuron' | 'glia'
    cell_type: str
    ei: str
    soma_nm: np.ndarray | None = None
    soma_r: float = 0.0
    nucleus_nm: np.ndarray | None = None
    nucleus_r: float = 0.0
    has_cilium: bool = False


@dataclass
class Neuropil:
    """Everything grown, before voxels."""

    builders: list[CellBuilder]
    infos: dict[int, CellInfo]
    seeds: list[SynapseSeed]
    glia_centres: dict[int, np.ndarray]  # astrocyte id -> territory centre (nm)
    mitos: list[tuple[np.ndarray, np.ndarray, float, int, int]] = field(default_factory=list)


class _Grower:
    def __init__(self, cfg: TissueConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.res = np.array(cfg.resolution_nm, float)
        self.vol_hi = np.array(cfg.shape_zyx, float) * self.res
        m = cfg.margin_nm
        self.w_lo = -np.full(3, m)
        self.w_hi = self.vol_hi + m
        self.occ = Occupancy(self.w_lo, self.w_hi, cfg.occupancy_cell_nm)
        self.occ.set_box(np.zeros(3), self.vol_hi)
        self.names = list(cfg.cell_types)
        self.types = [cfg.cell_types[n] for n in self.names]
        frac = np.array([t.fraction for t in self.types])
        self.frac = frac / frac.sum()
        self.weights = preference(self.types, self.names, cfg.connectivity)
        self.sites = Sites()
        self.builders: dict[int, CellBuilder] = {}
        self.infos: dict[int, CellInfo] = {}
        self.type_of: dict[int, int] = {}
        self.seeds: list[SynapseSeed] = []
        self.next_id = 1
        self.stats: dict[str, int] = collections.defaultdict(int)
        self.soma_axons: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # axon hillocks still to grow
        self.f0 = 0.0  # volume fraction filled once the somata are placed
        vol_um3 = float(np.prod(self.vol_hi)) / 1e9
        self.pool = [self._new_neuron(soma=False) for _ in range(max(8, int(round(vol_um3 * cfg.neurons_per_um3))))]

    # -- helpers ---------------------------------------------------------
    def in_world(self, p: np.ndarray) -> bool:
        return bool(np.all(p >= self.w_lo) and np.all(p < self.w_hi))

    def _new_neuron(self, soma: bool, ti: int | None = None) -> int:
        if ti is None:
            ti = int(self.rng.choice(len(self.types), p=self.frac))
        cid = self.next_id
        self.next_id += 1
        self.infos[cid] = CellInfo(cid, "neuron", self.names[ti], self.types[ti].ei)
        self.type_of[cid] = ti
        return cid

    def _builder(self, cid: int, entry: np.ndarray | None = None, d: np.ndarray | None = None) -> CellBuilder:
        b = self.builders.get(cid)
        if b is None:
            b = CellBuilder(cid)
            self.builders[cid] = b
            if entry is not None and d is not None:  # soma far outside: a virtual root, not drawn
                far = entry - unit(d) * self.cfg.outside_soma_distance_nm
                b.add(far, 5000.0, -1, Compartment.SOMA, virtual=True)
        return b

    def entry(self, target: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Where a ray arriving at ``target`` along ``d`` enters the world."""
        t_back = np.inf
        for i in range(3):
            if d[i] > 1e-9:
                t_back = min(t_back, (target[i] - self.w_lo[i]) / d[i])
            elif d[i] < -1e-9:
                t_back = min(t_back, (target[i] - self.w_hi[i]) / d[i])
        return target - d * max(0.0, t_back - 2.0 * self.cfg.axon_step_nm)

    def free_start(self, aim: np.ndarray, d: np.ndarray, radius: float) -> np.ndarray | None:
        """First free point on the ray from the world's border towards ``aim`` (None if none)."""
        p = self.entry(aim, d)
        for _ in range(40):
            if not self.occ.blocked(p, radius, ()):
                return p
            p = p + d * 40.0
            if np.all((p >= 0) & (p < self.vol_hi)):
                return None
        return None

    def fill(self) -> float:
        return self.occ.fill()

    def add_site(self, pos: np.ndarray, out: np.ndarray, cid: int, ti: int, comp: int, disc: float) -> None:
        """Offer a synapse site, reserving room for its bouton (owned by the target meanwhile)."""
        r = self.cfg.site_reserve_nm
        if r > 0:
            if self.occ.blocked(pos + out * r, r, (cid,)):
                return
            self.occ.mark(pos + out * r, r, cid)
        self.sites.add(pos, out, cid, ti, comp, disc)

    def rand_in_volume(self) -> np.ndarray:
        return self.rng.uniform(0.0, 1.0, 3) * self.vol_hi

    # -- dendrites -------------------------------------------------------
    def grow_dendrite(self, b: CellBuilder, parent: int, pos: np.ndarray, d: np.ndarray, radius: float,
                      depth: int = 0) -> None:
        cfg, rng = self.cfg, self.rng
        ti = self.type_of[b.cid]
        spiny = self.types[ti].spiny
        spec = Walk(radius=radius, comp=Compartment.DENDRITE, step=max(60.0, 0.6 * radius),
                    wiggle=0.22, wobble=0.25, taper=cfg.dendrite_taper_per_um, min_radius=120.0)
        branches: list[tuple[int, np.ndarray, np.ndarray, float]] = []
        acc = {"spine": 0.0, "site": 0.0}
        st = self.stats

        def on_node(node: int, p: np.ndarray, dd: np.ndarray, r: float) -> None:
            step = spec.step
            acc["site"] += step
            while acc["site"] > cfg.shaft_site_spacing_nm:
                acc["site"] -= cfg.shaft_site_spacing_nm
                out = perpendicular(dd, rng)
                along = p - dd * rng.uniform(0.0, step)  # anywhere on the last step
                self.add_site(along + out * r, out, b.cid, ti, POST_COMPARTMENTS.index("dendrite"), 250.0)
            if spiny:
                acc["spine"] += step * cfg.spine_density_per_um / 1000.0
                while acc["spine"] >= 1.0:
                    acc["spine"] -= 1.0
                    hr = rng.uniform(*cfg.spine_head_radius_nm)
                    st["spine_try"] += 1
                    got = add_spine(self.occ, rng, b, node, dd, rng.uniform(*cfg.spine_neck_length_nm),
                                    cfg.spine_neck_radius_nm, hr)
                    if got is not None:
                        st["spine"] += 1
                        _, head, out = got
                        n_out = unit(out + 0.6 * perpendicular(out, rng))
                        self.add_site(head + n_out * hr, n_out, b.cid, ti, 0, 0.7 * hr)
            if depth < 3 and rng.random() < step / 1000.0 * cfg.dendrite_branch_per_um:
                branches.append((node, p, unit(dd + 0.9 * perpendicular(dd, rng)), 0.75 * r))

        walk(self.occ, rng, b, parent, pos, d, spec, cfg.max_neurite_nm, self.in_world, on_node=on_node)
        for node, p, dd, r in branches:
            self.grow_dendrite(b, node, p, dd, max(r, 150.0), depth + 1)

    # -- somata ----------------------------------------------------------
    def grow_somata(self) -> None:
        cfg, rng = self.cfg, self.rng
        vol_um3 = float(np.prod(self.vol_hi)) / 1e9
        n = int(rng.poisson(vol_um3 * cfg.somata_per_um3))
        if vol_um3 >= cfg.min_volume_for_soma_um3:
            n = max(n, 1)
        for _ in range(int(n)):
            r = rng.uniform(*cfg.soma_radius_nm)
            for _try in range(20):
                c = self.rand_in_volume()
                if not self.occ.blocked(c, r + 300.0, ()):
                    break
            else:
                continue
            cid = self._new_neuron(soma=True)
            ti = self.type_of[cid]
            info = self.infos[cid]
            info.soma_nm, info.soma_r = c, r
            info.nucleus_r = r * rng.uniform(0.5, 0.65)
            info.nucleus_nm = c + random_direction(rng) * r * 0.1
            b = self._builder(cid)
            root = b.add(c, r, -1, Compartment.SOMA)
            self.occ.mark(c, r, cid)
            n_sites = int(4 * np.pi * r**2 / cfg.soma_site_spacing_nm**2)
            for _s in range(n_sites):
                out = random_direction(rng)
                self.add_site(c + out * r, out, cid, ti, POST_COMPARTMENTS.index("soma"), 300.0)
            dirs = [random_direction(rng) for _d in range(int(rng.integers(4, 7)))]
            if rng.random() < cfg.cilium_probability:
                self.grow_cilium(b, root, c, r)
            for d in dirs:
                rd = rng.uniform(*self.types[ti].dendrite_radius_nm) * 1.4
                node = b.add(c + d * r * 0.9, rd, root, Compartment.DENDRITE)
                self.occ.mark_segment(c, c + d * r * 0.9, rd, cid)
                self.grow_dendrite(b, node, c + d * r * 0.9, d, rd)
            d = random_direction(rng)
            hill = b.add(c + d * r * 0.95, 250.0, root, Compartment.AXON)
            self.occ.mark(c + d * r * 0.95, 250.0, cid)
            self.soma_axons.append((cid, hill, c + d * r * 0.95, d))

    def grow_cilium(self, b: CellBuilder, root: int, c: np.ndarray, r: float) -> None:
        rng = self.rng
        for _ in range(5):
            d = random_direction(rng, z_weight=0.3)  # mostly in-plane: visible in thin sections
            length = rng.uniform(*self.cfg.cilium_length_nm)
            pts = [c + d * (r - 50.0)]
            dd = d
            for _k in range(4):
                dd = unit(dd + 0.2 * rng.normal(size=3))
                pts.append(pts[-1] + dd * length / 4)
            if any(self.occ.blocked(p, 130.0, (b.cid,)) for p in pts[2:]):
                continue
            last = root
            for p in pts:
                last = b.add(p, self.cfg.cilium_radius_nm, last, Compartment.CILIUM)
                self.occ.mark(p, self.cfg.cilium_radius_nm + 20.0, b.cid)
            for p0, p1 in zip(pts[:-1], pts[1:], strict=True):
                self.occ.mark_segment(p0, p1, self.cfg.cilium_radius_nm + 20.0, b.cid)
            self.infos[b.cid].has_cilium = True
            return

    # -- passing dendrites -----------------------------------------------
    def grow_passing_dendrites(self, progress: Callable[[float], None]) -> None:
        cfg, rng = self.cfg, self.rng
        tries = 0
        goal = self.f0 + cfg.dendrite_fraction * (1.0 - self.f0)
        fill = self.fill()
        misses = 0
        while fill < goal and tries < cfg.max_fragments:
            tries += 1
            cid = self.pool[int(rng.integers(len(self.pool)))]
            ti = self.type_of[cid]
            d = random_direction(rng)
            # in a block smaller than a thick dendrite's reach, one dendrite must not fill it all
            rd = min(rng.uniform(*self.types[ti].dendrite_radius_nm), 0.3 * float(self.vol_hi.min()))
            rd = max(rd, 120.0)
            start = self.free_start(self.rand_in_volume(), d, rd + 50.0)
            if start is None:
                misses += 1
                if misses > 40:  # no room left for a dendrite
                    break
                continue
            misses = 0
            b = self._builder(cid, start, d)
            node = b.add(start, rd, 0, Compartment.DENDRITE)
            self.occ.mark(start, rd, cid)
            self.grow_dendrite(b, node, start, d, rd)
            fill = self.fill()
            progress(min(1.0, fill / max(goal, 1e-6)))

    # -- myelinated fibres -----------------------------------------------
    def grow_myelinated(self) -> None:
        cfg, rng = self.cfg, self.rng
        vol_um3 = float(np.prod(self.vol_hi)) / 1e9
        n = int(rng.poisson(vol_um3 * cfg.myelinated_axons_per_um3))
        if vol_um3 >= cfg.min_volume_for_myelin_um3:
            n = max(n, 1)
        if n == 0:
            return
        oligos = []
        for _ in range(max(1, (n + 2) // 3)):
            oid = self.next_id
            self.next_id += 1
            self.infos[oid] = CellInfo(oid, "glia", "oligodendrocyte", "")
            oligos.append(oid)
        e_pool = [c for c in self.pool if self.types[self.type_of[c]].ei == "E"] or self.pool
        for k in range(n):
            cid = e_pool[int(rng.integers(len(e_pool)))]
            r = rng.uniform(*cfg.myelinated_radius_nm)
            t = rng.uniform(*cfg.myelin_thickness_nm)
            for _try in range(10):
                d = random_direction(rng)
                start = self.free_start(self.rand_in_volume(), d, r + t + 50.0)
                if start is not None:
                    break
            else:
                continue
            b = self._builder(cid, start, d)
            spec = Walk(radius=r, comp=Compartment.AXON, step=max(80.0, r), wiggle=0.08, wobble=0.1,
                        sheath=t, sheath_owner=oligos[k % len(oligos)], min_radius=r * 0.7)
            node = b.add(start, r, 0, Compartment.AXON, sheath=t, sheath_owner=spec.sheath_owner)
            self.occ.mark(start, r + t, cid)
            walk(self.occ, rng, b, node, start, d, spec, cfg.max_neurite_nm, self.in_world)

    # -- axons -----------------------------------------------------------
    def grow_axon(self, b: CellBuilder, parent: int, pos: np.ndarray, d: np.ndarray,
                  first: int = -1) -> None:
        """An axon and its collaterals (branching up to two levels deep)."""
        todo = [(parent, pos, d, first, 0)]
        while todo:
            parent, pos, d, first, depth = todo.pop(0)
            branches: list[tuple[int, np.ndarray, np.ndarray]] = []
            self._axon_chain(b, parent, pos, d, first, branches if depth < 2 else None)
            todo.extend((n, p, dd, -1, depth + 1) for n, p, dd in branches)

    def _axon_chain(self, b: CellBuilder, parent: int, pos: np.ndarray, d: np.ndarray,
                    first: int, branches: list[tuple[int, np.ndarray, np.ndarray]] | None) -> None:
        """One unbranched axon walking from target to target; notes where collaterals sprout."""
        cfg, rng = self.cfg, self.rng

        def maybe_branch(node: int, p: np.ndarray, dd: np.ndarray, length: float) -> None:
            if branches is not None and rng.random() < cfg.axon_branch_per_um * length / 1000.0:
                branches.append((node, p, unit(dd + 1.2 * perpendicular(dd, rng))))

        ti = self.type_of[b.cid]
        ct = self.types[ti]
        spec = Walk(radius=rng.uniform(*ct.axon_radius_nm), comp=Compartment.AXON, step=cfg.axon_step_nm,
                    wiggle=0.3, wobble=0.3, min_radius=45.0)
        s = self.sites
        zones: list[tuple[np.ndarray, float, int]] = []
        walked = 0.0
        target = first
        fails = 0
        st = self.stats
        while walked < cfg.max_neurite_nm and fails < 4:
            if target < 0:
                target = choose_site(s, self.weights, ti, b.cid, rng, pos, d, cfg.bouton_search_nm)
            if target < 0:  # nothing to contact near here: wander on
                n0 = len(b.nodes)
                parent, pos, d, _ = walk(self.occ, rng, b, parent, pos, d, spec, 800.0, self.in_world,
                                         zones=zones, tries=10)
                walked += 800.0
                st["wander"] += 1
                maybe_branch(parent, pos, d, 800.0)
                if len(b.nodes) == n0 or not self.in_world(pos + d * spec.step * 2):
                    return
                zones = []
                continue
            k, target = int(target), -1
            s.used[k] = True
            post = int(s.C[k])
            rb = rng.uniform(*ct.bouton_radius_nm)
            for shrink in (1.0, 0.75, 0.55):  # a bouton squeezed by its neighbours is smaller
                bpos = s.P[k] + s.N[k] * rb * shrink
                if not self.occ.blocked(bpos, rb * shrink, (b.cid, post)) and not self.occ.blocked(
                        bpos, 0.5 * rb * shrink, (b.cid,)):
                    rb *= shrink
                    break
            else:
                st["bouton_blocked"] += 1
                continue
            zones_t = [*zones, (bpos, rb + 0.5 * spec.step, post)]
            n0 = len(b.nodes)
            budget = 2.5 * float(np.linalg.norm(bpos - pos)) + 1000.0
            parent, pos, d, reached = walk(self.occ, rng, b, parent, pos, d, spec, budget,
                                           self.in_world, target=bpos, zones=zones_t, tries=10)
            walked += (len(b.nodes) - n0) * spec.step
            if not reached:
                st["unreached"] += 1
                fails += 1
                if len(b.nodes) == n0:  # stuck: turn around
                    d = unit(-d + 0.5 * rng.normal(size=3))
                continue
            fails = 0
            st["synapse"] += 1
            node = b.add(bpos, rb, parent, Compartment.AXON, tag=2)
            self.occ.mark(bpos, rb, b.cid)
            self.seeds.append(SynapseSeed(
                pre=b.cid, post=post, centre_nm=bpos - s.N[k] * rb, normal=-s.N[k],
                disc_nm=float(min(0.75 * rb, s.D[k])), post_compartment=POST_COMPARTMENTS[s.K[k]],
            ))
            parent, pos = node, bpos
            d = unit(d + 0.5 * s.N[k])
            zones = [(bpos, rb + 0.5 * spec.step, post)]
            # boutons are spaced along the axon: walk on before looking for the next target
            gap = cfg.bouton_spacing_nm * rng.uniform(0.5, 1.5)
            n0 = len(b.nodes)
            parent, pos, d, _ = walk(self.occ, rng, b, parent, pos, d, spec, gap, self.in_world,
                                     zones=zones, tries=10)
            walked += gap
            if len(b.nodes) == n0 or not self.in_world(pos + d * spec.step * 2):
                return
            maybe_branch(parent, pos, d, gap)
            zones = []

    def grow_axons(self, progress: Callable[[float], None]) -> None:
        cfg, rng = self.cfg, self.rng
        for cid, hill, p, d in self.soma_axons:
            b = self.builders[cid]
            ti = self.type_of[cid]
            spec = Walk(radius=self.types[ti].axon_radius_nm[1], comp=Compartment.AXON, step=cfg.axon_step_nm,
                        wiggle=0.15, wobble=0.1, min_radius=45.0)
            # the initial segment makes no synapses: walk clear of the soma first
            node, pos, dd, _ = walk(self.occ, rng, b, hill, p, d, spec, 1000.0, self.in_world, tries=10)
            if node != hill:
                self.grow_axon(b, node, pos, dd)
        share = np.array([self.types[self.type_of[c]].axon_share for c in self.pool])
        share = share / share.sum()
        tries = 0
        goal = self.f0 + cfg.neurite_fraction * (1.0 - self.f0)
        fill = self.fill()
        goal = max(goal, fill + 0.5 * (cfg.neurite_fraction - cfg.dendrite_fraction) * (1.0 - fill))
        fill = self.fill()
        misses = 0
        while fill < goal and tries < cfg.max_fragments:
            tries += 1
            cid = self.pool[int(rng.choice(len(self.pool), p=share))]
            ti = self.type_of[cid]
            first = choose_site(self.sites, self.weights, ti, cid, rng)
            aim = self.rand_in_volume() if first < 0 else self.sites.P[first]
            d = random_direction(rng)
            start = self.free_start(aim, d, self.types[ti].axon_radius_nm[0] + 20.0)
            if start is None:
                misses += 1
                if misses > 200:  # no room left for an axon
                    break
                continue
            misses = 0
            b = self._builder(cid, start, d)
            r = self.types[ti].axon_radius_nm[0]
            node = b.add(start, r, 0, Compartment.AXON)
            self.occ.mark(start, r, cid)
            self.grow_axon(b, node, start, d, first)
            fill = self.fill()
            progress(min(1.0, fill / max(goal, 1e-6)))

    # -- mitochondria ----------------------------------------------------
    def place_mitochondria(self) -> list[tuple[np.ndarray, np.ndarray, float, int, int]]:
        """Capsules (a, b, radius, host cell, mitochondrion index) along neurites and in somata."""
        cfg, rng = self.cfg, self.rng
        out: list[tuple[np.ndarray, np.ndarray, float, int, int]] = []
        mid = 0
        for cid in sorted(self.builders):
            b = self.builders[cid]
            par = b.parents
            for i in range(len(b.nodes)):
                if b.virtual[i] or b.tag[i] in (1, 3) or b.comps[i] not in (Compartment.AXON, Compartment.DENDRITE):
                    continue
                if b.sheath[i] > 0 or rng.random() > cfg.mito_per_node:
                    continue
                length = rng.uniform(*cfg.mito_length_nm)
                j, run, rmin = i, 0.0, b.radii[i]
                while run < length:
                    p = par[j]
                    if p < 0 or b.virtual[p] or b.tag[p] in (1, 3) or b.comps[p] == Compartment.SOMA:
                        break
                    run += float(np.linalg.norm(b.nodes[p] - b.nodes[j]))
                    rmin = min(rmin, b.radii[p])
                    j = p
                rm = min(0.45 * rmin, cfg.mito_radius_nm[1])
                if j == i or rm < cfg.mito_radius_nm[0]:
                    continue
                # a chain of capsules following the neurite (mitochondria bend with it)
                k = i
                mid += 1
                while k != j:
                    out.append((b.nodes[k], b.nodes[par[k]], rm, cid, mid))
                    k = par[k]
            info = self.infos[cid]
            if info.soma_nm is not None:
                for _m in range(int(rng.integers(6, 14))):
                    u = random_direction(rng)
                    rr = rng.uniform(info.nucleus_r + 150.0, max(info.nucleus_r + 160.0, info.soma_r - 200.0))
                    a = info.soma_nm + u * rr
                    v = perpendicular(u, rng)
                    ln = rng.uniform(*cfg.mito_length_nm)
                    mid += 1
                    out.append((a - v * ln / 2, a + v * ln / 2, cfg.mito_radius_nm[1], cid, mid))
        return out


def grow_neuropil(cfg: TissueConfig, rng: np.random.Generator,
                  progress: Callable[[str, float], None] | None = None) -> Neuropil:
    """Grow all cells of one tissue block (nm geometry, skeletons, synapse seeds)."""
    def prog(stage: str) -> Callable[[float], None]:
        return (lambda f: progress(stage, f)) if progress is not None else (lambda f: None)

    g = _Grower(cfg, rng)
    g.grow_somata()
    g.f0 = g.fill()  # somata replace neuropil; the fractions apply to what is left
    g.grow_myelinated()  # big and straight: they go before the space fills up
    g.grow_passing_dendrites(prog("dendrites"))
    g.sites.freeze(np.zeros(3), g.vol_hi)
    g.grow_axons(prog("axons"))
    contact_synapses(g)
    mitos = g.place_mitochondria()
    vol_um3 = float(np.prod(g.vol_hi)) / 1e9
    glia: dict[int, np.ndarray] = {}
    for _ in range(max(1, int(round(vol_um3 * cfg.astrocytes_per_um3)))):
        gid = g.next_id
        g.next_id += 1
        g.infos[gid] = CellInfo(gid, "glia", "astrocyte", "")
        glia[gid] = rng.uniform(g.w_lo, g.w_hi)
    builders = [g.builders[c] for c in sorted(g.builders)]
    infos = {c: i for c, i in g.infos.items() if c in g.builders or i.kind == "glia"}
    return Neuropil(builders=builders, infos=infos, seeds=g.seeds, glia_centres=glia, mitos=mitos)
