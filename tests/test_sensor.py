"""MoMap-Sim sensor models and appearance randomisation: observations degrade, the ground truth does not."""

from __future__ import annotations

import typing
from dataclasses import fields, replace

import numpy as np
import pytest
from scipy import ndimage

from momaplib.sim import SimConfig, generate_clip
from momaplib.sim.appearance import APPEARANCE_RANGES, random_lighting, randomize_appearance
from momaplib.sim.sensor import (
    SENSOR_MODELS,
    SENSORS,
    ColorSensor,
    Rendering,
    SensorModel,
    TriangulationDepth,
    observe,
    observed_xyz,
    triangulation_depth,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GT_ARRAYS = ("xyz", "valid", "visible", "instance", "K", "ref_from_cam")
#: A triangulating sensor with every failure switched off: only disparity noise and quantisation.
NOISE_ONLY = TriangulationDepth(
    occlusion_holes=False,
    edge_hole_prob=0.0,
    flying_prob=0.0,
    grazing_deg=(89.0, 90.0),
    grazing_noise=0.0,
    dark_return=0.0,
    metallic_dropout=0.0,
    depth_range_m=(0.01, 100.0),
)


def _small(family: str = "tabletop", size: int = 32, frames: int = 4, **changes) -> SimConfig:
    return SimConfig(family=family, height=size, width=size, num_frames=frames, **changes)


def _rendering(depth: np.ndarray, focal: float = 50.0) -> Rendering:
    """Returns a synthetic frontal rendering of ``depth`` (T, H, W): grey frames, rays along normals."""
    T, H, W = depth.shape
    K = np.array([[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1]], dtype=np.float32)
    return Rendering(
        frames=np.full((T, H, W, 3), 160, dtype=np.uint8),
        depth=depth.astype(np.float32),
        incidence_cos=np.ones((T, H, W), dtype=np.float32),
        instances=np.zeros((T, H, W), dtype=np.int32),
        K=K,
    )


def _discontinuities(depth: np.ndarray, jump: float = 0.05) -> np.ndarray:
    """Returns pixels (T, H, W) next to a relative depth jump > ``jump`` (both sides, 1-pixel dilated)."""
    z = np.where(np.isfinite(depth), depth, 1e3)
    edge = np.zeros(z.shape, dtype=bool)
    dx = np.abs(np.diff(z, axis=2)) > jump * np.minimum(z[:, :, 1:], z[:, :, :-1])
    dy = np.abs(np.diff(z, axis=1)) > jump * np.minimum(z[:, 1:], z[:, :-1])
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:] |= dy
    edge[:, :-1] |= dy
    return ndimage.binary_dilation(edge, structure=np.ones((1, 3, 3), dtype=bool))


@pytest.mark.parametrize("sensor", [s for s in SENSORS if s != "ideal"])
def test_only_the_observations_degrade(family, sensor):
    ideal = generate_clip(3, _small(family))
    clip = generate_clip(3, _small(family, sensor=sensor))
    for name in GT_ARRAYS:
        assert np.array_equal(getattr(clip.momap, name), getattr(ideal.momap, name)), name
    assert np.array_equal(clip.instances, ideal.instances)
    assert clip.prompt == ideal.prompt and clip.task == ideal.task
    assert clip.momap.meta["sensor"] == sensor and "sensor" not in ideal.momap.meta
    assert np.array_equal(clip.momap.rgb, clip.frames[0])
    assert clip.frames.dtype == np.uint8 and clip.depth.dtype == np.float32
    assert np.abs(clip.frames.astype(int) - ideal.frames).mean() > 1.0
    seen = clip.depth > 0
    assert not np.array_equal(clip.depth[seen], ideal.depth[seen])
    assert np.isfinite(clip.depth).all() and (clip.depth >= 0).all()  # holes are 0, never NaN


def test_ideal_is_the_default_and_the_names_match_the_config():
    assert SimConfig().sensor == "ideal" and SimConfig().appearance == 0.0
    config = _small()
    default, ideal = generate_clip(5, config), generate_clip(5, replace(config, sensor="ideal"))
    assert np.array_equal(default.frames, ideal.frames) and np.array_equal(default.depth, ideal.depth)
    literal = typing.get_type_hints(SimConfig)["sensor"]
    assert typing.get_args(literal) == SENSORS == tuple(SENSOR_MODELS)
    assert all(SENSOR_MODELS[name].name == name for name in SENSORS)
    with pytest.raises(ValueError, match=r"SimConfig\.sensor: expected one of .*'structured-light'"):
        SimConfig(sensor="kinect")
    with pytest.raises(ValueError, match=r"SimConfig\.appearance: expected 0\.\.1, got 1\.5"):
        SimConfig(appearance=1.5)


def test_same_seed_same_noise_and_independent_of_the_motion():
    config = _small("egocentric", sensor="structured-light")
    a, b, c = generate_clip(7, config), generate_clip(7, config), generate_clip(8, config)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.depth, c.depth)
    if "motion_variant" in {f.name for f in fields(SimConfig)}:
        # Another motion of the same scene: frame 0 is rendered the same, so it is observed the same.
        moved = generate_clip(7, replace(config, motion_variant=1))
        assert np.array_equal(moved.frames[0], a.frames[0]) and np.array_equal(moved.depth[0], a.depth[0])


def test_holes_concentrate_on_depth_discontinuities(family):
    ideal = generate_clip(1, _small(family, size=64))
    clip = generate_clip(1, _small(family, size=64, sensor="structured-light"))
    holes = clip.depth == 0
    edges = _discontinuities(ideal.depth)
    on_edges, elsewhere = holes[edges].mean(), holes[~edges].mean()
    assert on_edges > 0.3, on_edges
    print(on_edges, elsewhere)
    assert on_edges > 4 * elsewhere, (on_edges, elsewhere)
    # Flying pixels: some edge pixels hold a depth well away from both sides of their edge.
    low = ndimage.minimum_filter(ideal.depth, size=(1, 3, 3))
    high = ndimage.maximum_filter(ideal.depth, size=(1, 3, 3))
    between = (clip.depth > low * 1.05) & (clip.depth < high / 1.05)
    assert between[edges].mean() > 0.01 and between[~edges].mean() < 0.001


def test_depth_noise_follows_the_disparity_model():
    """Known answer: sigma_z = z^2 sqrt(sigma_d^2 + step^2 / 12) / (f b) on frontal planes."""
    expected_per_z2 = np.hypot(NOISE_ONLY.disparity_noise_px, NOISE_ONLY.disparity_step_px / np.sqrt(12))
    expected_per_z2 /= NOISE_ONLY.focal_px * NOISE_ONLY.baseline_m
    rng = np.random.default_rng(0)
    stds = []
    for z in (0.5, 1.0, 2.0, 3.0):
        measured = triangulation_depth(NOISE_ONLY, _rendering(np.full((4, 48, 48), z)), rng)
        assert (measured > 0).all()
        stds.append(float((measured - z).std()))
        assert abs(float((measured - z).mean())) < 0.1 * stds[-1] + 1e-6  # unbiased
        assert stds[-1] == pytest.approx(expected_per_z2 * z**2, rel=0.1)
    slope = np.polyfit(np.log([0.5, 1.0, 2.0, 3.0]), np.log(stds), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.15)


def test_depth_noise_grows_with_depth_on_the_table():
    ideal = generate_clip(0, _small(size=64, frames=6))
    clip = generate_clip(0, _small(size=64, frames=6, sensor="structured-light"))
    plane = (ideal.instances == 0) & (clip.depth > 0) & ~_discontinuities(ideal.depth)
    z, error = ideal.depth[plane], (clip.depth - ideal.depth)[plane]
    bins = np.quantile(z, [0.0, 0.25, 0.75, 1.0])
    near, far = (z <= bins[1]), (z >= bins[2])
    ratio = error[far].std() / error[near].std()
    depth_ratio = np.median(z[far]) / np.median(z[near])
    assert depth_ratio > 1.2
    assert ratio > depth_ratio**1.3, (ratio, depth_ratio)  # ~ z^2 (grazing angles add to it)


def test_occlusion_shadow_has_the_baseline_width_left_of_objects():
    """Known answer: the projector (right of the camera) misses f b (1/z_near - 1/z_far) pixels."""
    depth = np.full((1, 16, 64), 1.0)
    depth[:, :, 20:40] = 0.5
    model = replace(NOISE_ONLY, occlusion_holes=True, disparity_noise_px=0.0, disparity_step_px=0.0)
    measured = triangulation_depth(model, _rendering(depth, focal=50.0), np.random.default_rng(0))
    holes = measured[0] == 0
    width = 50.0 * model.baseline_m * (1 / 0.5 - 1 / 1.0)  # 3.75 pixels
    assert holes[:, : 20 - int(np.ceil(width))].sum() == 0 and holes[:, 20:].sum() == 0
    assert (holes[:, 20 - int(np.floor(width)) : 20]).all()
    assert np.allclose(measured[0][~holes], depth[0][~holes], rtol=1e-5)


def test_colour_degradations_keep_the_mean_and_add_noise():
    frames = np.full((6, 24, 24, 3), 128, dtype=np.uint8)
    rendering = replace(_rendering(np.ones((6, 24, 24))), frames=frames)
    quiet = ColorSensor(exposure_stops=0.0, exposure_flicker=0.0, white_balance=0.0, blur_px=0.0)
    out = observe(SensorModel("quiet", "test", quiet), rendering, 0)[0].astype(float)
    assert abs(out.mean() - 128) < 1.0 and 1.0 < out.std() < 10.0
    brighter = replace(quiet, exposure_stops=1.0, shot_noise=0.0, read_noise=0.0)
    seen = [observe(SensorModel("b", "test", brighter), rendering, seed)[0][0, 0, 0, 1] for seed in range(8)]
    assert len(set(seen)) > 1  # the exposure changes from clip to clip
    for value in seen:  # ... within +-1 stop: linear intensity x0.5..x2
        assert 128 / np.sqrt(2) - 1 <= value <= min(255, 128 * np.sqrt(2) + 1)


def test_monocular_depth_is_dense_smooth_and_off_in_scale():
    ideal = generate_clip(2, _small(size=48))
    clip = generate_clip(2, _small(size=48, sensor="monocular"))
    valid = np.isfinite(ideal.depth)
    assert (clip.depth[valid] > 0).all()
    ratio = clip.depth / np.where(valid, ideal.depth, 1)
    per_frame = np.array([np.median(r[v]) for r, v in zip(ratio, valid, strict=True)])
    low, high = SENSOR_MODELS["monocular"].depth.scale_range
    assert (per_frame > low * 0.85).all() and (per_frame < high * 1.15).all()
    assert per_frame.std() > 0  # the scale flickers from frame to frame
    aligned = ratio / per_frame[:, None, None]
    edges = _discontinuities(ideal.depth)
    error = np.abs(aligned - 1)
    assert np.median(error[valid & ~edges]) < 0.1 < np.quantile(error[valid & edges], 0.9)


def test_observed_xyz_lifts_the_reference_depth():
    ideal = generate_clip(4, _small())
    xyz, valid = observed_xyz(ideal.depth[0], ideal.K)
    assert np.array_equal(valid, ideal.momap.valid)
    assert np.allclose(xyz[valid], ideal.momap.xyz[0][valid], rtol=1e-4, atol=1e-5)
    clip = generate_clip(4, _small(sensor="structured-light"))
    xyz, valid = observed_xyz(clip.depth[0], clip.K)
    assert np.array_equal(valid, clip.depth[0] > 0) and (xyz[~valid] == 0).all()
    scale = np.median(ideal.depth[0][valid])
    error = np.linalg.norm(xyz[valid] - ideal.momap.xyz[0][valid], axis=-1) / scale
    assert 0 < np.median(error) < 0.01
    with pytest.raises(ValueError, match=r"depth: expected \(H, W\)"):
        observed_xyz(clip.depth, clip.K)
    with pytest.raises(ValueError, match=r"K: expected \(3, 3\)"):
        observed_xyz(clip.depth[0], np.eye(4))


def test_appearance_changes_only_the_shading_and_keeps_colour_names():
    config = _small(size=48)
    base = generate_clip(6, config)
    mild, strong = (generate_clip(6, replace(config, appearance=a)) for a in (0.2, 1.0))
    for clip in (mild, strong):
        for name in GT_ARRAYS:
            assert np.array_equal(getattr(clip.momap, name), getattr(base.momap, name)), name
        assert np.array_equal(clip.depth, base.depth) and clip.prompt == base.prompt
    change = [np.abs(c.frames.astype(float) - base.frames).mean() for c in (mild, strong)]
    assert 0 < change[0] < change[1]
    target = base.task.target_id  # its colour name is in the prompt: the dominant channel stays
    for clip in (base, strong):
        assert np.argmax(clip.frames[0][base.momap.instance == target].mean(0)) == np.argmax(
            base.frames[0][base.momap.instance == target].mean(0)
        )


def test_random_lighting_stays_within_its_ranges():
    rng = np.random.default_rng(0)
    for strength in (0.0, 0.5, 1.0):
        for _ in range(50):
            light = random_lighting(rng, strength)
            direction = np.array(light.direction)
            assert (
                np.isclose(np.linalg.norm(direction), 1.0) and direction[2] >= np.sin(np.radians(15)) - 1e-9
            )
            stops = np.log2(np.array(light.diffuse) / 0.75)
            tint = APPEARANCE_RANGES["light_tint"] * strength
            bound = strength * APPEARANCE_RANGES["light_stops"] - np.log2(1 - tint) + 1e-9
            assert (np.abs(stops) <= bound).all()
    with pytest.raises(ValueError, match="strength"):
        randomize_appearance(None, 2.0, 0)  # type: ignore[arg-type]


def test_sensor_figures_mark_holes_and_plot_noise_against_depth():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from momaplib import viz

    exact = generate_clip(3, _small(size=48))
    observed = {"structured-light": generate_clip(3, _small(size=48, sensor="structured-light"))}
    fig = viz.plot_sensor_frames(exact, observed)
    depth_image = fig.axes[3].get_images()[0].get_array()  # row 1 (depth), column 1 (structured light)
    white = (np.asarray(depth_image) == 255).all(-1)
    assert np.array_equal(white, observed["structured-light"].depth[0] == 0)
    fig = viz.plot_depth_noise(exact, observed)
    depth, std = fig.axes[0].lines[0].get_data()  # the measured curve
    assert np.all(np.diff(depth) > 0) and std[-1] > std[0]
    plt.close("all")
