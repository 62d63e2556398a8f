"""The Motion Map (MoMap) record and its conversions (paper §3.1).

A MoMap anchored at reference frame ``t0`` stores, for every pixel ``(u, v)`` of the reference
image, the 3D trajectory of the surface point seen there: ``xyz[t, v, u]`` is that point's
position at time ``t0 + t`` expressed in the *reference* camera's frame, so camera motion is
removed and only scene motion remains.

Layouts (DESIGN.md):
- record, numpy at rest: ``xyz (T, H, W, 3) float32``, ``valid (H, W) bool``,
  ``visible (T, H, W) bool``, ``rgb (H, W, 3) uint8``, ``instance (H, W) int32`` (0 = background),
  ``K (3, 3)``, ``ref_from_cam (T, 4, 4)``, ``prompt``, ``meta``;
- model layout: channels-first ``(B, 3T, H, W)`` with channel index ``3 * t + c``.

The helpers below are batched torch code that also accept numpy arrays (numpy in, numpy out).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from momaplib.geometry import numpy_io, transform_points
from momaplib.storage import DataFormatError, load_npz, save_npz, unpack_json, unpack_str

#: Default moving threshold as a fraction of the scene scale (DESIGN.md, metrics).
TAU_MOVE = 0.02

MOMAP_KEYS = ("xyz", "valid", "visible", "rgb", "instance", "K", "ref_from_cam", "prompt", "meta")


class MoMapValidationError(ValueError):
    """A MoMap field has the wrong shape, dtype or values; the message names the field."""


@dataclass
class MoMap:
    """A Motion Map: per-pixel 3D trajectories in the reference camera frame, plus context."""

    xyz: np.ndarray  # (T, H, W, 3) float32, metres, reference camera frame
    valid: np.ndarray  # (H, W) bool: the pixel has a trajectory
    visible: np.ndarray  # (T, H, W) bool: observed at t (False = infilled or occluded)
    rgb: np.ndarray  # (H, W, 3) uint8: the reference image
    instance: np.ndarray  # (H, W) int32: instance ids at t0, 0 = background
    K: np.ndarray  # (3, 3) float32: reference camera intrinsics in pixels
    ref_from_cam: np.ndarray  # (T, 4, 4) float32: camera t -> reference camera; [0] is identity
    prompt: str = ""  # text describing the motion ("" when unknown)
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras (t0, fps, source, ...)

    def __post_init__(self) -> None:
        self.validate()

    # -------------------------------------------------------------------- shape
    @property
    def num_frames(self) -> int:
        return self.xyz.shape[0]

    @property
    def height(self) -> int:
        return self.xyz.shape[1]

    @property
    def width(self) -> int:
        return self.xyz.shape[2]

    # -------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Checks every field in place (casting floats to float32); raises ``MoMapValidationError``."""
        self.xyz = _as_float32("xyz", self.xyz, "(T, H, W, 3)")
        if self.xyz.ndim != 4 or self.xyz.shape[-1] != 3 or min(self.xyz.shape) == 0:
            _fail("xyz", "(T, H, W, 3) float32 with T, H, W >= 1", self.xyz)
        T, H, W, _ = self.xyz.shape
        self.valid = _as_bool("valid", self.valid, (H, W), "(H, W)")
        self.visible = _as_bool("visible", self.visible, (T, H, W), "(T, H, W)")
        if np.any(self.visible & ~self.valid[None]):
            raise MoMapValidationError("MoMap.visible: a pixel is marked visible but not valid")
        finite = np.isfinite(self.xyz).all(-1)
        bad = ~finite & self.valid[None]
        if bad.any():
            t, v, u = np.argwhere(bad)[0]
            raise MoMapValidationError(
                f"MoMap.xyz: {int(bad.sum())} non-finite values at valid pixels "
                f"(first at t={t}, v={v}, u={u}); expected finite metres"
            )
        if not finite.all():  # non-finite values at invalid pixels carry no information
            self.xyz = np.where(finite[..., None], self.xyz, np.float32(0))
        self.rgb = np.asarray(self.rgb)
        if self.rgb.shape != (H, W, 3) or self.rgb.dtype != np.uint8:
            _fail("rgb", f"(H, W, 3) = {(H, W, 3)} uint8", self.rgb)
        self.instance = np.asarray(self.instance)
        if self.instance.shape != (H, W) or not np.issubdtype(self.instance.dtype, np.integer):
            _fail("instance", f"(H, W) = {(H, W)} integer ids", self.instance)
        if self.instance.size and self.instance.min() < 0:
            raise MoMapValidationError("MoMap.instance: ids must be >= 0 (0 = background)")
        self.instance = self.instance.astype(np.int32, copy=False)
        self.K = _as_float32("K", self.K, "(3, 3)")
        if self.K.shape != (3, 3) or not np.isfinite(self.K).all():
            _fail("K", "(3, 3) finite float32", self.K)
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0 or not np.allclose(self.K[2], [0, 0, 1]):
            raise MoMapValidationError(
                f"MoMap.K: expected positive focal lengths and last row [0, 0, 1], got {self.K.tolist()}"
            )
        self.ref_from_cam = _as_float32("ref_from_cam", self.ref_from_cam, "(T, 4, 4)")
        if self.ref_from_cam.shape != (T, 4, 4) or not np.isfinite(self.ref_from_cam).all():
            _fail("ref_from_cam", f"(T, 4, 4) = {(T, 4, 4)} finite float32", self.ref_from_cam)
        check_poses("MoMap.ref_from_cam", self.ref_from_cam)
        if not np.allclose(self.ref_from_cam[0], np.eye(4), atol=1e-4):
            raise MoMapValidationError(
                "MoMap.ref_from_cam[0]: the reference camera's pose must be the identity"
            )
        if not isinstance(self.prompt, str):
            raise MoMapValidationError(f"MoMap.prompt: expected str, got {type(self.prompt).__name__}")
        if not isinstance(self.meta, dict):
            raise MoMapValidationError(f"MoMap.meta: expected dict, got {type(self.meta).__name__}")

    # -------------------------------------------------------------------- derived quantities
    @property
    def scene_scale(self) -> float:
        """Returns the scene scale ``s``: the median reference depth of valid pixels (DESIGN.md)."""
        return float(scene_scale(self.xyz[0], self.valid))

    def moving_mask(self, tau_move: float = TAU_MOVE) -> np.ndarray:
        """Returns the (H, W) bool mask of valid pixels that move more than ``tau_move * s``."""
        return moving_mask(self.xyz, self.valid, tau_move=tau_move)

    def channels(self) -> np.ndarray:
        """Returns ``xyz`` in model layout (3T, H, W)."""
        return xyz_to_channels(self.xyz)

    # -------------------------------------------------------------------- storage
    def to_arrays(self) -> dict[str, Any]:
        """Returns the fields as a dict of arrays/strings/dicts, the on-disk npz layout."""
        return {key: getattr(self, key) for key in MOMAP_KEYS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], source: str = "arrays") -> MoMap:
        """Builds a MoMap from an npz-style dict (extra keys are ignored)."""
        missing = [key for key in MOMAP_KEYS if key not in arrays]
        if missing:
            raise DataFormatError(f"{source}: missing MoMap arrays {missing}")
        fields = {key: arrays[key] for key in MOMAP_KEYS}
        if isinstance(fields["prompt"], np.ndarray):
            fields["prompt"] = unpack_str(fields["prompt"])
        if isinstance(fields["meta"], np.ndarray):
            fields["meta"] = unpack_json(fields["meta"])
        return cls(**fields)

    def save(self, path: str | os.PathLike) -> str:
        """Writes the record as a compressed ``.npz`` atomically; returns the file's sha256."""
        try:
            json.dumps(self.meta)
        except TypeError as exc:
            raise MoMapValidationError(f"MoMap.meta: must be JSON-serialisable ({exc})") from exc
        return save_npz(path, self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> MoMap:
        """Reads a MoMap (or a clip file, which is a superset) written by ``save``."""
        arrays = load_npz(path, required=MOMAP_KEYS)
        try:
            return cls.from_arrays(arrays, source=str(path))
        except MoMapValidationError as exc:
            raise MoMapValidationError(f"{Path(path)}: {exc}") from exc


def _fail(name: str, expected: str, value: Any) -> None:
    value = np.asarray(value)
    raise MoMapValidationError(
        f"MoMap.{name}: expected {expected}, got shape {value.shape} dtype {value.dtype}"
    )


def _as_float32(name: str, value: Any, expected: str) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        _fail(name, f"{expected} floating point", array)
    return array.astype(np.float32, copy=False)


def _as_bool(name: str, value: Any, shape: tuple[int, ...], expected: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != np.bool_ or array.shape != shape:
        _fail(name, f"{expected} = {shape} bool", array)
    return array


def check_poses(name: str, poses: np.ndarray, atol: float = 1e-3) -> None:
    """Raises ``MoMapValidationError`` unless ``poses`` (..., 4, 4) are rigid transforms."""
    if not np.allclose(poses[..., 3, :], [0, 0, 0, 1], atol=1e-6):
        raise MoMapValidationError(f"{name}: last row of every pose must be [0, 0, 0, 1]")
    rotation = poses[..., :3, :3].astype(np.float64)
    should_be_eye = rotation @ np.swapaxes(rotation, -1, -2)
    if not np.allclose(should_be_eye, np.eye(3), atol=atol) or np.any(np.linalg.det(rotation) < 0):
        raise MoMapValidationError(f"{name}: the 3x3 blocks must be rotations (orthonormal, det +1)")


# ----------------------------------------------------------------------------- conversions
@numpy_io
def xyz_to_channels(xyz: Tensor) -> Tensor:
    """Returns model layout (..., 3T, H, W) from trajectories (..., T, H, W, 3); channel = 3t + c."""
    *batch, T, H, W, _ = xyz.shape
    return xyz.movedim(-1, -3).reshape(*batch, 3 * T, H, W)


@numpy_io
def channels_to_xyz(channels: Tensor) -> Tensor:
    """Returns trajectories (..., T, H, W, 3) from model layout (..., 3T, H, W).

    The exact inverse of ``xyz_to_channels``.
    """
    *batch, C, H, W = channels.shape
    if C % 3:
        raise ValueError(f"channels: expected 3T channels, got {C}")
    return channels.reshape(*batch, C // 3, 3, H, W).movedim(-3, -1)


@numpy_io
def cam_to_ref(points_cam: Tensor, ref_from_cam: Tensor) -> Tensor:
    """Returns points (T, N, 3) in the reference frame from points (T, N, 3) in camera t's frame."""
    return transform_points(ref_from_cam, points_cam)


@numpy_io
def scene_scale(xyz0: Tensor, valid: Tensor) -> Tensor:
    """Returns the scene scale (...): the median z of valid reference points (..., H, W, 3).

    The median is torch's (the lower of the two middle values for even counts), used everywhere
    in the kit so normalisation and metrics agree.
    """
    depth = torch.where(valid, xyz0[..., 2], torch.nan).flatten(-2)
    if bool((valid.flatten(-2).sum(-1) == 0).any()):
        raise ValueError("scene_scale: a MoMap has no valid pixels")
    return depth.nanmedian(dim=-1).values


@numpy_io
def normalization_stats(xyz0: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(center (..., 3), scale (...))`` of the model-range normalisation.

    ``center`` is the per-axis median of valid reference points, ``scale`` the scene scale.
    """
    points = torch.where(valid[..., None], xyz0, torch.nan).flatten(-3, -2)
    return points.nanmedian(dim=-2).values, scene_scale(xyz0, valid)


@numpy_io
def normalize_xyz(xyz: Tensor, center: Tensor, scale: Tensor) -> Tensor:
    """Returns model-range trajectories ``(xyz - center) / scale`` for xyz (..., T, H, W, 3).

    ``center`` (..., 3) and ``scale`` (...) come from ``normalization_stats``; tabletop and
    egocentric scenes land mostly in [-1, 1] because the scale is the median scene depth.
    """
    center = torch.as_tensor(center, dtype=xyz.dtype, device=xyz.device)
    scale = torch.as_tensor(scale, dtype=xyz.dtype, device=xyz.device)
    return (xyz - center[..., None, None, None, :]) / scale[..., None, None, None, None]


@numpy_io
def denormalize_xyz(xyz_norm: Tensor, center: Tensor, scale: Tensor) -> Tensor:
    """Returns metric trajectories from model-range ones; the exact inverse of ``normalize_xyz``."""
    center = torch.as_tensor(center, dtype=xyz_norm.dtype, device=xyz_norm.device)
    scale = torch.as_tensor(scale, dtype=xyz_norm.dtype, device=xyz_norm.device)
    return xyz_norm * scale[..., None, None, None, None] + center[..., None, None, None, :]


@numpy_io
def moving_mask(
    xyz: Tensor, valid: Tensor, tau_move: float = TAU_MOVE, scale: Tensor | None = None
) -> Tensor:
    """Returns the (..., H, W) mask of valid pixels with ``max_t |x_t - x_0| > tau_move * s``.

    ``xyz`` is (..., T, H, W, 3); ``s`` defaults to the scene scale of ``xyz[..., 0, :, :, :]``.
    """
    if scale is None:
        scale = scene_scale(xyz[..., 0, :, :, :], valid)
    scale = torch.as_tensor(scale, dtype=xyz.dtype, device=xyz.device)
    displacement = (xyz - xyz[..., :1, :, :, :]).norm(dim=-1).amax(dim=-3)
    return valid & (displacement > tau_move * scale[..., None, None])
