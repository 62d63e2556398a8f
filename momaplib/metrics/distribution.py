"""Is a generator a distribution? N samples of one input against M ground-truth (GT) futures of it.

Best of N (``momaplib.metrics.best_of_n``) compares N samples with the *one* future a clip
happens to show, so one good sample hides nine copies of it. MoMap-Sim can draw many futures of
the same scene and task (``SimConfig.motion_variant``), which samples the true conditional
distribution; these metrics compare the two *sets*. All distances are in scene scales ``s``
(median reference depth of valid pixels, DESIGN.md), on the foreground ``F``: the valid pixels
that move (``|x_t - x_0| > tau_move * s`` at some t) in *any* GT future.

Two distances between MoMaps ``a`` and ``b`` of the same scene:

- ``dist(a, b)``: mean over pixels p in F and frames t of ``|a_t(p) - b_t(p)| / s`` (time aligned,
  the ``ate`` of the metrics). A sum of Euclidean norms is a metric of negative type, so the
  energy distance below is >= 0 and 0 exactly when the two sets hold the same MoMaps;
- ``ate_dtw(gt_m, x_n)``: the metric of Table 1 (``momaplib.metrics``; DTW per pixel, cost / path
  length, mean over the GT future's own moving mask ``F_m``, over F when ``F_m`` is empty). DTW
  forgives timing and is not a metric (no triangle inequality), so it serves for matching only.

===========================  ======  ========================================================
name                         best    definition (one scene, N samples x_n, M GT futures g_m)
===========================  ======  ========================================================
``diversity_ratio``          1       mean ``dist`` over sample pairs / the same over GT pairs
``diversity_ratio_dtw``      1       the same with DTW per pixel (timing forgiven)
``sample_spread``                    mean ``dist`` over sample pairs i < j
``gt_spread``                        mean ``dist`` over GT pairs i < j (the true spread)
``precision``                ↑       share of samples with some ``ate_dtw(g_m, x_n) <= tau``
``recall``                   ↑       share of GT futures with some ``ate_dtw(g_m, x_n) <= tau``
``sample_to_gt``             ↓       mean over samples of the nearest GT future's ``ate_dtw``
``gt_to_sample``             ↓       mean over GT futures of the nearest sample's ``ate_dtw``
                                     (with M = 1 it is the best-of-N ``ate_dtw`` of Table 1)
``energy_distance``          ↓       ``2 E dist(x, g) - E dist(x, x') - E dist(g, g')``
===========================  ======  ========================================================

A diversity ratio well below 1 is a collapsed (under-dispersed) model, above 1 a model that
spreads further than the futures do; precision says whether the samples are futures, recall
whether every future is found by some sample (a model that always returns the same good future
has high precision and low recall). The energy distance (Székely & Rizzo) is the V-statistic:
within-set means include the zero diagonal, so identical sets give exactly 0; in one dimension
it is the square of ``scipy.stats.energy_distance``.

``tau`` (default ``TAU_MATCH`` = 0.2 scene scales) is read against Table 1 of the model card:
on 600 test clips per family the bundled MoMap VAE's own reconstruction of the GT has a median
``ate_dtw`` of 0.12-0.14 and lies within 0.2 on 86 % (tabletop) and 94 % (egocentric) of clips,
while predicting no motion (``static``, median 0.22-0.27) lies within 0.2 on 40 % and 24 %. So
0.2 is the smallest round threshold a latent model can meet on nearly every future, and it still
rejects most motionless samples. Because the choice matters, ``precision_recall_curve`` gives
both over a grid of thresholds (``TAU_GRID``). Read recall with the futures' own spread in mind:
the motion variants of one MoMap-Sim scene lie only 0.03-0.04 apart in ``ate_dtw`` (DTW forgives
their timing; 0.065-0.09 time aligned; 6 test scenes x 5 variants per family, 128 x 128, T = 32),
well inside ``tau``. At ``tau`` = 0.2 a sample near one future is near all of them, so recall
there measures fidelity more than coverage; collapse shows in ``diversity_ratio`` and
``energy_distance``, and coverage in the curve below ``tau`` ~ 0.05.

NaN policy (as ``momaplib.metrics``): every value is NaN when no GT future moves (F empty); the
spreads and ratios need two members per set, and a ratio is NaN when the GT spread is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from momaplib.metrics.curves import dtw
from momaplib.metrics.scores import MAX_SCALED_COORDINATE, MetricConfig
from momaplib.momap import MoMap, moving_mask, scene_scale

#: Default matching threshold of ``precision`` and ``recall``, in scene scales (module docstring).
TAU_MATCH = 0.2
#: Thresholds of ``precision_recall_curve`` and of the per-scene CSV's curve columns.
TAU_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
#: Names of ``distribution_metrics``, in table order.
DISTRIBUTION_METRICS = (
    "diversity_ratio",
    "diversity_ratio_dtw",
    "sample_spread",
    "gt_spread",
    "precision",
    "recall",
    "sample_to_gt",
    "gt_to_sample",
    "energy_distance",
)
#: True where higher is better, False where lower is, None where the best value is 1 (ratios) or
#: none at all (spreads).
DISTRIBUTION_DIRECTIONS: dict[str, bool | None] = {
    "diversity_ratio": None,
    "diversity_ratio_dtw": None,
    "sample_spread": None,
    "gt_spread": None,
    "precision": True,
    "recall": True,
    "sample_to_gt": False,
    "gt_to_sample": False,
    "energy_distance": False,
}


@dataclass(frozen=True)
class SetDistances:
    """Every distance between the N samples and M GT futures of one scene, in scene scales.

    Matrices are float64 CPU tensors; with F empty (no GT future moves) every entry is NaN.
    """

    cross_dtw: Tensor
    """[N, M]: ``ate_dtw(gt_m, sample_n)`` over ``F_m`` (Table 1's metric)."""
    cross: Tensor
    """[N, M]: time-aligned ``dist(sample_n, gt_m)`` over F."""
    samples: Tensor
    """[N, N]: ``dist`` between samples (symmetric, zero diagonal)."""
    gt: Tensor
    """[M, M]: ``dist`` between GT futures (symmetric, zero diagonal)."""
    samples_dtw: Tensor
    """[N, N]: mean over F of per-pixel DTW cost / path length between samples (symmetrised)."""
    gt_dtw: Tensor
    """[M, M]: the same between GT futures."""
    num_fg: int
    """|F|: valid pixels that move in some GT future."""
    scale: float
    """The scene scale s in metres."""


def set_distances(
    samples: Tensor | np.ndarray,
    gt_futures: Tensor | np.ndarray | Sequence[MoMap],
    reference: Any,
    *,
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
    reuse: SetDistances | None = None,
) -> SetDistances:
    """Returns the ``SetDistances`` of samples [N, T, H, W, 3] and GT futures [M, T, H, W, 3].

    Both are metres in the reference camera frame of ``reference``, a MoMap (or anything with a
    ``.momap``, such as a ``momaplib.sim.Clip``) whose ``valid`` (H, W) and reference positions
    ``xyz[0]`` (the scene scale) are used; its future frames are not. ``gt_futures`` may be a
    sequence of MoMaps. Every GT future must start at ``reference.xyz[0]`` (they are futures of
    that scene); a non-finite value at a valid pixel or a bad shape raises ``ValueError``.
    ``reuse``: the result of an earlier call with the same ``gt_futures``, ``reference`` and
    ``config`` (another method's samples): its GT-GT matrices are taken instead of recomputed.
    """
    config = config or MetricConfig()
    reference = getattr(reference, "momap", reference)
    if not isinstance(reference, MoMap):
        raise TypeError(f"reference: expected a MoMap (or a Clip), got {type(reference).__name__}")
    if device is None:
        device = samples.device if isinstance(samples, Tensor) else "cpu"
    valid = torch.from_numpy(reference.valid).to(device)
    xyz0 = torch.from_numpy(reference.xyz[0]).to(device)
    scale = float(scene_scale(xyz0, valid))
    H, W = reference.valid.shape
    samples = _check_set("samples", samples, valid, scale, device)
    gt = _check_set("gt_futures", gt_futures, valid, scale, device)
    for name, value in (("samples", samples), ("gt_futures", gt)):
        if value.shape[2:4] != (H, W):
            raise ValueError(
                f"{name}: expected shape (K, T, H, W, 3) with (H, W) = {(H, W)} of the reference, "
                f"got {tuple(value.shape)}"
            )
    if samples.shape[1] != gt.shape[1]:
        raise ValueError(
            f"samples: expected T = {gt.shape[1]} frames like gt_futures, got shape {tuple(samples.shape)}"
        )
    start_gap = torch.where(valid, (gt[:, 0] - xyz0).norm(dim=-1), 0.0).flatten(1).amax(1)  # [M]
    off = torch.nonzero(start_gap > config.tau_move * scale)
    if off.numel():
        m = int(off[0])
        raise ValueError(
            f"gt_futures[{m}]: starts up to {float(start_gap[m]):.3g} m away from reference.xyz[0] at valid "
            f"pixels (more than tau_move * s = {config.tau_move * scale:.3g} m); expected futures of the "
            "reference's scene"
        )
    N, M = samples.shape[0], gt.shape[0]
    if reuse is not None and (reuse.gt.shape != (M, M) or reuse.scale != scale):
        raise ValueError(f"reuse: expected the distances of the same {M} GT futures and reference")
    moving = moving_mask(gt, valid, config.tau_move, scale=scale)  # [M, H, W]
    fg_index = torch.nonzero(moving.any(0).flatten()).squeeze(1)
    if fg_index.numel() == 0:
        nan = math.nan
        return SetDistances(
            *(torch.full(shape, nan, dtype=torch.float64) for shape in ((N, M), (N, M), (N, N), (M, M))),
            samples_dtw=torch.full((N, N), nan, dtype=torch.float64),
            gt_dtw=torch.full((M, M), nan, dtype=torch.float64),
            num_fg=0,
            scale=scale,
        )
    sample_curves, gt_curves = _curves(samples, fg_index, scale), _curves(gt, fg_index, scale)  # [K, P, T, 3]
    own_fg = moving.flatten(1)[:, fg_index].double()  # [M, P]: F_m within F
    own_fg[own_fg.sum(1) == 0] = 1.0  # a future that does not move is compared over F
    cross_dtw = torch.stack(
        [_mean_dtw(gt_curves, sample_curves[n], own_fg, config.chunk_size) for n in range(N)]
    )
    return SetDistances(
        cross_dtw=cross_dtw.cpu(),
        cross=_aligned_distances(sample_curves, gt_curves),
        samples=_aligned_distances(sample_curves, sample_curves),
        gt=_aligned_distances(gt_curves, gt_curves) if reuse is None else reuse.gt,
        samples_dtw=_pairwise_dtw(sample_curves, config.chunk_size),
        gt_dtw=_pairwise_dtw(gt_curves, config.chunk_size) if reuse is None else reuse.gt_dtw,
        num_fg=int(fg_index.numel()),
        scale=scale,
    )


def distribution_metrics(
    samples: Tensor | np.ndarray,
    gt_futures: Tensor | np.ndarray | Sequence[MoMap],
    reference: Any,
    *,
    tau: float = TAU_MATCH,
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Returns ``{name: float}`` of ``DISTRIBUTION_METRICS`` (module docstring) and ``num_fg``.

    Arguments as in ``set_distances``; ``tau`` is the matching threshold of ``precision`` and
    ``recall`` in scene scales (``precision_recall_curve`` sweeps it).
    """
    distances = set_distances(samples, gt_futures, reference, config=config, device=device)
    return metrics_from_distances(distances, tau)


def metrics_from_distances(distances: SetDistances, tau: float = TAU_MATCH) -> dict[str, float]:
    """Returns the ``distribution_metrics`` of precomputed ``SetDistances`` (one per scene, reused
    for several thresholds)."""
    if not tau >= 0:
        raise ValueError(f"tau: expected a threshold >= 0 in scene scales, got {tau}")
    d = distances
    sample_spread, gt_spread = _pair_mean(d.samples), _pair_mean(d.gt)
    sample_spread_dtw, gt_spread_dtw = _pair_mean(d.samples_dtw), _pair_mean(d.gt_dtw)
    nearest_gt, nearest_sample = d.cross_dtw.min(1).values, d.cross_dtw.min(0).values
    energy = 2 * d.cross.mean() - d.samples.mean() - d.gt.mean()
    result = {
        "diversity_ratio": _ratio(sample_spread, gt_spread),
        "diversity_ratio_dtw": _ratio(sample_spread_dtw, gt_spread_dtw),
        "sample_spread": sample_spread,
        "gt_spread": gt_spread,
        "precision": _share_within(nearest_gt, tau),
        "recall": _share_within(nearest_sample, tau),
        "sample_to_gt": float(nearest_gt.mean()),
        "gt_to_sample": float(nearest_sample.mean()),
        "energy_distance": float(energy),
        "num_fg": float(d.num_fg),
    }
    return result


def precision_recall_curve(distances: SetDistances, taus: Sequence[float] = TAU_GRID) -> pd.DataFrame:
    """Returns one row per threshold: ``tau``, ``precision`` and ``recall`` (NaN when F is empty).

    Both rise with ``tau`` from 0 to 1: at ``tau`` >= the largest entry of ``cross_dtw`` every sample
    and every future is matched.
    """
    nearest_gt, nearest_sample = distances.cross_dtw.min(1).values, distances.cross_dtw.min(0).values
    rows = [
        {
            "tau": float(tau),
            "precision": _share_within(nearest_gt, tau),
            "recall": _share_within(nearest_sample, tau),
        }
        for tau in taus
    ]
    return pd.DataFrame(rows, columns=["tau", "precision", "recall"])


# ----------------------------------------------------------------------------- internals
def _check_set(name: str, value: Any, valid: Tensor, scale: float, device: torch.device | str) -> Tensor:
    """Returns a set [K, T, H, W, 3] float32 on ``device``, zeros at invalid pixels' non-finite values."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, MoMap) for v in value):
        value = np.stack([v.xyz for v in value])
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a tensor, array or sequence of MoMaps, got {type(value).__name__}")
    if value.dim() != 5 or value.shape[-1] != 3 or value.shape[0] == 0 or not value.is_floating_point():
        raise ValueError(
            f"{name}: expected floating point metres of shape (K, T, H, W, 3) with K >= 1, "
            f"got {tuple(value.shape)} {value.dtype}"
        )
    if value.shape[1] < 2:
        raise ValueError(f"{name}: expected T >= 2 frames, got shape {tuple(value.shape)}")
    value = value.to(device=device, dtype=torch.float32)
    if tuple(value.shape[2:4]) != tuple(valid.shape):
        return value  # the caller names the shape mismatch
    non_finite = ~torch.isfinite(value.sum(-1))  # [K, T, H, W]
    bad = (non_finite & valid).flatten(1).sum(1)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{name}[{k}]: {int(bad[k])} non-finite values (NaN/inf) at valid pixels; expected metres"
        )
    value = torch.where(non_finite[..., None], 0.0, value)
    largest = torch.where(valid, value.abs().amax(-1), 0.0).flatten(1).amax(1)  # [K]
    too_large = torch.nonzero(largest > MAX_SCALED_COORDINATE * scale)
    if too_large.numel():
        k = int(too_large[0])
        raise ValueError(
            f"{name}[{k}]: coordinates up to {float(largest[k]):.3g} m at valid pixels; expected metres "
            f"within {MAX_SCALED_COORDINATE:g} x the scene scale s = {scale:.3g} m (a unit or scale error?)"
        )
    return value


def _curves(xyz: Tensor, pixels: Tensor, scale: float) -> Tensor:
    """Returns trajectories [K, P, T, 3] / s of flat ``pixels`` [P] of MoMaps [K, T, H, W, 3]."""
    K, T, H, W, _ = xyz.shape
    return (xyz.reshape(K, T, H * W, 3).index_select(2, pixels).transpose(1, 2) / scale).contiguous()


def _aligned_distances(a: Tensor, b: Tensor) -> Tensor:
    """Returns [A, B] float64 CPU: mean over pixels and frames of ``|a_i - b_j|`` for curves [A|B, P, T, 3].

    One row of pairs at a time keeps memory at B x P x T (the full [A, B, P, T, 3] would not fit
    for 10 x 10 samples of a 128 x 128 MoMap on a small GPU)."""
    return torch.stack([(b - a[i]).norm(dim=-1).double().mean((-2, -1)) for i in range(len(a))]).cpu()


def _mean_dtw(gt: Tensor, pred: Tensor, weights: Tensor, chunk_size: int | None) -> Tensor:
    """Returns [M]: the weighted mean over pixels of DTW cost / path length of GT curves [M, P, T, 3]
    against one set of curves [P, T, 3]; ``weights`` [M, P] are the pixels counted per row."""
    cost, length = dtw(gt, pred, chunk_size=chunk_size)  # [M, P]; GT first, as in ate_dtw
    return ((cost / length).double() * weights).sum(1) / weights.sum(1)


def _pairwise_dtw(curves: Tensor, chunk_size: int | None) -> Tensor:
    """Returns [K, K] float64 CPU: mean over pixels of DTW cost / length between curves [K, P, T, 3].

    Computed for i < j and mirrored (DTW's cost is symmetric; its tie-broken path length nearly so)."""
    K = curves.shape[0]
    result = torch.zeros(K, K, dtype=torch.float64)
    for i in range(K - 1):
        cost, length = dtw(curves[i], curves[i + 1 :], chunk_size=chunk_size)  # [K - i - 1, P]
        row = (cost / length).double().mean(-1).cpu()
        result[i, i + 1 :], result[i + 1 :, i] = row, row
    return result


def _pair_mean(matrix: Tensor) -> float:
    """Returns the mean of the entries above the diagonal of a [K, K] matrix (NaN when K < 2)."""
    K = matrix.shape[0]
    if K < 2:
        return math.nan
    upper = torch.triu_indices(K, K, offset=1)
    return float(matrix[upper[0], upper[1]].mean())


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _share_within(nearest: Tensor, tau: float) -> float:
    """Returns the share of ``nearest`` distances <= ``tau`` (NaN when they are NaN: F empty)."""
    if bool(nearest.isnan().any()):
        return math.nan
    return float((nearest <= tau).double().mean())
