"""Figures of the MoMap VAE (paper §3.3.2, Fig. 3-A): inflation, training runs, reconstructions.

- ``plot_inflation_diagram``: the VAE's layers, the re-shaped ones (``INFLATED_LAYERS``) coloured.
- ``plot_vae_runs``: training loss and validation EPE of runs read by ``momaplib.vae.analysis.load_runs``.
- ``plot_reconstruction``: GT and decoded trajectory images in ONE colour range per row pair.
- ``plot_reconstruction_errors``: where the end-point error sits (per pixel, still vs moving, over t).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from momaplib.momap import TAU_MOVE, MoMap
from momaplib.vae.analysis import INFLATED_LAYERS
from momaplib.viz.colors import xyz_color_range, xyz_to_rgb
from momaplib.viz.figures import _frame_indices, _image_axis

#: Boxes of ``plot_inflation_diagram``, in data order: (layer or data name, channels in -> out).
#: C: the first or last feature width, l / L: latent channels of the image / MoMap VAE.
DIAGRAM_STAGES = (
    ("MoMap", "3T ch"),
    ("encoder.conv_in", "3T → C"),
    ("encoder body", "resnets, attn"),
    ("encoder.conv_out", "C → 2L"),
    ("quant_conv", "1x1, 2L → 2L"),
    ("latent", "L ch, H/8"),
    ("post_quant_conv", "1x1, L → L"),
    ("decoder.conv_in", "L → C"),
    ("decoder body", "resnets, attn"),
    ("decoder.conv_out", "C → 3T"),
    ("MoMap", "3T ch"),
)
#: Fill colours of the diagram: re-shaped layers, copied layers, data.
DIAGRAM_COLORS = {"re-shaped": "tab:orange", "copied": "lightgrey", "data": "white"}


def _diagram_kind(name: str) -> str:
    if name in INFLATED_LAYERS:
        return "re-shaped"
    return "data" if name in ("MoMap", "latent") else "copied"


def plot_inflation_diagram() -> Figure:
    """Returns a one-row diagram of the MoMap VAE (``DIAGRAM_STAGES``, one box each, data flowing
    left to right): the six layers inflation re-shapes (``INFLATED_LAYERS``) in orange, the copied
    bodies in grey, the data (MoMap, latent) in white. Axes: 1, without ticks."""
    fig, ax = plt.subplots(figsize=(13, 2.3))
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.2)
    for i, (name, channels) in enumerate(DIAGRAM_STAGES):
        kind = _diagram_kind(name)
        ax.add_patch(Rectangle((1.2 * i, 0), 1, 1, facecolor=DIAGRAM_COLORS[kind], edgecolor="black"))
        label = name.replace(".", "\n").replace("_conv", "\n_conv") if kind == "re-shaped" else name
        ax.text(1.2 * i + 0.5, 0.5, f"{label}\n{channels}", ha="center", va="center", fontsize=8)
        if i:
            ax.annotate("", (1.2 * i, 0.5), (1.2 * i - 0.2, 0.5), arrowprops={"arrowstyle": "->"})
    ax.set(xlim=(-0.05, 1.2 * len(DIAGRAM_STAGES) - 0.15), ylim=(-0.02, 1.02))
    ax.axis("off")
    words = {"re-shaped": "re-shaped: channel counts change", "copied": "copied from the image VAE"}
    legend = [Patch(facecolor=DIAGRAM_COLORS[k], edgecolor="black", label=words[k]) for k in words]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False)
    ax.set_title("MoMap VAE inflated from an image VAE: T frames, L latent channels, C features", fontsize=10)
    return fig


def plot_vae_runs(runs: pd.DataFrame, title: str | None = None, smooth: int = 5) -> Figure:
    """Returns two panels of training runs, one line per ``init`` of ``runs`` (``load_runs``' frame).

    Left: training loss (L1 in model range, i.e. relative to the scene scale), a moving average
    over ``smooth`` logged records, log scale. Right: validation median EPE in % of the scene
    scale at the steps that validated. Axes: 2.
    """
    missing = {"init", "step", "loss", "val/epe_median"} - set(runs.columns)
    if missing:
        raise ValueError(f"runs: expected load_runs' columns, missing {sorted(missing)}")
    fig, (ax_loss, ax_epe) = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
    for init, frame in runs.groupby("init", sort=False):
        frame = frame.sort_values("step")
        ax_loss.plot(frame["step"], frame["loss"].rolling(smooth, min_periods=1).mean(), label=init)
        val = frame.dropna(subset=["val/epe_median"])
        ax_epe.plot(val["step"], 100 * val["val/epe_median"], "o-", label=init)
    ax_loss.set(yscale="log", xlabel="step", ylabel="training loss (L1 / scene scale)")
    ax_epe.set(xlabel="step", ylabel="val median EPE (% of scene scale)", ylim=(0, None))
    ax_loss.legend()
    ax_epe.legend()
    if title:
        fig.suptitle(title)
    return fig


def _check_pair(gt: MoMap, decoded: MoMap) -> None:
    if gt.xyz.shape != decoded.xyz.shape:
        raise ValueError(f"decoded: expected xyz of shape {gt.xyz.shape} (the GT's), got {decoded.xyz.shape}")


def plot_reconstruction(
    gt: MoMap, decoded: MoMap, num_panels: int = 6, tau_move: float = TAU_MOVE, panel_size: float = 1.6
) -> Figure:
    """Returns GT and decoded trajectory images (paper Fig. 2-A), each pair in ONE colour range.

    ``gt`` and ``decoded`` are MoMaps of the same shape (``xyz (T, H, W, 3)``; the GT's valid
    mask and scene scale ``s`` are used for both). Columns: ``num_panels`` evenly spaced frames t
    after a first column (reference RGB, and the moving masks). Rows: GT ``xyz[t]`` as RGB,
    decoded ``xyz[t]`` as RGB (both in the GT's ``xyz_color_range``, so equal colours are equal
    positions), GT ``|x_t - x_0| / s`` and decoded ``|x_t - x_0| / s`` (one colour scale, 0 to the
    GT's largest distance). Axes: ``4 * (1 + len(frames))`` panels + 1 colour bar.
    """
    _check_pair(gt, decoded)
    frames = _frame_indices(gt.num_frames, num_panels, None)
    color_range = xyz_color_range(gt.xyz, gt.valid)
    s = gt.scene_scale
    distances = [
        np.where(gt.valid, np.linalg.norm(m.xyz - m.xyz[:1], axis=-1) / s, np.nan) for m in (gt, decoded)
    ]  # (T, H, W) each
    vmax = max(float(np.nanmax(distances[0])), 2 * tau_move)
    cols = 1 + len(frames)
    fig, axes = plt.subplots(
        4, cols, figsize=(panel_size * cols + 1.2, panel_size * 4 + 0.6), squeeze=False, layout="constrained"
    )
    _image_axis(axes[0, 0], gt.rgb, "reference RGB")
    axes[1, 0].axis("off")
    for row, (name, momap) in enumerate((("GT", gt), ("decoded", decoded))):
        for ax, t, image in zip(
            axes[row, 1:], frames, xyz_to_rgb(momap.xyz[frames], gt.valid, color_range), strict=True
        ):
            _image_axis(ax, image, f"t = {t}" if row == 0 else None)
        axes[row, 1].set_ylabel(f"{name}: XYZ as RGB", fontsize=8)
        mask = np.where(gt.valid, distances[row].max(0) > tau_move, False)
        _image_axis(axes[2 + row, 0], mask, f"moving mask ({name})", cmap="gray", vmin=0, vmax=1)
        for ax, t in zip(axes[2 + row, 1:], frames, strict=True):
            mappable = _image_axis(ax, distances[row][t], cmap="magma", vmin=0, vmax=vmax)
        axes[2 + row, 1].set_ylabel(f"{name}: |x_t - x_0| / s", fontsize=8)
    fig.colorbar(mappable, ax=list(axes[2:, -1]), fraction=0.05, pad=0.02, label="distance / scene scale")
    prompt = f'"{gt.prompt}": ' if gt.prompt else ""
    fig.suptitle(
        f"{prompt}GT and decoded in one colour range (XYZ: the GT's; distance: 0-{vmax:.2f})", fontsize=9
    )
    return fig


def _track_pixel(gt: MoMap, instance_id: int | None) -> tuple[int, int]:
    """Returns (v, u): the pixel of ``instance_id`` nearest its centroid, or the farthest-moving one."""
    if instance_id is None:
        instance_id = gt.meta.get("task", {}).get("target_id")
    if instance_id is not None:
        pixels = np.argwhere(gt.instance == instance_id)  # (N, 2) (v, u)
        if not len(pixels):
            raise ValueError(f"instance_id: {instance_id} is not in the MoMap's instance map")
        v, u = pixels[np.linalg.norm(pixels - pixels.mean(0), axis=1).argmin()]
        return int(v), int(u)
    travel = np.where(gt.valid, np.linalg.norm(gt.xyz - gt.xyz[:1], axis=-1).max(0), -np.inf)
    v, u = np.unravel_index(np.argmax(travel), travel.shape)
    return int(v), int(u)


def plot_reconstruction_errors(
    gt: MoMap, decoded: MoMap, instance_id: int | None = None, tau_move: float = TAU_MOVE
) -> Figure:
    """Returns three panels of the end-point error ``|x_hat_t - x_t| / s`` of a reconstruction.

    ``gt``, ``decoded``: MoMaps of the same shape (``xyz (T, H, W, 3)`` metres); ``s`` is the GT's
    scene scale. Left: the mean EPE over t per pixel (H, W) in %, colour scale 0 to its 99th
    percentile, with the GT moving mask outlined in cyan. Middle: the median EPE over still and
    over moving pixels per frame (log scale). Right: x, y, z over t of one pixel, GT dashed: the
    pixel of ``instance_id`` nearest its centroid (default the prompt's target,
    ``meta["task"]["target_id"]``, when the MoMap names one; else the pixel that moves farthest).
    Axes: 3 + 1 colour bar.
    """
    _check_pair(gt, decoded)
    s = gt.scene_scale
    epe = 100 * np.linalg.norm(decoded.xyz - gt.xyz, axis=-1) / s  # (T, H, W) in %
    moving = gt.moving_mask(tau_move)
    still = gt.valid & ~moving
    v, u = _track_pixel(gt, instance_id)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), layout="constrained")
    per_pixel = np.where(gt.valid, epe.mean(0), np.nan)
    vmax = max(float(np.nanpercentile(per_pixel, 99)), 1e-3)
    image = _image_axis(
        axes[0], per_pixel, "EPE per pixel (cyan: GT moving mask)", cmap="magma", vmin=0, vmax=vmax
    )
    fig.colorbar(image, ax=axes[0], label="mean EPE over t (% of s)", extend="max")
    if moving.any() and not moving.all():
        axes[0].contour(moving, levels=[0.5], colors="cyan", linewidths=0.8)
    axes[0].plot([u], [v], "+", color="cyan", markersize=10)
    for name, mask in (("still pixels", still), ("moving pixels", moving)):
        if mask.any():
            axes[1].plot(np.median(epe[:, mask], axis=1), label=name)
    axes[1].set(xlabel="frame t", ylabel="median EPE (% of scene scale)", yscale="log", title="EPE over time")
    axes[1].legend()
    for c, name in enumerate("xyz"):
        (line,) = axes[2].plot(gt.xyz[:, v, u, c], "--")
        axes[2].plot(decoded.xyz[:, v, u, c], color=line.get_color(), label=name)
    where = f"pixel (u, v) = ({u}, {v}), the cyan +"
    axes[2].set(xlabel="frame t", ylabel="metres", title=f"x, y, z of the {where}; GT dashed")
    axes[2].legend()
    return fig


__all__ = [
    "DIAGRAM_COLORS",
    "DIAGRAM_STAGES",
    "plot_inflation_diagram",
    "plot_reconstruction",
    "plot_reconstruction_errors",
    "plot_vae_runs",
]
