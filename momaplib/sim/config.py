"""Configuration of MoMap-Sim clips (one dataclass; it drives notebooks and the command line)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Literal

from momaplib.checks import check_device, is_integer
from momaplib.sim.clip import ACTIONS, FAMILIES
from momaplib.sim.sensor import SENSORS

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
#: Most static distractor objects (``SimConfig.clutter``).
MAX_CLUTTER = 12


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
    motion_variant: int = 0
    """>= 0. 0: the motion drawn with the scene. ``k`` > 0: the same scene, task and prompt with
    the motion re-drawn from ``(seed, task_variant, k)``: timing, speed profile, approach path,
    hand wobble, the task's free parameter (push distance and heading, lift height, place
    position, how far a drawer or lid opens), the grasp height and the egocentric camera path
    (``momaplib.sim.variants`` lists every range). Frame 0 (image, depth, instances, ``K``,
    prompt, the MoMap's reference pixels) is bit-identical for every ``k``; the futures differ.
    Many ``k`` of one seed sample the distribution of futures of one start frame."""
    camera_randomisation: float = 0.0
    """0..1. 0: today's camera. ``r`` > 0 widens the reference camera's ranges by ``r`` times
    ``momaplib.sim.scene.CAMERA_RANGES`` (roll, pitch, distance, height and field of view; at
    ``r`` = 1: roll +-25 deg, elevation +-20 deg, distance x0.75..1.6, an aim offset of +-8 deg
    and a field of view of fov_deg x0.7..1.35); the task's objects stay in view."""
    room: bool = False
    """A room around the table (instead of one wall close behind it): a finite table on a floor
    0.75 m below its top, a back wall 1.2..5 m from the camera, side walls 0.8..2.5 m to either
    side and a ceiling (``momaplib.sim.scene``)."""
    clutter: int = 0
    """0..12 static distractor objects (boxes, bottles, bowls, balls in unnamed colours) on the
    table behind and beside the workspace; they never move and no prompt names them."""
    sensor: Literal["ideal", "structured-light", "stereo", "monocular"] = "ideal"
    """Camera that records the observations (``clip.frames``, ``clip.depth``, ``momap.rgb``):
    "ideal" (exact rendering), "structured-light" (Kinect v1-like: z^2 depth noise, holes at
    depth edges, grazing angles, dark and metallic surfaces, flying pixels), "stereo"
    (RealSense D435-like), "monocular" (RGB camera with depth from a monocular network).
    The ground truth stays exact; ``momaplib.sim.sensor`` documents each model."""
    appearance: float = 0.0
    """0..1. 0: today's shading. ``a`` > 0 randomises textures, background colours and the light
    (direction, intensity, colour, ambient) by up to ``a`` times ``momaplib.sim.appearance``'s
    ranges, for training data; shading only, so the ground truth stays the same."""

    def __post_init__(self) -> None:
        """Checks every field against the range in its docstring; raises ``ValueError`` naming it."""
        if self.family not in FAMILIES:
            raise ValueError(f"SimConfig.family: expected one of {FAMILIES}, got {self.family!r}")
        for name in (
            "height",
            "width",
            "num_frames",
            "min_objects",
            "max_objects",
            "task_variant",
            "motion_variant",
            "clutter",
        ):
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
        if self.motion_variant < 0:
            raise ValueError(f"SimConfig.motion_variant: expected >= 0, got {self.motion_variant}")
        if not 0 <= self.clutter <= MAX_CLUTTER:
            raise ValueError(f"SimConfig.clutter: expected 0..{MAX_CLUTTER} objects, got {self.clutter}")
        randomisation = self.camera_randomisation
        if (
            not isinstance(randomisation, numbers.Real)
            or isinstance(randomisation, bool)
            or not 0.0 <= randomisation <= 1.0
        ):
            raise ValueError(f"SimConfig.camera_randomisation: expected 0..1, got {randomisation!r}")
        if self.sensor not in SENSORS:
            raise ValueError(f"SimConfig.sensor: expected one of {SENSORS}, got {self.sensor!r}")
        appearance = self.appearance
        if (
            not isinstance(appearance, numbers.Real)
            or isinstance(appearance, bool)
            or not 0 <= appearance <= 1
        ):
            raise ValueError(f"SimConfig.appearance: expected 0..1, got {appearance!r}")
        if not isinstance(self.room, bool):
            raise ValueError(f"SimConfig.room: expected True or False, got {self.room!r}")
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

    def wide(self) -> SimConfig:
        """Returns this config widened to what the default never draws (the retrain's ``wide_<family>``
        data, ``scripts/train_paper.py``): full camera randomisation, a room, 4 clutter objects, full
        appearance randomisation and a structured-light sensor; the family and size are kept."""
        return replace(
            self, camera_randomisation=1.0, room=True, clutter=4, appearance=1.0, sensor="structured-light"
        )
