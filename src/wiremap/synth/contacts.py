"""Synapses where axons happen to touch their targets (en passant), by the type rules.

Steered boutons (``neuropil``) alone give too few synapses in a densely
packed block: sites get crowded out before an axon arrives.  Real axons make
most synapses where they pass their targets, so after growth every touch of
an axon with a spine head, dendrite shaft or soma may become a synapse, with
a chance proportional to the pre type's preference for that post type and
compartment.  Spine heads go first: nearly every real spine carries one
excitatory synapse.  The axon node swells into a small varicosity that meets
the target; the cleft is carved later, in voxels (``wiring.carve_clefts``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from wiremap.synth.model import Compartment
from wiremap.synth.morphology import CellBuilder
from wiremap.synth.wiring import POST_COMPARTMENTS, SynapseSeed

if TYPE_CHECKING:
    from wiremap.synth.neuropil import _Grower


def contact_synapses(g: _Grower) -> None:
    """Turn some axon-target touches into en-passant synapses, by the same rule weights.

    Steered boutons alone give too few synapses in a dense block (sites get
    crowded out); real axons mostly make synapses where they pass their
    targets.  Each touch of an axon node with a spine head, dendrite shaft
    or soma is accepted with probability ``contact_synapse_rate`` times the
    pre type's relative preference for that post type and compartment.
    """
    cfg, rng = g.cfg, g.rng
    if cfg.contact_synapse_rate <= 0:
        return
    tp, tr, tc, tcell, tnode, tq, tqr = [], [], [], [], [], [], []
    for cid in sorted(g.builders):
        if g.infos[cid].kind != "neuron":
            continue
        b = g.builders[cid]
        for i in range(len(b.nodes)):
            if b.virtual[i] or b.tag[i] in (1, 2) or b.sheath[i] > 0:
                continue
            if b.comps[i] == Compartment.SOMA:
                k = 2
            elif b.comps[i] == Compartment.DENDRITE:
                k = 0 if b.tag[i] == 3 else 1
            else:
                continue
            par = b.parents[i]
            seg = par >= 0 and not b.virtual[par] and b.comps[par] == b.comps[i] and k == 1
            tq.append(b.nodes[par] if seg else b.nodes[i])
            tqr.append(b.radii[par] if seg else b.radii[i])
            tp.append(b.nodes[i])
            tr.append(b.radii[i])
            tc.append(k)
            tcell.append(cid)
            tnode.append(i)
    if not tp:
        return
    tree = cKDTree(np.array(tp))
    tr_a, tc_a, tcell_a = np.array(tr), np.array(tc), np.array(tcell)
    tp_a, tq_a, tqr_a = np.array(tp), np.array(tq), np.array(tqr)
    seg_len = np.linalg.norm(tq_a - tp_a, axis=1)
    seg_max = float(seg_len.max())
    # how many synapses a target can take: one per spine head, one per
    # ``synapse_area_nm2`` of shaft or soma surface
    area = np.where(tc_a == 1, 2 * np.pi * tr_a * np.maximum(seg_len, tr_a), 4 * np.pi * tr_a**2)
    cap = np.where(tc_a == 0, 1, np.maximum(1, area // cfg.synapse_area_nm2)).astype(np.int64)
    used = np.zeros(len(tp), np.int64)
    wmax = g.weights.max() or 1.0
    rmax = float(tr_a.max())
    reach = g.cfg.contact_reach_nm
    st = g.stats
    _spine_pass(g, tp_a, tr_a, tc_a, tcell_a, used)
    for cid in sorted(g.builders):
        b = g.builders[cid]
        ti = g.type_of.get(cid)
        if ti is None:
            continue
        last = -np.inf
        run = 0.0
        for i in range(1, len(b.nodes)):
            p = b.nodes[i]
            par = b.parents[i]
            if par >= 0 and not b.virtual[par]:
                run += float(np.linalg.norm(p - b.nodes[par]))
            if run - last < cfg.bouton_spacing_nm * 0.3 or not _axon_ok(g, b, i):
                continue
            ra = b.radii[i]
            for j in tree.query_ball_point(p, ra + rmax + reach + seg_max):
                if used[j] >= cap[j] or tcell_a[j] == cid:
                    continue
                # nearest point on the target's segment (node -> parent), radius there
                ab = tq_a[j] - tp_a[j]
                l2 = float(ab @ ab)
                t = 0.0 if l2 == 0 else min(1.0, max(0.0, float((p - tp_a[j]) @ ab) / l2))
                q = tp_a[j] + t * ab
                rt = tr_a[j] + t * (tqr_a[j] - tr_a[j])
                v = p - q
                dist = float(np.linalg.norm(v))
                if dist > ra + rt + reach or dist < rt + 0.5 * ra:
                    continue
                w = g.weights[ti, g.type_of[int(tcell_a[j])], tc_a[j]] / wmax
                if rng.random() >= cfg.contact_synapse_rate * w:
                    continue
                u = v / dist
                centre = q + u * rt
                # swell the axon into a small varicosity that touches the target
                b.radii[i] = max(ra, dist - rt)
                b.tag[i] = 2
                used[j] += 1
                last = run
                st["contact_synapse"] += 1
                disc = min(0.8 * b.radii[i], 0.7 * rt if tc_a[j] == 0 else 250.0)
                g.seeds.append(SynapseSeed(
                    pre=cid, post=int(tcell_a[j]), centre_nm=centre, normal=-u,
                    disc_nm=float(max(disc, 40.0)), post_compartment=POST_COMPARTMENTS[tc_a[j]],
                ))
                break

def _axon_ok(g: _Grower, b: CellBuilder, i: int) -> bool:
    """May axon node ``i`` of ``b`` become a bouton (not myelinated, not the initial segment)?"""
    if b.comps[i] != Compartment.AXON or b.tag[i] != 0 or b.sheath[i] > 0 or b.virtual[i]:
        return False
    p = b.nodes[i]
    if np.any(p < 0) or np.any(p >= g.vol_hi):
        return False
    info = g.infos[b.cid]
    return info.soma_nm is None or float(np.linalg.norm(p - info.soma_nm)) >= info.soma_r + 1000.0

def _spine_pass(g: _Grower, tp_a, tr_a, tc_a, tcell_a, used) -> None:
    """Give spine heads their synapse first: a touching axon, drawn by the pre types' preference.

    Nearly every real spine head carries one excitatory synapse; letting
    heads pick among the axons that touch them (rather than waiting for an
    axon to pick them) makes spine synapses as common as they should be.
    """
    cfg, rng = g.cfg, g.rng
    heads = np.flatnonzero((tc_a == 0) & np.all((tp_a >= 0) & (tp_a < g.vol_hi), axis=1))
    if heads.size == 0 or cfg.spine_synapse_rate <= 0:
        return
    ap, ar, acell, anode = [], [], [], []
    for cid in sorted(g.builders):
        if cid not in g.type_of:
            continue
        b = g.builders[cid]
        for i in range(len(b.nodes)):
            if _axon_ok(g, b, i):
                ap.append(b.nodes[i])
                ar.append(b.radii[i])
                acell.append(cid)
                anode.append(i)
    if not ap:
        return
    ap_a, ar_a, acell_a = np.array(ap), np.array(ar), np.array(acell)
    tree = cKDTree(ap_a)
    reach = cfg.contact_reach_nm * 1.5
    taken = np.zeros(len(ap), bool)
    rmax = float(ar_a.max())
    for j in heads:
        post = int(tcell_a[j])
        tj = g.type_of[post]
        cand = np.array(tree.query_ball_point(tp_a[j], tr_a[j] + rmax + reach), dtype=np.int64)
        if cand.size == 0:
            continue
        cand = cand[~taken[cand] & (acell_a[cand] != post)]
        dist = np.linalg.norm(ap_a[cand] - tp_a[j], axis=1)
        cand = cand[(dist <= tr_a[j] + ar_a[cand] + reach) & (dist > tr_a[j] + 0.5 * ar_a[cand])]
        if cand.size == 0:
            continue
        w = np.array([g.weights[g.type_of[int(c)], tj, 0] for c in acell_a[cand]])
        if w.sum() <= 0 or rng.random() >= cfg.spine_synapse_rate * min(1.0, w.max() / (g.weights.max() or 1.0)):
            continue
        k = int(cand[rng.choice(cand.size, p=w / w.sum())])
        cid, i = int(acell_a[k]), anode[k]
        b = g.builders[cid]
        v = ap_a[k] - tp_a[j]
        dist = float(np.linalg.norm(v))
        u = v / dist
        b.radii[i] = max(b.radii[i], dist - tr_a[j])
        b.tag[i] = 2
        taken[k] = True
        # neighbours along the same axon stay bare (boutons are spaced)
        near = tree.query_ball_point(ap_a[k], 0.3 * cfg.bouton_spacing_nm)
        taken[[m for m in near if acell_a[m] == cid]] = True
        used[j] += 1
        g.stats["spine_synapse"] += 1
        g.seeds.append(SynapseSeed(
            pre=cid, post=post, centre_nm=tp_a[j] + u * tr_a[j], normal=-u,
            disc_nm=float(max(0.7 * tr_a[j], 40.0)), post_compartment="spine",
        ))
