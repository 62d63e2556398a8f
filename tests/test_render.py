"""Gaussian-splat rendering of MoMaps (momaplib.render)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momaplib.geometry import intrinsics_from_fov
from momaplib.momap import MoMap
from momaplib.render import (
    HOLE_ID,
    check_cameras,
    orbit_cameras,
    own_cameras,
    psnr,
    rasterize,
    render_momap,
    render_quality,
)
from momaplib.render.splat import MAX_ALPHA, MIN_ALPHA, MIN_TRANSMITTANCE, project_gaussians
from momaplib.sim import SimConfig, generate_clip


def plane_momap(T: int = 3, size: int = 32, depth: float = 2.0, shift_px: float = 2.0) -> MoMap:
    """A textured fronto-parallel plane at ``depth`` moving right by ``shift_px`` pixels per frame."""
    K = intrinsics_from_fov(size, size, 60.0)
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    xyz0 = np.stack([x, y, np.full_like(x, depth)], -1)
    dx = shift_px * depth / K[0, 0]
    xyz = np.stack([xyz0 + np.array([dx * t, 0, 0], np.float32) for t in range(T)])
    rng = np.random.default_rng(0)
    rgb = (rng.uniform(0, 1, (size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1) * 255).astype(np.uint8)
    instance = np.zeros((size, size), np.int32)
    instance[:, size // 2 :] = 3
    return MoMap(
        xyz=xyz, valid=np.ones((size, size), bool), visible=np.ones((T, size, size), bool), rgb=rgb,
        instance=instance, K=K, ref_from_cam=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
    )  # fmt: skip


def test_translated_plane_renders_shifted_by_the_known_pixels():
    momap = plane_momap(T=3, shift_px=2.0)
    out = render_momap(momap, backend="torch")
    rgb0 = momap.rgb.astype(np.float32) / 255
    # frame 0 reproduces the reference image (up to the splats' overlap on sharp edges); frame t
    # is frame 0 shifted right by 2 t pixels (up to the off-axis stretch of projected Gaussians)
    assert psnr(out.rgb[0], rgb0) > 25
    for t in (1, 2):
        s = 2 * t
        assert psnr(out.rgb[t][:, s:], out.rgb[0][:, :-s]) > 35
        assert (out.alpha[t][:, :s] < 0.5).all()  # the strip the plane left is a hole
        assert (out.instance[t][:, :s] == HOLE_ID).all()
        np.testing.assert_array_equal(out.instance[t][:, s:], momap.instance[:, :-s])
    covered = out.alpha > 0.5
    np.testing.assert_allclose(out.depth[covered], 2.0, rtol=1e-4)


def test_moving_the_camera_equals_moving_the_points():
    momap = plane_momap(T=2, shift_px=0.0)
    cam_from_ref = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    cam_from_ref[1, 0, 3] = 2.0 * 2.0 / momap.K[0, 0]  # camera moved left = points moved right by 2 px
    by_camera = render_momap(momap, cam_from_ref=cam_from_ref, backend="torch")
    by_points = render_momap(plane_momap(T=2, shift_px=2.0), backend="torch")
    np.testing.assert_allclose(by_camera.rgb, by_points.rgb, atol=1e-4)


def _brute_force(means2d, conics, depths, colors, opacities, H, W):
    """Independent reference: per pixel, every Gaussian, sorted by depth, composited in a loop."""
    image, alpha_sum = np.zeros((H, W, colors.shape[1])), np.zeros((H, W))
    order = np.argsort(depths, kind="stable")
    for v in range(H):
        for u in range(W):
            transmittance = 1.0
            for i in order:
                dx, dy = u - means2d[i, 0], v - means2d[i, 1]
                a, b, c = conics[i]
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(MAX_ALPHA, opacities[i] * np.exp(-sigma))
                if sigma < 0 or alpha < MIN_ALPHA:
                    continue
                if transmittance * (1 - alpha) <= MIN_TRANSMITTANCE:
                    break
                image[v, u] += alpha * transmittance * colors[i]
                alpha_sum[v, u] += alpha * transmittance
                transmittance *= 1 - alpha
    return image, alpha_sum


def test_torch_rasteriser_matches_a_brute_force_compositor():
    gen = torch.Generator().manual_seed(0)
    N, H, W = 12, 12, 14
    means = torch.rand(1, N, 3, generator=gen) * torch.tensor([1.0, 1.0, 1.0]) + torch.tensor(
        [-0.5, -0.5, 1.5]
    )
    scales = torch.rand(N, generator=gen) * 0.05 + 0.01
    colors = torch.rand(N, 3, generator=gen)
    opacities = torch.rand(N, generator=gen) * 0.7 + 0.3
    K = torch.tensor([[[12.0, 0, 6.5], [0, 12.0, 5.5], [0, 0, 1]]])
    out = rasterize(means, scales, colors, K, torch.eye(4)[None], H, W, backend="torch", opacities=opacities)
    centres, conics, radius = project_gaussians(means, scales, K, H, W)
    assert (radius > 0).all()
    image, alpha = _brute_force(
        centres[0].double().numpy(), conics[0].double().numpy(), means[0, :, 2].numpy(),
        colors.double().numpy(), opacities.double().numpy(), H, W,
    )  # fmt: skip
    # the torch backend only visits pixels within 3.33 sigma: the rest is below MIN_ALPHA anyway
    np.testing.assert_allclose(out.features[0].numpy(), image, atol=2e-3)
    np.testing.assert_allclose(out.alpha[0].numpy(), alpha, atol=2e-3)


@pytest.mark.parametrize("family", ["tabletop", "egocentric"])
def test_gt_momap_render_reproduces_the_sim_frames(family):
    clip = generate_clip(11, SimConfig(family=family, height=64, width=64, num_frames=8))
    out = render_momap(clip.momap, backend="torch")
    quality = render_quality(out, clip.frames, clip.depth)
    assert quality["psnr_visible"] > 28, quality
    assert quality["visible_fraction"] > 0.5, quality
    # the reference frame's instance ids come back where the MoMap is valid
    agree = (out.instance[0] == clip.momap.instance)[clip.momap.valid].mean()
    assert agree > 0.97


def test_frames_subset_and_orbit_cameras():
    momap = plane_momap(T=4)
    sub = render_momap(momap, frames=[0, 2], backend="torch")
    full = render_momap(momap, backend="torch")
    np.testing.assert_allclose(sub.rgb, full.rgb[[0, 2]], atol=1e-6)
    cams = orbit_cameras(momap, degrees=5)
    assert cams.shape == (4, 4, 4)
    np.testing.assert_allclose(cams[0], np.eye(4), atol=1e-6)
    check_cameras(momap.K, cams, 4)  # rigid and finite
    np.testing.assert_allclose(own_cameras(momap), np.tile(np.eye(4), (4, 1, 1)), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cam_from_ref": np.eye(3)}, "cam_from_ref"),
        ({"cam_from_ref": np.full((3, 4, 4), np.nan)}, "cam_from_ref"),
        ({"cam_from_ref": np.tile(np.eye(4), (2, 1, 1))}, "cam_from_ref"),  # 3 frames, 2 poses
        ({"K": np.eye(2)}, "K"),
        ({"K": -np.eye(3)}, "K"),
        ({"height": 0}, "height"),
        ({"backend": "opengl"}, "backend"),
        ({"frames": [5]}, "frames"),
        ({"rgb": np.zeros((4, 4, 3), np.uint8)}, "rgb"),
    ],
)
def test_bad_render_inputs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        render_momap(plane_momap(T=3), **kwargs)


def test_empty_momap_is_refused():
    momap = plane_momap(T=2)
    momap.valid[:] = False
    momap.visible[:] = False
    with pytest.raises(ValueError, match=r"momap\.valid"):
        render_momap(momap)


def test_refined_colors_make_frame_zero_exact():
    momap = plane_momap(T=1, size=16)
    plain = render_momap(momap, backend="torch")
    refined = render_momap(momap, backend="torch", refine_colors=60)
    target = momap.rgb / 255
    assert psnr(refined.rgb[0], target) > psnr(plain.rgb[0], target)
