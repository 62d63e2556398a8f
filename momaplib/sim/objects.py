"""The MoMap-Sim object catalogue: named, coloured, textured objects built from primitives.

World frame: the table top is the plane z = 0, z points up, the default camera looks along +y.
Object frames sit on the table (z = 0 at the object's bottom) with the object's *front* facing
local -y. Articulated objects (drawer cabinet, box with a hinged lid) have a second rigid part
whose pose relative to the object follows its joint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from momaplib.sim.raycast import BOX, CYLINDER, SPHERE

#: Named object colours (linear RGB in [0, 1]); prompts use these names.
COLORS = {
    "red": (0.80, 0.12, 0.10),
    "green": (0.15, 0.62, 0.22),
    "blue": (0.12, 0.28, 0.80),
    "yellow": (0.92, 0.80, 0.14),
    "orange": (0.95, 0.48, 0.08),
    "purple": (0.52, 0.20, 0.68),
    "pink": (0.96, 0.52, 0.72),
    "white": (0.90, 0.90, 0.86),
}

#: Categories an agent can push, lift or carry; the others are fixtures acted on through parts.
SMALL_CATEGORIES = ("block", "cup", "can", "ball")
CATEGORIES = (*SMALL_CATEGORIES, "cabinet", "box", "tray")

# Texture patterns: sums of random sinusoids whose frequency layout gives the look.
NOISE, STRIPES, CHECKER, WOOD = 0, 1, 2, 3


@dataclass
class Material:
    """Albedo texture of a surface: a base colour modulated by a procedural pattern."""

    color: tuple[float, float, float]  # base albedo, linear RGB in [0, 1]
    pattern: int = NOISE  # NOISE, STRIPES, CHECKER or WOOD
    frequency: float = 60.0  # pattern frequency in radians per metre
    amplitude: float = 0.25  # relative albedo variation
    seed: int = 0  # draws the pattern's random directions and phases


@dataclass
class Prim:
    """One primitive fixed in its part's frame."""

    kind: int  # BOX, CYLINDER or SPHERE
    params: tuple[float, float, float]  # see raycast.PrimitiveSet.params
    part_from_prim: np.ndarray  # (4, 4)
    material: Material


@dataclass
class Part:
    """A rigid part; every part is one instance in the segmentation."""

    name: str  # instance name used in prompts: "red block", "drawer", "lid"
    prims: list[Prim]
    object_from_part: np.ndarray  # (4, 4) rest pose relative to the object


@dataclass
class SceneObject:
    """An object on the table: one or two rigid parts plus what planning needs to know."""

    category: str  # one of CATEGORIES
    color: str  # key of COLORS
    parts: list[Part]  # parts[0] is the main body
    half_size: tuple[float, float]  # footprint half extents along local x, y (metres)
    height: float  # height of the main body's top above the table
    world_from_object: np.ndarray = field(default_factory=lambda: np.eye(4))  # (4, 4) pose on the table
    grasp_width: float | None = None  # finger opening when grasped (None: not graspable)
    grasp_axis: int = 0  # local axis (0 = x, 1 = y) the fingers close along
    info: dict = field(default_factory=dict)  # category-specific geometry (drawer travel, hinge, ...)

    @property
    def name(self) -> str:
        return f"{self.color} {'box' if self.category == 'box' else self.category}"

    @property
    def footprint_radius(self) -> float:
        """Returns the radius of a circle on the table that contains the object's footprint."""
        return float(np.hypot(*self.half_size))

    @property
    def xy(self) -> np.ndarray:
        return self.world_from_object[:2, 3].copy()

    @property
    def yaw(self) -> float:
        return float(np.arctan2(self.world_from_object[1, 0], self.world_from_object[0, 0]))

    def support_distance(self, direction_xy: np.ndarray) -> float:
        """Returns how far the footprint extends from the centre along a unit table direction."""
        local = self.world_from_object[:2, :2].T @ direction_xy
        if self.category in ("ball", "can"):
            return self.info["radius"]
        if self.category == "cup":  # the handle sticks out along local +x
            return self.info["radius"] + max(0.0, float(local[0])) * 0.013
        return float(abs(local[0]) * self.half_size[0] + abs(local[1]) * self.half_size[1])


def translation(x: float, y: float, z: float) -> np.ndarray:
    """Returns a 4x4 pure translation."""
    pose = np.eye(4)
    pose[:3, 3] = (x, y, z)
    return pose


def rotation_z(angle: float) -> np.ndarray:
    """Returns a 4x4 rotation about z by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    pose = np.eye(4)
    pose[:2, :2] = [[c, -s], [s, c]]
    return pose


def axis_rotation(axis: int, angle: float) -> np.ndarray:
    """Returns a 4x4 rotation by ``angle`` radians about axis ``axis`` (0: x, 1: y, 2: z), right-handed."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    pose = np.eye(4)
    pose[i, i], pose[i, j], pose[j, i], pose[j, j] = c, -s, s, c
    return pose


def rotation_x(angle: float) -> np.ndarray:
    """Returns a 4x4 rotation about x by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    pose = np.eye(4)
    pose[1:3, 1:3] = [[c, -s], [s, c]]
    return pose


def _material(rng: np.random.Generator, color: str, pattern: int | None = None) -> Material:
    pattern = int(rng.choice([NOISE, STRIPES, CHECKER])) if pattern is None else pattern
    return Material(
        color=COLORS[color],
        pattern=pattern,
        frequency=float(rng.uniform(70, 140)),
        amplitude=float(rng.uniform(0.18, 0.32)),
        seed=int(rng.integers(1 << 31)),
    )


def _box(half: tuple[float, float, float], at: np.ndarray, material: Material) -> Prim:
    return Prim(BOX, tuple(float(h) for h in half), at, material)


def make_object(category: str, color: str, rng: np.random.Generator) -> SceneObject:
    """Returns a new object of ``category`` with random dimensions, at the world origin."""
    mat = _material(rng, color)
    u = rng.uniform
    if category == "block":
        a, b, c = u(0.02, 0.03), u(0.02, 0.03), u(0.02, 0.035)
        body = Part(f"{color} block", [_box((a, b, c), translation(0, 0, c), mat)], np.eye(4))
        return SceneObject(category, color, [body], (a, b), 2 * c, grasp_width=2 * a, grasp_axis=0)
    if category in ("cup", "can"):
        radius = u(0.028, 0.035) if category == "cup" else u(0.025, 0.03)
        half_h = u(0.035, 0.05) if category == "cup" else u(0.045, 0.06)
        prims = [Prim(CYLINDER, (radius, half_h, 0.0), translation(0, 0, half_h), mat)]
        half_size = (radius, radius)
        if category == "cup":  # a handle on +x; fingers close along y to stay clear of it
            prims.append(_box((0.007, 0.006, 0.6 * half_h), translation(radius + 0.006, 0, half_h), mat))
            half_size = (radius + 0.013, radius)
        body = Part(f"{color} {category}", prims, np.eye(4))
        obj = SceneObject(
            category, color, [body], half_size, 2 * half_h, grasp_width=2 * radius, grasp_axis=1
        )
        obj.info["radius"] = radius
        return obj
    if category == "ball":
        radius = u(0.025, 0.035)
        body = Part(
            f"{color} ball", [Prim(SPHERE, (radius, 0.0, 0.0), translation(0, 0, radius), mat)], np.eye(4)
        )
        obj = SceneObject(category, color, [body], (radius, radius), 2 * radius, grasp_width=2 * radius)
        obj.info["radius"] = radius
        return obj
    if category == "cabinet":
        w, d, h = u(0.08, 0.105), u(0.065, 0.085), u(0.05, 0.07)
        body = Part(f"{color} cabinet", [_box((w, d, h), translation(0, 0, h), mat)], np.eye(4))
        # The drawer's front protrudes 5 mm so it never coincides with the cabinet's front face.
        drawer_half = (w - 0.015, d - 0.01, 0.45 * h)
        front = -d - 0.005
        drawer_mat = _material(rng, color)
        handle_mat = Material(COLORS["white"] if color != "white" else (0.3, 0.3, 0.3), NOISE, 90.0, 0.15, 1)
        drawer = Part(
            "drawer",
            [
                _box(drawer_half, translation(0, front + drawer_half[1], h), drawer_mat),
                # A vertical handle tab: fingers closing along x pinch it.
                _box((0.005, 0.0175, 0.02), translation(0, front - 0.0175, h), handle_mat),
            ],
            np.eye(4),
        )
        obj = SceneObject(category, color, [body, drawer], (w, d), 2 * h)
        obj.info.update(
            max_open=2 * drawer_half[1] - 0.03,
            front=front,
            handle=np.array([0.0, front - 0.0175, h - 0.02]),  # bottom centre of the handle
            drawer_bottom=h - drawer_half[2],
            drawer_half_width=drawer_half[0],
        )
        return obj
    if category == "box":
        w, d, h = u(0.06, 0.08), u(0.05, 0.07), u(0.035, 0.05)
        body = Part(f"{color} box", [_box((w, d, h), translation(0, 0, h), mat)], np.eye(4))
        lid_w, lid_d, lid_t = w + 0.005, d + 0.005, 0.0075
        # The lid's frame sits on the hinge: the back top edge, axis along x.
        lid = Part(
            "lid",
            [
                _box((lid_w, lid_d, lid_t), translation(0, -lid_d, lid_t), _material(rng, color)),
                _box(
                    (0.005, 0.012, 0.015), translation(0, -2 * lid_d - 0.012, lid_t), _material(rng, "white")
                ),
            ],
            translation(0, lid_d, 2 * h),
        )
        obj = SceneObject(category, color, [body, lid], (lid_w, lid_d), 2 * h + 2 * lid_t)
        obj.info.update(tab=np.array([0.0, -2 * lid_d - 0.012, lid_t - 0.015]))  # tab bottom, lid frame
        return obj
    if category == "tray":
        w, d = u(0.08, 0.1), u(0.065, 0.08)
        base_t, rim_t, rim_h = 0.006, 0.005, 0.012
        prims = [_box((w, d, base_t), translation(0, 0, base_t), mat)]
        rim_z = 2 * base_t + rim_h
        for sx in (-1, 1):
            prims.append(_box((rim_t, d, rim_h), translation(sx * (w - rim_t), 0, rim_z), mat))
        for sy in (-1, 1):
            prims.append(_box((w - 2 * rim_t, rim_t, rim_h), translation(0, sy * (d - rim_t), rim_z), mat))
        body = Part(f"{color} tray", prims, np.eye(4))
        obj = SceneObject(category, color, [body], (w, d), 2 * base_t + 2 * rim_h)
        obj.info.update(floor=2 * base_t, inner_half=(w - 2 * rim_t, d - 2 * rim_t))
        return obj
    raise ValueError(f"category: expected one of {CATEGORIES}, got {category!r}")
