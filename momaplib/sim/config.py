"""Configuration of MoMap-Sim clips (one dataclass; it drives notebooks and the command line)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from momaplib.sim.clip import ACTIONS


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one MoMap-Sim clip; a clip is a function of (config, seed)."""

    family: Literal["tabletop", "egocentric"] = "tabletop"
    """Scene family: static camera over a table with a gripper (BRIDGE-like) or a hand-held
    moving camera with a hand (HOI4D-like)."""
    height: int = 128
    """Image height in pixels."""
    width: int = 128
    """Image width in pixels."""
    num_frames: int = 32
    """Number of frames T of the clip and of its MoMap (t0 = 0)."""
    fov_deg: float = 60.0
    """Horizontal field of view of the camera in degrees."""
    min_objects: int = 2
    """Fewest objects on the table."""
    max_objects: int = 5
    """Most objects on the table."""
    actions: tuple[str, ...] = ACTIONS
    """Task types to draw from (see ``momaplib.sim.ACTIONS``)."""
    device: str = "cpu"
    """Torch device for ray casting ("cpu" or "cuda")."""
    task_variant: int = 0
    """0: the task drawn with the scene. ``v`` > 0: the same scene as variant 0 of the seed (objects,
    agent at rest, camera path, background) with another push, lift or pick-and-place task
    drawn from ``(seed, v)``, on another target object wherever the scene has one (a scene
    with no small object keeps its task). Variants are counterfactual pairs for training: the
    reference images agree up to the agent's yaw, so mostly the prompt tells which object
    moves. Where the new target is out of view in the reference frame, the variant moves on to
    the seed's next layout like any infeasible draw (then it is another scene). Evaluation
    uses variant 0."""

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"SimConfig.height/width: expected >= 8 pixels, got {self.height}x{self.width}")
        if self.num_frames < 2:
            raise ValueError(f"SimConfig.num_frames: expected >= 2, got {self.num_frames}")
        if not 2 <= self.min_objects <= self.max_objects <= 5:
            raise ValueError(
                f"SimConfig.min_objects/max_objects: expected 2 <= min <= max <= 5, "
                f"got {self.min_objects}, {self.max_objects}"
            )
        if self.task_variant < 0:
            raise ValueError(f"SimConfig.task_variant: expected >= 0, got {self.task_variant}")
        unknown = set(self.actions) - set(ACTIONS)
        if unknown or not self.actions:
            raise ValueError(
                f"SimConfig.actions: expected a non-empty subset of {ACTIONS}, got {self.actions}"
            )

    def smoke(self) -> SimConfig:
        """Returns the small version used by tests and notebook smoke runs (32x32, T = 8)."""
        return replace(self, height=32, width=32, num_frames=8)
