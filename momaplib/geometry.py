"""Camera geometry: projection, unprojection and SE(3) helpers.

Conventions (see DESIGN.md): metres; OpenCV camera axes (x right, y down, z forward);
intrinsics ``K`` in pixels with pixel *centres* at integer coordinates, so pixel ``(u, v)``
of an ``H x W`` image covers ``[u - 0.5, u + 0.5) x [v - 0.5, v + 0.5)``. Poses are 4x4
matrices named ``a_from_b``: they map points in frame ``b`` to frame ``a``.

Every function is batched torch code over leading dimensions. Functions decorated with
``numpy_io`` also accept numpy arrays and then return numpy arrays, so they serve notebooks
and data code without conversions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor


def numpy_io(fn: Callable) -> Callable:
    """Wraps a torch function so numpy inputs give numpy outputs (float64 stays float64)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        used_numpy = any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values()))
        if not used_numpy:
            return fn(*args, **kwargs)
        args = tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args)
        kwargs = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        return _to_numpy(fn(*args, **kwargs))

    return wrapper


def _to_numpy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    return value


# ----------------------------------------------------------------------------- intrinsics
def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Returns a 3x3 pinhole K (float32) with square pixels and the principal point at the centre."""
    fx = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return np.array(
        [[fx, 0.0, (width - 1) / 2], [0.0, fx, (height - 1) / 2], [0.0, 0.0, 1.0]], dtype=np.float32
    )


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Returns the (H, W, 2) float32 grid of pixel centres ``(u, v)``."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def _intrinsic_entries(K: Tensor, points_dim: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Returns fx, fy, cx, cy, skew shaped to broadcast against (..., N) point coordinates.

    K's batch dimensions align with the *leading* dimensions of the points, so a (B, 3, 3) K
    serves points (B, N, 3) or (B, H, W, 3).
    """
    K = K.to(dtype)
    extra = points_dim - 1 - (K.dim() - 2)
    if extra < 0:
        raise ValueError(f"K has batch shape {tuple(K.shape[:-2])} but the points have fewer leading dims")
    shape = (*K.shape[:-2], *([1] * extra))
    return tuple(K[..., i, j].reshape(shape) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2), (0, 1)))


@numpy_io
def project(points_cam: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(uv, z)``: pixel coordinates (..., 2) and depth (...) of camera-frame points (..., 3).

    ``K`` is (3, 3) or (B..., 3, 3) with batch dims matching the points' leading dims. Points
    with z <= 0 get meaningless uv; callers mask them with ``z > 0``.
    """
    fx, fy, cx, cy, skew = _intrinsic_entries(K, points_cam.dim(), points_cam.dtype)
    z = points_cam[..., 2]
    x, y = points_cam[..., 0] / z, points_cam[..., 1] / z
    return torch.stack([fx * x + skew * y + cx, fy * y + cy], dim=-1), z


@numpy_io
def unproject(uv: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Returns camera-frame points (..., 3) of pixels ``uv`` (..., 2) at z-depth ``depth`` (...)."""
    fx, fy, cx, cy, skew = _intrinsic_entries(K, uv.dim(), uv.dtype)
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    return torch.stack([x * depth, y * depth, depth], dim=-1)


@numpy_io
def depth_to_xyz(depth: Tensor, K: Tensor) -> Tensor:
    """Returns the XYZ map (..., H, W, 3) of a z-depth map (..., H, W) in the camera frame."""
    height, width = depth.shape[-2:]
    grid = pixel_grid(height, width, device=depth.device).to(depth.dtype)
    return unproject(grid.expand(*depth.shape, 2), depth, K)


# ----------------------------------------------------------------------------- SE(3)
@numpy_io
def make_pose(rotation: Tensor, translation: Tensor) -> Tensor:
    """Returns 4x4 poses (..., 4, 4) from rotations (..., 3, 3) and translations (..., 3)."""
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    pose = torch.zeros(*batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


@numpy_io
def invert_pose(a_from_b: Tensor) -> Tensor:
    """Returns ``b_from_a`` for rigid poses ``a_from_b`` (..., 4, 4) (R^T, not a general inverse)."""
    rotation_t = a_from_b[..., :3, :3].transpose(-1, -2)
    translation = -(rotation_t @ a_from_b[..., :3, 3:4])[..., 0]
    return make_pose(rotation_t, translation)


@numpy_io
def transform_points(a_from_b: Tensor, points_b: Tensor) -> Tensor:
    """Returns points (..., N, 3) mapped from frame b to frame a by poses (..., 4, 4).

    The pose batch shape must broadcast against the points' batch shape without N.
    """
    rotation = a_from_b[..., :3, :3].to(points_b.dtype)
    translation = a_from_b[..., :3, 3].to(points_b.dtype)
    return points_b @ rotation.transpose(-1, -2) + translation.unsqueeze(-2)


@numpy_io
def rotate_vectors(a_from_b: Tensor, vectors_b: Tensor) -> Tensor:
    """Returns direction vectors (..., N, 3) rotated from frame b to frame a (no translation)."""
    return vectors_b @ a_from_b[..., :3, :3].to(vectors_b.dtype).transpose(-1, -2)


@numpy_io
def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Returns rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) (Rodrigues' formula)."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    small = angle < 1e-8
    axis = axis_angle / torch.where(small, torch.ones_like(angle), angle)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    sin, cos = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(cross)
    rotation = eye + sin * cross + (1 - cos) * (cross @ cross)
    return torch.where(small[..., None], eye, rotation)


@numpy_io
def matrix_to_axis_angle(rotation: Tensor) -> Tensor:
    """Returns axis-angle vectors (..., 3) of rotation matrices (..., 3, 3), angle in [0, pi]."""
    angle = rotation_angle(rotation)
    skew = torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        dim=-1,
    )
    sin = torch.sin(angle).unsqueeze(-1)
    near_pi = angle > math.pi - 1e-3
    axis = skew / torch.where(sin.abs() < 1e-8, torch.ones_like(sin), 2 * sin)
    # Near pi the skew part vanishes; recover the axis from the symmetric part instead.
    sym = (rotation + torch.eye(3, dtype=rotation.dtype, device=rotation.device)) / 2
    col = sym.diagonal(dim1=-2, dim2=-1).argmax(-1)
    axis_pi = torch.gather(sym, -1, col[..., None, None].expand(*col.shape, 3, 1))[..., 0]
    axis_pi = axis_pi / axis_pi.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    axis = torch.where(near_pi[..., None], axis_pi, axis)
    return axis * angle.unsqueeze(-1)


@numpy_io
def rotation_angle(rotation: Tensor) -> Tensor:
    """Returns the geodesic angle in radians (...) of rotation matrices (..., 3, 3)."""
    trace = rotation.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.acos(((trace - 1) / 2).clamp(-1.0, 1.0))


@numpy_io
def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """Returns ``world_from_cam`` (..., 4, 4) for an OpenCV camera at ``eye`` looking at ``target``.

    ``up`` is the world's up direction; the camera's -y axis is aligned with it as far as possible.
    """
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, up.expand_as(forward).to(forward.dtype), dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    rotation = torch.stack([right, down, forward], dim=-1)
    return make_pose(rotation, eye)


@numpy_io
def umeyama(source: Tensor, target: Tensor, with_scale: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(scale, rotation, translation)`` minimising ``|s R x + t - y|^2`` over point pairs.

    ``source`` and ``target`` are (..., N, 3). Reflections are excluded (det R = +1).
    """
    mu_s, mu_t = source.mean(-2, keepdim=True), target.mean(-2, keepdim=True)
    src, tgt = source - mu_s, target - mu_t
    cov = tgt.transpose(-1, -2) @ src / source.shape[-2]
    u, sigma, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u @ vh))
    correction = torch.ones_like(sigma)
    correction[..., -1] = sign
    rotation = u @ torch.diag_embed(correction) @ vh
    if with_scale:
        var = (src**2).sum((-1, -2)) / source.shape[-2]  # same 1/N as the covariance
        scale = (sigma * correction).sum(-1) / var.clamp_min(1e-12)
    else:
        scale = torch.ones(source.shape[:-2], dtype=source.dtype, device=source.device)
    translation = mu_t[..., 0, :] - scale[..., None] * (rotation @ mu_s[..., 0, :, None])[..., 0]
    return scale, rotation, translation


# ----------------------------------------------------------------------------- depth maps with holes
#: Largest median depth in metres accepted as a scene (``check_depth_scale``). Tabletop and egocentric
#: scenes sit at 0.3-5 m, a street at 5-50 m; a median over 100 m almost always means millimetres
#: (a sensor's 16-bit depth) passed as metres.
MAX_MEDIAN_DEPTH = 100.0


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Returns the (..., H, W) bool mask of pixels with geometry: finite z-depth > 0.

    Holes are what depth sensors write where they measured nothing: 0, NaN, +-inf (and < 0).
    """
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (np.nan_to_num(depth, posinf=0.0, neginf=0.0) > 0)


def check_depth_scale(
    z: np.ndarray, valid: np.ndarray, name: str = "depth", max_median: float = MAX_MEDIAN_DEPTH
) -> float:
    """Returns the median z of the ``valid`` pixels of ``z`` (H, W) in metres.

    Raises ``ValueError`` naming ``name`` when it is over ``max_median`` metres: depth in
    millimetres given as metres (the fix, dividing by 1000, is in the message).
    """
    median = float(np.median(np.asarray(z)[valid])) if np.any(valid) else 0.0
    if median > max_median:
        raise ValueError(
            f"{name}: the median depth of the valid pixels is {median:.4g} m, over the plausible "
            f"{max_median:g} m: it looks like millimetres; divide by 1000 to give metres "
            "(e.g. depth_mm / 1000)"
        )
    return median


def nearest_known_pixel(known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(rows, cols)``, each (H, W) int: the nearest pixel where ``known`` (H, W) bool is
    True, for every pixel (itself where known; Euclidean, scipy's distance transform). ``known``
    needs at least one True pixel."""
    from scipy.ndimage import distance_transform_edt

    # the index of the nearest zero of ~known, i.e. of the nearest known pixel
    rows, cols = distance_transform_edt(~known, return_distances=False, return_indices=True)
    return rows, cols


def fill_depth_holes(depth: np.ndarray, method: str = "nearest", inpaint_radius: float = 3.0) -> np.ndarray:
    """Returns a dense copy (H, W) float32 of a z-depth map whose holes (0, NaN, inf, < 0) are filled.

    ``method``:
    - ``"nearest"``: each hole takes the depth of its nearest valid pixel (scipy's Euclidean
      distance transform); no new depth values, so object edges stay sharp (stair-stepped);
    - ``"inpaint"``: OpenCV's Navier-Stokes inpainting (``cv2.inpaint``, neighbourhood
      ``inpaint_radius`` pixels): a smooth fill that also blends across object edges. (Not Telea's
      method: its gradient term assumes 0-255 intensities and is off by up to 1 m on depth in metres.)

    For users who want dense input; the pipeline itself takes holes as invalid pixels.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth: expected (H, W) float z-depth in metres, got {depth.shape} {depth.dtype}")
    if method not in ("nearest", "inpaint"):
        raise ValueError(f"method: expected 'nearest' or 'inpaint', got {method!r}")
    valid = valid_depth(depth)
    if not valid.any():
        raise ValueError("depth: no pixel has a finite depth > 0; there is nothing to fill the holes from")
    filled = np.where(valid, depth, 0).astype(np.float32)
    if valid.all():
        return filled
    if method == "nearest":
        return filled[nearest_known_pixel(valid)]
    import cv2

    holes = (~valid).astype(np.uint8) * 255
    return cv2.inpaint(filled, holes, float(inpaint_radius), cv2.INPAINT_NS).astype(np.float32)
