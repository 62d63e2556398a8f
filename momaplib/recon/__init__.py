"""Data reconstruction (paper §3.2): videos -> MoMaps.

Stages, each a small object with one documented method, chained by ``Pipeline``:

1. depth (``estimate``): ``GivenDepth`` (a sensor's depth, holes allowed; optionally corrupted),
   ``TransformersDepth`` (RGB-only videos); then ``clean_depth`` fills holes and marks where depth
   is reliable (``PipelineConfig.depth_filter``);
2. dense tracks from the reference frame (``track``): ``FlowChainTracker`` (OpenCV DIS flow),
   ``ImportedTracks`` (CoTracker / SpaTracker / TAPIR exports: the path for large inter-frame
   motion, e.g. a fast gripper, which frame-to-frame flow loses), ``GivenTracks``;
3. camera poses (``solve``): ``TrackletBundleAdjustment``;
4. segmentation (``segment``): ``GivenSegmentation``, ``MotionSegmentation``;
   background pixels that do not move are then held in place (``PipelineConfig.hold_static``);
5. occlusion infill (``infill``): ``TrajectoryInfill`` (sparse ARAP solve, ``momaplib.recon.arap``).

Intrinsics: the video's ``K``, or a field-of-view search over ``DEFAULT_FOV_CANDIDATES`` (in
``Pipeline`` and ``momap recon`` alike).

``Pipeline()(Video.from_clip(clip))`` returns a ``ReconResult`` whose ``momap`` is a regular
``momaplib.momap.MoMap``; ``momap recon`` (``momaplib.recon.runner.ReconJob``) reconstructs a
folder of videos into a dataset that trains the models like a MoMap-Sim one.
"""

from momaplib.recon.depth import (
    DepthEstimator,
    GivenDepth,
    GivenDepthConfig,
    TransformersDepth,
    TransformersDepthConfig,
    align_depth_scale,
)
from momaplib.recon.depth_filter import DepthFilterConfig, clean_depth
from momaplib.recon.evaluate import reconstruction_errors
from momaplib.recon.infill import InfillConfig, InfillResult, TrajectoryInfill, interpolate_hidden
from momaplib.recon.pipeline import Pipeline, PipelineConfig, ReconResult
from momaplib.recon.poses import DEFAULT_FOV_CANDIDATES, CameraPoses, PoseConfig, TrackletBundleAdjustment
from momaplib.recon.segmentation import (
    GivenSegmentation,
    MotionSegmentation,
    MotionSegmentationConfig,
    SegmentationInputs,
    Segmenter,
)
from momaplib.recon.tracking import (
    FlowChainConfig,
    FlowChainTracker,
    GivenTracks,
    ImportedTracks,
    ImportedTracksConfig,
    LiftConfig,
    Tracker,
    Tracks,
    lift_tracks,
    save_tracks,
    tracks_from_momap,
)
from momaplib.recon.video import Video, VideoError, list_videos, load_video, resize_depth, resize_video

__all__ = [
    "DEFAULT_FOV_CANDIDATES",
    "CameraPoses",
    "DepthEstimator",
    "DepthFilterConfig",
    "FlowChainConfig",
    "FlowChainTracker",
    "GivenDepth",
    "GivenDepthConfig",
    "GivenSegmentation",
    "GivenTracks",
    "ImportedTracks",
    "ImportedTracksConfig",
    "InfillConfig",
    "InfillResult",
    "LiftConfig",
    "MotionSegmentation",
    "MotionSegmentationConfig",
    "Pipeline",
    "PipelineConfig",
    "PoseConfig",
    "ReconResult",
    "SegmentationInputs",
    "Segmenter",
    "Tracker",
    "TrackletBundleAdjustment",
    "Tracks",
    "TrajectoryInfill",
    "TransformersDepth",
    "TransformersDepthConfig",
    "Video",
    "VideoError",
    "align_depth_scale",
    "clean_depth",
    "interpolate_hidden",
    "lift_tracks",
    "list_videos",
    "load_video",
    "reconstruction_errors",
    "resize_depth",
    "resize_video",
    "save_tracks",
    "tracks_from_momap",
]
