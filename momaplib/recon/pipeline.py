"""The reconstruction pipeline (paper §3.2, Fig. 2-B): video -> depth -> tracks -> camera poses
-> segmentation -> occlusion infill -> MoMap.

``Pipeline(...)(video)`` runs the stages in order and returns a ``ReconResult``: the MoMap record
(with ``visible`` flags: True where a trajectory point was observed, False where infill made it),
every intermediate result for inspection, and a per-stage report of time and quality. Each stage
is a swappable object with one method (``estimate``, ``track``, ``solve``, ``segment``,
``infill``), so a variant is a different object passed to ``Pipeline``, never a fork.

Noisy depth (a real sensor, ``SimConfig(sensor=...)``): the depth stage may leave holes (0 or
NaN); ``PipelineConfig.depth_filter`` fills them, removes flying pixels and marks where depth is
reliable, so tracks never read depth across an edge (``momaplib.recon.depth_filter``). After
segmentation, background pixels (instance 0) that stay within ``static_tolerance`` of their
median position in most frames are held at that position (``hold_static``): static scene does
not move, and noise or a stray track would otherwise reconstruct it as moving. So are those whose
t = 0 point the depth maps of later frames keep finding where the solved camera says it projects
(``reprojection_hold``, ``reprojection_static``): a track sliding on a static surface is not motion;
an instance the depth maps never saw move becomes background first (``background_instances``).

Intrinsics: the video's ``K`` when it has one, otherwise the camera stage searches the field of
view over ``PoseConfig.focal_candidates`` (the same candidates ``momap recon`` uses).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from momaplib.geometry import rotation_angle, transform_points
from momaplib.momap import MoMap
from momaplib.recon.depth import DepthEstimator, GivenDepth
from momaplib.recon.depth_filter import DepthFilterConfig, clean_depth
from momaplib.recon.infill import InfillResult, TrajectoryInfill, interpolate_hidden
from momaplib.recon.poses import CameraPoses, TrackletBundleAdjustment
from momaplib.recon.segmentation import MotionSegmentation, SegmentationInputs, Segmenter
from momaplib.recon.tracking import FlowChainTracker, Tracker, Tracks
from momaplib.recon.video import Video, VideoError, check_depth

#: The stages in the order ``Pipeline`` runs them; the keys of ``ReconResult.report``.
STAGES = ("depth", "tracking", "poses", "segmentation", "infill")


@dataclass
class PipelineConfig:
    """Which part of the video becomes the MoMap."""

    t0: int = 0  # reference frame: the MoMap covers frames t0, t0 + 1, ...
    num_frames: int | None = None  # frames T of the MoMap (None: to the end of the video)
    depth_filter: DepthFilterConfig | None = field(default_factory=DepthFilterConfig)  # hole filling,
    # flying-pixel removal and the reliability mask of the depth (None: the depth is used as it is)
    hold_static: bool = True  # hold background pixels that do not move at their median position
    static_tolerance: float = 0.02  # ... "do not move": within this fraction of the scene scale (of the
    # pixel's depth where it is farther) ...
    static_outliers: float = 0.25  # ... in all but at most this fraction of the frames where seen
    # ... or whose t = 0 point agrees with the depth every frame measures where the point projects
    # (reprojection_static): a track that drifts on a static surface is not motion
    reprojection_hold: bool = True
    # reprojection test on depth whose scale drifts (monocular, ``SCALE_DRIFT``): each frame's tolerance
    # is at least this x its median relative depth residual, the depth's own flicker (0: off)
    static_noise_factor: float = 5.0


@dataclass
class ReconResult:
    """A reconstructed MoMap with every intermediate result and the per-stage report."""

    momap: MoMap  # the reconstruction (visible = observed, not infilled)
    video: Video  # the frames that were reconstructed (t0 first)
    depth: np.ndarray  # (T, H, W) float32 depth from the depth stage (before per-frame rescaling)
    tracks: Tracks  # 2D tracks of the reference pixels
    poses: CameraPoses  # cameras, depth scales, static split
    instance: np.ndarray  # (H, W) int32 instance ids from the segmentation stage
    infill: InfillResult  # completed trajectories and the interpolation they started from
    report: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {"seconds", quality...}
    reliable: np.ndarray | None = None  # (T, H, W) bool: where the depth was read (None: everywhere)

    def summary(self) -> str:
        """Returns one line per stage: its time and quality numbers."""
        lines = []
        for stage, values in self.report.items():
            items = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in values.items()
                if k != "seconds"
            )
            lines.append(f"{stage:12s} {values['seconds']:7.3f} s  {items}")
        return "\n".join(lines)


class Pipeline:
    """Chains the reconstruction stages; ``pipeline(video)`` returns a ``ReconResult``.

    Defaults: ``GivenDepth`` (the video's own depth), ``FlowChainTracker``,
    ``TrackletBundleAdjustment``, ``MotionSegmentation`` and ``TrajectoryInfill``.
    """

    def __init__(
        self,
        depth: DepthEstimator | None = None,
        tracker: Tracker | None = None,
        poses: TrackletBundleAdjustment | None = None,
        segmentation: Segmenter | None = None,
        infill: TrajectoryInfill | None = None,
        config: PipelineConfig | None = None,
    ):
        self.depth = depth or GivenDepth()
        self.tracker = tracker or FlowChainTracker()
        self.poses = poses or TrackletBundleAdjustment()
        self.segmentation = segmentation or MotionSegmentation()
        self.infill = infill or TrajectoryInfill()
        self.config = config or PipelineConfig()

    def _window(self, video: Video) -> Video:
        t0, T = self.config.t0, video.num_frames
        end = T if self.config.num_frames is None else t0 + self.config.num_frames
        if not 0 <= t0 < T - 1 or end > T:
            raise VideoError(
                f"{video.name}: PipelineConfig.t0/num_frames: frames {t0}..{end - 1} do not fit in a "
                f"video of T = {T} frames (need at least 2)"
            )
        if t0 == 0 and end == T:
            return video
        sliced = slice(t0, end)
        return replace(
            video,
            frames=video.frames[sliced],
            depth=None if video.depth is None else video.depth[sliced],
            instance=None if video.instance is None else video.instance[sliced],
        )

    def __call__(self, video: Video, progress: bool = False) -> ReconResult:
        """Returns the ``ReconResult`` of ``video`` (see the module docstring for the stages).

        ``progress`` shows a ``tqdm.auto`` bar that advances stage by stage and names the running one.
        """
        video = self._window(video)
        T, H, W = video.shape
        report: dict[str, dict[str, Any]] = {}
        clock = time.perf_counter()
        bar = tqdm(total=len(STAGES), desc=f"{video.name}: {STAGES[0]}", unit="stage", disable=not progress)
        next_stages = iter([*STAGES[1:], "done"])

        def lap() -> float:  # called once at the end of each stage, in the order of STAGES
            nonlocal clock
            now = time.perf_counter()
            seconds, clock = now - clock, now
            bar.set_description_str(f"{video.name}: {next(next_stages)}")
            bar.update()
            return seconds

        depth = check_depth(
            self.depth.estimate(video),
            (T, H, W),
            f"{video.name}: depth from the depth stage",
            allow_holes=self.config.depth_filter is not None,
        )
        reliable = None
        if self.config.depth_filter is not None:
            depth, reliable = clean_depth(depth, self.config.depth_filter)
        report["depth"] = {
            "seconds": lap(),
            "median_m": float(np.median(depth)),
            "min_m": float(depth.min()),
            "max_m": float(depth.max()),
            "reliable_fraction": 1.0 if reliable is None else float(reliable.mean()),
        }

        tracks = self.tracker.track(video)
        if tracks.visible.shape != (T, H, W):
            raise VideoError(
                f"{video.name}: tracks: expected (T, H, W) = {(T, H, W)}, got {tracks.visible.shape}"
            )
        report["tracking"] = {"seconds": lap(), "tracked_fraction": tracks.tracked_fraction}

        poses = self.poses.solve(tracks, depth, video.K, reliable)
        rotation_deg = np.degrees(rotation_angle(poses.ref_from_cam[:, :3, :3].astype(np.float64)))
        report["poses"] = {
            "seconds": lap(),
            "static_fraction": float(poses.static.mean()),
            "reprojection_px": poses.reprojection_px,
            "max_rotation_deg": float(rotation_deg.max()),
            "depth_scale_range": float(poses.depth_scale.max() - poses.depth_scale.min()),
        }

        valid = tracks.visible[0].reshape(-1)
        visible = poses.visible.reshape(T, H * W) & valid[None]
        points_cam = poses.points_cam.reshape(T, H * W, 3) * poses.depth_scale[:, None, None]
        xyz = transform_points(poses.ref_from_cam.astype(np.float64), points_cam.astype(np.float64))
        xyz = xyz.astype(np.float32)
        inputs = SegmentationInputs(
            video, interpolate_hidden(xyz, visible), visible, valid, poses.static.ravel()
        )
        instance = np.asarray(self.segmentation.segment(inputs), np.int32)
        if instance.shape != (H, W):
            raise VideoError(f"{video.name}: instance: expected (H, W) = {(H, W)}, got {instance.shape}")
        held = np.zeros(H * W, bool)
        if self.config.hold_static:
            first = xyz[0].copy()
            if self.config.reprojection_hold:  # an instance the depth maps never saw move is background
                instance = background_instances(instance, first, valid, depth, reliable, poses, self.config)
            background = valid & (instance.ravel() == 0)
            xyz, visible, held = hold_static_pixels(xyz, visible, background, self.config)
            if self.config.reprojection_hold:
                agree, consistent = reprojection_static(
                    first, background, depth, reliable, poses, self.config
                )
                extra = agree & ~held  # held at the point seen at t = 0, seen where the depth agrees
                xyz[:, extra] = first[extra][None]
                visible[:, extra] = consistent[:, extra]
                visible[0, extra] = True
                held |= extra
        report["segmentation"] = {
            "seconds": lap(),
            "num_instances": len(np.unique(instance[instance > 0])),
            "held_fraction": float(held[valid].mean()) if valid.any() else 0.0,
        }

        # Held pixels are complete (their hidden entries are the held position): nothing to infill.
        filled = self.infill.infill(xyz, visible | held[None], valid, instance.ravel())
        report["infill"] = {"seconds": lap(), "hidden_fraction": filled.hidden_fraction, "loss": filled.loss}

        momap = MoMap(
            xyz=filled.xyz.reshape(T, H, W, 3),
            valid=valid.reshape(H, W),
            visible=visible.reshape(T, H, W),
            rgb=video.frames[0],
            instance=instance,
            K=poses.K,
            ref_from_cam=_identity_first(poses.ref_from_cam),
            prompt=video.prompt,
            meta={
                **video.meta,
                "t0": self.config.t0,
                "source": "recon",
                "video": video.name,
                "recon": {stage: dict(values) for stage, values in report.items()},
            },
        )
        bar.close()
        return ReconResult(momap, video, depth, tracks, poses, instance, filled, report, reliable)


def hold_static_pixels(
    xyz: np.ndarray, visible: np.ndarray, candidates: np.ndarray, config: PipelineConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(xyz, visible, held (N,))`` with static ``candidates`` (N,) held at their median.

    A candidate pixel is static when its seen positions (``visible`` (T, N)) stay within
    ``config.static_tolerance`` x the scene scale (x its own depth, if farther) of their median
    position in all but at most
    ``config.static_outliers`` of those frames (noise, or a track that strayed for a few frames).
    Its trajectory in ``xyz`` (T, N, 3) becomes that median in every frame, and the strayed
    entries count as not seen.
    """
    seen = visible & candidates[None]
    scale = float(np.median(xyz[0, candidates, 2])) if candidates.any() else 1.0
    median = np.nanmedian(np.where(seen[..., None], xyz, np.nan)[:, candidates], axis=0)  # (C, 3)
    columns = np.flatnonzero(candidates)
    # Tracking and pose errors are angular, so they grow with depth: far pixels get a wider tolerance.
    tolerance = config.static_tolerance * np.maximum(scale, median[:, 2])
    far = np.linalg.norm(xyz[:, columns] - median[None], axis=-1) > tolerance[None]
    strays = (far & seen[:, columns]).sum(0)
    static = strays <= config.static_outliers * seen[:, columns].sum(0)
    held = np.zeros(xyz.shape[1], bool)
    held[columns[static]] = True
    xyz, visible = xyz.copy(), visible.copy()
    xyz[:, columns[static]] = median[static][None]
    visible[:, columns[static]] &= ~far[:, static]
    visible[0, held] = True  # the reference entry is the pixel itself
    return xyz, visible, held


def reprojection_static(
    xyz0: np.ndarray,
    candidates: np.ndarray,
    depth: np.ndarray,
    reliable: np.ndarray | None,
    poses: CameraPoses,
    config: PipelineConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(static (N,), consistent (T, N))``: which ``candidates`` (N,) stay where they were at
    t = 0 by the depth maps, whatever their tracks say.

    Each candidate's t = 0 point ``xyz0`` (N, 3), reference frame, is projected into every frame t
    with the solved pose; the depth there (``depth`` (T, H, W) x the frame's depth scale, nearest
    pixel; holes and ``reliable`` False are not read) either agrees (within ``static_tolerance`` x the
    scene scale, x the point's own depth if farther), lies in front of it (an occluder: not
    counted) or behind it (the point is gone: it moved). A candidate is static when it was checked
    in at least half the frames and disagreed in at most ``static_outliers`` of them. This catches
    static surfaces whose tracks slide (a flow chain drifting on a textureless table under a moving
    camera), which the track-based test of ``hold_static_pixels`` would call moving.
    """
    T, H, W = depth.shape
    # depth whose scale drifts (monocular) also flickers from frame to frame (PoseConfig.refine_scale_drift)
    drifting = float(np.abs(np.log(np.clip(poses.depth_scale, 1e-9, None))).max()) > SCALE_DRIFT
    columns = np.flatnonzero(candidates)
    points = xyz0[columns].astype(np.float64)
    scale = float(np.median(points[:, 2])) if len(columns) else 1.0
    K = poses.K.astype(np.float64)
    checked = np.zeros((T, len(columns)), bool)
    agrees = np.zeros((T, len(columns)), bool)
    for t in range(T):
        cam_from_ref = np.linalg.inv(poses.ref_from_cam[t].astype(np.float64))
        p = points @ cam_from_ref[:3, :3].T + cam_from_ref[:3, 3]
        z = np.maximum(p[:, 2], 1e-9)
        u = np.round(K[0, 0] * p[:, 0] / z + K[0, 2]).astype(np.int64)
        v = np.round(K[1, 1] * p[:, 1] / z + K[1, 2]).astype(np.int64)
        inside = (p[:, 2] > 1e-9) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        seen = np.zeros(len(columns))
        seen[inside] = depth[t, v[inside], u[inside]] * float(poses.depth_scale[t])
        read = inside & np.isfinite(seen) & (seen > 0)
        if reliable is not None:
            read[inside] &= reliable[t, v[inside], u[inside]]
        tolerance = config.static_tolerance * np.maximum(scale, p[:, 2])
        residual = seen - p[:, 2]
        if config.static_noise_factor and drifting and read.any():  # flickering depth: widen the tolerance
            noise = float(np.median(np.abs(residual[read]) / np.maximum(p[read, 2], 1e-9)))
            tolerance = np.maximum(tolerance, config.static_noise_factor * noise * p[:, 2])
        checked[t] = read & (residual >= -tolerance)  # in front: an occluder, not counted
        agrees[t] = checked[t] & (np.abs(residual) <= tolerance)
    counted = checked.sum(0)
    static_columns = (counted >= 0.5 * T) & ((checked & ~agrees).sum(0) <= config.static_outliers * counted)
    static = np.zeros(len(candidates), bool)
    static[columns[static_columns]] = True
    consistent = np.zeros((T, len(candidates)), bool)
    consistent[:, columns] = agrees
    return static, consistent


#: ``reprojection_static``: depth whose per-frame scales leave 1 by more than this (|log|) is
#: monocular-like, and its tolerance follows its flicker (``static_noise_factor``)
SCALE_DRIFT = 0.02
#: ``background_instances``: an instance becomes background when this fraction of its pixels ...
STATIC_INSTANCE_FRACTION = 0.9
#: ... pass ``reprojection_static`` with at most this fraction of disagreeing frames (stricter than
#: single pixels: an object that moves in the last few frames only must keep its motion)
STATIC_INSTANCE_OUTLIERS = 0.1


def background_instances(
    instance: np.ndarray,
    xyz0: np.ndarray,
    valid: np.ndarray,
    depth: np.ndarray,
    reliable: np.ndarray | None,
    poses: CameraPoses,
    config: PipelineConfig,
) -> np.ndarray:
    """Returns ``instance`` (H, W) with every instance the depth maps never saw move relabelled as
    background (0): at least ``STATIC_INSTANCE_FRACTION`` of its valid pixels are static by
    ``reprojection_static`` with ``STATIC_INSTANCE_OUTLIERS``. Motion segmentation splits static
    things off when their tracks slide (a spurious instance); their depth says otherwise."""
    ids = np.unique(instance[instance > 0])
    if not len(ids):
        return instance
    flat = instance.ravel()
    strict = replace(config, static_outliers=STATIC_INSTANCE_OUTLIERS)
    static, _ = reprojection_static(xyz0, valid & (flat > 0), depth, reliable, poses, strict)
    out = instance.copy()
    for i in ids:
        pixels = (flat == i) & valid
        if pixels.any() and static[pixels].mean() >= STATIC_INSTANCE_FRACTION:
            out[instance == i] = 0
    return out


def _identity_first(ref_from_cam: np.ndarray) -> np.ndarray:
    poses = ref_from_cam.astype(np.float32).copy()
    poses[0] = np.eye(4, dtype=np.float32)
    return poses
