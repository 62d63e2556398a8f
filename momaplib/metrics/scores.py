"""The per-sample metrics of a generated MoMap against its GT (paper §4.2; definitions in
``momaplib.metrics``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.spatial
import torch
from torch import Tensor

from momaplib.metrics.curves import default_chunk_size, dtw, quantize_displacements
from momaplib.momap import TAU_MOVE, MoMap, moving_mask, scene_scale

#: Default direction threshold as a fraction of the scene scale (DESIGN.md, quantize_acc).
TAU_DIR = 0.01
#: Default number of nearest neighbours of ``local_dist_diff`` (DESIGN.md).
NUM_NEIGHBOURS = 8
#: Default window lengths dT of ``quantize_acc_dT`` (paper Table 1).
QUANTIZE_DTS = (1, 4, 16)
#: Largest coordinate accepted at a valid pixel, in scene scales s: farther points are not in
#: the scene's units (a scale or unit error), and squares of ~1e19 would overflow float32
#: metrics into inf (e.g. predictions scaled by 1e20).
MAX_SCALED_COORDINATE = 1e6


@dataclass(frozen=True)
class MetricConfig:
    """Thresholds and sizes of the metrics; the defaults are DESIGN.md's."""

    tau_move: float = TAU_MOVE
    """A pixel moves when ``max_t |x_t - x_0|`` exceeds ``tau_move * s`` (moving masks, F)."""
    tau_dir: float = TAU_DIR
    """A displacement component counts as a direction when it exceeds ``tau_dir * s``."""
    num_neighbours: int = NUM_NEIGHBOURS
    """K of ``local_dist_diff``: nearest valid pixels by GT reference position."""
    quantize_dts: tuple[int, ...] = QUANTIZE_DTS
    """Window lengths dT (frames) of the ``quantize_acc_dT`` metrics."""
    chunk_size: int | None = None
    """Trajectory pairs (sample x pixel) processed at once; bounds memory, never changes results.
    None: 8192 on CPU (working set stays in cache), 65536 on GPUs (fewer kernel launches)."""

    def __post_init__(self) -> None:
        if not (self.tau_move >= 0 and self.tau_dir >= 0):
            raise ValueError(
                f"MetricConfig.tau_move/tau_dir: expected >= 0, got {self.tau_move}, {self.tau_dir}"
            )
        if self.num_neighbours < 1:
            raise ValueError(f"MetricConfig.num_neighbours: expected >= 1, got {self.num_neighbours}")
        if not self.quantize_dts or min(self.quantize_dts) < 1:
            raise ValueError(
                f"MetricConfig.quantize_dts: expected positive frame counts, got {self.quantize_dts}"
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"MetricConfig.chunk_size: expected >= 1, got {self.chunk_size}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Returns the metric names in table order (paper Table 1, then ``ate`` and ``epe``)."""
        quantize = tuple(f"quantize_acc_{dt}" for dt in self.quantize_dts)
        return (
            "fg_mask_iou",
            "ate_dtw",
            "D_sig",
            "local_dist_diff",
            "patch_nearest_acc",
            *quantize,
            "ate",
            "epe",
        )


#: Metric names under the default config, in table order.
METRIC_NAMES = MetricConfig().metric_names


def higher_is_better(name: str) -> bool:
    """Returns True for metrics where larger is better (IoU, accuracies, image PSNR/SSIM), False
    for errors."""
    if name == "fg_mask_iou" or "acc" in name or name.startswith(("psnr", "ssim")):
        return True
    if name in ("ate_dtw", "D_sig", "local_dist_diff", "ate", "epe") or name.startswith("temporal_error"):
        return False
    raise KeyError(f"unknown metric {name!r}; expected one of {METRIC_NAMES} (any quantize_acc_dT)")


# ----------------------------------------------------------------------------- MoMap-level metrics
@dataclass
class _Inputs:
    """Checked inputs of one clip on one device (metres; divide by ``scale`` for metric units)."""

    gt_xyz: Tensor  # [T, H, W, 3] float32
    pred_xyz: Tensor  # [N, T, H, W, 3] float32, zeros where a pixel is invalid and non-finite
    valid: Tensor  # [H, W] bool
    instance: Tensor  # [H, W] int64
    scale: float  # the scene scale s in metres

    def curves(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Returns GT [3, T, len] and generated [N, 3, T, len] trajectories / s of flat ``pixels``.

        Only the selected pixels are copied, into the pairs-last layout the metrics loop over.
        """
        T, H, W, _ = self.gt_xyz.shape
        gt = self.gt_xyz.reshape(T, H * W, 3).index_select(1, pixels).permute(2, 0, 1) / self.scale
        pred = self.pred_xyz.reshape(-1, T, H * W, 3).index_select(2, pixels).permute(0, 3, 1, 2) / self.scale
        return gt.contiguous(), pred.contiguous()

    def pixel_major(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Returns GT [len, 3, T] and generated [len, N, 3, T] trajectories / s of flat ``pixels``.

        One row per pixel, so later gathers of neighbours copy whole rows (fast on CPU).
        """
        T, H, W, _ = self.gt_xyz.shape
        gt = self.gt_xyz.reshape(T, H * W, 3).index_select(1, pixels).permute(1, 2, 0) / self.scale
        pred = self.pred_xyz.reshape(-1, T, H * W, 3).index_select(2, pixels).permute(2, 0, 3, 1) / self.scale
        return gt.contiguous(), pred.contiguous()


def sample_metrics(
    gt: MoMap | Tensor | np.ndarray,
    pred: Tensor | np.ndarray | MoMap | Sequence[MoMap],
    *,
    valid: Tensor | np.ndarray | None = None,
    instance: Tensor | np.ndarray | None = None,
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Returns ``{metric name: Tensor [N] float64 (CPU)}``: every metric for each of N samples.

    ``gt`` is a MoMap or its ``xyz`` [T, H, W, 3]; ``pred`` is [N, T, H, W, 3] or [T, H, W, 3]
    (metres, reference frame, like the GT), a MoMap or a sequence of MoMaps. With a tensor GT,
    ``valid`` [H, W] defaults to all pixels and ``instance`` [H, W] to 0 (no patches, so
    ``patch_nearest_acc`` is NaN). Values at invalid pixels are ignored; a non-finite value at a
    valid pixel raises ``ValueError`` naming the sample. See the module docstring for the
    definitions and the NaN policy. Best-of-N selection lives in ``momaplib.eval``.
    """
    config = config or MetricConfig()
    inputs = _prepare(gt, pred, valid, instance, device)
    N = inputs.pred_xyz.shape[0]
    nan = torch.full((N,), math.nan, dtype=torch.float64)
    results: dict[str, Tensor] = {}

    # both masks use the GT's scale s; each MoMap's displacement is from its own x_0
    gt_moving = moving_mask(inputs.gt_xyz, inputs.valid, config.tau_move, scale=inputs.scale)
    pred_moving = moving_mask(inputs.pred_xyz, inputs.valid, config.tau_move, scale=inputs.scale)
    union = (gt_moving | pred_moving).sum((-2, -1))
    intersection = (gt_moving & pred_moving).sum((-2, -1))
    iou = torch.where(
        union > 0, intersection / union.clamp_min(1), torch.ones_like(union, dtype=torch.float32)
    )
    results["fg_mask_iou"] = iou.double().cpu()

    fg_index = torch.nonzero(gt_moving.flatten()).squeeze(1)  # F as flat pixel indices
    if fg_index.numel() == 0:
        return {name: results.get(name, nan.clone()) for name in config.metric_names}

    gt_fg, pred_fg = inputs.curves(fg_index)  # [3, T, F], [N, 3, T, F]
    results["ate_dtw"] = _ate_dtw(gt_fg, pred_fg, config.chunk_size)
    results["D_sig"] = _signature_error(gt_fg, pred_fg)
    results["local_dist_diff"] = _local_dist_diff(inputs, fg_index, config)
    results["patch_nearest_acc"] = _patch_nearest_acc(inputs, gt_moving)
    for dt in config.quantize_dts:
        gt_dir = quantize_displacements(gt_fg.permute(2, 1, 0), dt, config.tau_dir)  # [F, W, 3]
        pred_dir = quantize_displacements(pred_fg.permute(0, 3, 2, 1), dt, config.tau_dir)  # [N, F, W, 3]
        if gt_dir.shape[-2] == 0:
            results[f"quantize_acc_{dt}"] = nan.clone()
        else:
            results[f"quantize_acc_{dt}"] = (pred_dir == gt_dir).double().mean((1, 2, 3)).cpu()
    error = (pred_fg - gt_fg).square().sum(1).sqrt()  # [N, T, F]
    results["ate"] = error.double().mean((1, 2)).cpu()
    results["epe"] = error[:, -1].double().mean(-1).cpu()
    return {name: results[name] for name in config.metric_names}


def compute_metrics(
    gt: MoMap | Tensor | np.ndarray,
    pred: Tensor | np.ndarray | MoMap,
    *,
    valid: Tensor | np.ndarray | None = None,
    instance: Tensor | np.ndarray | None = None,
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Returns ``{metric name: float}`` for one generated MoMap ``pred`` [T, H, W, 3] against ``gt``.

    Arguments as in ``sample_metrics``; for N samples per input use
    ``momaplib.eval.best_of_n`` (the paper reports the best of N = 10).
    """
    if isinstance(pred, (Tensor, np.ndarray)) and pred.ndim == 5:
        if pred.shape[0] != 1:
            raise ValueError(
                f"compute_metrics: pred holds {pred.shape[0]} samples [N, T, H, W, 3]; pass one "
                "[T, H, W, 3], or use momaplib.eval.best_of_n for N samples"
            )
    per_sample = sample_metrics(gt, pred, valid=valid, instance=instance, config=config, device=device)
    return {name: float(values[0]) for name, values in per_sample.items()}


def foreground_mask(
    gt: MoMap | Tensor | np.ndarray, valid: Any = None, tau_move: float = TAU_MOVE
) -> np.ndarray:
    """Returns F, the GT moving mask (H, W) bool, with the metrics' scale and threshold."""
    inputs = _prepare(gt, None, valid, None, None)
    return moving_mask(inputs.gt_xyz, inputs.valid, tau_move, scale=inputs.scale).cpu().numpy()


# ----------------------------------------------------------------------------- the metrics' internals
def _ate_dtw(gt_fg: Tensor, pred_fg: Tensor, chunk_size: int | None) -> Tensor:
    """Returns [N]: mean over F of DTW cost / path length (inputs [3, T, F] and [N, 3, T, F])."""
    cost, length = dtw(gt_fg.permute(2, 1, 0), pred_fg.permute(0, 3, 2, 1), chunk_size=chunk_size)
    return (cost / length).double().mean(-1).cpu()


def _signature_error(gt_fg: Tensor, pred_fg: Tensor) -> Tensor:
    """Returns [N]: mean over F and over the T x T cells of ``|S_gt - S_gen|`` (paper D_sig).

    The matrices are symmetric with a zero diagonal, so only lags d >= 1 are visited, each as
    a few elementwise ops over all pairs (the T x T x pairs tensor never exists).
    """
    T = gt_fg.shape[1]
    total = torch.zeros(pred_fg.shape[0], pred_fg.shape[-1], dtype=pred_fg.dtype, device=pred_fg.device)
    for lag in range(1, T):
        total += (_lag_distance(pred_fg, lag) - _lag_distance(gt_fg, lag)).abs_().sum(-2)
    return (2 * total / T**2).double().mean(-1).cpu()


def _lag_distance(curves: Tensor, lag: int) -> Tensor:
    """Returns ``|x_{t+lag} - x_t|`` [..., T - lag, F] of curves [..., 3, T, F], one component at a time."""
    step = curves[..., 0, lag:, :] - curves[..., 0, :-lag, :]
    distance = step.square()
    for c in (1, 2):
        step = curves[..., c, lag:, :] - curves[..., c, :-lag, :]
        distance.addcmul_(step, step)
    return distance.sqrt_()


def _neighbours(points: np.ndarray, queries: np.ndarray, query_index: np.ndarray, k: int) -> np.ndarray:
    """Returns [Q, k] indices into ``points`` of each query's k nearest points, the query itself excluded.

    scipy's k-d tree is exact and runs once per clip on the GT alone (it never sees samples).
    """
    _, index = scipy.spatial.cKDTree(points).query(queries, k=k + 1)
    index = index.reshape(len(queries), k + 1)
    is_self = index == query_index[:, None]
    # a duplicate point can rank before the query itself: drop the self entry when present,
    # else the farthest of the k + 1
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(index, dtype=bool)
    keep[np.arange(len(index)), drop] = False
    return index[keep].reshape(len(index), k)


def neighbour_pixels(gt: MoMap, pixels: Any, num_neighbours: int = NUM_NEIGHBOURS) -> np.ndarray:
    """Returns [M, K, 2] (v, u): each pixel's K nearest valid pixels by GT reference position.

    ``pixels`` is [M, 2] (v, u) of valid pixels; these are the neighbours ``local_dist_diff``
    compares (the pixel itself excluded).
    """
    pixels = np.asarray(pixels).reshape(-1, 2)
    height, width = gt.valid.shape
    if not gt.valid[pixels[:, 0], pixels[:, 1]].all():
        raise ValueError("pixels: every pixel must be valid in the GT")
    valid_flat = np.flatnonzero(gt.valid)
    k = min(num_neighbours, len(valid_flat) - 1)
    points = gt.xyz[0].reshape(-1, 3)[valid_flat].astype(np.float64)
    position = np.searchsorted(valid_flat, pixels[:, 0] * width + pixels[:, 1])
    neighbours = valid_flat[_neighbours(points, points[position], position, k)]
    return np.stack(np.unravel_index(neighbours, (height, width)), -1)


def _local_dist_diff(inputs: _Inputs, fg_index: Tensor, config: MetricConfig) -> Tensor:
    """Returns [N]: mean over F, t and K neighbours of ``| |x_t(p)-x_t(q)|_gt - |...|_gen |``."""
    N, T = inputs.pred_xyz.shape[:2]
    valid_index = torch.nonzero(inputs.valid.flatten()).squeeze(1)
    k = min(config.num_neighbours, valid_index.numel() - 1)
    if k < 1:
        return torch.full((N,), math.nan, dtype=torch.float64)
    # neighbours by GT reference position, among valid pixels
    valid_np = valid_index.cpu().numpy()
    points = inputs.gt_xyz[0].reshape(-1, 3)[valid_index].double().cpu().numpy()  # [V, 3]
    position_in_valid = np.searchsorted(valid_np, fg_index.cpu().numpy())
    neighbours = _neighbours(points, points[position_in_valid], position_in_valid, k)
    neighbours = torch.from_numpy(valid_np[neighbours]).to(fg_index.device)  # [F, K] flat pixels
    # gather each needed trajectory once (F and its border), then copy whole rows per chunk
    pixels, local = torch.unique(torch.cat([fg_index[:, None], neighbours], 1), return_inverse=True)
    gt_rows, pred_rows = inputs.pixel_major(pixels)  # [U, 3, T], [U, N, 3, T]
    total = torch.zeros(N, dtype=torch.float64, device=fg_index.device)
    pixels_per_chunk = max(1, (config.chunk_size or default_chunk_size(fg_index.device)) // (N * k))
    for start in range(0, fg_index.numel(), pixels_per_chunk):
        index = local[start : start + pixels_per_chunk].flatten()  # [C * (1 + K)]: centre, neighbours
        gt_chunk = gt_rows.index_select(0, index).unflatten(0, (-1, k + 1))  # [C, 1 + K, 3, T]
        pred_chunk = pred_rows.index_select(0, index).unflatten(0, (-1, k + 1))  # [C, 1 + K, N, 3, T]
        gt_dist = (gt_chunk[:, 1:] - gt_chunk[:, :1]).square_().sum(2).sqrt_()  # [C, K, T]
        pred_dist = (pred_chunk[:, 1:] - pred_chunk[:, :1]).square_().sum(3).sqrt_()  # [C, K, N, T]
        total += (pred_dist - gt_dist[:, :, None]).abs_().sum((0, 1, 3)).double()
    return (total / (fg_index.numel() * T * k)).cpu()


def _patch_nearest_acc(inputs: _Inputs, gt_moving: Tensor) -> Tensor:
    """Returns [N]: fraction of (moving patch, t) whose nearest other patch agrees with the GT's.

    Patches are GT instances > 0 over valid pixels; a patch moves when at least half its
    pixels are in F; "nearest" is by centroid distance, ties going to the lower instance id.
    """
    N, T, H, W, _ = inputs.pred_xyz.shape
    ids = torch.where(inputs.valid, inputs.instance, 0).flatten()
    patch_ids = torch.unique(ids[ids > 0])
    if patch_ids.numel() < 2:
        return torch.full((N,), math.nan, dtype=torch.float64)
    membership = (ids[None] == patch_ids[:, None]).float()  # [P, H*W]
    size = membership.sum(-1)
    moving = membership @ gt_moving.flatten().float() >= 0.5 * size
    if not bool(moving.any()):
        return torch.full((N,), math.nan, dtype=torch.float64)
    # centroids as one matmul over all pixels (non-members weigh 0), in metric units
    weights = membership / (size[:, None] * inputs.scale)
    gt_centroid = weights @ inputs.gt_xyz.reshape(T, H * W, 3)  # [T, P, 3]
    pred_centroid = weights @ inputs.pred_xyz.reshape(N, T, H * W, 3)  # [N, T, P, 3]

    def nearest(centroid: Tensor) -> Tensor:
        distance = torch.cdist(centroid, centroid, compute_mode="donot_use_mm_for_euclid_dist")
        distance.diagonal(dim1=-2, dim2=-1).fill_(math.inf)  # "other" patch: never itself
        return distance.argmin(-1)  # the first minimum, i.e. the lower id, on ties

    agree = nearest(pred_centroid)[..., moving] == nearest(gt_centroid)[..., moving]  # [N, T, moving]
    return agree.double().mean((1, 2)).cpu()


# ----------------------------------------------------------------------------- input checks
def _as_tensor(name: str, value: Any, device: torch.device | str | None) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device) if device is not None else value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).to(device)
    raise TypeError(f"{name}: expected a torch.Tensor, numpy array or MoMap, got {type(value).__name__}")


def _prepare(gt: Any, pred: Any, valid: Any, instance: Any, device: torch.device | str | None) -> _Inputs:
    """Returns checked inputs on one device, divided by the GT scene scale; raises on bad input."""
    if isinstance(gt, MoMap):
        gt_xyz = gt.xyz
        valid = gt.valid if valid is None else valid
        instance = gt.instance if instance is None else instance
    else:
        gt_xyz = gt
    if device is None and isinstance(pred, Tensor):
        device = pred.device
    gt_xyz = _as_tensor("gt.xyz", gt_xyz, device)
    if gt_xyz.dim() != 4 or gt_xyz.shape[-1] != 3 or min(gt_xyz.shape) == 0:
        raise ValueError(f"gt.xyz: expected shape (T, H, W, 3) with T, H, W >= 1, got {tuple(gt_xyz.shape)}")
    if not gt_xyz.is_floating_point():
        raise ValueError(f"gt.xyz: expected floating point metres, got {gt_xyz.dtype}")
    device = gt_xyz.device
    T, H, W, _ = gt_xyz.shape
    valid = (
        torch.ones(H, W, dtype=torch.bool, device=device)
        if valid is None
        else _as_tensor("valid", valid, device)
    )
    if valid.shape != (H, W) or valid.dtype != torch.bool:
        raise ValueError(f"valid: expected (H, W) = {(H, W)} bool, got {tuple(valid.shape)} {valid.dtype}")
    if not bool(valid.any()):
        raise ValueError("valid: no valid pixel; the metrics need at least one trajectory")
    if instance is None:
        instance = torch.zeros(H, W, dtype=torch.int64, device=device)
    instance = _as_tensor("instance", instance, device)
    if instance.shape != (H, W) or instance.is_floating_point() or instance.dtype == torch.bool:
        raise ValueError(
            f"instance: expected (H, W) = {(H, W)} integer ids, got {tuple(instance.shape)} {instance.dtype}"
        )
    gt_xyz = gt_xyz.float()
    _check_finite("gt.xyz", gt_xyz[None], valid, what="GT")
    scale = float(scene_scale(gt_xyz[0], valid))
    if not scale > 0:
        raise ValueError(
            f"gt.xyz: scene scale (median reference depth of valid pixels) is {scale}; expected > 0 "
            "(points must be in the reference camera frame, z forward)"
        )
    _check_magnitude("gt.xyz", gt_xyz[None], valid, scale, what="GT")
    pred_xyz = gt_xyz[None] if pred is None else _prediction(pred, (T, H, W), device)
    if pred is not None:
        pred_xyz = _check_finite("pred", pred_xyz, valid, what="sample")
        _check_magnitude("pred", pred_xyz, valid, scale, what="sample")
    return _Inputs(gt_xyz=gt_xyz, pred_xyz=pred_xyz, valid=valid, instance=instance.long(), scale=scale)


def _prediction(pred: Any, shape: tuple[int, int, int], device: torch.device) -> Tensor:
    """Returns predictions [N, T, H, W, 3] float32 from the accepted input forms."""
    if isinstance(pred, MoMap):
        pred = pred.xyz[None]
    elif isinstance(pred, (list, tuple)) and pred and all(isinstance(p, MoMap) for p in pred):
        pred = np.stack([p.xyz for p in pred])
    pred = _as_tensor("pred", pred, device)
    if pred.dim() == 4:
        pred = pred[None]
    if pred.dim() != 5 or tuple(pred.shape[1:]) != (*shape, 3) or pred.shape[0] == 0:
        raise ValueError(
            f"pred: expected shape (N, T, H, W, 3) = (N, {', '.join(map(str, shape))}, 3) matching the GT, "
            f"got {tuple(pred.shape)}"
        )
    if not pred.is_floating_point():
        raise ValueError(f"pred: expected floating point metres, got {pred.dtype}")
    return pred.float()


def _check_finite(name: str, xyz: Tensor, valid: Tensor, what: str) -> Tensor:
    """Returns ``xyz`` [N, T, H, W, 3] with invalid pixels' non-finite values zeroed.

    Raises ``ValueError`` naming the first sample with a non-finite value at a valid pixel.
    """
    # one reduction finds NaN and inf in any component (they survive the sum)
    non_finite = ~torch.isfinite(xyz.sum(-1))  # [N, T, H, W]
    if not bool(non_finite.any()):
        return xyz
    bad = non_finite & valid
    if bool(bad.any()):
        n, t, v, u = (int(i) for i in torch.nonzero(bad)[0])
        count = int(bad[n].sum())
        where = f"{name}[{n}] ({what} {n})" if what == "sample" else name
        raise ValueError(
            f"{where}: {count} non-finite values (NaN/inf) at valid pixels, first at t={t}, v={v}, u={u}; "
            "expected finite metres"
        )
    # values at invalid pixels carry nothing and must not poison sums
    return torch.where(non_finite[..., None], 0.0, xyz)


def _check_magnitude(name: str, xyz: Tensor, valid: Tensor, scale: float, what: str) -> None:
    """Raises ``ValueError`` naming the first sample of ``xyz`` [N, T, H, W, 3] (finite) with a
    coordinate beyond ``MAX_SCALED_COORDINATE`` scene scales at a valid pixel."""
    largest = torch.where(valid, xyz.abs().amax(-1), 0.0).flatten(1).amax(1)  # [N]
    limit = MAX_SCALED_COORDINATE * scale
    too_large = torch.nonzero(largest > limit)
    if too_large.numel():
        n = int(too_large[0])
        where = f"{name}[{n}] ({what} {n})" if what == "sample" else name
        raise ValueError(
            f"{where}: coordinates up to {float(largest[n]):.3g} m at valid pixels; expected metres in the "
            f"reference frame within {MAX_SCALED_COORDINATE:g} x the scene scale s = {scale:.3g} m "
            "(a unit or scale error? the metrics would overflow)"
        )
