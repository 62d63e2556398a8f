"""Checks of ``MoMapPipeline``'s inputs, all made before the condition latents are encoded.

Sampling takes seconds to minutes; every input that would make a call fail after it (or give
silently wrong MoMaps) fails here first, with a message that names the argument and what was
expected. Holes in the geometry are not errors: pixels whose depth/XYZ is 0, NaN, inf or behind
the camera are *invalid*, carried as the ``valid`` mask (``prepare_scene``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch
from torch import Tensor

from momaplib.checks import is_integer
from momaplib.geometry import MAX_MEDIAN_DEPTH, check_depth_scale, depth_to_xyz, valid_depth

#: Largest image side ``MoMapPipeline`` accepts by default (``max_image_size=`` overrides it): the
#: bundled model is trained at 128x128, and memory and time grow with the pixel count (a 2048x2048
#: image takes the 12-channel condition VAE and the UNet far beyond a laptop's memory).
MAX_IMAGE_SIZE = 1024
#: Most instances (distinct ids > 0) an instance map may hold: the grounder compares every instance
#: with every pixel, and a map with thousands of ids is most likely not an instance map (an image,
#: a depth map or a label map passed by mistake).
MAX_INSTANCES = 512
#: Fewest pixels with geometry a scene needs (the normalisation takes their median).
MIN_VALID_PIXELS = 4


def _array(value, name: str) -> np.ndarray:
    value = value.detach().cpu() if isinstance(value, Tensor) else value
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    return array


def _real_array(value, name: str, expected: str) -> np.ndarray:
    array = _array(value, name)
    if np.issubdtype(array.dtype, np.bool_) or np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected {expected}, got dtype {array.dtype}")
    return array


def check_image(image, max_image_size: int = MAX_IMAGE_SIZE) -> np.ndarray:
    """Returns the (H, W, 3) uint8 image; H and W multiples of 8 in [8, ``max_image_size``]."""
    if isinstance(max_image_size, bool) or not isinstance(max_image_size, Integral) or max_image_size < 8:
        raise ValueError(
            f"max_image_size: expected an integer >= 8 (pixels per side), got {max_image_size!r}"
        )
    image = _array(image, "image")
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}"
            + (" (float images in [0, 1]: (image * 255).astype(np.uint8))" if image.dtype.kind == "f" else "")
        )
    H, W = image.shape[:2]
    if not (8 <= H <= max_image_size and 8 <= W <= max_image_size):
        raise ValueError(
            f"image: H and W must be in [8, {max_image_size}] pixels, got {H}x{W}; resize it (the bundled "
            f"model is trained at 128x128) or pass max_image_size= if you have the memory"
        )
    if H % 8 or W % 8:
        raise ValueError(f"image: H and W must be multiples of 8 (latents are 1/8 size), got {H}x{W}")
    return image


def check_intrinsics(K, name: str = "K") -> np.ndarray:
    """Returns K (3, 3) float32; raises unless finite with focal lengths > 0 and last row [0, 0, 1]."""
    K = _real_array(K, name, "(3, 3) intrinsics in pixels").astype(np.float32)
    if K.shape != (3, 3):
        raise ValueError(f"{name}: expected (3, 3) intrinsics in pixels, got {K.shape}")
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise ValueError(
            f"{name}: expected finite (3, 3) intrinsics in pixels with focal lengths > 0 and last row "
            f"[0, 0, 1], got {K.tolist()}"
        )
    return K


def estimate_intrinsics(xyz: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Returns the pinhole K (3, 3) that best maps camera points ``xyz`` (H, W, 3) to their pixels.

    Least squares on ``u = fx x/z + cx`` and ``v = fy y/z + cy`` over valid pixels; used when a
    caller gives an XYZ map without K.
    """
    v, u = np.nonzero(valid)
    x, y, z = (xyz[v, u, i].astype(np.float64) for i in range(3))
    ones = np.ones_like(z)
    fx, cx = np.linalg.lstsq(np.stack([x / z, ones], 1), u.astype(np.float64), rcond=None)[0]
    fy, cy = np.linalg.lstsq(np.stack([y / z, ones], 1), v.astype(np.float64), rcond=None)[0]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)


def _depth_map(depth, shape: tuple[int, int]) -> np.ndarray:
    depth = _real_array(depth, "depth", "(H, W) float z-depth in metres")
    if np.issubdtype(depth.dtype, np.integer):
        raise TypeError(
            f"depth: integer dtype {depth.dtype}; expected float z-depth in metres. A sensor's millimetre "
            "depth: divide by 1000 (depth_mm.astype(np.float32) / 1000)"
        )
    if depth.shape != shape:
        raise ValueError(f"depth: expected {shape} like the image, got {depth.shape}")
    depth = depth.astype(np.float32)
    negative = int(np.sum(np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0) < 0))
    if negative:
        raise ValueError(
            f"depth: {negative} pixels are < 0; expected z-depth in metres along the optical axis "
            "(OpenCV axes, z forward; 0, NaN or inf: no geometry). An OpenGL depth (z backward): pass -depth"
        )
    return depth


def prepare_scene(image, xyz, instance_map, depth, K, max_image_size: int = MAX_IMAGE_SIZE) -> dict:
    """Returns the checked scene: ``rgb`` (H, W, 3) uint8, ``xyz`` (H, W, 3) float32 (0 at invalid
    pixels), ``valid`` (H, W) bool, ``instance`` (H, W) int32, ``K`` (3, 3) and ``num_invalid``.

    Invalid pixels (no geometry: depth or z 0, NaN, inf, xyz behind the camera) are accepted and
    marked in ``valid``; the pipeline gives them no trajectory. Raises ``ValueError``/``TypeError``
    naming the argument for anything else: shapes, dtypes, K, units (a median depth over
    ``MAX_MEDIAN_DEPTH`` m: millimetres), instance ids, too few valid pixels.
    """
    image = check_image(image, max_image_size)
    H, W = image.shape[:2]
    if K is not None:
        K = check_intrinsics(K)
    if xyz is None:
        if depth is None or K is None:
            raise ValueError("xyz: give the (H, W, 3) XYZ map, or depth (H, W) together with K (3, 3)")
        depth = _depth_map(depth, (H, W))
        valid = valid_depth(depth)
        xyz = depth_to_xyz(np.where(valid, depth, np.float32(0)), K)
        name = "depth"
    else:
        xyz = _real_array(xyz, "xyz", "(H, W, 3) float XYZ in metres").astype(np.float32)
        if xyz.shape != (H, W, 3):
            raise ValueError(f"xyz: expected ({H}, {W}, 3) like the image, got {xyz.shape}")
        valid = np.isfinite(xyz).all(-1) & valid_depth(xyz[..., 2])
        name = "xyz"
    if valid.sum() < MIN_VALID_PIXELS:
        raise ValueError(
            f"{name}: {int(valid.sum())} pixels have a finite point with z > 0, fewer than "
            f"{MIN_VALID_PIXELS} (z is the distance along the optical axis, OpenCV axes: z forward)"
        )
    check_depth_scale(xyz[..., 2], valid, name, MAX_MEDIAN_DEPTH)
    instance = check_instance_map(instance_map, (H, W))
    if K is None:
        K = estimate_intrinsics(xyz, valid)
        if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(
                f"xyz: the XYZ map does not fit a pinhole camera with focal lengths > 0 (estimated K "
                f"{K.tolist()}); pass K (3, 3), or check the axes (OpenCV: x right, y down, z forward)"
            )
    xyz = np.where(valid[..., None], xyz, np.float32(0)).astype(np.float32)
    return {
        "rgb": image,
        "xyz": xyz,
        "valid": valid,
        "instance": instance,
        "K": K,
        "num_invalid": int(valid.size - valid.sum()),
    }


def check_instance_map(instance_map, shape: tuple[int, int]) -> np.ndarray:
    """Returns the (H, W) int32 instance ids (0 = background, at most ``MAX_INSTANCES`` ids > 0)."""
    if instance_map is None:
        raise ValueError("instance_map: expected an (H, W) integer instance id map (0 = background)")
    instance = _array(instance_map, "instance_map")
    if instance.shape != shape:
        raise ValueError(f"instance_map: expected {shape} like the image, got {instance.shape}")
    if not np.issubdtype(instance.dtype, np.integer):
        raise TypeError(f"instance_map: expected an integer dtype (instance ids), got {instance.dtype}")
    if instance.min() < 0 or instance.max() > np.iinfo(np.int32).max:
        raise ValueError(
            f"instance_map: ids must be in [0, 2^31) (0 = background), got {instance.min()}..{instance.max()}"
        )
    count = len(np.unique(instance[instance > 0]))
    if count > MAX_INSTANCES:
        raise ValueError(
            f"instance_map: {count} instances (distinct ids > 0), more than {MAX_INSTANCES}; expected "
            "an instance segmentation (one id per object), not an image or a depth map"
        )
    return instance.astype(np.int32)


def _positive_int(value, name: str) -> int:
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def check_sampling_args(
    num_samples,
    batch_size=None,
    generator=None,
    num_inference_steps=None,
    guidance_scale=None,
    num_train_timesteps: int | None = None,
) -> None:
    """Raises ``ValueError``/``TypeError`` naming the first sampling argument out of its range.

    ``num_samples`` and ``batch_size`` (None: all at once) integers >= 1, ``generator`` a
    ``torch.Generator`` or None, ``num_inference_steps`` an integer in [1, ``num_train_timesteps``],
    ``guidance_scale`` a finite number >= 0 (the last two are skipped when None).
    """
    _positive_int(num_samples, "num_samples")
    if batch_size is not None:
        _positive_int(batch_size, "batch_size")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator: expected a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
            f"got {type(generator).__name__}"
        )
    if num_inference_steps is not None:
        steps = _positive_int(num_inference_steps, "num_inference_steps")
        if num_train_timesteps is not None and steps > num_train_timesteps:
            raise ValueError(
                f"num_inference_steps: expected at most the scheduler's {num_train_timesteps} training "
                f"timesteps, got {steps}"
            )
    if guidance_scale is not None and (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, Real)
        or not math.isfinite(guidance_scale)
        or guidance_scale < 0
    ):
        raise ValueError(
            f"guidance_scale: expected a finite number >= 0 (1.0: unguided), got {guidance_scale!r}"
        )


def check_prompts(prompt, num_samples: int) -> tuple[list[str], bool]:
    """Returns ``(prompts, has_text)``: one prompt per sample ("" = no text) and whether any has text."""
    _positive_int(num_samples, "num_samples")
    if prompt is None:
        return [""] * num_samples, False
    if isinstance(prompt, str):
        return [prompt] * num_samples, bool(prompt)
    if isinstance(prompt, bytes) or not isinstance(prompt, Sequence | np.ndarray):
        raise TypeError(
            f"prompt: expected a str, a list of num_samples str, or None, got {type(prompt).__name__}"
        )
    prompts = list(prompt)
    if len(prompts) != num_samples:
        raise ValueError(
            f"prompt: a list of prompts needs one per sample; got {len(prompts)} prompts "
            f"for num_samples={num_samples}"
        )
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompt: expected strings")
    return prompts, any(prompts)
