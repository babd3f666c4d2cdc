"""Skeletons of segments: kimimaro (TEASAR) per block, merged per segment, precomputed.

Coordinates: vertices are ``(x, y, z)`` in nanometres, voxel ``i`` centred
at ``(i + 0.5) * resolution`` (as Neuroglancer and the meshes place it).
Edges are uint32 vertex-index pairs; radii are the distance to the segment
boundary (nm) at each vertex.

Blocks overlap by one voxel on their high sides and kimimaro runs with
``fix_borders``: a neurite crossing a block face gets a vertex at the same
point of the shared plane in both blocks, so merging a segment's pieces
(``osteoid.Skeleton.simple_merge`` + ``consolidate``) joins them, and
``kimimaro.postprocess`` then bridges what is left apart, removes short
ticks and loops, and drops dust.

Precomputed format (``skeletons/info`` + ``skeletons/<id>``)::

    uint32 num_vertices, uint32 num_edges, float32 positions [n, 3] (x, y, z nm),
    uint32 edges [m, 2], then each vertex attribute of the info in order:
    radius float32 [n], compartment uint8 [n] (``Compartment`` codes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import kimimaro
import numpy as np
from osteoid import Skeleton as OsteoidSkeleton

from wiremap.errors import InputError

VERTEX_ATTRIBUTES = (("radius", "float32"), ("compartment", "uint8"))


@dataclass(frozen=True)
class TeasarParams:
    """kimimaro's TEASAR parameters, in nm where they are lengths."""

    scale: float = 1.5  # invalidation radius = scale * boundary distance + const
    const: float = 150.0  # nm
    pdrf_scale: float = 100000.0  # penalty field weight (keeps paths central)
    pdrf_exponent: int = 4
    soma_detection_threshold: float = 750.0  # boundary distance (nm) that marks a soma candidate
    soma_acceptance_threshold: float = 3500.0  # boundary distance (nm) that confirms a soma
    soma_invalidation_scale: float = 2.0
    soma_invalidation_const: float = 300.0  # nm

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SkeletonData:
    """One segment's skeleton: ``vertices`` (N, 3) x/y/z nm, ``edges`` (M, 2), ``radii`` (N,),
    ``compartments`` (N,) uint8 (0 until classified)."""

    vertices: np.ndarray
    edges: np.ndarray
    radii: np.ndarray
    compartments: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.vertices) == 0

    def cable_length(self) -> float:
        if len(self.edges) == 0:
            return 0.0
        d = self.vertices[self.edges[:, 0]] - self.vertices[self.edges[:, 1]]
        return float(np.linalg.norm(d, axis=1).sum())


def skeletonize_block(
    labels_zyx: np.ndarray,
    resolution_nm: tuple[float, float, float],
    offset_zyx: tuple[int, int, int],
    params: TeasarParams | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """TEASAR skeletons of every label of a block, as mergeable pieces (pure function)."""
    if labels_zyx.ndim != 3:
        raise InputError(f"labels must be 3-D (z, y, x), got shape {labels_zyx.shape}")
    if not labels_zyx.any():
        return {}
    params = params or TeasarParams()
    rz, ry, rx = resolution_nm
    skels = kimimaro.skeletonize(
        np.asfortranarray(labels_zyx.T),
        teasar_params=params.as_dict(),
        anisotropy=(rx, ry, rz),
        dust_threshold=0,
        fix_branching=True,
        fix_borders=True,
        progress=False,
        parallel=1,
    )
    origin = np.array([(o + 0.5) * r for o, r in zip(offset_zyx[::-1], (rx, ry, rz), strict=True)])
    out = {}
    for label, sk in skels.items():
        if len(sk.vertices) == 0:
            continue
        out[int(label)] = {
            "vertices": sk.vertices.astype(np.float64) + origin,
            "edges": sk.edges.astype(np.uint32),
            "radii": sk.radius.astype(np.float32),
        }
    return out


def merge_pieces(
    pieces: list[dict[str, np.ndarray]],
    segment_id: int,
    *,
    dust_nm: float = 500.0,
    tick_nm: float = 300.0,
) -> SkeletonData:
    """Join one segment's block pieces into one skeleton (empty if it is all dust)."""
    skels = [
        OsteoidSkeleton(
            p["vertices"].astype(np.float32), p["edges"], radii=p["radii"].astype(np.float32), segid=segment_id
        )
        for p in pieces
        if len(p.get("vertices", ())) > 0
    ]
    if not skels:
        return empty_skeleton()
    merged = OsteoidSkeleton.simple_merge(skels).consolidate()
    if len(merged.edges):
        merged = kimimaro.postprocess(merged, dust_threshold=dust_nm, tick_threshold=tick_nm)
    if len(merged.vertices) == 0:
        return empty_skeleton()
    n = len(merged.vertices)
    return SkeletonData(
        merged.vertices.astype(np.float64),
        merged.edges.astype(np.uint32),
        merged.radius.astype(np.float32),
        np.zeros(n, np.uint8),
    )


def empty_skeleton() -> SkeletonData:
    return SkeletonData(np.zeros((0, 3)), np.zeros((0, 2), np.uint32), np.zeros(0, np.float32), np.zeros(0, np.uint8))


def encode_precomputed(sk: SkeletonData) -> bytes:
    """Binary of one skeleton in the precomputed format of ``skeleton_info``."""
    n, m = len(sk.vertices), len(sk.edges)
    return b"".join(
        [
            struct.pack("<II", n, m),
            sk.vertices.astype("<f4").tobytes(),
            sk.edges.astype("<u4").tobytes(),
            sk.radii.astype("<f4").tobytes(),
            sk.compartments.astype("u1").tobytes(),
        ]
    )


def decode_precomputed(data: bytes) -> SkeletonData:
    """Inverse of :func:`encode_precomputed`; a clear error on a truncated file."""
    if len(data) < 8:
        raise InputError("skeleton file is shorter than its 8-byte header")
    n, m = struct.unpack_from("<II", data, 0)
    need = 8 + 12 * n + 8 * m + 4 * n + n
    if len(data) < need:
        raise InputError(f"skeleton file has {len(data)} bytes, its header promises {need}")
    off = 8
    vertices = np.frombuffer(data, "<f4", 3 * n, off).reshape(n, 3).astype(np.float64)
    off += 12 * n
    edges = np.frombuffer(data, "<u4", 2 * m, off).reshape(m, 2).astype(np.uint32)
    off += 8 * m
    radii = np.frombuffer(data, "<f4", n, off).copy()
    off += 4 * n
    comps = np.frombuffer(data, "u1", n, off).copy()
    return SkeletonData(vertices, edges, radii, comps)


def skeleton_info() -> dict:
    """``skeletons/info``: positions in nm (identity transform), radius and compartment per vertex."""
    return {
        "@type": "neuroglancer_skeletons",
        "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
        "vertex_attributes": [
            {"id": name, "data_type": dtype, "num_components": 1} for name, dtype in VERTEX_ATTRIBUTES
        ],
        "spatial_index": None,
    }


def to_tree(sk: SkeletonData) -> tuple[np.ndarray, np.ndarray]:
    """Parent of every vertex (-1 at roots) and a topological order (roots first), one
    tree per connected component, rooted at the thickest vertex (the soma when there is one)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n = len(sk.vertices)
    parents = np.full(n, -1, np.int64)
    if n == 0:
        return parents, np.zeros(0, np.int64)
    e = sk.edges.astype(np.int64)
    graph = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    graph = graph + graph.T
    ncomp, comp = connected_components(graph, directed=False)
    order_parts = []
    for c in range(ncomp):
        members = np.flatnonzero(comp == c)
        root = members[np.argmax(sk.radii[members])]
        order, pred = breadth_first_order(graph, root, directed=False, return_predecessors=True)
        parents[order] = pred[order]
        parents[root] = -1
        order_parts.append(order)
    parents[parents < 0] = -1
    return parents, np.concatenate(order_parts)
