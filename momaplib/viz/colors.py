"""Colour conventions shared by every figure (XYZ as RGB, instance palette, depth) and input checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from momaplib.momap import MoMap

#: Lower and upper percentiles (over all valid pixels and all frames) that span the XYZ colour
#: range: a handful of far wall points must not wash out the colours of the table and objects.
XYZ_PERCENTILES = (0.5, 99.5)
#: Colour of pixels without a trajectory in XYZ images (RGB in [0, 1]).
INVALID_COLOR = (0.0, 0.0, 0.0)
#: Distinct colours for instance ids 1, 2, ... (matplotlib's tab10 without its grey).
INSTANCE_PALETTE = np.array(
    [plt.get_cmap("tab10")(i)[:3] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)], dtype=np.float64
)
#: Extensions ``save_clip_animation`` writes.
ANIMATION_SUFFIXES = (".gif", ".mp4")


# ----------------------------------------------------------------------------- input checks
def _as_momap(momap_or_clip: Any) -> MoMap:
    """Returns the MoMap of a MoMap or of anything carrying one (a ``Clip``)."""
    momap = getattr(momap_or_clip, "momap", momap_or_clip)
    if not isinstance(momap, MoMap):
        raise TypeError(f"expected a MoMap or a Clip, got {type(momap_or_clip).__name__}")
    return momap


def _check_array(name: str, array: Any, ndim: int, last: int | None, expected: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim or (last is not None and array.shape[-1] != last) or array.size == 0:
        raise ValueError(f"{name}: expected {expected}, got shape {array.shape} dtype {array.dtype}")
    return array


def _check_rgb(name: str, rgb: Any, ndim: int = 3) -> np.ndarray:
    """Returns ``rgb`` as uint8 (float images in [0, 1] are converted); checks (..., H, W, 3)."""
    expected = "(H, W, 3)" if ndim == 3 else "(T, H, W, 3)"
    rgb = _check_array(name, rgb, ndim, 3, f"{expected} uint8 (or float in [0, 1])")
    if np.issubdtype(rgb.dtype, np.floating):
        return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if rgb.dtype != np.uint8:
        raise ValueError(f"{name}: expected {expected} uint8 (or float in [0, 1]), got dtype {rgb.dtype}")
    return rgb


def _check_instance(name: str, instance: Any, shape: tuple[int, ...]) -> np.ndarray:
    instance = np.asarray(instance)
    if instance.shape != shape or not np.issubdtype(instance.dtype, np.integer):
        raise ValueError(
            f"{name}: expected integer ids of shape {shape} (matching the image), "
            f"got shape {instance.shape} dtype {instance.dtype}"
        )
    return instance


# ----------------------------------------------------------------------------- colours
def xyz_color_range(
    xyz: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = XYZ_PERCENTILES
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(low (3,), high (3,))``: the per-axis XYZ range that ``xyz_to_rgb`` maps to [0, 1].

    The range is taken once over *all* frames and valid pixels of ``xyz`` (T, H, W, 3) (or a single
    frame (H, W, 3)), at ``percentiles`` of each axis; ``(0, 100)`` gives min/max. Pass the same
    range when colouring several MoMaps (GT and generated) so their colours are comparable.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 3:
        xyz = xyz[None]
    if xyz.ndim != 4 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected (T, H, W, 3) or (H, W, 3), got shape {xyz.shape}")
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != xyz.shape[1:3]:
        raise ValueError(f"valid: expected (H, W) = {xyz.shape[1:3]}, got shape {valid.shape}")
    if not valid.any():
        raise ValueError("valid: the MoMap has no valid pixels to colour")
    points = xyz[:, valid].reshape(-1, 3)
    low, high = np.percentile(points, percentiles, axis=0)
    # A flat axis (e.g. a single frame of a plane) would divide by zero; give it a tiny span.
    high = np.maximum(high, low + 1e-6)
    return low, high


def xyz_to_rgb(
    xyz: np.ndarray, valid: np.ndarray, color_range: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Returns the XYZ-as-colour image (..., H, W, 3) float in [0, 1] of positions (..., H, W, 3).

    R, G, B = x, y, z linearly mapped from ``color_range = (low, high)`` (default: the fixed range of
    ``xyz_color_range`` over all of ``xyz``) and clipped to [0, 1]; invalid pixels (``valid`` (H, W)
    False) get ``INVALID_COLOR``.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim < 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected (..., H, W, 3), got shape {xyz.shape}")
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != xyz.shape[-3:-1]:
        raise ValueError(f"valid: expected (H, W) = {xyz.shape[-3:-1]}, got shape {valid.shape}")
    if color_range is None:
        color_range = xyz_color_range(xyz.reshape(-1, *xyz.shape[-3:]), valid)
    low, high = (np.asarray(c, dtype=np.float64) for c in color_range)
    rgb = np.clip((xyz - low) / (high - low), 0.0, 1.0)
    return np.where(valid[..., None], rgb, np.asarray(INVALID_COLOR))


def instance_colors(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Returns the (N, 3) float RGB colours of instance ids (N,); id 0 (background) is white."""
    ids = np.asarray(ids, dtype=np.int64)
    colors = INSTANCE_PALETTE[(np.maximum(ids, 1) - 1) % len(INSTANCE_PALETTE)]
    return np.where((ids == 0)[..., None], 1.0, colors)


def colorize_instances(
    instance: np.ndarray, background: tuple[float, float, float] = (0.12,) * 3
) -> np.ndarray:
    """Returns the (..., H, W, 3) uint8 image of instance ids (..., H, W) in the instance palette."""
    instance = np.asarray(instance)
    rgb = instance_colors(instance.reshape(-1)).reshape(*instance.shape, 3)
    rgb[instance == 0] = background
    return (rgb * 255 + 0.5).astype(np.uint8)


def colorize_depth(depth: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Returns the (..., H, W, 3) uint8 turbo image of depth (..., H, W); one range for all frames.

    ``low``/``high`` default to the min/max of finite depths over the whole array, so a surface
    keeps its colour while the camera does not move towards it.
    """
    depth = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(depth)
    low = float(depth[finite].min()) if low is None else low
    high = float(depth[finite].max()) if high is None else high
    scaled = np.clip((depth - low) / max(high - low, 1e-9), 0.0, 1.0)
    rgb = plt.get_cmap("turbo")(np.where(finite, scaled, 0.0))[..., :3]
    rgb[~finite] = 0.0
    return (rgb * 255 + 0.5).astype(np.uint8)
