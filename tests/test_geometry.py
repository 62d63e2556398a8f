"""Camera geometry: projection inverts unprojection; SE(3) helpers against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from momaplib.geometry import (
    MAX_MEDIAN_DEPTH,
    axis_angle_to_matrix,
    check_depth_scale,
    depth_to_xyz,
    fill_depth_holes,
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
    valid_depth,
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


# ----------------------------------------------------------------------------- depth maps with holes
def _holey_depth():
    """A sloped plane (1 + 0.01 u metres) with every kind of hole a sensor writes."""
    depth = (1.0 + 0.01 * np.arange(16, dtype=np.float32))[None].repeat(12, 0)
    holes = {(2, 3): 0.0, (5, 7): np.nan, (6, 7): np.inf, (7, 7): -np.inf, (9, 1): -0.5}
    for (v, u), value in holes.items():
        depth[v, u] = value
    return depth, holes


def test_valid_depth_marks_zeros_nans_infs_and_negatives_as_holes():
    depth, holes = _holey_depth()
    valid = valid_depth(depth)
    assert valid.sum() == depth.size - len(holes)
    assert not any(valid[v, u] for v, u in holes)


def test_fill_depth_holes_nearest_copies_the_nearest_valid_depth():
    depth, _ = _holey_depth()
    filled = fill_depth_holes(depth, method="nearest")
    assert filled.dtype == np.float32 and np.isfinite(filled).all() and (filled > 0).all()
    valid = valid_depth(depth)
    np.testing.assert_array_equal(filled[valid], depth[valid])  # valid pixels are untouched
    assert filled[2, 3] in (depth[1, 3], depth[2, 2], depth[2, 4], depth[3, 3])  # a 4-neighbour's depth
    assert filled[6, 7] in (depth[6, 6], depth[6, 8])  # between two holes above and below
    # a hole block in a constant map takes that constant; a dense map comes back as it is
    block = np.full((10, 10), 2.5, np.float32)
    block[3:7, 3:7] = np.nan
    np.testing.assert_array_equal(fill_depth_holes(block), np.full((10, 10), 2.5, np.float32))
    np.testing.assert_array_equal(fill_depth_holes(filled), filled)


def test_fill_depth_holes_inpaint_is_smooth_and_keeps_valid_pixels():
    depth, _ = _holey_depth()
    filled = fill_depth_holes(depth, method="inpaint")
    valid = valid_depth(depth)
    assert np.isfinite(filled).all() and (filled > 0).all()
    np.testing.assert_allclose(filled[valid], depth[valid], rtol=0, atol=1e-6)
    # on a plane the fill continues the plane: 5 % random holes and a 15x15 block, within 5 cm
    v, u = np.mgrid[0:64, 0:64].astype(np.float32)
    plane = 1.0 + 0.01 * u + 0.005 * v
    holes = np.random.default_rng(0).random(plane.shape) < 0.05
    holes[20:35, 20:35] = True
    filled = fill_depth_holes(np.where(holes, np.nan, plane), method="inpaint")
    np.testing.assert_allclose(filled, plane, rtol=0, atol=0.05)
    assert np.abs(filled - plane)[holes].mean() < 0.01


def test_check_depth_scale_refuses_millimetres_with_the_fix():
    depth = np.full((4, 4), 0.8, np.float32)
    valid = np.ones((4, 4), bool)
    assert check_depth_scale(depth, valid) == pytest.approx(0.8)
    with pytest.raises(
        ValueError, match=r"depth: the median depth .* is 800 m, over the plausible 100 m.*divide by 1000"
    ):
        check_depth_scale(depth * 1000, valid)
    assert MAX_MEDIAN_DEPTH == 100.0  # documented in the pipeline and the example folders
    far = depth * 1000
    far[:, :3] = 1.0  # the median over valid pixels only
    assert check_depth_scale(far, far < 10) == pytest.approx(1.0)
