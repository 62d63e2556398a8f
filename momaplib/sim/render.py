"""Rendering of MoMap-Sim scenes: RGB, depth, instances, and the exact GT MoMap with visibility.

Ground truth follows from the ray caster: the reference frame's hit gives each pixel's surface
point in its rigid body's frame; moving that point with the body's pose at time t and
expressing it in the reference camera gives ``xyz[t]``. The point is *visible* at t when it is
inside camera t's image and a ray from camera t's centre towards it hits nothing closer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from momaplib.geometry import invert_pose, pixel_grid, project
from momaplib.sim.objects import CHECKER, NOISE, STRIPES, WOOD, Material, Prim
from momaplib.sim.raycast import Hits, PlaneSet, PrimitiveSet, cast_rays

NUM_WAVES = 6
LIGHT_DIRECTION = np.array([-0.3, -0.45, 0.85]) / np.linalg.norm([-0.3, -0.45, 0.85])
#: Default light: ``linear = albedo * (AMBIENT + DIFFUSE * max(0, normal . LIGHT_DIRECTION))``.
AMBIENT, DIFFUSE = 0.35, 0.75
#: A point counts as visible when the first hit along its ray is within this fraction of its distance.
VISIBILITY_TOLERANCE = 2e-4


@dataclass
class Body:
    """A rigid body: primitives fixed in its frame, its pose over time and its instance id."""

    name: str
    instance: int  # 0 = background
    poses: np.ndarray  # [T, 4, 4] world_from_body (float64)
    prims: list[Prim]


@dataclass
class Plane:
    """A static infinite plane of the background (table top, wall)."""

    point: np.ndarray  # (3,)
    normal: np.ndarray  # (3,) unit, towards the camera
    material: Material


@dataclass(frozen=True)
class Lighting:
    """A directional light plus ambient light, in linear RGB (``momaplib.sim.appearance`` draws them)."""

    direction: tuple[float, float, float]  # unit world vector towards the light
    diffuse: tuple[float, float, float]  # RGB intensity of the directional light (default 0.75 each)
    ambient: tuple[float, float, float]  # RGB intensity of the ambient light (default 0.35 each)


@dataclass
class RenderScene:
    """Device tensors of a scene, built once per clip by ``build_scene``."""

    prims: PrimitiveSet
    planes: PlaneSet
    prim_body: Tensor  # [P] long
    body_from_prim: Tensor  # [P, 4, 4] float64
    body_poses: Tensor  # [T, B, 4, 4] float64
    surface_instance: Tensor  # [P + L] long
    color: Tensor  # [P + L, 3]
    wave_freq: Tensor  # [P + L, NUM_WAVES, 3]
    wave_phase: Tensor  # [P + L, NUM_WAVES]
    wave_weight: Tensor  # [P + L, NUM_WAVES]
    checker: Tensor  # [P + L, 2] (frequency, amplitude)


def _texture_params(material: Material) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Returns wave frequencies [K, 3], phases [K], weights [K] and (checker freq, amp) of a material."""
    rng = np.random.default_rng(material.seed)
    f, amp = material.frequency, material.amplitude
    dirs = rng.normal(size=(NUM_WAVES, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freq = dirs * (f * rng.uniform(0.5, 1.6, size=(NUM_WAVES, 1)))
    weight = np.full(NUM_WAVES, amp / np.sqrt(NUM_WAVES))
    checker = (0.0, 0.0)
    if material.pattern == STRIPES:
        weight[0], weight[1:] = amp * 0.8, amp * 0.3 / np.sqrt(NUM_WAVES)
    elif material.pattern == CHECKER:
        weight *= 0.5
        checker = (f * 0.35, amp)
    elif material.pattern == WOOD:  # long grain along x, slightly wavy, plus fine noise
        freq[:3] = np.stack([[f, rng.uniform(-0.15, 0.15) * f, 0.0] for _ in range(3)]) * rng.uniform(
            0.4, 1.0, (3, 1)
        )
        weight[:3], weight[3:] = amp * 0.5, amp * 0.15
    elif material.pattern != NOISE:
        raise ValueError(f"Material.pattern: unknown pattern {material.pattern}")
    return freq, rng.uniform(0, 2 * np.pi, NUM_WAVES), weight, checker


def build_scene(bodies: list[Body], planes: list[Plane], device: torch.device | str = "cpu") -> RenderScene:
    """Returns device tensors for ``bodies`` (posed over T frames) and static ``planes``."""
    prims = [(b, p) for b, body in enumerate(bodies) for p in body.prims]
    materials = [p.material for _, p in prims] + [pl.material for pl in planes]
    textures = [_texture_params(m) for m in materials]
    body_poses = torch.from_numpy(np.stack([b.poses for b in bodies], axis=1))  # [T, B, 4, 4]
    prim_body = torch.tensor([b for b, _ in prims], dtype=torch.long)
    body_from_prim = torch.from_numpy(np.stack([p.part_from_prim for _, p in prims]))
    world_from_prim = (body_poses[:, prim_body] @ body_from_prim).float()

    def f32(x) -> Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)

    return RenderScene(
        prims=PrimitiveSet(
            kind=torch.tensor([p.kind for _, p in prims], dtype=torch.long, device=device),
            params=f32([p.params for _, p in prims]),
            world_from_prim=world_from_prim.to(device),
        ),
        planes=PlaneSet(point=f32([pl.point for pl in planes]), normal=f32([pl.normal for pl in planes])),
        prim_body=prim_body.to(device),
        body_from_prim=body_from_prim.to(device),
        body_poses=body_poses.to(device),
        surface_instance=torch.tensor(
            [bodies[b].instance for b, _ in prims] + [0] * len(planes), dtype=torch.long, device=device
        ),
        color=f32([m.color for m in materials]),
        wave_freq=f32([t[0] for t in textures]),
        wave_phase=f32([t[1] for t in textures]),
        wave_weight=f32([t[2] for t in textures]),
        checker=f32([t[3] for t in textures]),
    )


def camera_rays(world_from_cam: Tensor, K: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Returns origins [T, 3], unit world directions [T, H*W, 3] and their camera z [H*W] per pixel centre."""
    uv = pixel_grid(height, width, device=K.device).reshape(-1, 2)
    d_cam = torch.stack(
        [(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], torch.ones_like(uv[:, 0])], -1
    )
    d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
    directions = d_cam @ world_from_cam[:, :3, :3].transpose(1, 2)
    return world_from_cam[:, :3, 3], directions, d_cam[:, 2]


def shade(scene: RenderScene, hits: Hits, lighting: Lighting | None = None) -> Tensor:
    """Returns uint8 RGB [T, R, 3]: procedural albedo times Lambertian lighting, gamma-encoded.

    ``lighting`` None is the default light (``LIGHT_DIRECTION``, ``AMBIENT``, ``DIFFUSE``).
    """
    surface = hits.surface.reshape(-1)
    # Sort rays by surface once, then texture each surface's contiguous run with its own
    # parameters: far less memory traffic than gathering per-ray texture parameters.
    order = torch.argsort(surface.int())
    p = hits.local_point.reshape(-1, 3)[order]
    counts = torch.bincount(surface + 1, minlength=scene.color.shape[0] + 1).tolist()
    texture = torch.zeros_like(p[:, 0])
    start = counts[0]  # misses (surface -1) sort first and stay untextured
    for s, count in enumerate(counts[1:]):
        if not count:
            continue
        q = p[start : start + count]
        value = (torch.sin(q @ scene.wave_freq[s].T + scene.wave_phase[s]) * scene.wave_weight[s]).sum(-1)
        checker_freq, checker_amp = scene.checker[s].tolist()
        if checker_amp:
            value = value + checker_amp * torch.tanh(6.0 * torch.sin(q * checker_freq).prod(-1))
        texture[start : start + count] = value
        start += count
    texture = torch.empty_like(texture).index_put_((order,), texture)
    albedo = scene.color[surface.clamp_min(0)] * (1.0 + texture).clamp(0.2, 1.8)[:, None]
    if lighting is None:
        light = torch.as_tensor(LIGHT_DIRECTION, dtype=p.dtype, device=p.device)
        diffuse = (hits.normal.reshape(-1, 3) @ light).clamp_min(0.0)
        linear = (albedo * (AMBIENT + DIFFUSE * diffuse)[:, None]).clamp(0.0, 1.0)
    else:
        as_tensor = lambda x: torch.as_tensor(x, dtype=p.dtype, device=p.device)  # noqa: E731
        diffuse = (hits.normal.reshape(-1, 3) @ as_tensor(lighting.direction)).clamp_min(0.0)
        light = as_tensor(lighting.ambient) + diffuse[:, None] * as_tensor(lighting.diffuse)
        linear = (albedo * light).clamp(0.0, 1.0)
    linear = torch.where((surface >= 0)[:, None], linear, torch.zeros_like(linear))
    # Gamma 2 (a square root) stands in for sRGB encoding: close enough, and much cheaper than pow.
    return (torch.sqrt(linear) * 255 + 0.5).to(torch.uint8).reshape(*hits.surface.shape, 3)


def surface_points_in_body(scene: RenderScene, hits: Hits) -> tuple[Tensor, Tensor]:
    """Returns each hit's body index [R] (-1: plane or miss) and its point in that body's frame [R, 3].

    ``hits`` must be a single frame's hits ([1, R]); plane points stay in the world frame.
    """
    surface = hits.surface[0]
    num_prims = scene.prim_body.shape[0]
    is_prim = (surface >= 0) & (surface < num_prims)
    body = torch.where(is_prim, scene.prim_body[surface.clamp(0, max(num_prims - 1, 0))], -1)
    point = hits.local_point[0].double()
    if num_prims:
        pose = scene.body_from_prim[surface.clamp(0, num_prims - 1)]
        in_body = (pose[:, :3, :3] @ point[:, :, None])[:, :, 0] + pose[:, :3, 3]
        point = torch.where(is_prim[:, None], in_body, point)
    return body, point


def points_over_time(scene: RenderScene, body: Tensor, point: Tensor) -> Tensor:
    """Returns world positions [T, R, 3] (float64) of body-frame points over every frame."""
    T = scene.body_poses.shape[0]
    world = point.expand(T, -1, -1).clone()
    for b in body.unique().tolist():
        if b < 0:
            continue
        sel = body == b
        pose = scene.body_poses[:, b]  # [T, 4, 4]
        world[:, sel] = point[sel] @ pose[:, :3, :3].transpose(1, 2) + pose[:, None, :3, 3]
    return world


def visibility(
    scene: RenderScene,
    world_points: Tensor,  # [T', R, 3] float64, at frames ``frames``
    world_from_cam: Tensor,  # [T', 4, 4] float64
    K: Tensor,
    height: int,
    width: int,
    on_plane: Tensor,  # [R] bool: the point lies on a background plane (not on a primitive)
    frames: slice = slice(None),
) -> Tensor:
    """Returns [T', R] bool: point r is inside camera t's image and the first hit along its ray.

    The background planes (table top, wall) bound the scene: cameras and objects are on their
    visible side, so the segment from a camera to any scene point never crosses a plane and
    planes never occlude. Only primitives are cast against; a point on a plane is visible when
    no primitive is hit before it, a point on a primitive when that primitive is the first hit.
    """
    cam_from_world = invert_pose(world_from_cam.double())
    in_cam = world_points @ cam_from_world[:, :3, :3].transpose(1, 2) + cam_from_world[:, None, :3, 3]
    uv, z = project(in_cam, K.double())
    in_image = (
        (z > 1e-3)
        & (uv[..., 0] >= -0.5)
        & (uv[..., 0] < width - 0.5)
        & (uv[..., 1] >= -0.5)
        & (uv[..., 1] < height - 0.5)
    )
    origins = world_from_cam[:, :3, 3].double()
    offset = world_points - origins[:, None]
    distance = offset.norm(dim=-1)
    directions = (offset / distance[..., None]).float()
    # Points outside the image get no useful ray: a zero range culls every primitive for them.
    max_distance = torch.where(in_image, distance * (1 + 1e-3) + 1e-4, 0.0).float()
    no_planes = PlaneSet(scene.planes.point[:0], scene.planes.normal[:0])
    hits = cast_rays(
        origins.float(), directions, scene.prims.frames(frames), no_planes, max_distance, need_surface=False
    )
    first = hits.distance.double()
    tolerance = distance * VISIBILITY_TOLERANCE + 1e-5
    # On a primitive the first hit must be the point itself: not something in front of it, and
    # not something behind it (a ray that grazes past a silhouette misses the point's surface).
    first_hit = torch.where(on_plane, first >= distance - tolerance, (first - distance).abs() <= tolerance)
    return in_image & first_hit
