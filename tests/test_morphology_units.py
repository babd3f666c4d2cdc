"""Morphology building blocks on shapes with known answers: meshes, multires format, skeletons,
SWC, myelin filter, compartment rules."""

from __future__ import annotations

import numpy as np
import pytest
import zmesh

from wiremap.errors import InputError
from wiremap.morphology.compartments import AXON, DENDRITE, GLIA, SOMA, classify_nodes
from wiremap.morphology.meshes import (
    TriMesh,
    _off_planes,
    decode_multires,
    edge_balance,
    encode_multires,
    merge_meshes,
    mesh_block,
)
from wiremap.morphology.myelin import iou, myelin_mask
from wiremap.morphology.skeletons import (
    SkeletonData,
    decode_precomputed,
    encode_precomputed,
    merge_pieces,
    skeletonize_block,
)
from wiremap.morphology.swc import parse_swc, to_swc

RES = (30.0, 4.0, 4.0)


def _tube(shape=(20, 60, 200), radius_px=8, label=5) -> np.ndarray:
    """A straight tube along x, radius in x/y pixels (z voxels are 7.5x thicker)."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    r2 = ((z - shape[0] / 2) * RES[0] / RES[1]) ** 2 + (y - shape[1] / 2) ** 2
    labels = np.zeros(shape, np.uint64)
    labels[(r2 <= radius_px**2) & (x >= 10) & (x < shape[2] - 10)] = label
    return labels


def test_block_meshes_merge_into_a_closed_surface_inside_the_bbox():
    labels = _tube()
    whole = mesh_block(labels, RES, (0, 0, 0))[5]
    a = mesh_block(labels[:, :, :101], RES, (0, 0, 0), close_high=(True, True, False))[5]
    b = mesh_block(labels[:, :, 100:], RES, (0, 0, 100), close_low=(True, True, False))[5]
    merged = merge_meshes([a, b])
    assert edge_balance(merged) == 1.0
    assert len(merged.vertices) == len(merge_meshes([whole]).vertices)
    zyx = np.argwhere(labels)
    lo = (zyx.min(0) * RES)[::-1]
    hi = ((zyx.max(0) + 1) * RES)[::-1]
    assert np.all(merged.vertices >= lo - 1e-6) and np.all(merged.vertices <= hi + 1e-6)
    # a closed surface: the enclosed volume (divergence theorem) is the voxel volume within 10%
    v = merged.vertices[merged.faces.astype(int)]
    volume = abs(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6)
    assert volume == pytest.approx(labels.astype(bool).sum() * np.prod(RES), rel=0.1)


def test_multires_round_trip_keeps_vertices_within_quantisation():
    labels = _tube()
    mesh = merge_meshes([mesh_block(labels, RES, (0, 0, 0))[5]])
    manifest, data = encode_multires(mesh, 3, RES)
    lods = decode_multires(manifest, data)
    assert len(lods) == 3
    faces = [len(lod.faces) for lod in lods]
    assert faces[0] > faces[1] > faces[2] > 0
    assert lods[0].vertices.min(0) == pytest.approx(mesh.vertices.min(0), abs=0.5)
    assert lods[0].vertices.max(0) == pytest.approx(mesh.vertices.max(0), abs=0.5)
    assert edge_balance(lods[0]) > 0.97  # fragments are cut at cube faces and re-fused here


def test_multires_of_a_segment_at_the_volume_origin():
    """A segment touching the low faces (the fragment grid starts below 0) round-trips like any other."""
    mesh = merge_meshes([mesh_block(_tube(), RES, (0, 0, 0))[5]])
    at_origin = TriMesh(mesh.vertices - mesh.vertices.min(0) + 0.25, mesh.faces)
    lods = decode_multires(*encode_multires(at_origin, 3, RES))
    assert len(lods) == 3 and all(len(lod.faces) for lod in lods)
    assert lods[0].vertices.min(0) == pytest.approx(at_origin.vertices.min(0), abs=0.5)
    assert lods[0].vertices.max(0) == pytest.approx(at_origin.vertices.max(0), abs=0.5)


def test_fragment_grid_cuts_a_box_whose_corners_lie_on_its_planes():
    """zmesh.chunk_mesh aborted the process on this box (4.6 nm lattice, 36.8 nm chunks, 110.4 = 3 chunks);
    ``_off_planes`` moves corners on a plane by 1e-4 of a chunk and nothing else."""
    lo, hi = (9.2, 10.0, 9.2), (110.4, 92.8, 59.2)
    corners = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])])
    faces = np.array(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1]]
        + [[2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
        np.uint32,
    )
    size = np.full(3, 36.8)
    moved = _off_planes(corners, size)
    assert np.allclose(moved[:, 0], np.where(corners[:, 0] == 110.4, 110.4 + 36.8e-4, corners[:, 0]))
    assert np.array_equal(moved[:, 1:], corners[:, 1:])
    pieces = zmesh.chunk_mesh(zmesh.Mesh(moved.astype(np.float32), faces, None), size, (0.0, 0.0, 0.0))
    assert sum(len(p.faces) for p in pieces.values()) >= len(faces)


def test_empty_block_has_no_meshes_or_skeletons():
    empty = np.zeros((4, 8, 8), np.uint64)
    assert mesh_block(empty, RES, (0, 0, 0)) == {}
    assert skeletonize_block(empty, RES, (0, 0, 0)) == {}
    with pytest.raises(InputError):
        mesh_block(np.zeros((8, 8), np.uint64), RES, (0, 0, 0))


def test_skeleton_of_a_tube_across_two_blocks_has_its_length_and_radius():
    labels = _tube()
    length_nm = (labels.shape[2] - 20) * RES[2]
    a = skeletonize_block(labels[:, :, :101], RES, (0, 0, 0))[5]
    b = skeletonize_block(labels[:, :, 100:], RES, (0, 0, 100))[5]
    sk = merge_pieces([a, b], 5, dust_nm=100, tick_nm=100)
    assert sk.cable_length() == pytest.approx(length_nm, rel=0.08)
    assert np.median(sk.radii) == pytest.approx(8 * RES[1], rel=0.3)
    back = decode_precomputed(encode_precomputed(sk))
    assert np.allclose(back.vertices, sk.vertices, atol=1e-3) and np.array_equal(back.edges, sk.edges)
    with pytest.raises(InputError):
        decode_precomputed(encode_precomputed(sk)[:-5])


def _chain(n: int, step: float, radius: float, comp: int = 0, start=(0.0, 0.0, 0.0)) -> SkeletonData:
    v = np.array(start) + np.arange(n)[:, None] * np.array([step, 0.0, 0.0])
    e = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1).astype(np.uint32)
    return SkeletonData(v, e, np.full(n, radius, np.float32), np.full(n, comp, np.uint8))


def test_swc_round_trip_keeps_tree_positions_radii_and_types():
    sk = _chain(30, 100.0, 80.0, AXON)
    sk.compartments[:5] = SOMA
    text = to_swc(sk, 7)
    back = parse_swc(text)
    assert len(back.vertices) == 30 and len(back.edges) == 29
    order = np.argsort(back.vertices[:, 0])
    assert np.allclose(back.vertices[order], sk.vertices, atol=1e-3)
    assert np.allclose(back.radii, 80.0)
    assert np.array_equal(back.compartments[order], sk.compartments)
    with pytest.raises(InputError):
        parse_swc("1 1 0 0 0 1 5\n")  # parent 5 is missing


def test_axon_and_dendrite_from_calibre_spines_and_boutons_do_not_flip_them():
    dend = _chain(60, 100.0, 350.0)
    dend.radii[20:24] = 60.0  # a spine neck seen on the shaft: too short to count
    axon = _chain(60, 100.0, 70.0, start=(0.0, 5000.0, 0.0))
    axon.radii[30:34] = 220.0  # a bouton
    for sk, want in ((dend, DENDRITE), (axon, AXON)):
        got = classify_nodes(sk, volume_nm3=np.pi * float(np.median(sk.radii)) ** 2 * sk.cable_length())
        assert (got == want).mean() == 1.0


def test_glia_soma_and_myelin_votes():
    veil = _chain(40, 100.0, 25.0)
    assert (classify_nodes(veil, volume_nm3=4000.0 * veil.cable_length()) == GLIA).all()
    cell = _chain(40, 100.0, 300.0)
    cell.radii[:10] = 1200.0  # a soma at the start
    labels = classify_nodes(cell, volume_nm3=1e12)
    assert (labels[:10] == SOMA).all() and (labels[25:] == DENDRITE).all()  # the sphere reaches x = 2100 nm
    fat_axon = _chain(40, 100.0, 300.0)  # calibre of a dendrite, but wrapped in myelin
    ring = np.array([[x, 340.0 * np.cos(a), 340.0 * np.sin(a)] for x in range(0, 4000, 100) for a in (0, 2, 4)])
    labels = classify_nodes(fat_axon, volume_nm3=1e12, myelin_points_nm=ring)
    assert (labels == AXON).all()


def test_myelin_filter_finds_a_dark_sheath_not_thin_membranes():
    rng = np.random.default_rng(0)
    image = rng.normal(150, 8, (3, 200, 200)).clip(0, 255)
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    sheath = (r >= 40) & (r < 60)  # 80 nm thick at 4 nm
    image[:, sheath] = 25
    image[:, 20, :] = 30  # a membrane, 1 px
    image[:, :, 170:172] = 30  # another, 2 px
    got = myelin_mask(image.astype(np.uint8), RES)
    truth = np.broadcast_to(sheath, image.shape)
    assert iou(got, truth) > 0.9
    assert iou(np.zeros(3), np.zeros(3)) == 1.0
    # on an aligned stack 0 is no data: empty canvas and blank sections are not myelin
    aligned = np.zeros((4, 260, 260), np.uint8)
    aligned[:3, 30:230, 30:230] = image.astype(np.uint8)
    got = myelin_mask(aligned, RES)
    assert not got[3].any() and not got[:, :30].any() and not got[:, :, :30].any()
    assert iou(got[:3, 30:230, 30:230], truth) > 0.9
