"""The sampling panel: generate with the bundled pipeline, its figures, tables and widgets."""

from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from momaplib.data.examples import save_example
from momaplib.eval import metric_label
from momaplib.eval.samples import sample_diversity
from momaplib.metrics import METRIC_NAMES
from momaplib.momap import MoMap
from momaplib.ui import (
    BEST_MARK,
    EXAMPLE_PREFIX,
    SIMULATED,
    SamplingPanel,
    best_of_n_table,
    figure_3d,
    find_example_scenes,
    metrics_table,
    sample_image_grid,
)
from momaplib.viz.plot3d import VIEW_TITLES_PX

SCENE = "simulated tabletop"
TINY = {"num_samples": 2, "num_inference_steps": 2, "guidance_scale": 3.0, "seed": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def panel() -> SamplingPanel:
    return SamplingPanel("momap-diffusion")


@pytest.fixture(scope="module")
def result(panel):
    return panel.generate(SCENE, **TINY)


def test_generate_returns_n_samples_of_the_scene_shape(panel, result):
    gt = panel.load_scene(SCENE)
    T = panel.pipeline.num_frames
    assert gt.xyz.shape == (T, 128, 128, 3)
    assert result.xyz.shape == (2, T, 128, 128, 3) and len(result.samples) == 2
    assert all(isinstance(m, MoMap) and m.xyz.shape == gt.xyz.shape for m in result.samples)
    assert np.isfinite(result.xyz[:, :, gt.valid]).all()
    assert result.prompt == gt.prompt and result.has_ground_truth
    # two samples of one input are two different futures (paper Fig. 5-C)
    assert np.abs(result.xyz[0] - result.xyz[1])[:, gt.valid].max() > 1e-3
    # ... and the result says how far apart, with the GT as yardstick
    assert result.diversity == sample_diversity(result.xyz, gt.valid, gt.scene_scale, gt=gt.xyz)
    assert result.diversity["pairwise_distance"] > 0 and result.diversity["distance_to_gt"] > 0
    assert "apart on moving pixels" in result.describe()


def test_generate_is_reproducible_from_its_seed(panel, result):
    again = panel.generate(SCENE, **TINY)
    np.testing.assert_array_equal(again.xyz, result.xyz)
    other = panel.generate(SCENE, **{**TINY, "seed": 1})
    assert not np.array_equal(other.xyz, result.xyz)


def test_metrics_have_one_finite_row_per_sample_and_the_best_of_n(result):
    metrics = result.metrics
    assert list(metrics.index) == [0, 1] and list(metrics.columns) == list(METRIC_NAMES)
    assert np.isfinite(metrics.to_numpy()).all()
    assert result.best == int(metrics["ate_dtw"].idxmin())
    assert "best of 2" in result.describe()
    table = metrics_table(result).data
    assert table.shape == (len(METRIC_NAMES), 2)
    assert f"{result.best} {BEST_MARK}" in table.columns
    # a second run with known metrics: its best (lowest ate_dtw) sample 1 is neither the first
    # sample nor the best of any other metric, so only that sample's row gives its column
    known = pd.DataFrame(
        {name: [0.9 + j / 100, 0.5 + j / 100, 0.1 + j / 100] for j, name in enumerate(METRIC_NAMES)},
        index=pd.Index([0, 1, 2], name="sample"),
    )
    known["ate_dtw"] = [0.3, 0.1, 0.2]
    other = replace(result, metrics=known, best=1)
    runs = best_of_n_table({"a": result, "b": other})
    assert list(runs.columns) == ["a", "b"]
    assert list(runs.index) == [metric_label(name) for name in METRIC_NAMES]
    for name in METRIC_NAMES:
        assert runs.loc[metric_label(name), "a"] == metrics.loc[result.best, name], name
        assert runs.loc[metric_label(name), "b"] == known.loc[1, name], name
    assert runs.loc["ate_dtw ↓", "a"] == metrics["ate_dtw"].min()


def test_a_scene_without_ground_truth_gets_samples_but_no_metrics(panel):
    gt = panel.load_scene(SCENE)
    # only the reference frame is known: a single-frame MoMap conditions the pipeline all the same
    reference_only = MoMap(
        xyz=gt.xyz[:1],
        valid=gt.valid,
        visible=gt.visible[:1],
        rgb=gt.rgb,
        instance=gt.instance,
        K=gt.K,
        ref_from_cam=gt.ref_from_cam[:1],
        prompt=gt.prompt,
    )
    result = panel.generate(reference_only, **{**TINY, "num_samples": 1})
    assert result.xyz.shape == (1, *gt.xyz.shape)
    assert not result.has_ground_truth and result.metrics is None and result.best is None
    assert result.diversity is None  # one sample: nothing to compare it with
    assert len(figure_3d(result, num_points=50).layout.annotations) == 1  # sample views only
    with pytest.raises(ValueError, match="no ground truth"):
        metrics_table(result)


def test_figure_3d_has_one_frame_per_time_step_and_one_view_per_momap(result):
    T = result.xyz.shape[1]
    fig = figure_3d(result, num_points=120)
    views = 1 + result.num_samples  # GT, then every sample
    assert len(fig.frames) == T and [f.name for f in fig.frames] == [str(t) for t in range(T)]
    assert len(fig.layout.sliders[0].steps) == T
    assert len(fig.data) == 3 * views and len(fig.layout.annotations) == views  # one title per view
    assert fig.layout.annotations[0].text == "ground truth"
    assert all(list(f.traces) == [3 * k + 2 for k in range(views)] for f in fig.frames)
    # the frame of time t holds the GT positions at t of the moving points drawn
    points = np.stack([fig.frames[-1].data[0].x, fig.frames[-1].data[0].y, fig.frames[-1].data[0].z], -1)
    gt_last = result.scene.xyz[-1][result.scene.valid]
    assert len(points) > 0
    assert np.abs(points[:, None] - gt_last[None]).sum(-1).min(1).max() < 1e-6


def test_figure_3d_keeps_title_legend_view_titles_and_controls_apart(result):
    fig = figure_3d(result, num_points=60, view_height=500)
    layout = fig.layout
    # pixels from the top edge: title line, then legend line, then the view titles above the plot
    title_top = (1 - layout.title.y) * 500
    legend_top = (1 - layout.legend.y) * 500
    view_titles_top = layout.margin.t - VIEW_TITLES_PX
    assert layout.title.yref == layout.legend.yref == "container"
    assert layout.title.yanchor == layout.legend.yanchor == "top"
    assert title_top + 20 <= legend_top and legend_top + 20 <= view_titles_top
    assert layout.legend.xanchor == "right" and layout.legend.orientation == "h"
    assert all(a.yanchor == "bottom" and a.y == 1.0 for a in layout.annotations)  # on top of the views
    # play/pause and the slider hang below the views, the slider right of the buttons
    menu, slider = layout.updatemenus[0], layout.sliders[0]
    assert menu.y == 0.0 and menu.yanchor == "top"
    assert slider.y is None and slider.yanchor is None  # plotly's default: y = 0, anchored at its top
    assert slider.x >= 0.2 and slider.currentvalue.xanchor == "right"


def test_sample_image_grid_has_a_row_per_momap(result):
    fig = sample_image_grid(result, num_frames=4)
    try:
        assert len(fig.axes) == (1 + result.num_samples) * (1 + 4)
    finally:
        plt.close(fig)


def test_panel_builds_and_generate_fills_the_output(panel):
    ui = panel.panel(scene=SCENE, num_samples=1, num_inference_steps=1, num_points=80)
    w = panel.widgets
    assert ui.children and w["scene"].options == tuple(panel.scene_names)
    assert w["prompt"].value == panel.load_scene(SCENE).prompt  # the scene's own prompt
    assert bytes(w["preview"].value).startswith(b"\x89PNG")
    assert w["results"].outputs == ()
    w["generate"].click()  # runs the click handlers, as pressing the button does
    assert panel.last_result.xyz.shape[0] == 1 and not w["generate"].disabled
    kinds = [set(output["data"]) for output in w["results"].outputs]
    assert len(kinds) == 3  # metrics table, 3D trajectories, trajectory images
    assert "text/html" in kinds[0]
    assert "application/vnd.plotly.v1+json" in kinds[1]
    assert "image/png" in kinds[2]


def test_example_scenes_are_offered_when_they_hold_momaps(tmp_path, panel):
    assert find_example_scenes(tmp_path / "missing") == {}
    gt = panel.load_scene(SCENE)
    gt.save(tmp_path / "kitchen.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))  # an npz without a MoMap is not offered
    (tmp_path / "notes.npz").write_text("not an npz")
    assert find_example_scenes(tmp_path) == {EXAMPLE_PREFIX + "kitchen": tmp_path / "kitchen.npz"}
    with_examples = SamplingPanel(panel.pipeline, examples_dir=tmp_path)
    assert with_examples.scene_names == [*SIMULATED, EXAMPLE_PREFIX + "kitchen"]
    loaded = with_examples.load_scene(EXAMPLE_PREFIX + "kitchen")
    np.testing.assert_array_equal(loaded.xyz, gt.xyz)
    with pytest.raises(KeyError, match="expected one of"):
        with_examples.load_scene("example: nope")


def test_example_folders_are_offered_and_one_without_gt_is_sampled_unscored(tmp_path, panel):
    gt = panel.load_scene(SCENE)
    save_example(tmp_path / "desk", gt)
    save_example(tmp_path / "shelf", gt, with_gt=False)
    gt.save(tmp_path / "kitchen.npz")
    assert find_example_scenes(tmp_path) == {
        EXAMPLE_PREFIX + "desk": tmp_path / "desk",
        EXAMPLE_PREFIX + "shelf": tmp_path / "shelf",
        EXAMPLE_PREFIX + "kitchen": tmp_path / "kitchen.npz",
    }
    with_examples = SamplingPanel(panel.pipeline, examples_dir=tmp_path)
    assert with_examples.load_scene(EXAMPLE_PREFIX + "desk").xyz.shape == gt.xyz.shape
    result = with_examples.generate(EXAMPLE_PREFIX + "shelf", **TINY)
    assert result.scene.num_frames == 1 and not result.has_ground_truth and result.metrics is None
    assert result.xyz.shape == (2, *gt.xyz.shape) and result.prompt == gt.prompt
    assert set(result.diversity) == {"pairwise_distance", "pairwise_distance_moving", "label_disagreement"}
