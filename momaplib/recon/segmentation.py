"""Segmentation stage (paper §3.2 step 6): instance ids of the reference pixels.

Every segmenter has one method, ``segment(inputs) -> instance (H, W) int32`` (0 = background).
Implementations:
- ``GivenSegmentation``: the video's own instance masks at t0 (simulator), or masks from a file
  (a video object segmentation model's output);
- ``MotionSegmentation``: clusters trajectories by rigid motion (sequential RANSAC of per-frame
  rigid transforms); static pixels form the background, the largest static cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from scipy.spatial import cKDTree

from momaplib.geometry import umeyama
from momaplib.recon.numerics import flush_denormals
from momaplib.recon.video import Video, VideoError
from momaplib.storage import load_npz


@dataclass
class SegmentationInputs:
    """What a segmenter may use (all in the reference camera frame, pixels flattened to N = H * W)."""

    video: Video  # the video (frames, and instance masks if it has them)
    xyz: np.ndarray  # (T, N, 3) float32 trajectories, hidden entries interpolated
    visible: np.ndarray  # (T, N) bool: entries that were observed
    valid: np.ndarray  # (N,) bool: pixels with a trajectory
    static: np.ndarray  # (N,) bool: tracks the camera stage used as static scene


class Segmenter:
    """Base class of segmentation stages: subclasses implement ``segment``."""

    def segment(self, inputs: SegmentationInputs) -> np.ndarray:
        """Returns instance ids (H, W) int32 of the reference pixels, 0 = background."""
        raise NotImplementedError


class GivenSegmentation(Segmenter):
    """Instance masks given with the video (``video.instance[0]``) or in a file.

    ``path`` (optional): a label image (``.png``, one integer id per pixel, 0 = background) or an
    ``.npz``/``.npy`` holding ``instance`` (H, W) or (T, H, W) ints, e.g. a video object
    segmentation model's output; a folder holds one ``<video name>.png|.npz|.npy`` per video.
    Without ``path`` the video's own masks are used (the simulator's).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else Path(path)

    def segment(self, inputs: SegmentationInputs) -> np.ndarray:
        """Returns the reference frame's instance ids (H, W) int32."""
        video = inputs.video
        H, W = video.shape[1:]
        if self.path is None:
            if video.instance is None:
                raise VideoError(
                    f"{video.name}: instance: GivenSegmentation needs the video's instance masks "
                    "(T, H, W) int, or a path to them; use MotionSegmentation for videos without them"
                )
            return video.instance[0].astype(np.int32)
        path = self.path
        if path.is_dir():
            found = [path / f"{video.name}{suffix}" for suffix in (".png", ".npz", ".npy")]
            found = [file for file in found if file.is_file()]
            if not found:
                raise FileNotFoundError(f"{path}: no {video.name}.png, .npz or .npy with instance ids")
            path = found[0]
        instance = _read_instance(path)
        if instance.ndim == 3:
            instance = instance[0]
        if instance.shape != (H, W) or not np.issubdtype(instance.dtype, np.integer) or instance.min() < 0:
            raise VideoError(
                f"{path}: instance: expected (H, W) = {(H, W)} (or (T, H, W)) integer ids >= 0, "
                f"got shape {instance.shape} dtype {instance.dtype}"
            )
        return instance.astype(np.int32)


def _connected_instances(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Returns labels (H, W) keeping, per instance, its 8-connected parts of >= ``min_pixels``
    pixels (the rest becomes background 0), renumbered 1, 2, ... by decreasing size."""
    kept = np.zeros_like(labels)
    for label in np.unique(labels[labels > 0]):
        _, parts, stats, _ = cv2.connectedComponentsWithStats(
            (labels == label).astype(np.uint8), connectivity=8
        )
        large = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_pixels) + 1
        kept[np.isin(parts, large)] = label
    ids, sizes = np.unique(kept[kept > 0], return_counts=True)
    renumbered = np.zeros_like(labels)
    for new, old in enumerate(ids[np.argsort(-sizes, kind="stable")], 1):
        renumbered[kept == old] = new
    return renumbered


def _read_instance(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        return load_npz(path, required=("instance",))["instance"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: instance file not found")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    return np.asarray(Image.open(path))


@dataclass
class MotionSegmentationConfig:
    """Rigid-motion clustering settings (distances relative to the scene scale s)."""

    move_threshold: float = 0.02  # a pixel moves if it gets farther than this * s from its t0 position
    fit_threshold: float = 0.015  # a pixel follows a rigid motion if its residual is below this * s
    residual_quantile: float = 0.8  # quantile over visible frames used as a pixel's residual
    patch_size: int = 16  # pixels (nearest at t0) that define one rigid-motion hypothesis
    num_hypotheses: int = 32  # hypotheses drawn per cluster
    max_instances: int = 8  # most moving instances
    min_pixels: int = 8  # smallest moving instance (smaller leftovers join their nearest cluster) ...
    min_fraction: float = 0.01  # ... or this fraction of the valid pixels if larger; an instance keeps
    # only its image-connected parts of at least that size (noise does not become instances)
    min_moving_frames: int = 2  # a pixel moves if it is past move_threshold in at least this many seen
    # frames (a single-frame spike of noise or a flying pixel is not motion)
    seed: int = 0  # seed of the hypothesis draws
    use_static_split: bool = True  # tracks the camera stage used as static scene are background


class MotionSegmentation(Segmenter):
    """Instances from motion: sequential RANSAC of rigid motions over the moving pixels.

    A hypothesis is the per-frame rigid transform (Umeyama) of a small patch of moving pixels;
    the hypothesis that explains most remaining moving pixels becomes an instance, and so on.
    Moving pixels that no hypothesis explains join the instance of their nearest labelled pixel.
    """

    def __init__(self, config: MotionSegmentationConfig | None = None):
        self.config = config or MotionSegmentationConfig()

    def segment(self, inputs: SegmentationInputs) -> np.ndarray:
        """Returns instance ids (H, W) int32: 0 for static pixels, 1, 2, ... by decreasing size."""
        with flush_denormals():
            return self._segment(inputs)

    def _segment(self, inputs: SegmentationInputs) -> np.ndarray:
        config = self.config
        H, W = inputs.video.shape[1:]
        xyz, visible, valid = inputs.xyz.astype(np.float64), inputs.visible & inputs.valid[None], inputs.valid
        labels = np.zeros(H * W, np.int32)
        if not valid.any():
            return labels.reshape(H, W)
        scale = float(np.median(xyz[0, valid, 2]))
        min_pixels = max(config.min_pixels, int(np.ceil(config.min_fraction * valid.sum())))
        displacement = np.where(visible, np.linalg.norm(xyz - xyz[:1], axis=-1), 0.0)
        moving_frames = (displacement > config.move_threshold * scale).sum(0)
        moving = valid & (moving_frames >= min(config.min_moving_frames, xyz.shape[0] - 1))
        if config.use_static_split and inputs.static is not None:
            # Tracks the camera stage explained as static scene are background even when depth
            # noise moves them past the threshold (noise would otherwise become many small instances).
            moving &= ~inputs.static
        remaining = np.flatnonzero(moving)
        rng = np.random.default_rng(config.seed)
        clusters: list[np.ndarray] = []
        while len(remaining) >= min_pixels and len(clusters) < config.max_instances:
            inliers = self._best_cluster(xyz, visible, remaining, scale, rng)
            if len(inliers) < min_pixels:
                break
            clusters.append(inliers)
            remaining = np.setdiff1d(remaining, inliers)
        clusters.sort(key=len, reverse=True)
        for label, members in enumerate(clusters, 1):
            labels[members] = label
        leftover = moving & (labels == 0)
        if clusters and leftover.any():
            labelled = np.flatnonzero(labels > 0)
            _, nearest = cKDTree(xyz[0, labelled]).query(xyz[0, leftover])
            labels[leftover] = labels[labelled[nearest]]
        return _connected_instances(labels.reshape(H, W), min_pixels)

    def _best_cluster(self, xyz, visible, remaining, scale, rng) -> np.ndarray:
        """Returns the indices of the remaining pixels explained by the best rigid-motion hypothesis."""
        config = self.config
        points0 = xyz[0, remaining]
        k = min(config.patch_size, len(remaining))
        seeds = rng.choice(len(remaining), min(config.num_hypotheses, len(remaining)), replace=False)
        _, patches = cKDTree(points0).query(points0[seeds], k=k)
        patches = np.asarray(patches).reshape(len(seeds), k)
        candidates = torch.as_tensor(xyz[:, remaining])  # (T, R, 3)
        seen = torch.as_tensor(visible[:, remaining])
        best, best_count = None, -1
        for patch in patches:
            inliers = self._inliers(candidates, seen, torch.as_tensor(patch), scale)
            # One refit on the inliers makes the hypothesis use the whole object, not the patch.
            if inliers.sum() >= 3:
                inliers = self._inliers(candidates, seen, torch.as_tensor(np.flatnonzero(inliers)), scale)
            count = int(inliers.sum())
            if count > best_count:
                best, best_count = inliers, count
        return remaining[best]

    def _inliers(self, candidates, seen, members, scale) -> np.ndarray:
        """Returns (R,) bool: pixels following the rigid motion fitted to ``members`` in every frame."""
        source = candidates[0, members].expand(candidates.shape[0], -1, -1)
        _, rotation, translation = umeyama(source, candidates[:, members])
        predicted = candidates[0] @ rotation.transpose(-1, -2) + translation[:, None]  # (T, R, 3)
        residual = torch.where(seen, (predicted - candidates).norm(dim=-1), torch.nan)
        statistic = torch.nanquantile(residual, self.config.residual_quantile, dim=0)
        return (statistic.nan_to_num(0.0) <= self.config.fit_threshold * scale).numpy()
