"""Robust depth cleaning before lifting: hole filling, speckle removal, and a reliability mask.

Real depth sensors (and ``SimConfig(sensor=...)``) leave holes (0 / NaN) where they measured
nothing, put "flying pixels" with depths between foreground and background along object edges,
and add noise growing with distance. A tracked point read from such a pixel jumps by the depth
gap, which reconstructs static scene as moving. ``clean_depth`` returns per frame:

- ``filled`` (T, H, W): every hole filled from its nearest measured pixel
  (``momaplib.geometry.fill_depth_holes``), then a small median filter: it removes isolated
  flying pixels and speckle noise but, unlike a mean or a Gaussian, keeps depth edges sharp;
- ``reliable`` (T, H, W): measured pixels away from depth discontinuities, i.e. whose
  neighbourhood's largest and smallest depth differ by at most ``edge_ratio``, and not within
  ``edge_margin`` pixels of a hole or such an edge. Tracks read depth only where it is reliable
  (``lift_tracks``); elsewhere they count as not seen and the infill decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from momaplib.geometry import fill_depth_holes, valid_depth


@dataclass
class DepthFilterConfig:
    """How depth is cleaned before lifting (``clean_depth``)."""

    median_size: int = 3  # window of the median filter, 1, 3 or 5 pixels (1: none)
    edge_ratio: float = 1.08  # max/min depth in a pixel's 3x3 neighbourhood above this: a discontinuity
    edge_margin: int = 0  # pixels around holes and discontinuities that are unreliable too
    fill: Literal["nearest", "inpaint"] = "nearest"  # hole filling (``fill_depth_holes``)

    def __post_init__(self) -> None:
        if self.median_size not in (1, 3, 5):
            raise ValueError(f"DepthFilterConfig.median_size: expected 1, 3 or 5, got {self.median_size}")
        if not self.edge_ratio > 1:
            raise ValueError(f"DepthFilterConfig.edge_ratio: expected > 1, got {self.edge_ratio}")
        if self.edge_margin < 0:
            raise ValueError(f"DepthFilterConfig.edge_margin: expected >= 0 pixels, got {self.edge_margin}")


def clean_depth(depth: np.ndarray, config: DepthFilterConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(filled (T, H, W) float32, reliable (T, H, W) bool)`` of depth (T, H, W) with holes.

    Holes are 0, NaN or inf (``valid_depth``); each frame needs some measured pixels.
    """
    config = config or DepthFilterConfig()
    depth = np.asarray(depth)
    if depth.ndim != 3 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(
            f"depth: expected (T, H, W) float z-depth in metres, got {depth.shape} {depth.dtype}"
        )
    filled = np.empty(depth.shape, np.float32)
    reliable = np.empty(depth.shape, bool)
    kernel = np.ones((3, 3), np.uint8)
    for t, frame in enumerate(depth):
        measured = valid_depth(frame)
        dense = fill_depth_holes(frame.astype(np.float32), method=config.fill)
        if config.median_size > 1:
            dense = cv2.medianBlur(dense, config.median_size)
        high, low = cv2.dilate(dense, kernel), cv2.erode(dense, kernel)
        ok = measured & (high <= config.edge_ratio * np.maximum(low, 1e-9))
        if config.edge_margin > 0:
            ok = cv2.erode(ok.astype(np.uint8), kernel, iterations=config.edge_margin).astype(bool)
        filled[t], reliable[t] = dense, ok
    return filled, reliable
