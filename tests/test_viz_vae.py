"""momaplib.viz.vae: the inflation diagram, training runs and reconstructions show what they claim."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation

from momaplib import viz
from momaplib.vae.analysis import INFLATED_LAYERS
from momaplib.viz.vae import DIAGRAM_COLORS, DIAGRAM_STAGES
from tests.conftest import tiny_simulation


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _gt():
    return tiny_simulation("tabletop", 3).clip.momap  # 32x32, T = 8, the gripper and an object move


def _frozen(momap):
    """Every point held at its reference position: a reconstruction without motion."""
    return dataclasses.replace(momap, xyz=np.repeat(momap.xyz[:1], momap.num_frames, axis=0))


def test_inflation_diagram_colours_exactly_the_inflated_layers():
    fig = viz.plot_inflation_diagram()
    (ax,) = fig.axes
    boxes = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
    assert len(boxes) == len(DIAGRAM_STAGES)
    orange = [i for i, box in enumerate(boxes) if box.get_facecolor() == to_rgba(DIAGRAM_COLORS["re-shaped"])]
    grey = [i for i, box in enumerate(boxes) if box.get_facecolor() == to_rgba(DIAGRAM_COLORS["copied"])]
    # the orange boxes are the six layers inflation re-shapes, in the order data flows through them
    assert [DIAGRAM_STAGES[i][0] for i in orange] == list(INFLATED_LAYERS)
    assert [DIAGRAM_STAGES[i][0] for i in grey] == ["encoder body", "decoder body"]
    labels = [text.get_text() for text in ax.texts if not isinstance(text, Annotation)]  # not the arrows
    assert len(labels) == len(boxes)
    for i in orange:  # each box names its layer
        assert labels[i].replace("\n", "").startswith(DIAGRAM_STAGES[i][0].replace(".", ""))
    assert ax.get_legend().get_texts()[0].get_text().startswith("re-shaped")


def test_vae_runs_plot_one_line_per_init_with_the_validation_in_percent():
    runs = pd.DataFrame(
        {
            "init": ["inflate"] * 4 + ["scratch"] * 4,
            "step": [1, 2, 3, 4] * 2,
            "loss": [1.0, 3.0, 2.0, 2.0, 8.0, 4.0, 2.0, 1.0],
            "val/epe_median": [np.nan, 0.05, np.nan, 0.02, np.nan, 0.08, np.nan, 0.03],
        }
    )
    fig = viz.plot_vae_runs(runs, "title", smooth=2)
    ax_loss, ax_epe = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["inflate", "scratch"]
    np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), [1.0, 2.0, 2.5, 2.0])  # mean of 2 records
    np.testing.assert_allclose(ax_epe.lines[1].get_xdata(), [2, 4])
    np.testing.assert_allclose(ax_epe.lines[1].get_ydata(), [8.0, 3.0])  # per cent of the scene scale
    assert ax_loss.get_yscale() == "log" and ax_epe.get_ylim()[0] == 0
    with pytest.raises(ValueError, match=r"missing \['val/epe_median'\]"):
        viz.plot_vae_runs(runs.drop(columns="val/epe_median"))


def test_reconstruction_shows_gt_and_decoded_in_one_colour_range():
    gt = _gt()
    frozen = _frozen(gt)
    fig = viz.plot_reconstruction(gt, frozen, num_panels=4)
    cols = 5
    axes = np.array(fig.axes[: 4 * cols]).reshape(4, cols)
    images = [[ax.images[0] if ax.images else None for ax in row] for row in axes]
    # t = 0: the frozen MoMap is the GT, so the same colours; at the last frame moving pixels differ
    np.testing.assert_array_equal(images[0][1].get_array(), images[1][1].get_array())
    moving = gt.moving_mask()
    last_gt, last_decoded = images[0][-1].get_array(), images[1][-1].get_array()
    assert np.abs(last_gt - last_decoded).max(-1)[moving].max() > 0.05
    np.testing.assert_array_equal(last_gt[~moving], last_decoded[~moving])
    # distance rows: one colour scale from 0 to the GT's largest distance, in GT and decoded rows alike
    distance = np.linalg.norm(gt.xyz - gt.xyz[:1], axis=-1)[:, gt.valid] / gt.scene_scale
    for row in (2, 3):
        for image in images[row][1:]:
            assert image.get_clim() == pytest.approx((0.0, distance.max()))
    assert all(np.nanmax(image.get_array()) == 0 for image in images[3][1:])  # the decoded motion is gone
    np.testing.assert_array_equal(images[2][0].get_array(), moving)  # GT moving mask
    assert not images[3][0].get_array().any()  # decoded moving mask: empty
    assert images[2][0].get_clim() == (0, 1)  # a constant mask is drawn black, not grey
    with pytest.raises(ValueError, match="decoded: expected xyz of shape"):
        viz.plot_reconstruction(gt, dataclasses.replace(gt, xyz=gt.xyz[:4], visible=gt.visible[:4],
                                                        ref_from_cam=gt.ref_from_cam[:4]))  # fmt: skip


def test_reconstruction_errors_known_answers():
    gt = _gt()
    offset = np.array([0.03, 0.0, 0.04], dtype=np.float32) * gt.scene_scale  # |offset| = 5 % of s
    shifted = dataclasses.replace(gt, xyz=gt.xyz + offset)
    fig = viz.plot_reconstruction_errors(gt, shifted)
    ax_pixels, ax_time, ax_track = fig.axes[:3]
    per_pixel = ax_pixels.images[0].get_array()
    np.testing.assert_allclose(per_pixel[gt.valid], 5.0, rtol=1e-4)
    assert ax_pixels.images[0].get_clim() == pytest.approx((0.0, 5.0), rel=1e-4)
    assert [line.get_label() for line in ax_time.lines] == ["still pixels", "moving pixels"]
    for line in ax_time.lines:
        np.testing.assert_allclose(line.get_ydata(), 5.0, rtol=1e-4)
    # the traced pixel: the one of the prompt's target nearest its centroid; GT dashed, decoded solid
    target = gt.meta["task"]["target_id"]
    dashed = [line for line in ax_track.lines if line.get_linestyle() == "--"]
    solid = [line for line in ax_track.lines if line.get_linestyle() == "-"]
    pixels = np.argwhere(gt.instance == target)
    v, u = pixels[np.linalg.norm(pixels - pixels.mean(0), axis=1).argmin()]
    for c in range(3):
        np.testing.assert_allclose(dashed[c].get_ydata(), gt.xyz[:, v, u, c])
        np.testing.assert_allclose(solid[c].get_ydata(), gt.xyz[:, v, u, c] + offset[c], rtol=1e-5)
    # without a named target: the pixel that moves farthest
    anonymous = dataclasses.replace(gt, meta={})
    fig = viz.plot_reconstruction_errors(anonymous, dataclasses.replace(shifted, meta={}))
    travel = np.linalg.norm(gt.xyz - gt.xyz[:1], axis=-1).max(0)
    v, u = np.unravel_index(np.argmax(np.where(gt.valid, travel, -1)), travel.shape)
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), gt.xyz[:, v, u, 0])
    with pytest.raises(ValueError, match="instance_id: 99 is not in the MoMap's instance map"):
        viz.plot_reconstruction_errors(gt, shifted, instance_id=99)
