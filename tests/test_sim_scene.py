"""MoMap-Sim scene variations: camera randomisation, rooms and clutter (``momaplib.sim.scene``)."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from momaplib.geometry import intrinsics_from_fov, invert_pose, project, transform_points
from momaplib.momap import moving_mask
from momaplib.sim import SimConfig, generate_clip, simulate
from momaplib.sim.scene import TABLE_HEIGHT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARIED = {"camera_randomisation": 1.0, "room": True, "clutter": 6}


@functools.lru_cache(maxsize=32)
def _varied(family: str, seed: int, **changes):
    return simulate(seed, SimConfig(family=family, height=32, width=32, num_frames=6, **changes))


def test_camera_randomisation_varies_the_camera_within_its_ranges(family):
    rolls, focals, heights, elevations = [], [], [], []
    for seed in range(6):
        sim = _varied(family, seed, camera_randomisation=1.0)
        K, world_from_cam = sim.clip.K, sim.world_from_cam[0]
        # one pinhole K whose field of view is within fov_deg x 0.7..1.35
        fov = math.degrees(2 * math.atan(16 / K[0, 0]))
        assert 0.7 * 60 - 1e-6 <= fov <= 1.35 * 60 + 1e-6
        np.testing.assert_allclose(K, intrinsics_from_fov(32, 32, fov), rtol=1e-6)
        rolls.append(math.degrees(math.asin(abs(world_from_cam[2, 0]))))  # x axis out of the table
        elevations.append(math.degrees(math.asin(-world_from_cam[2, 2])))  # optical axis below horizon
        heights.append(world_from_cam[2, 3])
        focals.append(K[0, 0])
        # the task's target is in view and the reference depth is the camera z of the GT points
        assert (sim.clip.momap.instance == sim.clip.task.target_id).sum() >= 2
        np.testing.assert_allclose(sim.clip.momap.xyz[0, ..., 2], sim.clip.depth[0], rtol=1e-4)
    assert max(rolls) < 25 + 2 * 8 + 1 and max(rolls) > 3  # roll plus aim
    assert 10 < min(elevations) and max(elevations) < 90
    assert 0.1 < min(heights) and max(heights) < 1.0 and np.ptp(heights) > 0.05
    assert np.ptp(focals) > 3  # the focal length really varies


def test_randomised_pushes_still_go_the_way_the_prompt_says(family):
    config = SimConfig(family=family, height=32, width=32, num_frames=6, actions=("push",))
    for seed in range(4):
        clip = generate_clip(seed, replace(config, camera_randomisation=1.0))
        points = clip.momap.xyz[:, clip.momap.instance == clip.task.target_id].astype(np.float64)
        d = points[-1].mean(0) - points[0].mean(0)  # reference camera axes
        horizontal = abs(d[0]) / np.linalg.norm(d)
        if clip.task.direction in ("left", "right"):
            assert (d[0] > 0) == (clip.task.direction == "right") and horizontal > 0.6, (seed, d)
        else:
            assert (d[2] > 0) == (clip.task.direction == "forward") and horizontal < 0.7, (seed, d)


def test_room_and_clutter_have_exact_geometry(family):
    far = 0.0
    for seed in range(3):
        sim = _varied(family, seed, **VARIED)
        clip, momap = sim.clip, sim.clip.momap
        world = transform_points(sim.world_from_cam[0], momap.xyz[0].reshape(-1, 3).astype(np.float64))
        # every point is on or above the floor, and the floor (where seen) is exactly at -0.75 m
        assert world[:, 2].min() >= -TABLE_HEIGHT - 1e-4
        far = max(far, float(clip.depth[0].max()))
        # clutter: static instances, never named in the prompt, never moving
        info = clip.instance_info
        clutter = [i for i, v in info.items() if v["category"] == "clutter"]
        assert 0 < len(clutter) <= VARIED["clutter"] and all(info[i]["role"] == "static" for i in clutter)
        assert "clutter" not in clip.prompt
        moving = moving_mask(momap.xyz, momap.valid)
        assert not moving[np.isin(momap.instance, clutter)].any()
        assert not moving[momap.instance == 0].any()  # the room and the table stay put
        # visible points project onto the rendered depth at every frame (the GT is exact)
        for t in (0, clip.depth.shape[0] - 1):
            cam_from_ref = invert_pose(momap.ref_from_cam[t].astype(np.float64))
            points = transform_points(cam_from_ref, momap.xyz[t].reshape(-1, 3).astype(np.float64))
            uv, z = project(points, momap.K.astype(np.float64))
            index = np.flatnonzero(momap.visible[t].reshape(-1))
            depth, _ = sim.probe(t, uv[index])
            assert (np.abs(depth - z[index]) <= 1e-3 * z[index]).mean() > 0.98
    assert far > 1.2  # some rooms' walls are in view


def test_motion_variants_of_a_varied_scene_keep_frame_zero(family):
    config = SimConfig(family=family, height=32, width=32, num_frames=6, **VARIED)
    base, variant = generate_clip(1, config), generate_clip(1, replace(config, motion_variant=3))
    for a, b in ((base.frames[0], variant.frames[0]), (base.depth[0], variant.depth[0]), (base.K, variant.K)):
        assert np.array_equal(a, b)
    assert np.array_equal(base.momap.xyz[0], variant.momap.xyz[0]) and base.prompt == variant.prompt
    assert not np.array_equal(base.momap.xyz[-1], variant.momap.xyz[-1])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"clutter": 13}, r"SimConfig\.clutter: expected 0\.\.12 objects, got 13"),
        ({"clutter": -1}, r"SimConfig\.clutter: expected 0\.\.12"),
        ({"camera_randomisation": 1.5}, r"SimConfig\.camera_randomisation: expected 0\.\.1, got 1\.5"),
        ({"camera_randomisation": True}, r"SimConfig\.camera_randomisation: expected 0\.\.1"),
        ({"room": "yes"}, r"SimConfig\.room: expected True or False"),
    ],
)
def test_scene_variation_fields_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(**changes)


def test_momap_sim_sets_and_records_the_variations(tmp_path):
    from momaplib.cli import main
    from momaplib.sim import Clip

    out = tmp_path / "data"
    flags = ["--motion-variant", "2", "--camera-randomisation", "0.5", "--room", "--clutter", "3"]
    main(["sim", "--out", str(out), "--num-clips", "1", "--smoke", "--workers", "0", "--no-progress", *flags])
    settings = json.loads((out / "dataset.json").read_text())["sim"]
    assert (settings["motion_variant"], settings["camera_randomisation"]) == (2, 0.5)
    assert (settings["room"], settings["clutter"]) == (True, 3)
    clip = Clip.load(next(out.rglob("*.npz")))
    meta = clip.momap.meta
    assert (meta["motion_variant"], meta["camera_randomisation"], meta["room"], meta["clutter"]) == (
        2,
        0.5,
        True,
        3,
    )
