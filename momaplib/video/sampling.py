"""Sampling the completion model: DDIM over the latents of F frames at once."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler
from torch import Tensor
from tqdm.auto import tqdm


def build_scheduler() -> DDIMScheduler:
    """Returns the noise schedule the completion model is trained and sampled with (v-prediction,
    Stable Diffusion's scaled-linear betas, zero terminal SNR so sampling starts from pure noise)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
    )


@torch.no_grad()
def complete_latents(
    model,
    scheduler: DDIMScheduler,
    partial: Tensor,  # [B, F, 4, h, w]
    coverage: Tensor,  # [B, F, 1, h, w]
    reference: Tensor,  # [B, 4, h, w]
    num_inference_steps: int = 10,
    generator: torch.Generator | None = None,
    progress: bool = False,
    shared_noise: bool = False,
) -> Tensor:
    """Returns completed scaled latents [B, F, 4, h, w] after ``num_inference_steps`` DDIM steps.

    ``shared_noise``: start every frame of an item from the same noise (DDIM is deterministic
    given the noise, so frames whose conditions agree come out alike: less flicker)."""
    if (
        not isinstance(num_inference_steps, int)
        or not 1 <= num_inference_steps <= scheduler.config.num_train_timesteps
    ):
        raise ValueError(
            f"num_inference_steps: expected an integer in 1..{scheduler.config.num_train_timesteps}, "
            f"got {num_inference_steps!r}"
        )
    device = model.device
    noise_device = generator.device if generator is not None else torch.device("cpu")
    shape = (partial.shape[0], 1, *partial.shape[2:]) if shared_noise else partial.shape
    latents = (
        torch.randn(shape, generator=generator, device=noise_device)
        .to(device)
        .expand(partial.shape)
        .contiguous()
    )
    partial, coverage, reference = partial.to(device), coverage.to(device), reference.to(device)
    scheduler.set_timesteps(num_inference_steps, device=device)
    for t in tqdm(scheduler.timesteps, desc="complete frames", leave=False, disable=not progress):
        timesteps = t.expand(len(latents)).to(device)
        v = model(latents, partial, coverage, reference, timesteps).float()
        B, F = latents.shape[:2]
        step = scheduler.step(v.flatten(0, 1), t, latents.flatten(0, 1))
        latents = step.prev_sample.reshape(B, F, *latents.shape[2:])
    return latents


@torch.no_grad()
def complete_render(
    model,
    image_vae,
    render,
    reference_rgb: np.ndarray,
    num_inference_steps: int = 10,
    generator: torch.Generator | None = None,
    frames_per_chunk: int | None = 8,
    scheduler: DDIMScheduler | None = None,
    progress: bool = False,
    shared_noise: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(frames, completion)`` (T, H, W, 3) float32 in [0, 1] of a partial ``render``
    (``momaplib.render.RenderOutput``): the completion composited under the render, and the raw
    decoded completion. Frames are completed in chunks of ``frames_per_chunk`` consecutive frames
    (the window length the model was trained on; None: all frames in one attention group); equal
    chunks run as one batch."""
    from momaplib.video.frames import chunks, composite, decode_latents, model_to_images, render_tensors

    scale = model.config.latent_scale
    item = render_tensors(render, reference_rgb, image_vae, scale)
    T = item["partial"].shape[0]
    scheduler = scheduler or build_scheduler()
    slices = chunks(T, frames_per_chunk)
    latents = torch.empty_like(item["partial"])
    groups: dict[int, list[slice]] = {}
    for part in slices:
        groups.setdefault(part.stop - part.start, []).append(part)
    for parts in groups.values():
        stack = {key: torch.stack([item[key][p] for p in parts]) for key in ("partial", "coverage")}
        reference = item["reference"][None].expand(len(parts), -1, -1, -1)
        out = complete_latents(
            model,
            scheduler,
            stack["partial"],
            stack["coverage"],
            reference,
            num_inference_steps,
            generator,
            progress,
            shared_noise,
        )
        for p, chunk in zip(parts, out, strict=True):
            latents[p] = chunk.cpu()
    completion = model_to_images(decode_latents(image_vae, latents, scale))
    return composite(render.rgb, render.alpha, completion), completion
