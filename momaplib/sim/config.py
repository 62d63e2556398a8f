"""Configuration of MoMap-Sim clips (one dataclass; it drives notebooks and the command line)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Literal

from momaplib.checks import check_device, is_integer
from momaplib.sim.clip import ACTIONS, FAMILIES

#: Image height and width in pixels: at least this many (smaller images cannot show a task's target).
MIN_SIZE = 8
#: ... and at most this many, so a typo (20000) fails at once instead of exhausting memory.
MAX_SIZE = 1024
#: Frames of a clip: at least 2 (a MoMap needs motion), at most this many.
MAX_FRAMES = 512
#: Most pixels of a clip, num_frames x height x width. Rendering needs about 600 bytes of working
#: memory per pixel (rays, hits, the GT's float64 trajectories), so the limit is ~10 GB per clip
#: (and per worker of ``momap sim``): 64 frames of 512 x 512, 16 of 1024 x 1024, 256 of 256 x 256.
MAX_CLIP_PIXELS = 1 << 24
#: Horizontal field of view in degrees. Narrower views cannot frame the table with its objects
#: (no scene is feasible below ~30 degrees), wider ones distort it past use and slow the search.
FOV_RANGE = (30.0, 160.0)
#: Most objects on the table (the workspace has room for this many).
MAX_OBJECTS = 5


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one MoMap-Sim clip; a clip is a function of (config, seed)."""

    family: Literal["tabletop", "egocentric"] = "tabletop"
    """Scene family: static camera over a table with a gripper (BRIDGE-like) or a hand-held
    moving camera with a hand (HOI4D-like)."""
    height: int = 128
    """Image height in pixels, 8..1024 (the diffusion models need a multiple of 8)."""
    width: int = 128
    """Image width in pixels, 8..1024 (the diffusion models need a multiple of 8)."""
    num_frames: int = 32
    """Number of frames T of the clip and of its MoMap (t0 = 0), 2..512; with height and width at
    most 2^24 pixels per clip (num_frames x height x width; ~10 GB of working memory)."""
    fov_deg: float = 60.0
    """Horizontal field of view of the camera in degrees, 30..160 (narrower views cannot frame
    the table with its objects)."""
    min_objects: int = 2
    """Fewest objects on the table, 2..max_objects."""
    max_objects: int = 5
    """Most objects on the table, min_objects..5."""
    actions: tuple[str, ...] = ACTIONS
    """Task types to draw from: a non-empty subset of ``momaplib.sim.ACTIONS``."""
    device: str = "cpu"
    """Torch device for ray casting ("cpu", "cuda" or "cuda:<index>")."""
    task_variant: int = 0
    """>= 0. 0: the task drawn with the scene. ``v`` > 0: the same scene as variant 0 of the seed
    (objects, agent at rest, camera path, background) with another push, lift or pick-and-place task
    drawn from ``(seed, v)``, on another target object wherever the scene has one (a scene
    with no small object keeps its task). Variants are counterfactual pairs for training: the
    reference images agree up to the agent's yaw, so mostly the prompt tells which object
    moves. Where the new target is out of view in the reference frame, the variant moves on to
    the seed's next layout like any infeasible draw (then it is another scene). Evaluation
    uses variant 0."""

    def __post_init__(self) -> None:
        """Checks every field against the range in its docstring; raises ``ValueError`` naming it."""
        if self.family not in FAMILIES:
            raise ValueError(f"SimConfig.family: expected one of {FAMILIES}, got {self.family!r}")
        for name in ("height", "width", "num_frames", "min_objects", "max_objects", "task_variant"):
            value = getattr(self, name)
            if not is_integer(value):
                raise ValueError(f"SimConfig.{name}: expected an integer, got {value!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise ValueError(f"SimConfig.{name}: expected {MIN_SIZE}..{MAX_SIZE} pixels, got {value}")
        if not 2 <= self.num_frames <= MAX_FRAMES:
            raise ValueError(f"SimConfig.num_frames: expected 2..{MAX_FRAMES} frames, got {self.num_frames}")
        pixels = self.num_frames * self.height * self.width
        if pixels > MAX_CLIP_PIXELS:
            raise ValueError(
                f"SimConfig.num_frames/height/width: {self.num_frames} x {self.height} x {self.width} = "
                f"{pixels} pixels per clip; expected at most {MAX_CLIP_PIXELS} (2^24, ~10 GB of working "
                "memory): use fewer frames or smaller images"
            )
        fov = self.fov_deg
        if (
            not isinstance(fov, numbers.Real)
            or isinstance(fov, bool)
            or not FOV_RANGE[0] <= fov <= FOV_RANGE[1]
        ):
            raise ValueError(
                f"SimConfig.fov_deg: expected {FOV_RANGE[0]:g}..{FOV_RANGE[1]:g} degrees, got {fov!r}"
            )
        if not 2 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(
                f"SimConfig.min_objects/max_objects: expected 2 <= min <= max <= {MAX_OBJECTS}, "
                f"got {self.min_objects}, {self.max_objects}"
            )
        if self.task_variant < 0:
            raise ValueError(f"SimConfig.task_variant: expected >= 0, got {self.task_variant}")
        if not isinstance(self.actions, (tuple, list)) or not all(isinstance(a, str) for a in self.actions):
            raise ValueError(f"SimConfig.actions: expected a tuple of action names, got {self.actions!r}")
        unknown = set(self.actions) - set(ACTIONS)
        if unknown or not self.actions:
            raise ValueError(
                f"SimConfig.actions: expected a non-empty subset of {ACTIONS}, got {self.actions}"
            )
        check_device("SimConfig.device", self.device)

    def smoke(self) -> SimConfig:
        """Returns the small version used by tests and notebook smoke runs (32x32, T = 8)."""
        return replace(self, height=32, width=32, num_frames=8)
