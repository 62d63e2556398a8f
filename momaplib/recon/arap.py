"""Sparse as-rigid-as-possible solve of hidden trajectory entries (the default occlusion infill).

Only hidden ``(t, pixel)`` entries are unknowns. The energy (distances in scene-scale units):

- local rigidity: for every pixel ``i`` with a hidden entry, each of its K nearest neighbours
  ``j`` at t0 (``neighbour_graph``) keeps its reference offset up to a rotation of ``i``'s
  neighbourhood, ``w_ij |x_i(t) - x_j(t) - R_i(t) (x_i(0) - x_j(0))|^2`` (Sorkine & Alexa's ARAP);
- a weak prior ``prior_weight |x(t) - x_init(t)|^2`` towards the initialisation (linear
  interpolation in time between the visible ends): it decides only where rigidity cannot, e.g. a
  region hidden as a whole in a frame follows the interpolation.

It is minimised by local-global rounds: the local step fits every rotation ``R_i(t)`` in closed
form (a batched 3x3 Procrustes), the global step solves the linear least-squares problem in the
unknowns. Frames do not interact, so its normal matrix is block diagonal, one sparse 2D graph
per frame, symmetric positive definite (the prior), and the same in every round: it is
factorised once (scipy's SuperLU) and each round costs three triangular solves. Terms whose
entries are all visible are constants and never built, so the cost grows with the hidden
entries, not with the clip: a 60-frame 240x320 clip takes seconds where the dense torch
optimisation (``InfillConfig(optimizer="lbfgs")``) took minutes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu


def solve_hidden_arap(
    start: np.ndarray,
    hidden: np.ndarray,
    neighbours: np.ndarray,
    weights: np.ndarray,
    rows: np.ndarray,
    prior_weight: float,
    rounds: int,
) -> tuple[np.ndarray, float]:
    """Returns ``(xyz (T, M, 3) float64, energy)`` with the hidden entries of ``start`` solved.

    ``start`` (T, M, 3): trajectories in scene-scale units, hidden entries initialised (e.g. by
    interpolation); ``hidden`` (T, M) bool: the unknown entries (never at t = 0);
    ``neighbours`` (R, K) int and ``weights`` (R, K): the neighbour graph of the pixels ``rows``
    (R,) that have hidden entries, as indices into M (weight 0 for missing neighbours);
    ``prior_weight`` > 0 keeps the system positive definite; ``rounds``: local-global rounds.
    """
    T, M, _ = start.shape
    x = start.astype(np.float64).copy()
    if not hidden.any():
        return x, 0.0
    variable = np.full((T, M), -1, np.int64)
    variable[hidden] = np.arange(int(hidden.sum()))
    n = int(hidden.sum())
    num_neighbours = neighbours.shape[1]

    # -- rigidity terms (t, edge) that touch an unknown
    edge_i = np.repeat(rows, num_neighbours)
    edge_j = neighbours.reshape(-1)
    edge_w = weights.reshape(-1).astype(np.float64)
    keep = edge_w > 0
    edge_i, edge_j, edge_w = edge_i[keep], edge_j[keep], edge_w[keep]
    touched = hidden[:, edge_i] | hidden[:, edge_j]  # (T, E)
    term_t, term_e = np.nonzero(touched)
    # Each term belongs to a hidden end, the "owner", whose rotation it uses (and helps fit):
    # residual x_o(t) - x_p(t) - R_o(t) (x_o(0) - x_p(0)) with o hidden at t, p the other end.
    i_hidden = hidden[term_t, edge_i[term_e]]
    owner = np.where(i_hidden, edge_i[term_e], edge_j[term_e])
    other = np.where(i_hidden, edge_j[term_e], edge_i[term_e])
    term_w = edge_w[term_e]
    offset = start[0, owner].astype(np.float64) - start[0, other]  # (P, 3) reference offsets
    var_owner, var_other = variable[term_t, owner], variable[term_t, other]
    fixed_other = np.where((var_other < 0)[:, None], x[term_t, other], 0.0)  # moves to the right side
    P = len(term_t)
    rigid = _rows_matrix(
        [(np.arange(P), var_owner, np.ones(P)), (np.arange(P), var_other, -np.ones(P))], P, n
    )
    # Sums the terms of each owner entry (a rotation per hidden entry, numbered like the unknowns).
    gather = sp.csr_matrix((term_w, (var_owner, np.arange(P))), shape=(n, P))

    # -- prior: every unknown stays near its initialisation (interpolation in time). Weak, it only
    # decides where rigidity cannot: a region hidden as a whole in a frame follows the interpolation.
    prior_target = x[hidden]
    A = sp.vstack([rigid, sp.identity(n, format="csr")]).tocsr()
    W = np.concatenate([term_w, np.full(n, float(prior_weight))])
    AtW = (A.T @ sp.diags(W)).tocsr()
    # Frames are independent, so the normal matrix is block diagonal (one sparse 2D graph per frame)
    # and its LU factors stay small; it is factorised once and reused by every round.
    solve = splu((AtW @ A).tocsc(), permc_spec="MMD_AT_PLUS_A").solve

    unknown = x[hidden]  # (n, 3)
    for _ in range(max(1, rounds)):
        x[hidden] = unknown
        current = x[term_t, owner] - x[term_t, other]  # (P, 3)
        rotation = _fit_rotations(gather, current, offset)
        rigid_target = np.einsum("pab,pb->pa", rotation[var_owner], offset) + fixed_other
        target = np.concatenate([rigid_target, prior_target])
        unknown = solve(AtW @ target)
    x[hidden] = unknown
    residual = A @ unknown - target
    return x, float((W[:, None] * residual**2).sum())


def _rows_matrix(entries, num_rows: int, num_columns: int) -> sp.csr_matrix:
    """Returns the sparse (num_rows, num_columns) matrix of ``(row, column, value)`` entries whose
    column is >= 0 (a negative column is a known entry, already on the right-hand side)."""
    rows = np.concatenate([r[c >= 0] for r, c, _ in entries])
    columns = np.concatenate([c[c >= 0] for _, c, _ in entries])
    values = np.concatenate([v[c >= 0] for _, c, v in entries])
    return sp.csr_matrix((values, (rows, columns)), shape=(num_rows, num_columns))


def _fit_rotations(gather: sp.csr_matrix, current: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Returns (n, 3, 3) rotations: per owner entry, the weighted Procrustes fit of its terms'
    reference offsets (P, 3) onto their current offsets (P, 3) (no reflections)."""
    outer = (current[:, :, None] * offset[:, None, :]).reshape(-1, 9)
    covariance = np.asarray(gather @ outer).reshape(-1, 3, 3)
    u, _, vh = np.linalg.svd(covariance)
    u[..., :, 2] *= np.sign(np.linalg.det(u @ vh))[..., None]
    return u @ vh
