"""Spring-mesh relaxation of a noisy, gappy flow field into a smooth, fold-free one.

Every node of the flow grid is a mesh node tied by a *data spring* (stiffness
``w_i``, its match confidence; 0 where the match is invalid) to its measured
position, and by *mesh springs* (stiffness ``k``; 4-neighbours plus
diagonals at half strength) to its neighbours, whose rest vectors are those
of a reference map (the coarse affine: stretch and rotation cost nothing).
The energy::

    E(u) = sum_i w_i |u_i - f_i|^2 + sum_(i,j) k_ij |(u_i - a_i) - (u_j - a_j)|^2

is quadratic, so the relaxed mesh is one sparse SPD solve per axis (SuperLU),
where SOFIMA integrates non-linear springs with FIRE.  Linear springs are
exact for the small residual deformations left after the coarse affine, and
need no step size or convergence tolerance.  Outlier matches are dropped by
re-solving without the nodes that the relaxed mesh cannot follow.

Springs can be cut: ``cut`` (True at nodes on a fold or crack) weakens every
spring touching those nodes, so the tissue on both sides of a fold can move
apart without dragging each other.  ``relax`` then checks that the result has
no folded triangle (``field.triangle_jacobians`` > 0), stiffening the mesh
until it has none.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pydantic import BaseModel, ConfigDict

from wiremap.align.field import Field, triangle_jacobians
from wiremap.errors import WiremapError


class MeshFoldError(WiremapError):
    """The relaxed mesh still folds (a triangle with Jacobian <= 0)."""


class MeshConfig(BaseModel):
    """Stiffness and robustness of the relaxation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stiffness: float = 0.01  # mesh (membrane) springs, relative to a data spring of weight 1
    bending: float = 0.03  # bending stiffness: penalises curvature, not smooth stretch
    cut_stiffness: float = 0.02  # factor on springs touching ``cut`` nodes
    outlier_px: float = 1.5  # data springs stretched more than this (and 3x median) are dropped
    outlier_rounds: int = 1  # re-solves after dropping outliers
    outlier_stiffening: float = 10.0  # outliers are judged against a mesh this much stiffer
    anchor: float = 1e-4  # weak pull to the reference map, so nodes without data stay defined
    min_jacobian: float = 0.05  # smallest allowed triangle area ratio
    direct_max_nodes: int = 300_000  # larger meshes use conjugate gradients (bounded memory)


def _difference_rows(idx: np.ndarray, offsets: list[tuple[int, int]],
                     coefs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Node indices (R, k) and coefficients (k,) of a finite-difference stencil over the grid."""
    gy, gx = idx.shape
    oy = [o[0] for o in offsets]
    ox = [o[1] for o in offsets]
    y0, y1 = -min(oy), gy - max(oy)
    x0, x1 = -min(ox), gx - max(ox)
    cols = [idx[y0 + dy:y1 + dy, x0 + dx:x1 + dx].ravel() for dy, dx in offsets]
    return np.stack(cols, axis=1), np.asarray(coefs, np.float64)


def _regularizer(gy: int, gx: int, cut: np.ndarray | None, cut_k: float,
                 membrane: float, bending: float) -> sp.csc_matrix:
    """Quadratic form ``sum_r k_r (c_r . u)^2`` of mesh springs (membrane) and bending terms."""
    idx = np.arange(gy * gx).reshape(gy, gx)
    stencils = []
    if membrane > 0:
        stencils += [([(0, 0), (0, 1)], [1.0, -1.0], membrane),
                     ([(0, 0), (1, 0)], [1.0, -1.0], membrane),
                     ([(0, 0), (1, 1)], [1.0, -1.0], 0.5 * membrane),
                     ([(0, 1), (1, 0)], [1.0, -1.0], 0.5 * membrane)]
    if bending > 0:
        stencils += [([(0, 0), (0, 1), (0, 2)], [1.0, -2.0, 1.0], bending),
                     ([(0, 0), (1, 0), (2, 0)], [1.0, -2.0, 1.0], bending),
                     ([(0, 0), (0, 1), (1, 0), (1, 1)], [1.0, -1.0, -1.0, 1.0], 2.0 * bending)]
    n = gy * gx
    flat_cut = None if cut is None else np.asarray(cut, bool).ravel()
    total = sp.csc_matrix((n, n))
    for offsets, coefs, k in stencils:
        if any(gy <= o[0] or gx <= o[1] for o in offsets):
            continue
        nodes, c = _difference_rows(idx, offsets, coefs)
        r = nodes.shape[0]
        kr = np.full(r, k)
        if flat_cut is not None:
            kr = np.where(flat_cut[nodes].any(axis=1), k * cut_k, kr)
        rows = np.repeat(np.arange(r), len(c))
        d = sp.csr_matrix((np.tile(c, r), (rows, nodes.ravel())), shape=(r, n))
        total = total + (d.T @ sp.diags(kr) @ d).tocsc()
    return total


def _solve(a_mat: sp.csc_matrix, rhs: list[np.ndarray], x0: np.ndarray,
           direct_max: int) -> np.ndarray:
    """Solve the SPD system for each right-hand side: sparse LU when small, else Jacobi-
    preconditioned CG warm-started at ``x0`` (memory stays ~ the matrix itself)."""
    if a_mat.shape[0] <= direct_max:
        solve = spla.factorized(a_mat)
        return np.stack([solve(b) for b in rhs])
    pre = sp.diags(1.0 / a_mat.diagonal())
    out = []
    for c, b in enumerate(rhs):
        x, _info = spla.cg(a_mat, b, x0=x0[c], rtol=1e-6, maxiter=500, M=pre)
        out.append(x)
    return np.stack(out)


def relax(flow: Field, weights: np.ndarray | None = None, reference: Field | None = None,
          cfg: MeshConfig | None = None, *, cut: np.ndarray | None = None) -> Field:
    """Relaxed, NaN-free field on ``flow``'s grid (see module docstring).

    ``weights`` (gy, gx) are data-spring stiffnesses (default 1 where the flow is
    valid); ``reference`` is the rest shape (default: the zero field).
    Raises ``MeshFoldError`` if no stiffness up to 1000x removes every fold.
    """
    cfg = cfg or MeshConfig()
    gy, gx = flow.grid
    n = gy * gx
    f = flow.data.reshape(2, n).astype(np.float64)
    valid = np.isfinite(f).all(axis=0)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64).ravel().copy()
    w = np.where(valid, w, 0.0)
    f = np.where(valid, f, 0.0)
    ref = np.zeros((2, n)) if reference is None else \
        reference.resample_like(flow).data.reshape(2, n).astype(np.float64)
    ratio = cfg.bending / max(cfg.stiffness, 1e-12)
    lap = _regularizer(gy, gx, cut, cfg.cut_stiffness, 1.0, ratio)
    # for the stiff outlier rounds, cut springs keep their absolute (soft) stiffness
    lap_out = lap if cut is None else _regularizer(
        gy, gx, cut, cfg.cut_stiffness / cfg.outlier_stiffening, 1.0, ratio)
    stiff = cfg.stiffness
    for _attempt in range(4):
        wk = w.copy()
        u = ref.copy()
        for rnd in range(cfg.outlier_rounds + 1):
            # outlier rounds use a stiffer mesh: a soft one follows a lone bad match
            last = rnd == cfg.outlier_rounds
            k = stiff if last else stiff * cfg.outlier_stiffening
            m = lap if last else lap_out
            rr = (m @ ref.T).T
            u = _solve((k * m + sp.diags(wk + cfg.anchor)).tocsc(),
                       [wk * f[c] + k * rr[c] + cfg.anchor * ref[c] for c in range(2)], u,
                       cfg.direct_max_nodes)
            if rnd == cfg.outlier_rounds:
                break
            res = np.linalg.norm(u - f, axis=0)
            active = wk > 0
            if not active.any():
                continue
            med = np.median(res[active])
            drop = active & (res > max(cfg.outlier_px, 3.0 * med))
            wk[drop] = 0.0
        out = flow.with_data(u.reshape(2, gy, gx))
        if triangle_jacobians(out).min() > cfg.min_jacobian:
            return out
        stiff *= 10.0
    raise MeshFoldError(f"mesh folds even at stiffness {stiff / 10:g}; the flow is inconsistent")

