"""The motion DSL as a condition of ``MoMapPipeline`` (paper §3.4.2): checking and planning it.

A DSL pipeline (``"dsl"`` in its conditions) takes ``dsl=`` (a ``momaplib.control.MotionDSL``, its
JSON text or dict, or its pixel form) or ``planner=`` (anything with ``plan(image, instance_map,
prompt, labels=...)``). Whatever comes in is turned into a ``MotionDSL`` and validated against
the scene's instance map and the pipeline's windows before anything is encoded: a DSL that fails
the schema (e.g. a VLM's malformed answer) never reaches the UNet.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import torch

from momaplib.control import DSLValidationError, MotionDSL, window_bounds


def num_dsl_windows(num_frames: int, window: int) -> int:
    """Returns the DSL windows of a T-frame MoMap (``momaplib.control.window_bounds``)."""
    return len(window_bounds(num_frames, window))


def check_dsl_arguments(conditions, dsl, planner) -> None:
    """Raises ``ValueError`` when ``dsl``/``planner`` are given to a pipeline without the ``"dsl"``
    condition, or both at once, and ``TypeError`` for a planner without ``plan``."""
    if "dsl" not in conditions and (dsl is not None or planner is not None):
        name = "dsl" if dsl is not None else "planner"
        raise ValueError(
            f"{name}: this pipeline's UNet does not read a motion DSL (conditions {list(conditions)}); "
            "load a DSL pipeline, e.g. the bundled 'momap-diffusion-dsl'"
        )
    if dsl is not None and planner is not None:
        raise ValueError("dsl / planner: give one of them (the planner writes a DSL), not both")
    if planner is not None and not callable(getattr(planner, "plan", None)):
        raise TypeError(
            f"planner: expected an object with plan(image, instance_map, prompt, labels=...), got "
            f"{type(planner).__name__}"
        )


def as_motion_dsl(dsl, instance: np.ndarray, window: int, num_windows: int) -> MotionDSL:
    """Returns ``dsl`` (``MotionDSL``, JSON text, dict or pixels (3 n, H, W)) as a ``MotionDSL``
    checked against ``instance`` (H, W) and ``num_windows`` windows of ``window`` frames; raises
    ``DSLValidationError`` naming the field."""
    if isinstance(dsl, (str, bytes, bytearray)):
        dsl = MotionDSL.from_json(dsl)
    elif isinstance(dsl, Mapping):
        dsl = MotionDSL.from_dict(dict(dsl))
    elif isinstance(dsl, (np.ndarray, torch.Tensor)):
        pixels = dsl.detach().cpu().numpy() if isinstance(dsl, torch.Tensor) else dsl
        if pixels.ndim != 3 or pixels.shape[0] != 3 * num_windows:
            raise DSLValidationError(
                f"dsl: pixels must be (3 * {num_windows} windows, H, W) = "
                f"{(3 * num_windows, *instance.shape)}, got {pixels.shape}"
            )
        dsl = MotionDSL.from_pixels(pixels, instance, window)
    elif not isinstance(dsl, MotionDSL):
        raise TypeError(
            f"dsl: expected a MotionDSL, its JSON text or dict, or pixels (3 n_windows, H, W), got "
            f"{type(dsl).__name__}"
        )
    if dsl.window != window:
        raise DSLValidationError(f"window: the pipeline's DSL windows are {window} frames, got {dsl.window}")
    return dsl.validate_against(instance, num_windows)


def plan_dsl(pipe, scene: dict, prompts: list[str], args: Mapping) -> MotionDSL | None:
    """Returns the checked ``MotionDSL`` of one scene of ``pipe`` (None: no DSL condition or none
    given). ``scene`` is ``prepare_scene``'s output; a planner gets the prompt, the instance map, the
    labels and, when its ``plan`` takes ``points``, the reference XYZ map."""
    if "dsl" not in pipe.conditions:
        return None
    dsl, planner = args.get("dsl"), args.get("planner")
    if planner is not None:
        if len(set(prompts)) != 1 or not prompts[0]:
            raise ValueError("prompt: a planner needs one non-empty prompt for all samples")
        extra = {}
        if "points" in inspect.signature(planner.plan).parameters:
            extra["points"] = np.where(scene["valid"][..., None], scene["xyz"], np.nan)
        dsl = planner.plan(scene["rgb"], scene["instance"], prompts[0], labels=args.get("labels"), **extra)
    if dsl is None:
        return None
    return as_motion_dsl(dsl, scene["instance"], pipe.config.dsl_window, pipe.dsl_windows)
