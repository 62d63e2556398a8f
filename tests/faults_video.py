"""Fault table of rendering and video completion (``momaplib.render``, ``momaplib.video``).

Wrong camera shapes, non-finite or non-rigid poses, bad intrinsics, an empty MoMap, bad frames and
sizes for ``render_momap``; bad arguments of the completion model, the pipeline, the trainer and
the video metrics. Toy inputs only: a 16 x 16 plane, a tiny random completion model.
"""

from __future__ import annotations

import numpy as np
import torch

from momaplib.render import check_cameras, orbit_cameras, render_momap
from momaplib.training import TrainConfig
from momaplib.video import CompletionUNet, complete_latents, video_metrics
from momaplib.video.sampling import build_scheduler
from momaplib.video.train import TrainVideoJob
from tests.faults import Fault
from tests.test_render import plane_momap


def _empty():
    momap = plane_momap(T=2, size=16)
    momap.valid[:] = False
    momap.visible[:] = False
    return momap


def _tiny() -> CompletionUNet:
    return CompletionUNet(
        block_out_channels=(8, 16), layers_per_block=1, attention_head_dim=8, cross_attention_dim=16,
        norm_num_groups=4,
    )  # fmt: skip


def _not_rigid() -> np.ndarray:
    poses = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    poses[1, 0, 0] = 2.0
    return poses


def _render(**kwargs):
    return lambda tmp: render_momap(plane_momap(T=2, size=16), **{"backend": "torch", **kwargs})


def _complete(partial_shape=(1, 2, 4, 2, 2), steps=1):
    partial = torch.zeros(partial_shape)
    coverage = torch.zeros(1, 2, 1, 2, 2)
    return complete_latents(_tiny(), build_scheduler(), partial, coverage, torch.zeros(1, 4, 2, 2), steps)


R = "render_momap"
CASES = [
    Fault(
        R,
        "cameras of shape (4, 4, 4, 4)",
        _render(cam_from_ref=np.zeros((2, 2, 4, 4))),
        ValueError,
        "cam_from_ref: expected (T, 4, 4) poses",
    ),
    Fault(
        R,
        "one pose for two frames",
        _render(cam_from_ref=np.eye(4)),
        ValueError,
        "cam_from_ref: expected one pose per rendered frame (2), got 1",
    ),
    Fault(
        R,
        "NaN in a pose",
        _render(cam_from_ref=np.full((2, 4, 4), np.nan)),
        ValueError,
        "cam_from_ref: poses must be finite",
    ),
    Fault(
        R,
        "a scaled, not rigid, pose",
        _render(cam_from_ref=_not_rigid()),
        ValueError,
        "cam_from_ref: the 3x3 blocks must be rotations",
    ),
    Fault(R, "K of shape (2, 2)", _render(K=np.eye(2)), ValueError, "K: expected (3, 3) or (T, 3, 3)"),
    Fault(
        R,
        "K with a negative focal length",
        _render(K=np.diag([-10.0, 10.0, 1.0])),
        ValueError,
        "K: expected finite intrinsics with positive focal lengths",
    ),
    Fault(
        R,
        "K with a wrong last row",
        _render(K=np.array([[10, 0, 8], [0, 10, 8], [0, 1, 1.0]])),
        ValueError,
        "K: the last row of every intrinsics matrix must be [0, 0, 1]",
    ),
    Fault(
        R,
        "an empty MoMap (no valid pixel)",
        lambda tmp: render_momap(_empty()),
        ValueError,
        "momap.valid: the MoMap has no valid pixel",
    ),
    Fault(
        R,
        "a frame index past T",
        _render(frames=[0, 9]),
        ValueError,
        "frames: expected frame indices in 0..1",
    ),
    Fault(R, "height 0", _render(height=0), ValueError, "height: expected an integer number of pixels"),
    Fault(
        R,
        "rgb of another size",
        _render(rgb=np.zeros((8, 8, 3), np.uint8)),
        ValueError,
        "rgb: expected (H, W, 3) = (16, 16, 3) uint8",
    ),
    Fault(
        R,
        "negative instance ids",
        _render(instance_map=-np.ones((16, 16), np.int32)),
        ValueError,
        "instance_map: expected (H, W) = (16, 16) integer ids >= 0",
    ),
    Fault(
        R,
        "an unknown backend",
        _render(backend="opengl"),
        ValueError,
        "backend: expected one of ('auto', 'torch', 'gsplat')",
    ),
    Fault(
        R,
        "gsplat on the CPU",
        _render(backend="gsplat"),
        ValueError,
        "backend: 'gsplat' rasterises on CUDA only",
    ),
    Fault(
        R,
        "splats of 10 pixels",
        _render(footprint=10.0),
        ValueError,
        "footprint: expected a splat size in (0, 4]",
    ),
    Fault(
        R,
        "a record that is not a MoMap",
        lambda tmp: render_momap(np.zeros((2, 4, 4, 3))),
        ValueError,
        "momap: expected a MoMap record, got ndarray",
    ),
    Fault(
        "check_cameras",
        "K for 3 frames, poses for 2",
        lambda tmp: check_cameras(np.tile(np.eye(3), (3, 1, 1)), np.tile(np.eye(4), (2, 1, 1)), None),
        ValueError,
        "K: expected (3, 3) or (T, 3, 3) = (2, 3, 3)",
    ),
    Fault(
        "orbit_cameras",
        "a swing of 120 degrees",
        lambda tmp: orbit_cameras(plane_momap(T=2, size=16), degrees=120),
        ValueError,
        "degrees: expected a swing of at most 90 degrees",
    ),
    Fault(
        "orbit_cameras",
        "an unknown axis",
        lambda tmp: orbit_cameras(plane_momap(T=2, size=16), axis="z"),
        ValueError,
        "axis: expected 'x' or 'y'",
    ),
    Fault(
        "CompletionUNet",
        "an unknown attention mode",
        lambda tmp: CompletionUNet(frame_attention="global"),
        ValueError,
        "frame_attention: expected one of ('flattened', 'per-frame')",
    ),
    Fault(
        "CompletionUNet.forward",
        "partial latents of another shape",
        lambda tmp: _complete((1, 2, 4, 4, 4)),
        ValueError,
        "CompletionUNet: expected partial",
    ),
    Fault(
        "complete_latents",
        "0 inference steps",
        lambda tmp: _complete(steps=0),
        ValueError,
        "num_inference_steps: expected an integer in 1..1000",
    ),
    Fault(
        "TrainVideoJob",
        "an unknown attention mode",
        lambda tmp: TrainVideoJob(frame_attention="global"),
        ValueError,
        "frame_attention",
    ),
    Fault(
        "TrainVideoJob",
        "a missing dataset folder",
        lambda tmp: TrainVideoJob(datasets=(tmp / "none",), train=TrainConfig(tmp / "run"), smoke=True).run(),
        FileNotFoundError,
        "does not exist",
    ),
    Fault(
        "video_metrics",
        "holes of another shape",
        lambda tmp: video_metrics(np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 5), bool)),
        ValueError,
        "video_metrics: completed (2, 4, 4, 3)",
    ),
]
