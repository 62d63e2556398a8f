"""The motion DSL (paper §3.4.2): per patch and time window, directional flags as JSON and as pixels.

A *patch* is an instance of the reference frame's instance map (id > 0). For every patch and every
window of ``window`` frames, the displacement of the patch centroid over the window is quantised
per axis into one of three words:

=====  ==========  =======  ===========  ==========================================
axis   flag -1     flag 0   flag +1      meaning (reference camera, OpenCV axes)
=====  ==========  =======  ===========  ==========================================
x      ``left``    ``stay``  ``right``    image left / right
y      ``up``      ``stay``  ``down``     image up (-y) / down (+y); not the world's up
z      ``backward`` ``stay`` ``forward``  towards the camera (-z) / away from it (+z)
=====  ==========  =======  ===========  ==========================================

Three axes x three flags are the paper's nine directional flags. The axes are the reference
camera's, so a camera tilted down at a table sees an object lifted straight up move ``up`` and
``backward``, and an object pushed away on the table move ``forward`` and ``up``.

Windows: boundaries at frames ``0, window, 2 window, ...`` and a last boundary at ``T - 1``, so the
windows cover the whole clip (``window_bounds``). When ``T - 1`` is a multiple of ``window`` these
are exactly the windows of the ``quantize_acc_dT`` metric; otherwise the DSL adds a last, shorter
window that the metric leaves out, so that motion at the end of a clip can be controlled too. The
quantiser is the metric's (``momaplib.metrics.quantize_displacements``): a component counts when
its magnitude exceeds ``tau * s``, ``s`` the scene scale (median reference depth of valid pixels).

Forms (DESIGN.md, "Motion DSL"):

- JSON, what a VLM reads and writes (``MotionDSL.to_json`` / ``MotionDSL.from_json``, validated
  against ``DSL_SCHEMA``)::

    {"fps": 10.0, "window": 8, "patches": [{"id": 3, "label": "red block",
     "motion": [["stay", "stay", "stay"], ["left", "stay", "stay"], ...]}]}

- pixels, what a UNet reads (``MotionDSL.to_pixels`` / ``MotionDSL.from_pixels``): float32
  ``(3 * n_windows, H, W)`` in {-1, 0, 1}, channel ``3 * w + axis`` (the model layout's ``3t + c``),
  each patch's flags painted over its pixels, 0 elsewhere.

Every malformed input raises ``DSLValidationError`` naming the field, e.g.
``patches[2].motion[1][0]: expected one of left/stay/right, got 'lft'``; nothing is defaulted.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from momaplib.checks import is_integer
from momaplib.control.schema import AXES, AXIS_WORDS, DSL_SCHEMA, describe_error
from momaplib.metrics import TAU_DIR, quantize_displacements
from momaplib.momap import MoMap

#: Default frames per window: 4 windows for the kit's T = 32 clips.
DEFAULT_WINDOW = 8
#: Frame rate written into a DSL when the MoMap does not say (``meta["fps"]``): the kit's playback rate.
DEFAULT_FPS = 10.0

Flags = np.ndarray  # int8 (P, n_windows, 3) in {-1, 0, +1}


class DSLValidationError(ValueError):
    """A motion DSL (JSON, pixels or fields) is malformed; the message names the field."""


@dataclass
class PatchMotion:
    """One patch of the DSL: an instance id, what it is and its word triple per window."""

    id: int  # instance id in the reference frame's instance map (> 0)
    label: str  # what the patch is, e.g. "red block" (instance names of MoMap-Sim)
    motion: list[tuple[str, str, str]]  # [n_windows] of (x word, y word, z word)


@dataclass
class MotionDSL:
    """Directional flags per patch and window (paper §3.4.2); validated on construction."""

    fps: float  # frames per second of the clip (informational; > 0)
    window: int  # frames per window (>= 1); see ``window_bounds``
    patches: list[PatchMotion]  # at least one; ids unique, in any order

    def __post_init__(self) -> None:
        self.fps, self.window, self.patches = _validated(self.to_dict())

    # -------------------------------------------------------------------- shape and flags
    @property
    def num_windows(self) -> int:
        return len(self.patches[0].motion)

    @property
    def ids(self) -> list[int]:
        return [patch.id for patch in self.patches]

    @property
    def labels(self) -> dict[int, str]:
        """Returns ``{id: label}``."""
        return {patch.id: patch.label for patch in self.patches}

    def patch(self, patch_id: int) -> PatchMotion:
        """Returns the patch with ``patch_id``; raises ``KeyError`` naming the ids there are."""
        for patch in self.patches:
            if patch.id == patch_id:
                return patch
        raise KeyError(f"MotionDSL: no patch with id {patch_id}; ids are {self.ids}")

    def flags(self) -> Flags:
        """Returns int8 flags (P, n_windows, 3) in {-1, 0, +1}, patches in ``self.patches`` order."""
        lookup = [{word: i - 1 for i, word in enumerate(words)} for words in AXIS_WORDS]
        return np.array(
            [[[lookup[a][word] for a, word in enumerate(step)] for step in p.motion] for p in self.patches],
            dtype=np.int8,
        ).reshape(len(self.patches), -1, 3)

    @classmethod
    def from_flags(
        cls, ids: Sequence[int], labels: Sequence[str], flags: Any, window: int, fps: float = DEFAULT_FPS
    ) -> MotionDSL:
        """Returns the DSL of flags (P, n_windows, 3) in {-1, 0, +1} for patches ``ids`` / ``labels``."""
        flags = np.asarray(flags)
        if flags.ndim != 3 or flags.shape[0] != len(ids) or flags.shape[2] != 3 or len(labels) != len(ids):
            raise DSLValidationError(
                f"flags: expected (P, n_windows, 3) with P = {len(ids)} ids and labels, got {flags.shape} "
                f"and {len(labels)} labels"
            )
        if not np.isin(flags, (-1, 0, 1)).all():
            raise DSLValidationError(
                f"flags: expected values in {{-1, 0, 1}}, got {np.unique(flags).tolist()}"
            )
        patches = [
            PatchMotion(
                int(i),
                str(label),
                [tuple(AXIS_WORDS[a][int(f) + 1] for a, f in enumerate(step)) for step in row],
            )
            for i, label, row in zip(ids, labels, flags, strict=True)
        ]
        return cls(fps=fps, window=window, patches=patches)

    # -------------------------------------------------------------------- JSON
    @staticmethod
    def json_schema() -> dict[str, Any]:
        """Returns the JSON Schema (draft 2020-12) of the JSON form (``DSL_SCHEMA``)."""
        return DSL_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form as plain Python objects."""
        if not isinstance(self.patches, (list, tuple)):
            raise DSLValidationError(
                f"patches: expected a list of PatchMotion, got {type(self.patches).__name__}"
            )
        patches = []
        for i, p in enumerate(self.patches):
            if not isinstance(p, PatchMotion):
                raise DSLValidationError(f"patches[{i}]: expected a PatchMotion, got {type(p).__name__}")
            motion = [list(step) if isinstance(step, tuple) else step for step in p.motion]
            patches.append({"id": _plain(p.id), "label": p.label, "motion": motion})
        return {"fps": _plain(self.fps), "window": _plain(self.window), "patches": patches}

    def to_json(self, indent: int | None = None) -> str:
        """Returns the JSON text (one line unless ``indent``); ``from_json`` reads it back exactly."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> MotionDSL:
        """Returns the DSL of a parsed JSON object; raises ``DSLValidationError`` naming the field."""
        return cls(*_validated(data))

    @classmethod
    def from_json(cls, text: str | bytes) -> MotionDSL:
        """Returns the DSL of JSON text; raises ``DSLValidationError`` on malformed JSON (with its
        line and column), NaN/Infinity, or any schema violation (naming the field)."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise DSLValidationError(f"DSL JSON: expected text, got {type(text).__name__}")

        def refuse_constant(name: str) -> None:
            raise DSLValidationError(f"DSL JSON: {name} is not JSON; expected finite numbers")

        try:
            data = json.loads(text, parse_constant=refuse_constant)
        except json.JSONDecodeError as error:
            raise DSLValidationError(
                f"DSL JSON: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
            ) from error
        except UnicodeDecodeError as error:
            raise DSLValidationError(f"DSL JSON: not UTF-8 text ({error})") from error
        return cls.from_dict(data)

    # -------------------------------------------------------------------- instance maps and pixels
    def validate_against(
        self, instance_map: Any, num_windows: int | None = None, complete: bool = False
    ) -> MotionDSL:
        """Returns ``self`` after checking it against an instance map (H, W) of integer ids.

        Raises ``DSLValidationError`` when a patch id is not in the map (``patches[i].id``), when
        ``num_windows`` is given and differs, or, with ``complete``, when an instance of the map
        has no patch.
        """
        instance_map = _instance_map(instance_map)
        present = set(np.unique(instance_map[instance_map > 0]).tolist())
        for i, patch in enumerate(self.patches):
            if patch.id not in present:
                raise DSLValidationError(
                    f"patches[{i}].id: unknown patch id {patch.id} ({patch.label!r}); the instance map "
                    f"holds ids {sorted(present)}"
                )
        if num_windows is not None and self.num_windows != num_windows:
            raise DSLValidationError(
                f"patches[0].motion: expected {num_windows} windows, got {self.num_windows}"
            )
        missing = sorted(present - set(self.ids))
        if complete and missing:
            raise DSLValidationError(f"patches: no patch for instance id(s) {missing} of the instance map")
        return self

    def to_pixels(self, instance_map: Any) -> np.ndarray:
        """Returns float32 (3 * n_windows, H, W) in {-1, 0, 1}: flags painted on each patch.

        Channel ``3 * w + axis``; pixels of the background and of instances without a patch are 0.
        Raises ``DSLValidationError`` when a patch id is not in ``instance_map`` (H, W).
        """
        instance_map = _instance_map(instance_map)
        self.validate_against(instance_map)
        lookup = np.zeros((max(int(instance_map.max()), *self.ids) + 1, 3 * self.num_windows), np.float32)
        lookup[self.ids] = self.flags().reshape(len(self.patches), -1)
        return np.ascontiguousarray(lookup[instance_map].transpose(2, 0, 1))

    @classmethod
    def from_pixels(
        cls,
        pixels: Any,
        instance_map: Any,
        window: int,
        fps: float = DEFAULT_FPS,
        labels: Mapping[int, str] | None = None,
    ) -> MotionDSL:
        """Returns the DSL of a pixel form (3 * n_windows, H, W) over ``instance_map`` (H, W).

        Every instance id > 0 of the map becomes a patch; each flag is the majority vote of the
        patch's pixels after rounding to {-1, 0, 1} (ties go to 0, then -1). Values must be finite
        and within [-1, 1]. ``labels`` ({id: label}) names the patches, else "patch <id>". The
        round trip ``from_pixels(dsl.to_pixels(m), m, ...)`` is exact for every patch with a pixel.
        """
        instance_map = _instance_map(instance_map)
        pixels = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        if pixels.ndim != 3 or pixels.shape[0] % 3 or pixels.shape[0] == 0:
            raise DSLValidationError(f"pixels: expected (3 * n_windows, H, W), got shape {pixels.shape}")
        if pixels.shape[1:] != instance_map.shape:
            raise DSLValidationError(
                f"pixels: expected (H, W) = {instance_map.shape} like the instance map, "
                f"got {pixels.shape[1:]}"
            )
        if not np.issubdtype(pixels.dtype, np.number) or np.issubdtype(pixels.dtype, np.complexfloating):
            raise DSLValidationError(f"pixels: expected real numbers, got dtype {pixels.dtype}")
        pixels = pixels.astype(np.float32)
        if not np.isfinite(pixels).all():
            channel = int(np.argwhere(~np.isfinite(pixels))[0, 0])
            raise DSLValidationError(f"pixels[{channel}]: non-finite values; expected flags in [-1, 1]")
        if np.abs(pixels).max(initial=0.0) > 1:
            channel = int(np.argwhere(np.abs(pixels) > 1)[0, 0])
            raise DSLValidationError(
                f"pixels[{channel}]: values up to {float(np.abs(pixels[channel]).max()):.3g}; "
                "expected flags in [-1, 1]"
            )
        ids = np.unique(instance_map[instance_map > 0])
        if ids.size == 0:
            raise DSLValidationError("instance_map: no instance id > 0, so the DSL would have no patch")
        rounded = np.rint(pixels).astype(np.int8)
        flags = np.zeros((len(ids), pixels.shape[0]), np.int8)
        order = np.array([0, -1, 1], np.int8)  # vote order: ties go to the first
        for k, patch_id in enumerate(ids):
            votes = rounded[:, instance_map == patch_id]  # (C, n)
            counts = np.stack([(votes == value).sum(1) for value in order], 1)  # (C, 3)
            flags[k] = order[counts.argmax(1)]
        labels = dict(labels or {})
        names = [labels.get(int(i), f"patch {int(i)}") for i in ids]
        return cls.from_flags(ids.tolist(), names, flags.reshape(len(ids), -1, 3), window, fps)


# ----------------------------------------------------------------------------- checks
def _plain(value: Any) -> Any:
    """Returns numpy scalars as Python numbers (JSON Schema knows only the latter)."""
    return value.item() if isinstance(value, np.generic) else value


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(DSL_SCHEMA)


def _validated(data: Any) -> tuple[float, int, list[PatchMotion]]:
    """Returns ``(fps, window, patches)`` of a JSON-like object after the schema and cross-field checks."""
    errors = sorted(
        _validator().iter_errors(data),
        key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.absolute_path],
    )
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise DSLValidationError(describe_error(errors[0]) + more)
    patches, seen = [], {}
    for i, patch in enumerate(data["patches"]):
        if patch["id"] in seen:
            raise DSLValidationError(
                f"patches[{i}].id: duplicate id {patch['id']} (also patches[{seen[patch['id']]}])"
            )
        seen[patch["id"]] = i
        if len(patch["motion"]) != len(data["patches"][0]["motion"]):
            raise DSLValidationError(
                f"patches[{i}].motion: expected {len(data['patches'][0]['motion'])} windows like "
                f"patches[0], got {len(patch['motion'])}"
            )
        motion = [tuple(step) for step in patch["motion"]]
        patches.append(PatchMotion(int(patch["id"]), patch["label"], motion))
    return float(data["fps"]), int(data["window"]), patches


def _instance_map(instance_map: Any) -> np.ndarray:
    """Returns an (H, W) int64 instance map; raises ``DSLValidationError`` on other shapes or dtypes."""
    if isinstance(instance_map, torch.Tensor):
        instance_map = instance_map.detach().cpu().numpy()
    instance_map = np.asarray(instance_map)
    if instance_map.ndim != 2 or not np.issubdtype(instance_map.dtype, np.integer) or instance_map.size == 0:
        raise DSLValidationError(
            f"instance_map: expected (H, W) integer ids, got shape {instance_map.shape} "
            f"dtype {instance_map.dtype}"
        )
    if instance_map.min() < 0:
        raise DSLValidationError("instance_map: ids must be >= 0 (0 = background)")
    return instance_map.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- from MoMaps
def window_bounds(num_frames: int, window: int) -> list[tuple[int, int]]:
    """Returns ``[(start, end)]`` frames of each window: starts ``0, window, ...``, the last ending at
    ``num_frames - 1`` (shorter when ``num_frames - 1`` is not a multiple of ``window``)."""
    if not is_integer(window) or window < 1:
        raise DSLValidationError(f"window: expected an integer >= 1 frames, got {window!r}")
    if not is_integer(num_frames) or num_frames < 2:
        raise DSLValidationError(f"num_frames: expected >= 2 frames (a window needs two), got {num_frames!r}")
    starts = list(range(0, num_frames - 1, window))
    return [(start, min(start + window, num_frames - 1)) for start in starts]


def window_frames(num_windows: int, window: int, num_frames: int | None = None) -> list[tuple[int, int]]:
    """Returns the ``(start, end)`` frames of ``num_windows`` windows: ``window_bounds`` when the
    clip's ``num_frames`` are known, else full windows of ``window`` frames (for labels)."""
    if num_frames:
        return window_bounds(num_frames, window)
    return [(w * window, (w + 1) * window) for w in range(num_windows)]


def instance_labels(momap: MoMap) -> dict[int, str]:
    """Returns ``{id: name}`` from ``momap.meta["instances"]`` (MoMap-Sim's names), else ``{}``.

    Only the names are read: the simulator's ``role`` (which instance is the target) is privileged
    information that no planner may see.
    """
    info = momap.meta.get("instances", {}) if isinstance(momap.meta, dict) else {}
    return {int(k): str(v["name"]) for k, v in info.items() if isinstance(v, dict) and "name" in v}


def patch_centroids(xyz: Any, valid: Any, instance_map: Any) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(ids (P,), centroids (T, P, 3))``: mean position of each instance's valid pixels.

    ``xyz`` is (T, H, W, 3); patches are the ids > 0 of ``instance_map`` (H, W) with a valid pixel.
    """
    xyz = torch.as_tensor(np.asarray(xyz), dtype=torch.float64)
    T, H, W, _ = xyz.shape
    ids_map = torch.from_numpy(_instance_map(instance_map))
    if ids_map.shape != (H, W):
        raise DSLValidationError(
            f"instance_map: expected (H, W) = {(H, W)} like the MoMap, got {tuple(ids_map.shape)}"
        )
    ids_map = torch.where(torch.as_tensor(np.asarray(valid)), ids_map, 0).flatten()
    ids = torch.unique(ids_map[ids_map > 0])
    membership = (ids_map[None] == ids[:, None]).double()  # (P, H*W)
    weights = membership / membership.sum(1, keepdim=True)
    return ids.numpy(), (weights @ xyz.reshape(T, H * W, 3)).numpy()


def dsl_from_momap(
    momap: MoMap,
    instance_map: Any = None,
    window: int = DEFAULT_WINDOW,
    tau: float = TAU_DIR,
    fps: float | None = None,
    labels: Mapping[int, str] | None = None,
) -> MotionDSL:
    """Returns the DSL of a MoMap (GT or generated): patch centroid motion per window, quantised.

    Patches are the ids > 0 of ``instance_map`` (default ``momap.instance``) with a valid pixel; a
    centroid is the mean of the patch's valid pixels. Over each window of ``window_bounds`` the
    centroid displacement is quantised per axis with threshold ``tau * s`` (``s`` =
    ``momap.scene_scale``) by the metrics' ``quantize_displacements``. Labels come from ``labels``,
    else ``momap.meta["instances"]`` names, else "patch <id>"; ``fps`` from the argument, else
    ``momap.meta["fps"]``, else ``DEFAULT_FPS``.
    """
    if not isinstance(momap, MoMap):
        raise DSLValidationError(f"momap: expected a MoMap, got {type(momap).__name__}")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau >= 0):
        raise DSLValidationError(
            f"tau: expected a finite threshold >= 0 (fraction of the scene scale), got {tau!r}"
        )
    bounds = np.array(window_bounds(momap.num_frames, window))  # (n_windows, 2)
    instance_map = momap.instance if instance_map is None else instance_map
    frames = np.append(bounds[:, 0], bounds[-1, 1])  # only the boundary frames are read
    ids, centroids = patch_centroids(momap.xyz[frames], momap.valid, instance_map)
    if ids.size == 0:
        raise DSLValidationError(
            "instance_map: no instance id > 0 at a valid pixel, so the DSL would have no patch"
        )
    scale = momap.scene_scale
    # the boundary frames as a curve: window w is the step from boundary w to w + 1
    curve = torch.from_numpy(centroids / scale)  # (n + 1, P, 3)
    flags = quantize_displacements(curve.permute(1, 0, 2), 1, tau).numpy()  # (P, n, 3)
    names = {**instance_labels(momap), **dict(labels or {})}
    fps = fps if fps is not None else momap.meta.get("fps", DEFAULT_FPS)
    return MotionDSL.from_flags(
        ids.tolist(), [names.get(int(i), f"patch {int(i)}") for i in ids], flags, window, fps
    )


# ----------------------------------------------------------------------------- scoring
def dsl_accuracy(pred: MotionDSL, gt: MotionDSL) -> dict[str, float]:
    """Returns flag agreement of ``pred`` with ``gt``, patches matched by id.

    Keys: ``accuracy`` (mean over patch, window and axis), ``x``, ``y``, ``z`` (per axis),
    ``moving_accuracy`` (over the GT patches with a non-``stay`` flag; NaN when none moves),
    ``num_patches`` and ``num_windows``. Raises ``DSLValidationError`` when the patch ids, the
    window length or the number of windows differ.
    """
    for name, dsl in (("pred", pred), ("gt", gt)):
        if not isinstance(dsl, MotionDSL):
            raise DSLValidationError(f"{name}: expected a MotionDSL, got {type(dsl).__name__}")
    if sorted(pred.ids) != sorted(gt.ids):
        raise DSLValidationError(
            f"pred.patches: ids {sorted(pred.ids)} do not match the GT's {sorted(gt.ids)} "
            f"(missing {sorted(set(gt.ids) - set(pred.ids))}, extra {sorted(set(pred.ids) - set(gt.ids))})"
        )
    if (pred.window, pred.num_windows) != (gt.window, gt.num_windows):
        raise DSLValidationError(
            f"pred.window: {pred.num_windows} windows of {pred.window} frames, the GT has "
            f"{gt.num_windows} of {gt.window}"
        )
    order = [pred.ids.index(i) for i in gt.ids]
    gt_flags = gt.flags()
    agree = pred.flags()[order] == gt_flags  # (P, n, 3)
    moving = (gt_flags != 0).any((1, 2))
    result = {"accuracy": float(agree.mean())}
    result.update({axis: float(agree[..., a].mean()) for a, axis in enumerate(AXES)})
    result["moving_accuracy"] = float(agree[moving].mean()) if moving.any() else math.nan
    result["num_patches"] = float(len(gt.ids))
    result["num_windows"] = float(gt.num_windows)
    return result
