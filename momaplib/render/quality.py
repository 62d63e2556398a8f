"""How well a render reproduces true frames: PSNR on the pixels it should explain."""

from __future__ import annotations

import numpy as np

from momaplib.render.momap_render import COVERED_ALPHA, RenderOutput

#: A covered pixel is "truly visible" when its rendered depth is within this fraction of the true
#: depth: the splat there is the surface the camera really sees, not one occluded in the real frame.
DEPTH_AGREEMENT = 0.03


def psnr(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Returns the PSNR in dB of images in [0, 1] (..., 3) over ``mask`` (...) (all pixels when None);
    NaN when the mask is empty, inf for a perfect match."""
    error = (np.asarray(prediction, np.float64) - np.asarray(target, np.float64)) ** 2
    if mask is not None:
        error = error[np.asarray(mask, bool)]
    if error.size == 0:
        return float("nan")
    mse = float(error.mean())
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def truly_visible(render: RenderOutput, true_depth: np.ndarray) -> np.ndarray:
    """Returns (T, H, W) bool: covered pixels whose rendered depth agrees with the true depth."""
    true_depth = np.asarray(true_depth, np.float32)
    if true_depth.shape != render.depth.shape:
        raise ValueError(f"true_depth: expected {render.depth.shape}, got {true_depth.shape}")
    agree = np.abs(render.depth - true_depth) <= DEPTH_AGREEMENT * np.maximum(true_depth, 1e-6)
    return (render.alpha >= COVERED_ALPHA) & agree & (true_depth > 0)


def render_quality(render: RenderOutput, frames: np.ndarray, true_depth: np.ndarray) -> dict[str, float]:
    """Returns ``psnr_visible`` (dB on covered, truly visible pixels), ``psnr_visible_t0`` (frame 0
    only), ``coverage`` (fraction of covered pixels) and ``visible_fraction`` of a render against
    the true ``frames`` (T, H, W, 3) uint8 and their z-depth (T, H, W)."""
    frames = np.asarray(frames)
    if frames.shape != render.rgb.shape or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected {render.rgb.shape} uint8, got {frames.shape} {frames.dtype}")
    target = frames.astype(np.float32) / 255.0
    visible = truly_visible(render, true_depth)
    return {
        "psnr_visible": psnr(render.rgb, target, visible),
        "psnr_visible_t0": psnr(render.rgb[0], target[0], visible[0]),
        "coverage": float((render.alpha >= COVERED_ALPHA).mean()),
        "visible_fraction": float(visible.mean()),
    }
