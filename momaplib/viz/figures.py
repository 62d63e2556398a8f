"""Matplotlib figures of MoMaps, clips and samples: trajectory images (paper Fig. 2-A), clip strips,
instances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from momaplib.eval.samples import SamplingResult
from momaplib.momap import TAU_MOVE, moving_mask
from momaplib.viz.colors import (
    _as_momap,
    _check_instance,
    _check_rgb,
    colorize_instances,
    instance_colors,
    xyz_color_range,
    xyz_to_rgb,
)


# ----------------------------------------------------------------------------- matplotlib figures
def _image_axis(ax, image: np.ndarray, title: str | None = None, **kwargs: Any):
    """Draws ``image`` without ticks on ``ax``; returns the AxesImage (for colour bars)."""
    mappable = ax.imshow(image, interpolation="nearest", **kwargs)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return mappable


def _frame_indices(num_frames: int, num_panels: int, frames: Sequence[int] | None) -> list[int]:
    """Returns the frames to show: ``frames`` (checked) or ``num_panels`` evenly spaced ones."""
    if frames is None:
        evenly = np.linspace(0, num_frames - 1, max(1, min(num_panels, num_frames)))
        return sorted({int(t) for t in np.round(evenly)})
    frames = [int(t) for t in frames]
    bad = [t for t in frames if not 0 <= t < num_frames]
    if bad or not frames:
        raise ValueError(f"frames: expected indices in [0, {num_frames}), got {frames}")
    return frames


def trajectory_image_grid(
    momap_or_clip: Any,
    num_panels: int = 8,
    frames: Sequence[int] | None = None,
    color_range: tuple[np.ndarray, np.ndarray] | None = None,
    show_displacement: bool = True,
    tau_move: float = TAU_MOVE,
    panel_size: float = 1.7,
) -> Figure:
    """Returns a matplotlib figure of the MoMap as a "trajectory image" over time (paper Fig. 2-A).

    Row 1: the reference RGB, then ``xyz[t]`` as colour for each shown frame t (``num_panels``
    evenly spaced, or ``frames``) with R, G, B = x, y, z in ONE range fixed over the whole MoMap
    (``xyz_color_range``, or ``color_range`` to share it with another MoMap), so only moving
    points change colour. Row 2 (``show_displacement``): the moving mask, then the distance
    ``|x_t - x_0| / s`` (``s`` = scene scale) with one colour scale for all t.
    Axes: ``(2 if show_displacement else 1) * (1 + len(frames))`` image panels (+1 colour bar).
    """
    momap = _as_momap(momap_or_clip)
    frames = _frame_indices(momap.num_frames, num_panels, frames)
    color_range = color_range or xyz_color_range(momap.xyz, momap.valid)
    rows, cols = (2 if show_displacement else 1), 1 + len(frames)
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel_size * cols + 0.8, panel_size * rows + 0.9), squeeze=False
    )
    _image_axis(axes[0, 0], momap.rgb, "reference RGB")
    colors = xyz_to_rgb(momap.xyz[frames], momap.valid, color_range)
    for ax, t, image in zip(axes[0, 1:], frames, colors, strict=True):
        _image_axis(ax, image, f"t = {t}")
    axes[0, 1].set_ylabel("XYZ as RGB", fontsize=9)
    if show_displacement:
        scale = momap.scene_scale
        distance = np.linalg.norm(momap.xyz - momap.xyz[:1], axis=-1) / scale  # (T, H, W)
        distance = np.where(momap.valid, distance, np.nan)
        vmax = max(float(np.nanmax(distance)), 2 * tau_move)  # one scale for every panel
        _image_axis(axes[1, 0], momap.moving_mask(tau_move), "moving mask", cmap="gray", vmin=0, vmax=1)
        for ax, t in zip(axes[1, 1:], frames, strict=True):
            mappable = _image_axis(ax, distance[t], f"t = {t}", cmap="magma", vmin=0, vmax=vmax)
        axes[1, 1].set_ylabel("|x_t - x_0| / s", fontsize=9)
        fig.colorbar(mappable, ax=list(axes[1, :]), fraction=0.02, pad=0.01, label="distance / scene scale")
    low, high = color_range
    key = ", ".join(
        f"{channel} = {axis} {word} [{lo:+.2f}, {hi:+.2f}] m"
        for channel, axis, word, lo, hi in zip(
            "RGB", "xyz", ("left→right", "up→down", "near→far"), low, high, strict=True
        )
    )
    title = f'"{momap.prompt}"\n' if momap.prompt else ""
    fig.suptitle(f"{title}{key}", fontsize=9)
    return fig


def plot_clip_strip(clip: Any, num_frames: int = 6, frames: Sequence[int] | None = None) -> Figure:
    """Returns a figure with rows frames / depth / instances of a clip, one column per shown frame.

    ``clip`` has ``frames (T, H, W, 3) uint8``, ``depth (T, H, W)`` metres and ``instances
    (T, H, W)`` (a ``momaplib.sim.Clip``). Depth uses one colour range for the whole clip and
    instances the fixed palette, so columns are comparable. Axes: ``3 * len(frames)`` panels + 1
    depth colour bar.
    """
    for name in ("frames", "depth", "instances"):
        if not hasattr(clip, name):
            raise TypeError(f"plot_clip_strip: expected a clip with .frames, .depth, .instances; no .{name}")
    video = _check_rgb("clip.frames", clip.frames, ndim=4)
    T, H, W, _ = video.shape
    depth = np.asarray(clip.depth)
    if depth.shape != (T, H, W):
        raise ValueError(f"clip.depth: expected (T, H, W) = {(T, H, W)}, got shape {depth.shape}")
    instances = _check_instance("clip.instances", clip.instances, (T, H, W))
    frames = _frame_indices(T, num_frames, frames)
    low, high = float(np.nanmin(depth)), float(np.nanmax(depth))
    fig, axes = plt.subplots(3, len(frames), figsize=(1.8 * len(frames) + 0.8, 5.8), squeeze=False)
    for col, t in enumerate(frames):
        _image_axis(axes[0, col], video[t], f"t = {t}")
        mappable = _image_axis(axes[1, col], depth[t], cmap="turbo", vmin=low, vmax=high)
        _image_axis(axes[2, col], colorize_instances(instances[t]))
    for row, label in enumerate(("frame", "depth", "instances")):
        axes[row, 0].set_ylabel(label, fontsize=9)
    fig.colorbar(mappable, ax=list(axes[1, :]), fraction=0.02, pad=0.01, label="depth z [m]")
    prompt = getattr(clip, "prompt", "")
    family = getattr(clip, "family", "")
    fig.suptitle(f"{family}: {prompt}" if family else prompt, fontsize=10)
    return fig


def _instance_label(instance_id: int, names: Mapping[int, Any] | None) -> str:
    entry = (names or {}).get(instance_id)
    if isinstance(entry, Mapping):  # a Clip's instance_info: {"name", "category", "role"}
        role = entry.get("role")
        return f"{instance_id}: {entry.get('name', '?')}" + (f" ({role})" if role else "")
    return f"{instance_id}: {entry}" if entry is not None else f"instance {instance_id}"


def overlay_instances(rgb: np.ndarray, instance: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Returns the (H, W, 3) uint8 image ``rgb`` with instances (H, W) blended in and outlined.

    Background (id 0) keeps its colours; each instance gets its palette colour at opacity
    ``alpha`` and a dark outline so that touching instances of similar colour stay apart.
    """
    rgb = _check_rgb("rgb", rgb)
    instance = _check_instance("instance", instance, rgb.shape[:2])
    image = rgb.astype(np.float64) / 255
    colors = instance_colors(instance.reshape(-1)).reshape(*instance.shape, 3)
    foreground = (instance != 0)[..., None]
    image = np.where(foreground, (1 - alpha) * image + alpha * colors, image)
    edge = np.zeros(instance.shape, dtype=bool)
    edge[1:] |= instance[1:] != instance[:-1]
    edge[:, 1:] |= instance[:, 1:] != instance[:, :-1]
    image[edge & (instance != 0)] *= 0.35
    return (image * 255 + 0.5).astype(np.uint8)


def instance_overlay(
    rgb: np.ndarray,
    instance: np.ndarray,
    names: Mapping[int, Any] | None = None,
    alpha: float = 0.55,
    title: str | None = None,
) -> Figure:
    """Returns a figure of ``rgb`` (H, W, 3) with coloured instance masks (H, W) and a legend.

    ``names`` maps ids to labels: plain strings, or a clip's ``instance_info`` (``{id: {"name",
    "role", ...}}``) to show roles (target / destination / static / agent). The legend lists the ids
    present in ``instance`` except the background 0, in the colours of ``instance_colors``.
    """
    image = overlay_instances(rgb, instance, alpha)
    instance = np.asarray(instance)
    ids = [int(i) for i in np.unique(instance) if i != 0]
    fig, (ax_rgb, ax_overlay) = plt.subplots(1, 2, figsize=(7.5, 3.6))
    _image_axis(ax_rgb, _check_rgb("rgb", rgb), "reference RGB")
    _image_axis(ax_overlay, image, "instances")
    handles = [
        Patch(facecolor=instance_colors([i])[0], edgecolor="black", label=_instance_label(i, names))
        for i in ids
    ]
    if handles:
        ax_overlay.legend(
            handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _trajectory_rows(
    shown: Sequence[tuple[str, np.ndarray]],
    valid: np.ndarray,
    scene_scale: float,
    num_frames: int,
    tau_move: float,
    panel_size: float,
    title: str,
) -> Figure:
    """One row per ``(title, xyz (T, H, W, 3))``: its moving mask, then ``xyz[t]`` as colour at
    ``num_frames`` evenly spaced t in the colour range of the first row."""
    T = shown[0][1].shape[0]
    frames = np.unique(np.linspace(0, T - 1, min(num_frames, T)).round().astype(int))
    color_range = xyz_color_range(shown[0][1], valid)
    rows, cols = len(shown), 1 + len(frames)
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel_size * cols + 0.6, panel_size * rows + 0.8), squeeze=False
    )
    for r, (name, xyz) in enumerate(shown):
        mask = moving_mask(xyz, valid, tau_move, scale=scene_scale)
        axes[r, 0].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_ylabel(name.replace(" · ", "\n"), fontsize=8)
        for c, image in enumerate(xyz_to_rgb(xyz[frames], valid, color_range), start=1):
            axes[r, c].imshow(image, interpolation="nearest")
    for c, t in enumerate(["moving mask", *(f"t = {t}" for t in frames)]):
        axes[0, c].set_title(t, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return fig


def sample_image_grid(
    result: SamplingResult,
    num_frames: int = 6,
    max_samples: int = 4,
    samples: Sequence[int] | None = None,
    tau_move: float = TAU_MOVE,
    panel_size: float = 1.45,
) -> Figure:
    """Returns a matplotlib figure: one row per MoMap (GT first, then samples) as trajectory images.

    Column 0 is the MoMap's moving mask (``|x_t - x_0| > tau_move * s``, s from the scene), the
    others ``xyz[t]`` as colour (R, G, B = x, y, z; paper Fig. 2-A) at ``num_frames`` evenly
    spaced t, in ONE colour range for every row (that of the first row), so rows compare and a
    pixel that keeps its colour did not move. Samples as in ``figure_3d`` (default the first
    ``max_samples``).
    """
    scene = result.scene
    title = f"{result.prompt or '(no text)'!r}; XYZ as RGB in one range for all rows"
    return _trajectory_rows(
        result.views(samples, max_samples), scene.valid, scene.scene_scale, num_frames, tau_move,
        panel_size, title,
    )  # fmt: skip


def method_comparison_grid(
    gt: Any,
    predictions: Mapping[str, np.ndarray],
    num_frames: int = 6,
    tau_move: float = TAU_MOVE,
    panel_size: float = 1.3,
) -> Figure:
    """Returns the paper's Fig.-5-style side-by-side of one clip: a row for the GT MoMap, then one per
    method (``predictions``: name -> ``xyz`` (T, H, W, 3) metres, e.g. each method's reported
    sample), drawn as ``sample_image_grid`` draws samples (moving mask, then XYZ as colour in the
    GT's range, so a pixel that keeps its colour did not move)."""
    momap = _as_momap(gt)
    shown = [("GT", momap.xyz)]
    for name, xyz in predictions.items():
        xyz = np.asarray(xyz)
        if xyz.shape != momap.xyz.shape:
            raise ValueError(
                f"predictions[{name!r}]: expected xyz of shape {momap.xyz.shape}, got {xyz.shape}"
            )
        shown.append((name, xyz))
    title = f'"{momap.prompt}"; XYZ as RGB in the GT\'s range for all rows' if momap.prompt else "XYZ as RGB"
    return _trajectory_rows(shown, momap.valid, momap.scene_scale, num_frames, tau_move, panel_size, title)
