"""Reconstruction stages on tiny synthetic inputs with known answers, the pipeline on MoMap-Sim
clips, the imported-tracks format, bad inputs, and the resumable, shardable ``momap recon`` runner."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from PIL import Image

from momaplib.cli import main as cli_main
from momaplib.data import MoMapDataset, load_manifest
from momaplib.geometry import (
    axis_angle_to_matrix,
    intrinsics_from_fov,
    invert_pose,
    make_pose,
    pixel_grid,
    project,
    rotation_angle,
    transform_points,
    unproject,
)
from momaplib.momap import MoMap
from momaplib.recon import (
    FlowChainTracker,
    GivenDepth,
    GivenDepthConfig,
    GivenSegmentation,
    GivenTracks,
    ImportedTracks,
    ImportedTracksConfig,
    InfillConfig,
    MotionSegmentation,
    MotionSegmentationConfig,
    Pipeline,
    PipelineConfig,
    PoseConfig,
    SegmentationInputs,
    TrackletBundleAdjustment,
    Tracks,
    TrajectoryInfill,
    TransformersDepth,
    TransformersDepthConfig,
    Video,
    VideoError,
    align_depth_scale,
    interpolate_hidden,
    load_video,
    reconstruction_errors,
    save_tracks,
    tracks_from_momap,
)
from momaplib.recon.depth_filter import DepthFilterConfig, clean_depth
from momaplib.recon.poses import DEFAULT_FOV_CANDIDATES
from momaplib.recon.runner import (
    ReconJob,
    ReconSettingsError,
    merge_manifests,
    parse_shard,
    verify_recon_dataset,
)
from momaplib.recon.video import resize_depth, resize_video
from momaplib.storage import DataFormatError, sha256_file
from tests.conftest import tiny_simulation

H = W = 48
T = 8


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """Returns a smooth random RGB texture (H, W, 3) uint8 that optical flow can lock onto."""
    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.2)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def _moving_block_video(step=(1.0, 0.5), start=(8, 14), size=14) -> tuple[Video, np.ndarray]:
    """Returns a static textured background with a textured block translating by ``step`` px/frame,
    and the block's (H, W) mask at t0."""
    background = _texture(H, W, 0)
    block = _texture(size, size, 1)
    frames = []
    for t in range(T):
        frame = background.copy()
        shift = np.float32([[1, 0, start[0] + step[0] * t], [0, 1, start[1] + step[1] * t]])
        warped = cv2.warpAffine(block, shift, (W, H), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.ones((size, size), np.float32), shift, (W, H), flags=cv2.INTER_LINEAR)
        frame = (mask[..., None] * warped + (1 - mask[..., None]) * frame).astype(np.uint8)
        frames.append(frame)
    mask0 = np.zeros((H, W), bool)
    mask0[start[1] : start[1] + size, start[0] : start[0] + size] = True
    return Video(np.stack(frames), name="block"), mask0


# ----------------------------------------------------------------------------- depth
def test_given_depth_is_exact_without_corruption_and_reproducible_with_it():
    depth = np.random.default_rng(0).uniform(0.5, 1.5, (T, H, W)).astype(np.float32)
    video = Video(np.zeros((T, H, W, 3), np.uint8), depth=depth)
    np.testing.assert_array_equal(GivenDepth().estimate(video), depth)
    config = GivenDepthConfig(scale_drift=0.05, shift_drift=0.02, noise=0.01, seed=3)
    corrupted = GivenDepth(config).estimate(video)
    np.testing.assert_array_equal(corrupted, GivenDepth(config).estimate(video))
    assert corrupted.shape == depth.shape and (corrupted > 0).all()
    # Frame 0 keeps its scale (only noise); later frames drift.
    assert abs(np.median(corrupted[0] / depth[0]) - 1) < 0.01
    assert np.abs(np.median(corrupted[1:] / depth[1:], axis=(1, 2)) - 1).max() > 0.01
    with pytest.raises(VideoError, match="depth"):
        GivenDepth().estimate(Video(np.zeros((T, H, W, 3), np.uint8)))


def test_align_depth_scale_undoes_per_frame_scale():
    depth = np.random.default_rng(1).uniform(0.5, 2.0, (1, H, W))
    scales = np.array([1.0, 0.7, 1.3, 2.0])[:, None, None]
    np.testing.assert_allclose(align_depth_scale(depth * scales), np.repeat(depth, 4, 0), rtol=1e-6)


def _tiny_depth_model(folder):
    """Saves a tiny randomly initialised Depth Anything model + processor to ``folder`` (no download)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers import DPTImageProcessor as processor_class

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=7,
        image_size=28,
        out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[16, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        reassemble_factors=[1, 1],
        patch_size=7,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    processor_class(
        size={"height": 28, "width": 28}, keep_aspect_ratio=False, ensure_multiple_of=7
    ).save_pretrained(folder)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_transformers_depth_with_a_tiny_random_model(tmp_path):
    _tiny_depth_model(tmp_path / "tiny")
    video = Video(np.stack([_texture(32, 40, t) for t in range(3)]), name="tiny")
    depth = TransformersDepth(TransformersDepthConfig(model=str(tmp_path / "tiny"), batch_size=2)).estimate(
        video
    )
    assert depth.shape == (3, 32, 40) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth > 0).all()
    assert np.median(depth[0]) == pytest.approx(1.0, rel=1e-5)  # reference_median_depth
    with pytest.raises(FileNotFoundError, match=r"TransformersDepthConfig\.model"):
        TransformersDepth(TransformersDepthConfig(model=str(tmp_path / "missing"))).estimate(video)


# ----------------------------------------------------------------------------- tracking
def test_flow_chain_tracks_a_rigid_moving_block_and_stops_at_occlusion():
    step, start, size = (1.0, 0.5), (8, 14), 14
    video, block = _moving_block_video(step, start, size)
    tracks = FlowChainTracker().track(video)
    assert tracks.uv.shape == (T, H, W, 2) and tracks.visible[0].all()
    grid = pixel_grid(H, W).numpy()
    expected = grid[None] + np.arange(T)[:, None, None, None] * np.array(step, np.float32)
    interior = np.zeros_like(block)
    interior[start[1] + 3 : start[1] + size - 3, start[0] + 3 : start[0] + size - 3] = True
    error = np.linalg.norm(tracks.uv - expected, axis=-1)[:, interior]
    seen = tracks.visible[:, interior]
    assert seen.mean() > 0.9
    assert np.median(error[seen]) < 0.25, np.median(error[seen])
    # Background far from the block stays put.
    far = np.zeros_like(block)
    far[:, 36:] = True
    background_error = np.linalg.norm(tracks.uv - grid[None], axis=-1)[:, far]
    assert np.median(background_error[tracks.visible[:, far]]) < 0.1
    # Background the block slides over is hidden: most of it must be marked not visible.
    covered = np.zeros((T, H, W), bool)
    for t in range(1, T):
        x0, y0 = start[0] + step[0] * t, start[1] + step[1] * t
        covered[t, math.ceil(y0) + 1 : int(y0) + size - 1, math.ceil(x0) + 1 : int(x0) + size - 1] = True
    covered &= ~block[None]
    assert covered.sum() > 50
    assert (~tracks.visible[covered]).mean() > 0.8


def test_imported_tracks_round_trip_their_documented_format(tmp_path):
    video, _ = _moving_block_video()
    dense = FlowChainTracker().track(video)
    # Keep every other reference pixel: the others have no track and must come back invalid.
    dense.visible[:, :, 1::2] = False
    tracks, visible, queries = dense.to_sparse()
    assert tracks.shape == (T, H * W // 2, 2) and queries.shape == (H * W // 2, 2)
    save_tracks(tmp_path / "block.npz", np.where(visible[..., None], tracks, np.nan), visible, queries)
    with np.load(tmp_path / "block.npz", allow_pickle=False) as npz:  # plain arrays, no pickle
        assert sorted(npz.files) == ["queries", "tracks", "visible"]
    # A folder works like a file: <video name>.npz.
    for path in (tmp_path / "block.npz", tmp_path):
        back = ImportedTracks(ImportedTracksConfig(path=str(path))).track(video)
        np.testing.assert_array_equal(back.visible, dense.visible)
        np.testing.assert_array_equal(back.uv[dense.visible], dense.uv[dense.visible])
        assert np.isfinite(back.uv).all()
    # A tracker that puts pixel centres at .5 is read with pixel_offset.
    save_tracks(tmp_path / "half.npz", tracks + 0.5, visible, queries)
    shifted = ImportedTracks(ImportedTracksConfig(path=str(tmp_path / "half.npz"), pixel_offset=0.5)).track(
        video
    )
    np.testing.assert_allclose(shifted.uv[dense.visible], dense.uv[dense.visible], atol=1e-5)


def test_imported_tracks_reject_malformed_files(tmp_path):
    video, _ = _moving_block_video()
    tracks = np.zeros((T, 5, 2), np.float32)
    queries = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [4, 0]], np.int32)
    cases = {
        "tracks": dict(tracks=np.zeros((T + 1, 5, 2), np.float32), visible=np.ones((T + 1, 5), bool)),
        "visible": dict(tracks=tracks),
        "outside": dict(tracks=tracks, visible=np.ones((T, 5), bool), queries=queries + np.array([W, 0])),
        "same reference pixel": dict(tracks=tracks, visible=np.ones((T, 5), bool), queries=queries * 0),
    }
    for match, arrays in cases.items():
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DataFormatError, match=match):
            ImportedTracks(ImportedTracksConfig(path=str(tmp_path / "bad.npz"))).track(video)
    with pytest.raises(DataFormatError, match="not found"):
        ImportedTracks(ImportedTracksConfig(path=str(tmp_path / "none.npz"))).track(video)


# ----------------------------------------------------------------------------- camera poses
def _rotating_camera(angles_deg, with_block: bool = False):
    """Returns ``(tracks, depth, K, ref_from_cam)`` of a camera turning in place in front of a wall
    (plane z = 1 m in the reference camera), with exact tracks and depth; optionally a box in front
    of the wall moving sideways (it must not disturb the poses)."""
    K = intrinsics_from_fov(W, H, 60.0).astype(np.float64)
    grid = pixel_grid(H, W).numpy().astype(np.float64)
    depth0 = np.ones((H, W))
    moving = np.zeros((H, W), bool)
    if with_block:
        moving[18:30, 18:30] = True
        depth0[moving] = 0.6
    X = unproject(grid, depth0, K)  # (H, W, 3) reference points
    cam_from_ref, depth = [], []
    for angle in angles_deg:
        rotation = axis_angle_to_matrix(
            np.array([0.3, 1.0, 0.1]) / np.linalg.norm([0.3, 1.0, 0.1]) * math.radians(angle)
        )
        cam_from_ref.append(make_pose(rotation, np.zeros(3)))
        # Depth of the wall seen through each pixel of camera t: n_t . X = 1 with n_t = R n.
        normal = rotation @ np.array([0.0, 0.0, 1.0])
        rays = unproject(grid, np.ones((H, W)), K)
        depth.append(1.0 / (rays @ normal))
    cam_from_ref = np.stack(cam_from_ref)
    X_t = np.repeat(X[None], len(angles_deg), 0)
    offsets = 0.01 * np.arange(len(angles_deg))
    X_t[:, moving] += np.stack([offsets, 0 * offsets, 0 * offsets], -1)[:, None]
    points_cam = transform_points(cam_from_ref, X_t.reshape(len(angles_deg), -1, 3)).reshape(-1, H, W, 3)
    uv, z = project(points_cam, K)
    depth = np.stack(depth)
    if with_block:  # the box is seen where it is (a nearer surface than the wall)
        for t in range(len(angles_deg)):
            u, v = np.rint(uv[t, moving]).astype(int).T
            depth[t, v.clip(0, H - 1), u.clip(0, W - 1)] = z[t, moving]
    visible = np.ones(uv.shape[:3], bool)
    uv[0] = grid
    return Tracks(uv.astype(np.float32), visible), depth.astype(np.float32), K, invert_pose(cam_from_ref)


def test_bundle_adjustment_recovers_a_pure_camera_rotation():
    angles = np.linspace(0.0, 6.0, T)
    tracks, depth, K, ref_from_cam = _rotating_camera(angles)
    poses = TrackletBundleAdjustment().solve(tracks, depth, K)
    relative = invert_pose(ref_from_cam) @ poses.ref_from_cam.astype(np.float64)
    assert np.degrees(rotation_angle(relative[:, :3, :3])).max() < 0.05
    assert np.abs(poses.ref_from_cam[:, :3, 3]).max() < 2e-3  # metres, at 1 m depth
    np.testing.assert_allclose(poses.depth_scale, 1.0, atol=2e-3)
    assert poses.reprojection_px < 0.05


def test_the_refinement_runs_when_the_depth_drifts_in_scale_and_only_then():
    angles = np.linspace(0.0, 6.0, T)
    tracks, depth, K, ref_from_cam = _rotating_camera(angles)

    def solve(depth, **config):
        return TrackletBundleAdjustment(PoseConfig(**config)).solve(tracks, depth, K)

    # one depth scale throughout (RGB-D, stereo): the 3D alignment is kept as it is
    kept, aligned = solve(depth), solve(depth, refine_iterations=0)
    np.testing.assert_array_equal(kept.ref_from_cam, aligned.ref_from_cam)
    # a scale that drifts 10 % over the clip (monocular depth): the refinement runs and undoes it
    drift = 1.0 + 0.1 * np.arange(T, dtype=np.float32) / T
    drifting = depth * drift[:, None, None]
    refined = solve(drifting)
    np.testing.assert_array_equal(refined.ref_from_cam, solve(drifting, refine_scale_drift=0.0).ref_from_cam)
    assert not np.array_equal(refined.ref_from_cam, solve(drifting, refine_iterations=0).ref_from_cam)
    np.testing.assert_allclose(refined.depth_scale * drift, 1.0, atol=5e-3)
    relative = invert_pose(ref_from_cam) @ refined.ref_from_cam.astype(np.float64)
    assert np.degrees(rotation_angle(relative[:, :3, :3])).max() < 0.05


def test_static_camera_gives_identity_poses_and_a_moving_block_is_dynamic():
    tracks, depth, K, _ = _rotating_camera(np.zeros(T), with_block=True)
    poses = TrackletBundleAdjustment().solve(tracks, depth, K)
    angle = np.degrees(rotation_angle(poses.ref_from_cam[:, :3, :3].astype(np.float64)))
    assert angle.max() < 0.01 and np.abs(poses.ref_from_cam[:, :3, 3]).max() < 1e-4
    assert not poses.static[20:28, 20:28].any()  # the moving box
    assert poses.static[:, :12].all()  # the wall


def test_focal_search_when_K_is_unknown_and_error_without_candidates():
    tracks, depth, K, _ = _rotating_camera(np.linspace(0.0, 8.0, T))
    with pytest.raises(VideoError, match="K: the camera intrinsics"):
        TrackletBundleAdjustment(PoseConfig(focal_candidates=())).solve(tracks, depth, None)
    searched = TrackletBundleAdjustment(PoseConfig(focal_candidates=(40.0, 60.0, 80.0))).solve(
        tracks, depth, None
    )
    assert searched.K[0, 0] == pytest.approx(K[0, 0], rel=1e-5)
    assert set(searched.focal_errors) == {40.0, 60.0, 80.0}


# ----------------------------------------------------------------------------- infill
def _rigid_body(T_frames: int = 12):
    """Returns trajectories (T, N, 3) of points on two faces of a box that turns and moves on a curve."""
    u, v = np.meshgrid(np.linspace(-0.05, 0.05, 8), np.linspace(-0.05, 0.05, 8))
    front = np.stack([u.ravel(), v.ravel(), np.full(u.size, -0.05)], -1)
    side = np.stack([np.full(u.size, 0.05), v.ravel(), u.ravel()], -1)
    body = np.concatenate([front, side])  # (N, 3) in the body frame
    t = np.linspace(0, 1, T_frames)
    rotation = axis_angle_to_matrix(np.stack([0 * t, 1.2 * t, 0.4 * t], -1))  # up to ~70 degrees
    translation = np.stack([0.1 * np.sin(2 * t), 0.05 * t**2, 0.8 + 0.05 * t], -1)
    return (body @ np.swapaxes(rotation, -1, -2) + translation[:, None]).astype(np.float32)


@pytest.mark.parametrize("optimizer", ["sparse", "lbfgs"])
def test_infill_recovers_an_occluded_interval_on_a_rigid_body(optimizer):
    xyz = _rigid_body()
    T_frames, N, _ = xyz.shape
    visible = np.ones((T_frames, N), bool)
    hidden_points = np.arange(N) % 4 == 0  # a quarter of the points, spread over the body
    hidden_points[:16] = True
    visible[3:9, hidden_points] = False
    scrambled = np.where(visible[..., None], xyz, 123.0)  # hidden values must not be read
    valid = np.ones(N, bool)
    result = TrajectoryInfill(InfillConfig(iterations=200, optimizer=optimizer)).infill(
        scrambled, visible, valid
    )
    np.testing.assert_array_equal(result.xyz[visible], xyz[visible])
    scale = float(np.median(xyz[0, :, 2]))
    error = np.linalg.norm(result.xyz - xyz, axis=-1)[~visible] / scale
    baseline = np.linalg.norm(interpolate_hidden(scrambled, visible) - xyz, axis=-1)[~visible] / scale
    assert result.hidden_fraction == pytest.approx((~visible).mean())
    assert np.median(error) < 0.005, np.median(error)
    assert np.median(error) < 0.25 * np.median(baseline)  # rigidity, not interpolation, did it


def test_infill_checks_its_inputs():
    with pytest.raises(ValueError, match="visible / valid"):
        TrajectoryInfill().infill(np.zeros((4, 5, 3)), np.ones((4, 6), bool), np.ones(5, bool))
    bad = np.zeros((4, 5, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TrajectoryInfill().infill(bad, np.ones((4, 5), bool), np.ones(5, bool))


# ----------------------------------------------------------------------------- segmentation
def test_motion_segmentation_separates_two_rigid_motions_from_the_background():
    rng = np.random.default_rng(0)
    h, w = 24, 24
    v, u = np.mgrid[0:h, 0:w]
    bumps = rng.uniform(-0.02, 0.02, (h, w))
    points = np.stack([(u - w / 2) * 0.02, (v - h / 2) * 0.02, 1.0 + bumps], -1).reshape(-1, 3)  # a wall
    labels = np.zeros((h, w), np.int32)
    labels[2:10, 2:12] = 1  # slides right
    labels[14:22, 12:20] = 2  # turns like a lid
    flat = labels.ravel()
    xyz = np.repeat(points[None], T, 0)
    t = np.arange(T)[:, None]
    xyz[:, flat == 1, 0] += 0.02 * t
    rotation = axis_angle_to_matrix(np.stack([0 * t[:, 0], 0.1 * t[:, 0], 0 * t[:, 0]], -1))
    centre = points[flat == 2].mean(0) - np.array([0.12, 0.0, 0.0])  # a hinge beside it: every point moves
    xyz[:, flat == 2] = (points[flat == 2] - centre) @ np.swapaxes(rotation, -1, -2) + centre
    video = Video(np.zeros((T, h, w, 3), np.uint8))
    valid = np.ones(h * w, bool)
    inputs = SegmentationInputs(video, xyz.astype(np.float32), np.ones((T, h * w), bool), valid, flat == 0)
    found = MotionSegmentation().segment(inputs)
    assert (found[labels == 0] == 0).mean() > 0.99
    for label in (1, 2):
        ids, counts = np.unique(found[labels == label], return_counts=True)
        assert ids[counts.argmax()] > 0 and counts.max() / counts.sum() > 0.95
    assert len(np.unique(found[found > 0])) == 2
    # GivenSegmentation: the video's masks, or a label image file.
    with pytest.raises(VideoError, match="GivenSegmentation"):
        GivenSegmentation().segment(inputs)


def test_given_segmentation_reads_a_label_image(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[5:9, 5:9] = 3
    Image.fromarray(labels).save(tmp_path / "clip.png")
    video = Video(np.zeros((T, H, W, 3), np.uint8), name="clip")
    inputs = SegmentationInputs(video, np.zeros((T, H * W, 3), np.float32), None, None, None)
    np.testing.assert_array_equal(GivenSegmentation(tmp_path).segment(inputs), labels)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_videos_give_clear_errors(tmp_path):
    frames = np.zeros((T, H, W, 3), np.uint8)
    with pytest.raises(VideoError, match=r"frames\[1\].*one size"):
        Video([frames[0], np.zeros((H, W + 2, 3), np.uint8)])
    with pytest.raises(VideoError, match="empty"):
        Video(np.zeros((0, H, W, 3), np.uint8))
    with pytest.raises(VideoError, match="empty"):
        Video([])
    with pytest.raises(VideoError, match=r"\(T, H, W, 3\) uint8"):
        Video(frames.astype(np.float32))
    for bad_value in (-1.0, np.inf):  # 0 and NaN are holes (test_depth_holes_...), these are errors
        depth = np.ones((T, H, W), np.float32)
        depth[2, 3, 4] = bad_value
        with pytest.raises(VideoError, match=r"depth.*negative/inf.*t=2, v=3, u=4"):
            Video(frames, depth=depth)
    depth = np.ones((T, H, W), np.float32)
    depth[5] = 0.0
    with pytest.raises(VideoError, match="frame 5 has no depth"):
        Video(frames, depth=depth)
    with pytest.raises(VideoError, match=r"depth: expected \(T, H, W\)"):
        Video(frames, depth=np.ones((T, H, W + 1), np.float32))
    with pytest.raises(VideoError, match="K: expected"):
        Video(frames, K=np.eye(2))
    # A folder of frames of different sizes, and an empty one.
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "000.png")
    Image.fromarray(np.zeros((H, W + 4, 3), np.uint8)).save(folder / "001.png")
    with pytest.raises(VideoError, match=r"001\.png is 52x48 pixels but 000\.png is 48x48"):
        load_video(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match=r"no \.png"):
        load_video(tmp_path / "empty")


def test_resize_video_scales_K_with_the_image():
    clip = tiny_simulation("tabletop", 0)
    video = resize_video(Video.from_clip(clip.clip), 16, 16)
    assert video.shape == (8, 16, 16) and video.depth.shape == (8, 16, 16)
    # The reference point at a pixel projects back onto the same (downsampled) pixel.
    point = clip.clip.momap.xyz[0, 9, 21]
    uv_small, _ = project(point[None].astype(np.float64), video.K.astype(np.float64))
    np.testing.assert_allclose(uv_small[0], [(21 + 0.5) / 2 - 0.5, (9 + 0.5) / 2 - 0.5], atol=1e-3)


# ----------------------------------------------------------------------------- pipeline on MoMap-Sim
@pytest.mark.parametrize("family", ["tabletop", "egocentric"])
def test_pipeline_with_gt_depth_and_tracks_is_exact(family):
    clip = tiny_simulation(family, 1).clip
    result = Pipeline(tracker=GivenTracks(tracks_from_momap(clip.momap)), segmentation=GivenSegmentation())(
        Video.from_clip(clip)
    )
    errors = reconstruction_errors(result.momap, clip.momap)
    assert errors["visible_epe"] < 1e-3 and errors["rotation_max_deg"] < 0.05, errors
    # Visible = GT visible, less points on depth edges (their depth is unreliable: LiftConfig,
    # DepthFilterConfig).
    gt_visible = clip.momap.visible & clip.momap.valid
    assert not (result.momap.visible & ~gt_visible).any()
    # At 32x32 the bands along depth edges are a large part of the image (about a quarter)
    assert result.momap.visible.sum() > 0.65 * gt_visible.sum()
    np.testing.assert_array_equal(result.momap.instance, clip.momap.instance)


@pytest.mark.parametrize("family", ["tabletop", "egocentric"])
def test_pipeline_with_flow_tracks_on_a_smoke_clip(family, tmp_path):
    clip = tiny_simulation(family, 2).clip
    video = Video.from_clip(clip)
    started = time.perf_counter()
    result = Pipeline()(video)
    total = time.perf_counter() - started
    stages = ["depth", "tracking", "poses", "segmentation", "infill"]
    assert list(result.report) == stages  # in the order they ran
    # each stage's own time: together nearly all of the call (not the input check or the MoMap record)
    seconds = [result.report[stage]["seconds"] for stage in stages]
    assert all(t > 0 for t in seconds) and 0.5 * total < sum(seconds) <= total, (seconds, total)
    # the quality numbers are those of the intermediate results, and the MoMap keeps the report
    report = result.report
    assert report["depth"]["median_m"] == float(np.median(result.depth))
    assert report["tracking"]["tracked_fraction"] == result.tracks.tracked_fraction
    assert report["segmentation"]["num_instances"] == len(np.unique(result.instance[result.instance > 0]))
    assert report["infill"]["hidden_fraction"] == result.infill.hidden_fraction
    assert result.momap.meta["recon"] == report
    # the summary: a line per stage, in order, with its seconds and every quality number
    lines = result.summary().splitlines()
    assert len(lines) == len(stages)
    for line, stage in zip(lines, stages, strict=True):
        values = report[stage]
        assert line.split()[:3] == [stage, f"{values['seconds']:.3f}", "s"], line
        for key, value in values.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            assert key == "seconds" or f"{key} {shown}" in line, (key, line)
    errors = reconstruction_errors(result.momap, clip.momap)
    assert errors["visible_epe"] < 0.03, errors
    # 32x32 pixels: coarser than the benchmark's 64x64, where the mean is well below 1 degree.
    assert errors["rotation_deg"] < 1.0 and errors["rotation_max_deg"] < (
        0.5 if family == "tabletop" else 2.5
    ), errors
    assert 0.3 < errors["tracked_fraction"] <= 1
    # The result is an ordinary MoMap: it saves and loads.
    result.momap.save(tmp_path / "recon.npz")
    assert MoMap.load(tmp_path / "recon.npz").meta["source"] == "recon"


# ----------------------------------------------------------------------------- runner
def _video_folder(tmp_path, count: int = 3):
    folder = tmp_path / "videos"
    folder.mkdir()
    for seed in range(count):
        tiny_simulation("egocentric", seed).clip.save(folder / f"ego_{seed}.npz")
    return folder


def test_recon_job_shards_resume_and_write_a_dataset(tmp_path):
    videos, out = _video_folder(tmp_path), tmp_path / "out"
    job = dict(videos=videos, out=out, progress=False)
    first = ReconJob(**job, shard="0/2").run()
    assert (first.shard_videos, first.reconstructed, first.num_clips) == (2, 2, 2)
    second = ReconJob(**job, shard="1/2").run()
    assert (second.reconstructed, second.num_clips) == (1, 3)
    entries = load_manifest(out)
    assert [entry["id"] for entry in entries] == ["ego_0", "ego_1", "ego_2"]
    assert [entry["index"] for entry in entries] == [0, 1, 2]
    settings = json.loads((out / "dataset.json").read_text())
    assert settings["sim"] == {"family": "recon", "height": 32, "width": 32, "num_frames": 8}
    item = MoMapDataset(out, split=None, verify=True)[0]
    assert item["momap"].shape == (24, 32, 32) and item["visible"].shape == (8, 32, 32)
    # Rerun: nothing to do. Then a lost clip file and a torn manifest line: only that clip is redone.
    assert ReconJob(**job).run().reconstructed == 0
    (out / "clips" / "ego_1.npz").unlink()
    with open(out / "manifest.jsonl", "a") as manifest:
        manifest.write('{"id": "ego_9", "ind')
    again = ReconJob(**job).run()
    assert (again.reconstructed, again.already_done, again.num_clips) == (1, 2, 3)
    # Other settings in the same folder are refused, naming the field.
    with pytest.raises(ValueError, match="t0"):
        ReconJob(**job, t0=1, num_frames=7).run()


def test_a_clip_redone_with_other_bytes_replaces_its_line_in_every_manifest(tmp_path):
    """A lost clip redone without --shard may differ bit for bit (threads, libraries); the shard
    manifest that listed the first file must not win the merge over the new line."""
    videos, out = _video_folder(tmp_path), tmp_path / "out"
    for shard in ("0/2", "1/2"):
        ReconJob(videos=videos, out=out, progress=False, shard=shard).run()
    file = out / "clips" / "ego_1.npz"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: what a non-bit-identical redo writes
    file.write_bytes(bytes(data))
    entry = next(e for e in load_manifest(out) if e["id"] == "ego_1")
    redone = {**entry, "sha256": sha256_file(file)}
    with open(out / "manifest.jsonl", "a") as manifest:  # the rerun appends its line here
        manifest.write(json.dumps(redone) + "\n")
    assert merge_manifests(out, ["ego_0", "ego_1", "ego_2"]) == 3
    assert next(e for e in load_manifest(out) if e["id"] == "ego_1")["sha256"] == redone["sha256"]
    assert verify_recon_dataset(out)[0] == 3
    file.write_bytes(b"\0" * len(data))  # matching neither line: the clip is not done
    assert merge_manifests(out, ["ego_0", "ego_1", "ego_2"]) == 2


def test_recon_job_reports_bad_settings_and_videos(tmp_path, capsys):
    videos = _video_folder(tmp_path, count=1)
    with pytest.raises(ReconSettingsError, match="shard: expected 'i/n'"):
        parse_shard("2/2")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["recon", "--videos", str(videos), "--out", str(tmp_path / "o"), "--shard", "x"])
    assert exit_info.value.code == 2 and "shard" in capsys.readouterr().err
    (tmp_path / "none").mkdir()
    with pytest.raises(ReconSettingsError, match="holds no videos"):
        ReconJob(videos=tmp_path / "none", out=tmp_path / "o2", progress=False).run()
    # Frames without depth: the job finishes the other videos and names the failed one.
    frames = tmp_path / "videos" / "nodepth"
    frames.mkdir()
    for t in range(8):
        Image.fromarray(_texture(32, 32, t)).save(frames / f"{t:03d}.png")
    with pytest.raises(ValueError, match=r"(?s)1 video\(s\).*nodepth: depth"):
        ReconJob(videos=videos, out=tmp_path / "o3", progress=False).run()
    assert [entry["id"] for entry in load_manifest(tmp_path / "o3")] == ["ego_0"]


# ----------------------------------------------------------------------------- paths and size limits
def test_recon_manifests_cannot_point_outside_the_dataset_folder(tmp_path):
    from tests.faults_data_eval import escaping_symlink, tiny_dataset

    root = escaping_symlink(tmp_path)  # clips/toy_000000.npz is a link to a file outside
    with pytest.raises(DataFormatError, match=r"clip toy_000000: file: .* leads outside"):
        verify_recon_dataset(root)
    with pytest.raises(DataFormatError, match="leads outside"):
        merge_manifests(root, ["toy_000000", "toy_000001"])
    shard = tiny_dataset((tmp_path / "sharded").resolve())
    shard.joinpath("shards").mkdir()
    entry = {**json.loads((shard / "manifest.jsonl").read_text().splitlines()[0]), "file": "../../x.npz"}
    (shard / "shards" / "manifest-0-of-2.jsonl").write_text(json.dumps(entry) + "\n")
    with pytest.raises(DataFormatError, match=r"manifest-0-of-2\.jsonl:1: .*not a relative path inside"):
        merge_manifests(shard, ["toy_000000", "toy_000001"])


def test_recon_sizes_are_bounded_before_anything_is_written(tmp_path):
    videos = _video_folder(tmp_path, count=1)
    with pytest.raises(ReconSettingsError, match=r"height: expected 8\.\.1024 pixels or None, got 20000"):
        ReconJob(videos=videos, out=tmp_path / "out", height=20000, progress=False).run()
    with pytest.raises(ReconSettingsError, match=r"num_frames: expected 2\.\.512 frames or None"):
        ReconJob(videos=videos, out=tmp_path / "out", num_frames=10_000, progress=False).run()
    with pytest.raises(ReconSettingsError, match=r"MoMaps of 512 x 1024 x 1024 .* T x H x W <= 16777216"):
        ReconJob(videos=videos, out=tmp_path / "out", num_frames=512, height=1024, width=1024).run()
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- depth model offline
@pytest.fixture
def no_network(monkeypatch):
    """Records every attempt to reach a host (and refuses it, as an offline machine does)."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    return attempts


def test_transformers_depth_with_hf_hub_offline_fails_at_once_with_the_fix(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported, as users do
    depth = TransformersDepth(TransformersDepthConfig(model="nobody-here/no-such-depth-model"))
    with pytest.raises(FileNotFoundError) as raised:
        depth.estimate(Video(np.zeros((2, 16, 16, 3), np.uint8), name="v"))
    message = str(raised.value)
    assert "TransformersDepthConfig.model" in message and "HF_HUB_OFFLINE is set" in message
    assert "snapshot_download('nobody-here/no-such-depth-model')" in message and "GivenDepth" in message
    assert no_network == []  # the hub was never asked: nothing can wait on the network


def test_transformers_depth_without_network_probes_once_then_uses_the_cache(monkeypatch, no_network):
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    depth = TransformersDepth(TransformersDepthConfig(model="nobody-here/no-such-depth-model"))
    with pytest.raises(FileNotFoundError, match=r"the hub is unreachable: no network\?\): download it once"):
        depth._load()
    assert len(no_network) == 1  # one probe (HUB_PROBE_TIMEOUT s at most), no retries
    with pytest.raises(FileNotFoundError, match=r"'\./depth_model' is not a folder .* nor a hub id"):
        TransformersDepth(TransformersDepthConfig(model="./depth_model"))._load()
    assert len(no_network) == 1


# ----------------------------------------------------------------------------- pipeline progress
def test_pipeline_progress_bar_names_each_stage_and_changes_nothing(capsys):
    from momaplib.recon.pipeline import STAGES

    clip = tiny_simulation("tabletop", 1).clip
    video = Video.from_clip(clip)
    pipeline = Pipeline(tracker=GivenTracks(tracks_from_momap(clip.momap)), segmentation=GivenSegmentation())
    quiet = pipeline(video)
    assert capsys.readouterr().err == ""  # no bar unless asked for
    shown = pipeline(video, progress=True)
    bar = capsys.readouterr().err
    assert list(shown.report) == list(STAGES)
    # the description names the stage that runs next, then "done" with every stage counted
    positions = [bar.find(f"{video.name}: {stage}") for stage in [*STAGES, "done"]]
    assert -1 not in positions and positions == sorted(positions), bar
    assert f"{len(STAGES)}/{len(STAGES)}" in bar
    np.testing.assert_array_equal(shown.momap.xyz, quiet.momap.xyz)


def test_reconstruction_errors_score_moving_pixels_against_a_still_momap():
    import dataclasses

    gt = tiny_simulation("tabletop", 1).clip.momap
    moving = gt.moving_mask()
    assert moving.any()
    perfect = reconstruction_errors(gt, gt)
    assert perfect["moving_epe"] == 0 and perfect["visible_epe"] == 0
    assert perfect["moving_tracked_fraction"] == pytest.approx(gt.visible[1:, moving].mean())
    # A reconstruction that lost every moving track and held the points still scores moving_epe_still.
    held = np.repeat(gt.xyz[:1], gt.num_frames, axis=0)
    unseen = gt.visible.copy()
    unseen[1:] = False
    lost = reconstruction_errors(dataclasses.replace(gt, xyz=held, visible=unseen), gt)
    assert lost["moving_epe"] == lost["moving_epe_still"] == perfect["moving_epe_still"] > 0.05
    assert lost["moving_tracked_fraction"] == 0
    # Half of every displacement: half the error of holding still, pixel by pixel, so also the median.
    halfway = gt.xyz[:1] + 0.5 * (gt.xyz - gt.xyz[:1])
    half = reconstruction_errors(dataclasses.replace(gt, xyz=halfway), gt)
    assert half["moving_epe"] == pytest.approx(0.5 * perfect["moving_epe_still"], rel=1e-4)
    # Nothing moves in the GT: no moving pixels to score.
    still_gt = dataclasses.replace(gt, xyz=held)
    assert all(
        np.isnan(reconstruction_errors(still_gt, still_gt)[key]) for key in ("moving_epe", "moving_epe_still")
    )


# ----------------------------------------------------------------------------- noisy sensors
def test_depth_holes_are_accepted_filled_and_kept_out_of_the_reliable_mask():
    depth = np.full((2, 24, 24), 1.0, np.float32)
    depth[:, :, 12:] = 2.0  # a depth edge between columns 11 and 12
    depth[:, 5, 4] = 1.6  # a flying pixel
    depth[:, 18:21, 3:6] = 0.0  # a hole
    depth[1, 2, 20] = np.nan  # a NaN hole
    video = Video(np.zeros((2, 24, 24, 3), np.uint8), depth=depth)  # holes are not an error
    filled, reliable = clean_depth(video.depth, DepthFilterConfig())
    assert np.isfinite(filled).all() and (filled > 0).all()
    assert filled[0, 5, 4] == 1.0  # the median removed the flying pixel
    np.testing.assert_array_equal(filled[:, 18:21, 3:6], 1.0)  # filled from the surface around it
    assert filled[1, 2, 20] == 2.0
    assert not reliable[:, :, 11:13].any()  # both sides of the edge
    assert not reliable[:, 18:21, 3:6].any() and not reliable[1, 2, 20]  # holes
    assert reliable[:, 10, 0:8].all() and reliable[:, 10, 14:].all()  # flat surfaces away from both
    # Without the filter the pipeline refuses holes; with it (the default) a track never reads them.
    with pytest.raises(VideoError, match="NaN"):
        Pipeline(config=PipelineConfig(depth_filter=None))(replace(video, K=intrinsics_from_fov(24, 24, 60)))


def test_resize_depth_is_pixel_centre_correct_and_does_not_mix_across_edges():
    u = np.arange(64, dtype=np.float32)
    ramp = np.tile(1.0 + 0.01 * u, (1, 64, 1))  # depth grows along u
    centres = (np.arange(16) + 0.5) * 4 - 0.5  # source position of each new pixel's centre
    nearest = cv2.resize(ramp[0], (16, 16), interpolation=cv2.INTER_NEAREST)[0]
    assert np.mean((nearest - 1.0) / 0.01 - centres) / 4 == pytest.approx(-0.375, abs=1e-3)  # the old bug
    np.testing.assert_allclose(resize_depth(ramp, 16, 16)[0, 0], 1.0 + 0.01 * centres, atol=1e-5)
    # A step edge keeps its two depths (no point in mid-air), at the same place as in the frames;
    # a new pixel straddling it takes the front surface, never a mix.
    for edge in (32, 30):
        step = np.where(u < edge, 1.0, 2.0).astype(np.float32)
        frames = np.zeros((2, 64, 64, 3), np.uint8)
        frames[:, :, edge:] = 200
        video = resize_video(Video(frames, depth=np.tile(step, (2, 64, 1))), 16, 16)
        assert set(np.unique(video.depth)) == {1.0, 2.0}
        first_far = np.argmax(video.depth[0, 0] == 2.0)
        assert first_far == np.argmax(video.frames[0, 0, :, 0] >= 200)  # RGB and depth edges line up
    assert resize_depth(np.zeros((1, 8, 8), np.float32), 4, 4).max() == 0  # holes stay holes
    assert resize_depth(ramp, 128, 100).shape == (1, 128, 100)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rgb_only_video_reconstructs_with_a_depth_model_and_a_fov_search(tmp_path):
    _tiny_depth_model(tmp_path / "tiny")
    frames, _ = _moving_block_video()
    video = Video(frames.frames, name="rgb_only")  # no depth, no K: nothing made up by the user
    depth = TransformersDepth(TransformersDepthConfig(model=str(tmp_path / "tiny")))
    result = Pipeline(depth=depth)(video)
    assert set(result.poses.focal_errors) == set(DEFAULT_FOV_CANDIDATES)
    fov = math.degrees(2 * math.atan(0.5 * W / float(result.momap.K[0, 0])))
    assert min(abs(fov - c) for c in DEFAULT_FOV_CANDIDATES) < 1e-3  # K is one of the searched
    assert np.median(result.momap.xyz[0, ..., 2][result.momap.valid]) == pytest.approx(1.0, rel=0.05)
    assert np.isfinite(result.momap.xyz).all()


def _sensor_clips():
    from momaplib.data.splits import split_indices
    from momaplib.sim import SimConfig, clip_seed, generate_clip

    config = SimConfig(family="tabletop", height=64, width=64, num_frames=16, sensor="structured-light")
    return [generate_clip(clip_seed(0, i), config) for i in split_indices("tabletop", 2, "test")]


def test_reconstruction_of_structured_light_clips_meets_the_robustness_targets():
    clips = _sensor_clips()
    without = Pipeline(  # the robust parts switched off: holes filled, nothing else
        config=PipelineConfig(
            depth_filter=DepthFilterConfig(median_size=1, edge_ratio=1e9, edge_margin=0), hold_static=False
        ),
        segmentation=MotionSegmentation(MotionSegmentationConfig(min_fraction=0.0, min_moving_frames=1)),
    )
    scores = {}
    for name, pipeline in (("robust", Pipeline()), ("without", without)):
        errors = [reconstruction_errors(pipeline(Video.from_clip(c)).momap, c.momap) for c in clips]
        scores[name] = {key: np.mean([e[key] for e in errors]) for key in errors[0]}
    robust = scores["robust"]
    # Targets of the issue (64x64, T = 16 here; the benchmark measures 128x128, T = 32 on 20+ clips).
    assert robust["static_moving_fraction"] <= 0.02, scores
    assert robust["spurious_instances"] <= 0.5, scores
    assert robust["translation"] <= 0.03 and robust["visible_epe"] <= 0.03, scores
    off = scores["without"]
    assert off["static_moving_fraction"] > 0.02 or off["spurious_instances"] > 0.5, scores


def test_reprojection_hold_keeps_what_the_depth_still_sees_and_lets_go_of_what_left():
    from momaplib.geometry import depth_to_xyz
    from momaplib.recon.pipeline import background_instances, reprojection_static
    from momaplib.recon.poses import CameraPoses

    T, H, W = 6, 12, 16
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]], np.float32)
    ref_from_cam = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
    ref_from_cam[:, 0, 3] = np.linspace(0, 0.05, T)  # the camera slides parallel to a wall at z = 1
    depth = np.ones((T, H, W), np.float32)
    xyz0 = depth_to_xyz(depth[0], K).reshape(-1, 3)
    candidates = np.ones(H * W, bool)
    candidates[0] = False  # not a candidate: never static
    poses = CameraPoses(
        ref_from_cam=ref_from_cam, depth_scale=np.ones(T, np.float32), static=np.ones((H, W), bool), K=K,
        reprojection_px=0.0, points_cam=np.zeros((T, H, W, 3), np.float32), visible=np.ones((T, H, W), bool),
    )  # fmt: skip

    def pixel_of(index: int, t: int) -> tuple[int, int]:  # where point `index` of t = 0 lands in frame t
        x = xyz0[index] - ref_from_cam[t, :3, 3]
        return int(np.rint(K[1, 1] * x[1] / x[2] + K[1, 2])), int(np.rint(K[0, 0] * x[0] / x[2] + K[0, 2]))

    gone, occluded, hidden = 5 * W + 8, 6 * W + 8, 7 * W + 8
    for t in range(2, T):  # the point left: the depth behind it is farther
        depth[t][pixel_of(gone, t)] = 1.3
    for t in (1, 2):  # something passed in front of it
        depth[t][pixel_of(occluded, t)] = 0.4
    for t in range(1, T):  # no reading where it lands
        depth[t][pixel_of(hidden, t)] = 0.0
    static, consistent = reprojection_static(xyz0, candidates, depth, None, poses, PipelineConfig())
    assert not static[0] and not static[gone] and static[occluded]
    assert not static[hidden]  # checked once (t = 0) in 6 frames: too little to say
    assert consistent[0, occluded] and not consistent[1:3, occluded].any() and consistent[3:, occluded].all()
    # pixels that leave the image at the right edge are checked in fewer frames but still agree
    assert static[candidates].mean() > 0.9
    unreliable = np.ones((T, H, W), bool)
    unreliable[1:] = False  # nothing read after t = 0: no verdict for anyone
    assert not reprojection_static(xyz0, candidates, depth, unreliable, poses, PipelineConfig())[0].any()
    # instances: one the depth never saw move becomes background, one that left keeps its id
    instance = np.zeros((H, W), np.int32)
    instance[1:4, 2:5] = 1  # static: the wall's depth agrees wherever it projects
    instance[8:11, 9:12] = 2
    moved = depth.copy()
    for index in np.flatnonzero(instance.ravel() == 2):
        for t in range(1, T):
            moved[t][pixel_of(index, t)] = 1.5
    valid = np.ones(H * W, bool)
    out = background_instances(instance, xyz0, valid, moved, None, poses, PipelineConfig())
    assert (out[1:4, 2:5] == 0).all() and (out[8:11, 9:12] == 2).all() and (out[instance == 0] == 0).all()
    # depth whose scale drifts (monocular) flickers too: its tolerance follows the flicker, so the wall
    # stays static and the point that left (30 % deeper) still goes; depth of one scale keeps the
    # fixed tolerance
    from dataclasses import replace

    rng = np.random.default_rng(0)
    scales = np.array([1.0, 1.04, 0.97, 1.05, 0.96, 1.03], np.float32)
    flicker = depth * (1 + 0.03 * rng.standard_normal(depth.shape)).astype(np.float32)
    flicker[0] = depth[0]
    drifting = replace(poses, depth_scale=scales)
    raw = flicker / scales[:, None, None]  # what the depth model said; times depth_scale: the flicker
    widened, _ = reprojection_static(xyz0, candidates, raw, None, drifting, PipelineConfig())
    fixed, _ = reprojection_static(
        xyz0, candidates, raw, None, drifting, PipelineConfig(static_noise_factor=0)
    )
    assert widened[candidates].mean() > 0.9 and fixed[candidates].mean() < 0.7 and not widened[gone]
    one_scale, _ = reprojection_static(xyz0, candidates, flicker, None, poses, PipelineConfig())
    np.testing.assert_array_equal(one_scale, reprojection_static(
        xyz0, candidates, flicker, None, poses, PipelineConfig(static_noise_factor=0))[0])  # fmt: skip
