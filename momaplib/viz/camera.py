"""Camera disentanglement (paper §3.1): what the camera's motion does to a MoMap and its removal."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from momaplib.geometry import invert_pose, transform_points
from momaplib.viz.colors import _as_momap
from momaplib.viz.figures import _image_axis


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
