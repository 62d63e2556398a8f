"""MoMap-Sim: the ground truth is exact, the motion is plausible, the prompt says what moves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from momaplib.geometry import invert_pose, project, transform_points
from momaplib.momap import moving_mask
from momaplib.sim import ACTIONS, SimConfig, generate_clip, simulate
from momaplib.sim.raycast import BOX, CYLINDER, SPHERE, PlaneSet, PrimitiveSet, cast_rays
from tests.conftest import tiny_simulation

SEEDS = range(6)


def _visible_projections(sim, t: int):
    """Returns (uv, z, reference pixel index) of points visible at frame t, projected into camera t."""
    momap = sim.clip.momap
    cam_from_ref = invert_pose(momap.ref_from_cam[t].astype(np.float64))
    points = transform_points(cam_from_ref, momap.xyz[t].reshape(-1, 3).astype(np.float64))
    uv, z = project(points, momap.K.astype(np.float64))
    index = np.flatnonzero(momap.visible[t].reshape(-1))
    return uv[index], z[index], index


@pytest.mark.parametrize("seed", SEEDS)
def test_visible_points_project_onto_matching_depth_and_instance(family, seed):
    sim = tiny_simulation(family, seed)
    clip = sim.clip
    T, H, W = clip.depth.shape
    ref_instance = clip.momap.instance.reshape(-1)
    for t in range(T):
        uv, z, index = _visible_projections(sim, t)
        assert len(index) > 0.1 * H * W  # the check below is not vacuous
        # Exact check: render depth and instance through the projected sub-pixel positions.
        # A point exactly on a silhouette may be missed by float rounding of its projection,
        # so those (and only those) must match within 0.02 px of it.
        depth, instance = sim.probe(t, uv)
        ok = (np.abs(depth - z) <= 1e-3 * z) & (instance == ref_instance[index])
        assert ok.mean() > 0.99
        for offset in ((0.02, 0), (-0.02, 0), (0, 0.02), (0, -0.02)):
            if ok.all():
                break
            depth, instance = sim.probe(t, uv[~ok] + offset)
            ok[~ok] = (np.abs(depth - z[~ok]) <= 1e-3 * z[~ok]) & (instance == ref_instance[index][~ok])
        assert ok.all(), (t, uv[~ok])
        # The rendered frames agree: the instance is among the four pixel centres around the
        # projection (parts thinner than a pixel, like fingers at 32x32, may fall between them),
        # and the depth matches where the point lands on a pixel centre (as every static point
        # does under a static camera).
        corners = [
            np.clip(np.floor(uv) + offset, 0, [W - 1, H - 1]).astype(int)
            for offset in ((0, 0), (0, 1), (1, 0), (1, 1))
        ]
        around = np.stack([clip.instances[t, c[:, 1], c[:, 0]] for c in corners], -1)
        assert (around == ref_instance[index, None]).any(-1).mean() > 0.98
        u, v = np.rint(uv).astype(int).T
        on_centre = np.abs(uv - np.rint(uv)).max(-1) < 1e-3
        np.testing.assert_allclose(clip.depth[t, v, u][on_centre], z[on_centre], rtol=1e-3)
        if family == "tabletop":
            assert on_centre.mean() > 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_static_parts_do_not_move_and_targets_move_rigidly(family, seed):
    clip = tiny_simulation(family, seed).clip
    momap = clip.momap
    info = clip.instance_info
    moving_ids = {i for i, v in info.items() if v["role"] in ("target", "agent")}
    static = momap.valid & ~np.isin(momap.instance, list(moving_ids))
    assert static.sum() > 0
    # Bit-exact: camera motion is removed from the MoMap, static points keep their position.
    assert np.array_equal(
        momap.xyz[:, static], np.broadcast_to(momap.xyz[:1, static], momap.xyz[:, static].shape)
    )
    target = momap.instance == clip.task.target_id
    points = momap.xyz[:, target].astype(np.float64)  # [T, N, 3]
    distances = np.linalg.norm(points[:, :, None] - points[:, None, :], axis=-1)
    np.testing.assert_allclose(distances, np.broadcast_to(distances[:1], distances.shape), atol=1e-4)
    assert moving_mask(momap.xyz, momap.valid)[target].mean() > 0.5


def _lowest_z(prims: PrimitiveSet) -> torch.Tensor:
    """Returns the lowest world z [T, P] of every primitive (independent of the ray caster)."""
    rot = prims.world_from_prim[..., :3, :3].double()
    z_row = rot[..., 2, :]  # how each local axis maps onto world z
    centre_z = prims.world_from_prim[..., 2, 3].double()
    params = prims.params.double()
    box = (z_row.abs() * params).sum(-1)
    axis_z = z_row[..., 2].abs()
    cylinder = axis_z * params[:, 1] + params[:, 0] * torch.sqrt((1 - axis_z**2).clamp_min(0))
    sphere = params[:, 0].expand_as(centre_z)
    extent = torch.where(prims.kind == BOX, box, torch.where(prims.kind == CYLINDER, cylinder, sphere))
    return centre_z - extent


@pytest.mark.parametrize("seed", SEEDS)
def test_nothing_goes_through_the_table(family, seed):
    sim = tiny_simulation(family, seed)
    lowest = _lowest_z(sim.scene.prims)
    assert lowest.min() >= -1e-6
    agent_id = next(i for i, v in sim.clip.instance_info.items() if v["role"] == "agent")
    prim_instance = sim.scene.surface_instance[: lowest.shape[1]]
    assert lowest[:, prim_instance == agent_id].min() >= 0.0


def test_same_seed_gives_bit_identical_clips(family):
    config = SimConfig(family=family, height=24, width=32, num_frames=6)
    a, b = generate_clip(11, config), generate_clip(11, config)
    for key, value in a.to_arrays().items():
        other = b.to_arrays()[key]
        if isinstance(value, np.ndarray):
            assert value.dtype == np.asarray(other).dtype and np.array_equal(value, other), key
        else:
            assert value == other, key
    c = generate_clip(12, config)
    assert not np.array_equal(a.frames, c.frames)


def test_task_variants_keep_the_scene_and_change_the_target(family):
    config = SimConfig(family=family, height=48, width=48, num_frames=6)
    same_scene = other_target = 0
    for seed in range(6):
        base = generate_clip(seed, config)
        assert np.array_equal(base.frames, generate_clip(seed, replace(config, task_variant=0)).frames)
        variant = generate_clip(seed, replace(config, task_variant=1))
        again = generate_clip(seed, replace(config, task_variant=1))
        assert np.array_equal(variant.frames, again.frames) and variant.prompt == again.prompt
        # another task: its prompt names its target, and the target is what moves
        names = {k: v["name"] for k, v in variant.momap.meta["instances"].items()}
        target = variant.task.target_id
        assert names[str(target)] in variant.prompt
        moving = moving_mask(torch.from_numpy(variant.momap.xyz), torch.from_numpy(variant.momap.valid))
        assert moving.numpy()[variant.momap.instance == target].mean() > 0.5
        # the same scene (unless the new target is out of view): camera path, objects, and
        # every pixel the agent covers in neither reference image
        if not np.array_equal(variant.momap.ref_from_cam, base.momap.ref_from_cam):
            continue
        same_scene += 1
        assert {k: v["name"] for k, v in base.momap.meta["instances"].items()} == names
        agent = [int(k) for k, v in base.momap.meta["instances"].items() if v["role"] == "agent"]
        free = ~np.isin(base.momap.instance, agent) & ~np.isin(variant.momap.instance, agent)
        assert free.mean() > 0.5
        np.testing.assert_array_equal(variant.momap.rgb[free], base.momap.rgb[free])
        other_target += target != base.task.target_id
        assert variant.task.action in ("push", "lift", "pick_place") or target == base.task.target_id
    assert same_scene >= 4 and other_target >= 3
    with pytest.raises(ValueError, match="task_variant"):
        SimConfig(task_variant=-1)


def test_clip_shapes_and_types():
    clip = generate_clip(3, SimConfig(family="egocentric", height=24, width=40, num_frames=5))
    assert clip.frames.shape == (5, 24, 40, 3) and clip.frames.dtype == np.uint8
    assert clip.depth.shape == (5, 24, 40) and clip.depth.dtype == np.float32
    assert clip.instances.shape == (5, 24, 40) and clip.instances.dtype == np.int32
    assert clip.momap.xyz.shape == (5, 24, 40, 3)
    assert np.array_equal(clip.frames[0], clip.momap.rgb)
    assert np.array_equal(clip.instances[0], clip.momap.instance)
    assert np.isfinite(clip.depth).all() and (clip.depth > 0).all()
    # A hand-held camera really moves, and frame 0 is the reference.
    assert np.allclose(clip.ref_from_cam[0], np.eye(4), atol=1e-6)
    assert np.abs(clip.ref_from_cam[-1] - np.eye(4)).max() > 1e-3


def _centroid(momap, instance_id: int, t: int) -> np.ndarray:
    return momap.xyz[t, momap.instance == instance_id].astype(np.float64).mean(0)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("family", ["tabletop", "egocentric"])
def test_the_prompted_object_moves_as_the_prompt_says(family, action):
    for seed in range(5):
        sim = tiny_simulation(family, seed, action)
        clip = sim.clip
        momap, task = clip.momap, clip.task
        up = sim.world_from_cam[0, 2, :3]  # world +z (the table normal) in reference camera axes
        assert task.action == action
        info = clip.instance_info
        assert info[task.target_id]["role"] == "target"
        if action in ("push", "lift", "pick_place"):
            assert task.target in clip.prompt
        # Exactly one object instance moves, and it is the target.
        moving = moving_mask(momap.xyz, momap.valid)
        moved = {int(i) for i in np.unique(momap.instance[moving])} - {0}
        moved -= {i for i, v in info.items() if v["role"] == "agent"}
        assert moved == {task.target_id}, (seed, clip.prompt, moved)
        start, end = _centroid(momap, task.target_id, 0), _centroid(momap, task.target_id, -1)
        d = end - start  # reference camera frame: x right, y down, z forward
        if action == "push":
            assert task.direction in clip.prompt or any(
                w in clip.prompt for w in ("camera", "back", "front", "left", "right")
            )
            horizontal = abs(d[0]) / np.linalg.norm(d)
            expected = {"left": d[0] < 0, "right": d[0] > 0, "forward": d[2] > 0, "backward": d[2] < 0}
            assert expected[task.direction], (seed, clip.prompt, d)
            assert horizontal > 0.7 if task.direction in ("left", "right") else horizontal < 0.5
            assert np.linalg.norm(d) > 0.04
        elif action == "lift":
            assert d @ up > 0.08
        elif action == "pick_place":
            assert task.destination in clip.prompt
            destination = _centroid(momap, task.destination_id, 0)
            limit = 0.09 if task.relation == "in" else 0.2
            assert np.linalg.norm(end - destination) < limit
            assert np.linalg.norm(d) > 0.05
            path = momap.xyz[:, momap.instance == task.target_id].mean(1)
            assert ((path - path[0]) @ up).max() > 0.02  # carried through the air
            assert abs(d @ up) < 0.03  # and put down
        elif action in ("open_drawer", "close_drawer"):
            assert 0.02 < np.linalg.norm(d) < 0.2
            assert (d[2] < 0) == (action == "open_drawer")  # drawers open towards the camera
        else:  # lids swing about their hinge: the front edge goes up when opening
            points = momap.xyz[:, momap.instance == task.target_id]
            front = points[0, :, 2].argmin()  # the lid point nearest to the camera
            rise = (points[-1, front] - points[0, front]) @ up
            assert (rise > 0.03) if action == "open_lid" else (rise < -0.03)


def test_ray_caster_matches_closed_form_distances():
    # One box, one cylinder and one sphere in front of an origin, plus a floor plane.
    T = 1
    poses = torch.eye(4).repeat(T, 3, 1, 1)
    poses[:, 0, :3, 3] = torch.tensor([0.0, 0.0, 2.0])
    poses[:, 1, :3, 3] = torch.tensor([1.5, 0.0, 3.0])
    poses[:, 2, :3, 3] = torch.tensor([-2.0, 0.0, 4.0])
    prims = PrimitiveSet(
        kind=torch.tensor([BOX, CYLINDER, SPHERE]),
        params=torch.tensor([[0.5, 0.5, 0.5], [0.3, 0.5, 0.0], [0.5, 0.0, 0.0]]),
        world_from_prim=poses,
    )
    planes = PlaneSet(point=torch.tensor([[0.0, 1.0, 0.0]]), normal=torch.tensor([[0.0, -1.0, 0.0]]))
    directions = torch.tensor(
        [[0.0, 0.0, 1.0], [1.5, 0.0, 3.0], [-2.0, 0.0, 4.0], [0.0, 1.0, 1.0], [0.0, -1.0, 0.0]]
    )
    directions = (directions / directions.norm(dim=-1, keepdim=True))[None]
    hits = cast_rays(torch.zeros(T, 3), directions, prims, planes)
    expected = [
        1.5,  # box front face at z = 1.5
        2.5 * np.sqrt(1.25),  # cylinder (axis z): its bottom cap z = 2.5 comes before its side
        np.sqrt(20) - 0.5,  # sphere
        np.sqrt(2),  # floor plane y = 1
        np.inf,  # nothing upwards
    ]
    np.testing.assert_allclose(hits.distance[0].numpy(), expected, rtol=1e-5)
    assert hits.surface[0].tolist() == [0, 1, 2, 3, -1]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_frames"):
        SimConfig(num_frames=1)
    with pytest.raises(ValueError, match="actions"):
        SimConfig(actions=("dance",))
    with pytest.raises(ValueError, match="min_objects"):
        SimConfig(min_objects=4, max_objects=3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fov_deg": 0}, r"SimConfig\.fov_deg: expected 30\.\.160 degrees, got 0"),
        ({"fov_deg": float("inf")}, r"SimConfig\.fov_deg: expected 30\.\.160"),
        ({"height": 20000}, r"SimConfig\.height: expected 8\.\.1024 pixels, got 20000"),
        ({"width": 7}, r"SimConfig\.width: expected 8\.\.1024 pixels"),
        ({"width": 64.0}, r"SimConfig\.width: expected an integer"),
        ({"num_frames": 513}, r"SimConfig\.num_frames: expected 2\.\.512 frames"),
        ({"num_frames": 256, "height": 512, "width": 512}, r"num_frames/height/width: 256 x 512 x 512"),
        ({"family": "kitchen"}, r"SimConfig\.family: expected one of \('tabletop', 'egocentric'\)"),
        ({"device": "tpu"}, r"SimConfig\.device: expected 'cpu', 'cuda'"),
        ({"actions": "push"}, r"SimConfig\.actions: expected a tuple of action names"),
    ],
)
def test_every_config_field_has_a_range_named_in_the_error(changes, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(**changes)


def test_the_limits_themselves_are_accepted():
    SimConfig(fov_deg=30, num_frames=2, height=8, width=8)
    SimConfig(fov_deg=160, num_frames=512, height=128, width=256)  # 2^24 pixels exactly
    SimConfig(height=1024, width=1024, num_frames=16, device="cuda:0", actions=["push"])


def test_momap_sim_with_a_bad_config_writes_nothing(tmp_path, capsys):
    from momaplib.cli import main

    out = tmp_path / "data"
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "sim",
                "--out",
                str(out),
                "--num-clips",
                "1",
                "--fov-deg",
                "0",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
    assert exited.value.code == 2
    assert "SimConfig.fov_deg: expected 30..160" in capsys.readouterr().err
    assert not out.exists()  # not even dataset.json: a rerun must not be refused


def test_two_frame_clips_of_lid_tasks():
    # with T = 2 a task phase can hold no frame; the lid's pose path must accept that
    clip = generate_clip(1, SimConfig(height=16, width=16, num_frames=2, actions=("open_lid", "close_lid")))
    assert clip.momap.xyz.shape == (2, 16, 16, 3) and clip.task.action in ("open_lid", "close_lid")


def test_egocentric_probe_uses_the_moving_camera():
    sim = simulate(5, SimConfig(family="egocentric", height=24, width=24, num_frames=4))
    H, W = 24, 24
    uv = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 2).astype(np.float32)
    for t in range(4):
        depth, instance = sim.probe(t, uv)
        np.testing.assert_allclose(depth.reshape(H, W), sim.clip.depth[t], rtol=1e-5)
        np.testing.assert_array_equal(instance.reshape(H, W), sim.clip.instances[t])


def test_the_wide_config_keeps_family_and_size_and_widens_the_rest():
    from dataclasses import asdict

    from momaplib.sim import SimConfig

    base = SimConfig(family="egocentric", height=64, width=48, num_frames=16)
    wide = base.wide()
    changed = {k for k, v in asdict(wide).items() if asdict(base)[k] != v}
    assert changed == {"camera_randomisation", "room", "clutter", "appearance", "sensor"}
    assert (wide.family, wide.height, wide.width, wide.num_frames) == ("egocentric", 64, 48, 16)
    assert wide.sensor == "structured-light" and wide.room and wide.clutter == 4
