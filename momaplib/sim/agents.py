"""The acting agents: a two-finger robot gripper (tabletop) and a simple hand (egocentric).

Both are driven through a tool-centre point (TCP) frame: origin at the bottom centre between
the fingertips, x along the closing direction, z up; the agent never tilts (yaw only), so the
fingertips are its lowest points and ``tcp z >= 0`` keeps it off the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from momaplib.sim.objects import Material, Part, Prim, translation
from momaplib.sim.raycast import BOX, CYLINDER

FOREARM_RADIUS = 0.024
FOREARM_LENGTH = 0.2


@dataclass
class Agent:
    """An agent's geometry: a palm part rigid with the TCP and two fingers that open along x."""

    kind: str  # "gripper" or "hand"
    palm: Part  # rigid with the TCP frame (arm link included for the gripper)
    finger_left: Part  # at -x, part frame at the finger's inner bottom edge
    finger_right: Part  # at +x
    forearm: Part | None  # hand only: a cylinder from the wrist towards the shoulder
    finger_half_thickness: float  # half extent of a finger along x
    finger_half_depth: float  # half extent of a finger along y (the pushing face's half width)
    max_opening: float  # widest gap between the fingers

    @property
    def parts(self) -> list[Part]:
        return [p for p in (self.palm, self.finger_left, self.finger_right, self.forearm) if p is not None]


def make_gripper(rng: np.random.Generator) -> Agent:
    """Returns a parallel-jaw gripper: arm link, palm and two fingers, dark grey metal."""
    shade = rng.uniform(0.22, 0.35)
    metal = Material((shade, shade, shade * 1.05), 1, 160.0, 0.2, int(rng.integers(1 << 31)))
    finger = Material((0.15, 0.15, 0.16), 0, 200.0, 0.3, int(rng.integers(1 << 31)))
    ft, fd, fh = 0.006, 0.012, 0.03  # finger half extents
    palm = Part(
        "gripper",
        [
            Prim(BOX, (0.06, 0.015, 0.015), translation(0, 0, 2 * fh + 0.015), metal),
            Prim(CYLINDER, (0.022, 0.16, 0.0), translation(0, 0, 2 * fh + 0.03 + 0.16), metal),
        ],
        np.eye(4),
    )
    left = Part("gripper", [Prim(BOX, (ft, fd, fh), translation(-ft, 0, fh), finger)], np.eye(4))
    right = Part("gripper", [Prim(BOX, (ft, fd, fh), translation(ft, 0, fh), finger)], np.eye(4))
    return Agent("gripper", palm, left, right, None, ft, fd, max_opening=0.10)


def make_hand(rng: np.random.Generator) -> Agent:
    """Returns a mitten-like hand: palm, thumb, a block of fingers and a forearm, skin-toned."""
    tone = rng.uniform(0.75, 1.0)
    skin = Material((0.88 * tone, 0.66 * tone, 0.52 * tone), 0, 90.0, 0.12, int(rng.integers(1 << 31)))
    sleeve_color = tuple(float(c) for c in rng.uniform(0.1, 0.6, size=3))
    sleeve = Material(sleeve_color, 1, 120.0, 0.25, int(rng.integers(1 << 31)))
    palm = Part("hand", [Prim(BOX, (0.045, 0.03, 0.012), translation(0, 0, 0.075), skin)], np.eye(4))
    thumb = Part("hand", [Prim(BOX, (0.008, 0.012, 0.032), translation(-0.008, 0, 0.032), skin)], np.eye(4))
    fingers = Part("hand", [Prim(BOX, (0.01, 0.03, 0.032), translation(0.01, 0, 0.032), skin)], np.eye(4))
    # The forearm's part frame is the wrist; the cylinder extends along local +z towards the shoulder.
    forearm = Part(
        "hand",
        [
            Prim(
                CYLINDER,
                (FOREARM_RADIUS, FOREARM_LENGTH / 2, 0.0),
                translation(0, 0, FOREARM_LENGTH / 2 + 0.02),
                sleeve,
            )
        ],
        np.eye(4),
    )
    return Agent("hand", palm, thumb, fingers, forearm, 0.01, 0.03, max_opening=0.10)


def agent_part_poses(
    agent: Agent,
    world_from_tcp: np.ndarray,  # [T, 4, 4]
    opening: np.ndarray,  # [T] gap between the fingers
    shoulder: np.ndarray | None = None,  # [T, 3] world position the forearm points to (hand only)
) -> list[np.ndarray]:
    """Returns the [T, 4, 4] world pose of each of ``agent.parts`` over time."""
    poses = [world_from_tcp]
    half = opening / 2
    for sign in (-1.0, 1.0):
        offsets = np.zeros((len(opening), 4, 4))
        offsets[:] = np.eye(4)
        offsets[:, 0, 3] = sign * half
        poses.append(world_from_tcp @ offsets)
    if agent.forearm is not None:
        if shoulder is None:
            raise ValueError("agent_part_poses: the hand needs a shoulder trajectory")
        wrist = world_from_tcp[:, :3, 3] + world_from_tcp[:, :3, 2] * 0.087
        axis = shoulder - wrist
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        poses.append(_frames_along(wrist, axis))
    return poses


def _frames_along(origin: np.ndarray, z_axis: np.ndarray) -> np.ndarray:
    """Returns [T, 4, 4] frames at ``origin`` whose z axis is ``z_axis`` (x kept horizontal)."""
    helper = np.broadcast_to(np.array([0.0, 0.0, 1.0]), z_axis.shape)
    x_axis = np.cross(helper, z_axis)
    x_axis /= np.linalg.norm(x_axis, axis=-1, keepdims=True)
    y_axis = np.cross(z_axis, x_axis)
    poses = np.zeros((len(origin), 4, 4))
    poses[:, :3, 0], poses[:, :3, 1], poses[:, :3, 2], poses[:, :3, 3] = x_axis, y_axis, z_axis, origin
    poses[:, 3, 3] = 1.0
    return poses
