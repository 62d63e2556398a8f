"""Clip generation: sample a scene and a feasible task, animate it, render it, derive the GT MoMap."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from momaplib.geometry import intrinsics_from_fov, invert_pose, look_at
from momaplib.momap import MoMap
from momaplib.sim.agents import agent_part_poses, make_gripper, make_hand
from momaplib.sim.appearance import randomize_appearance
from momaplib.sim.clip import Clip
from momaplib.sim.config import FOV_RANGE, SimConfig
from momaplib.sim.motion import evaluate_phases, smooth_wobble, tcp_poses
from momaplib.sim.objects import (
    COLORS,
    NOISE,
    SMALL_CATEGORIES,
    WOOD,
    Material,
    SceneObject,
    make_object,
)
from momaplib.sim.raycast import Hits, cast_rays
from momaplib.sim.render import (
    VISIBILITY_TOLERANCE,
    Body,
    Plane,
    RenderScene,
    build_scene,
    camera_rays,
    points_over_time,
    shade,
    surface_points_in_body,
    visibility,
)
from momaplib.sim.scene import draw_camera, place_clutter, room_background, scene_rng, table_axes
from momaplib.sim.sensor import observe_render
from momaplib.sim.tasks import Plan, Workspace, place_objects, plan_task
from momaplib.sim.variants import motion_rng, vary_plan, vary_timing

WOOD_TONES = [(0.55, 0.38, 0.22), (0.68, 0.52, 0.34), (0.42, 0.29, 0.19), (0.78, 0.70, 0.58)]
FIXTURES = ("cabinet", "box", "tray")
#: The actions a task variant draws from: planning them leaves the objects as they are (drawer and
#: lid planning sets the part's starting pose, and a scene has one of each fixture anyway).
VARIANT_ACTIONS = ("push", "lift", "pick_place")
_MAX_ATTEMPTS = 400
#: The target part must cover at least this fraction of the reference image.
MIN_TARGET_FRACTION = 0.0015
#: Where the hand's forearm points: a shoulder right of and below the head (metres, world axes):
#: (right, horizontal forward, up), so the forearm enters the view from its bottom edge.
SHOULDER_FROM_HEAD = (0.17, 0.03, -0.33)


def clip_seed(base_seed: int, index: int) -> int:
    """Returns the seed of clip ``index`` of a dataset drawn with ``base_seed`` (stable across runs)."""
    digest = hashlib.sha256(f"momap-sim:{base_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Simulation:
    """A generated clip together with the scene that rendered it, for exact probing in tests."""

    clip: Clip
    scene: RenderScene
    world_from_cam: np.ndarray  # [T, 4, 4] float64
    K: np.ndarray  # (3, 3)

    def probe(self, t: int, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns z-depth [N] and instance ids [N] rendered at sub-pixel ``uv`` [N, 2] of frame t."""
        device = self.scene.prims.kind.device
        world_from_cam = torch.from_numpy(self.world_from_cam[t : t + 1]).float().to(device)
        K = torch.from_numpy(self.K).to(device)
        uv = torch.as_tensor(uv, dtype=torch.float32, device=device)
        d_cam = torch.stack(
            [(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], torch.ones_like(uv[:, 0])], -1
        )
        d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
        directions = (d_cam @ world_from_cam[0, :3, :3].T)[None]
        hits = cast_rays(
            world_from_cam[:, :3, 3], directions, self.scene.prims.frames(slice(t, t + 1)), self.scene.planes
        )
        depth = hits.distance[0] * d_cam[:, 2]
        instance = self.scene.surface_instance[hits.surface[0].clamp_min(0)]
        return depth.cpu().numpy(), instance.cpu().numpy()


def generate_clip(seed: int, config: SimConfig | None = None) -> Clip:
    """Returns the clip of ``seed`` under ``config``; the same inputs give bit-identical clips.

    Bit-identical holds for the same device and torch build; floating-point reductions may
    differ across devices, so record the device with the dataset.
    """
    return simulate(seed, config).clip


def simulate(seed: int, config: SimConfig | None = None) -> Simulation:
    """Returns the ``Simulation`` of ``seed`` under ``config`` (the clip plus its scene)."""
    config = config or SimConfig()
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    T, H, W = config.num_frames, config.height, config.width
    K = intrinsics_from_fov(W, H, config.fov_deg)  # the clip's own under camera randomisation
    device = torch.device(config.device)
    times = np.linspace(0.0, 1.0, T)
    min_target_pixels = max(2, round(MIN_TARGET_FRACTION * H * W))
    task_rng = np.random.default_rng([seed, config.task_variant]) if config.task_variant else None
    # A motion variant draws from its own stream, after ``rng`` has made every draw of variant 0,
    # so the scene, task and frame 0 are those of variant 0.
    variant_rng = motion_rng(seed, config.task_variant, config.motion_variant)
    # Camera randomisation, room and clutter draw from a stream of their own, so that the
    # default clips stay as they were (``momaplib.sim.scene``).
    varied = config.camera_randomisation or config.room or config.clutter
    variation_rng = scene_rng(seed, config.task_variant) if varied else None
    for _ in range(_MAX_ATTEMPTS):
        layout = _sample_layout(rng, config, K, task_rng, variation_rng)
        if layout is None:
            continue
        plan, agent, world_from_cam0, workspace, look_target, in_view, K, aim, in_image = layout
        K_t = torch.from_numpy(K).to(device)
        start, end = rng.uniform(0.0, 0.08), rng.uniform(0.9, 1.0)
        phase_times = times
        if variant_rng is not None:
            plan = vary_plan(variant_rng, plan, agent, workspace, in_view)
            phase_times, start, end = vary_timing(variant_rng, times)
        tcp, opening, target_poses = evaluate_phases(plan.phases, phase_times, plan.target_rest, start, end)
        world_from_cam = _camera_path(rng, config, world_from_cam0, look_target, times, aim)
        if variant_rng is not None and config.family == "egocentric":
            # Another hand-held path from the very same first pose (bit for bit).
            first = world_from_cam[0]
            world_from_cam = _camera_path(variant_rng, config, world_from_cam0, look_target, times, aim)
            world_from_cam[0] = first
        shoulder = _shoulder_path(world_from_cam) if agent.forearm is not None else None
        agent_poses = agent_part_poses(agent, tcp_poses(tcp, plan.yaw), opening, shoulder)
        planes, statics = _background(rng, workspace), []
        behind = (planes[1].point[:2] - workspace.center) @ workspace.forward - 0.05
        beside = workspace.half_right + 0.25
        if config.room:
            planes, statics, behind, beside = room_background(
                variation_rng, planes, workspace, world_from_cam0[:3, 3], T
            )
        clutter = []
        if config.clutter:
            clutter = place_clutter(variation_rng, config.clutter, workspace, behind, beside, in_image)
        bodies, instances = _bodies(plan, agent, agent_poses, target_poses, T, clutter)
        scene = build_scene(bodies + statics, planes, device)
        world_from_cam_t = torch.from_numpy(world_from_cam).float().to(device)
        origins, directions, ray_z = camera_rays(world_from_cam_t, K_t, H, W)
        hits = cast_rays(origins, directions, scene.prims, scene.planes)
        # The target (and destination) must be seen in the reference frame, or the MoMap cannot
        # show the motion and a model cannot know where it goes.
        seen = scene.surface_instance[hits.surface[0].clamp_min(0)]
        names = [plan.task.target] + ([plan.task.destination] if plan.task.destination else [])
        if all(int((seen == instances[name]).sum()) >= min_target_pixels for name in names):
            break
    else:  # pragma: no cover - sampling is loose enough that this never triggers in practice
        raise RuntimeError(f"MoMap-Sim: no feasible scene for seed {seed} after {_MAX_ATTEMPTS} attempts")

    lighting = None
    if config.appearance > 0:  # shading only: the ground truth below never reads colours
        scene, lighting = randomize_appearance(scene, config.appearance, seed)
    frames = shade(scene, hits, lighting).reshape(T, H, W, 3)
    depth = (hits.distance * ray_z).reshape(T, H, W)
    instance_video = scene.surface_instance[hits.surface.clamp_min(0)].reshape(T, H, W)

    # GT MoMap (t0 = 0): follow each reference pixel's surface point with its body.
    hits0 = Hits(hits.distance[:1], hits.surface[:1], hits.local_point[:1], hits.normal[:1])
    body, point = surface_points_in_body(scene, hits0)
    world_points = points_over_time(scene, body, point)  # [T, HW, 3] float64
    world_from_cam64 = torch.from_numpy(world_from_cam).to(device)
    ref_from_world = invert_pose(world_from_cam64[0])
    xyz = world_points @ ref_from_world[:3, :3].T + ref_from_world[:3, 3]
    valid = hits.surface[0] >= 0
    visible = torch.zeros(T, H * W, dtype=torch.bool, device=device)
    visible[0] = valid
    if T > 1:
        later_cams = world_from_cam64[1:]
        static_camera = bool((world_from_cam == world_from_cam[:1]).all())
        if static_camera:
            # A static point under a static camera keeps its pixel ray, so it is visible exactly
            # when that pixel still sees it (only a moving part can come in front); only points
            # on moving bodies need rays of their own.
            moving_body = (scene.body_poses != scene.body_poses[:1]).flatten(2).any(-1).any(0)
            on_moving = (body >= 0) & moving_body[body.clamp_min(0)]
            visible[1:] = hits.distance[1:] >= hits.distance[:1] * (1 - VISIBILITY_TOLERANCE)
            index = on_moving.nonzero()[:, 0]
            if index.numel():
                points, on_plane = world_points[1:, index], body[index] < 0
                visible[1:, index] = visibility(
                    scene, points, later_cams, K_t, H, W, on_plane, frames=slice(1, None)
                )
        else:
            visible[1:] = visibility(scene, world_points[1:], later_cams, K_t, H, W, body < 0, slice(1, None))
        visible[1:] &= valid
    ref_from_cam = ref_from_world @ world_from_cam64

    task = plan.task
    task.target_id = instances[task.target]
    if task.destination is not None:
        task.destination_id = instances[task.destination]
    info = _instance_info(plan, agent.kind, instances, clutter)
    if config.sensor != "ideal":  # only the observations degrade; the GT above stays exact
        frames, depth = observe_render(
            config.sensor, seed, frames, depth, hits, directions, instance_video, K, info
        )
    momap = MoMap(
        xyz=xyz.reshape(T, H, W, 3).float().cpu().numpy(),
        valid=valid.reshape(H, W).cpu().numpy(),
        visible=visible.reshape(T, H, W).cpu().numpy(),
        rgb=frames[0].cpu().numpy(),
        instance=instance_video[0].int().cpu().numpy(),
        K=K,
        ref_from_cam=ref_from_cam.float().cpu().numpy(),
        prompt=plan.prompt,
        meta={
            "family": config.family,
            "seed": int(seed),
            "t0": 0,
            "instances": {str(k): v for k, v in info.items()},
            "task": {"action": task.action, "target_id": task.target_id},
            **_variation_meta(config),
        },
    )
    clip = Clip(
        frames=frames.cpu().numpy(),
        depth=depth.cpu().numpy(),
        instances=instance_video.int().cpu().numpy(),
        task=task,
        momap=momap,
        family=config.family,
        seed=int(seed),
        meta={"seconds": time.perf_counter() - started},
    )
    return Simulation(clip, scene, world_from_cam, K)


# ----------------------------------------------------------------------------- scene sampling
def _sample_layout(
    rng: np.random.Generator,
    config: SimConfig,
    K: np.ndarray,
    task_rng: np.random.Generator | None = None,
    variation_rng: np.random.Generator | None = None,
):
    """Draws camera, objects, agent and task; returns None when the draw is infeasible.

    With ``task_rng`` (a task variant) the task is planned as for variant 0, so that ``rng``
    advances exactly as there and the rest of the clip (camera path, background) matches, and is
    then re-drawn from ``task_rng``. With camera randomisation the camera is varied by a draw
    of ``variation_rng`` (``momaplib.sim.scene``); ``K`` is then the clip's own.
    Returns (plan, agent, world_from_cam0, workspace, look_target, in_view, K, aim, in_image):
    ``aim`` is the (4, 4) rotation of the camera off its look-at pose (None: none).
    """
    egocentric = config.family == "egocentric"
    look_target = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), 0.0])
    if egocentric:
        distance, elevation, azimuth = rng.uniform(0.42, 0.55), rng.uniform(50, 68), rng.uniform(-20, 20)
    else:
        distance, elevation, azimuth = rng.uniform(0.45, 0.58), rng.uniform(45, 62), rng.uniform(-12, 12)
    fov, aim = config.fov_deg, None
    if config.camera_randomisation:
        camera = draw_camera(variation_rng, config.camera_randomisation, config.fov_deg, FOV_RANGE)
        distance *= camera.distance_scale
        elevation, fov, aim = camera.elevation(elevation), camera.fov_deg, camera.offset
        K = intrinsics_from_fov(config.width, config.height, fov)
    el, az = math.radians(elevation), math.radians(azimuth)
    horizontal = np.array([math.sin(az), math.cos(az), 0.0])
    eye = look_target - distance * math.cos(el) * horizontal + np.array([0.0, 0.0, distance * math.sin(el)])
    world_from_cam0 = look_at(eye, look_target, np.array([0.0, 0.0, 1.0]))
    if aim is None:
        right = world_from_cam0[:2, 0] / np.linalg.norm(world_from_cam0[:2, 0])
        forward = world_from_cam0[:2, 2] / np.linalg.norm(world_from_cam0[:2, 2])
    else:
        world_from_cam0 = world_from_cam0 @ aim
        right, forward = table_axes(world_from_cam0, look_target)
    view_width = 2 * distance * math.tan(math.radians(fov) / 2)
    workspace = Workspace(look_target[:2], right, forward, 0.36 * view_width, 0.3 * view_width)
    cam_from_world0 = invert_pose(world_from_cam0)

    corner_signs = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (0, 1)])
    # Plain numpy: this runs thousands of times per clip on 8 points, where torch overhead dominates.
    pixel_from_world = K.astype(np.float64) @ cam_from_world0[:3]
    low = np.array([0.04 * config.width, 0.04 * config.height])
    high = np.array([config.width - 1, config.height - 1]) - low

    def in_view(obj: SceneObject) -> bool:
        corners = corner_signs * np.array([*obj.half_size, obj.height, 1.0])
        projected = (pixel_from_world @ obj.world_from_object @ corners.T).T  # [8, 3]
        z = projected[:, 2]
        if (z <= 0.1).any():
            return False
        uv = projected[:, :2] / z[:, None]
        return bool((uv >= low).all() and (uv <= high).all())

    def in_image(obj: SceneObject) -> bool:
        projected = pixel_from_world @ obj.world_from_object @ np.array([0.0, 0.0, obj.height / 2, 1.0])
        uv = projected[:2] / max(projected[2], 1e-9)
        return bool(
            projected[2] > 0.1 and (uv >= 0).all() and (uv <= [config.width - 1, config.height - 1]).all()
        )

    action = str(rng.choice(list(config.actions)))
    required = {
        "push": [rng.choice(SMALL_CATEGORIES)],
        "lift": [rng.choice(SMALL_CATEGORIES)],
        "pick_place": [rng.choice(SMALL_CATEGORIES), rng.choice([*SMALL_CATEGORIES, "tray", "tray"])],
        "open_drawer": ["cabinet"],
        "close_drawer": ["cabinet"],
        "open_lid": ["box"],
        "close_lid": ["box"],
    }[action]
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    categories = [str(c) for c in required]
    while len(categories) < count:
        category = str(rng.choice([*SMALL_CATEGORIES, *SMALL_CATEGORIES, *FIXTURES]))
        if category in FIXTURES and category in categories:
            continue
        categories.append(category)
    colors = rng.choice(list(COLORS), size=len(categories), replace=False)
    objects = [make_object(c, str(col), rng) for c, col in zip(categories, colors, strict=True)]
    if not place_objects(rng, objects, workspace, in_view):
        return None
    agent = make_hand(rng) if egocentric else make_gripper(rng)
    # The agent starts above the table, on the camera side for the hand (it comes from the body).
    side = rng.uniform(0.04, 0.12) if egocentric else rng.uniform(-0.12, 0.12)
    back = -rng.uniform(0.04, 0.12) if egocentric else rng.uniform(-0.1, 0.05)
    home_xy = look_target[:2] + side * right + back * forward
    z_home = max(o.height for o in objects) + (
        rng.uniform(0.05, 0.09) if egocentric else rng.uniform(0.08, 0.14)
    )
    home = np.array([*home_xy, z_home])
    plan = plan_task(rng, action, objects, agent, workspace, home, in_view)
    if plan is None:
        return None
    if task_rng is not None:
        actions = [a for a in VARIANT_ACTIONS if a in config.actions]
        plan = _variant_plan(task_rng, plan, actions, objects, agent, workspace, home, in_view)
    return plan, agent, world_from_cam0, workspace, look_target, in_view, K, aim, in_image


def _variation_meta(config: SimConfig) -> dict:
    """Returns the settings of the scene and motion variations that differ from their defaults.

    Clips with every variation at its default carry no such keys, so their files stay as before.
    """
    names = ("motion_variant", "camera_randomisation", "room", "clutter", "sensor", "appearance")
    changed = {name: getattr(config, name) for name in names}
    return {k: v for k, v in changed.items() if v != SimConfig.__dataclass_fields__[k].default}


def _variant_plan(
    task_rng, base: Plan, actions, objects, agent, workspace, home, in_view, tries: int = 12
) -> Plan:
    """Returns a plan of one of ``actions`` on the same objects whose target differs from
    ``base``'s where the scene allows one (else the first feasible re-draw, else ``base``)."""
    fallback = None
    for _ in range(tries if actions else 0):
        action = str(task_rng.choice(actions))
        plan = plan_task(task_rng, action, objects, agent, workspace, home, in_view)
        if plan is None:
            continue
        if plan.target_object != base.target_object:
            return plan
        fallback = fallback or plan
    return fallback or base


def _camera_path(
    rng,
    config: SimConfig,
    world_from_cam0: np.ndarray,
    look_target: np.ndarray,
    times: np.ndarray,
    aim: np.ndarray | None = None,
) -> np.ndarray:
    """Returns [T, 4, 4] world_from_cam: fixed for tabletop, smooth hand-held motion for egocentric.

    ``aim`` (4, 4): the rotation of the camera off its look-at pose (camera randomisation).
    """
    T = len(times)
    if config.family != "egocentric":
        return np.broadcast_to(world_from_cam0, (T, 4, 4)).copy()
    eye0 = world_from_cam0[:3, 3]
    eye = eye0 + smooth_wobble(rng, times, np.array([0.035, 0.03, 0.02]), (0.25, 1.0))
    target = look_target + smooth_wobble(rng, times, np.array([0.04, 0.04, 0.0]), (0.25, 1.0))
    # Anchor the path so that frame 0 is exactly the sampled reference camera.
    eye += eye0 - eye[0]
    target += look_target - target[0]
    poses = look_at(eye, target, np.array([0.0, 0.0, 1.0]))
    if aim is not None:
        poses = poses @ aim
    roll = smooth_wobble(rng, times, np.array([math.radians(2.0)]), (0.25, 1.0))[:, 0]
    roll -= roll[0]
    c, s = np.cos(roll), np.sin(roll)
    spin = np.zeros((T, 4, 4))
    spin[:, 0, 0], spin[:, 0, 1], spin[:, 1, 0], spin[:, 1, 1] = c, -s, s, c
    spin[:, 2, 2] = spin[:, 3, 3] = 1.0
    return poses @ spin


def _shoulder_path(world_from_cam: np.ndarray) -> np.ndarray:
    """Returns the [T, 3] shoulder positions that follow the head (the camera)."""
    right = world_from_cam[:, :3, 0].copy()
    right[:, 2] = 0.0
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    forward = np.cross(np.array([0.0, 0.0, 1.0]), right)
    side, ahead, up = SHOULDER_FROM_HEAD
    return world_from_cam[:, :3, 3] + side * right + ahead * forward + np.array([0.0, 0.0, up])


def _background(rng: np.random.Generator, workspace: Workspace) -> list[Plane]:
    wood = WOOD_TONES[int(rng.integers(len(WOOD_TONES)))]
    table = Plane(
        np.zeros(3),
        np.array([0.0, 0.0, 1.0]),
        Material(wood, WOOD, rng.uniform(40, 80), 0.2, int(rng.integers(1 << 31))),
    )
    wall_color = tuple(float(c) for c in rng.uniform(0.55, 0.85, size=3))
    wall_at = np.array([*(workspace.center + workspace.forward * rng.uniform(0.6, 0.9)), 0.0])
    wall = Plane(
        wall_at,
        np.array([*-workspace.forward, 0.0]),
        Material(wall_color, NOISE, 25.0, 0.12, int(rng.integers(1 << 31))),
    )
    return [table, wall]


def _bodies(
    plan: Plan, agent, agent_poses, target_poses, T: int, clutter: list[SceneObject] = ()
) -> tuple[list[Body], dict[str, int]]:
    """Returns the rigid bodies with poses over time, and instance ids by name (clutter after the agent)."""
    bodies: list[Body] = []
    instances: dict[str, int] = {}
    for i, obj in enumerate(plan.objects):
        for j, part in enumerate(obj.parts):
            instances[part.name] = len(instances) + 1
            if i == plan.target_object and j == plan.target_part:
                poses = target_poses
            else:
                poses = np.broadcast_to(obj.world_from_object @ part.object_from_part, (T, 4, 4))
            bodies.append(Body(part.name, instances[part.name], np.ascontiguousarray(poses), part.prims))
    instances[agent.kind] = len(instances) + 1
    for part, poses in zip(agent.parts, agent_poses, strict=True):
        bodies.append(Body(part.name, instances[agent.kind], poses, part.prims))
    for obj in clutter:
        part = obj.parts[0]
        instances[part.name] = len(instances) + 1
        poses = np.broadcast_to(obj.world_from_object, (T, 4, 4)).copy()
        bodies.append(Body(part.name, instances[part.name], poses, part.prims))
    return bodies, instances


def _instance_info(
    plan: Plan, agent_kind: str, instances: dict[str, int], clutter: list[SceneObject] = ()
) -> dict[int, dict[str, str]]:
    info: dict[int, dict[str, str]] = {}
    for obj in plan.objects:
        for part in obj.parts:
            role = "static"
            if part.name == plan.task.target:
                role = "target"
            elif part.name == plan.task.destination:
                role = "destination"
            category = obj.category if part is obj.parts[0] else part.name
            info[instances[part.name]] = {"name": part.name, "category": category, "role": role}
    info[instances[agent_kind]] = {"name": agent_kind, "category": agent_kind, "role": "agent"}
    for obj in clutter:
        name = obj.parts[0].name
        info[instances[name]] = {"name": name, "category": "clutter", "role": "static"}
    return info
