"""Figures of "is the model a distribution?": the GT futures and samples of one scene overlaid in 3D,
the diversity-fidelity curve over guidance scales and precision / recall over the threshold tau
(``momaplib.metrics.distribution``, ``momaplib.eval.distribution``)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure

from momaplib.eval.distribution import common_scenes, coverage_curve, distribution_table, guidance_curve
from momaplib.metrics.distribution import TAU_MATCH
from momaplib.momap import TAU_MOVE, MoMap, moving_mask
from momaplib.viz.colors import _as_momap
from momaplib.viz.plot3d import REFERENCE_SCENE, subsample_pixels, top_matter

#: Colours of the two sets in every figure here: the GT futures and the samples.
GT_COLOR, SAMPLE_COLOR = "royalblue", "orangered"


def _as_set(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Returns a set of MoMaps' xyz (K, T, H, W, 3) from an array, tensor or sequence of MoMaps."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, MoMap) for v in value):
        value = np.stack([v.xyz for v in value])
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != 5 or value.shape[1:] != shape or len(value) == 0:
        raise ValueError(
            f"{name}: expected shape (K, {', '.join(map(str, shape))}) like the reference, got {value.shape}"
        )
    return value


def plot_futures_3d(
    reference: Any,
    gt_futures: Any,
    samples: Any,
    num_points: int = 60,
    context_points: int = 400,
    seed: int = 0,
    tau_move: float = TAU_MOVE,
    title: str | None = None,
) -> go.Figure:
    """Returns a plotly figure: M GT futures (blue) and N samples (orange) of one scene in one 3D view.

    ``reference`` is the scene (MoMap or Clip: its image colours the static context, its scale
    sets the moving threshold), ``gt_futures`` (M, T, H, W, 3) and ``samples`` (N, T, H, W, 3)
    metres in its reference frame (or sequences of MoMaps). The same ``num_points`` pixels, from
    those that move in any future or sample, are drawn as one curve per MoMap, with a marker at
    each curve's end: a collapsed model shows one orange bundle inside a wide blue fan. Traces:
    0 ``"scene at t0"``, then one per future (legend group "GT futures"), one per sample (group
    "samples"), then ``"GT end points"`` and ``"sample end points"``.
    """
    scene = _as_momap(reference)
    gt = _as_set("gt_futures", gt_futures, scene.xyz.shape)
    generated = _as_set("samples", samples, scene.xyz.shape)
    scale = scene.scene_scale
    moving = np.zeros_like(scene.valid)
    for xyz in (*gt, *generated):
        moving |= moving_mask(xyz, scene.valid, tau_move, scale=scale)
    total = num_points + context_points
    pixels = subsample_pixels(scene, total, num_points / max(total, 1), seed, tau_move, moving=moving)
    v, u = pixels[:, 0], pixels[:, 1]
    num_moving = int(moving[v, u].sum())  # moving pixels come first
    start = scene.xyz[0, v, u]
    colors = [f"rgb({r},{g},{b})" for r, g, b in scene.rgb[v, u]]
    traces = [
        go.Scatter3d(
            x=start[:, 0], y=start[:, 1], z=start[:, 2], mode="markers", name="scene at t0",
            marker={"size": 1.5, "color": colors, "opacity": 0.6},
        )
    ]  # fmt: skip
    ends = {}
    for label, group, color in (("GT future", gt, GT_COLOR), ("sample", generated, SAMPLE_COLOR)):
        for k, xyz in enumerate(group):
            curves = xyz[:, v[:num_moving], u[:num_moving]].transpose(1, 0, 2)  # (P, T, 3)
            padded = np.concatenate([curves, np.full((len(curves), 1, 3), np.nan)], 1).reshape(-1, 3)
            traces.append(
                go.Scatter3d(
                    x=padded[:, 0], y=padded[:, 1], z=padded[:, 2], mode="lines", name=f"{label}s",
                    legendgroup=f"{label}s", showlegend=k == 0, line={"color": color, "width": 2},
                    opacity=0.5, hovertext=f"{label} {k}",
                )
            )  # fmt: skip
        ends[label] = group[:, -1, v[:num_moving], u[:num_moving]].reshape(-1, 3)
    for label, color in (("GT future", GT_COLOR), ("sample", SAMPLE_COLOR)):
        points = ends[label]
        traces.append(
            go.Scatter3d(
                x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers",
                name=f"{label.split()[0]} end points", marker={"size": 2.5, "color": color},
            )
        )  # fmt: skip
    fig = go.Figure(data=traces)
    title = (
        title
        or f"{scene.prompt or '(no text)'!r}: {len(gt)} GT futures (blue), {len(generated)} samples (orange)"
    )
    fig.update_layout(
        height=560,
        **top_matter(title, 560),
        scene=REFERENCE_SCENE,
    )
    return fig


def plot_guidance_curve(per_scene: pd.DataFrame, method: str = "ours") -> Figure:
    """Returns a figure of ``method`` across guidance scales, per family, from per-scene rows
    (``momaplib.eval.evaluate_distribution``, with a ``dataset`` column or without).

    Left, the diversity-fidelity curve: diversity ratio (1 = as spread as the GT futures, dashed)
    against ``sample_to_gt`` (how far a sample is from its nearest future, lower is better), one
    point per guidance scale, the other rows as labelled markers. Right: precision and recall
    against the guidance scale. Every point is a mean over the same scenes: those that every row of
    their family scored (``common_scenes``; rows run on more scenes are cut to them).
    """
    frame = common_scenes(per_scene if "dataset" in per_scene.columns else per_scene.assign(dataset="all"))
    curve = guidance_curve(frame, method)
    others = distribution_table(frame[frame["method"] != method])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.get_cmap("tab10")
    for d, (dataset, rows) in enumerate(curve.groupby("dataset", sort=False)):
        color = colors(d)
        left.plot(
            rows["diversity_ratio"], rows["sample_to_gt"], "o-", color=color, label=f"{dataset}: {method}"
        )
        for row in rows.itertuples():
            left.annotate(f"g={row.guidance_scale:g}", (row.diversity_ratio, row.sample_to_gt), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")  # fmt: skip
        for row in others[others["dataset"] == dataset].itertuples():
            left.plot(row.diversity_ratio, row.sample_to_gt, "s", color=color, alpha=0.6)
            left.annotate(str(row.method), (row.diversity_ratio, row.sample_to_gt), fontsize=7,
                          xytext=(3, -9), textcoords="offset points")  # fmt: skip
        right.plot(
            rows["guidance_scale"], rows["precision"], "o-", color=color, label=f"{dataset}: precision"
        )
        right.plot(rows["guidance_scale"], rows["recall"], "o--", color=color, label=f"{dataset}: recall")
    left.axvline(1.0, color="0.5", ls="--", lw=1)
    left.set_xlabel("diversity ratio (samples' spread / GT futures' spread)")
    left.set_ylabel("sample_to_gt: ate_dtw to the nearest future ↓")
    scenes = len(frame[["dataset", "scene_id"]].drop_duplicates())
    left.set_title(f"diversity against fidelity ({scenes} scenes)", fontsize=10)
    left.legend(fontsize=8)
    right.set_xlabel("guidance scale")
    right.set_ylabel("share matched")
    right.set_ylim(-0.03, 1.03)
    right.set_title("precision (samples that are futures), recall (futures found)", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_coverage_curve(per_scene: pd.DataFrame, tau: float = TAU_MATCH) -> Figure:
    """Returns one panel per family: mean precision (solid) and recall (dashed) over the matching
    threshold tau for every (method, guidance) row of ``evaluate_distribution``; the default
    ``tau`` is marked."""
    curve = coverage_curve(per_scene if "dataset" in per_scene.columns else per_scene.assign(dataset="all"))
    datasets = list(dict.fromkeys(curve["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = curve[curve["dataset"] == dataset]
        for r, ((method, guidance), group) in enumerate(
            rows.groupby(["method", "guidance_scale"], sort=False, dropna=False)
        ):
            label = method if pd.isna(guidance) else f"{method} g={guidance:g}"
            ax.plot(group["tau"], group["precision"], "-", color=colors(r), label=f"{label}")
            ax.plot(group["tau"], group["recall"], "--", color=colors(r))
        ax.axvline(tau, color="0.5", lw=1, ls=":")
        ax.set_xlabel("tau: ate_dtw threshold (scene scales)")
        ax.set_ylabel("share matched (solid: precision, dashed: recall)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(str(dataset), fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
