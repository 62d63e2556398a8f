"""``benchmarks/eval_sensors.py``: a generator scored on what a sensor recorded, and its t = 0 geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMScheduler

from momaplib.data import simulate_split_videos
from momaplib.diffusion.unet import build_unet
from momaplib.eval import evaluate_methods
from momaplib.sim import SimConfig
from momaplib.sim.sensor import observed_xyz
from tests.scripts import load_benchmark
from tests.test_diffusion import TINY_UNET, randomize_, tiny_image_vae, tiny_momap_vae

eval_sensors = load_benchmark("eval_sensors")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pipeline(num_frames: int):
    from momaplib.diffusion.pipeline import MoMapPipeline

    torch.manual_seed(0)
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    randomize_(unet, seed=3)
    scheduler = DDIMScheduler(
        num_train_timesteps=100, prediction_type="v_prediction", timestep_spacing="trailing"
    )
    return MoMapPipeline(
        unet=unet, vae=tiny_momap_vae(num_frames), image_vae=tiny_image_vae(), scheduler=scheduler,
        text_encoder="none:16",
    )  # fmt: skip


def test_the_model_sees_the_observed_depth_and_its_t0_geometry_is_scored():
    config = SimConfig(sensor="structured-light").smoke()
    videos = simulate_split_videos("tabletop", 2, config=config, progress=False)
    pipeline = _pipeline(config.num_frames)
    seen_depths, raw, returned = [], [], []
    original = pipeline.__call__

    class Spy:  # records the depth each call was given and what it returned
        def __call__(self, *args, **kwargs):
            seen_depths.append(kwargs["depth"])
            raw.append(original(*args, **kwargs).xyz)
            return type("Output", (), {"xyz": raw[-1]})

        def __getattr__(self, name):
            return getattr(pipeline, name)

    observations = {id(clip.momap): (clip_id, clip.depth[0]) for clip_id, clip in videos}
    t0: dict[str, list] = {}
    anchored = eval_sensors.observed_predictor(Spy(), observations, t0, num_inference_steps=2)
    assert pipeline.config.anchor_t0 is False  # the model's own t = 0 is what t0_error scores

    def predictor(gt, num_samples, generator):
        returned.append(anchored(gt, num_samples, generator).numpy())
        return torch.from_numpy(returned[-1])

    clips = [(clip_id, clip.momap) for clip_id, clip in videos]
    frame = evaluate_methods(clips, {"m": predictor}, num_samples=2, progress=False)["m"]
    assert len(frame) == 2 and set(t0) == {clip_id for clip_id, _ in videos}
    for (clip_id, clip), depth in zip(videos, seen_depths, strict=True):
        assert np.array_equal(depth, clip.depth[0])  # the sensor's depth, with its holes, not the GT
        assert (depth == 0).any() and not np.allclose(depth, clip.momap.xyz[0][..., 2])
        t0_error, t0_error_gt, input_error_gt, observed = t0[clip_id]
        assert 0 <= t0_error < 10 and 0 <= t0_error_gt < 10 and 0 < input_error_gt < 0.5
        assert observed == pytest.approx(float((depth > 0).mean()))
    # the scored samples start at the observed XYZ and move as the model's own did
    for (_, clip), own, scored in zip(videos, raw, returned, strict=True):
        seen, observed = observed_xyz(clip.depth[0], clip.momap.K)
        np.testing.assert_allclose(
            scored[:, 0][:, observed], np.broadcast_to(seen[observed], (2, observed.sum(), 3)), atol=1e-5
        )
        moved, own_moved = scored - scored[:, :1], own - own[:, :1]
        np.testing.assert_allclose(moved[:, :, observed], own_moved[:, :, observed], atol=1e-5)
        assert not np.allclose(
            own[:, 0][:, observed], seen[observed], atol=1e-3
        )  # a random model's own t = 0


def test_the_table_is_means_per_sensor_and_family_with_median_t0_errors():
    rows = pd.DataFrame(
        {
            "dataset": ["ideal"] * 3 + ["stereo"] * 2, "family": ["tabletop"] * 5,
            "fg_mask_iou": [0.2, 0.4, 0.6, 0.1, 0.3], "ate_dtw": [1.0, 2.0, 6.0, 1.0, 1.0],
            "epe": [0.0] * 5, "t0_error": [0.01, 0.02, 0.9, 0.05, 0.07], "t0_error_gt": [0.0] * 5,
            "observed_fraction": [1.0, 1.0, 1.0, 0.8, 0.9],
        }
    )  # fmt: skip
    table = eval_sensors.summary(rows)
    assert table.loc[("ideal", "tabletop"), "ate_dtw"] == pytest.approx(3.0)
    assert table.loc[("ideal", "tabletop"), "t0_error"] == pytest.approx(0.02)  # a median: robust to 0.9
    assert table.loc[("stereo", "tabletop"), "clips"] == 2
