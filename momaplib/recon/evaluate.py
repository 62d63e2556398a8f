"""Accuracy of a reconstruction against ground truth (MoMap-Sim), for the benchmark and notebook."""

from __future__ import annotations

import numpy as np

from momaplib.geometry import invert_pose, rotation_angle
from momaplib.momap import MoMap


def reconstruction_errors(recon: MoMap, gt: MoMap) -> dict[str, float]:
    """Returns errors of ``recon`` against ``gt`` (same T, H, W; distances relative to GT's scene scale).

    Keys: ``visible_epe`` / ``infilled_epe``: median 3D end-point error ``|x - x_gt| / s`` over the
    (t > 0, pixel) entries that the reconstruction marks visible / infilled (pixels valid in both;
    NaN when there is none); ``visible_epe_mean``; ``rotation_deg`` / ``rotation_max_deg``: mean / max
    over t of the geodesic angle between estimated and GT ``ref_from_cam``; ``translation``: mean
    camera position error / s; ``tracked_fraction``: fraction of (t > 0, valid GT pixel) entries
    the reconstruction observed; ``infilled_fraction``. On the pixels that move in the GT (its
    moving mask, valid in both; NaN when none moves): ``moving_epe``, the median error over
    (t > 0, pixel); ``moving_epe_still``, the same for a MoMap in which nothing moves (every
    point held at its t = 0 position: what a reconstruction that loses all motion scores); and
    ``moving_tracked_fraction``, the fraction of those entries the reconstruction observed.
    Robustness (issue "real sensors"): ``static_moving_fraction``, the fraction of pixels that are
    static in the GT (valid in both) which the reconstruction's moving mask marks as moving;
    ``spurious_instances``, reconstructed instances of which less than half the pixels move in
    the GT; ``translation_path``, the mean camera position error divided by the GT camera's path
    length (NaN for a camera that moves less than 1 % of the scene scale: use ``translation``).
    """
    if recon.xyz.shape != gt.xyz.shape:
        raise ValueError(f"recon: expected xyz shape {gt.xyz.shape} like the GT, got {recon.xyz.shape}")
    scale = gt.scene_scale
    both = recon.valid & gt.valid
    error = np.linalg.norm(recon.xyz - gt.xyz, axis=-1)[1:] / scale  # (T-1, H, W)
    seen = recon.visible[1:] & both[None]
    filled = ~recon.visible[1:] & both[None]
    relative = invert_pose(gt.ref_from_cam.astype(np.float64)) @ recon.ref_from_cam.astype(np.float64)
    angle = np.degrees(rotation_angle(relative[:, :3, :3]))
    translation = np.linalg.norm(recon.ref_from_cam[:, :3, 3] - gt.ref_from_cam[:, :3, 3], axis=-1) / scale
    median = lambda values: float(np.median(values)) if values.size else float("nan")  # noqa: E731
    moving = gt.moving_mask() & both  # (H, W)
    still = np.linalg.norm(gt.xyz[:1] - gt.xyz, axis=-1)[1:] / scale  # (T-1, H, W): nothing moves
    static = ~gt.moving_mask() & both
    recon_moving = recon.moving_mask()
    spurious = sum(
        int(gt.moving_mask()[recon.instance == k].mean() < 0.5)
        for k in np.unique(recon.instance[recon.instance > 0])
    )
    centres = gt.ref_from_cam[:, :3, 3].astype(np.float64)
    path = float(np.linalg.norm(np.diff(centres, axis=0), axis=-1).sum())
    return {
        "visible_epe": median(error[seen]),
        "visible_epe_mean": float(error[seen].mean()) if seen.any() else float("nan"),
        "infilled_epe": median(error[filled]),
        "rotation_deg": float(angle.mean()),
        "rotation_max_deg": float(angle.max()),
        "translation": float(translation.mean()),
        "tracked_fraction": float(seen.sum() / max(1, (gt.valid.sum() * (gt.num_frames - 1)))),
        "infilled_fraction": float(filled.sum() / max(1, both.sum() * (gt.num_frames - 1))),
        "moving_epe": median(error[:, moving]),
        "moving_epe_still": median(still[:, moving]),
        "moving_tracked_fraction": float(recon.visible[1:, moving].mean()) if moving.any() else float("nan"),
        "static_moving_fraction": float(recon_moving[static].mean()) if static.any() else float("nan"),
        "spurious_instances": float(spurious),
        "translation_path": float(translation.mean() * scale / path) if path > 0.01 * scale else float("nan"),
    }
