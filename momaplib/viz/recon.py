"""Figures of the reconstruction stages (depth, tracks, static split, cameras, infill) for notebooks.

Each function takes a ``ReconResult`` (and optionally the simulator's ground truth) and returns
a matplotlib ``Figure``; colours follow ``momaplib.viz`` (turbo depth with one range per video,
the instance palette).
"""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from momaplib.geometry import rotation_angle
from momaplib.momap import MoMap
from momaplib.recon.pipeline import ReconResult
from momaplib.viz.colors import colorize_depth, colorize_instances


def _frames(num_frames: int, num_panels: int) -> list[int]:
    return sorted({int(t) for t in np.round(np.linspace(0, num_frames - 1, min(num_panels, num_frames)))})


def _blank(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_depth(result: ReconResult, gt_depth: np.ndarray | None = None, num_panels: int = 5) -> Figure:
    """Returns rows: frames, the depth used (after per-frame scale correction), and |depth - GT| / GT.

    ``gt_depth`` (T, H, W) metres adds the error row. One depth colour range for all panels.
    """
    T = result.video.num_frames
    frames = _frames(T, num_panels)
    depth = result.depth * result.poses.depth_scale[:, None, None]
    rows = 3 if gt_depth is not None else 2
    fig, axes = plt.subplots(rows, len(frames), figsize=(1.8 * len(frames), 1.9 * rows), squeeze=False)
    low, high = np.percentile(depth if gt_depth is None else gt_depth, [1, 99])
    for column, t in enumerate(frames):
        axes[0, column].imshow(result.video.frames[t])
        _blank(axes[0, column], f"t = {t}")
        axes[1, column].imshow(colorize_depth(depth[t], low, high))
        _blank(axes[1, column], f"depth x{result.poses.depth_scale[t]:.3f}")
        if gt_depth is not None:
            error = np.abs(depth[t] - gt_depth[t]) / gt_depth[t]
            image = axes[2, column].imshow(error, cmap="magma", vmin=0, vmax=0.05)
            _blank(axes[2, column], f"rel. error {np.median(error):.1%}")
    if gt_depth is not None:
        fig.colorbar(image, ax=list(axes[2]), fraction=0.02, label="|d - d_gt| / d_gt")
    fig.suptitle(f"depth ({low:.2f}-{high:.2f} m); the pose stage's per-frame scale applied", fontsize=9)
    return fig


def plot_tracks(result: ReconResult, step: int = 4, num_panels: int = 4) -> Figure:
    """Returns the tracks of a grid of reference pixels (every ``step``-th) drawn over later frames.

    Each panel shows frame t with the path of every sampled track up to t; tracks not visible at t
    end in a red cross (occluded or lost). The last panel: the fraction of tracks seen per frame.
    """
    tracks = result.tracks
    T, H, W = tracks.visible.shape
    frames = _frames(T, num_panels + 1)[1:]
    v, u = np.mgrid[step // 2 : H : step, step // 2 : W : step]
    v, u = v.ravel(), u.ravel()
    colors = plt.get_cmap("hsv")(np.linspace(0, 1, len(u), endpoint=False))
    fig, axes = plt.subplots(1, len(frames) + 1, figsize=(2.2 * (len(frames) + 1), 2.5))
    for ax, t in zip(axes[:-1], frames, strict=True):
        ax.imshow(result.video.frames[t])
        paths = tracks.uv[: t + 1, v, u]  # (t + 1, N, 2)
        seen = tracks.visible[t, v, u]
        for n in np.flatnonzero(seen):
            ax.plot(paths[:, n, 0], paths[:, n, 1], color=colors[n], linewidth=0.8)
        hidden = ~seen
        ax.scatter(u[hidden], v[hidden], marker="x", color="red", s=8, linewidths=0.8)
        _blank(ax, f"t = {t}: {seen.mean():.0%} seen")
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
    fraction = tracks.visible.reshape(T, -1)[:, tracks.visible[0].ravel()].mean(1)
    axes[-1].plot(np.arange(T), fraction, marker="o", markersize=3)
    axes[-1].set_ylim(0, 1.02)
    axes[-1].set_xlabel("t")
    axes[-1].set_title("fraction of tracks seen", fontsize=9)
    fig.tight_layout()
    return fig


def plot_static_split(result: ReconResult, gt_instance: np.ndarray | None = None) -> Figure:
    """Returns panels: reference image, tracks used as static scene by the camera stage, the
    reconstructed instances, and (optionally) the GT instances."""
    panels = [
        (result.video.frames[0], "reference frame"),
        (
            np.where(result.poses.static[..., None], [40, 160, 60], [220, 60, 40]).astype(np.uint8),
            "static (green)",
        ),
        (colorize_instances(result.instance), f"instances ({len(np.unique(result.instance)) - 1} moving)"),
    ]
    if gt_instance is not None:
        panels.append((colorize_instances(gt_instance), "GT instances"))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.5))
    for ax, (image, title) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        _blank(ax, title)
    fig.tight_layout()
    return fig


def plot_camera_trajectory(result: ReconResult, gt_ref_from_cam: np.ndarray | None = None) -> Figure:
    """Returns the camera centres seen from above (x, z in the reference frame) and the rotation
    angle from the reference camera over time, estimated (solid) against GT (dashed)."""
    estimated = result.momap.ref_from_cam.astype(np.float64)
    fig, (top, angle) = plt.subplots(1, 2, figsize=(8, 3))
    curves = [("estimated", estimated, "-")]
    if gt_ref_from_cam is not None:
        curves.append(("GT", np.asarray(gt_ref_from_cam, np.float64), "--"))
    for name, poses, style in curves:
        centres = poses[:, :3, 3] * 100
        top.plot(centres[:, 0], centres[:, 2], style, marker="o", markersize=3, label=name)
        angle.plot(np.degrees(rotation_angle(poses[:, :3, :3])), style, marker="o", markersize=3, label=name)
    top.set_xlabel("x (cm)")
    top.set_ylabel("z (cm)")
    top.set_title("camera centre, top view", fontsize=9)
    top.axis("equal")
    angle.set_xlabel("t")
    angle.set_ylabel("degrees")
    angle.set_title("rotation from the reference camera", fontsize=9)
    angle.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_infill(result: ReconResult, gt: MoMap | None = None, num_tracks: int = 4, seed: int = 0) -> Figure:
    """Returns x, y, z over time of ``num_tracks`` pixels that have hidden frames: observed points
    as dots, the infilled interval highlighted (orange), linear interpolation (thin grey) and
    the GT (dashed) when ``gt`` is given. Pixels with the longest hidden intervals on moving
    parts are preferred, since static points are trivially held in place."""
    momap = result.momap
    T = momap.num_frames
    hidden = (~momap.visible & momap.valid[None]).sum(0)  # (H, W) hidden frames per pixel
    moving = momap.moving_mask()
    score = hidden * (1 + 10 * moving)
    candidates = np.flatnonzero((hidden > 0).ravel())
    rng = np.random.default_rng(seed)
    if len(candidates) == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        _blank(ax, "no hidden trajectory points: nothing was infilled")
        return fig
    top = candidates[np.argsort(-score.ravel()[candidates], kind="stable")][: 4 * num_tracks]
    chosen = rng.choice(top, min(num_tracks, len(top)), replace=False)
    xyz = momap.xyz.reshape(T, -1, 3)
    visible = momap.visible.reshape(T, -1)
    initial = result.infill.initial
    fig, axes = plt.subplots(len(chosen), 3, figsize=(8, 1.6 * len(chosen)), squeeze=False)
    times = np.arange(T)
    for row, pixel in enumerate(chosen):
        v, u = divmod(int(pixel), momap.width)
        for axis, ax in enumerate(axes[row]):
            seen = visible[:, pixel]
            ax.plot(times, initial[:, pixel, axis], color="0.7", linewidth=0.8)
            if gt is not None:
                ax.plot(times, gt.xyz[:, v, u, axis], "k--", linewidth=0.8)
            ax.plot(times, xyz[:, pixel, axis], color="C0", linewidth=1)
            ax.scatter(times[seen], xyz[seen, pixel, axis], color="C0", s=10, zorder=3)
            ax.scatter(times[~seen], xyz[~seen, pixel, axis], color="C1", s=18, zorder=3)
            for t in times[~seen]:
                ax.axvspan(t - 0.5, t + 0.5, color="C1", alpha=0.15, linewidth=0)
            if row == 0:
                ax.set_title("xyz"[axis] + " (m)", fontsize=9)
            if axis == 0:
                ax.set_ylabel(f"pixel ({u}, {v})", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(
        "infilled trajectory points (orange) vs observed (blue), interpolation (grey)"
        + (", GT (dashed)" if gt is not None else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


__all__ = ["plot_camera_trajectory", "plot_depth", "plot_infill", "plot_static_split", "plot_tracks"]
