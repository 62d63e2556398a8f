"""The MoMap record: validation names the field, storage round-trips, conversions invert."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momaplib.geometry import axis_angle_to_matrix, depth_to_xyz, intrinsics_from_fov, invert_pose, make_pose
from momaplib.momap import (
    MoMap,
    MoMapValidationError,
    cam_to_ref,
    channels_to_xyz,
    denormalize_xyz,
    moving_mask,
    normalization_stats,
    normalize_xyz,
    scene_scale,
    xyz_to_channels,
)
from momaplib.storage import DataFormatError


def make_momap(T: int = 4, H: int = 6, W: int = 8, seed: int = 0) -> MoMap:
    """Returns a small valid MoMap: a plane at depth ~2 m with one 2x2 patch sliding right."""
    rng = np.random.default_rng(seed)
    K = intrinsics_from_fov(W, H, 60.0)
    depth = 2.0 + 0.1 * rng.random((H, W)).astype(np.float32)
    xyz0 = depth_to_xyz(depth, K)
    xyz = np.repeat(xyz0[None], T, axis=0)
    xyz[:, 2:4, 2:4, 0] += np.linspace(0, 0.3, T, dtype=np.float32)[:, None, None]
    instance = np.zeros((H, W), np.int32)
    instance[2:4, 2:4] = 1
    return MoMap(
        xyz=xyz,
        valid=np.ones((H, W), bool),
        visible=np.ones((T, H, W), bool),
        rgb=rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
        instance=instance,
        K=K,
        ref_from_cam=np.repeat(np.eye(4, dtype=np.float32)[None], T, axis=0),
        prompt="push the block right",
        meta={"source": "test"},
    )


def test_save_load_round_trip(tmp_path):
    momap = make_momap()
    sha = momap.save(tmp_path / "m.npz")
    assert len(sha) == 64
    loaded = MoMap.load(tmp_path / "m.npz")
    for key, value in momap.to_arrays().items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(loaded, key), value)
        else:
            assert getattr(loaded, key) == value
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("xyz", np.zeros((4, 6, 8), np.float32), r"MoMap\.xyz: expected \(T, H, W, 3\)"),
        ("xyz", np.zeros((4, 6, 8, 3), np.int32), r"MoMap\.xyz: .*floating point"),
        (
            "valid",
            np.ones((6, 7), bool),
            r"MoMap\.valid: expected \(H, W\) = \(6, 8\) bool, got shape \(6, 7\)",
        ),
        ("valid", np.ones((6, 8), np.uint8), r"MoMap\.valid: .* bool, got shape \(6, 8\) dtype uint8"),
        ("visible", np.ones((3, 6, 8), bool), r"MoMap\.visible: expected \(T, H, W\) = \(4, 6, 8\)"),
        ("rgb", np.zeros((6, 8, 3), np.float32), r"MoMap\.rgb: expected \(H, W, 3\) = \(6, 8, 3\) uint8"),
        ("instance", np.zeros((6, 8), np.float32), r"MoMap\.instance: expected \(H, W\)"),
        ("instance", -np.ones((6, 8), np.int32), r"MoMap\.instance: ids must be >= 0"),
        ("K", np.eye(4, dtype=np.float32), r"MoMap\.K: expected \(3, 3\)"),
        ("K", np.diag([-1.0, 1.0, 1.0]).astype(np.float32), r"MoMap\.K: expected positive focal"),
        ("ref_from_cam", np.eye(4, dtype=np.float32)[None], r"MoMap\.ref_from_cam: expected \(T, 4, 4\)"),
        ("prompt", 3, r"MoMap\.prompt: expected str"),
    ],
)
def test_validation_names_the_field_and_the_expectation(field, value, message):
    fields = make_momap().to_arrays()
    fields[field] = value
    with pytest.raises(MoMapValidationError, match=message):
        MoMap(**fields)


def test_validation_catches_values():
    fields = make_momap().to_arrays()
    fields["xyz"] = fields["xyz"].copy()
    fields["xyz"][2, 3, 5, 1] = np.nan
    with pytest.raises(
        MoMapValidationError, match=r"non-finite values at valid pixels \(first at t=2, v=3, u=5\)"
    ):
        MoMap(**fields)
    # NaN where the pixel has no trajectory carries no information: it is zeroed, not an error.
    fields["valid"] = np.ones((6, 8), bool)
    fields["valid"][3, 5] = False
    fields["visible"] = fields["visible"] & fields["valid"]
    assert MoMap(**fields).xyz[2, 3, 5, 1] == 0
    fields = make_momap().to_arrays()
    fields["visible"] = fields["visible"].copy()
    fields["valid"] = fields["valid"].copy()
    fields["valid"][0, 0] = False
    with pytest.raises(MoMapValidationError, match="visible but not valid"):
        MoMap(**fields)
    fields = make_momap().to_arrays()
    poses = fields["ref_from_cam"].copy()
    poses[1, :3, :3] *= 2
    fields["ref_from_cam"] = poses
    with pytest.raises(MoMapValidationError, match="must be rotations"):
        MoMap(**fields)
    fields["ref_from_cam"] = np.repeat(make_pose(np.eye(3), np.ones(3)).astype(np.float32)[None], 4, 0)
    with pytest.raises(MoMapValidationError, match=r"ref_from_cam\[0\]: the reference camera"):
        MoMap(**fields)


def test_truncated_and_corrupted_files_give_clear_errors(tmp_path):
    path = tmp_path / "m.npz"
    make_momap().save(path)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.npz: not a readable \.npz file"):
        MoMap.load(tmp_path / "cut.npz")
    flipped = bytearray(data)
    for i in range(200, len(flipped) - 200, 97):
        flipped[i] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(DataFormatError, match=r"flip\.npz"):
        MoMap.load(tmp_path / "flip.npz")
    with pytest.raises(DataFormatError, match="file not found"):
        MoMap.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "partial.npz", xyz=np.zeros((1, 2, 2, 3)))
    with pytest.raises(DataFormatError, match=r"missing arrays \['valid'"):
        MoMap.load(tmp_path / "partial.npz")


def test_bad_file_content_is_reported_with_the_file_name(tmp_path):
    arrays = make_momap().to_arrays()
    arrays["xyz"] = arrays["xyz"][..., :2]
    np.savez(
        tmp_path / "bad.npz",
        **{k: np.asarray(v) if not isinstance(v, dict) else np.array("{}") for k, v in arrays.items()},
    )
    with pytest.raises(MoMapValidationError, match=r"bad\.npz: MoMap\.xyz"):
        MoMap.load(tmp_path / "bad.npz")


def test_model_layout_round_trip_and_channel_order():
    xyz = np.random.default_rng(1).random((2, 5, 4, 3, 3)).astype(np.float32)  # [B, T, H, W, 3]
    channels = xyz_to_channels(xyz)
    assert channels.shape == (2, 15, 4, 3)
    # DESIGN.md: channel 3 * t + c holds coordinate c at time t.
    np.testing.assert_array_equal(channels[1, 3 * 2 + 1], xyz[1, 2, :, :, 1])
    np.testing.assert_array_equal(channels_to_xyz(channels), xyz)
    assert torch.equal(channels_to_xyz(xyz_to_channels(torch.from_numpy(xyz))), torch.from_numpy(xyz))
    with pytest.raises(ValueError, match="3T channels"):
        channels_to_xyz(np.zeros((7, 4, 3)))


def test_normalisation_is_invertible_and_centred():
    momap = make_momap()
    center, scale = normalization_stats(momap.xyz[0], momap.valid)
    assert scale == pytest.approx(momap.scene_scale)
    points = momap.xyz[0].reshape(-1, 3)
    np.testing.assert_array_equal(center, np.sort(points, axis=0)[(len(points) - 1) // 2])  # lower median
    normed = normalize_xyz(momap.xyz, center, scale)
    assert np.abs(normed).max() < 1.5
    np.testing.assert_allclose(denormalize_xyz(normed, center, scale), momap.xyz, atol=1e-6)
    # Batched torch: each sample keeps its own statistics.
    batch = torch.from_numpy(np.stack([momap.xyz, momap.xyz * 2]))
    valid = torch.from_numpy(np.stack([momap.valid, momap.valid]))
    c, s = normalization_stats(batch[:, 0], valid)
    assert s[1] == pytest.approx(2 * s[0])
    assert torch.allclose(denormalize_xyz(normalize_xyz(batch, c, s), c, s), batch, atol=1e-6)


def test_scene_scale_and_moving_mask_follow_design():
    momap = make_momap()
    depth = momap.xyz[0, ..., 2][momap.valid]
    assert momap.scene_scale == pytest.approx(np.sort(depth)[(depth.size - 1) // 2])  # the lower median
    mask = momap.moving_mask()
    expected = np.zeros((6, 8), bool)
    expected[2:4, 2:4] = True  # moved 0.3 m > 0.02 * ~2 m
    np.testing.assert_array_equal(mask, expected)
    # Exactly at the threshold nothing counts as moving; just above it does.
    s = float(scene_scale(momap.xyz[0], momap.valid))
    xyz = np.repeat(momap.xyz[:1], 2, 0)
    xyz[1, 0, 0, 0] += 0.02 * s * 0.999
    xyz[1, 0, 1, 0] += 0.02 * s * 1.001
    mask = moving_mask(xyz, momap.valid, scale=s)
    assert not mask[0, 0] and mask[0, 1]
    with pytest.raises(ValueError, match="no valid pixels"):
        scene_scale(momap.xyz[0], np.zeros((6, 8), bool))


def test_points_move_from_camera_frames_to_the_reference_frame():
    rng = np.random.default_rng(3)
    ref_from_cam = make_pose(axis_angle_to_matrix(rng.normal(size=(5, 3)) * 0.2), rng.normal(size=(5, 3)))
    points_ref = rng.normal(size=(5, 10, 3))
    points_cam = (points_ref - ref_from_cam[:, None, :3, 3]) @ ref_from_cam[:, :3, :3]
    np.testing.assert_allclose(cam_to_ref(points_cam, ref_from_cam), points_ref, atol=1e-12)
    np.testing.assert_allclose(
        invert_pose(ref_from_cam) @ ref_from_cam, np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-12
    )
