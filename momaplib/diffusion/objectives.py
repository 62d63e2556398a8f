"""Training objectives of the MoMap generators and the predictor adapters used for evaluation."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor

from momaplib.diffusion.cvae import ConditionalMoMapVAE, kl_divergence
from momaplib.momap import MoMap


def diffusion_loss(
    unet: UNet2DConditionModel,
    scheduler: DDPMScheduler,
    latents: Tensor,
    condition: Tensor,
    text: Tensor,
    generator: torch.Generator | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """Returns the denoising MSE of a batch (paper §3.3.3), epsilon or v target per the scheduler.

    ``latents`` (B, C, h, w) clean MoMap latents, ``condition`` (B, 12, h, w), ``text`` (B, L, D).
    Timesteps and noise are drawn from ``generator`` (on the latents' device). ``weight``
    (broadcastable to the latents, e.g. (B, 1, h, w)) makes it a weighted mean (``weighted_mse``).
    """
    batch = latents.shape[0]
    latents = latents.float()  # caches of the raw codec hold fp16
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (batch,), generator=generator, device=latents.device
    )
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    elif scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(
            f"prediction_type: expected 'epsilon' or 'v_prediction', got {scheduler.config.prediction_type}"
        )
    prediction = unet(torch.cat([noisy, condition], 1), timesteps, encoder_hidden_states=text).sample
    return weighted_mse(prediction, target, weight)


def weighted_mse(prediction: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Returns ``sum(w * (prediction - target)^2) / sum(w)`` over all elements (plain MSE when
    ``weight`` is None); ``weight`` >= 0 broadcasts to the prediction's shape."""
    error = (prediction.float() - target.float()).square()
    if weight is None:
        return error.mean()
    weight = weight.float().expand_as(error)
    return (weight * error).sum() / weight.sum().clamp_min(1e-12)


def motion_weight_map(motion: Tensor, motion_weight: float) -> Tensor:
    """Returns the loss weight ``1 + motion_weight * motion`` of latent cells whose ``motion``
    (B, 1, h, w) is the fraction of moving pixels under them (``latents.motion_fraction``)."""
    if motion_weight < 0:
        raise ValueError(f"motion_weight: expected >= 0, got {motion_weight}")
    return 1.0 + motion_weight * motion


def cvae_loss(
    model: ConditionalMoMapVAE,
    latents: Tensor,
    condition: Tensor,
    text: Tensor,
    kl_weight: float = 1e-3,
    generator: torch.Generator | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """Returns the MoMap-VAE baseline's loss: latent MSE (weighted by ``weight`` as in
    ``weighted_mse``) + ``kl_weight`` * KL (per latent element)."""
    prediction, mu, logvar = model(latents, condition, text, generator=generator)
    reconstruction = weighted_mse(prediction, latents, weight)
    return reconstruction + kl_weight * kl_divergence(mu.float(), logvar.float()) / latents[0].numel()


def pipeline_predictor(pipeline, use_text: bool = True, planner=None, **call_options):
    """Returns a ``momaplib.eval`` predictor ``(gt, num_samples, generator) -> (N, T, H, W, 3)``
    that samples ``pipeline`` on the GT clip's reference image, XYZ, instances, K and (when
    ``use_text``) its prompt. ``planner`` (DSL pipelines): the DSL of each clip comes from
    ``planner.plan(rgb, instance, prompt, momap=gt)`` (``OraclePlanner``: the GT's own DSL)."""

    def predict(gt: MoMap, num_samples: int, generator: torch.Generator | int | None) -> Tensor:
        if not isinstance(generator, torch.Generator):
            generator = torch.Generator().manual_seed(0 if generator is None else int(generator))
        xyz0 = torch.where(torch.from_numpy(gt.valid)[..., None], torch.from_numpy(gt.xyz[0]), torch.nan)
        if planner is not None:
            call_options["dsl"] = planner.plan(gt.rgb, gt.instance, gt.prompt, momap=gt)
        output = pipeline(
            gt.rgb,
            xyz=xyz0.numpy(),
            instance_map=gt.instance,
            K=gt.K,
            prompt=(gt.prompt or None) if use_text else None,
            num_samples=num_samples,
            generator=generator,
            progress=False,
            **call_options,
        )
        return torch.from_numpy(output.xyz)

    return predict
