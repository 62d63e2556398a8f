"""momaplib.viz: figures have the promised panels, traces and frames; colours are comparable over time."""

from __future__ import annotations

import importlib.util

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image, ImageSequence

from momaplib import viz
from momaplib.data.examples import EXAMPLES_DIR, load_example, save_example
from momaplib.demo import main as demo_main
from tests.conftest import tiny_simulation


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _clip(family: str = "tabletop", seed: int = 0):
    return tiny_simulation(family, seed).clip


def _image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


# ----------------------------------------------------------------------------- XYZ colours
def test_xyz_colours_use_one_range_for_the_whole_momap():
    momap = _clip().momap
    colors = viz.xyz_to_rgb(momap.xyz, momap.valid)  # (T, H, W, 3)
    assert colors.shape == momap.xyz.shape and colors.min() >= 0 and colors.max() <= 1
    moving = momap.moving_mask()
    static = momap.valid & ~moving
    # A static point keeps its colour in every frame; a moving one changes colour.
    np.testing.assert_array_equal(
        colors[:, static], np.broadcast_to(colors[:1, static], colors[:, static].shape)
    )
    assert np.abs(colors[-1, moving] - colors[0, moving]).max() > 0.05
    # Colouring one frame with the MoMap's range gives the same colours as colouring all frames.
    color_range = viz.xyz_color_range(momap.xyz, momap.valid)
    np.testing.assert_allclose(viz.xyz_to_rgb(momap.xyz[3], momap.valid, color_range), colors[3])


def test_xyz_color_range_spans_the_percentiles_of_all_frames():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(5, 6, 7, 3))
    valid = np.ones((6, 7), dtype=bool)
    low, high = viz.xyz_color_range(xyz, valid, percentiles=(0, 100))
    np.testing.assert_allclose(low, xyz.reshape(-1, 3).min(0))
    np.testing.assert_allclose(high, xyz.reshape(-1, 3).max(0))
    valid[0, 0] = False
    xyz[:, 0, 0] = 1e6  # an invalid pixel never stretches the range
    assert viz.xyz_color_range(xyz, valid, percentiles=(0, 100))[1].max() < 1e3
    assert (viz.xyz_to_rgb(xyz, valid)[:, 0, 0] == viz.INVALID_COLOR).all()


def test_trajectory_image_grid_panels_share_one_colour_range():
    momap = _clip().momap
    fig = viz.trajectory_image_grid(momap, num_panels=4)
    images = _image_axes(fig)
    assert len(images) == 2 * (1 + 4)  # reference RGB + 4 frames, moving mask + 4 distances
    assert len(fig.axes) == len(images) + 1  # one shared colour bar for the distances
    frames = [0, 2, 5, 7]  # np.linspace(0, 7, 4) rounded
    assert [ax.get_title() for ax in images[1:5]] == [f"t = {t}" for t in frames]
    color_range = viz.xyz_color_range(momap.xyz, momap.valid)
    for ax, t in zip(images[1:5], frames, strict=True):
        np.testing.assert_allclose(
            ax.images[0].get_array(), viz.xyz_to_rgb(momap.xyz[t], momap.valid, color_range)
        )
    distance_limits = {ax.images[0].get_clim() for ax in images[6:]}
    assert len(distance_limits) == 1  # one distance scale for every frame

    only_colours = viz.trajectory_image_grid(momap, frames=[1, 6], show_displacement=False)
    assert len(_image_axes(only_colours)) == 3
    with pytest.raises(ValueError, match=r"frames: expected indices in \[0, 8\)"):
        viz.trajectory_image_grid(momap, frames=[8])


def test_method_comparison_grid_draws_every_method_in_the_gts_colour_range():
    momap = _clip().momap
    static = np.broadcast_to(momap.xyz[:1], momap.xyz.shape)  # nothing moves
    fig = viz.method_comparison_grid(momap, {"static": static, "GT again": momap.xyz}, num_frames=3)
    assert fig.axes[0].get_ylabel() == "GT" and [fig.axes[4 * r].get_ylabel() for r in (1, 2)] == [
        "static",
        "GT again",
    ]
    assert len(fig.axes) == 3 * (1 + 3)  # a moving mask and three frames per row
    assert not fig.axes[4].images[0].get_array().any()  # static: an empty moving mask
    color_range = viz.xyz_color_range(momap.xyz, momap.valid)
    last = momap.num_frames - 1
    for row, xyz in ((0, momap.xyz), (1, static), (2, momap.xyz)):  # frames 0, 4, 7; the GT's range
        shown = fig.axes[4 * row + 3].images[0].get_array()
        np.testing.assert_allclose(shown, viz.xyz_to_rgb(xyz[last], momap.valid, color_range))
    with pytest.raises(ValueError, match=r"predictions\['short'\]: expected xyz of shape"):
        viz.method_comparison_grid(momap, {"short": momap.xyz[:2]})


def test_clip_strip_has_rows_of_frames_depth_and_instances():
    clip = _clip("egocentric")
    fig = viz.plot_clip_strip(clip, num_frames=4)
    images = _image_axes(fig)
    assert len(images) == 3 * 4
    depth_limits = {ax.images[0].get_clim() for ax in images if ax.images[0].get_array().ndim == 2}
    assert depth_limits == {(float(clip.depth.min()), float(clip.depth.max()))}


# ----------------------------------------------------------------------------- instances
def test_instance_overlay_legend_lists_present_instances_with_roles():
    clip = _clip()
    momap = clip.momap
    fig = viz.instance_overlay(momap.rgb, momap.instance, clip.instance_info)
    labels = [text.get_text() for text in fig.axes[1].get_legend().get_texts()]
    ids = [i for i in np.unique(momap.instance) if i != 0]
    assert labels == [f"{i}: {clip.instance_info[i]['name']} ({clip.instance_info[i]['role']})" for i in ids]
    plain = viz.instance_overlay(momap.rgb, momap.instance, {int(ids[0]): "thing"})
    assert plain.axes[1].get_legend().get_texts()[0].get_text() == f"{ids[0]}: thing"


def test_overlay_keeps_background_and_colours_instances():
    momap = _clip().momap
    image = viz.overlay_instances(momap.rgb, momap.instance)
    background = momap.instance == 0
    np.testing.assert_array_equal(image[background], momap.rgb[background])
    assert (image[~background] != momap.rgb[~background]).any(-1).all()


def test_instance_overlay_names_the_bad_field_and_shape():
    momap = _clip().momap
    with pytest.raises(ValueError, match=r"instance: expected integer ids of shape \(32, 32\)"):
        viz.instance_overlay(momap.rgb, momap.instance[:, :-1])
    with pytest.raises(ValueError, match=r"rgb: expected \(H, W, 3\)"):
        viz.instance_overlay(momap.rgb[..., 0], momap.instance)
    with pytest.raises(TypeError, match="expected a MoMap or a Clip"):
        viz.trajectory_image_grid(momap.xyz)


# ----------------------------------------------------------------------------- 3D trajectories
def test_subsample_includes_every_moving_instance():
    momap = _clip().momap
    moving = momap.moving_mask()
    assert 0 < moving.mean() < 0.1  # a uniform sample of 20 would often miss the motion
    pixels = viz.subsample_pixels(momap, num_points=20, moving_fraction=0.5, seed=1)
    assert pixels.shape == (20, 2)
    assert len({tuple(p) for p in pixels}) == 20 and momap.valid[pixels[:, 0], pixels[:, 1]].all()
    picked_moving = moving[pixels[:, 0], pixels[:, 1]]
    assert picked_moving.sum() == 10
    moving_ids = set(np.unique(momap.instance[moving]).tolist())
    assert len(moving_ids) >= 2
    assert set(momap.instance[pixels[picked_moving, 0], pixels[picked_moving, 1]].tolist()) == moving_ids
    np.testing.assert_array_equal(
        pixels, viz.subsample_pixels(momap, num_points=20, moving_fraction=0.5, seed=1)
    )
    everything = viz.subsample_pixels(momap, num_points=10**6)
    assert len(everything) == momap.valid.sum()


def test_trajectories_3d_traces_and_animation_frames():
    momap = _clip().momap
    T = momap.num_frames
    fig = viz.plot_trajectories_3d(momap, num_points=40)
    assert isinstance(fig, go.Figure)
    names = [trace.name for trace in fig.data]
    assert names == ["trajectories", "scene at t0", "points at t", "camera t", "reference camera"]
    assert len(fig.data[1].x) == 40
    moving_points = len(fig.data[2].x)
    assert moving_points >= 20  # half the budget goes to moving pixels
    assert len(fig.data[0].x) == moving_points * (T + 1)  # one polyline of T points + a gap per point
    assert [frame.name for frame in fig.frames] == [str(t) for t in range(T)]
    assert len(fig.layout.sliders[0].steps) == T
    # The last frame puts the markers at the end of their curves.
    curves = np.stack([fig.data[0][axis] for axis in "xyz"], -1).reshape(moving_points, T + 1, 3)
    last = np.stack([fig.frames[-1].data[0][axis] for axis in "xyz"], -1)
    np.testing.assert_allclose(last, curves[:, T - 1])
    assert fig.layout.scene.camera.up.y == -1  # image "up" is -y in camera coordinates

    sparse = viz.plot_trajectories_3d(momap, num_points=40, frame_step=3, show_camera=False)
    assert [frame.name for frame in sparse.frames] == ["0", "3", "6", "7"]
    assert len(sparse.data) == 3


# ----------------------------------------------------------------------------- camera disentanglement
def test_background_is_static_in_the_momap_even_when_the_camera_moves():
    curves = viz.camera_disentanglement(_clip("egocentric"))
    assert set(curves) == {"momap", "camera_frame", "camera_translation", "camera_rotation_deg", "foreground"}
    assert curves["momap"].max() < 1e-6
    assert curves["camera_frame"][-1] > 0.005 and curves["camera_translation"][-1] > 0.005
    assert curves["foreground"].max() > 0.01
    static_camera = viz.camera_disentanglement(_clip("tabletop"))
    assert static_camera["camera_frame"].max() < 1e-6 and static_camera["camera_translation"].max() < 1e-9

    fig = viz.plot_camera_disentanglement(_clip("egocentric"), t=3)
    assert len(fig.axes) == 4  # curves, two displacement images, their colour bar
    assert len(fig.axes[0].lines) >= 4
    with pytest.raises(ValueError, match=r"t: expected a frame index in \[0, 8\)"):
        viz.plot_camera_disentanglement(_clip("egocentric"), t=8)


# ----------------------------------------------------------------------------- animation and saving
def test_gif_has_one_frame_per_clip_frame_and_the_panel_size(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 10, 12, 3), dtype=np.uint8)
    path = viz.save_clip_animation(frames, tmp_path / "frames.gif", fps=5, upscale=2)
    with Image.open(path) as gif:
        assert gif.size == (24, 20)
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert len(durations) == 6 and sum(durations) == 6 * 200

    clip = _clip("egocentric")
    T, H, W, _ = clip.frames.shape
    path = viz.save_clip_animation(clip, tmp_path / "clip.gif", panels=("rgb", "depth", "instance"))
    with Image.open(path) as gif:
        assert gif.size == (3 * W + 2 * 2, H)  # three panels, 2-px gaps
        assert sum(frame.info["duration"] for frame in ImageSequence.Iterator(gif)) == T * 100


def test_animation_rejects_bad_input(tmp_path, monkeypatch):
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"frames: expected \(T, H, W, 3\)"):
        viz.save_clip_animation(frames[0], tmp_path / "a.gif")
    with pytest.raises(ValueError, match="need a clip"):
        viz.save_clip_animation(frames, tmp_path / "a.gif", panels=("rgb", "depth"))
    with pytest.raises(ValueError, match="path: expected a file ending in one of"):
        viz.save_clip_animation(frames, tmp_path / "a.avi")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "imageio_ffmpeg" else real_find_spec(name, *a),
    )
    with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
        viz.save_clip_animation(frames, tmp_path / "a.mp4")


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None, reason="imageio-ffmpeg not installed")
def test_mp4_is_written_when_imageio_ffmpeg_is_available(tmp_path):
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 256, size=(5, 9, 11, 3), dtype=np.uint8)
    path = viz.save_clip_animation(frames, tmp_path / "a.mp4", fps=5)
    assert iio.imread(path, plugin="pyav" if importlib.util.find_spec("av") else None).shape[0] == 5


def test_save_figure_writes_png_and_html(tmp_path, monkeypatch):
    momap = _clip().momap
    written = viz.save_figure(viz.trajectory_image_grid(momap, num_panels=2), tmp_path / "grid", close=True)
    assert written == [tmp_path / "grid.png"] and written[0].stat().st_size > 1000
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "kaleido" else real_find_spec(name, *a)
    )
    written = viz.save_figure(viz.plot_trajectories_3d(momap, num_points=20), tmp_path / "sub" / "traj.png")
    assert written == [tmp_path / "sub" / "traj.html"]
    assert "plotly" in written[0].read_text()[:5000].lower()


def test_demo_writes_every_visualisation(tmp_path):
    paths = demo_main(["--smoke", "--out", str(tmp_path), "--families", "egocentric"])
    names = sorted(path.name for path in paths)
    stem = "egocentric_seed0"
    expected = [
        "README.txt",
        f"{stem}_camera_disentanglement.png",
        f"{stem}_clip.gif",
        f"{stem}_instances.png",
        f"{stem}_strip.png",
        f"{stem}_trajectories_3d.html",
        f"{stem}_trajectory_grid.png",
        "plotly.min.js",
    ]
    assert names == expected
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths)
    readme = (tmp_path / "README.txt").read_text()
    assert all(name in readme for name in expected[1:])


def test_demo_samples_the_bundled_model_on_example_folders_and_writes_a_metrics_table(tmp_path):
    examples = tmp_path / "examples"
    save_example(examples / "with_gt", load_example(EXAMPLES_DIR / "tabletop_red_block_cup"))
    save_example(
        examples / "no_gt", load_example(EXAMPLES_DIR / "egocentric_pink_block").momap(), with_gt=False
    )
    out = tmp_path / "out"
    paths = demo_main(
        ["--out", str(out), "--examples", str(examples), "--num-samples", "2", "--num-inference-steps", "2"]
    )
    names = {path.name for path in paths}
    generated = {"generated_grid.png", "generated_3d.html", "generated.gif"}
    assert {f"with_gt_{name}" for name in {"instances.png", "trajectory_grid.png", *generated}} <= names
    assert {f"no_gt_{name}" for name in {"instances.png", *generated}} <= names
    assert "no_gt_trajectory_grid.png" not in names  # no GT, no GT figures
    assert not any("seed0" in name for name in names)  # the examples replace the simulated scenes
    table = (out / "metrics.md").read_text()
    assert "fg_mask_iou" in table and "ate_dtw" in table
    assert "with_gt" in table and "no_gt" not in table  # only a scene with a GT is scored
    readme = (out / "README.txt").read_text()
    assert f"example scenes of {examples}" in readme and all(
        name in readme for name in names - {"README.txt"}
    )
    with Image.open(out / "with_gt_generated.gif") as gif:
        assert gif.n_frames == 32  # one frame per MoMap time step
        assert gif.size == (2 * 128 * 3, 2 * 128)  # GT | best | the other sample, upscaled 2x
    with pytest.raises(ValueError, match=r"--scenes \['nope'\]: not example folders"):
        demo_main(["--out", str(out), "--examples", str(examples), "--scenes", "nope"])


def test_demo_runs_an_example_whose_depth_has_5_percent_holes_and_marks_them_invalid(tmp_path, monkeypatch):
    import momaplib.demo as demo

    example = load_example(EXAMPLES_DIR / "tabletop_red_block_cup")
    rng = np.random.default_rng(0)
    holes = rng.random(example.depth.shape) < 0.05
    example.depth = example.depth.copy()
    example.depth[holes] = np.resize(np.array([0.0, np.nan, np.inf], np.float32), holes.sum())
    gt = example.gt
    gt.valid, gt.visible = gt.valid & ~holes, gt.visible & ~holes[None]  # no depth, no trajectory
    save_example(tmp_path / "examples" / "holes", example)
    results = []
    write_samples = demo._write_samples

    def spy(panel, scene, *args):
        result, written = write_samples(panel, scene, *args)
        results.append(result)
        return result, written

    monkeypatch.setattr(demo, "_write_samples", spy)
    out = tmp_path / "out"
    fast = ["--num-samples", "2", "--num-inference-steps", "2"]
    with pytest.warns(UserWarning, match=r"of 16384 pixels \(5\.\d%\) have no geometry"):
        demo_main(["--out", str(out), "--examples", str(tmp_path / "examples"), *fast])
    (result,) = results
    assert len(result.samples) == 2
    for momap in result.samples:
        np.testing.assert_array_equal(momap.valid, ~holes)
        assert np.isfinite(momap.xyz).all() and (momap.xyz[:, holes] == 0).all()
    assert np.isfinite(result.metrics.to_numpy()).all()  # scored on the valid pixels
    assert (out / "holes_generated.gif").is_file() and "holes" in (out / "metrics.md").read_text()


def test_demo_refuses_a_mistyped_examples_folder_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(
        FileNotFoundError, match=r"--examples data/exmples: no such folder .* --examples None"
    ):
        demo_main(["--out", str(out), "--examples", "data/exmples"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"--examples empty: holds no example folder"):
        demo_main(["--out", str(out), "--examples", "empty"])
    save_example(tmp_path / "mine" / "kitchen", load_example(EXAMPLES_DIR / "tabletop_blue_block"))
    with pytest.raises(FileNotFoundError, match=r"is one example folder.*--examples mine --scenes kitchen"):
        demo_main(["--out", str(out), "--examples", "mine/kitchen"])
    assert not out.exists()
    # the default is the bundled folder wherever the demo runs from, not ./data/examples
    from momaplib.demo import DemoConfig

    assert DemoConfig().example_folders().keys() == {
        "egocentric_pink_block",
        "tabletop_blue_block",
        "tabletop_red_block_cup",
    }


def test_demo_checks_settings_and_scenes_before_it_writes(tmp_path):
    out = tmp_path / "out"
    for flags, message in [
        (["--num-samples", "0"], "--num-samples: expected an integer >= 1"),
        (["--upscale", "0"], "--upscale: expected an integer >= 1"),
        (["--fps", "0"], "--fps: expected a finite number > 0"),
        (["--guidance-scale", "-1"], "--guidance-scale: expected a finite number >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            demo_main(["--out", str(out), *flags])
    # a second scene in millimetres stops the demo before the first one is drawn or sampled
    examples = tmp_path / "examples"
    save_example(examples / "a_good", load_example(EXAMPLES_DIR / "tabletop_blue_block"))
    millimetres = load_example(EXAMPLES_DIR / "egocentric_pink_block")
    millimetres.depth = millimetres.depth * 1000
    save_example(examples / "b_millimetres", millimetres, with_gt=False)
    with pytest.raises(ValueError, match=r"b_millimetres/depth\.npy: .*divide by 1000"):
        demo_main(["--out", str(out), "--examples", str(examples)])
    assert not out.exists()


# ----------------------------------------------------------------------------- metric figures
def _panel_centre_rgb(fig, ax) -> np.ndarray:
    """Returns the rendered RGB (3,) in [0, 1] at the centre of ``ax``."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    box = ax.get_window_extent()
    row = pixels.shape[0] - round((box.y0 + box.y1) / 2)  # display y grows upwards
    return pixels[row, round((box.x0 + box.x1) / 2)]


def test_moving_masks_draw_an_all_true_mask_white_and_an_all_false_one_black():
    momap = _clip().momap
    assert momap.valid.all()
    # Every point drifts by a third of the scene scale: every pixel of the generated mask moves.
    drift = np.linspace(0, 1, momap.num_frames)[:, None, None, None] * np.array(
        [0.33 * momap.scene_scale, 0, 0]
    )
    everything_moves = momap.xyz + drift.astype(np.float32)
    fig = viz.plot_moving_masks(momap, everything_moves)
    gt_ax, generated_ax = fig.axes[1], fig.axes[2]
    assert generated_ax.images[0].get_array().all()  # the constant image that used to come out black
    for ax in (gt_ax, generated_ax):
        assert ax.images[0].get_clim() == (0, 1)
    np.testing.assert_allclose(_panel_centre_rgb(fig, generated_ax), 1.0)  # white: moves
    # The other constant mask, nothing moves, is black (and the overlap has no "both" pixels).
    still = np.repeat(momap.xyz[:1], momap.num_frames, axis=0)
    fig = viz.plot_moving_masks(momap, still)
    assert not fig.axes[2].images[0].get_array().any()
    np.testing.assert_allclose(_panel_centre_rgb(fig, fig.axes[2]), 0.0)
    assert "IoU = 0.000" in fig.axes[3].get_title()


def test_metric_images_start_their_colour_range_at_zero():
    curve = np.zeros((6, 3))  # a still point: every cost and signature entry is 0
    fig = viz.plot_dtw_alignment(curve, curve)
    low, high = fig.axes[1].images[0].get_clim()
    assert low == 0 and high > 0  # zero cost reads as the bottom of the colour bar, not its middle
    moving = np.linspace(0, 1, 6)[:, None] * np.array([1.0, 0.0, 0.0])
    rotated = moving @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T + 0.3
    fig = viz.plot_distance_signature(moving, rotated)
    signatures = _image_axes(fig)
    limits = [ax.images[0].get_clim() for ax in signatures]
    assert limits[0] == limits[1] == (0, pytest.approx(1.0))  # both signatures share one range
    # A rigidly moved copy differs only by float rounding: it stays at the bottom of a 1% range.
    assert limits[2] == (0, pytest.approx(0.01))
    assert "D_sig = 0.0000" in signatures[2].get_title()
