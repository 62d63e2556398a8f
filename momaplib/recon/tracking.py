"""Tracking stage (paper §3.2 step 2): dense 2D tracks of every reference pixel, lifted to 3D.

Every tracker has one method, ``track(video) -> Tracks``: for each pixel ``(u, v)`` of the
reference frame ``t0 = 0`` of the video, where its surface point is in every frame and whether it
is seen there. Implementations:
- ``FlowChainTracker``: OpenCV DIS optical flow chained frame to frame from ``t0``; a
  forward-backward consistency check stops a track where it gets occluded or leaves the image,
  and direct ``t0 -> t`` flow restarts it where the point is seen again;
- ``ImportedTracks``: tracks exported by another tracker (CoTracker, SpaTracker, TAPIR, ...) in
  the ``.npz`` format documented on ``save_tracks``;
- ``GivenTracks``: tracks already in memory (e.g. ``tracks_from_momap`` of a simulator clip).

``lift_tracks`` turns 2D tracks and per-frame depth into 3D points in each frame's camera.
Pixel coordinates follow ``momaplib.geometry``: pixel centres at integers, ``u`` right, ``v`` down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from momaplib.geometry import invert_pose, pixel_grid, project, transform_points, unproject
from momaplib.recon.video import Video, VideoError
from momaplib.storage import DataFormatError, load_npz, save_npz

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass
class Tracks:
    """Dense tracks of the reference pixels: where each one is in frame t, and whether it is seen."""

    uv: np.ndarray  # (T, H, W, 2) float32 pixel position in frame t of reference pixel (u, v)
    visible: np.ndarray  # (T, H, W) bool: seen at t; visible[0] marks the pixels that have a track

    def __post_init__(self) -> None:
        self.uv = np.asarray(self.uv, dtype=np.float32)
        self.visible = np.asarray(self.visible, dtype=bool)
        if self.uv.ndim != 4 or self.uv.shape[-1] != 2 or self.visible.shape != self.uv.shape[:3]:
            raise VideoError(
                f"tracks: expected uv (T, H, W, 2) and visible (T, H, W), got {self.uv.shape} and "
                f"{self.visible.shape}"
            )

    def to_sparse(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns ``(tracks (T, N, 2), visible (T, N), queries (N, 2))`` of the N pixels with a track.

        The arrays of the ``save_tracks`` / ``ImportedTracks`` format, pixels in row-major order.
        """
        v, u = np.nonzero(self.visible[0])
        return self.uv[:, v, u], self.visible[:, v, u], np.stack([u, v], -1).astype(np.int32)

    @property
    def tracked_fraction(self) -> float:
        """Returns the fraction of (t, pixel) entries of tracked pixels that are seen (t > 0)."""
        has_track = self.visible[0]
        if self.visible.shape[0] < 2 or not has_track.any():
            return 0.0
        return float(self.visible[1:][:, has_track].mean())


class Tracker:
    """Base class of tracking stages: subclasses implement ``track``."""

    def track(self, video: Video) -> Tracks:
        """Returns the ``Tracks`` of every pixel of the video's first frame (the reference, t0 = 0)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- optical flow chains
@dataclass
class FlowChainConfig:
    """DIS optical flow chaining and its consistency checks."""

    preset: Literal["ultrafast", "fast", "medium"] = "medium"  # DIS preset: speed against accuracy
    finest_scale: int | None = 0  # DIS pyramid level where refinement stops (0: full resolution,
    # most accurate for small videos; None: the preset's, faster on large frames)
    fb_threshold: float = 0.5  # forward-backward error (pixels) above which a step counts as occluded
    anchor_radius: float = 1.5  # direct t0 -> t flow replaces the chained position if within this (pixels)
    restart: bool = True  # restart stopped tracks where direct t0 -> t flow finds them consistently
    restart_fb_threshold: float = 0.5  # forward-backward error (pixels) of the direct flow for a restart
    photometric_threshold: float = 12.0  # max grey-level change (0..255) of a restarted point from t0
    step_color_threshold: float | None = 24.0  # a track whose colour changes more than this (max over
    # RGB, 0..255) from frame t-1 to t was covered by an occluder that the flow dragged it along with
    # (forward-backward agrees there: both flows follow the occluder); None: no colour check
    border: float = 0.0  # tracks closer than this to the image border (pixels) count as out of view
    reference_color_threshold: float | None = 40.0  # a track whose colour drifts more than this (max
    # over RGB, 0..255, after matching each frame's mean colour to t0's) from its t0 colour ended on
    # another surface, dragged there gradually by smooth flow; None: no check


class FlowChainTracker(Tracker):
    """Chains forward DIS optical flow from the reference frame, with occlusion stop and restart.

    Step t-1 -> t moves every live track by the forward flow at its position; the backward flow
    at the new position must bring it back within ``fb_threshold`` pixels, otherwise the point
    was occluded (or the flow is unreliable there) and the track stops: it is not visible from t
    on. Chaining accumulates drift, so each step also computes DIS flow from t0 straight to t,
    initialised with the chained displacements, and takes its position where it differs from
    the chained one by at most ``anchor_radius`` pixels. A stopped track restarts at frame t
    where that direct flow passes a forward-backward check against the backward flow t -> t0
    and the grey level agrees with t0 (the point reappeared).

    Forward-backward consistency misses one kind of occlusion: a background point next to an
    object that slides over it gets the object's flow (DIS flow is smooth across the boundary),
    and both flows then agree on the object. Its colour jumps from background to object in that
    step, so a track whose colour changes by more than ``step_color_threshold`` also stops.
    """

    def __init__(self, config: FlowChainConfig | None = None):
        self.config = config or FlowChainConfig()
        if self.config.preset not in DIS_PRESETS:
            raise ValueError(f"FlowChainConfig.preset: expected one of {sorted(DIS_PRESETS)}")

    def track(self, video: Video) -> Tracks:
        """Returns dense ``Tracks`` (T, H, W) of the reference pixels of ``video``."""
        config = self.config
        T, H, W = video.shape
        gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in video.frames]
        dis = _dis(config)
        grid = pixel_grid(H, W).numpy()  # (H, W, 2)
        uv = np.empty((T, H, W, 2), np.float32)
        visible = np.zeros((T, H, W), bool)
        uv[0], visible[0] = grid, True
        position, alive = grid.copy(), np.ones((H, W), bool)
        gray0 = gray[0].astype(np.float32)
        colors = video.frames.astype(np.float32)
        previous_color = colors[0]
        for t in range(1, T):
            forward = dis.calc(gray[t - 1], gray[t], None)
            backward = dis.calc(gray[t], gray[t - 1], None)
            moved, consistent = _follow(position, forward, backward, config.fb_threshold)
            alive = alive & consistent
            # Anchor: DIS from t0 straight to t, started from the chained displacement, removes the
            # drift that chaining accumulates; it is kept where it is a small correction.
            # (DIS starts from a flow argument of the right size and type: the chained displacement.)
            direct = dis.calc(gray[0], gray[t], np.ascontiguousarray(moved - grid, np.float32))
            anchored = grid + direct
            correction = np.linalg.norm(anchored - moved, axis=-1)
            position = np.where((correction <= config.anchor_radius)[..., None], anchored, moved)
            alive &= _inside(position, H, W, config.border)
            if config.step_color_threshold is not None:
                color_change = np.abs(_sample(colors[t], position) - previous_color).max(-1)
                alive &= color_change <= config.step_color_threshold
            if config.reference_color_threshold is not None:
                # exposure / white balance may change: compare after matching the mean colours
                gain = colors[0].mean((0, 1)) / np.maximum(colors[t].mean((0, 1)), 1e-3)
                drift = np.abs(_sample(colors[t], position) * gain - colors[0]).max(-1)
                alive &= drift <= config.reference_color_threshold
            if config.restart and not alive.all():
                direct_backward = dis.calc(gray[t], gray[0], None)
                back = anchored + _sample(direct_backward, anchored)
                ok = np.linalg.norm(back - grid, axis=-1) <= config.restart_fb_threshold
                ok &= _inside(anchored, H, W, config.border)
                intensity = _sample(gray[t].astype(np.float32), anchored)
                ok &= np.abs(intensity - gray0) <= config.photometric_threshold
                restart = ~alive & ok
                position[restart] = anchored[restart]
                alive |= restart
            previous_color = _sample(colors[t], position)
            uv[t], visible[t] = position, alive
        return Tracks(uv, visible)


def _dis(config: FlowChainConfig) -> cv2.DISOpticalFlow:
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[config.preset])
    if config.finest_scale is not None:
        dis.setFinestScale(config.finest_scale)
    return dis


def _sample(image: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Returns ``image`` (H, W[, C]) sampled bilinearly at ``position`` (..., 2) (border replicated)."""
    return cv2.remap(
        image,
        np.ascontiguousarray(position[..., 0], np.float32),
        np.ascontiguousarray(position[..., 1], np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _follow(
    position: np.ndarray, forward: np.ndarray, backward: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(moved (H, W, 2), consistent (H, W))`` after one flow step with a forward-backward check."""
    moved = position + _sample(forward, position)
    back = moved + _sample(backward, moved)
    return moved, np.linalg.norm(back - position, axis=-1) <= threshold


def _inside(position: np.ndarray, height: int, width: int, border: float) -> np.ndarray:
    u, v = position[..., 0], position[..., 1]
    return (u >= border) & (u <= width - 1 - border) & (v >= border) & (v <= height - 1 - border)


# ----------------------------------------------------------------------------- given / imported tracks
class GivenTracks(Tracker):
    """Tracks supplied in memory (another tracker's output, or ``tracks_from_momap`` of GT)."""

    def __init__(self, tracks: Tracks):
        self.tracks = tracks

    def track(self, video: Video) -> Tracks:
        """Returns the given tracks after checking they match the video's (T, H, W)."""
        if self.tracks.visible.shape != video.shape:
            raise VideoError(
                f"{video.name}: tracks: expected (T, H, W) = {video.shape} to match the video, "
                f"got {self.tracks.visible.shape}"
            )
        return self.tracks


def tracks_from_momap(momap) -> Tracks:
    """Returns the exact 2D ``Tracks`` of a (GT) MoMap: its points projected into every camera."""
    cam_from_ref = invert_pose(momap.ref_from_cam.astype(np.float64))  # (T, 4, 4)
    T, H, W, _ = momap.xyz.shape
    points_cam = transform_points(cam_from_ref, momap.xyz.reshape(T, H * W, 3).astype(np.float64))
    uv, _ = project(points_cam, momap.K.astype(np.float64))
    uv = uv.reshape(T, H, W, 2).astype(np.float32)
    uv[0] = pixel_grid(H, W).numpy()
    return Tracks(uv, momap.visible & momap.valid[None])


def save_tracks(
    path: str | os.PathLike, tracks: np.ndarray, visible: np.ndarray, queries: np.ndarray | None = None
) -> str:
    """Writes 2D tracks in the ``ImportedTracks`` format atomically; returns the file's sha256.

    ``Tracks.to_sparse()`` gives the three arrays of dense tracks. Format (one ``.npz`` per
    video, loads with ``allow_pickle=False``; documented in data/README.md):
    - ``tracks (T, N, 2) float32``: ``(x, y)`` pixel position of track n in frame t, pixel
      centres at integers (add ``pixel_offset`` on import if your tracker puts them at .5);
    - ``visible (T, N) bool``: the point is seen in frame t (CoTracker's ``pred_visibility``;
      the key ``visibility`` is read too); positions at hidden entries are ignored (may be NaN);
    - ``queries (N, 2) int32``, optional: the reference-frame pixel ``(u, v)`` each track starts
      from (default: ``round(tracks[0])``), each pixel at most once. Frame 0 of the file is the
      reference frame ``t0``; pixels without a track get no trajectory (``valid`` False).
    CoTracker: ``tracks = pred_tracks[0].cpu().numpy()``, ``visible = pred_visibility[0].cpu().numpy()``
    for a dense grid of queries at frame 0.
    """
    arrays = {"tracks": np.asarray(tracks, np.float32), "visible": np.asarray(visible, bool)}
    if queries is not None:
        arrays["queries"] = np.asarray(queries, np.int32)
    return save_npz(path, arrays)


@dataclass
class ImportedTracksConfig:
    """Where imported tracks live and how their coordinates are read."""

    path: str = ""  # an .npz file (format: ``save_tracks``), or a folder with one <video name>.npz per video
    pixel_offset: float = 0.0  # subtracted from imported coordinates (0.5 if pixel centres sit at .5)


class ImportedTracks(Tracker):
    """2D tracks + visibility read from an ``.npz`` file (see ``save_tracks`` for the format).

    Tracks are rasterised onto the reference pixel grid by their query pixel; reference pixels
    without a track get ``visible[0] = False`` and become invalid in the MoMap.
    """

    def __init__(self, config: ImportedTracksConfig | None = None):
        self.config = config or ImportedTracksConfig()

    def _file(self, video: Video) -> Path:
        path = Path(self.config.path)
        return path / f"{video.name}.npz" if path.is_dir() else path

    def track(self, video: Video) -> Tracks:
        """Returns the dense ``Tracks`` of ``video`` read from the configured file."""
        if not self.config.path:
            raise ValueError(
                "ImportedTracksConfig.path: expected an .npz file or a folder of <video name>.npz"
            )
        path = self._file(video)
        arrays = load_npz(path, required=("tracks",))
        tracks = arrays["tracks"]
        visible = arrays.get("visible", arrays.get("visibility"))
        T, H, W = video.shape
        if tracks.ndim != 3 or tracks.shape[0] != T or tracks.shape[2] != 2:
            raise DataFormatError(
                f"{path}: tracks: expected (T, N, 2) = ({T}, N, 2) pixel coordinates (x, y) for the "
                f"video's T = {T} frames, got shape {tracks.shape}"
            )
        if not np.issubdtype(tracks.dtype, np.floating):
            raise DataFormatError(f"{path}: tracks: expected floating pixel coordinates, got {tracks.dtype}")
        N = tracks.shape[1]
        if visible is None or visible.shape != (T, N):
            raise DataFormatError(
                f"{path}: visible: expected (T, N) = ({T}, {N}) bool, got "
                f"{'nothing' if visible is None else visible.shape}"
            )
        visible = visible.astype(bool)  # CoTracker exports bool; 0/1 floats or ints read the same
        tracks = tracks.astype(np.float32) - self.config.pixel_offset
        if not np.isfinite(tracks[visible]).all():
            raise DataFormatError(f"{path}: tracks: NaN/inf positions at visible entries")
        queries = arrays.get("queries")
        if queries is None:
            queries = np.rint(tracks[0]).astype(np.int64)
        if queries.shape != (N, 2) or not np.issubdtype(queries.dtype, np.integer):
            raise DataFormatError(
                f"{path}: queries: expected (N, 2) = ({N}, 2) integer pixels (u, v), got shape "
                f"{queries.shape} dtype {queries.dtype}"
            )
        queries = queries.astype(np.int64)
        inside = (queries[:, 0] >= 0) & (queries[:, 0] < W) & (queries[:, 1] >= 0) & (queries[:, 1] < H)
        if not inside.all():
            raise DataFormatError(
                f"{path}: queries: {int((~inside).sum())} query pixels lie outside the "
                f"{W}x{H} reference frame"
            )
        flat = queries[:, 1] * W + queries[:, 0]
        if len(np.unique(flat)) != N:
            raise DataFormatError(f"{path}: queries: several tracks start from the same reference pixel")
        grid = pixel_grid(H, W).numpy()
        uv = np.broadcast_to(grid, (T, H, W, 2)).copy()
        dense_visible = np.zeros((T, H, W), bool)
        uv[:, queries[:, 1], queries[:, 0]] = np.where(visible[..., None], tracks, 0.0)
        dense_visible[:, queries[:, 1], queries[:, 0]] = visible
        uv[0] = grid  # the reference position is the query pixel itself
        dense_visible[0] = False
        dense_visible[0, queries[:, 1], queries[:, 0]] = True
        # Hidden entries carry no position: hold the last seen one so later stages read finite pixels.
        return Tracks(_hold_last_seen(uv, dense_visible), dense_visible)


def _hold_last_seen(uv: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Returns uv (T, H, W, 2) with every hidden entry replaced by the track's last seen position."""
    T = uv.shape[0]
    last = np.maximum.accumulate(np.where(visible, np.arange(T)[:, None, None], 0), axis=0)
    return np.take_along_axis(uv, last[..., None], axis=0)


# ----------------------------------------------------------------------------- lifting to 3D
@dataclass
class LiftConfig:
    """How depth is read at tracked positions."""

    max_depth_ratio: float = 1.1  # a point whose 4 bilinear neighbours' depths differ more (max/min) lies
    # on a depth edge: its depth is unreliable, so it is marked not visible there (infill decides)


def lift_tracks(
    tracks: Tracks,
    depth: np.ndarray,
    K: np.ndarray,
    config: LiftConfig | None = None,
    reliable: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(points_cam (T, H, W, 3) float32, visible (T, H, W) bool)`` of the tracks.

    ``points_cam[t]`` is each track's 3D point in camera t's frame: depth (T, H, W) sampled
    bilinearly at the tracked position and unprojected with ``K`` (3, 3). Visible entries on a
    depth edge (see ``LiftConfig``), or reading any pixel that ``reliable`` (T, H, W) bool marks
    unreliable (``momaplib.recon.depth_filter.clean_depth``), are turned invisible; the reference
    frame keeps its pixels.
    """
    config = config or LiftConfig()
    T, H, W = depth.shape
    uv = tracks.uv
    u0 = np.clip(np.floor(uv[..., 0]), 0, W - 2).astype(np.int64)
    v0 = np.clip(np.floor(uv[..., 1]), 0, H - 2).astype(np.int64)
    fu = np.clip(uv[..., 0] - u0, 0, 1)
    fv = np.clip(uv[..., 1] - v0, 0, 1)
    t = np.arange(T)[:, None, None]
    corners = np.stack(
        [depth[t, v0, u0], depth[t, v0, u0 + 1], depth[t, v0 + 1, u0], depth[t, v0 + 1, u0 + 1]], -1
    )
    weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], -1)
    sampled = (corners * weights).sum(-1)
    used = weights > 1e-6
    high = np.where(used, corners, -np.inf).max(-1)
    low = np.where(used, corners, np.inf).min(-1)
    on_edge = high > config.max_depth_ratio * low
    if reliable is not None:
        reliable = np.asarray(reliable, bool)
        corners_ok = np.stack(
            [
                reliable[t, v0, u0],
                reliable[t, v0, u0 + 1],
                reliable[t, v0 + 1, u0],
                reliable[t, v0 + 1, u0 + 1],
            ],
            -1,
        )
        on_edge |= (used & ~corners_ok).any(-1)
    sampled[0] = depth[0]
    on_edge[0] = False
    points = unproject(uv.astype(np.float64), sampled.astype(np.float64), K.astype(np.float64))
    return points.astype(np.float32), tracks.visible & ~on_edge
