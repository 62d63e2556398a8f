"""Camera paths to render a MoMap into."""

from __future__ import annotations

import numpy as np
import torch

from momaplib.geometry import axis_angle_to_matrix, invert_pose, make_pose
from momaplib.momap import MoMap


def orbit_cameras(
    momap: MoMap, num_frames: int | None = None, degrees: float = 10.0, axis: str = "y", turns: float = 1.0
) -> np.ndarray:
    """Returns ``cam_from_ref`` (T, 4, 4): the reference camera swinging about the scene centre.

    The camera rotates by ``degrees * sin(2π · turns · t / T)`` about an axis through the median
    valid reference point (``axis`` "y": side to side, "x": up and down, in the reference camera's
    axes), always looking at the same point relative to the scene, so frame 0 is the reference view.
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis: expected 'x' or 'y', got {axis!r}")
    if not np.isfinite(degrees) or abs(degrees) > 90:
        raise ValueError(f"degrees: expected a swing of at most 90 degrees, got {degrees}")
    T = momap.num_frames if num_frames is None else int(num_frames)
    if T < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    if not momap.valid.any():
        raise ValueError("momap.valid: the MoMap has no valid pixel to orbit around")
    pivot = torch.from_numpy(np.median(momap.xyz[0][momap.valid], axis=0)).double()
    angles = np.deg2rad(degrees) * np.sin(2 * np.pi * turns * np.arange(T) / max(T, 1))
    unit = torch.tensor([0.0, 1.0, 0.0] if axis == "y" else [1.0, 0.0, 0.0], dtype=torch.float64)
    rotation = axis_angle_to_matrix(torch.from_numpy(angles)[:, None] * unit)
    # ref_from_cam(t) = translate(p) · R(θ_t) · translate(-p)
    translation = pivot - rotation @ pivot
    ref_from_cam = make_pose(rotation, translation)
    return invert_pose(ref_from_cam).float().numpy()
