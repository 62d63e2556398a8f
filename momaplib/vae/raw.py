"""The MoMap itself as the diffusion model's latent: the codec of the "no VAE" ablation (paper §4.4).

The paper's third ablation removes the MoMap VAE and lets the UNet work "on the original MoMap
space instead of the latent space". ``RawMoMapCodec`` stands where ``MoMapVAE`` stands in a
``MoMapPipeline`` (same ``encode_channels`` / ``decode_channels`` / ``config.in_channels``), so
the pipeline, the trainer and the evaluation run the ablation unchanged. It compresses nothing:
each ``factor x factor`` block of pixels becomes ``factor**2`` channels (``pixel_unshuffle``, a
lossless rearrangement), so the UNet sees the same 16x16 grid as with the VAE at 128 px and the
only difference between the two models is the learnt compression. What is not learnt:

- each MoMap channel (``3 t + c``) is standardised by a mean and a standard deviation estimated
  from training MoMaps (``fit``), as the VAE's latents are scaled by its ``scaling_factor``;
- the round trip is exact: ``decode_channels(encode_channels(x)) == x`` up to float rounding.

With 32 frames at 128 px that is 96 x 64 = 6144 latent channels (the VAE has 32), so only the
UNet's ``conv_in`` and ``conv_out`` grow; a latent cache is 192 times larger (3 MB per clip in
fp16), which bounds how many clips the ablation can train on in memory.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import Tensor

from momaplib.checkpoints import resolve_checkpoint
from momaplib.vae.model import DOWNSAMPLE, MoMapVAE


class RawMoMapCodec(ModelMixin, ConfigMixin):
    """Returns MoMaps rearranged into latent-grid channels and back; no weights are learnt.

    ``in_channels`` is 3T (model layout, channel ``3 t + c``); ``factor`` the side of the pixel
    block folded into channels (8: the VAE's grid). ``latent_channels`` = ``in_channels * factor**2``.
    """

    _supports_gradient_checkpointing = False
    #: dtype of the latents in a latent cache (``momaplib.diffusion.latents``): 3 MB a clip in fp16
    latent_storage_dtype = torch.float16

    @register_to_config
    def __init__(self, in_channels: int = 96, factor: int = DOWNSAMPLE, scaling_factor: float = 1.0):
        super().__init__()
        if in_channels < 3 or in_channels % 3:
            raise ValueError(f"in_channels: expected 3T (a positive multiple of 3), got {in_channels}")
        if factor < 1:
            raise ValueError(f"factor: expected a positive block size, got {factor}")
        # per MoMap channel (3T,): estimated by ``fit``; saved with the model
        self.register_buffer("channel_mean", torch.zeros(in_channels))
        self.register_buffer("channel_std", torch.ones(in_channels))

    @property
    def latent_channels(self) -> int:
        """Channels of a latent: ``in_channels * factor**2``."""
        return self.config.in_channels * self.config.factor**2

    @property
    def num_frames(self) -> int:
        """Frames T of the MoMaps this codec takes (``in_channels // 3``)."""
        return self.config.in_channels // 3

    def _check(self, name: str, x: Tensor, channels: int, size: str) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected (B, {channels}, {size}), got {shape}")

    @torch.no_grad()
    def fit(self, momaps: Tensor) -> RawMoMapCodec:
        """Sets the per-channel mean and std from ``momaps`` (B, 3T, H, W) in model range; returns self.

        Invalid pixels (exactly 0 in every channel of a pixel) are left out; a channel whose std is
        below 1e-6 keeps std 1.
        """
        C = self.config.in_channels
        self._check("momaps", momaps, C, "H, W")
        x = momaps.detach().float().permute(1, 0, 2, 3).reshape(C, -1)
        keep = x.abs().sum(0) > 0
        if not bool(keep.any()):
            raise ValueError("momaps: every pixel is invalid (all zero); no statistics to estimate")
        x = x[:, keep]
        std = x.std(dim=1)
        self.channel_mean.copy_(x.mean(dim=1).to(self.channel_mean))
        self.channel_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)).to(self.channel_std))
        return self

    def encode_channels(
        self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Returns latents (B, 3T * factor**2, H/factor, W/factor): standardised, then ``pixel_unshuffle``.

        ``sample`` and ``generator`` are accepted for the ``MoMapVAE`` interface; the codec is exact.
        """
        C, f = self.config.in_channels, self.config.factor
        self._check("x", x, C, "H, W")
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"x: H and W must be multiples of {f}, got H, W = {tuple(x.shape[-2:])}")
        mean, std = self.channel_mean.to(x.dtype), self.channel_std.to(x.dtype)
        z = (x - mean[:, None, None]) / std[:, None, None]
        return F.pixel_unshuffle(z, f) * self.config.scaling_factor

    def decode_channels(self, latents: Tensor) -> Tensor:
        """Returns MoMaps (B, 3T, H, W) in model range from latents of ``encode_channels``."""
        self._check("latents", latents, self.latent_channels, "H/factor, W/factor")
        z = F.pixel_shuffle(latents / self.config.scaling_factor, self.config.factor)
        mean, std = self.channel_mean.to(z.dtype), self.channel_std.to(z.dtype)
        return z * std[:, None, None] + mean[:, None, None]


def load_momap_codec(name_or_path: str | os.PathLike) -> MoMapVAE | RawMoMapCodec:
    """Returns the MoMap VAE or the ``RawMoMapCodec`` saved in a folder, bundled name or hub id
    (the class is read from its ``config.json``)."""
    path = resolve_checkpoint(name_or_path)
    config = path / "config.json"
    name = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    model_class = RawMoMapCodec if name == RawMoMapCodec.__name__ else MoMapVAE
    return model_class.from_pretrained(path)
