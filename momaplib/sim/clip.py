"""The clip record produced by MoMap-Sim: a video with exact ground truth and its GT MoMap."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from momaplib.momap import MOMAP_KEYS, MoMap
from momaplib.storage import DataFormatError, load_npz, save_npz, unpack_json, unpack_str

FAMILIES = ("tabletop", "egocentric")
ACTIONS = ("push", "pick_place", "lift", "open_drawer", "close_drawer", "open_lid", "close_lid")
DIRECTIONS = ("left", "right", "forward", "backward")
RELATIONS = ("in", "next_to")

VIDEO_KEYS = ("video_rgb", "video_depth", "video_instance", "task", "family", "seed")


@dataclass
class Task:
    """The structure behind a prompt: what acts on which object, and how."""

    action: str  # one of ACTIONS
    target: str  # name of the object that is acted on, e.g. "red block" or "drawer"
    target_id: int  # instance id of the moving target (the part that moves: drawer, lid)
    direction: str | None = None  # push only: one of DIRECTIONS, relative to the reference camera
    destination: str | None = None  # pick_place only: name of the reference object
    destination_id: int | None = None  # pick_place only: its instance id
    relation: str | None = None  # pick_place only: one of RELATIONS

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"Task.action: expected one of {ACTIONS}, got {self.action!r}")
        if self.action == "push" and self.direction not in DIRECTIONS:
            raise ValueError(f"Task.direction: push needs one of {DIRECTIONS}, got {self.direction!r}")
        if self.action == "pick_place" and self.relation not in RELATIONS:
            raise ValueError(f"Task.relation: pick_place needs one of {RELATIONS}, got {self.relation!r}")


@dataclass
class Clip:
    """A simulated clip: frames, depth, instances and cameras, plus the exact GT MoMap at t0 = 0."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB video
    depth: np.ndarray  # (T, H, W) float32 z-depth in metres (camera t frame)
    instances: np.ndarray  # (T, H, W) int32 instance ids, 0 = background
    task: Task  # the task the agent carries out
    momap: MoMap  # GT MoMap at t0 = 0; K, ref_from_cam, prompt and instance names live here
    family: str = "tabletop"  # one of FAMILIES
    seed: int = 0  # the seed that reproduces this clip with the same SimConfig
    meta: dict[str, Any] = field(default_factory=dict)  # extra info (timing, config)

    @property
    def K(self) -> np.ndarray:
        return self.momap.K

    @property
    def ref_from_cam(self) -> np.ndarray:
        return self.momap.ref_from_cam

    @property
    def prompt(self) -> str:
        return self.momap.prompt

    @property
    def instance_info(self) -> dict[int, dict[str, str]]:
        """Returns ``{instance id: {"name", "category", "role"}}`` for every non-background id."""
        return {int(k): v for k, v in self.momap.meta.get("instances", {}).items()}

    def to_arrays(self) -> dict[str, Any]:
        """Returns the npz layout: the MoMap's keys plus ``video_*``, ``task``, ``family``, ``seed``."""
        return {
            **self.momap.to_arrays(),
            "video_rgb": self.frames,
            "video_depth": self.depth.astype(np.float32, copy=False),
            "video_instance": self.instances.astype(np.int32, copy=False),
            "task": asdict(self.task),
            "family": self.family,
            "seed": np.int64(self.seed),
        }

    def save(self, path: str | os.PathLike) -> str:
        """Writes the clip as one compressed npz atomically; returns the file's sha256."""
        return save_npz(path, self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Clip:
        """Reads a clip written by ``save``; raises ``DataFormatError`` on bad files."""
        arrays = load_npz(path, required=(*MOMAP_KEYS, *VIDEO_KEYS))
        momap = MoMap.from_arrays(arrays, source=str(path))
        frames, depth, instances = arrays["video_rgb"], arrays["video_depth"], arrays["video_instance"]
        shape = momap.xyz.shape[:3]
        for name, array in (("video_rgb", frames), ("video_depth", depth), ("video_instance", instances)):
            if array.shape[:3] != shape:
                raise DataFormatError(f"{path}: {name} has shape {array.shape}, expected (T, H, W) = {shape}")
        return cls(
            frames=frames,
            depth=depth,
            instances=instances,
            task=Task(**unpack_json(arrays["task"])),
            momap=momap,
            family=unpack_str(arrays["family"]),
            seed=int(arrays["seed"]),
        )
