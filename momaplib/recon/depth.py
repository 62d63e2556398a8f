"""Depth stage (paper §3.2 step 1): per-frame z-depth maps of a video.

Every depth estimator has one method, ``estimate(video) -> depth (T, H, W) float32`` metres in
each frame's own camera (OpenCV axes). Implementations:
- ``GivenDepth``: the video's own depth (a sensor, the simulator), optionally corrupted with a
  per-frame scale/shift drift and noise, which mimics what a monocular video depth model gives;
- ``TransformersDepth``: any ``transformers`` depth-estimation model (e.g. Depth Anything V2) by
  hub id or local folder, with a per-video scale alignment that makes the frames agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from momaplib.recon.video import Video, VideoError, check_depth


class DepthEstimator:
    """Base class of depth stages: subclasses implement ``estimate``."""

    def estimate(self, video: Video) -> np.ndarray:
        """Returns z-depth (T, H, W) float32 in metres, finite and > 0, for every frame of ``video``."""
        raise NotImplementedError


@dataclass
class GivenDepthConfig:
    """Corruption applied to given depth (all zeros: the depth is used as it is)."""

    scale_drift: float = 0.0  # std of the per-frame log-scale random walk (0.02: ~2% per frame)
    shift_drift: float = 0.0  # std of the per-frame shift random walk, as a fraction of the median depth
    noise: float = 0.0  # std of multiplicative per-pixel Gaussian noise (0.01: 1% of the depth)
    seed: int = 0  # seed of the corruption, so a corrupted video is reproducible


class GivenDepth(DepthEstimator):
    """The video's own depth (``video.depth``), optionally corrupted to mimic monocular depth.

    Corruption of frame t: ``d'_t = a_t * d_t * (1 + noise * n) + b_t * median(d_0)`` with
    ``log a_t`` and ``b_t`` random walks starting at 0 (frame 0 keeps its scale, so the
    reconstruction stays in metres) and ``n`` standard normal per pixel.
    """

    def __init__(self, config: GivenDepthConfig | None = None):
        self.config = config or GivenDepthConfig()

    def estimate(self, video: Video) -> np.ndarray:
        """Returns the (optionally corrupted) depth (T, H, W) float32 of ``video``."""
        if video.depth is None:
            raise VideoError(
                f"{video.name}: depth: GivenDepth needs the video's depth (T, H, W) in metres; "
                "use TransformersDepth for videos without depth"
            )
        config = self.config
        depth = video.depth.astype(np.float64)
        if not (config.scale_drift or config.shift_drift or config.noise):
            return video.depth.astype(np.float32, copy=True)
        rng = np.random.default_rng(config.seed)
        T = depth.shape[0]
        log_scale = np.concatenate([[0.0], np.cumsum(rng.normal(0, config.scale_drift, T - 1))])
        shift = np.concatenate([[0.0], np.cumsum(rng.normal(0, config.shift_drift, T - 1))])
        noisy = depth * (1 + config.noise * rng.standard_normal(depth.shape))
        median = float(np.median(depth[0]))
        corrupted = np.exp(log_scale)[:, None, None] * noisy + shift[:, None, None] * median
        # Keep depth positive (a strong negative shift or noise would put points behind the camera).
        return np.maximum(corrupted, 0.05 * median).astype(np.float32)


@dataclass
class TransformersDepthConfig:
    """A ``transformers`` depth-estimation model and how its output becomes metric-like depth."""

    model: str = "depth-anything/Depth-Anything-V2-Small-hf"  # hub id or local folder
    output: Literal["disparity", "depth"] = "disparity"  # what the model predicts (Depth Anything: disparity)
    reference_median_depth: float = 1.0  # metres given to the median depth of frame 0 (monocular: no scale)
    batch_size: int = 8  # frames per forward pass
    device: str = "cpu"  # torch device of the model
    min_disparity_fraction: float = 1e-3  # disparities below this fraction of the median are clamped


class TransformersDepth(DepthEstimator):
    """Monocular depth from a ``transformers`` model, aligned in scale across the video.

    Alignment: relative depth models give each frame its own unknown scale. Frame t is scaled
    so that its median depth over the pixels it shares with frame 0's depth range matches
    frame 0's (a robust median ratio), then the whole video is scaled so that frame 0's median
    depth is ``reference_median_depth`` metres. The later pose stage refines a per-frame scale.
    """

    def __init__(self, config: TransformersDepthConfig | None = None, model=None, processor=None):
        self.config = config or TransformersDepthConfig()
        self._model, self._processor = model, processor

    def _load(self):
        if self._model is not None and self._processor is None:
            raise ValueError("TransformersDepth: a model object needs its image processor (processor=...)")
        if self._model is None:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation

            try:
                self._model = AutoModelForDepthEstimation.from_pretrained(self.config.model)
                self._processor = self._processor or AutoImageProcessor.from_pretrained(self.config.model)
            except OSError as exc:
                raise FileNotFoundError(
                    f"TransformersDepthConfig.model: cannot load {self.config.model!r} as a local folder "
                    f"or hub id (offline, or not a depth-estimation model?): {exc}"
                ) from exc
        self._model.to(self.config.device).eval()
        return self._model, self._processor

    @torch.no_grad()
    def predict_raw(self, video: Video) -> np.ndarray:
        """Returns the model's raw output (T, H, W) float32, resized to the video's size."""
        model, processor = self._load()
        T, H, W = video.shape
        outputs = []
        for start in range(0, T, self.config.batch_size):
            batch = list(video.frames[start : start + self.config.batch_size])
            inputs = processor(images=batch, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.config.device)
            predicted = model(pixel_values=pixel_values).predicted_depth  # (B, h, w)
            resized = torch.nn.functional.interpolate(
                predicted[:, None].float(), size=(H, W), mode="bilinear", align_corners=False
            )[:, 0]
            outputs.append(resized.cpu().numpy())
        return np.concatenate(outputs).astype(np.float32)

    def estimate(self, video: Video) -> np.ndarray:
        """Returns scale-aligned depth (T, H, W) float32 with median(frame 0) = reference_median_depth."""
        raw = self.predict_raw(video).astype(np.float64)
        if not np.isfinite(raw).all():
            raise VideoError(f"{video.name}: depth: the model {self.config.model!r} predicted NaN/inf values")
        if self.config.output == "disparity":
            floor = max(self.config.min_disparity_fraction * float(np.median(np.abs(raw))), 1e-8)
            depth = 1.0 / np.maximum(raw, floor)
        else:
            floor = max(self.config.min_disparity_fraction * float(np.median(np.abs(raw))), 1e-8)
            depth = np.maximum(raw, floor)
        depth = align_depth_scale(depth)
        depth *= self.config.reference_median_depth / np.median(depth[0])
        return check_depth(depth.astype(np.float32), video.shape, f"{video.name}: estimated depth")


def align_depth_scale(depth: np.ndarray) -> np.ndarray:
    """Returns depth (T, H, W) with each frame scaled so its median matches frame 0's.

    Each frame's scale is the median of per-pixel ratios to frame 0 (robust to the moving
    parts, which are a minority of pixels), so a constant rescaling per frame is undone exactly.
    """
    ratios = np.median((depth[:1] / depth).reshape(depth.shape[0], -1), axis=1)
    return depth * ratios[:, None, None]
