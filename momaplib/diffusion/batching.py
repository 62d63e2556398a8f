"""Sampling several scenes in shared UNet batches (``MoMapPipeline.sample_scenes``).

A scene's samples become *rows*: the initial noise, the conditions with and without the guided
ones (grounding map, DSL), the text and the unconditional text. Rows of every scene with the same
latent size are stacked and denoised together, so evaluating hundreds of small scenes costs a few
large UNet calls instead of hundreds of launch-bound small ones.
"""

from __future__ import annotations

from itertools import chain

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)
from torch import Tensor

from momaplib.diffusion.conditions import dsl_latent, select_image_latents
from momaplib.vae.model import DOWNSAMPLE

#: scheduler names accepted by ``MoMapPipeline.__call__(scheduler=...)``; "lcm" is for students of
#: ``momaplib.diffusion.distill`` (few steps, no guidance)
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "ddpm": DDPMScheduler,
    "lcm": LCMScheduler,
}


#: samplers that draw fresh noise at every step (``sampler_for`` seeds it per call)
STOCHASTIC = (LCMScheduler, DDPMScheduler)


def sampler_for(pipe, scheduler: str | None, generator: torch.Generator | None):
    """Returns the sampler of one call: ``SCHEDULERS[scheduler]`` from the pipeline's config, or the
    pipeline's own. A sampler that draws noise at its steps (LCM, and DDPM's ancestral sampling) is
    a copy per call that draws it from a generator seeded by ``generator``'s seed (reproducible
    calls, the initial noise unchanged); ``sampler_step_options`` hands it to ``step``."""
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {sorted(SCHEDULERS)}, got {scheduler!r}")
    sampler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config) if scheduler else pipe.scheduler
    if isinstance(sampler, STOCHASTIC):
        sampler = type(sampler).from_config(sampler.config) if sampler is pipe.scheduler else sampler
        if generator is not None:
            seed = (generator.initial_seed() + 1) % 2**63
            sampler.step_generator = torch.Generator(generator.device).manual_seed(seed)
    return sampler


def sampler_step_options(sampler) -> dict:
    """Keyword arguments of ``sampler.step`` beyond the prediction, timestep and sample."""
    generator = getattr(sampler, "step_generator", None)
    return {"generator": generator} if generator is not None else {}


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """Returns the dtype of ``module``'s first parameter or buffer (float32 without either).

    ``ModelMixin.dtype`` asks every submodule for hooks on each read (milliseconds for a UNet),
    and a pipeline call reads it several times; the MoMap codecs hold one dtype throughout."""
    first = next(chain(module.parameters(), module.buffers()), None)
    return first.dtype if first is not None else torch.float32


#: keys of a scene of ``MoMapPipeline.sample_scenes`` (``__call__``'s scene arguments)
SCENE_KEYS = frozenset({"image", "xyz", "instance_map", "prompt", "depth", "K", "dsl", "planner", "labels"})


def scene_rows(pipe, scene, prompts, has_text, motion, guidance_scale, generator) -> dict:
    """Returns the UNet inputs of one scene's samples: conditions with and without the guided
    ones (grounding, DSL), text and unconditional text, and the initial noise."""
    spec, n = pipe.conditions, len(prompts)
    text = pipe.encode_prompt(prompts if "text" in spec else [""] * n)
    image = select_image_latents(scene["condition"], spec).expand(n, -1, -1, -1)
    parts, parts_uncond, guided = [image], [image], has_text and "text" in spec
    scores = None
    if "grounding" in spec:
        grounding, scores = pipe.ground_prompts(scene, prompts, text)
        parts.append(grounding)
        parts_uncond.append(torch.zeros_like(grounding))
    if "dsl" in spec:
        size = tuple(scene["condition"].shape[-2:])
        pixels = torch.zeros(1, 3 * pipe.dsl_windows, *scene["valid"].shape)
        if motion is not None:
            pixels = torch.from_numpy(motion.to_pixels(scene["instance"]))[None]
        cell = dsl_latent(pixels, size).to(pipe.device, image.dtype).expand(n, -1, -1, -1)
        parts.append(cell)
        parts_uncond.append(torch.zeros_like(cell))
        guided = guided or motion is not None
    use_cfg = guided and guidance_scale != 1.0
    H, W = scene["valid"].shape
    factor = getattr(pipe.vae.config, "factor", DOWNSAMPLE)  # RawMoMapCodec's block; the VAE's is 8
    shape = (n, pipe.unet.config.out_channels, H // factor, W // factor)
    noise_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32)
    return {
        "scene": scene,
        "scores": scores,
        "noise": noise.to(pipe.device),
        "cond": torch.cat(parts, dim=1),
        "cond_uncond": torch.cat(parts_uncond, dim=1) if use_cfg else None,
        "text": text,
        # without text the UNet already reads the empty prompt: the unguided branch needs no second encoding
        "uncond": (pipe.encode_prompt([""] * n) if "text" in spec else text) if use_cfg else None,
    }


def denoise_rows(pipe, rows, guidance_scale, sampler, steps, progress, batch_size) -> list[Tensor]:
    """Denoises the rows of all scenes in batches of one latent size; returns each scene's latents."""
    any_cfg = any(row["cond_uncond"] is not None for row in rows)
    keys = ("noise", "cond", "cond_uncond", "text", "uncond")
    by_size: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        by_size.setdefault(tuple(row["noise"].shape[-2:]), []).append(index)
    results: dict[int, Tensor] = {}
    for indices in by_size.values():
        columns = {key: [] for key in keys}
        for index in indices:
            row = dict(rows[index])
            if any_cfg and row["cond_uncond"] is None:  # unguided rows in a guided batch: u = c
                row["cond_uncond"], row["uncond"] = row["cond"], row["text"]
            for key in keys:
                columns[key].append(row[key])
        stacked = {key: None if values[0] is None else torch.cat(values) for key, values in columns.items()}
        total = stacked["noise"].shape[0]
        step = batch_size or total
        latents = torch.cat(
            [
                pipe._denoise(
                    *(None if stacked[key] is None else stacked[key][start : start + step] for key in keys),
                    guidance_scale,
                    sampler,
                    steps,
                    progress,
                )
                for start in range(0, total, step)
            ]
        )
        counts = [rows[index]["noise"].shape[0] for index in indices]
        for index, part in zip(indices, latents.split(counts), strict=True):
            results[index] = part
    return [results[index] for index in range(len(rows))]
