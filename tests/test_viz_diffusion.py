"""momaplib.viz.diffusion: the figures of notebook 03 show the numbers they are given, on stated scales."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from momaplib import viz
from momaplib.diffusion.train import TrainDiffusionJob, noise_scheduler_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def _texts(fig) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


# ----------------------------------------------------------------------------- the stack
def test_conditioning_stack_reads_the_channel_counts_of_the_bundled_unet():
    config = SimpleNamespace(
        **json.loads((ROOT / "checkpoints/momap-diffusion/unet/config.json").read_text())
    )
    texts = _texts(viz.plot_conditioning_stack(config))
    # 32 latent + 3 x 4 condition + 1 grounding channels = the UNet's 45 inputs
    assert "concatenate\n45 x 16 x 16" in texts
    assert "v prediction\n32 x 16 x 16" in texts and "noisy MoMap latent $z_t$\n32 x 16 x 16" in texts
    assert [t for t in texts if t.endswith("latent\n4 x 16 x 16")] == [
        "RGB latent\n4 x 16 x 16",
        "instance latent\n4 x 16 x 16",
        "XYZ latent\n4 x 16 x 16",
    ]
    assert "grounding map\n1 x 16 x 16" in texts
    assert "prompt → frozen text encoder\n32 tokens x 384" in texts


def test_conditioning_stack_without_grounding_and_bad_channel_counts():
    plain = SimpleNamespace(in_channels=44, out_channels=32, sample_size=8, cross_attention_dim=768)
    texts = _texts(viz.plot_conditioning_stack(plain, text_tokens=77))
    assert "concatenate\n44 x 8 x 8" in texts and "prompt → frozen text encoder\n77 tokens x 768" in texts
    assert not any("grounding" in t for t in texts)
    with pytest.raises(ValueError, match="in_channels 46 is neither 32 latent"):
        viz.plot_conditioning_stack(SimpleNamespace(in_channels=46, out_channels=32, sample_size=8))


# ----------------------------------------------------------------------------- latents
def test_condition_latents_rows_show_each_image_and_its_channels_on_one_symmetric_range():
    rng = np.random.default_rng(0)
    condition = torch.from_numpy(rng.normal(size=(12, 3, 3)).astype(np.float32))
    condition[4:8] *= 10  # the second image's latents are larger: its row gets its own range
    images = {name: rng.random((24, 24, 3)) for name in ("rgb", "instances", "xyz")}
    fig = viz.plot_condition_latents(images, condition)
    axes = _image_axes(fig)
    assert len(axes) == 3 * 5
    for row, image in enumerate(images.values()):
        np.testing.assert_array_equal(axes[5 * row].images[0].get_array(), image)
        vmax = float(condition[4 * row : 4 * row + 4].abs().max())
        for k in range(4):
            ax = axes[5 * row + 1 + k]
            np.testing.assert_allclose(ax.images[0].get_array(), condition[4 * row + k].numpy())
            assert ax.images[0].get_clim() == pytest.approx((-vmax, vmax))
            assert ax.get_title() == f"condition channel {4 * row + k}"
    assert axes[6].images[0].get_clim()[1] > 5 * axes[1].images[0].get_clim()[1]
    with pytest.raises(ValueError, match="multiple of the 3 images"):
        viz.plot_condition_latents(images, condition[:10])


def test_latent_channels_grid_has_one_panel_per_channel_in_one_range():
    latent = torch.arange(10 * 4 * 4, dtype=torch.float32).reshape(10, 4, 4) / 40 - 2
    fig = viz.plot_latent_channels(latent, vmax=2.5, columns=4, title="z_0")
    axes = _image_axes(fig)
    assert len(axes) == 10  # 3 rows of 4: the last two panels stay empty
    for k, ax in enumerate(axes):
        np.testing.assert_allclose(ax.images[0].get_array(), latent[k].numpy())
        assert ax.images[0].get_clim() == (-2.5, 2.5) and ax.get_title() == str(k)
    assert fig.get_suptitle() == "z_0"
    with pytest.raises(ValueError, match=r"expected \(C, h, w\)"):
        viz.plot_latent_channels(latent[0])


def test_forward_noising_keeps_the_signal_at_t0_and_is_pure_noise_at_t999():
    schedule = noise_scheduler_for(TrainDiffusionJob())  # v-prediction: zero terminal SNR
    latent = torch.linspace(-2, 2, 36).reshape(6, 6)
    fig = viz.plot_forward_noising(latent, schedule, timesteps=(0, 500, 999), seed=3)
    axes = _image_axes(fig)
    noise = torch.randn(6, 6, generator=torch.Generator().manual_seed(3))
    abar = schedule.alphas_cumprod
    for ax, t in zip(axes, (0, 500, 999), strict=True):
        expected = abar[t].sqrt() * latent + (1 - abar[t]).sqrt() * noise
        np.testing.assert_allclose(ax.images[0].get_array(), expected.numpy(), atol=1e-5)
        assert ax.images[0].get_clim() == (-3, 3)
    assert axes[0].get_title().endswith("signal 1.00") and axes[2].get_title() == "t = 999\nsignal 0.00"
    # at t = 999 nothing of the latent is left: another latent gives the same panel
    other = _image_axes(viz.plot_forward_noising(-latent, schedule, timesteps=(999,), seed=3))
    np.testing.assert_allclose(other[0].images[0].get_array(), axes[2].images[0].get_array(), atol=1e-6)
    with pytest.raises(ValueError, match="one channel"):
        viz.plot_forward_noising(latent[None], schedule)


# ----------------------------------------------------------------------------- grounding
def test_grounding_maps_paint_each_instance_with_its_probability_and_average_to_the_grid():
    instance = np.zeros((16, 16), dtype=np.int64)
    instance[:8, :8] = 1  # covers latent cells (0..1, 0..1) of a 4 x 4 grid
    instance[8:10, 8:12] = 2  # the top half of latent cell (2, 2)
    ids = torch.tensor([1, 2, 0])  # slot 3 is empty
    scores = {"the first": torch.tensor([1.0, 0.0, 0.0]), "mostly the second": np.array([0.25, 0.75, 0.0])}
    fig = viz.plot_grounding_maps(np.zeros((16, 16, 3)), instance, ids, scores, latent_size=4, title="t")
    axes = _image_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "t",
        "the first",
        "the channel, 4x4",
        "mostly the second",
        "the channel, 4x4",
    ]
    np.testing.assert_allclose(axes[1].images[0].get_array(), instance == 1)
    expected = np.zeros((4, 4))
    expected[:2, :2] = 1
    np.testing.assert_allclose(axes[2].images[0].get_array(), expected)
    painted = np.select([instance == 1, instance == 2], [0.25, 0.75], 0.0)
    np.testing.assert_allclose(axes[3].images[0].get_array(), painted)
    expected = np.zeros((4, 4))
    expected[:2, :2], expected[2, 2] = 0.25, 0.75 / 2
    np.testing.assert_allclose(axes[4].images[0].get_array(), expected)
    assert all(ax.images[0].get_clim() == (0, 1) for ax in axes[1:])
    with pytest.raises(ValueError, match=r"expected \(3,\) like ids"):
        viz.plot_grounding_maps(np.zeros((16, 16, 3)), instance, ids, {"x": [1.0, 0.0]}, latent_size=4)


# ----------------------------------------------------------------------------- training and samples
def test_loss_curves_skip_validation_rows_and_smooth_long_runs_only():
    steps = np.arange(1, 101)
    long = pd.DataFrame({"step": steps, "loss": 1.0 / steps})
    long = pd.concat([long, pd.DataFrame({"step": [100], "val/ate_dtw": [0.3]})], ignore_index=True)
    short = pd.DataFrame({"step": [20, 40, 60], "loss": [0.009, 0.008, 0.007]})
    fig = viz.plot_loss_curves({"new": long, "bundled": short}, smooth=20)
    first, second = fig.axes[:2]
    assert first.get_title() == "new" and second.get_title() == "bundled"
    assert first.get_yscale() == "log" and second.get_yscale() == "log"
    raw, smoothed = first.get_lines()
    np.testing.assert_array_equal(raw.get_xdata(), steps)  # the validation row has no loss
    np.testing.assert_allclose(smoothed.get_ydata(), pd.Series(1.0 / steps).rolling(5, min_periods=1).mean())
    assert smoothed.get_label() == "mean of 5 rows"
    assert len(second.get_lines()) == 1  # 3 rows: nothing to smooth
    with pytest.raises(ValueError, match=r"runs\['bad'\]: missing columns \['loss'\]"):
        viz.plot_loss_curves({"bad": pd.DataFrame({"step": [1]})})


def test_max_displacement_is_the_farthest_distance_from_t0_over_the_scene_scale():
    T, H, W = 3, 4, 5
    first = np.zeros((T, H, W, 3), dtype=np.float32)
    first[1, 1, 1, 0], first[2, 1, 1, 0] = 0.3, 0.1  # goes 0.3 away, comes back to 0.1
    second = np.zeros((T, H, W, 3), dtype=np.float32)
    second[2, 2, 3] = (0.0, 0.12, 0.16)  # 0.2 away at the end
    valid = np.ones((H, W), dtype=bool)
    valid[0, 0] = False
    outline = np.zeros((H, W), dtype=bool)
    outline[1, 1:3] = True
    fig = viz.plot_max_displacement(
        {"GT": first, "sample 0": torch.from_numpy(second)}, valid, scene_scale=0.5, outline=outline
    )
    axes = _image_axes(fig)
    expected = np.zeros((H, W))
    expected[1, 1] = 0.6
    shown = axes[0].images[0].get_array()
    assert np.ma.getmaskarray(shown).sum() == 1 and np.ma.getmaskarray(shown)[0, 0]  # invalid: blank
    np.testing.assert_allclose(np.ma.filled(shown, 0.0), expected, atol=1e-6)
    assert axes[1].images[0].get_array()[2, 3] == pytest.approx(0.4)
    # one colour range for every panel, from 0 to the largest distance of any panel
    assert [ax.images[0].get_clim() for ax in axes] == [pytest.approx((0, 0.6))] * 2
    assert axes[0].get_title() == "GT\noutlined: 0.30" and axes[1].get_title() == "sample 0\noutlined: 0.00"
    with pytest.raises(ValueError, match=r"expected \(T, 4, 5, 3\)"):
        viz.plot_max_displacement({"GT": first[..., :2]}, valid, scene_scale=1.0)
