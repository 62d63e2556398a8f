"""Quality of completed videos against the true frames, and the classical inpainting baseline.

Metrics are computed offline on frames in [0, 1] (no learned metric such as LPIPS, whose weights
cannot be fetched here): PSNR and SSIM on the hole pixels (what the completion produced) and on
all pixels, and a temporal error. The temporal error compares each frame-to-frame change of the
completed video with the same change of the true video, on the pixels that are holes in either
frame: ``mean |(C[t+1] - C[t]) - (G[t+1] - G[t])|``. With a still camera it is the warp error of
the holes under the true (zero) flow of the background they show; with a moving camera it still
measures flicker the true video does not have, without needing flow inside the holes, which no
MoMap provides.
"""

from __future__ import annotations

import cv2
import numpy as np

from momaplib.render import psnr

#: SSIM constants for images in [0, 1] (Wang et al. 2004).
_C1, _C2 = 0.01**2, 0.03**2


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Returns the per-pixel SSIM (H, W) of two (H, W, 3) images in [0, 1] (Gaussian window 11,
    sigma 1.5, mean over channels)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))
    return ssim.mean(-1)


def temporal_error(completed: np.ndarray, truth: np.ndarray, holes: np.ndarray) -> float:
    """Returns the mean absolute difference between the completed and true frame-to-frame changes
    on pixels that are holes at t or t+1 ((T, H, W, 3) videos in [0, 1], ``holes`` (T, H, W));
    NaN when no such pixel exists."""
    change = np.diff(np.asarray(completed, np.float64), axis=0) - np.diff(
        np.asarray(truth, np.float64), axis=0
    )
    mask = holes[1:] | holes[:-1]
    if not mask.any():
        return float("nan")
    return float(np.abs(change).mean(-1)[mask].mean())


def video_metrics(completed: np.ndarray, truth: np.ndarray, holes: np.ndarray) -> dict[str, float]:
    """Returns ``psnr_hole``, ``ssim_hole``, ``psnr_all``, ``ssim_all``, ``temporal_error`` and
    ``hole_fraction`` of a completed video (T, H, W, 3) in [0, 1] against the true one."""
    completed, truth = np.asarray(completed, np.float32), np.asarray(truth, np.float32)
    holes = np.asarray(holes, bool)
    if completed.shape != truth.shape or completed.shape[:3] != holes.shape:
        raise ValueError(
            f"video_metrics: completed {completed.shape}, truth {truth.shape} and holes {holes.shape} "
            "must agree"
        )
    ssim = np.stack([ssim_map(c, g) for c, g in zip(completed, truth, strict=True)])
    return {
        "psnr_hole": psnr(completed, truth, holes),
        "ssim_hole": float(ssim[holes].mean()) if holes.any() else float("nan"),
        "psnr_all": psnr(completed, truth),
        "ssim_all": float(ssim.mean()),
        "temporal_error": temporal_error(completed, truth, holes),
        "hole_fraction": float(holes.mean()),
    }


def cv2_inpaint(frames: np.ndarray, holes: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """Returns (T, H, W, 3) float32 in [0, 1]: each frame's holes filled by OpenCV's Telea
    inpainting (the classical baseline: per frame, no learning)."""
    out = []
    for frame, hole in zip(frames, holes, strict=True):
        image = np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)
        filled = cv2.inpaint(image, hole.astype(np.uint8), radius, cv2.INPAINT_TELEA)
        out.append(filled.astype(np.float32) / 255.0)
    return np.stack(out)
