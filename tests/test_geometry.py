"""Camera geometry: projection inverts unprojection; SE(3) helpers against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from momaplib.geometry import (
    axis_angle_to_matrix,
    depth_to_xyz,
    intrinsics_from_fov,
    invert_pose,
    look_at,
    make_pose,
    matrix_to_axis_angle,
    pixel_grid,
    project,
    rotation_angle,
    transform_points,
    umeyama,
    unproject,
)


def test_intrinsics_put_the_principal_point_at_the_image_centre():
    K = intrinsics_from_fov(64, 48, 90.0)
    assert K[0, 0] == pytest.approx(32.0)  # tan(45 deg) = 1: half the width in pixels
    assert (K[0, 2], K[1, 2]) == (31.5, 23.5)  # pixel centres at integers


def test_project_inverts_unproject_numpy_and_torch():
    K = intrinsics_from_fov(32, 24, 70.0)
    K[0, 1] = 0.3  # a little skew
    depth = np.random.default_rng(0).uniform(0.5, 3.0, (24, 32))
    xyz = depth_to_xyz(depth, K.astype(np.float64))
    assert isinstance(xyz, np.ndarray) and xyz.shape == (24, 32, 3)
    uv, z = project(xyz, K.astype(np.float64))
    np.testing.assert_allclose(uv, pixel_grid(24, 32).numpy(), atol=1e-9)
    np.testing.assert_allclose(z, depth)
    points = torch.tensor([[0.1, -0.2, 1.5], [0.0, 0.0, 2.0]], dtype=torch.float64)
    uv, z = project(points, torch.from_numpy(K).double())
    assert torch.allclose(unproject(uv, z, torch.from_numpy(K).double()), points)


def test_batched_intrinsics_align_with_leading_dims():
    K = np.stack([intrinsics_from_fov(16, 12, 60.0), intrinsics_from_fov(16, 12, 40.0)]).astype(np.float64)
    depth = np.full((2, 12, 16), 2.0)
    xyz = depth_to_xyz(depth, K)
    for b in range(2):
        np.testing.assert_allclose(xyz[b], depth_to_xyz(depth[b], K[b]))
    assert np.abs(xyz[0] - xyz[1]).max() > 0.1


def test_axis_angle_conversions_match_scipy():
    rotvec = Rotation.random(50, random_state=0).as_rotvec()
    matrices = axis_angle_to_matrix(rotvec)
    np.testing.assert_allclose(matrices, Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(matrices), rotvec, atol=1e-7)
    np.testing.assert_allclose(rotation_angle(matrices), np.linalg.norm(rotvec, axis=-1), atol=1e-7)
    assert np.allclose(axis_angle_to_matrix(np.zeros(3)), np.eye(3))


def test_pose_helpers_compose():
    rotation = Rotation.random(4, random_state=1).as_matrix()
    translation = np.random.default_rng(1).normal(size=(4, 3))
    a_from_b = make_pose(rotation, translation)
    np.testing.assert_allclose(
        a_from_b @ invert_pose(a_from_b), np.broadcast_to(np.eye(4), (4, 4, 4)), atol=1e-12
    )
    points = np.random.default_rng(2).normal(size=(4, 7, 3))
    homogeneous = np.concatenate([points, np.ones((4, 7, 1))], -1)
    expected = (a_from_b @ homogeneous.transpose(0, 2, 1)).transpose(0, 2, 1)[..., :3]
    np.testing.assert_allclose(transform_points(a_from_b, points), expected, atol=1e-12)


def test_look_at_follows_opencv_axes():
    world_from_cam = look_at(np.array([0.0, -1.0, 1.0]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    forward, down, right = world_from_cam[:3, 2], world_from_cam[:3, 1], world_from_cam[:3, 0]
    np.testing.assert_allclose(forward, np.array([0.0, 1.0, -1.0]) / np.sqrt(2), atol=1e-12)
    assert right[0] > 0.99  # +x of the image is world +x when looking along +y
    assert down[2] < 0  # image down points down in the world
    assert np.linalg.det(world_from_cam[:3, :3]) == pytest.approx(1.0)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(4)
    source = rng.normal(size=(30, 3))
    rotation = Rotation.random(random_state=4).as_matrix()
    target = 1.7 * source @ rotation.T + np.array([0.3, -2.0, 1.0])
    scale, r, t = umeyama(source, target, with_scale=True)
    assert scale == pytest.approx(1.7)
    np.testing.assert_allclose(r, rotation, atol=1e-10)
    np.testing.assert_allclose(t, [0.3, -2.0, 1.0], atol=1e-10)
    _, r_rigid, _ = umeyama(source, source @ rotation.T)
    np.testing.assert_allclose(r_rigid, rotation, atol=1e-10)
