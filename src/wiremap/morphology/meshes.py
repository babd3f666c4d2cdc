"""Meshes of segments: zmesh per block, merged per segment, multi-resolution precomputed.

Coordinates: vertices are ``(x, y, z)`` in nanometres (Neuroglancer's
order; this module is the viewer boundary), voxel ``i`` centred at
``(i + 0.5) * resolution`` as Neuroglancer draws it.  Faces are uint32
triples of vertex indices.

Blocks are meshed with one voxel of overlap on their high sides and no
closing at block faces, so marching cubes of neighbouring blocks meet on a
shared plane of identical vertices; the volume's outer faces are padded with
background so every mesh is closed there.  Merging a segment concatenates
its block pieces and fuses the shared vertices: the result is watertight.

Output format: Neuroglancer ``neuroglancer_multilod_draco`` (the multi-
resolution format igneous writes), unsharded::

    mesh/info          {"@type": "neuroglancer_multilod_draco", "vertex_quantization_bits": 16,
                        "transform": identity (stored model space = nm), "lod_scale_multiplier": 1}
    mesh/<id>.index    manifest: chunk_shape, grid_origin, num_lods, lod_scales, vertex_offsets,
                       num_fragments_per_lod, then per LOD fragment positions and byte sizes
    mesh/<id>          Draco fragments, LOD 0 first, each LOD in Z-curve order

LOD ``k`` cuts the mesh, simplified ``4**k`` times harder, into a grid of
``chunk_shape * 2**k`` cubes (``zmesh.chunk_mesh``); each fragment's vertices
are quantised to 16 bits over its cube.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import DracoPy
import numpy as np
import zmesh

from wiremap.errors import InputError

QUANTIZATION_BITS = 16


@dataclass(frozen=True)
class TriMesh:
    """A triangle mesh: ``vertices`` (N, 3) float64 x/y/z nm, ``faces`` (M, 3) uint32."""

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.faces) == 0


def mesh_block(
    labels_zyx: np.ndarray,
    resolution_nm: tuple[float, float, float],
    offset_zyx: tuple[int, int, int],
    close_low: tuple[bool, bool, bool] = (True, True, True),
    close_high: tuple[bool, bool, bool] = (True, True, True),
) -> dict[int, TriMesh]:
    """Marching-cubes meshes of every label in a block (pure function).

    ``close_low``/``close_high`` say, per axis (z, y, x), whether that face of
    the block is a face of the volume (padded with background, so closed) or
    an inner face (left open, to meet the neighbouring block).
    """
    if labels_zyx.ndim != 3:
        raise InputError(f"labels must be 3-D (z, y, x), got shape {labels_zyx.shape}")
    pad = [(int(lo), int(hi)) for lo, hi in zip(close_low, close_high, strict=True)]
    data = np.pad(labels_zyx, pad) if any(any(p) for p in pad) else labels_zyx
    if not data.any():
        return {}
    rz, ry, rx = resolution_nm
    mesher = zmesh.Mesher((rx, ry, rz))
    mesher.mesh(np.asfortranarray(data.T))  # zmesh wants (x, y, z)
    origin = np.array([(o - p[0] + 0.5) * r for o, p, r in zip(offset_zyx[::-1], pad[::-1], (rx, ry, rz), strict=True)])
    out: dict[int, TriMesh] = {}
    for label in mesher.ids():
        m = mesher.get(label, normals=False)
        out[int(label)] = TriMesh(m.vertices.astype(np.float64) + origin, m.faces.astype(np.uint32))
        mesher.erase(label)
    mesher.clear()
    return out


def merge_meshes(parts: list[TriMesh], decimals: int = 3) -> TriMesh:
    """Concatenate mesh pieces and fuse vertices at identical positions (block seams)."""
    parts = [p for p in parts if not p.empty]
    if not parts:
        return TriMesh(np.zeros((0, 3)), np.zeros((0, 3), np.uint32))
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces.astype(np.int64) + o for p, o in zip(parts, offsets, strict=True)])
    unique, inverse = np.unique(np.round(vertices, decimals), axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return TriMesh(unique, faces[keep].astype(np.uint32))


def simplify(mesh: TriMesh, reduction: float, preserve_border: bool = False) -> TriMesh:
    """Fast quadric mesh simplification (zmesh's fqmr), about ``reduction`` times fewer faces.

    ``preserve_border`` keeps open edges in place: block pieces simplified so
    still meet their neighbours exactly.
    """
    if mesh.empty or reduction <= 1:
        return mesh
    zm = zmesh.Mesh(mesh.vertices.astype(np.float32), mesh.faces, None)
    target = max(int(len(mesh.faces) / reduction), 4)
    simple = zmesh.simplify_fqmr(zm, target_count=target, preserve_border=preserve_border, aggressiveness=7.0)
    return TriMesh(simple.vertices.astype(np.float64), simple.faces.astype(np.uint32))


def edge_balance(mesh: TriMesh) -> float:
    """Fraction of undirected edges shared by exactly two faces (1.0 = closed 2-manifold surface)."""
    if mesh.empty:
        return 1.0
    f = mesh.faces.astype(np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return float(np.mean(counts == 2))


def _morton(positions: np.ndarray) -> np.ndarray:
    """Z-curve code of non-negative (x, y, z) grid positions, x in the lowest bit."""
    code = np.zeros(len(positions), np.uint64)
    pos = positions.astype(np.uint64)
    for bit in range(21):
        for axis in range(3):
            code |= ((pos[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return code


def _nondegenerate(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces whose three (quantised) corners are distinct points."""
    v = vertices[faces]
    same = (v[:, 0] == v[:, 1]).all(1) | (v[:, 1] == v[:, 2]).all(1) | (v[:, 0] == v[:, 2]).all(1)
    return faces[~same]


def encode_multires(
    mesh: TriMesh,
    num_lods: int,
    resolution_nm: tuple[float, float, float],
) -> tuple[bytes, bytes]:
    """Manifest (``<id>.index``) and fragment data (``<id>``) of one segment's mesh."""
    if mesh.empty:
        raise InputError("cannot encode an empty mesh")
    res_min = float(min(resolution_nm))
    lo = np.floor(mesh.vertices.min(axis=0)) - res_min
    hi = np.ceil(mesh.vertices.max(axis=0)) + res_min
    top = 2 ** (num_lods - 1)
    chunk_shape = np.maximum(np.ceil((hi - lo) / top), 4 * res_min)
    lod_meshes = [mesh]
    for _ in range(1, num_lods):
        lod_meshes.append(simplify(lod_meshes[-1], 4.0))
    header = [struct.pack("<3f", *chunk_shape), struct.pack("<3f", *lo), struct.pack("<I", num_lods)]
    header.append(struct.pack(f"<{num_lods}f", *[res_min * 2**k for k in range(num_lods)]))
    header.append(np.zeros((num_lods, 3), "<f4").tobytes())  # vertex_offsets
    per_lod: list[tuple[np.ndarray, list[bytes]]] = []
    for k, lod in enumerate(lod_meshes):
        size = chunk_shape * 2**k
        shifted = zmesh.Mesh(_off_planes(lod.vertices - lo, size).astype(np.float32), lod.faces, None)
        pieces = zmesh.chunk_mesh(shifted, size, (0.0, 0.0, 0.0))
        quantized = {}
        for key, piece in pieces.items():
            position = np.clip(np.array(key, np.int64), 0, None)
            q = _quantize(piece.vertices.astype(np.float64), position * size, size)
            faces = _nondegenerate(q, piece.faces.astype(np.uint32))
            if len(faces):  # Draco refuses pieces whose triangles all collapsed in quantisation
                quantized[tuple(position)] = (q, faces)
        positions = np.array(list(quantized), np.int64).reshape(-1, 3)
        order = np.argsort(_morton(positions), kind="stable")
        blobs = [DracoPy.encode(*quantized[tuple(positions[j])], compression_level=4) for j in order]
        per_lod.append((positions[order], blobs))
    header.append(np.array([len(b) for _, b in per_lod], "<u4").tobytes())
    for positions, blobs in per_lod:
        header.append(positions.T.astype("<u4").tobytes())
        header.append(np.array([len(b) for b in blobs], "<u4").tobytes())
    return b"".join(header), b"".join(b for _, blobs in per_lod for b in blobs)


def _off_planes(vertices: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Vertices (grid origin at 0) moved off the fragment grid's planes by 1e-4 of a chunk, a tenth of a
    quantisation step: zmesh.chunk_mesh aborts the whole process (std::bad_array_new_length) when a
    corner lies exactly on a cutting plane, as lattice vertices of 4.6 nm data with 36.8 nm chunks do."""
    eps = 1e-4 * np.asarray(size, np.float64)
    t = vertices / size
    on_plane = np.abs(t - np.rint(t)) * size < eps
    return np.where(on_plane, vertices + eps, vertices)


def _quantize(vertices: np.ndarray, origin: np.ndarray, size: np.ndarray) -> np.ndarray:
    """nm -> integer position within a fragment's cube, as the multilod format stores it."""
    top = 2**QUANTIZATION_BITS - 1
    q = np.rint((vertices - origin) / size * top)
    return np.clip(q, 0, top).astype(np.uint32)


def decode_multires(manifest: bytes, data: bytes) -> list[TriMesh]:
    """The meshes of every LOD of one segment, back in nm (for QC and tests)."""
    off = 0

    def take(fmt: str, n: int) -> np.ndarray:
        nonlocal off
        arr = np.frombuffer(manifest, fmt, count=n, offset=off)
        off += arr.nbytes
        return arr

    chunk_shape = take("<f4", 3).astype(np.float64)
    grid_origin = take("<f4", 3).astype(np.float64)
    num_lods = int(take("<u4", 1)[0])
    take("<f4", num_lods)  # lod_scales
    vertex_offsets = take("<f4", 3 * num_lods).reshape(num_lods, 3).astype(np.float64)
    counts = take("<u4", num_lods)
    lods, pos = [], 0
    top = 2**QUANTIZATION_BITS - 1
    for k in range(num_lods):
        positions = take("<u4", 3 * int(counts[k])).reshape(3, -1).T
        sizes = take("<u4", int(counts[k]))
        size = chunk_shape * 2**k
        parts = []
        for p, s in zip(positions, sizes, strict=True):
            decoded = DracoPy.decode(data[pos : pos + int(s)])
            pos += int(s)
            q = np.asarray(decoded.points, np.float64).reshape(-1, 3)
            verts = grid_origin + vertex_offsets[k] + size * (p + q / top)
            parts.append(TriMesh(verts, np.asarray(decoded.faces, np.uint32).reshape(-1, 3)))
        lods.append(merge_meshes(parts, decimals=1))
    return lods


def multires_info(resolution_nm: tuple[float, float, float]) -> dict:
    """``mesh/info`` of the multi-resolution format (stored model space is nm)."""
    return {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": QUANTIZATION_BITS,
        "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
        "lod_scale_multiplier": 1.0,
    }
