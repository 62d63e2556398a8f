"""A patch-adversarial term for the image VAE's decoder (the part of Stable Diffusion's VAE recipe
that can be had without pretrained weights).

An autoencoder trained with L1 alone decodes the mean of what a latent could be, so fine texture and
edges come out blurred; the image prior's samples, decoded by it, are then no sharper than that.
SD's VAE adds a perceptual term (LPIPS, which needs pretrained VGG weights: not available here) and
a patch-adversarial one. ``PatchDiscriminator`` is the pix2pix "NLayer" patch critic (Isola et al.
2017; the one SD's VAE training uses), with GroupNorm; ``adversarial_losses`` gives both hinge
losses of one batch so that a single optimizer over the decoder and the critic can take them in one
step. Written here rather than taken from a library: diffusers ships no discriminator or GAN loss,
and the critic is twenty lines.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call


class PatchDiscriminator(nn.Module):
    """Scores overlapping patches of RGB images in model range [-1, 1]: (B, 3, H, W) -> (B, 1, h, w)
    logits, one per patch of about 70 x 70 pixels at the default three layers (fewer for fewer)."""

    def __init__(self, channels: int = 32, num_layers: int = 3, groups: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, num_layers + 1):
            out = channels * 2 ** min(i, 3)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1), nn.GroupNorm(groups, out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class WithDiscriminator(nn.Module):
    """An autoencoder and its critic as one module, so one optimizer (and, under several processes,
    one ``DistributedDataParallel``) trains both; only ``vae`` is saved."""

    def __init__(self, vae: nn.Module, discriminator: PatchDiscriminator) -> None:
        super().__init__()
        self.vae = vae
        self.discriminator = discriminator


def adversarial_losses(discriminator: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(generator_loss, critic_loss)``, the hinge losses of one batch.

    ``generator_loss = -mean D(fake)`` is computed with the critic's parameters detached, so its
    gradient reaches only what made ``fake``; ``critic_loss = mean relu(1 - D(real)) + mean relu(1 +
    D(fake))`` sees ``fake`` detached, so its gradient reaches only the critic. Their sum can be
    minimised in one backward pass by one optimizer.
    """
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    frozen.update(dict(discriminator.named_buffers()))
    generator = -functional_call(discriminator, frozen, (fake,)).float().mean()
    critic = (
        torch.relu(1 - discriminator(real).float()).mean()
        + torch.relu(1 + discriminator(fake.detach()).float()).mean()
    )
    return generator, critic


def balance_weight(
    reconstruction: Tensor, generator: Tensor, last_layer: Tensor, limit: float = 1e4
) -> Tensor:
    """Returns ``|d reconstruction / d W| / |d generator / d W|`` at the decoder's last layer ``W``
    (detached, at most ``limit``): the factor that gives the adversarial term the reconstruction
    term's gradient scale there (Esser et al. 2021's adaptive weight, which SD's VAE training uses).
    A fixed weight does not hold: the critic's verdict grows as it learns, and switched on at once
    it swamped the L1 term (a CPU check: L1 of RGB decodes from 0.08 to 0.2-0.3 within 20 steps)."""
    rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    gen = torch.autograd.grad(generator, last_layer, retain_graph=True)[0]
    return (rec.norm() / (gen.norm() + 1e-4)).clamp(0, limit).detach()


__all__ = ["PatchDiscriminator", "WithDiscriminator", "adversarial_losses", "balance_weight"]
