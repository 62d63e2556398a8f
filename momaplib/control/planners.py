"""Planners: (reference image, instance map, prompt) -> ``MotionDSL`` (paper §3.4.2).

- ``OraclePlanner``: the DSL of the ground-truth MoMap (``dsl_from_momap``); the upper bound of
  every planner, available only where a GT MoMap exists.
- ``RulePlanner``: a transparent baseline that parses MoMap-Sim's task vocabulary
  (``momaplib.sim.tasks.PROMPTS``), resolves the object words against the instance labels and
  writes the motion the simulator's agent performs for that task, window by window. What it
  assumes is listed in its docstring; it is a baseline, not a language model.
- ``VLMPlanner`` (``momaplib.control.vlm``): a vision-language model prompted in context.

Every planner returns a DSL whose patches are the instances of the given map, with
``num_windows`` windows; a planner that cannot raises ``PlannerError``, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from momaplib.control.dsl import (
    DEFAULT_FPS,
    DEFAULT_WINDOW,
    MotionDSL,
    dsl_from_momap,
    instance_labels,
    window_bounds,
)
from momaplib.control.prompts import ParsedPrompt, PromptError, is_agent, parse_prompt
from momaplib.metrics import TAU_DIR
from momaplib.momap import MoMap


class PlannerError(RuntimeError):
    """A planner could not produce a valid DSL; ``answers`` holds a model's raw answers, if any."""

    def __init__(self, message: str, answers: list[str] | None = None) -> None:
        super().__init__(message)
        self.answers = list(answers or [])


@runtime_checkable
class Planner(Protocol):
    """Anything with ``plan(image, instance_map, prompt, labels=None, momap=None) -> MotionDSL``.

    ``image`` is the reference RGB (H, W, 3) uint8, ``instance_map`` (H, W) integer ids (0 =
    background), ``labels`` ``{id: name}`` of the instances (default: ``momap.meta`` names when a
    MoMap is given), ``momap`` the GT MoMap where one exists (only ``OraclePlanner`` needs it).
    """

    def plan(
        self,
        image: Any,
        instance_map: Any,
        prompt: str,
        labels: Mapping[int, str] | None = None,
        momap: MoMap | None = None,
    ) -> MotionDSL: ...


def _labels(labels: Mapping[int, str] | None, momap: MoMap | None) -> dict[int, str]:
    if labels is not None:
        return {int(k): str(v) for k, v in labels.items()}
    return instance_labels(momap) if momap is not None else {}


@dataclass
class OraclePlanner:
    """The GT DSL of the GT MoMap: what a perfect planner would say (the upper bound)."""

    window: int = DEFAULT_WINDOW  # frames per window
    tau: float = TAU_DIR  # direction threshold, fraction of the scene scale

    def plan(self, image, instance_map, prompt, labels=None, momap=None) -> MotionDSL:
        """Returns ``dsl_from_momap(momap, instance_map, ...)``; image and prompt are not read."""
        if momap is None:
            raise PlannerError(
                "OraclePlanner.plan: needs the GT MoMap (momap=...); it has nothing else to read"
            )
        return dsl_from_momap(
            momap, instance_map, self.window, self.tau, labels=_labels(labels, momap) or None
        )


# ----------------------------------------------------------------------------- the rule planner
#: When the act happens, as fractions of the clip (start, end) per action and phase, with the phase's
#: motion and its length in metres: MoMap-Sim's mean phase durations (``momaplib.sim.tasks``;
#: phases run from clip time ~0.04 to ~0.95). "carry" goes from the target to the destination.
ACT_PHASES: dict[str, tuple[tuple[float, float, str, float], ...]] = {
    "push": ((0.43, 0.75, "direction", 0.09),),
    "lift": ((0.61, 0.95, "up", 0.14),),
    "pick_place": ((0.36, 0.48, "up", 0.08), (0.48, 0.69, "carry", 0.0), (0.69, 0.82, "down", 0.08)),
    "open_drawer": ((0.47, 0.73, "backward", 0.08),),
    "close_drawer": ((0.46, 0.75, "forward", 0.08),),
    "open_lid": ((0.45, 0.74, "up", 0.05), (0.45, 0.74, "forward", 0.04)),
    "close_lid": ((0.45, 0.74, "down", 0.05), (0.45, 0.74, "backward", 0.04)),
}
#: Median reference depth of MoMap-Sim scenes (metres), the threshold's scale when no geometry is given.
NOMINAL_SCENE_SCALE = 0.45


@dataclass
class TableFrame:
    """The table's axes as unit vectors (3,) in the reference camera frame."""

    right: np.ndarray  # along the table, the camera's x projected on it
    forward: np.ndarray  # along the table, away from the camera
    up: np.ndarray  # the table's normal, towards the camera's side
    fitted: bool  # False: the camera axes themselves (no geometry, or no plane found)

    def vector(self, word: str) -> np.ndarray:
        """Returns the unit vector of a direction word (left/right/forward/backward/up/down)."""
        sign = -1.0 if word in ("left", "backward", "down") else 1.0
        axis = {"left": "right", "backward": "forward", "down": "up"}.get(word, word)
        return sign * getattr(self, axis)


def camera_frame() -> TableFrame:
    """Returns the table frame of a level camera: right = +x, forward = +z, up = -y."""
    return TableFrame(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([0, -1.0, 0]), fitted=False)


def fit_table_frame(points: np.ndarray, mask: np.ndarray, seed: int = 0, iterations: int = 200) -> TableFrame:
    """Returns the table frame of the dominant plane of ``points`` (H, W, 3) at ``mask`` (H, W).

    RANSAC (fixed ``seed``) with an inlier distance of 1 % of the median depth, refined by least
    squares on the inliers; the normal points to the camera's side. Falls back to ``camera_frame``
    when fewer than 30 points are given or no plane holds a fifth of them.
    """
    candidates = points[mask & np.isfinite(points).all(-1)].astype(np.float64)
    if len(candidates) < 30:
        return camera_frame()
    rng = np.random.default_rng(seed)
    if len(candidates) > 4000:
        candidates = candidates[rng.choice(len(candidates), 4000, replace=False)]
    tolerance = 0.01 * float(np.median(candidates[:, 2]))
    best, best_count = None, 0
    for _ in range(iterations):
        a, b, c = candidates[rng.choice(len(candidates), 3, replace=False)]
        normal = np.cross(b - a, c - a)
        if np.linalg.norm(normal) < 1e-12:
            continue
        normal /= np.linalg.norm(normal)
        inliers = np.abs((candidates - a) @ normal) < tolerance
        if inliers.sum() > best_count:
            best, best_count = inliers, int(inliers.sum())
    if best is None or best_count < 0.2 * len(candidates):
        return camera_frame()
    inlier_points = candidates[best]
    centre = inlier_points.mean(0)
    normal = np.linalg.svd(inlier_points - centre, full_matrices=False)[2][-1]
    up = normal if normal @ centre < 0 else -normal  # the camera (origin) is above the table
    forward = np.array([0, 0, 1.0]) - up[2] * up
    if np.linalg.norm(forward) < 1e-6:  # looking straight down: "forward" is image-up on the table
        forward = np.array([0, -1.0, 0]) - up[1] * up
    forward /= np.linalg.norm(forward)
    return TableFrame(np.cross(forward, up), forward, up, fitted=True)


def _min_jerk(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10 - 15 * u + 6 * u**2)


@dataclass
class RulePlanner:
    """Rules over MoMap-Sim's task vocabulary: the transparent baseline planner.

    What it assumes (and where it is wrong):

    - the prompt uses the simulator's task words (``momaplib.sim.tasks.PROMPTS``: push / slide /
      move / nudge + a direction, lift / pick up / raise, pick up and put in / next to / beside,
      open / close a drawer or lid) and names objects by colour and shape words that appear in the
      instance labels ("red block"; "cube", "mug", "sphere" and "tin" count as block, cup, ball,
      can; "the red one" works when one label is red). Anything else raises ``PlannerError``;
    - the target moves only during the act, at the clip times of ``ACT_PHASES`` (the simulator's
      mean phase timing); real videos have no such schedule. Lengths are the simulator's typical
      ones; a window is flagged where the planned displacement passes ``tau`` x the scene scale;
    - directions are on the table: with reference geometry (``points`` (H, W, 3) in the reference
      camera frame, or ``momap.xyz[0]``; only the reference frame is read) the table plane is
      fitted to the background and "forward" / "up" are the table's, so a push away from a tilted
      camera is ``forward`` and ``up``. Without geometry, the camera axes are used;
    - drawers open towards the camera and lids swing up and back, as the simulator builds them;
    - the agent (a label whose shape word is "gripper" or "hand") moves with the target while it
      acts on it; its approach and retreat are not modelled, and every other patch stays.
    """

    num_frames: int = 32  # frames T of the MoMap to plan (the UNet's T)
    window: int = DEFAULT_WINDOW  # frames per window
    fps: float = DEFAULT_FPS  # written into the DSL
    tau: float = TAU_DIR  # direction threshold, fraction of the scene scale

    def parse(self, prompt: str, labels: Mapping[int, str], instance_map: Any = None) -> ParsedPrompt:
        """Returns the action, target and destination ids and direction of a prompt."""
        return parse_prompt(prompt, labels, instance_map)

    def plan(self, image, instance_map, prompt, labels=None, momap=None, points=None) -> MotionDSL:
        """Returns the DSL of the task ``prompt`` names, for every instance of ``instance_map``."""
        instance_map = np.asarray(instance_map)
        labels = _labels(labels, momap)
        ids = sorted(int(i) for i in np.unique(instance_map[instance_map > 0]))
        if not ids:
            raise PlannerError("RulePlanner: the instance map has no instance (ids > 0)")
        unnamed = [i for i in ids if i not in labels]
        if unnamed:
            raise PlannerError(
                f"RulePlanner: instance id(s) {unnamed} have no label; pass labels={{id: name}}"
            )
        try:
            parsed = self.parse(prompt, {i: labels[i] for i in ids}, instance_map)
        except PromptError as error:
            raise PlannerError(f"RulePlanner: {error}") from error
        valid = instance_map >= 0
        if points is None and momap is not None:
            points, valid = momap.xyz[0], momap.valid
        frame, scale = camera_frame(), NOMINAL_SCENE_SCALE
        if points is not None:
            points = np.asarray(points, dtype=np.float64)
            if points.shape != (*instance_map.shape, 3):
                raise PlannerError(
                    f"RulePlanner: points must be (H, W, 3) = {(*instance_map.shape, 3)}, got {points.shape}"
                )
            frame = fit_table_frame(points, valid & (instance_map == 0))
            depth = points[..., 2][valid & np.isfinite(points[..., 2])]
            scale = float(np.median(depth)) if depth.size else scale
        bounds = np.array(window_bounds(self.num_frames, self.window), dtype=np.float64) / (
            self.num_frames - 1
        )
        target_steps = self._target_steps(parsed, frame, bounds, instance_map, points)  # (n, 3) metres
        target_flags = (np.sign(target_steps) * (np.abs(target_steps) > self.tau * scale)).astype(np.int8)
        flags = np.zeros((len(ids), len(bounds), 3), np.int8)
        for k, patch_id in enumerate(ids):
            if patch_id == parsed.target_id or is_agent(labels[patch_id]):
                flags[k] = target_flags
        return MotionDSL.from_flags(ids, [labels[i] for i in ids], flags, self.window, self.fps)

    def _target_steps(self, parsed, frame, bounds, instance_map, points) -> np.ndarray:
        """Returns the planned displacement (n_windows, 3) of the target in each window, metres."""
        steps = np.zeros((len(bounds), 3))
        for start, end, motion, length in ACT_PHASES[parsed.action]:
            if motion == "direction":
                vector = frame.vector(parsed.direction) * length
            elif motion == "carry":
                vector = self._carry(parsed, frame, instance_map, points)
            else:
                vector = frame.vector(motion) * length
            progress = _min_jerk((bounds - start) / (end - start))  # (n, 2)
            steps += (progress[:, 1] - progress[:, 0])[:, None] * vector
        return steps

    def _carry(self, parsed, frame, instance_map, points) -> np.ndarray:
        """Returns the table-plane vector from the target to where it is put (metres)."""
        masks = [instance_map == parsed.target_id, instance_map == parsed.destination_id]
        if points is not None and frame.fitted:
            target, destination = (np.nanmean(points[m], 0) for m in masks)
            offset = destination - target
            offset -= (offset @ frame.up) * frame.up
            distance = float(np.linalg.norm(offset))
            if parsed.relation == "next_to":  # ends beside the destination, not on it
                distance = max(distance - 0.06, 0.5 * distance)
            return offset / max(float(np.linalg.norm(offset)), 1e-9) * distance
        # no geometry: image offset, lower in the image = nearer the camera
        (v0, u0), (v1, u1) = (np.argwhere(m).mean(0) for m in masks)
        offset = frame.right * (u1 - u0) - frame.forward * (v1 - v0)
        norm = float(np.linalg.norm(offset))
        return offset / norm * 0.15 if norm > 0 else np.zeros(3)


__all__ = [
    "ACT_PHASES",
    "NOMINAL_SCENE_SCALE",
    "OraclePlanner",
    "Planner",
    "PlannerError",
    "RulePlanner",
    "TableFrame",
    "camera_frame",
    "fit_table_frame",
]
