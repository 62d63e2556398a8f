"""The MoMap-VAE baseline of paper §4.1: a conditional VAE that outputs the MoMap in one step.

It shares everything with the diffusion model except the generator: the same condition latents
(frozen image VAE on RGB, instance colours and XYZ), the same text tokens, the same MoMap VAE
decoder. A posterior network ``q(z | MoMap latent, conditions)`` gives a small latent code
``z`` (``z_channels`` at latent resolution); a ``UNet2DConditionModel`` decodes ``[z | conditions]``
(+ text by cross-attention) straight into the MoMap latent. Sampling draws ``z ~ N(0, I)``.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from momaplib.diffusion.unet import build_unet


class ConditionalMoMapVAE(ModelMixin, ConfigMixin):
    """Conditional VAE over MoMap latents; ``forward`` returns (prediction, mu, logvar)."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,  # MoMap VAE latent channels (what is predicted)
        condition_channels: int = 12,  # rgb | instance | xyz image-VAE latents
        z_channels: int = 8,  # channels of the code z at latent resolution
        cross_attention_dim: int = 384,  # text token width
        block_out_channels: tuple[int, ...] = (64, 128, 128),  # decoder UNet widths
        layers_per_block: int = 2,  # decoder UNet depth per level
        encoder_width: int = 128,  # posterior network width
        norm_num_groups: int = 32,
    ):
        super().__init__()
        width = encoder_width
        self.posterior = nn.Sequential(
            nn.Conv2d(latent_channels + condition_channels, width, 3, padding=1),
            nn.GroupNorm(min(norm_num_groups, width), width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(min(norm_num_groups, width), width),
            nn.SiLU(),
            nn.Conv2d(width, 2 * z_channels, 3, padding=1),
        )
        self.decoder: UNet2DConditionModel = build_unet(
            latent_channels=latent_channels,
            condition_channels=condition_channels + z_channels - latent_channels,
            cross_attention_dim=cross_attention_dim,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
        )

    def decode(self, z: Tensor, condition: Tensor, text: Tensor) -> Tensor:
        """Returns the (B, latent_channels, h, w) MoMap latent for code z (B, z_channels, h, w)."""
        timestep = torch.zeros(z.shape[0], device=z.device, dtype=torch.long)
        return self.decoder(torch.cat([z, condition], 1), timestep, encoder_hidden_states=text).sample

    def forward(
        self, momap_latent: Tensor, condition: Tensor, text: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (predicted MoMap latent, mu, logvar) with z drawn from the posterior."""
        mu, logvar = self.posterior(torch.cat([momap_latent, condition], 1)).chunk(2, dim=1)
        logvar = logvar.clamp(-20.0, 10.0)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * logvar).exp() * eps
        return self.decode(z, condition, text), mu, logvar

    @torch.no_grad()
    def sample(self, condition: Tensor, text: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Returns MoMap latents decoded from z ~ N(0, I) (B taken from ``text``)."""
        batch = text.shape[0]
        h, w = condition.shape[-2:]
        device = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn(batch, self.config.z_channels, h, w, generator=generator, device=device)
        return self.decode(z.to(condition), condition.expand(batch, -1, -1, -1), text)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Returns the mean over the batch of KL(N(mu, exp(logvar)) || N(0, I)), summed over the code."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
