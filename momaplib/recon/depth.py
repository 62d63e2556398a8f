"""Depth stage (paper §3.2 step 1): per-frame z-depth maps of a video.

Every depth estimator has one method, ``estimate(video) -> depth (T, H, W) float32`` metres in
each frame's own camera (OpenCV axes). Implementations:
- ``GivenDepth``: the video's own depth (a sensor, the simulator), optionally corrupted with a
  per-frame scale/shift drift and noise, which mimics what a monocular video depth model gives;
- ``TransformersDepth``: any ``transformers`` depth-estimation model (e.g. Depth Anything V2) by
  hub id or local folder, with a per-video scale alignment that makes the frames agree.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import numpy as np
import torch

from momaplib.checkpoints import HUB_ID
from momaplib.recon.video import Video, VideoError, check_depth

#: Seconds ``hub_reachable`` waits for the hub to answer before the model is loaded from the cache only
#: (without it, an offline machine retries the hub for about 30 s before failing).
HUB_PROBE_TIMEOUT = 2.0
_TRUE = ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """Returns whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set now, or when ``huggingface_hub`` was imported)."""
    if any(os.environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a core dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def _hub_switched_off(switched_off: bool = True):
    """Keeps ``huggingface_hub`` offline inside the block (no request at all, not even its own
    metadata fetches); ``HF_HUB_OFFLINE`` set after import does not reach its constant otherwise."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or switched_off
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Returns whether a TCP connection to the hub endpoint (``HF_ENDPOINT``) opens within ``timeout`` s."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


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
            self._model, self._processor = self._from_pretrained()
        self._model.to(self.config.device).eval()
        return self._model, self._processor

    def _from_pretrained(self):
        """Returns (model, processor) of ``config.model``: a local folder, or a hub id from the hub cache
        alone when the hub is off or unreachable, so an offline machine fails at once with the fix."""
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        name = self.config.model
        field = "TransformersDepthConfig.model"
        local = Path(name).expanduser()
        if local.is_dir():
            source, cache_only, where = str(local), True, f"the local folder {local}"
        elif local.exists() or not HUB_ID.match(name) or name.startswith((".", "~")):
            raise FileNotFoundError(
                f"{field}: {name!r} is not a folder (config.json + weights of a depth-estimation model) "
                "nor a hub id like 'depth-anything/Depth-Anything-V2-Small-hf'"
            )
        else:
            offline = hub_offline()
            cache_only = offline or not hub_reachable()
            source = name
            where = (
                "the hub cache only (HF_HUB_OFFLINE is set)"
                if offline
                else "the hub cache only (the hub is unreachable: no network?)"
                if cache_only
                else "the Hugging Face hub"
            )
        try:
            with _hub_switched_off(cache_only):
                model = AutoModelForDepthEstimation.from_pretrained(source, local_files_only=cache_only)
                processor = self._processor or AutoImageProcessor.from_pretrained(
                    source, local_files_only=cache_only
                )
        except (OSError, ValueError) as exc:
            fix = (
                f'download it once on a machine with network (python -c "from huggingface_hub import '
                f"snapshot_download; snapshot_download('{name}')\") and copy the hub cache ($HF_HOME), or "
                f"save it to a folder and set {field} to that folder; or use GivenDepth (the video's own "
                "depth)"
                if cache_only and source == name
                else "check the id or folder: it must hold a transformers depth-estimation model"
            )
            raise FileNotFoundError(f"{field}: cannot load {name!r} from {where}: {fix} ({exc})") from exc
        return model, processor

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
