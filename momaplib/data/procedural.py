"""Procedural MoMaps: seeded scenes of geometry and cameras that MoMap-Sim never draws.

MoMap-Sim always shows a table from above with a level camera; a model trained only on it learns
that layout instead of geometry. ``procedural_momap(kind, seed, ...)`` builds exact MoMap records
(the layout of DESIGN.md) of other geometry, for the generalisation suite
(``momaplib.eval.generalisation``) and to mix into VAE training
(``momaplib.data.procedural_dataset.ProceduralDataset``).

Kinds (``KINDS``), each with the depth range (metres) it draws from unless ``depth_range`` is given:

- ``"fronto_plane"``: one plane facing the camera at depth ``d`` (log-uniform in 0.3-10 m);
- ``"tilted_plane"``: one plane through the point at depth ``d`` (log-uniform in 0.3-10 m) on the
  optical axis, its normal tilted 20-70 degrees from the view axis in any direction (always so far
  that every ray still hits it); depth across the image varies by up to ~5x;
- ``"room"``: a camera inside a box room looking towards a corner: floor, ceiling and four walls
  (the two facing walls 1-6 m away), camera height 0.8-2.0 m, pitch -35..+10 degrees, roll
  -15..+15 degrees;
- ``"primitives"``: 1-4 boxes, cylinders and spheres (sizes 6-20 % of their depth, any
  orientation) 45-80 % of the way to a background plane (0.6-10 m, tilted up to 30 degrees);
- ``"surface"``: a smooth random surface, ``log z`` a sum of six random sinusoids of the
  ray direction (about +-30 % in depth) around ``z0`` (log-uniform in 0.5-5 m).

Cameras: horizontal field of view 40-100 degrees, ``fy / fx`` in 0.95-1.05 and the principal
point up to 5 % of the image off centre. The camera is static (``ref_from_cam`` identity).

``moving=True``: one rigid part moves (instance 1: the first primitive; kinds without one get
a primitive in front of their background): a translation of 5-15 % of its depth and a rotation
of 10-45 degrees about its centre, along a minimum-jerk profile over the T frames. Other points
stay still. ``visible`` is exact: a point is visible at ``t`` when it is the first hit of the
ray from the camera to it.

Colours: every surface has a random base colour times a checker texture in its own
coordinates, Lambertian-shaded by a light at the camera. Instance ids: background surfaces
(planes, rooms, the random surface) are 0 like MoMap-Sim's table and walls; each primitive has
its own id 1, 2, ...

``meta`` records the exact geometry in the reference camera frame (``planes``: point and normal;
``spheres``: centre at t = 0 and radius; ``motion``: the moving instance and its
``ref_from_part`` poses relative to t = 0), so tests check every point against its equation.

Ray casting reuses MoMap-Sim's analytic caster (``momaplib.sim.raycast.cast_rays``): exact
first hits and object-local coordinates for every pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from momaplib.geometry import pixel_grid, project
from momaplib.momap import MoMap
from momaplib.sim.raycast import BOX, CYLINDER, SPHERE, PlaneSet, PrimitiveSet, cast_rays

#: The procedural scene kinds (see the module docstring).
KINDS = ("fronto_plane", "tilted_plane", "room", "primitives", "surface")
#: Default depth ranges in metres, per kind (``depth_range`` overrides them).
DEPTH_RANGES = {
    "fronto_plane": (0.3, 10.0),
    "tilted_plane": (0.3, 10.0),
    "room": (1.0, 6.0),
    "primitives": (0.6, 10.0),
    "surface": (0.5, 5.0),
}
#: Horizontal field of view range in degrees.
FOV_RANGE = (40.0, 100.0)
#: Seeds of procedural training clips start here (``ProceduralDataset``); evaluation uses seeds
#: below it (``momaplib.eval.generalisation``), so no evaluated scene was trained on.
TRAIN_SEED_START = 1_000_000
#: Relative tolerance of the visibility test (a point is the first hit of its ray).
VISIBILITY_TOLERANCE = 1e-4

_PRIM_KINDS = (BOX, CYLINDER, SPHERE)


@dataclass
class _Scene:
    """A scene in the reference camera frame, built by one kind's builder."""

    planes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (point, unit normal)
    prims: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (kind, params, pose)
    surface: dict[str, Any] | None = None  # log-depth sinusoids of the "surface" kind


def intrinsics(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Returns a random pinhole ``K`` (3, 3) float32 (``FOV_RANGE``, fy/fx 0.95-1.05, centre +-5 %)."""
    fx = 0.5 * width / math.tan(math.radians(rng.uniform(*FOV_RANGE)) / 2)
    fy = fx * rng.uniform(0.95, 1.05)
    cx = (width - 1) / 2 + rng.uniform(-0.05, 0.05) * width
    cy = (height - 1) / 2 + rng.uniform(-0.05, 0.05) * height
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)


def _rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Returns (H*W, 3) float64 ray directions with z = 1 through every pixel centre."""
    uv = pixel_grid(height, width).reshape(-1, 2).double().numpy()
    x = (uv[:, 0] - K[0, 2]) / K[0, 0]
    y = (uv[:, 1] - K[1, 2]) / K[1, 1]
    return np.stack([x, y, np.ones_like(x)], -1)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _half_diagonal_fov(K: np.ndarray, height: int, width: int) -> float:
    corners = _rays(K, height, width)[[0, width - 1, -width, -1]]
    return float(np.max(np.arccos(corners[:, 2] / np.linalg.norm(corners, axis=-1))))


def _tilted_normal(rng: np.random.Generator, tilt: float) -> np.ndarray:
    """Returns a unit normal facing the camera (-z), tilted ``tilt`` radians in a random direction."""
    azimuth = rng.uniform(0, 2 * math.pi)
    axis = np.array([math.cos(azimuth), math.sin(azimuth), 0.0])
    return _rotation(axis, tilt) @ np.array([0.0, 0.0, -1.0])


# ----------------------------------------------------------------------------- scene builders
def _fronto_plane(rng, K, height, width, depth_range) -> _Scene:
    depth = _log_uniform(rng, *depth_range)
    return _Scene(planes=[(np.array([0, 0, depth]), np.array([0.0, 0.0, -1.0]))])


def _tilted_plane(rng, K, height, width, depth_range) -> _Scene:
    depth = _log_uniform(rng, *depth_range)
    max_tilt = min(math.radians(70), math.radians(82) - _half_diagonal_fov(K, height, width))
    tilt = rng.uniform(min(math.radians(20), max_tilt), max_tilt)
    return _Scene(planes=[(np.array([0, 0, depth]), _tilted_normal(rng, tilt))])


def _room(rng, K, height, width, depth_range) -> _Scene:
    low, high = depth_range
    right, front = rng.uniform(low, high, size=2)  # the two walls of the corner looked at
    left, back = rng.uniform(0.5, 2.0, size=2)
    eye_height = rng.uniform(0.8, 2.0)
    ceiling = rng.uniform(0.4, 1.5)  # above the camera
    # In a level frame (x right, y down, z forward) centred on the camera.
    level = [
        (np.array([0, eye_height, 0]), np.array([0.0, -1.0, 0.0])),  # floor
        (np.array([0, -ceiling, 0]), np.array([0.0, 1.0, 0.0])),  # ceiling
        (np.array([right, 0, 0]), np.array([-1.0, 0.0, 0.0])),
        (np.array([-left, 0, 0]), np.array([1.0, 0.0, 0.0])),
        (np.array([0, 0, front]), np.array([0.0, 0.0, -1.0])),
        (np.array([0, 0, -back]), np.array([0.0, 0.0, 1.0])),
    ]
    yaw = math.atan2(right, front) + rng.uniform(-0.3, 0.3)  # towards the corner
    pitch, roll = math.radians(rng.uniform(-35, 10)), math.radians(rng.uniform(-15, 15))
    # cam_from_level: turn by yaw about y, tilt by pitch about x (positive: up), roll about z.
    level_from_cam = _rotation([0, 1, 0], yaw) @ _rotation([1, 0, 0], pitch) @ _rotation([0, 0, 1], roll)
    cam_from_level = level_from_cam.T
    return _Scene(planes=[(cam_from_level @ p, cam_from_level @ n) for p, n in level])


def _primitive_in_front(rng, direction, background_depth, planes) -> tuple[int, np.ndarray, np.ndarray]:
    """Returns a random primitive (kind, params, ref_from_prim) on the ray ``direction`` (z = 1),
    45-80 % of the way to the background and clear of every plane."""
    depth = rng.uniform(0.45, 0.8) * background_depth
    center = np.asarray(direction, dtype=np.float64) * depth
    kind = int(rng.choice(_PRIM_KINDS))
    size = rng.uniform(0.06, 0.2) * depth
    if kind == BOX:
        params = size * rng.uniform(0.5, 1.0, size=3)
    elif kind == CYLINDER:
        params = size * np.array([rng.uniform(0.4, 1.0), rng.uniform(0.5, 1.0), 0.0])
    else:
        params = np.array([size, 0.0, 0.0])
    bound = float(np.linalg.norm(params[:2]) if kind == CYLINDER else np.linalg.norm(params))
    clearance = min([float(np.dot(center - p, n)) for p, n in planes] + [depth - 0.3])
    if bound > 0.8 * clearance:  # shrink it until it is clear of the planes and the camera
        params = params * (0.8 * clearance / bound)
    pose = np.eye(4)
    pose[:3, :3] = _random_rotation(rng)
    pose[:3, 3] = center
    return kind, params, pose


def _primitives(rng, K, height, width, depth_range) -> _Scene:
    depth = rng.uniform(max(depth_range[0], 0.6), depth_range[1])
    normal = _tilted_normal(rng, math.radians(rng.uniform(0, 30)))
    scene = _Scene(planes=[(np.array([0, 0, depth]), normal)])
    for _ in range(int(rng.integers(1, 5))):
        scene.prims.append(_add_primitive(rng, K, height, width, scene))
    return scene


def _surface(rng, K, height, width, depth_range) -> _Scene:
    angles = rng.uniform(0, 2 * math.pi, size=6)
    frequency = rng.uniform(1.0, 4.0, size=6)
    surface = {
        "z0": _log_uniform(rng, *depth_range),
        "wave": (np.stack([np.cos(angles), np.sin(angles)], -1) * frequency[:, None]).tolist(),
        "amplitude": (rng.uniform(0.02, 0.1, size=6)).tolist(),
        "phase": rng.uniform(0, 2 * math.pi, size=6).tolist(),
    }
    return _Scene(surface=surface)


_BUILDERS = {
    "fronto_plane": _fronto_plane,
    "tilted_plane": _tilted_plane,
    "room": _room,
    "primitives": _primitives,
    "surface": _surface,
}


def surface_depth(surface: dict[str, Any], directions: np.ndarray) -> np.ndarray:
    """Returns the z-depth (...) of the ``"surface"`` kind along rays ``directions`` (..., 3)."""
    xy = directions[..., :2] / directions[..., 2:3]
    wave, amplitude, phase = (np.asarray(surface[k]) for k in ("wave", "amplitude", "phase"))
    log_depth = (np.sin(xy @ wave.T + phase) * amplitude).sum(-1)
    return surface["z0"] * np.exp(log_depth)


def _background_depth(scene: _Scene, direction: np.ndarray) -> float:
    if scene.surface is not None:
        return float(surface_depth(scene.surface, direction))
    hits = [float(np.dot(p, n) / np.dot(direction, n)) for p, n in scene.planes if np.dot(direction, n) < 0]
    return min(h for h in hits if h > 0)


def _add_primitive(rng, K, height, width, scene) -> tuple[int, np.ndarray, np.ndarray]:
    u, v = rng.uniform(0.2, 0.8) * (width - 1), rng.uniform(0.2, 0.8) * (height - 1)
    direction = np.array([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], 1.0])
    return _primitive_in_front(rng, direction, _background_depth(scene, direction), scene.planes)


def _minimum_jerk(num_frames: int) -> np.ndarray:
    s = np.linspace(0.0, 1.0, num_frames)
    return 10 * s**3 - 15 * s**4 + 6 * s**5


def _rigid_motion(rng, pose: np.ndarray, num_frames: int) -> np.ndarray:
    """Returns (T, 4, 4) ``ref_from_part`` motions (identity at t = 0) of a part at ``pose``."""
    center = pose[:3, 3]
    shift = rng.normal(size=3)
    shift *= rng.uniform(0.05, 0.15) * center[2] / np.linalg.norm(shift)
    axis, angle = rng.normal(size=3), math.radians(rng.uniform(10, 45))
    motions = np.tile(np.eye(4), (num_frames, 1, 1))
    for t, s in enumerate(_minimum_jerk(num_frames)):
        rotation = _rotation(axis, s * angle)
        motions[t, :3, :3] = rotation
        motions[t, :3, 3] = center + s * shift - rotation @ center
    return motions


# ----------------------------------------------------------------------------- the record
def procedural_momap(
    kind: str,
    seed: int,
    height: int = 128,
    width: int = 128,
    num_frames: int = 32,
    moving: bool = False,
    depth_range: tuple[float, float] | None = None,
) -> MoMap:
    """Returns the procedural MoMap of ``kind`` (one of ``KINDS``) and ``seed``: xyz (T, H, W, 3).

    The same arguments always give the same record. ``moving``: one rigid part (instance 1)
    moves; otherwise the scene is static. ``depth_range`` (metres) replaces the kind's default
    range (``DEPTH_RANGES``). See the module docstring for what each kind draws.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    for name, value, low in (("height", height, 8), ("width", width, 8), ("num_frames", num_frames, 1)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    depth_range = DEPTH_RANGES[kind] if depth_range is None else tuple(float(d) for d in depth_range)
    if len(depth_range) != 2 or not 0 < depth_range[0] <= depth_range[1]:
        raise ValueError(f"depth_range: expected (low, high) metres with 0 < low <= high, got {depth_range}")
    rng = np.random.default_rng([int(seed), KINDS.index(kind), int(moving)])
    K = intrinsics(rng, height, width)
    scene = _BUILDERS[kind](rng, K, height, width, depth_range)
    if moving and not scene.prims:
        scene.prims.append(_add_primitive(rng, K, height, width, scene))
    motions = _rigid_motion(rng, scene.prims[0][2], num_frames) if moving else None
    xyz, valid, visible, surface_index, normals = _trace(scene, K, height, width, num_frames, motions)
    instance = np.where(valid & (surface_index < len(scene.prims)), surface_index + 1, 0).astype(np.int32)
    rgb = _shade(rng, scene, xyz[0], valid, surface_index, normals)
    meta: dict[str, Any] = {
        "source": "procedural",
        "kind": kind,
        "seed": int(seed),
        "moving": bool(moving),
        "depth_range": list(depth_range),
        "planes": [{"point": p.tolist(), "normal": n.tolist()} for p, n in scene.planes],
        "spheres": [
            {"center": pose[:3, 3].tolist(), "radius": float(params[0]), "instance": i + 1}
            for i, (k, params, pose) in enumerate(scene.prims)
            if k == SPHERE
        ],
    }
    if scene.surface is not None:
        meta["surface"] = scene.surface
    if motions is not None:
        meta["motion"] = {"instance": 1, "ref_from_part": motions.tolist()}
    prompt = "the object moves" if moving else ""
    return MoMap(
        xyz=xyz, valid=valid, visible=visible, rgb=rgb, instance=instance, K=K,
        ref_from_cam=np.tile(np.eye(4, dtype=np.float32), (num_frames, 1, 1)), prompt=prompt, meta=meta,
    )  # fmt: skip


def _trace(scene: _Scene, K, height, width, num_frames, motions):
    """Returns xyz (T, H, W, 3), valid, visible, the surface index (H, W) (primitive p; P + l for
    plane l; P + L for the random surface; -1 for a miss) and unit normals (H, W, 3) at t = 0."""
    P = len(scene.prims)
    rays = _rays(K, height, width)  # (R, 3), z = 1
    unit = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    poses = np.stack([pose for _, _, pose in scene.prims]) if P else np.zeros((0, 4, 4))
    prims = _primitive_set(scene, poses[None])
    planes = _plane_set(scene)
    hits = cast_rays(torch.zeros(1, 3), torch.from_numpy(unit[None]).float(), prims, planes)
    distance = hits.distance[0].double().numpy()
    surface = hits.surface[0].numpy().copy()
    normals = hits.normal[0].double().numpy()
    points = unit * distance[:, None]
    if scene.surface is not None:  # the random surface lies behind everything else
        depth = surface_depth(scene.surface, rays)
        behind = ~np.isfinite(distance) | (distance * unit[:, 2] > depth)
        points[behind] = rays[behind] * depth[behind, None]
        surface[behind] = P + len(scene.planes)
    valid = surface >= 0
    points[~valid] = 0
    local = hits.local_point[0].double().numpy()  # in the primitive's frame on primitives
    xyz = np.repeat(points[None], num_frames, axis=0)
    if motions is not None:
        on_part = surface == 0
        ref_from_prim = motions @ poses[0]  # (T, 4, 4): the moving primitive's pose at t
        xyz[:, on_part] = (ref_from_prim[:, None, :3, :3] @ local[on_part][None, :, :, None])[..., 0] + (
            ref_from_prim[:, None, :3, 3]
        )
        moving_poses = np.repeat(poses[None], num_frames, axis=0)
        moving_poses[:, 0] = ref_from_prim
        moved = _primitive_set(scene, moving_poses)
        visible = _visibility(scene, xyz, valid, surface, moved, planes, K, (height, width))
    else:
        visible = np.repeat(valid[None], num_frames, axis=0)
    if scene.surface is not None:
        on_surface = (surface == P + len(scene.planes))[:, None]
        normals = np.where(on_surface, _map_normals(points.reshape(height, width, 3)).reshape(-1, 3), normals)
    shape = (height, width)
    return (
        xyz.reshape(num_frames, *shape, 3).astype(np.float32),
        valid.reshape(shape),
        visible.reshape(num_frames, *shape),
        surface.reshape(shape),
        normals.reshape(*shape, 3),
    )


def _primitive_set(scene: _Scene, poses: np.ndarray) -> PrimitiveSet:
    kinds = torch.tensor([k for k, _, _ in scene.prims], dtype=torch.long)
    params = torch.tensor(np.array([p for _, p, _ in scene.prims]).reshape(-1, 3), dtype=torch.float32)
    return PrimitiveSet(kinds, params, torch.from_numpy(poses).float())


def _plane_set(scene: _Scene) -> PlaneSet:
    point = torch.tensor(np.array([p for p, _ in scene.planes]).reshape(-1, 3), dtype=torch.float32)
    normal = torch.tensor(np.array([n for _, n in scene.planes]).reshape(-1, 3), dtype=torch.float32)
    return PlaneSet(point, normal)


def _visibility(scene, xyz, valid, surface, prims, planes, K, shape) -> np.ndarray:
    """Returns (T, R) bool: the point of ray r at time t is inside the image (``shape`` = (H, W))
    and the first hit of the ray from the camera to it."""
    distance = np.linalg.norm(xyz, axis=-1)  # (T, R)
    directions = xyz / np.where(distance > 0, distance, 1)[..., None]
    directions[:, ~valid] = [0.0, 0.0, 1.0]
    T = xyz.shape[0]
    hits = cast_rays(
        torch.zeros(T, 3), torch.from_numpy(directions).float(), prims, planes, need_surface=False
    )
    first = hits.distance.double().numpy()
    tolerance = distance * VISIBILITY_TOLERANCE + 1e-5
    if scene.surface is not None:
        first = np.minimum(first, surface_depth(scene.surface, directions) / directions[..., 2])
    on_primitive = (surface >= 0) & (surface < len(scene.prims))
    # a primitive's point must be its ray's first hit; a background point must not be hidden
    seen = np.where(on_primitive[None], np.abs(first - distance) <= tolerance, first >= distance - tolerance)
    uv, z = project(xyz, K.astype(np.float64))
    height, width = shape
    in_image = (z > 1e-3) & (uv[..., 0] >= -0.5) & (uv[..., 0] < width - 0.5)
    in_image &= (uv[..., 1] >= -0.5) & (uv[..., 1] < height - 0.5)
    return seen & valid[None] & in_image


def _map_normals(points: np.ndarray) -> np.ndarray:
    """Returns unit normals (H, W, 3) of an XYZ map, facing the camera (finite differences)."""
    du, dv = np.gradient(points, axis=1), np.gradient(points, axis=0)
    normal = np.cross(du, dv)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True).clip(1e-12)
    return np.where((normal * points).sum(-1, keepdims=True) > 0, -normal, normal)


def _shade(rng, scene: _Scene, points, valid, surface, normals) -> np.ndarray:
    """Returns rgb (H, W, 3) uint8: per-surface colour x checker texture x Lambertian light."""
    num_surfaces = len(scene.prims) + len(scene.planes) + 1
    colours = rng.uniform(0.15, 0.95, size=(num_surfaces, 3))
    periods = rng.uniform(0.03, 0.3, size=num_surfaces) * max(float(np.median(points[valid][:, 2])), 0.1)
    index = np.where(valid, surface, 0)
    coords = points / periods[index][..., None]
    checker = (np.floor(coords).sum(-1) % 2) * 0.3 + 0.7
    view = -points / np.linalg.norm(points, axis=-1, keepdims=True).clip(1e-9)
    light = 0.35 + 0.65 * np.clip((normals * view).sum(-1), 0, 1)
    rgb = colours[index] * (checker * light)[..., None]
    rgb = np.where(valid[..., None], rgb, 0.0)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


__all__ = [
    "DEPTH_RANGES",
    "FOV_RANGE",
    "KINDS",
    "TRAIN_SEED_START",
    "intrinsics",
    "procedural_momap",
    "surface_depth",
]
