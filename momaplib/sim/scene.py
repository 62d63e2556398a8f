"""Scene variations of MoMap-Sim: camera randomisation, room-scale backgrounds and static clutter.

All three draw from their own random stream (``scene_rng``), so with the defaults
(``camera_randomisation=0``, ``room=False``, ``clutter=0``) a clip is bit for bit what it was
before they existed, and a motion variant of a varied scene keeps its frame 0.

Camera randomisation ``r`` in 0..1 widens the reference camera as follows (``CAMERA_RANGES``;
each value is drawn uniformly, ranges scale linearly with ``r``):

=============== =========================================================================
roll            +-25 r degrees about the optical axis
elevation       the family's range (tabletop 45..62, egocentric 50..68 degrees above the
                table) shifted by +-20 r degrees, clipped to 15..85
distance        the family's range (about 0.45..0.58 m to the workspace centre) times
                1 - 0.25 r .. 1 + 0.6 r; the height above the table, distance x sin(elevation),
                goes from about 0.2 m to 0.9 m at r = 1
aim             pan and tilt of +-8 r degrees each: the workspace is off the image centre
focal length    field of view ``fov_deg`` times 1 - 0.3 r .. 1 + 0.35 r (``K`` changes with it)
=============== =========================================================================

"left" and "right" stay the table direction perpendicular to the camera's heading (they are
within 25 + 8 degrees of the image's x axis); the objects of the task are placed in view as
without randomisation.

A room (``room=True``) replaces the single wall behind the table by a finite table (a 4 cm top
on four legs, 0.75 m high) on a floor, a back wall 1.2..5 m from the camera (horizontally;
never closer than 15 cm behind the table), two side walls 0.8..2.5 m to either side and a
ceiling 2.4..3 m above the floor. The table and the room are background (instance 0).

Clutter (``clutter=n``) puts ``n`` static distractors (boxes 2..8 cm, bottles up to 15 cm
tall, squat bowls, balls) in random unnamed colours on the table, in a band behind and beside
the workspace (never in front of it, so they never hide the task's objects). Each is its own
instance with role "static" and category "clutter"; no prompt names them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from momaplib.sim.objects import (
    CHECKER,
    NOISE,
    STRIPES,
    Material,
    Part,
    Prim,
    SceneObject,
    axis_rotation,
    translation,
)
from momaplib.sim.raycast import BOX, CYLINDER, SPHERE
from momaplib.sim.render import Body, Plane
from momaplib.sim.tasks import Workspace

#: Salt of the scene variations' random stream: ``default_rng([seed, task_variant, SCENE_STREAM])``.
SCENE_STREAM = 0x7363656E
#: Half widths of the ranges of camera randomisation at r = 1 (see the module docstring).
CAMERA_RANGES = {
    "roll_deg": 25.0,
    "elevation_deg": 20.0,
    "distance_scale": (0.25, 0.6),  # x 1 - 0.25 r .. 1 + 0.6 r
    "aim_deg": 8.0,
    "fov_scale": (0.3, 0.35),  # x 1 - 0.3 r .. 1 + 0.35 r
}
ELEVATION_LIMITS = (15.0, 85.0)
TABLE_HEIGHT = 0.75
#: Tallest clutter object (metres): taller ones would stand in the gripper's arm above the workspace.
MAX_CLUTTER_HEIGHT = 0.15


def scene_rng(seed: int, task_variant: int) -> np.random.Generator:
    """Returns the random stream of the scene variations of ``(seed, task_variant)``."""
    return np.random.default_rng([seed, task_variant, SCENE_STREAM])


@dataclass
class CameraDraw:
    """One draw of the camera randomisation: how the reference camera differs from today's."""

    distance_scale: float  # multiplies the eye-to-target distance
    elevation_offset: float  # degrees added to the elevation
    fov_deg: float  # horizontal field of view of this clip
    offset: np.ndarray  # (4, 4) cam_look_from_cam: pan, tilt, then roll about the optical axis

    def elevation(self, elevation: float) -> float:
        """Returns the randomised elevation in degrees (within ``ELEVATION_LIMITS``)."""
        return float(np.clip(elevation + self.elevation_offset, *ELEVATION_LIMITS))


def draw_camera(rng: np.random.Generator, amount: float, fov_deg: float, fov_range) -> CameraDraw:
    """Returns a camera draw with ranges scaled by ``amount`` in (0, 1] (``CAMERA_RANGES``)."""
    r, ranges = amount, CAMERA_RANGES
    low, high = ranges["distance_scale"]
    distance_scale = rng.uniform(1 - low * r, 1 + high * r)
    elevation = rng.uniform(-1, 1) * ranges["elevation_deg"] * r
    pan, tilt = np.radians(rng.uniform(-1, 1, 2) * ranges["aim_deg"] * r)
    roll = math.radians(rng.uniform(-1, 1) * ranges["roll_deg"] * r)
    low, high = ranges["fov_scale"]
    fov = float(np.clip(fov_deg * rng.uniform(1 - low * r, 1 + high * r), *fov_range))
    offset = axis_rotation(1, pan) @ axis_rotation(0, tilt) @ axis_rotation(2, roll)
    return CameraDraw(float(distance_scale), float(elevation), fov, offset)


def table_axes(world_from_cam: np.ndarray, look_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns unit table directions (right, forward) of a camera: forward from the eye to the target.

    Used with camera randomisation, where a rolled camera's x axis no longer lies in the table.
    """
    forward = look_target[:2] - world_from_cam[:2, 3]
    forward = forward / np.linalg.norm(forward)
    return np.array([forward[1], -forward[0]]), forward


# ----------------------------------------------------------------------------- room
def room_background(
    rng: np.random.Generator, planes: list[Plane], workspace: Workspace, eye: np.ndarray, T: int
) -> tuple[list[Plane], list[Body], float, float]:
    """Returns the room's planes (floor, walls, ceiling), the table's static bodies, and how far
    the table reaches behind and to each side of the workspace's centre (metres).

    ``planes`` is the default background (table plane, wall): their materials are reused, so
    the table keeps its wood and the walls their colour.
    """
    table_material, wall_material = planes[0].material, planes[1].material
    right3, forward3 = np.array([*workspace.right, 0.0]), np.array([*workspace.forward, 0.0])
    centre = np.array([*workspace.center, 0.0])
    # the table: around the workspace, with room behind it for clutter
    half_w = max(workspace.half_right + 0.25, rng.uniform(0.45, 0.8))
    back = workspace.half_forward + rng.uniform(0.3, 0.5)
    front = workspace.half_forward + rng.uniform(0.1, 0.3)
    table_centre = centre + forward3 * (back - front) / 2
    half_d = (back + front) / 2
    yaw = math.atan2(workspace.right[1], workspace.right[0])
    world_from_table = translation(*table_centre) @ axis_rotation(2, yaw)
    top = 0.02
    leg = (TABLE_HEIGHT - 2 * top) / 2
    prims = [Prim(BOX, (half_w, half_d, top), translation(0.0, 0.0, -top), table_material)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            at = translation(sx * (half_w - 0.04), sy * (half_d - 0.04), -2 * top - leg)
            prims.append(Prim(BOX, (0.02, 0.02, leg), at, table_material))
    table = Body("table", 0, np.broadcast_to(world_from_table, (T, 4, 4)).copy(), prims)

    # walls: horizontal distances from the eye along the table axes
    eye_forward = float((centre - eye) @ forward3)  # eye -> workspace centre, along forward
    far_edge = eye_forward + back
    back_wall = max(rng.uniform(1.2, 5.0), far_edge + 0.15)
    eye_flat = np.array([eye[0], eye[1], 0.0])
    sides = [
        max(rng.uniform(0.8, 2.5), abs(float((centre - eye) @ right3)) + half_w + 0.15) for _ in range(2)
    ]
    ceiling = rng.uniform(2.4, 3.0) - TABLE_HEIGHT
    floor_material = Material(
        tuple(float(c) for c in rng.uniform(0.25, 0.6, 3)), NOISE, 8.0, 0.2, int(rng.integers(1 << 31))
    )
    room = [
        Plane(np.array([0.0, 0.0, -TABLE_HEIGHT]), np.array([0.0, 0.0, 1.0]), floor_material),
        Plane(eye_flat + forward3 * back_wall, -forward3, wall_material),
        Plane(eye_flat + right3 * sides[0], -right3, wall_material),
        Plane(eye_flat - right3 * sides[1], right3, wall_material),
        Plane(np.array([0.0, 0.0, ceiling]), np.array([0.0, 0.0, -1.0]), wall_material),
    ]
    return room, [table], back, half_w


# ----------------------------------------------------------------------------- clutter
def _clutter_object(rng: np.random.Generator, index: int) -> SceneObject:
    """Returns a static distractor: a box, bottle, bowl or ball with an unnamed random colour."""
    color = tuple(float(c) for c in rng.uniform(0.08, 0.92, 3))
    material = Material(
        color, int(rng.choice([NOISE, STRIPES, CHECKER])), rng.uniform(40, 140), rng.uniform(0.1, 0.3),
        int(rng.integers(1 << 31)),
    )  # fmt: skip
    kind = str(rng.choice(["box", "bottle", "bowl", "ball"]))
    if kind == "box":
        a, b, c = rng.uniform(0.02, 0.08), rng.uniform(0.02, 0.08), rng.uniform(0.01, 0.07)
        prims, half, height = [Prim(BOX, (a, b, c), translation(0, 0, c), material)], (a, b), 2 * c
    elif kind in ("bottle", "bowl"):
        radius = rng.uniform(0.02, 0.04) if kind == "bottle" else rng.uniform(0.045, 0.07)
        half_h = rng.uniform(0.04, MAX_CLUTTER_HEIGHT / 2) if kind == "bottle" else rng.uniform(0.015, 0.03)
        prims = [Prim(CYLINDER, (radius, half_h, 0.0), translation(0, 0, half_h), material)]
        half, height = (radius, radius), 2 * half_h
    else:
        radius = rng.uniform(0.02, 0.05)
        prims = [Prim(SPHERE, (radius, 0.0, 0.0), translation(0, 0, radius), material)]
        half, height = (radius, radius), 2 * radius
    part = Part(f"clutter {index}", prims, np.eye(4))
    return SceneObject("clutter", "unnamed", [part], half, height)


def place_clutter(
    rng: np.random.Generator,
    count: int,
    workspace: Workspace,
    behind: float,
    beside: float,
    in_image,
    tries: int = 40,
) -> list[SceneObject]:
    """Returns up to ``count`` distractors placed on the table behind and beside the workspace.

    ``behind`` and ``beside`` are how far the free table reaches behind and to either side of
    the workspace's centre (metres); ``in_image(obj)`` says whether an object's centre projects
    into the image. A distractor that finds no free, visible spot in ``tries`` draws is left out.
    """
    placed: list[SceneObject] = []
    for index in range(count):
        obj = _clutter_object(rng, index + 1)
        radius = obj.footprint_radius
        start = workspace.half_forward + 0.05 + radius  # 5 cm behind the workspace
        for _ in range(tries):
            a = rng.uniform(-1, 1) * max(beside - radius, 0.0)
            b = start + rng.uniform(0, max(behind - radius - start, 0.0))
            xy = workspace.center + a * workspace.right + b * workspace.forward
            if any(np.linalg.norm(xy - o.xy) < radius + o.footprint_radius + 0.01 for o in placed):
                continue
            yaw = rng.uniform(-np.pi, np.pi)
            obj.world_from_object = translation(*xy, 0.0) @ axis_rotation(2, yaw)
            if in_image(obj):
                placed.append(obj)
                break
    return placed
