"""The fast sampling path of MoMapPipeline (``momaplib.diffusion.fast``) against the eager loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from momaplib.diffusion import fast
from momaplib.diffusion.fast import FP32_TOLERANCE, DeviceDDIM, FastSamplingConfig
from momaplib.diffusion.unet import build_unet
from tests.test_diffusion import TINY_UNET, randomize_, scene, tiny_image_vae, tiny_momap_vae


@pytest.fixture(scope="module")
def pipe():
    from momaplib.diffusion.pipeline import MoMapPipeline

    torch.manual_seed(0)
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    randomize_(unet, seed=3)
    scheduler = DDIMScheduler(
        num_train_timesteps=100, prediction_type="v_prediction", timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
    )  # fmt: skip
    return MoMapPipeline(
        unet=unet,
        vae=tiny_momap_vae(2),
        image_vae=tiny_image_vae(),
        scheduler=scheduler,
        text_encoder="none:16",
    )


def sample(pipe, fast_config: dict | None, **options) -> np.ndarray:
    image, xyz, instance = scene()
    if fast_config is None:
        pipe.disable_fast_sampling()
    else:
        pipe.enable_fast_sampling(**fast_config)
    args = dict(xyz=xyz, instance_map=instance, num_samples=3, num_inference_steps=5, progress=False)
    output = pipe(image, generator=torch.Generator().manual_seed(0), **{**args, **options})
    pipe.disable_fast_sampling()
    return output.xyz


# DDIM (updated on the device) unguided and guided (one UNet call of 2N rows); DPM-Solver++ (its own step)
@pytest.mark.parametrize(("scheduler", "prompt"), [(None, None), (None, "push the block"), ("dpm", "push")])
def test_fast_path_in_float32_matches_the_eager_loop(pipe, scheduler, prompt):
    eager = sample(pipe, None, scheduler=scheduler, prompt=prompt, guidance_scale=2.5)
    # channels-last convolutions only reorder sums: within the stated tolerance of the eager loop
    fast_path = sample(
        pipe,
        {"compile": False, "channels_last": True},
        scheduler=scheduler,
        prompt=prompt,
        guidance_scale=2.5,
    )
    assert np.abs(fast_path - eager).max() <= FP32_TOLERANCE
    # in the eager layout the fast step does the same float32 operations (DDIM on the device too)
    same_layout = sample(
        pipe,
        {"compile": False, "channels_last": False},
        scheduler=scheduler,
        prompt=prompt,
        guidance_scale=2.5,
    )
    np.testing.assert_array_equal(same_layout, eager)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "sample"])
@pytest.mark.parametrize("steps", [4, 7])  # 7 does not divide 1000: prev = t - 1000 // 7, not the next t
def test_device_ddim_reproduces_diffusers_ddim_step(prediction_type, steps):
    # zero terminal SNR (the bundled scheduler's) divides by sqrt(a_t) = 0 under the other two types
    zero_snr = prediction_type == "v_prediction"
    scheduler = DDIMScheduler(
        prediction_type=prediction_type, timestep_spacing="trailing", rescale_betas_zero_snr=zero_snr,
        clip_sample=False,
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    ddim = DeviceDDIM(scheduler, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    sample_ = torch.randn(2, 4, 8, 8, generator=generator)
    for index, t in enumerate(scheduler.timesteps):
        output = torch.randn(2, 4, 8, 8, generator=generator)
        expected = scheduler.step(output, t, sample_).prev_sample
        torch.testing.assert_close(
            ddim.step(ddim.coefficients[index], output, sample_), expected, rtol=0, atol=0
        )
        sample_ = expected
    assert DeviceDDIM.supports(scheduler)
    assert not DeviceDDIM.supports(DDIMScheduler(clip_sample=True))


def test_fast_sampling_switches_and_its_device_default(pipe, monkeypatch):
    pipe.disable_fast_sampling()
    pipe._fast_sampling_choice = None  # neither enabled nor disabled: the device's default
    assert not pipe.fast_sampling_active("cpu")
    monkeypatch.setattr(fast, "FAST_SAMPLING_ON_CUDA", True)
    assert pipe.fast_sampling_active("cuda") and not pipe.fast_sampling_active("cpu")
    monkeypatch.setattr(fast, "FAST_SAMPLING_ON_CUDA", False)
    assert not pipe.fast_sampling_active("cuda")
    pipe.enable_fast_sampling(compile=False)
    assert pipe.fast_sampling_active("cpu") and pipe.fast_sampling_active("cuda")
    pipe.disable_fast_sampling()
    assert not pipe.fast_sampling_active("cuda")
    with pytest.raises(ValueError, match="dtype"):
        pipe.enable_fast_sampling(dtype="bf16")
    with pytest.raises(TypeError):
        pipe.enable_fast_sampling(steps=4)  # not a field of FastSamplingConfig
    assert fast.resolve_dtype(FastSamplingConfig(), torch.device("cuda")) == torch.bfloat16
    assert fast.resolve_dtype(FastSamplingConfig(), torch.device("cpu")) == torch.float32


def test_a_failing_compile_falls_back_to_the_uncompiled_step(pipe, monkeypatch):
    def broken_compile(function, **kwargs):
        def compiled(*args):
            raise RuntimeError("no compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = sample(pipe, {"compile": False}, prompt="push", guidance_scale=2.0)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        fallen_back = sample(pipe, {"compile": True}, prompt="push", guidance_scale=2.0)
    np.testing.assert_array_equal(fallen_back, eager)
    with pytest.raises(RuntimeError, match="no compiler"):
        sample(pipe, {"compile": True, "fallback": False}, prompt="push", guidance_scale=2.0)


def test_encode_prompt_encodes_each_distinct_prompt_once(pipe, monkeypatch):
    seen = []

    def encoder(prompts):
        seen.append(list(prompts))
        return torch.stack([torch.full((1, 16), float(len(p))) for p in prompts])

    monkeypatch.setattr("momaplib.diffusion.pipeline.load_text_encoder", lambda spec: encoder)
    out = pipe.encode_prompt(["ab", "abcd", "ab", "ab"])
    assert seen == [["ab", "abcd"]]
    assert out[:, 0, 0].tolist() == [2.0, 4.0, 2.0, 2.0]


def test_ancestral_ddpm_is_seeded_per_call_on_both_paths(pipe):
    # DDPM draws fresh noise at every step: from the call's generator, so a seed repeats its samples
    first = sample(pipe, None, scheduler="ddpm", prompt="push")
    np.testing.assert_array_equal(sample(pipe, None, scheduler="ddpm", prompt="push"), first)
    # the fast path steps the same sampler with the same per-call generator
    fast_path = sample(pipe, {"compile": False, "channels_last": False}, scheduler="ddpm", prompt="push")
    np.testing.assert_array_equal(fast_path, first)
    # and the step noise is real: the deterministic DDIM path from the same initial noise differs
    assert np.abs(sample(pipe, None, scheduler="ddim", prompt="push") - first).max() > 1e-4
