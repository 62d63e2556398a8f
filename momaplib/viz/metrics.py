"""Figures that explain the metrics of paper §4.2 (used by notebooks/06_metrics_and_tables).

Each function draws one idea on a fresh matplotlib figure and returns it: the moving masks
behind ``fg_mask_iou``, a DTW alignment (``ate_dtw``), distance-matrix signatures (``D_sig``),
nearest-neighbour distances (``local_dist_diff``) and quantised directions (``quantize_acc``),
and the paired differences of two methods with their intervals (``plot_paired_differences``).
Curves are [T, 3] trajectories in metres; the figures divide by the scene scale when given.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from momaplib.metrics import (
    TAU_DIR,
    distance_signature,
    dtw_path,
    higher_is_better,
    neighbour_pixels,
    quantize_displacements,
)
from momaplib.momap import TAU_MOVE, MoMap, moving_mask

AXIS_WORDS = (("left", "right"), ("up", "down"), ("backward", "forward"))  # -1 / +1 per camera axis
_MIN_RANGE = 1e-9  # smallest colour range: a constant image keeps the colour of its value


def _curve(curve: Any) -> np.ndarray:
    return np.asarray(curve.detach().cpu() if isinstance(curve, torch.Tensor) else curve, dtype=np.float64)


def plot_moving_masks(gt: MoMap, pred_xyz: Any, tau_move: float = TAU_MOVE) -> Figure:
    """Returns a figure of the GT and generated moving masks and their overlap (``fg_mask_iou``)."""
    pred_xyz = _curve(pred_xyz)
    scale = gt.scene_scale
    gt_mask = moving_mask(gt.xyz, gt.valid, tau_move, scale=scale)
    pred_mask = moving_mask(pred_xyz, gt.valid, tau_move, scale=scale)
    union = (gt_mask | pred_mask).sum()
    iou = 1.0 if union == 0 else (gt_mask & pred_mask).sum() / union
    overlap = np.zeros((*gt_mask.shape, 3))
    overlap[gt_mask & pred_mask] = (0.2, 0.7, 0.2)  # both: green
    overlap[gt_mask & ~pred_mask] = (0.9, 0.3, 0.2)  # missed: red
    overlap[~gt_mask & pred_mask] = (0.2, 0.4, 0.9)  # spurious: blue
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    for ax, image, title in zip(
        axes,
        (gt.rgb, gt_mask, pred_mask, overlap),
        ("reference image", "GT moving mask F", "generated moving mask", f"overlap: IoU = {iou:.3f}"),
        strict=True,
    ):
        if image.ndim == 2:  # a bool mask: fixed range, or an all-True mask would be drawn black
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])  # ticks off but the frame kept: an all-white mask stays visible
        ax.set_yticks([])
    for ax in axes[1:3]:
        ax.text(0, -0.04, "white: moves", transform=ax.transAxes, fontsize=8, va="top")
    axes[3].text(
        0,
        -0.04,
        "green both, red missed, blue spurious, black neither",
        transform=axes[3].transAxes,
        fontsize=8,
        va="top",
    )
    fig.tight_layout()
    return fig


def plot_dtw_alignment(gt_curve: Any, pred_curve: Any, scale: float = 1.0, every: int = 1) -> Figure:
    """Returns a figure of the DTW alignment of two curves [T, 3]: matched points and the cost matrix.

    Left: the distance of each curve from its start over time (GT above, prediction below, a
    grey line per matched pair of the optimal path, every ``every``-th drawn). Right: the step
    cost matrix ``|g_i - p_j| / s`` with the optimal path; ``ate_dtw`` is the path's mean cost.
    """
    gt_curve, pred_curve = _curve(gt_curve) / scale, _curve(pred_curve) / scale
    path, cost = dtw_path(gt_curve, pred_curve)
    gt_progress = np.linalg.norm(gt_curve - gt_curve[0], axis=-1)
    pred_progress = np.linalg.norm(pred_curve - pred_curve[0], axis=-1)
    offset = 1.2 * max(gt_progress.max(), pred_progress.max(), 1e-9)
    ate = (
        np.linalg.norm(gt_curve - pred_curve, axis=-1).mean() if len(gt_curve) == len(pred_curve) else np.nan
    )
    fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    for i, j in path[::every]:
        ax.plot([i, j], [gt_progress[i] + offset, pred_progress[j]], color="0.7", lw=0.8, zorder=1)
    ax.plot(gt_progress + offset, "o-", color="tab:blue", ms=3, label="GT")
    ax.plot(pred_progress, "o-", color="tab:orange", ms=3, label="generated")
    ax.set_xlabel("frame t")
    ax.set_ylabel("|x_t - x_0| / s (GT shifted up)")
    ax.set_title(f"DTW alignment: ate_dtw = {cost / len(path):.4f}, plain ATE = {ate:.4f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    step = np.linalg.norm(gt_curve[:, None] - pred_curve[None], axis=-1)
    # a fixed range from 0: two still curves (all costs 0) read as "no cost", not as a rescaled blank
    image = ax_cost.imshow(step, origin="lower", cmap="viridis", vmin=0, vmax=max(step.max(), _MIN_RANGE))
    ax_cost.plot(path[:, 1], path[:, 0], color="white", lw=1.5)
    ax_cost.set_xlabel("generated frame j")
    ax_cost.set_ylabel("GT frame i")
    ax_cost.set_title(f"step cost |g_i - p_j| / s, path of {len(path)} cells", fontsize=10)
    fig.colorbar(image, ax=ax_cost, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_distance_signature(gt_curve: Any, pred_curve: Any, scale: float = 1.0) -> Figure:
    """Returns a figure of the T x T signatures ``|x_i - x_j| / s`` of two curves and their difference."""
    gt_sig = distance_signature(torch.from_numpy(_curve(gt_curve) / scale)).numpy()
    pred_sig = distance_signature(torch.from_numpy(_curve(pred_curve) / scale)).numpy()
    difference = np.abs(gt_sig - pred_sig)
    vmax = max(gt_sig.max(), pred_sig.max(), _MIN_RANGE)
    # The difference gets its own range, but never below 1% of the signatures': float rounding
    # (a rigidly moved copy) stays black = 0 instead of being stretched into a pattern.
    difference_vmax = max(difference.max(), 0.01 * vmax)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, matrix, title, limit in zip(
        axes,
        (gt_sig, pred_sig, difference),
        ("GT signature", "generated signature", f"|difference|: D_sig = {difference.mean():.4f}"),
        (vmax, vmax, difference_vmax),
        strict=True,
    ):
        image = ax.imshow(matrix, origin="lower", cmap="magma", vmin=0, vmax=limit)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("frame j")
        ax.set_ylabel("frame i")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_local_distances(gt: MoMap, pred_xyz: Any, pixel: tuple[int, int], num_neighbours: int = 8) -> Figure:
    """Returns a figure of a pixel's K nearest GT neighbours and their distances over time, GT vs generated.

    ``pixel`` is (v, u); neighbours are the valid pixels nearest in GT reference position, as in
    ``local_dist_diff``, whose per-pixel value is the mean gap between the two sets of curves.
    """
    pred_xyz = _curve(pred_xyz)
    scale = gt.scene_scale
    neighbours = neighbour_pixels(gt, np.array([pixel]), num_neighbours)[0]  # [K, 2]
    v, u = pixel
    gt_dist = np.linalg.norm(
        gt.xyz[:, v, u][:, None] - gt.xyz[:, neighbours[:, 0], neighbours[:, 1]], axis=-1
    )
    pred_dist = np.linalg.norm(
        pred_xyz[:, v, u][:, None] - pred_xyz[:, neighbours[:, 0], neighbours[:, 1]], axis=-1
    )
    gt_dist, pred_dist = gt_dist / scale, pred_dist / scale
    fig, (ax_image, ax) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
    ax_image.imshow(gt.rgb, interpolation="nearest")
    ax_image.scatter(neighbours[:, 1], neighbours[:, 0], s=18, facecolors="none", edgecolors="yellow", lw=1.2)
    ax_image.scatter([u], [v], s=30, color="red", marker="x")
    ax_image.set_title(f"pixel (v={v}, u={u}) and its {len(neighbours)} GT neighbours", fontsize=10)
    ax_image.axis("off")
    colors = plt.cm.tab10(np.arange(len(neighbours)) % 10)
    for k in range(len(neighbours)):
        ax.plot(gt_dist[:, k], color=colors[k], lw=1.5)
        ax.plot(pred_dist[:, k], color=colors[k], lw=1.0, ls="--")
    gap = np.abs(gt_dist - pred_dist).mean()
    ax.set_title(f"|x_t(p) - x_t(q)| / s: GT solid, generated dashed; mean gap {gap:.4f}", fontsize=10)
    ax.set_xlabel("frame t")
    fig.tight_layout()
    return fig


def plot_quantized_directions(
    gt_curve: Any, pred_curve: Any, dt: int, scale: float = 1.0, tau_dir: float = TAU_DIR
) -> Figure:
    """Returns a figure of per-axis directions {-1, 0, +1} over dT windows, GT vs generated, with matches."""
    gt_dir = quantize_displacements(torch.from_numpy(_curve(gt_curve) / scale), dt, tau_dir).numpy()
    pred_dir = quantize_displacements(torch.from_numpy(_curve(pred_curve) / scale), dt, tau_dir).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.8), sharey=True)
    for ax, directions, title in zip(axes, (gt_dir, pred_dir), ("GT", "generated"), strict=True):
        ax.imshow(directions.T, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        for w in range(directions.shape[0]):
            for axis in range(3):
                value = int(directions[w, axis])
                word = "stay" if value == 0 else AXIS_WORDS[axis][(value + 1) // 2]
                mark = "" if title == "GT" or gt_dir[w, axis] == value else " ✗"
                ax.text(w, axis, word + mark, ha="center", va="center", fontsize=7)
        ax.set_yticks(range(3), ["x", "y", "z"])
        ax.set_xlabel(f"window w (frames {dt}w to {dt}w + {dt})")
        ax.set_title(title, fontsize=10)
    accuracy = (gt_dir == pred_dir).mean() if gt_dir.size else float("nan")
    fig.suptitle(f"quantised directions over dT = {dt}: accuracy {accuracy:.3f}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_paired_differences(
    frame: pd.DataFrame, a_name: str = "a", b_name: str = "b", group: str | None = "dataset"
) -> Figure:
    """Returns a forest plot of ``momaplib.eval.paired_differences`` output: per metric the
    mean per-clip difference ``a - b`` with its interval, signed so that right is always
    "``a`` better" (errors, where lower is better, are negated). The metrics have different
    scales, so each metric gets its own x axis. ``frame`` has ``diff``, ``low`` and ``high``
    columns and the metric as index or ``metric`` column; a ``group`` column (e.g. the family)
    draws one marker per group."""
    missing = {"diff", "low", "high"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"frame: expected paired_differences columns diff, low, high; missing {sorted(missing)}"
        )
    frame = frame if "metric" in frame.columns else frame.rename_axis("metric").reset_index()
    groups = list(dict.fromkeys(frame[group])) if group and group in frame.columns else [None]
    metrics = list(dict.fromkeys(frame["metric"]))
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(7, 0.2 + 0.55 * len(metrics) * max(1, len(groups)) ** 0.5)
    )
    axes = np.atleast_1d(axes)
    colors = plt.get_cmap("tab10")
    for ax, metric in zip(axes, metrics, strict=True):
        sign = 1.0 if higher_is_better(metric) else -1.0
        rows = frame[frame["metric"] == metric]
        for g, name in enumerate(groups):
            row = rows if name is None else rows[rows[group] == name]
            if row.empty:
                continue
            diff, low, high = (sign * float(row[c].iloc[0]) for c in ("diff", "low", "high"))
            low, high = min(low, high), max(low, high)
            ax.errorbar(
                diff, -g, xerr=[[diff - low], [high - diff]], fmt="o", color=colors(g), capsize=3,
                label=name if metric == metrics[0] and name is not None else None,
            )  # fmt: skip
        ax.axvline(0.0, color="0.5", lw=0.8)
        ax.set_yticks([])
        ax.set_ylim(-len(groups) + 0.5, 0.5)
        ax.set_ylabel(metric, rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    axes[-1].set_xlabel(f"{a_name} - {b_name} per clip, signed so that right = {a_name} better")
    fig.suptitle(
        f"{a_name} against {b_name}: mean paired difference and interval", fontsize=10, x=0.02, ha="left"
    )
    fig.tight_layout()
    if groups != [None]:
        fig.legend(loc="upper right", fontsize=8, ncol=len(groups), frameon=False)
    return fig


def plot_steps_tradeoff(steps: pd.DataFrame, metric: str = "ate_dtw") -> Figure:
    """Quality against time of samplers (``momaplib.eval.samplers.steps_table`` rows: ``family``,
    ``method`` = "<sampler> <steps>", ``ms_per_sample`` and ``metric``): one panel per family, one
    line per sampler through its step counts (annotated), ms per sample on a log axis."""
    missing = {"family", "method", "ms_per_sample", metric} - set(steps.columns)
    if missing:
        raise ValueError(f"steps: expected the columns of steps_table, missing {sorted(missing)}")
    families = list(dict.fromkeys(steps["family"]))
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.4), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        rows = steps[steps["family"] == family]
        parts = rows["method"].str.rsplit(" ", n=1, expand=True)
        for sampler, group in rows.assign(sampler=parts[0], count=parts[1].astype(int)).groupby(
            "sampler", sort=False
        ):
            group = group.sort_values("count")
            ax.plot(group["ms_per_sample"], group[metric], marker="o", label=sampler)
            for _, row in group.iterrows():
                ax.annotate(str(row["count"]), (row["ms_per_sample"], row[metric]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(title=family, xlabel="ms per sample (end to end)", ylabel=metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="sampler (steps)", title_fontsize=8)
    fig.tight_layout()
    return fig
