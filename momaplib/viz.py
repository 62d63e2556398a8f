"""Figures of MoMaps and MoMap-Sim clips (paper §3.1, Fig. 2-A) for the notebooks and the demo.

Matplotlib helpers return a ``matplotlib.figure.Figure``, the 3D view returns a plotly
``go.Figure``; ``save_figure`` writes either kind. Inputs are MoMap records (or anything with a
``.momap``, such as a ``momaplib.sim.Clip``) and numpy arrays with the record layouts of
DESIGN.md: ``xyz (T, H, W, 3)`` metres in the reference camera frame (x right, y down,
z forward), ``valid (H, W)``, ``rgb (H, W, 3) uint8``, ``instance (H, W)`` with 0 = background.

Colour conventions shared by every figure, so that panels can be compared:
- XYZ as colour (``xyz_to_rgb``): R = x (left -> right), G = y (up -> down), B = z (near -> far),
  each axis mapped linearly from one range fixed for the *whole* MoMap (``xyz_color_range``),
  never per frame, so a point that keeps its colour across panels did not move.
- Instances: id ``i`` always gets ``INSTANCE_PALETTE[(i - 1) % len]``; background stays uncoloured.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from momaplib.geometry import invert_pose, transform_points
from momaplib.momap import TAU_MOVE, MoMap

#: Lower and upper percentiles (over all valid pixels and all frames) that span the XYZ colour
#: range: a handful of far wall points must not wash out the colours of the table and objects.
XYZ_PERCENTILES = (0.5, 99.5)
#: Colour of pixels without a trajectory in XYZ images (RGB in [0, 1]).
INVALID_COLOR = (0.0, 0.0, 0.0)
#: Distinct colours for instance ids 1, 2, ... (matplotlib's tab10 without its grey).
INSTANCE_PALETTE = np.array(
    [plt.get_cmap("tab10")(i)[:3] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)], dtype=np.float64
)
#: Extensions ``save_clip_animation`` writes.
ANIMATION_SUFFIXES = (".gif", ".mp4")


# ----------------------------------------------------------------------------- input checks
def _as_momap(momap_or_clip: Any) -> MoMap:
    """Returns the MoMap of a MoMap or of anything carrying one (a ``Clip``)."""
    momap = getattr(momap_or_clip, "momap", momap_or_clip)
    if not isinstance(momap, MoMap):
        raise TypeError(f"expected a MoMap or a Clip, got {type(momap_or_clip).__name__}")
    return momap


def _check_array(name: str, array: Any, ndim: int, last: int | None, expected: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim or (last is not None and array.shape[-1] != last) or array.size == 0:
        raise ValueError(f"{name}: expected {expected}, got shape {array.shape} dtype {array.dtype}")
    return array


def _check_rgb(name: str, rgb: Any, ndim: int = 3) -> np.ndarray:
    """Returns ``rgb`` as uint8 (float images in [0, 1] are converted); checks (..., H, W, 3)."""
    expected = "(H, W, 3)" if ndim == 3 else "(T, H, W, 3)"
    rgb = _check_array(name, rgb, ndim, 3, f"{expected} uint8 (or float in [0, 1])")
    if np.issubdtype(rgb.dtype, np.floating):
        return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if rgb.dtype != np.uint8:
        raise ValueError(f"{name}: expected {expected} uint8 (or float in [0, 1]), got dtype {rgb.dtype}")
    return rgb


def _check_instance(name: str, instance: Any, shape: tuple[int, ...]) -> np.ndarray:
    instance = np.asarray(instance)
    if instance.shape != shape or not np.issubdtype(instance.dtype, np.integer):
        raise ValueError(
            f"{name}: expected integer ids of shape {shape} (matching the image), "
            f"got shape {instance.shape} dtype {instance.dtype}"
        )
    return instance


# ----------------------------------------------------------------------------- colours
def xyz_color_range(
    xyz: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = XYZ_PERCENTILES
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(low (3,), high (3,))``: the per-axis XYZ range that ``xyz_to_rgb`` maps to [0, 1].

    The range is taken once over *all* frames and valid pixels of ``xyz`` (T, H, W, 3) (or a single
    frame (H, W, 3)), at ``percentiles`` of each axis; ``(0, 100)`` gives min/max. Pass the same
    range when colouring several MoMaps (GT and generated) so their colours are comparable.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 3:
        xyz = xyz[None]
    if xyz.ndim != 4 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected (T, H, W, 3) or (H, W, 3), got shape {xyz.shape}")
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != xyz.shape[1:3]:
        raise ValueError(f"valid: expected (H, W) = {xyz.shape[1:3]}, got shape {valid.shape}")
    if not valid.any():
        raise ValueError("valid: the MoMap has no valid pixels to colour")
    points = xyz[:, valid].reshape(-1, 3)
    low, high = np.percentile(points, percentiles, axis=0)
    # A flat axis (e.g. a single frame of a plane) would divide by zero; give it a tiny span.
    high = np.maximum(high, low + 1e-6)
    return low, high


def xyz_to_rgb(
    xyz: np.ndarray, valid: np.ndarray, color_range: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Returns the XYZ-as-colour image (..., H, W, 3) float in [0, 1] of positions (..., H, W, 3).

    R, G, B = x, y, z linearly mapped from ``color_range = (low, high)`` (default: the fixed range of
    ``xyz_color_range`` over all of ``xyz``) and clipped to [0, 1]; invalid pixels (``valid`` (H, W)
    False) get ``INVALID_COLOR``.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim < 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected (..., H, W, 3), got shape {xyz.shape}")
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != xyz.shape[-3:-1]:
        raise ValueError(f"valid: expected (H, W) = {xyz.shape[-3:-1]}, got shape {valid.shape}")
    if color_range is None:
        color_range = xyz_color_range(xyz.reshape(-1, *xyz.shape[-3:]), valid)
    low, high = (np.asarray(c, dtype=np.float64) for c in color_range)
    rgb = np.clip((xyz - low) / (high - low), 0.0, 1.0)
    return np.where(valid[..., None], rgb, np.asarray(INVALID_COLOR))


def instance_colors(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Returns the (N, 3) float RGB colours of instance ids (N,); id 0 (background) is white."""
    ids = np.asarray(ids, dtype=np.int64)
    colors = INSTANCE_PALETTE[(np.maximum(ids, 1) - 1) % len(INSTANCE_PALETTE)]
    return np.where((ids == 0)[..., None], 1.0, colors)


def colorize_instances(
    instance: np.ndarray, background: tuple[float, float, float] = (0.12,) * 3
) -> np.ndarray:
    """Returns the (..., H, W, 3) uint8 image of instance ids (..., H, W) in the instance palette."""
    instance = np.asarray(instance)
    rgb = instance_colors(instance.reshape(-1)).reshape(*instance.shape, 3)
    rgb[instance == 0] = background
    return (rgb * 255 + 0.5).astype(np.uint8)


def colorize_depth(depth: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Returns the (..., H, W, 3) uint8 turbo image of depth (..., H, W); one range for all frames.

    ``low``/``high`` default to the min/max of finite depths over the whole array, so a surface
    keeps its colour while the camera does not move towards it.
    """
    depth = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(depth)
    low = float(depth[finite].min()) if low is None else low
    high = float(depth[finite].max()) if high is None else high
    scaled = np.clip((depth - low) / max(high - low, 1e-9), 0.0, 1.0)
    rgb = plt.get_cmap("turbo")(np.where(finite, scaled, 0.0))[..., :3]
    rgb[~finite] = 0.0
    return (rgb * 255 + 0.5).astype(np.uint8)


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


# ----------------------------------------------------------------------------- camera disentanglement
def background_mask(momap_or_clip: Any) -> np.ndarray:
    """Returns the (H, W) bool mask of valid background pixels (instance id 0: table, walls)."""
    momap = _as_momap(momap_or_clip)
    return momap.valid & (momap.instance == 0)


def camera_disentanglement(momap_or_clip: Any, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Returns per-frame curves (T,) that show how a MoMap removes camera motion (paper §3.1).

    - ``"momap"``: mean ``|x_t - x_0|`` over ``mask`` (default: background pixels) in the MoMap,
      i.e. in the reference camera frame; 0 for a static background, whatever the camera does.
    - ``"camera_frame"``: the same points seen from camera t (``cam_t_from_ref @ x_t``): the motion
      a representation without the reference frame would have to model.
    - ``"camera_translation"``: ``|t|`` of ``ref_from_cam`` (metres), ``"camera_rotation_deg"``:
      its rotation angle.
    - ``"foreground"``: mean ``|x_t - x_0|`` of the moving pixels (zeros when nothing moves).
    """
    momap = _as_momap(momap_or_clip)
    mask = background_mask(momap) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != momap.valid.shape:
        raise ValueError(f"mask: expected (H, W) = {momap.valid.shape}, got shape {mask.shape}")
    xyz = momap.xyz.astype(np.float64)
    T = momap.num_frames

    def mean_motion(points: np.ndarray) -> np.ndarray:  # (T, N, 3) -> (T,)
        if points.shape[1] == 0:
            return np.zeros(T)
        return np.linalg.norm(points - points[:1], axis=-1).mean(-1)

    points = xyz[:, mask]  # (T, N, 3)
    cam_from_ref = invert_pose(momap.ref_from_cam.astype(np.float64))
    rotation = momap.ref_from_cam[:, :3, :3].astype(np.float64)
    cos_angle = np.clip((np.trace(rotation, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    return {
        "momap": mean_motion(points),
        "camera_frame": mean_motion(transform_points(cam_from_ref, points)),
        "camera_translation": np.linalg.norm(momap.ref_from_cam[:, :3, 3].astype(np.float64), axis=-1),
        "camera_rotation_deg": np.degrees(np.arccos(cos_angle)),
        "foreground": mean_motion(xyz[:, momap.moving_mask()]),
    }


def plot_camera_disentanglement(momap_or_clip: Any, t: int | None = None) -> Figure:
    """Returns a 3-panel figure: background motion in the MoMap vs in the moving camera's frame.

    Left: the ``camera_disentanglement`` curves over time (metres). Middle and right, at frame
    ``t`` (default: the last): per-pixel ``|x_t - x_0|`` of every reference pixel's point, seen
    from camera t (everything moves with the camera) and in the MoMap (only the moving objects),
    on one colour scale.
    """
    momap = _as_momap(momap_or_clip)
    T = momap.num_frames
    t = T - 1 if t is None else int(t)
    if not 0 <= t < T:
        raise ValueError(f"t: expected a frame index in [0, {T}), got {t}")
    curves = camera_disentanglement(momap)
    xyz = momap.xyz.astype(np.float64)
    cam_from_ref = invert_pose(momap.ref_from_cam[t].astype(np.float64))
    seen_from_cam = transform_points(cam_from_ref, xyz[t].reshape(-1, 3)).reshape(xyz[t].shape)
    in_camera = np.where(momap.valid, np.linalg.norm(seen_from_cam - xyz[0], axis=-1), np.nan)
    in_momap = np.where(momap.valid, np.linalg.norm(xyz[t] - xyz[0], axis=-1), np.nan)
    vmax = max(float(np.nanmax(in_camera)), float(np.nanmax(in_momap)), 1e-3)

    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    frames = np.arange(T)
    ax = axes[0]
    ax.plot(
        frames, curves["camera_frame"], "-o", ms=3, color="tab:red", label="background, seen from camera t"
    )
    ax.plot(frames, curves["momap"], "-o", ms=3, color="tab:blue", label="background in the MoMap")
    ax.plot(frames, curves["foreground"], "--", color="tab:green", label="moving pixels in the MoMap")
    ax.plot(frames, curves["camera_translation"], ":", color="black", label="camera translation |t|")
    ax.axvline(t, color="0.7", lw=0.8)
    ax.set_xlabel("frame t")
    ax.set_ylabel("mean |x_t - x_0| [m]")
    ax.set_title(f"camera rotates up to {curves['camera_rotation_deg'].max():.1f}°", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for ax, image, title in (
        (axes[1], in_camera, f"seen from camera t = {t}"),
        (axes[2], in_momap, f"in the MoMap, t = {t}"),
    ):
        mappable = _image_axis(ax, image, title, cmap="magma", vmin=0.0, vmax=vmax)
    fig.colorbar(mappable, ax=list(axes[1:]), fraction=0.03, pad=0.02, label="metres")
    fig.suptitle(
        "camera disentanglement: |x_t - x_0| of each reference pixel's point; the MoMap keeps the "
        "background still",
        fontsize=10,
    )
    return fig


# ----------------------------------------------------------------------------- plotly 3D
def _allocate(counts: np.ndarray, budget: int) -> np.ndarray:
    """Returns per-group sample counts (G,) summing to ``min(budget, counts.sum())``, as equal as
    the group sizes ``counts`` (G,) allow (small groups give their unused share to larger ones)."""
    take = np.zeros_like(counts)
    budget = int(min(budget, counts.sum()))
    while budget > take.sum():
        open_groups = np.flatnonzero(take < counts)
        share = max(1, (budget - int(take.sum())) // len(open_groups))
        for g in open_groups:
            extra = min(share, counts[g] - take[g], budget - int(take.sum()))
            take[g] += extra
    return take


def subsample_pixels(
    momap_or_clip: Any,
    num_points: int = 600,
    moving_fraction: float = 0.5,
    seed: int = 0,
    tau_move: float = TAU_MOVE,
) -> np.ndarray:
    """Returns (N, 2) int pixel coordinates ``(v, u)`` of valid pixels to draw, N <= num_points.

    Moving pixels would be a few percent of a uniform sample, so up to ``moving_fraction`` of the
    budget goes to moving pixels (``moving_mask(tau_move)``), split equally between the moving
    instances (a small moving lid gets as many points as a large moving hand); the rest is drawn
    uniformly from static pixels. Moving pixels come first; the draw is seeded.
    """
    momap = _as_momap(momap_or_clip)
    if num_points < 1:
        raise ValueError(f"num_points: expected >= 1, got {num_points}")
    if not 0.0 <= moving_fraction <= 1.0:
        raise ValueError(f"moving_fraction: expected a value in [0, 1], got {moving_fraction}")
    rng = np.random.default_rng(seed)
    moving = momap.moving_mask(tau_move)
    static = momap.valid & ~moving
    picks: list[np.ndarray] = []
    moving_ids = np.unique(momap.instance[moving])
    pixels_of = [np.argwhere(moving & (momap.instance == i)) for i in moving_ids]
    counts = np.array([len(p) for p in pixels_of], dtype=np.int64)
    static_pixels = np.argwhere(static)
    # Moving pixels get their share first; any budget they cannot use goes to static pixels and back.
    moving_budget = min(round(moving_fraction * num_points), int(counts.sum()))
    static_take = min(num_points - moving_budget, len(static_pixels))
    moving_budget = min(num_points - static_take, int(counts.sum()))
    for pixels, take in zip(pixels_of, _allocate(counts, moving_budget), strict=True):
        picks.append(pixels[rng.choice(len(pixels), size=int(take), replace=False)])
    picks.append(static_pixels[rng.choice(len(static_pixels), size=static_take, replace=False)])
    return np.concatenate(picks).astype(np.int64)


def _rgb_strings(colors: np.ndarray) -> list[str]:
    return [f"rgb({r},{g},{b})" for r, g, b in np.asarray(colors, dtype=np.uint8)]


def _polylines(curves: np.ndarray) -> tuple[np.ndarray, ...]:
    """Returns x, y, z arrays (N * (T + 1),) of curves (N, T, 3) with NaN gaps between curves."""
    padded = np.concatenate([curves, np.full((len(curves), 1, 3), np.nan)], axis=1).reshape(-1, 3)
    return padded[:, 0], padded[:, 1], padded[:, 2]


def _frustum(K: np.ndarray, height: int, width: int, depth: float, pose: np.ndarray) -> np.ndarray:
    """Returns (17, 3) polyline points (NaN-separated) of a camera frustum drawn at ``depth``,
    mapped by ``pose`` (4, 4) (``ref_from_cam``) into the reference frame."""
    corners_uv = np.array(
        [[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]]
    )
    K = K.astype(np.float64)
    rays = np.stack(
        [(corners_uv[:, 0] - K[0, 2]) / K[0, 0], (corners_uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(4)], -1
    )
    corners = rays * depth
    origin = np.zeros(3)
    gap = np.full(3, np.nan)
    path = [*corners, corners[0], gap]
    for corner in corners:
        path += [origin, corner, gap]
    points = np.array(path[:-1])
    return transform_points(pose.astype(np.float64), points)


def plot_trajectories_3d(
    momap_or_clip: Any,
    num_points: int = 600,
    moving_fraction: float = 0.5,
    seed: int = 0,
    frame_step: int = 1,
    show_camera: bool = True,
    marker_size: float = 2.5,
    line_width: float = 4.0,
    title: str | None = None,
) -> go.Figure:
    """Returns a plotly figure of the MoMap's 3D trajectories with a time slider and play button.

    Pixels come from ``subsample_pixels`` (moving ones always represented). Traces, in order:
    0 ``"trajectories"``: curves ``xyz[:, v, u]`` of the sampled pixels that move, coloured by
    their reference RGB; 1 ``"scene at t0"``: every sampled point at t = 0; 2 ``"points at t"``:
    the moving points at the slider's frame; 3 ``"camera t"`` and 4 ``"reference camera"``
    frustums (with ``show_camera``; the camera path too when it moves). One animation frame per
    ``frame_step`` frames updates traces 2 (and 3). Axes are the reference camera's (metres):
    the view starts behind and above that camera with y pointing down and z forward, as in the
    image.
    """
    momap = _as_momap(momap_or_clip)
    if frame_step < 1:
        raise ValueError(f"frame_step: expected >= 1, got {frame_step}")
    pixels = subsample_pixels(momap, num_points, moving_fraction, seed)
    v, u = pixels[:, 0], pixels[:, 1]
    curves = momap.xyz[:, v, u].transpose(1, 0, 2).astype(np.float64)  # (N, T, 3)
    colors = momap.rgb[v, u]  # (N, 3) uint8
    moves = np.linalg.norm(curves - curves[:, :1], axis=-1).max(-1) > 1e-6 * momap.scene_scale
    color_strings = _rgb_strings(colors)
    T = momap.num_frames

    moving_curves = curves[moves]  # (M, T, 3)
    moving_colors = [c for c, m in zip(color_strings, moves, strict=True) if m]
    M = len(moving_curves)
    x, y, z = _polylines(moving_curves)
    # One colour per curve through a colour scale with one stop per curve: plotly validates colour
    # strings one by one, which would take seconds for M * (T + 1) per-vertex strings.
    stops = np.linspace(0.0, 1.0, max(M, 2))
    colorscale = [[float(stop), moving_colors[min(i, M - 1)]] for i, stop in enumerate(stops)] if M else None
    traces = [
        go.Scatter3d(
            x=x,
            y=y,
            z=z,
            mode="lines",
            name="trajectories",
            line={
                "color": np.repeat(stops[:M], T + 1),
                "colorscale": colorscale,
                "cmin": 0.0,
                "cmax": 1.0,
                "width": line_width,
            },
        ),
        go.Scatter3d(
            x=curves[:, 0, 0],
            y=curves[:, 0, 1],
            z=curves[:, 0, 2],
            mode="markers",
            name="scene at t0",
            marker={"size": marker_size, "color": color_strings, "opacity": 0.8},
        ),
        go.Scatter3d(
            x=moving_curves[:, 0, 0],
            y=moving_curves[:, 0, 1],
            z=moving_curves[:, 0, 2],
            mode="markers",
            name="points at t",
            marker={"size": marker_size * 2, "color": moving_colors, "line": {"color": "black", "width": 1}},
        ),
    ]
    depth = 0.15 * momap.scene_scale
    # Frustum polylines (T, 16, 3) of camera t in the reference frame.
    frustums = [_frustum(momap.K, momap.height, momap.width, depth, pose) for pose in momap.ref_from_cam]
    if show_camera:
        reference = _frustum(momap.K, momap.height, momap.width, depth, np.eye(4))
        centres = momap.ref_from_cam[:, :3, 3].astype(np.float64)
        path = np.concatenate([reference, np.full((1, 3), np.nan), centres])
        for name, points, color in (
            ("camera t", frustums[0], "crimson"),
            ("reference camera", path, "black"),
        ):
            traces.append(
                go.Scatter3d(
                    x=points[:, 0],
                    y=points[:, 1],
                    z=points[:, 2],
                    mode="lines",
                    name=name,
                    line={"color": color, "width": 3},
                )
            )

    shown = list(range(0, T, frame_step))
    if shown[-1] != T - 1:
        shown.append(T - 1)
    frames = []
    for t in shown:
        # Frames carry positions only; plotly keeps the other properties of the traces they update.
        data = [
            {
                "type": "scatter3d",
                "x": moving_curves[:, t, 0],
                "y": moving_curves[:, t, 1],
                "z": moving_curves[:, t, 2],
            }
        ]
        if show_camera:
            data.append(
                {"type": "scatter3d", "x": frustums[t][:, 0], "y": frustums[t][:, 1], "z": frustums[t][:, 2]}
            )
        frames.append(go.Frame(data=data, traces=[2, 3] if show_camera else [2], name=str(t)))
    fig = go.Figure(data=traces, frames=frames)
    fig.update_layout(
        title=title if title is not None else momap.prompt,
        height=620,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        legend={"x": 0.0, "y": 1.0},
        scene={
            "xaxis_title": "x (right) [m]",
            "yaxis_title": "y (down) [m]",
            "zaxis_title": "z (forward) [m]",
            "aspectmode": "data",
            # behind and above the reference camera, image "up" (-y) on screen up
            "camera": {"up": {"x": 0, "y": -1, "z": 0}, "eye": {"x": 0.25, "y": -0.9, "z": -1.7}},
        },
        **time_controls([str(t) for t in shown]),
    )
    return fig


def time_controls(frame_names: Sequence[str]) -> dict[str, list]:
    """Returns plotly layout entries (``updatemenus``, ``sliders``): play/pause buttons and a
    ``t = ...`` slider over the figure's frames named ``frame_names``."""
    play = {"frame": {"duration": 120, "redraw": True}, "transition": {"duration": 0}, "fromcurrent": True}
    pause = {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}
    steps = [
        {
            "label": name,
            "method": "animate",
            "args": [[name], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
        }
        for name in frame_names
    ]
    buttons = [
        {"label": "▶ play", "method": "animate", "args": [None, play]},
        {"label": "❚❚ pause", "method": "animate", "args": [[None], pause]},
    ]
    menu = {"type": "buttons", "showactive": False, "x": 0.0, "y": 0.0, "xanchor": "left", "yanchor": "top"}
    return {
        "updatemenus": [{**menu, "buttons": buttons}],
        "sliders": [{"active": 0, "currentvalue": {"prefix": "t = "}, "pad": {"t": 30}, "steps": steps}],
    }


# ----------------------------------------------------------------------------- animation and saving
def _animation_frames(clip_or_frames: Any, panels: Sequence[str], upscale: int) -> np.ndarray:
    """Returns (T, H', W', 3) uint8 frames: the requested panels side by side, upscaled."""
    known = ("rgb", "depth", "instance")
    unknown = [p for p in panels if p not in known]
    if unknown or not panels:
        raise ValueError(f"panels: expected a non-empty subset of {known}, got {tuple(panels)}")
    if hasattr(clip_or_frames, "frames"):
        video = _check_rgb("clip.frames", clip_or_frames.frames, ndim=4)
        depth, instances = clip_or_frames.depth, clip_or_frames.instances
    else:
        video = _check_rgb("frames", clip_or_frames, ndim=4)
        if set(panels) != {"rgb"}:
            raise ValueError("panels: 'depth' and 'instance' need a clip, not a frames array")
        depth = instances = None
    images = []
    for panel in panels:
        if panel == "rgb":
            images.append(video)
        elif panel == "depth":
            images.append(colorize_depth(depth))
        else:
            images.append(colorize_instances(instances))
    T, H = video.shape[:2]
    gap = np.full((T, H, 2, 3), 255, dtype=np.uint8)  # white 2-px separator between panels
    joined = np.concatenate([part for image in images for part in (image, gap)][:-1], axis=2)
    if upscale > 1:  # nearest neighbour: small sim frames stay crisp
        joined = joined.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return joined


def save_clip_animation(
    clip_or_frames: Any,
    path: str | os.PathLike,
    fps: float = 10.0,
    panels: Sequence[str] = ("rgb",),
    upscale: int = 1,
) -> Path:
    """Writes an animation of a clip (or frames (T, H, W, 3) uint8) and returns its path.

    ``.gif`` is written with Pillow, looping; GIF delays are whole multiples of 10 ms, so each frame
    lasts ``1000 / fps`` ms rounded to 10 ms, and identical consecutive frames are merged by the
    encoder with their delays added (the timing is unchanged). ``.mp4`` (H.264) needs the
    optional package ``imageio-ffmpeg``; without it a ``RuntimeError`` says so (save a ``.gif``
    instead). ``panels`` chooses what is shown side by side: ``"rgb"``, ``"depth"`` (one turbo
    range for the clip) and ``"instance"`` (the latter two need a clip). ``upscale`` repeats pixels.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"path: expected a file ending in one of {ANIMATION_SUFFIXES}, got {path.name!r}")
    if fps <= 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    if int(upscale) < 1:
        raise ValueError(f"upscale: expected an integer >= 1, got {upscale}")
    frames = _animation_frames(clip_or_frames, panels, int(upscale))
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(
            path,
            save_all=True,
            append_images=images[1:],
            duration=10 * max(1, round(100 / fps)),
            loop=0,
            disposal=1,
        )
        return path
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RuntimeError(
            "save_clip_animation: writing .mp4 needs the optional package imageio-ffmpeg "
            "(pip install imageio-ffmpeg); or save a .gif instead"
        )
    import imageio.v2 as imageio

    # H.264 in yuv420p needs even sizes: pad with white rather than let the writer rescale.
    H, W = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), constant_values=255)
    with imageio.get_writer(
        path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p"
    ) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def save_figure(
    fig: Figure | go.Figure,
    path: str | os.PathLike,
    dpi: int = 120,
    include_plotlyjs: bool | str = True,
    close: bool = False,
) -> list[Path]:
    """Writes a figure and returns the written paths.

    Matplotlib figures go to ``path`` (PNG when it has no suffix; any suffix matplotlib knows,
    e.g. .pdf or .svg, works). Plotly figures go to ``path`` with suffix ``.html`` (interactive;
    ``include_plotlyjs`` as in ``plotly``'s ``write_html``: True embeds plotly.js, "directory" shares
    one copy next to the file, "cdn" needs internet), plus a ``.png`` when the optional package
    ``kaleido`` is installed and can render (a warning otherwise). ``close`` frees a matplotlib figure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(fig, Figure):
        path = path if path.suffix else path.with_suffix(".png")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if close:
            plt.close(fig)
        return [path]
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig: expected a matplotlib or plotly figure, got {type(fig).__name__}")
    html = path.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=include_plotlyjs, auto_play=False)
    written = [html]
    if importlib.util.find_spec("kaleido") is not None:
        png = path.with_suffix(".png")
        try:
            fig.write_image(png)
            written.append(png)
        except Exception as exc:  # kaleido needs a headless browser; the HTML is the main output
            warnings.warn(f"save_figure: no PNG for {html.name} ({exc})", stacklevel=2)
    return written
