"""A MoMap seen through another camera: rolled, pitched, turned or mirrored, with every field
transformed consistently.

A MoMap is expressed in its reference camera's frame, so turning the camera about its centre
changes the coordinates (``xyz`` rotates with the camera), the image (a homography for a pure
rotation) and ``ref_from_cam`` (conjugated by the rotation), but not the scene:

- ``roll_quarter_turns(momap, k)``: the image turned counter-clockwise by ``k`` x 90 degrees, an
  exact index permutation (``np.rot90``): ``(x, y) -> (y, -x)`` per quarter turn, ``K``'s focal
  lengths swapped and its principal point moved with the pixels;
- ``mirror(momap, "horizontal" | "vertical")``: columns (rows) reversed and ``x`` (``y``)
  negated, also exact; the mirrored scene is the mirror image of the original (still a valid
  MoMap: ``ref_from_cam`` is conjugated by the reflection, so it stays a rotation);
- ``rotate_camera(momap, roll_deg, pitch_deg, yaw_deg)``: any rotation, the image warped by its
  homography (OpenCV ``remap``); pixels that see outside the original image become invalid.

Resampling a MoMap (``resample_trajectories``, also used by the crops of
``momaplib.training.augment``) keeps reprojection exact: every new pixel's ``xyz`` at t = 0
lies on that pixel's own ray, at the distance from the camera interpolated from the original
(bilinear inside smooth surfaces; nearest pixel across depth edges, object boundaries and holes,
so no point floats between a foreground object and the wall behind it). Its motion, ``x_t -
x_0``, is interpolated the same way and rotated with the camera.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from momaplib.momap import MoMap
from momaplib.sim.objects import axis_rotation

#: Relative depth jump between neighbouring pixels above which resampling takes the nearest
#: pixel instead of interpolating (an occlusion edge, not a surface).
EDGE_DEPTH_JUMP = 0.1

#: ``new_from_old`` of one counter-clockwise quarter turn of the image.
QUARTER_TURN = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
#: Reflections of ``mirror``.
MIRRORS = {"horizontal": np.diag([-1.0, 1.0, 1.0]), "vertical": np.diag([1.0, -1.0, 1.0])}


def conjugate_poses(ref_from_cam: np.ndarray, new_from_old: np.ndarray) -> np.ndarray:
    """Returns ``ref_from_cam`` (T, 4, 4) of the same camera motion in turned (or mirrored) camera
    axes: ``P @ ref_from_cam @ P^-1`` with ``P`` the 4x4 of the orthogonal ``new_from_old`` (3, 3)."""
    P = np.eye(4)
    P[:3, :3] = new_from_old
    return (P @ ref_from_cam.astype(np.float64) @ P.T).astype(np.float32)


def _with_view(momap: MoMap, view: str, **fields) -> MoMap:
    meta = {**momap.meta, "view": [*momap.meta.get("view", []), view]}
    return dataclasses.replace(momap, meta=meta, **fields)


def _check_no_skew(momap: MoMap) -> None:
    if abs(float(momap.K[0, 1])) > 1e-6:
        raise ValueError(f"momap.K: expected no skew (K[0, 1] = 0), got {float(momap.K[0, 1])}")


def roll_quarter_turns(momap: MoMap, k: int) -> MoMap:
    """Returns ``momap`` seen by its camera rolled so the image turns ``k`` x 90 degrees
    counter-clockwise (``k`` any integer; an H x W image becomes W x H for odd ``k``).

    Exact: pixels are permuted (``np.rot90``), ``(x, y, z) -> (y, -x, z)`` per quarter turn, and
    ``K`` becomes ``[[fy, 0, cy], [0, fx, W - 1 - cx], [0, 0, 1]]``.
    """
    _check_no_skew(momap)
    result = momap
    for _ in range(int(k) % 4):
        m = result
        W = m.width
        K = np.array(
            [[m.K[1, 1], 0, m.K[1, 2]], [0, m.K[0, 0], W - 1 - m.K[0, 2]], [0, 0, 1]], dtype=np.float32
        )
        xyz = np.rot90(m.xyz, axes=(1, 2)) @ QUARTER_TURN.T.astype(np.float32)
        result = dataclasses.replace(
            m, xyz=np.ascontiguousarray(xyz, dtype=np.float32), valid=np.rot90(m.valid).copy(),
            visible=np.rot90(m.visible, axes=(1, 2)).copy(), rgb=np.rot90(m.rgb).copy(),
            instance=np.rot90(m.instance).copy(), K=K,
            ref_from_cam=conjugate_poses(m.ref_from_cam, QUARTER_TURN),
        )  # fmt: skip
    return _with_view(result, f"roll {90 * (int(k) % 4)}")


def mirror(momap: MoMap, axis: str = "horizontal") -> MoMap:
    """Returns ``momap`` mirrored: ``"horizontal"`` reverses columns and negates ``x`` (``cx ->
    W - 1 - cx``), ``"vertical"`` reverses rows and negates ``y`` (``cy -> H - 1 - cy``). Exact."""
    if axis not in MIRRORS:
        raise ValueError(f"axis: expected one of {list(MIRRORS)}, got {axis!r}")
    _check_no_skew(momap)
    image_axis = 1 if axis == "horizontal" else 0
    K = momap.K.copy()
    size = momap.width if axis == "horizontal" else momap.height
    K[1 - image_axis, 2] = size - 1 - K[1 - image_axis, 2]
    reflect = MIRRORS[axis].astype(np.float32)
    return _with_view(
        momap, f"mirror {axis}",
        xyz=np.ascontiguousarray(np.flip(momap.xyz, axis=image_axis + 1) * np.diag(reflect)),
        valid=np.flip(momap.valid, axis=image_axis).copy(),
        visible=np.flip(momap.visible, axis=image_axis + 1).copy(),
        rgb=np.flip(momap.rgb, axis=image_axis).copy(),
        instance=np.flip(momap.instance, axis=image_axis).copy(),
        K=K, ref_from_cam=conjugate_poses(momap.ref_from_cam, MIRRORS[axis]),
    )  # fmt: skip


def camera_rotation(roll_deg: float = 0.0, pitch_deg: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    """Returns ``new_from_old`` (3, 3) of a camera turned by ``yaw_deg`` (positive: to the right),
    then ``pitch_deg`` (positive: up) and ``roll_deg`` (positive: the image turns counter-clockwise,
    as in ``roll_quarter_turns``) about its centre."""
    old_from_new = (
        axis_rotation(1, math.radians(yaw_deg))[:3, :3]
        @ axis_rotation(0, math.radians(pitch_deg))[:3, :3]
        @ axis_rotation(2, math.radians(roll_deg))[:3, :3]
    )
    return old_from_new.T


def rotate_camera(momap: MoMap, roll_deg: float = 0.0, pitch_deg: float = 0.0, yaw_deg: float = 0.0) -> MoMap:
    """Returns ``momap`` seen by its camera turned about its centre (``camera_rotation``), same ``K``.

    The image is warped by the rotation's homography ``K R^T K^-1`` (bilinear ``cv2.remap``; pixels
    that see outside the original image are black and invalid); trajectories are resampled by
    ``resample_trajectories`` and rotated into the new camera frame.
    """
    import cv2

    _check_no_skew(momap)
    new_from_old = camera_rotation(roll_deg, pitch_deg, yaw_deg)
    H, W = momap.height, momap.width
    K = momap.K.astype(np.float64)
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    old_rays = rays @ new_from_old  # R^T r for every row r
    with np.errstate(divide="ignore", invalid="ignore"):
        source = np.stack(
            [
                K[0, 0] * old_rays[..., 0] / old_rays[..., 2] + K[0, 2],
                K[1, 1] * old_rays[..., 1] / old_rays[..., 2] + K[1, 2],
            ],
            -1,
        )
    source[old_rays[..., 2] <= 1e-6] = np.nan  # behind the original camera: nothing to see
    xyz, valid, visible, instance = resample_trajectories(
        torch.from_numpy(momap.xyz), torch.from_numpy(momap.valid), torch.from_numpy(momap.visible),
        torch.from_numpy(momap.instance), torch.from_numpy(source), torch.from_numpy(rays),
        torch.from_numpy(new_from_old),
    )  # fmt: skip
    maps = np.nan_to_num(source, nan=-10.0).astype(np.float32)
    rgb = cv2.remap(momap.rgb, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    valid = valid.numpy()
    view = f"rotate roll {roll_deg:g} pitch {pitch_deg:g} yaw {yaw_deg:g}"
    return _with_view(
        momap, view, xyz=xyz.numpy(), valid=valid, visible=visible.numpy(),
        rgb=np.where(valid[..., None], rgb, 0), instance=instance.numpy(),
        ref_from_cam=conjugate_poses(momap.ref_from_cam, new_from_old),
    )  # fmt: skip


# ----------------------------------------------------------------------------- resampling
def _smooth_pixels(xyz0: Tensor, valid: Tensor, instance: Tensor) -> Tensor:
    """Returns (B, H, W) bool: the pixel and its 8 neighbours are valid, of one instance and without
    a depth jump over ``EDGE_DEPTH_JUMP`` (a bilinear lookup near it blends one surface only);
    ``xyz0`` (B, H, W, 3), ``valid`` and ``instance`` (B, H, W)."""
    B, H, W = valid.shape

    def neighbours(image: Tensor) -> Tensor:  # (B, 9, H, W), edges replicated
        padded = F.pad(image[:, None].double(), (1, 1, 1, 1), mode="replicate")
        return F.unfold(padded, 3).view(B, 9, H, W)

    depth = neighbours(xyz0[..., 2])
    same = (neighbours(instance) == instance[:, None].double()).all(1) & (neighbours(valid) > 0.5).all(1)
    jump = (depth.amax(1) - depth.amin(1)) <= EDGE_DEPTH_JUMP * depth.abs().amin(1)
    return valid & same & jump


def resample_trajectories(
    xyz: Tensor,
    valid: Tensor,
    visible: Tensor,
    instance: Tensor,
    source_uv: Tensor,
    rays: Tensor,
    new_from_old: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(xyz (T, H', W', 3), valid (H', W'), visible (T, H', W'), instance (H', W'))``
    resampled at pixel positions ``source_uv`` (H', W', 2) of the original (H, W) image.

    ``rays`` (H', W', 3) are the new pixels' ray directions in the new camera frame and
    ``new_from_old`` (3, 3) the rotation (or reflection) from the original camera frame (None:
    the identity, e.g. a crop). Each new pixel's ``xyz`` at t = 0 lies exactly on its ray, at the
    original distance from the camera interpolated at ``source_uv`` (bilinear where the
    neighbourhood is one smooth surface, else the nearest pixel's); ``x_t - x_0`` is interpolated
    the same way and rotated. Positions outside ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` or NaN
    are invalid (xyz 0). ``xyz`` is (T, H, W, 3) metres, ``valid`` (H, W), ``visible`` (T, H, W),
    ``instance`` (H, W). Results have the dtypes of the inputs (arithmetic in float64).

    Every argument may also carry a leading batch dimension B (``xyz`` (B, T, H, W, 3), ...,
    ``new_from_old`` (B, 3, 3)), each item resampled as it would be alone, in one pass.
    """
    if xyz.dim() == 4:  # one MoMap: a batch of one
        rotation = None if new_from_old is None else new_from_old[None]
        out = resample_trajectories(
            xyz[None], valid[None], visible[None], instance[None], source_uv[None], rays[None], rotation
        )
        return tuple(value[0] for value in out)
    B, T, H, W, _ = xyz.shape
    out_shape = source_uv.shape[1:3]
    work = xyz.double()
    displacement = (work[:, 1:] - work[:, :1]).permute(0, 1, 4, 2, 3).reshape(B, 3 * (T - 1), H, W)
    smooth = _smooth_pixels(work[:, 0], valid, instance)
    features = torch.cat([work[:, 0].permute(0, 3, 1, 2), displacement], 1)  # (B, 3T, H, W)
    labels = torch.cat(
        [valid[:, None].double(), visible.double(), instance[:, None].double(), smooth[:, None].double()], 1
    )
    uv = source_uv.double()
    inside = torch.isfinite(uv).all(-1) & (uv[..., 0] >= -0.5) & (uv[..., 0] < W - 0.5)
    inside &= (uv[..., 1] >= -0.5) & (uv[..., 1] < H - 0.5)
    uv = torch.where(inside[..., None], uv, 0.0)
    grid = torch.stack([2 * uv[..., 0] / max(W - 1, 1) - 1, 2 * uv[..., 1] / max(H - 1, 1) - 1], -1)
    sample = {"padding_mode": "border", "align_corners": True}
    bilinear = F.grid_sample(features, grid, mode="bilinear", **sample)
    nearest = F.grid_sample(torch.cat([features, labels], 1), grid, mode="nearest", **sample)
    near_features, near_labels = nearest[:, : 3 * T], nearest[:, 3 * T :]
    new_valid = inside & (near_labels[:, 0] > 0.5)
    chosen = torch.where(near_labels[:, -1:] > 0.5, bilinear, near_features)  # (B, 3T, H', W')
    chosen = chosen.view(B, T, 3, *out_shape).permute(0, 1, 3, 4, 2)  # x_0, then x_t - x_0 for t >= 1
    if new_from_old is None:
        rotation = torch.eye(3, dtype=torch.float64, device=chosen.device).expand(B, 3, 3)
    else:
        rotation = new_from_old.double().to(chosen.device)
    distance = chosen[:, 0].norm(dim=-1, keepdim=True)  # rotations and reflections keep it
    rays = rays.to(chosen.device).double()
    x0 = distance * rays / rays.norm(dim=-1, keepdim=True)
    moved = chosen[:, 1:] @ rotation.transpose(-1, -2)[:, None, None]
    new_xyz = torch.cat([x0[:, None], x0[:, None] + moved], 1)
    new_xyz = torch.where(new_valid[:, None, ..., None], new_xyz, 0.0).to(xyz.dtype)
    new_visible = (near_labels[:, 1 : 1 + T] > 0.5) & new_valid[:, None]
    new_instance = torch.where(new_valid, near_labels[:, 1 + T].round(), 0).to(instance.dtype)
    return new_xyz, new_valid, new_visible, new_instance


__all__ = [
    "EDGE_DEPTH_JUMP",
    "MIRRORS",
    "QUARTER_TURN",
    "camera_rotation",
    "conjugate_poses",
    "mirror",
    "resample_trajectories",
    "roll_quarter_turns",
    "rotate_camera",
]
