"""Camera stage (paper §3.2 step 3): camera poses by tracklet bundle adjustment on static tracks.

``TrackletBundleAdjustment.solve(tracks, depth, K)`` returns ``CameraPoses``: ``ref_from_cam``
(T, 4, 4) for every frame, a per-frame depth scale that corrects scale drift of monocular depth,
and the static/dynamic split of the tracks it used. Steps:

1. Lift the tracks with the depth (``lift_tracks``); every track starts at the reference frame
   t0, so its t0 point ``X`` is its position in the reference camera if it is static.
2. Initialise frame by frame: a robust Umeyama fit (with scale) of camera t's points onto ``X``.
   The inlier set is chained from frame t-1 (a track that moved stays out), then trimmed by
   residuals, so static scene parts win over moving objects without any segmentation.
3. Static/dynamic split: a track is static when its median fit residual over the frames where
   it is seen is small relative to its depth.
4. Refine poses and per-frame depth scales in torch (L-BFGS) by minimising a robust (Huber)
   reprojection error of static tracks, ``X`` projected into frame t against the track, plus a
   depth consistency term between frame t's scaled depth and the depth of ``X`` in camera t,
   which sets the per-frame depth scale.
5. Focal search when K is unknown (``PoseConfig.focal_candidates``, by default
   ``DEFAULT_FOV_CANDIDATES`` as in ``momap recon``): steps 1-4 for each candidate field of view, keeping
   the one with the lowest reprojection error (unobservable for a static camera: ties keep the first).

A static camera gives (near-)identity poses because every frame is fitted to the same t0 points,
not chained from the previous frame, so errors do not accumulate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from momaplib.geometry import (
    axis_angle_to_matrix,
    intrinsics_from_fov,
    invert_pose,
    make_pose,
    matrix_to_axis_angle,
    project,
    transform_points,
    umeyama,
)
from momaplib.recon.numerics import flush_denormals
from momaplib.recon.tracking import LiftConfig, Tracks, lift_tracks
from momaplib.recon.video import VideoError, check_depth, check_intrinsics

#: Horizontal fields of view (degrees) searched when a video has no K, by ``Pipeline`` and ``momap recon``.
DEFAULT_FOV_CANDIDATES = (40.0, 50.0, 60.0, 70.0, 80.0)


@dataclass
class PoseConfig:
    """Tracklet bundle adjustment settings."""

    estimate_depth_scale: bool = True  # fit a per-frame depth scale (monocular depth drifts in scale)
    min_points: int = 12  # fewest shared static tracks to register a frame (else it keeps frame t-1's pose)
    trim_factor: float = 3.0  # robust fit: inliers have residual <= trim_factor * median residual ...
    trim_floor: float = 0.002  # ... or <= trim_floor * depth (relative), whichever is larger
    static_threshold: float = 0.01  # static track: median fit residual <= this fraction of its depth ...
    static_factor: float = 3.0  # ... or <= static_factor * the median residual of all tracks
    refine_iterations: int = 50  # L-BFGS iterations of the bundle adjustment (0: keep the initialisation)
    # refine only when the 3D alignment's per-frame depth scales drift from 1 by more than this (|log|):
    # depth that drifts in scale (monocular) needs the reprojection refinement, while with depth of one
    # scale (RGB-D, stereo) the 3D alignment is the more accurate, as the reprojection follows the
    # drift of flow chains (val clips, docs/experiments.md); 0: always refine
    refine_scale_drift: float = 0.02
    huber_px: float = 1.0  # Huber threshold of the reprojection error in pixels
    depth_weight: float = 0.1  # weight of the depth consistency term (it sets the per-frame depth scale)
    max_points: int = 4096  # static tracks used by the refinement (a random subset beyond it)
    focal_candidates: tuple[float, ...] = DEFAULT_FOV_CANDIDATES  # horizontal fields of view (deg)
    # tried when the video has no K; (): K is required
    lift: LiftConfig = field(default_factory=LiftConfig)  # how depth is read at tracked positions
    seed: int = 0  # seed of the subset of tracks used by the refinement
    device: str = "cpu"  # torch device of the refinement


@dataclass
class CameraPoses:
    """What the camera stage found."""

    ref_from_cam: np.ndarray  # (T, 4, 4) float32 camera t -> reference camera; [0] is the identity
    depth_scale: np.ndarray  # (T,) float32: multiply frame t's depth by this; [0] is 1
    static: np.ndarray  # (H, W) bool: tracks used as static scene
    K: np.ndarray  # (3, 3) float32 intrinsics (the given one, or the focal search's pick)
    reprojection_px: float  # median reprojection error of static tracks after refinement (pixels)
    points_cam: np.ndarray  # (T, H, W, 3) float32 lifted tracks in camera t (depth not yet rescaled)
    visible: np.ndarray  # (T, H, W) bool: tracks seen with reliable depth
    focal_errors: dict[float, float] = field(default_factory=dict)  # fov (deg) -> reprojection error


class TrackletBundleAdjustment:
    """Camera poses from static tracks: robust Umeyama initialisation + torch bundle adjustment."""

    def __init__(self, config: PoseConfig | None = None):
        self.config = config or PoseConfig()

    def solve(
        self, tracks: Tracks, depth: np.ndarray, K: np.ndarray | None, reliable: np.ndarray | None = None
    ) -> CameraPoses:
        """Returns the ``CameraPoses`` of tracks (T, H, W) with depth (T, H, W) and K (3, 3) or None.

        ``reliable`` (T, H, W) bool, optional: where the depth may be read (``clean_depth``); tracks
        are not seen where they read unreliable depth, and reference pixels with unreliable depth
        never count as static scene (they neither anchor the camera nor get held in place).
        """
        if tracks.visible.ndim != 3 or min(tracks.visible.shape) == 0:
            raise VideoError(f"tracks: expected (T, H, W) with T, H, W >= 1, got {tracks.visible.shape}")
        depth = check_depth(depth, tracks.visible.shape, "depth")
        H, W = depth.shape[1:]
        if K is not None:
            with flush_denormals():
                return self._solve_with(tracks, depth, check_intrinsics(K, "K"), reliable)
        if not self.config.focal_candidates:
            raise VideoError(
                "K: the camera intrinsics (3, 3) in pixels are required to lift depth to 3D; give the "
                "video's K or set PoseConfig.focal_candidates (fields of view in degrees) to search"
            )
        best, errors = None, {}
        for fov in self.config.focal_candidates:
            if not 0 < fov < 180:
                raise ValueError(
                    f"PoseConfig.focal_candidates: expected fields of view in (0, 180) deg, got {fov}"
                )
            with flush_denormals():
                result = self._solve_with(tracks, depth, intrinsics_from_fov(W, H, fov), reliable)
            errors[float(fov)] = result.reprojection_px
            if best is None or result.reprojection_px < best.reprojection_px - 1e-6:
                best = result
        best.focal_errors = errors
        return best

    def _solve_with(self, tracks: Tracks, depth: np.ndarray, K: np.ndarray, reliable=None) -> CameraPoses:
        config = self.config
        T, H, W = depth.shape
        points, visible = lift_tracks(tracks, depth, K, config.lift, reliable)
        flat_points = points.reshape(T, H * W, 3).astype(np.float64)
        flat_visible = visible.reshape(T, H * W)
        reference = flat_points[0]
        ref_from_cam = np.tile(np.eye(4), (T, 1, 1))
        scale = np.ones(T)
        anchor = flat_visible[0] if reliable is None else flat_visible[0] & reliable[0].reshape(-1)
        inliers = anchor.copy()
        relative = np.linalg.norm(reference, axis=-1).clip(1e-6)
        for t in range(1, T):
            candidates = inliers & flat_visible[t]
            if candidates.sum() < config.min_points:  # lost most static tracks: restart from all seen ones
                candidates = anchor & flat_visible[t]
            if candidates.sum() < config.min_points:
                ref_from_cam[t], scale[t] = ref_from_cam[t - 1], scale[t - 1]
                continue
            s, pose, kept = _robust_umeyama(
                flat_points[t], reference, candidates, relative, config, config.estimate_depth_scale
            )
            ref_from_cam[t], scale[t] = pose, s
            inliers = (inliers & ~flat_visible[t]) | kept  # unseen tracks keep their status
        static, consistent = _static_split(flat_points, flat_visible, reference, ref_from_cam, scale, config)
        static &= anchor
        consistent &= anchor[None]
        drifts = float(np.abs(np.log(np.clip(scale, 1e-9, None))).max()) > config.refine_scale_drift
        if config.refine_iterations > 0 and T > 1 and static.sum() >= config.min_points and drifts:
            ref_from_cam, scale = self._refine(
                tracks, flat_points, consistent, static, K, ref_from_cam, scale
            )
            static, consistent = _static_split(
                flat_points, flat_visible, reference, ref_from_cam, scale, config
            )
            static &= anchor
            consistent &= anchor[None]
        error = _reprojection_error(tracks, flat_points, consistent, static, K, ref_from_cam, scale)
        return CameraPoses(
            ref_from_cam=ref_from_cam.astype(np.float32),
            depth_scale=scale.astype(np.float32),
            static=static.reshape(H, W),
            K=K.astype(np.float32),
            reprojection_px=error,
            points_cam=points,
            visible=visible,
        )

    def _refine(self, tracks, points, visible, static, K, ref_from_cam, scale):
        """Returns refined ``(ref_from_cam (T, 4, 4), scale (T,))``; ``visible`` (T, N) marks the
        (t, track) entries to use (static tracks that agree with the initialisation there)."""
        config = self.config
        T = points.shape[0]
        device = torch.device(config.device)
        index = np.flatnonzero(static)
        if len(index) > config.max_points:
            index = np.sort(
                np.random.default_rng(config.seed).choice(index, config.max_points, replace=False)
            )
        unit = float(np.median(points[0, index, 2]))  # scene-scale units keep the step sizes balanced
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        X = as_tensor(points[0, index] / unit)  # (N, 3) reference positions
        seen = as_tensor(visible[1:, index])  # (T-1, N)
        uv = as_tensor(tracks.uv.reshape(T, -1, 2)[1:, index])  # (T-1, N, 2)
        K_t = as_tensor(K)
        pose = as_tensor(ref_from_cam[1:])
        rotation = matrix_to_axis_angle(pose[:, :3, :3]).clone().requires_grad_(True)
        translation = (pose[:, :3, 3] / unit).clone().requires_grad_(True)
        z = as_tensor(points[1:, index, 2] / unit)  # (T-1, N) observed depth in camera t
        log_scale = as_tensor(np.log(scale[1:])).requires_grad_(config.estimate_depth_scale)
        params = [rotation, translation] + ([log_scale] if config.estimate_depth_scale else [])
        optimizer = torch.optim.LBFGS(
            params, lr=1.0, max_iter=config.refine_iterations, line_search_fn="strong_wolfe"
        )
        weight = seen / seen.sum().clamp_min(1)
        focal = float(K[0, 0])

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            ref_from_cam_t = make_pose(axis_angle_to_matrix(rotation), translation)  # (T-1, 4, 4)
            in_cam = transform_points(invert_pose(ref_from_cam_t), X.expand(T - 1, -1, -1))
            predicted_uv, predicted_z = project(in_cam, K_t)
            ok = predicted_z > 1e-3
            reprojection = _huber(((predicted_uv - uv) ** 2).sum(-1).add(1e-12).sqrt(), config.huber_px)
            # Depth residual in log space, converted to pixels: a relative depth error e moves a
            # point by about focal * e * (lateral offset / depth) pixels; focal * e is its upper bound.
            log_ratio = log_scale[:, None] + z.clamp_min(1e-6).log() - predicted_z.clamp_min(1e-6).log()
            depth = _huber(focal * log_ratio.abs(), config.huber_px)
            # where(), not a product with the weight: an unused entry may hold inf/NaN (z <= 0).
            loss = torch.where(
                ok & (seen > 0), (reprojection + config.depth_weight * depth) * weight, 0.0
            ).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            refined = make_pose(axis_angle_to_matrix(rotation), translation * unit).cpu().numpy()
            new_scale = log_scale.exp().cpu().numpy()
        ref_from_cam = ref_from_cam.copy()
        ref_from_cam[1:] = refined
        return ref_from_cam, np.concatenate([[1.0], new_scale])


def _huber(residual: torch.Tensor, delta: float) -> torch.Tensor:
    """Returns the Huber penalty of non-negative residuals (quadratic below ``delta``, linear above)."""
    return torch.where(residual <= delta, 0.5 * residual**2, delta * (residual - 0.5 * delta))


def _robust_umeyama(source, target, candidates, relative, config: PoseConfig, with_scale: bool):
    """Returns ``(scale, ref_from_cam (4, 4), inliers (N,))`` of a trimmed Umeyama fit source -> target."""
    inliers = candidates.copy()
    for _ in range(5):
        s, rotation, translation = umeyama(source[inliers], target[inliers], with_scale=with_scale)
        mapped = float(s) * source @ rotation.T + translation
        residual = np.linalg.norm(mapped - target, axis=-1) / relative
        bound = max(config.trim_factor * float(np.median(residual[inliers])), config.trim_floor)
        updated = candidates & (residual <= bound)
        if updated.sum() < config.min_points or np.array_equal(updated, inliers):
            break
        inliers = updated
    return float(s), make_pose(rotation, translation), inliers


def _static_split(points, visible, reference, ref_from_cam, scale, config: PoseConfig):
    """Returns ``(static (N,), consistent (T, N))``: tracks whose median relative residual under the
    poses is small, and the (t, track) entries of static tracks whose own residual is small."""
    mapped = transform_points(ref_from_cam, points * scale[:, None, None])  # (T, N, 3)
    residual = np.linalg.norm(mapped - reference[None], axis=-1) / np.linalg.norm(reference, axis=-1).clip(
        1e-6
    )
    if residual.shape[0] < 2:
        return visible[0].copy(), visible.copy()
    seen = visible[1:].any(0)
    median = np.nanmedian(np.where(visible[1:], residual[1:], np.nan)[:, seen], axis=0)
    per_track = np.full(residual.shape[1], np.inf)
    per_track[seen] = median
    typical = float(np.median(median)) if seen.any() else 0.0
    bound = max(config.static_threshold, config.static_factor * typical)
    static = visible[0] & (per_track <= bound)
    return static, visible & static[None] & (residual <= bound)


def _reprojection_error(tracks, points, visible, static, K, ref_from_cam, scale) -> float:
    """Returns the median forward reprojection error (pixels) of static tracks over frames t > 0."""
    T = points.shape[0]
    if T < 2 or not static.any():
        return 0.0
    cam_from_ref = np.linalg.inv(ref_from_cam[1:])
    in_cam = transform_points(cam_from_ref, points[0, static])  # (T-1, N, 3) by broadcasting
    uv, _ = project(in_cam, K.astype(np.float64))
    error = np.linalg.norm(uv - tracks.uv.reshape(T, -1, 2)[1:, static], axis=-1)
    seen = visible[1:, static]
    return float(np.median(error[seen])) if seen.any() else 0.0
