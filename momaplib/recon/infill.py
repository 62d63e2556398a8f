"""Occlusion infill (paper §3.2 step 4): trajectories through the intervals where points are hidden.

``TrajectoryInfill.infill(xyz, visible, instance)`` completes every trajectory of a MoMap with a
MoSca-style geometric optimisation over all pixels at once:
- visible positions are fixed; only hidden (t, pixel) entries are variables;
- initialisation: linear interpolation between the visible ends of each hidden interval, holding
  the last seen position after the last visible frame;
- local rigidity (ARAP): every pixel's K nearest neighbours by reference position at t0 (within
  its instance when one is given) keep their arrangement, weighted by closeness at t0;
- smoothness: small velocity and acceleration of the hidden parts (torch solvers), or a weak
  pull towards the interpolation in time (sparse solver).
Distances are divided by the scene scale, so the weights do not depend on the scene's size.

Two solvers (``InfillConfig.optimizer``):
- ``"sparse"`` (default): the neighbours' reference offsets are kept up to a rotation per pixel
  and frame, solved by local-global rounds with a sparse linear solve in scipy
  (``momaplib.recon.arap``); only terms that touch a hidden entry are built, so a 60-frame
  240x320 clip takes seconds on a CPU;
- ``"lbfgs"`` / ``"adam"``: the mutual distances are kept across several time shifts
  ``|x_i(t) - x_j(t)| = |x_i(t + d) - x_j(t + d)|``, a dense torch optimisation (CPU or CUDA)
  over every frame of every pixel with a hidden entry: minutes on a CPU for large clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree

from momaplib.recon.arap import solve_hidden_arap
from momaplib.recon.numerics import flush_denormals


@dataclass
class InfillConfig:
    """Settings of the hidden-interval optimisation."""

    num_neighbours: int = 8  # K nearest neighbours at t0 that define local rigidity
    time_shifts: tuple[int, ...] = (1, 2, 4, 8)  # shifts d of the distance-preservation (ARAP) terms
    same_instance: bool = True  # neighbours only within the same instance (when instances are given)
    arap_weight: float = 1.0  # weight of local rigidity
    velocity_weight: float = 0.01  # weight of the squared velocity of hidden entries
    acceleration_weight: float = 0.1  # weight of the squared acceleration
    iterations: int = 50  # "lbfgs"/"adam" iterations (0: interpolation/hold only, for every optimizer)
    optimizer: Literal["sparse", "lbfgs", "adam"] = "sparse"  # see the module docstring; of the torch
    # ones, L-BFGS converges without Adam's jitter on fixed points
    rounds: int = 3  # "sparse": local-global rounds (rotation fit + linear solve)
    prior_weight: float = 0.01  # "sparse": pull of each hidden entry towards its interpolation in time
    # (velocity/acceleration_weight are the torch optimisers' smoothness terms)
    learning_rate: float = 0.005  # Adam step size in scene-scale units (L-BFGS uses a line search)
    device: str = "cpu"  # torch device of the optimisation


@dataclass
class InfillResult:
    """Completed trajectories and what the optimisation did."""

    xyz: np.ndarray  # (T, N, 3) float32 completed trajectories (visible entries unchanged)
    initial: np.ndarray  # (T, N, 3) float32 interpolation/hold initialisation
    hidden_fraction: float  # fraction of (t, valid pixel) entries that were filled
    loss: float  # final loss (0 when nothing was hidden)


def interpolate_hidden(xyz: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Returns xyz (T, N, 3) with hidden entries linearly interpolated between visible ends.

    Before the first visible frame the first seen position is held, after the last one the
    last seen position. Tracks never seen keep their values.
    """
    T = xyz.shape[0]
    frames = np.arange(T)[:, None]
    previous = np.maximum.accumulate(np.where(visible, frames, -1), axis=0)
    following = np.minimum.accumulate(np.where(visible, frames, T)[::-1], axis=0)[::-1]
    never = previous[-1] < 0
    first = np.where(visible.any(0), visible.argmax(0), 0)
    previous = np.where(previous < 0, first[None], previous)
    last = previous[-1]
    following = np.where(following >= T, last[None], following)
    columns = np.arange(xyz.shape[1])[None]
    start, end = xyz[previous, columns], xyz[following, columns]
    span = (following - previous).astype(np.float32)
    alpha = np.where(span > 0, (frames - previous) / np.where(span > 0, span, 1), 0.0)[..., None]
    filled = start + alpha * (end - start)
    filled = np.where(visible[..., None] | never[None, :, None], xyz, filled)
    return filled.astype(np.float32)


def neighbour_graph(
    points: np.ndarray, num_neighbours: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(neighbours (N, K) int64, weights (N, K) float32)`` of points (N, 3).

    Neighbours are the K nearest other points (within the same ``groups`` label when given);
    missing neighbours (small groups) point at the point itself with weight 0. Weights are a
    Gaussian of the distance with the median neighbour distance as its width.
    """
    N = points.shape[0]
    neighbours = np.tile(np.arange(N)[:, None], (1, num_neighbours))
    distances = np.zeros((N, num_neighbours))
    labels = np.zeros(N, np.int64) if groups is None else np.asarray(groups)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        k = min(num_neighbours, len(members) - 1)
        if k <= 0:
            continue
        dist, idx = cKDTree(points[members]).query(points[members], k=k + 1)
        neighbours[members, :k] = members[idx[:, 1:]]
        distances[members, :k] = dist[:, 1:]
    real = neighbours != np.arange(N)[:, None]
    width = float(np.median(distances[real])) if real.any() else 1.0
    weights = np.where(real, np.exp(-0.5 * (distances / max(width, 1e-9)) ** 2), 0.0)
    return neighbours, weights.astype(np.float32)


class TrajectoryInfill:
    """Fills hidden trajectory intervals by local rigidity and smoothness (see the module docstring)."""

    def __init__(self, config: InfillConfig | None = None):
        self.config = config or InfillConfig()

    def infill(
        self, xyz: np.ndarray, visible: np.ndarray, valid: np.ndarray, instance: np.ndarray | None = None
    ) -> InfillResult:
        """Returns the ``InfillResult`` of trajectories xyz (T, N, 3) seen where visible (T, N).

        ``valid`` (N,) marks pixels with a trajectory (they must be visible at t = 0);
        ``instance`` (N,) optional ids keep neighbours within one object.
        """
        xyz = np.asarray(xyz, np.float32)
        if xyz.ndim != 3 or xyz.shape[-1] != 3:
            raise ValueError(f"infill: xyz: expected (T, N, 3) trajectories, got shape {xyz.shape}")
        T, N, _ = xyz.shape
        visible, valid = np.asarray(visible, bool), np.asarray(valid, bool)
        if visible.shape != (T, N) or valid.shape != (N,):
            raise ValueError(
                f"infill: visible / valid: expected (T, N) = {(T, N)} and (N,) = ({N},) bool, "
                f"got {visible.shape} and {valid.shape}"
            )
        if instance is not None and np.shape(instance) != (N,):
            raise ValueError(f"infill: instance: expected (N,) = ({N},) ids, got {np.shape(instance)}")
        if not np.isfinite(xyz[visible & valid[None]]).all():
            raise ValueError("infill: xyz: NaN/inf at visible entries; expected finite metres")
        with flush_denormals():
            return self._infill(xyz, visible, valid, instance)

    def _infill(self, xyz, visible, valid, instance) -> InfillResult:
        config = self.config
        T = xyz.shape[0]
        visible = visible & valid[None]
        initial = interpolate_hidden(xyz, visible)
        hidden = valid[None] & ~visible
        result = InfillResult(
            initial.copy(), initial, float(hidden[:, valid].mean()) if valid.any() else 0.0, 0.0
        )
        active = hidden.any(0)
        if config.iterations <= 0 or not active.any() or T < 2:
            return result
        index = np.flatnonzero(valid)  # graph over valid pixels only
        reference = initial[0, index].astype(np.float64)
        groups = instance[index] if (instance is not None and config.same_instance) else None
        neighbours, weights = neighbour_graph(reference, config.num_neighbours, groups)
        # Optimise the active pixels; their neighbours enter as constants where visible.
        local_active = active[index]
        rows = np.flatnonzero(local_active)
        involved = np.unique(np.concatenate([rows, neighbours[rows].ravel()]))  # sorted
        rows_in_involved = np.searchsorted(involved, rows)
        edges_i = np.repeat(rows_in_involved, config.num_neighbours)
        edges_j = np.searchsorted(involved, neighbours[rows].ravel())
        edge_w = weights[rows].ravel()

        scale = float(np.median(reference[:, 2])) if len(reference) else 1.0
        columns = index[involved]
        if config.optimizer == "sparse":
            solved, result.loss = solve_hidden_arap(
                np.ascontiguousarray(initial[:, columns], np.float64) / scale,
                hidden[:, columns],
                np.searchsorted(involved, neighbours[rows]),
                weights[rows],
                rows_in_involved,
                config.prior_weight,
                config.rounds,
            )
            filled = result.xyz
            optimised = (solved * scale).astype(np.float32)
            filled[:, columns] = np.where(hidden[:, columns, None], optimised, initial[:, columns])
            return result
        device = torch.device(config.device)
        start = torch.as_tensor(np.ascontiguousarray(initial[:, columns]) / scale, device=device)  # (T, M, 3)
        fixed = torch.as_tensor(~hidden[:, columns], device=device)
        variable = start.clone().contiguous().requires_grad_(True)
        i = torch.as_tensor(edges_i, device=device)
        j = torch.as_tensor(edges_j, device=device)
        w = torch.as_tensor(edge_w, device=device)
        w = w / w.sum().clamp_min(1e-12)
        moving_rows = torch.as_tensor(rows_in_involved, device=device)
        shifts = [d for d in config.time_shifts if 0 < d < T]

        def loss_of(x: torch.Tensor) -> torch.Tensor:
            # eps: the gradient of a norm is undefined where two interpolated points coincide
            distance = (x[:, i] - x[:, j]).pow(2).sum(-1).add(1e-12).sqrt()  # (T, E)
            arap = sum(((distance[d:] - distance[:-d]) ** 2 * w).sum(-1).mean() for d in shifts)
            trajectories = x[:, moving_rows]
            velocity = (trajectories[1:] - trajectories[:-1]).pow(2).sum(-1).mean()
            loss = config.arap_weight * arap + config.velocity_weight * velocity
            if T > 2:
                acceleration = trajectories[2:] - 2 * trajectories[1:-1] + trajectories[:-2]
                loss = loss + config.acceleration_weight * acceleration.pow(2).sum(-1).mean()
            return loss

        if config.optimizer == "lbfgs":
            optimizer = torch.optim.LBFGS(
                [variable], lr=1.0, max_iter=config.iterations, line_search_fn="strong_wolfe"
            )

            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                loss = loss_of(torch.where(fixed[..., None], start, variable))
                loss.backward()
                return loss

            optimizer.step(closure)
        else:
            optimizer = torch.optim.Adam([variable], lr=config.learning_rate)
            for _ in range(config.iterations):
                optimizer.zero_grad()
                loss = loss_of(torch.where(fixed[..., None], start, variable))
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            final = torch.where(fixed[..., None], start, variable)
            result.loss = float(loss_of(final))
            filled = result.xyz
            # Only hidden entries change: visible ones keep their exact bits (no round trip via scale).
            optimised = (final * scale).cpu().numpy()
            filled[:, columns] = np.where(hidden[:, columns, None], optimised, initial[:, columns])
        return result
