"""Analytic ray casting of boxes, cylinders, spheres and infinite planes in torch.

Why our own ray caster rather than a rasteriser or a physics engine: MoMap-Sim needs exact
depth, instance ids and the *object-local* coordinates of every pixel (to follow each surface
point through time for the GT MoMap), and an exact "first hit along a ray" test for visibility.
Closed-form ray/primitive intersection gives all of these to float precision, installs with
pip alone (torch), and runs batched on CPU and CUDA. Rasterisers (nvdiffrast, pytorch3d) need
compiled extensions and meshes, and their depth is quantised by the mesh.

Rays are grouped per frame: every ray of frame ``t`` starts at the same origin (the camera
centre), which makes a cheap bounding-sphere cull possible with one batched matmul; only
(ray, primitive) pairs that pass the cull are intersected exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BOX, CYLINDER, SPHERE = 0, 1, 2
_EPS = 1e-6


@dataclass
class PrimitiveSet:
    """Bounded primitives of a scene over T frames (P primitives)."""

    kind: Tensor  # [P] long: BOX, CYLINDER or SPHERE
    params: Tensor  # [P, 3]: box half extents | (radius, half height, 0) about local z | (radius, 0, 0)
    world_from_prim: Tensor  # [T, P, 4, 4] pose of every primitive at every frame

    @property
    def bound_radius(self) -> Tensor:
        """Returns [P] radii of spheres around each primitive's origin that contain it."""
        box = self.params.norm(dim=-1)
        cylinder = torch.hypot(self.params[:, 0], self.params[:, 1])
        sphere = self.params[:, 0]
        return torch.where(self.kind == BOX, box, torch.where(self.kind == CYLINDER, cylinder, sphere))

    def frames(self, index: slice | Tensor) -> PrimitiveSet:
        """Returns the same primitives restricted to some frames."""
        return PrimitiveSet(self.kind, self.params, self.world_from_prim[index])


@dataclass
class PlaneSet:
    """Static infinite planes (table, walls): points ``x`` with ``(x - point) . normal = 0``."""

    point: Tensor  # [L, 3]
    normal: Tensor  # [L, 3] unit normals (the visible side)


@dataclass
class Hits:
    """First hits of a [T, R] batch of rays."""

    distance: Tensor  # [T, R] ray parameter of the hit (inf = miss); rays have unit direction
    surface: Tensor  # [T, R] long: primitive index p in [0, P), P + l for plane l, -1 for a miss
    local_point: Tensor  # [T, R, 3] hit point in the primitive's frame (world frame for planes)
    normal: Tensor  # [T, R, 3] unit world-frame normal facing the ray


def cast_rays(
    origins: Tensor,  # [T, 3] one origin per frame
    directions: Tensor,  # [T, R, 3] unit directions
    prims: PrimitiveSet,
    planes: PlaneSet,
    max_distance: Tensor | None = None,  # [T, R] primitives wholly beyond are skipped (visibility rays)
    need_surface: bool = True,  # False: only ``distance`` and ``surface`` are filled (faster)
    chunk_elements: int = 1 << 22,  # bounds memory: frames are processed in chunks of T' * R * P pairs
) -> Hits:
    """Returns the first hit of every ray among ``prims`` and ``planes``.

    Ties between primitives at exactly the same distance go to the lower primitive index, and
    a primitive must be strictly closer than a plane to win, so the result is deterministic.
    """
    T, R, _ = directions.shape
    num_prims = max(prims.kind.shape[0], 1)
    step = max(1, chunk_elements // (R * num_prims))
    if T > step:
        parts = [
            cast_rays(
                origins[i : i + step],
                directions[i : i + step],
                prims.frames(slice(i, i + step)),
                planes,
                None if max_distance is None else max_distance[i : i + step],
                need_surface,
                chunk_elements,
            )
            for i in range(0, T, step)
        ]
        return Hits(
            *(
                torch.cat([getattr(h, f) for h in parts])
                for f in ("distance", "surface", "local_point", "normal")
            )
        )
    return _cast_chunk(origins, directions, prims, planes, max_distance, need_surface)


def _cast_chunk(
    origins: Tensor,
    directions: Tensor,
    prims: PrimitiveSet,
    planes: PlaneSet,
    max_distance: Tensor | None,
    need_surface: bool,
) -> Hits:
    T, R, _ = directions.shape
    device, dtype = directions.device, directions.dtype
    P = prims.kind.shape[0]

    # Planes are few and unbounded: intersect densely; they also cull primitives behind them.
    distance = torch.full((T, R), torch.inf, dtype=dtype, device=device)
    surface = torch.full((T, R), -1, dtype=torch.long, device=device)
    normal = torch.zeros(T, R, 3, dtype=dtype, device=device)
    if planes.point.shape[0]:
        denom = directions @ planes.normal.T  # [T, R, L]
        offset = ((planes.point[None] - origins[:, None]) * planes.normal[None]).sum(-1)  # [T, L]
        dist = offset[:, None, :] / denom
        dist = torch.where((dist > _EPS) & (denom < 0), dist, torch.inf)  # the visible side only
        distance, plane_idx = dist.min(dim=-1)
        surface = torch.where(torch.isfinite(distance), P + plane_idx, -1)
        if need_surface:
            normal = planes.normal[plane_idx]
    if need_surface:  # plane hits keep world coordinates as their "local" point
        local_point = origins[:, None] + distance.clamp(max=1e6)[..., None] * directions
    else:
        local_point = torch.zeros_like(normal)

    if P:
        rotation = prims.world_from_prim[..., :3, :3]  # [T, P, 3, 3]
        to_center = prims.world_from_prim[..., :3, 3] - origins[:, None]  # [T, P, 3]
        o_local = -(to_center[..., None, :] @ rotation)[..., 0, :]  # R^T (o - c): [T, P, 3]
        radius = prims.bound_radius.to(dtype)
        threshold = (to_center**2).sum(-1) - radius**2  # [T, P]
        limit = distance if max_distance is None else torch.minimum(distance, max_distance)
        found = []  # per kind: (ray, primitive, distance, local point, local normal)
        for value, fn in (
            (BOX, _intersect_box),
            (CYLINDER, _intersect_cylinder),
            (SPHERE, _intersect_sphere),
        ):
            group = (prims.kind == value).nonzero()[:, 0]
            if not group.numel():
                continue
            # Cull: the ray passes within the bounding sphere, which is not wholly behind the
            # origin nor beyond the nearest plane hit:  |oc|^2 - along^2 <= r^2, -r < along < dist + r.
            along = directions @ to_center[:, group].transpose(1, 2)  # [T, R, Pk]
            r = radius[group]
            keep = (along * along >= threshold[:, None, group]) & (along > -r)
            keep &= along < (limit[..., None] + r)
            pair = keep.view(-1).nonzero()[:, 0]
            if not pair.numel():
                continue
            Pk = group.numel()
            ray, p_idx = pair // Pk, group[pair % Pk]
            frame_prim = (ray // R) * P + p_idx
            # R^T d for every (ray, primitive) of this kind, contiguous so pairs are row gathers.
            local_dirs = directions @ rotation[:, group].permute(0, 2, 1, 3).reshape(T, 3, 3 * Pk)
            d_local = local_dirs.view(-1, 3)[pair]
            o_pair = o_local.view(-1, 3)[frame_prim]
            dist, n_local = fn(o_pair, d_local, prims.params[p_idx].to(dtype))
            found.append((ray, p_idx, dist, o_pair, d_local, n_local, frame_prim))
        if found:
            ray, p_idx, dist, o_pair, d_local, n_local, frame_prim = (
                torch.cat(x) for x in zip(*found, strict=True)
            )
            flat_distance = distance.view(-1)
            ok = dist < flat_distance[ray]  # finite and strictly in front of the planes
            # Non-negative floats order like their bit patterns: pack (distance, index) in one key.
            key = (dist.view(torch.int32).to(torch.long) << 20) | p_idx
            key = torch.where(ok, key, torch.iinfo(torch.long).max)
            best = torch.full((T * R,), torch.iinfo(torch.long).max, dtype=torch.long, device=device)
            best.scatter_reduce_(0, ray, key, reduce="amin")
            win = (ok & (key == best[ray])).nonzero()[:, 0]
            ray_w = ray[win]
            flat_distance[ray_w] = dist[win]
            surface.view(-1)[ray_w] = p_idx[win]
            if need_surface:
                local_point.view(-1, 3)[ray_w] = o_pair[win] + dist[win, None] * d_local[win]
                world_normal = (rotation.reshape(-1, 3, 3)[frame_prim[win]] @ n_local[win, :, None])[..., 0]
                normal.view(-1, 3)[ray_w] = world_normal
    return Hits(distance=distance, surface=surface, local_point=local_point, normal=normal)


def _safe_reciprocal(d: Tensor) -> Tensor:
    tiny = torch.where(d >= 0, torch.full_like(d, 1e-12), torch.full_like(d, -1e-12))
    return 1.0 / torch.where(d.abs() < 1e-12, tiny, d)


def _intersect_box(o: Tensor, d: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
    """Returns (distance [M], local normal [M, 3]) of rays against axis-aligned boxes (slab method)."""
    inv = _safe_reciprocal(d)
    t1, t2 = (-half - o) * inv, (half - o) * inv
    t_near, axis = torch.minimum(t1, t2).max(dim=-1)
    t_far = torch.maximum(t1, t2).min(dim=-1).values
    hit = (t_near <= t_far) & (t_near > _EPS)
    normal = torch.zeros_like(o)
    normal.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
    return torch.where(hit, t_near, torch.inf), normal


def _intersect_cylinder(o: Tensor, d: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """Returns (distance, local normal) of rays against closed cylinders along local z."""
    radius, half_height = params[:, 0], params[:, 1]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - radius**2
    disc = b**2 - a * c
    t_side = (-b - torch.sqrt(disc.clamp_min(0))) / a.clamp_min(1e-12)
    z_side = o[:, 2] + t_side * d[:, 2]
    side_ok = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (z_side.abs() <= half_height)
    # Only the cap facing the ray can be hit first.
    cap_z = torch.where(d[:, 2] < 0, half_height, -half_height)
    t_cap = (cap_z - o[:, 2]) * _safe_reciprocal(d[:, 2])
    cap_xy = o[:, :2] + t_cap[:, None] * d[:, :2]
    cap_ok = (t_cap > _EPS) & ((cap_xy**2).sum(-1) <= radius**2)
    t_side = torch.where(side_ok, t_side, torch.inf)
    t_cap = torch.where(cap_ok, t_cap, torch.inf)
    use_cap = t_cap < t_side
    dist = torch.minimum(t_side, t_cap)
    side_point = o + t_side.clamp(max=1e6)[:, None] * d
    side_normal = torch.stack([side_point[:, 0], side_point[:, 1], torch.zeros_like(a)], -1) / radius[:, None]
    cap_normal = torch.zeros_like(o)
    cap_normal[:, 2] = torch.sign(cap_z)
    return dist, torch.where(use_cap[:, None], cap_normal, side_normal)


def _intersect_sphere(o: Tensor, d: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """Returns (distance, local normal) of rays against spheres centred at the local origin."""
    radius = params[:, 0]
    b = (o * d).sum(-1)
    c = (o**2).sum(-1) - radius**2
    disc = b**2 - c
    dist = -b - torch.sqrt(disc.clamp_min(0))
    hit = (disc >= 0) & (dist > _EPS)
    normal = (o + dist.clamp(max=1e6)[:, None] * d) / radius[:, None]
    return torch.where(hit, dist, torch.inf), normal
