"""Latent-consistency distillation (momaplib.diffusion.distill) and LCM sampling in the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, LCMScheduler
from safetensors.torch import load_file

from momaplib.diffusion.distill import DistillJob, consistency_function, guided_ddim_step
from momaplib.diffusion.latents import LatentSet, save_latent_set
from momaplib.diffusion.pipeline import MoMapPipeline, load_pipeline
from momaplib.diffusion.unet import build_unet
from momaplib.training import TrainConfig
from tests.test_diffusion import TINY_UNET, randomize_, scene, tiny_image_vae, tiny_momap_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: the schedule of the kit's models, at 100 training timesteps
SCHEDULE = dict(
    num_train_timesteps=100, beta_schedule="scaled_linear", prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
)  # fmt: skip


def _scales(cumprod: torch.Tensor, t: int):
    return cumprod[t].sqrt(), (1 - cumprod[t]).sqrt()


def test_the_teachers_step_is_diffusers_ddim_step():
    noise = DDPMScheduler(**SCHEDULE)
    ddim = DDIMScheduler(**SCHEDULE, clip_sample=False)
    ddim.set_timesteps(10)  # steps of 10 timesteps: the distillation grid of num_ddim_timesteps 10
    generator = torch.Generator().manual_seed(0)
    for t in (19, 59, 99):  # 99: zero terminal SNR, alpha 0
        x_t, v = torch.randn(2, 4, 3, 3, generator=generator), torch.randn(2, 4, 3, 3, generator=generator)
        expected = ddim.step(v, t, x_t, eta=0.0).prev_sample
        ours = guided_ddim_step(
            x_t, v, *_scales(noise.alphas_cumprod, t), *_scales(noise.alphas_cumprod, t - 10)
        )
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_the_consistency_function_is_what_lcm_sampling_calls_denoised():
    lcm = LCMScheduler(**SCHEDULE, original_inference_steps=10)
    lcm.set_timesteps(2)
    generator = torch.Generator().manual_seed(1)
    x, v = torch.randn(1, 4, 3, 3, generator=generator), torch.randn(1, 4, 3, 3, generator=generator)
    t = int(lcm.timesteps[0])
    denoised = lcm.step(v, t, x, generator=torch.Generator().manual_seed(0)).denoised
    ours = consistency_function(lcm, x, v, torch.tensor([t]), *_scales(lcm.alphas_cumprod, t))
    torch.testing.assert_close(ours, denoised, rtol=1e-5, atol=1e-6)
    # the boundary condition: at t = 0 the function is the identity, whatever the model says
    at_zero = consistency_function(lcm, x, v, torch.tensor([0]), *_scales(lcm.alphas_cumprod, 0))
    torch.testing.assert_close(at_zero, x)


def _teacher(folder, prediction: str = "v_prediction") -> str:
    torch.manual_seed(0)
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    randomize_(unet, seed=3)
    scheduler = DDIMScheduler(**{**SCHEDULE, "prediction_type": prediction}, timestep_spacing="trailing")
    pipeline = MoMapPipeline(
        unet=unet, vae=tiny_momap_vae(2), image_vae=tiny_image_vae(), scheduler=scheduler,
        text_encoder="none:16", guidance_scale=2.0,
    )  # fmt: skip
    pipeline.save_pretrained(folder)
    return str(folder)


def _latents(path, channels: int = 8) -> str:
    generator = torch.Generator().manual_seed(2)
    count = 12
    latents = LatentSet(
        latents=torch.randn(count, channels, 2, 2, generator=generator),
        condition=torch.randn(count, 12, 2, 2, generator=generator),
        prompt_index=torch.arange(count) % 2,
        prompts=["", "push the red block left"],
        text=torch.randn(2, 3, 16, generator=generator),
        ids=[f"clip_{i:03d}" for i in range(count)],
    )
    save_latent_set(latents, path)
    return path


def _job(tmp_path, name: str, steps: int, **extra) -> DistillJob:
    loop = TrainConfig(tmp_path / name, max_steps=steps, batch_size=4, learning_rate=1e-3, progress=False,
                       num_workers=0, checkpoint_every=2)  # fmt: skip
    return DistillJob(
        teacher=_teacher(tmp_path / "teacher"), latents=_latents(tmp_path / "latents.safetensors"),
        train=loop, num_ddim_timesteps=10, **extra,
    )  # fmt: skip


def test_a_distilled_student_samples_in_two_steps_without_guidance_and_resumes_exactly(tmp_path):
    folder = _job(tmp_path, "straight", 4).run()
    student = MoMapPipeline.from_pretrained(folder)
    assert (
        isinstance(student.scheduler, LCMScheduler)
        and student.scheduler.config.original_inference_steps == 10
    )
    assert student.config.guidance_scale == 1.0
    assert student.config.init_source == f"distill:{tmp_path / 'teacher'}"
    teacher = MoMapPipeline.from_pretrained(tmp_path / "teacher")
    before = teacher.unet.state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in student.unet.state_dict().items())  # trained
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 4 and np.isfinite(losses).all()
    checkpoints = sorted((tmp_path / "straight/checkpoints").iterdir())
    assert (checkpoints[-1] / "target.safetensors").is_file()  # the target network, for an exact resume

    # LCM sampling draws noise at its steps, from the call's generator: reproducible calls
    image, xyz, instance = scene()

    def sample(seed: int):
        return student(
            image, xyz=xyz, instance_map=instance, prompt="push the red block left", num_samples=2,
            num_inference_steps=2, generator=torch.Generator().manual_seed(seed), progress=False,
        ).xyz  # fmt: skip

    np.testing.assert_array_equal(sample(0), sample(0))
    assert not np.allclose(sample(0), sample(1))
    # interrupted after 2 steps and continued: the student (and so the target network it follows) as
    # if it had run straight through
    _job(tmp_path, "resumed", 2).run()
    resumed = MoMapPipeline.from_pretrained(_job(tmp_path, "resumed", 4).run()).unet.state_dict()
    for key, value in student.unet.state_dict().items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    target = load_file(str(sorted((tmp_path / "resumed/checkpoints").iterdir())[-1] / "target.safetensors"))
    straight_target = load_file(str(checkpoints[-1] / "target.safetensors"))
    assert all(torch.equal(target[k], straight_target[k]) for k in straight_target)


def test_a_lora_student_is_adapters_merged_into_its_teacher(tmp_path):
    folder = _job(tmp_path, "lora", 3, lora_rank=2, bundle_dir=tmp_path / "bundle").run()
    assert {p.name for p in folder.iterdir()} == {
        "lcm_lora.json",
        "lcm_lora.safetensors",
        "weights.sha256.json",
    }
    adapters = load_file(str(folder / "lcm_lora.safetensors"))
    assert all(
        v.dtype == torch.float16 for v in load_file(str(tmp_path / "bundle/lcm_lora.safetensors")).values()
    )
    teacher = MoMapPipeline.from_pretrained(tmp_path / "teacher")
    student = load_pipeline(folder)
    assert (
        isinstance(student.scheduler, LCMScheduler)
        and student.scheduler.config.original_inference_steps == 10
    )
    assert student.config.guidance_scale == 1.0
    assert student.config.init_source == f"distill-lora:{tmp_path / 'teacher'}"
    # a merged linear layer is the teacher's weight plus B A (alpha = rank: scale 1), computed here
    before, after = teacher.unet.state_dict(), student.unet.state_dict()
    assert set(after) == set(before)  # a plain UNet again: no adapter layers left
    layer = next(k[: -len(".lora_A.weight")] for k in adapters if k.endswith("to_q.lora_A.weight"))
    delta = adapters[f"{layer}.lora_B.weight"] @ adapters[f"{layer}.lora_A.weight"]
    assert delta.abs().max() > 0  # B starts at zero: trained
    torch.testing.assert_close(after[f"{layer}.weight"], before[f"{layer}.weight"] + delta)
    torch.testing.assert_close(
        after["conv_in.weight"], before["conv_in.weight"], rtol=0, atol=0
    )  # not adapted
    image, xyz, instance = scene()
    out = student(
        image, xyz=xyz, instance_map=instance, prompt="push the red block left", num_samples=2,
        num_inference_steps=2, generator=torch.Generator().manual_seed(0), progress=False,
    ).xyz  # fmt: skip
    assert out.shape[:2] == (2, teacher.vae.num_frames) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="lora_rank"):
        DistillJob(lora_rank=-1)


def test_distillation_refuses_what_it_cannot_distil(tmp_path):
    with pytest.raises(ValueError, match=r"teacher: .*'v_prediction'"):
        DistillJob(
            teacher=_teacher(tmp_path / "eps", "epsilon"), latents=_latents(tmp_path / "l.safetensors"),
            train=TrainConfig(tmp_path / "a", max_steps=1), num_ddim_timesteps=10,
        ).run()  # fmt: skip
    with pytest.raises(ValueError, match=r"latents: .* gives 4 latent"):
        DistillJob(
            teacher=_teacher(tmp_path / "t"), latents=_latents(tmp_path / "l4.safetensors", channels=4),
            train=TrainConfig(tmp_path / "b", max_steps=1), num_ddim_timesteps=10,
        ).run()  # fmt: skip
    with pytest.raises(ValueError, match="num_ddim_timesteps: expected a divisor"):
        DistillJob(
            teacher=str(tmp_path / "t"), latents=tmp_path / "l.safetensors",
            train=TrainConfig(tmp_path / "c", max_steps=1), num_ddim_timesteps=30,
        ).run()  # fmt: skip
    with pytest.raises(ValueError, match="target_decay"):
        DistillJob(target_decay=1.0)
