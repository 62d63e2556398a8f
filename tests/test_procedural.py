"""Procedural MoMaps (momaplib.data.procedural) and camera views (momaplib.data.views): exact geometry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from momaplib.data.procedural import KINDS, procedural_momap, surface_depth
from momaplib.data.procedural_dataset import ProceduralDataset
from momaplib.data.views import camera_rotation, mirror, roll_quarter_turns, rotate_camera
from momaplib.geometry import depth_to_xyz, pixel_grid, project
from momaplib.momap import MoMap
from tests.conftest import tiny_simulation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H = W = 32
T = 8


def reprojection_error(momap: MoMap) -> float:
    """Largest distance in pixels between a valid pixel's centre and the projection of its xyz at t = 0."""
    uv, z = project(momap.xyz[0].astype(np.float64), momap.K.astype(np.float64))
    assert (z[momap.valid] > 0).all()
    return float(np.abs(uv - pixel_grid(momap.height, momap.width).numpy())[momap.valid].max())


def plane_distances(momap: MoMap) -> np.ndarray:
    """Returns (L, H, W) distances of the reference points to each plane of ``meta["planes"]``."""
    return np.stack(
        [
            np.abs((momap.xyz[0].astype(np.float64) - plane["point"]) @ np.asarray(plane["normal"]))
            for plane in momap.meta["planes"]
        ]
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("moving", [False, True])
def test_every_kind_is_a_valid_deterministic_momap_on_its_own_rays(kind, moving):
    momap = procedural_momap(kind, 4, H, W, T, moving=moving)
    again = procedural_momap(kind, 4, H, W, T, moving=moving)
    other = procedural_momap(kind, 5, H, W, T, moving=moving)
    assert momap.xyz.shape == (T, H, W, 3) and momap.valid.mean() > 0.9
    np.testing.assert_array_equal(momap.xyz, again.xyz)
    np.testing.assert_array_equal(momap.rgb, again.rgb)
    assert not np.array_equal(momap.xyz, other.xyz)
    assert reprojection_error(momap) < 1e-3
    assert momap.rgb[momap.valid].max() > 0 and len(np.unique(momap.rgb.reshape(-1, 3), axis=0)) > 3
    depth = momap.xyz[0, ..., 2][momap.valid]
    assert depth.min() > 0.1 and np.median(depth) < 12
    still = momap.moving_mask(0.0) == 0  # static pixels: exactly the same point at every t
    if not moving:
        assert still.all() and momap.visible.all()
    else:
        assert momap.meta["motion"]["instance"] == 1 and (momap.instance == 1).any()
        assert momap.moving_mask().any() and not still[momap.instance == 1].any()
        assert still[momap.instance != 1].all()
        assert not momap.visible.all()  # the moving part hides something, or leaves the view, at some t
        assert momap.visible[0][momap.valid].all()  # every reference pixel is seen at t = 0


def test_plane_kinds_satisfy_their_plane_equations():
    for seed in range(3):
        fronto = procedural_momap("fronto_plane", seed, H, W, T)
        (plane,) = fronto.meta["planes"]
        np.testing.assert_allclose(fronto.xyz[..., 2], plane["point"][2], rtol=1e-6)
        assert 0.3 <= plane["point"][2] <= 10
        tilted = procedural_momap("tilted_plane", seed, H, W, T)
        assert plane_distances(tilted).max() < 1e-5 * np.abs(tilted.xyz).max()
        tilt = np.degrees(np.arccos(-tilted.meta["planes"][0]["normal"][2]))
        assert 19.9 <= tilt <= 70.1
        assert (
            tilted.xyz[0, ..., 2].max() > 1.2 * tilted.xyz[0, ..., 2].min()
        )  # depth varies across the image


def test_room_points_lie_on_its_planes_and_several_are_seen():
    for seed in range(3):
        room = procedural_momap("room", seed, H, W, T, depth_range=(1.2, 3.0))
        distances = plane_distances(room)
        assert len(distances) == 6 and distances.min(0)[room.valid].max() < 1e-5 * 10
        seen = np.unique(distances.argmin(0)[room.valid])
        assert len(seen) >= 2  # a corner: floor/ceiling and walls


def test_sphere_points_are_at_its_radius_and_the_background_on_its_plane():
    found = 0
    for seed in range(12):
        momap = procedural_momap("primitives", seed, H, W, T)
        background = momap.valid & (momap.instance == 0)
        assert plane_distances(momap)[0][background].max() < 1e-5 * 10
        for sphere in momap.meta["spheres"]:
            on_sphere = momap.instance == sphere["instance"]
            if on_sphere.sum() < 3:
                continue
            radius = np.linalg.norm(momap.xyz[0][on_sphere] - sphere["center"], axis=-1)
            np.testing.assert_allclose(radius, sphere["radius"], rtol=1e-4)
            found += 1
    assert found >= 2


def test_surface_depth_follows_its_formula():
    momap = procedural_momap("surface", 3, H, W, T, depth_range=(1.2, 1.9))
    rays = np.concatenate([momap.xyz[0, ..., :2] / momap.xyz[0, ..., 2:], np.ones((H, W, 1))], -1)
    np.testing.assert_allclose(momap.xyz[0, ..., 2], surface_depth(momap.meta["surface"], rays), rtol=1e-5)
    z = momap.xyz[0, ..., 2]
    assert 1.2 * 0.6 < z.min() and z.max() < 1.9 * 1.6 and z.std() > 0.01


@pytest.mark.parametrize("kind", ["primitives", "room"])
def test_moving_part_is_rigid_and_follows_its_recorded_motion(kind):
    momap = procedural_momap(kind, 2, H, W, T, moving=True)
    part = momap.xyz[:, momap.instance == 1].astype(np.float64)  # (T, N, 3)
    motions = np.asarray(momap.meta["motion"]["ref_from_part"])
    np.testing.assert_allclose(motions[0], np.eye(4), atol=1e-12)
    expected = part[0] @ motions[:, :3, :3].transpose(0, 2, 1) + motions[:, None, :3, 3]
    np.testing.assert_allclose(part, expected, atol=1e-4 * np.abs(part).max())
    pairwise = np.linalg.norm(part[:, :, None] - part[:, None], axis=-1)
    np.testing.assert_allclose(pairwise, np.broadcast_to(pairwise[0], pairwise.shape), atol=1e-4)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="kind: expected one of"):
        procedural_momap("sky", 0)
    with pytest.raises(ValueError, match="depth_range"):
        procedural_momap("room", 0, H, W, T, depth_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="height"):
        procedural_momap("room", 0, 4, W, T)


def test_procedural_dataset_items_are_model_inputs_with_training_seeds():
    dataset = ProceduralDataset(3, T, H, W)
    item = dataset[1]
    kind, _, seed = dataset.case(1)
    assert seed == 1_000_001 and item["id"] == f"procedural_{kind}_{seed}"
    assert item["momap"].shape == (3 * T, H, W) and item["valid"].shape == (H, W)
    cases = [ProceduralDataset(40, T, H, W).case(i) for i in range(40)]
    assert {kind for kind, _, _ in cases} == set(KINDS) and {moving for _, moving, _ in cases} == {
        False,
        True,
    }
    with pytest.raises(IndexError):
        dataset[3]


# ----------------------------------------------------------------------------- views
def centred_momap() -> MoMap:
    """A moving MoMap with a centred square-pixel K (so a 90-degree roll keeps every pixel)."""
    source = procedural_momap("primitives", 1, H, W, T, moving=True)
    K = np.array([[30.0, 0, (W - 1) / 2], [0, 30.0, (H - 1) / 2], [0, 0, 1]], dtype=np.float32)
    xyz0 = depth_to_xyz(source.xyz[0, ..., 2].astype(np.float64), K.astype(np.float64))
    xyz = (xyz0[None] + (source.xyz - source.xyz[:1])).astype(np.float32)
    return dataclasses.replace(source, xyz=xyz, K=K)


def test_quarter_turns_and_mirrors_are_exact_and_invert():
    momap = procedural_momap("primitives", 1, H, W + 8, T, moving=True)
    for k in range(4):
        turned = roll_quarter_turns(momap, k)
        assert reprojection_error(turned) < 1e-3
        assert turned.xyz.shape == ((T, H, W + 8, 3) if k % 2 == 0 else (T, W + 8, H, 3))
        back = roll_quarter_turns(turned, 4 - k)
        np.testing.assert_array_equal(back.xyz, momap.xyz)
        np.testing.assert_array_equal(back.rgb, momap.rgb)
        np.testing.assert_allclose(back.K, momap.K, atol=1e-5)
    half = roll_quarter_turns(momap, 2)  # rows and columns reversed, x and y negated
    np.testing.assert_array_equal(half.xyz, momap.xyz[:, ::-1, ::-1] * np.float32([-1, -1, 1]))
    for axis in ("horizontal", "vertical"):
        mirrored = mirror(momap, axis)
        assert reprojection_error(mirrored) < 1e-3
        np.testing.assert_array_equal(mirror(mirrored, axis).xyz, momap.xyz)
    with pytest.raises(ValueError, match="axis"):
        mirror(momap, "diagonal")


def test_a_moving_camera_stays_consistent_through_views():
    clip = tiny_simulation("egocentric", 3).clip
    momap = clip.momap
    for view in (roll_quarter_turns(momap, 1), mirror(momap), rotate_camera(momap, 10, -5, 5)):
        # same camera path, turned: its translations rotate and the relative rotation angles stay
        distances = [np.linalg.norm(m.ref_from_cam[:, :3, 3], axis=-1) for m in (view, momap)]
        np.testing.assert_allclose(*distances, rtol=1e-5, atol=1e-6)
        traces = np.trace(view.ref_from_cam[:, :3, :3], axis1=1, axis2=2)
        np.testing.assert_allclose(
            traces, np.trace(momap.ref_from_cam[:, :3, :3], axis1=1, axis2=2), atol=1e-5
        )


def test_rotating_the_camera_by_90_degrees_equals_the_quarter_turn():
    momap = centred_momap()
    warped, turned = rotate_camera(momap, roll_deg=90), roll_quarter_turns(momap, 1)
    np.testing.assert_array_equal(warped.valid, turned.valid)
    np.testing.assert_array_equal(warped.instance, turned.instance)
    np.testing.assert_array_equal(warped.visible, turned.visible)
    np.testing.assert_allclose(warped.xyz, turned.xyz, atol=1e-5)
    np.testing.assert_allclose(warped.ref_from_cam, turned.ref_from_cam, atol=1e-6)
    assert np.abs(warped.rgb.astype(int) - turned.rgb).max() <= 1


def test_a_pitched_camera_sees_the_scene_lower_and_keeps_it_rigid():
    momap = centred_momap()
    pitched = rotate_camera(momap, pitch_deg=15)
    assert reprojection_error(pitched) < 1e-3
    assert 0.5 < pitched.valid.mean() < 1.0  # the top rows look past the original image
    assert not pitched.valid[0].any() and pitched.valid[-1].all()
    rotation = camera_rotation(pitch_deg=15)
    center = momap.xyz[0, H // 2, W // 2] @ rotation.T  # the same surface point in the new frame
    uv, _ = project(center.astype(np.float64), momap.K.astype(np.float64))
    assert uv[1] > H // 2 + 3  # pitching up moves the scene down in the image
    part = pitched.xyz[:, pitched.instance == 1].astype(np.float64)
    pairwise = np.linalg.norm(part[:, :, None] - part[:, None], axis=-1)
    np.testing.assert_allclose(
        pairwise, np.broadcast_to(pairwise[0], pairwise.shape), atol=2e-3 * np.abs(part).max()
    )
