"""The completion model of paper §3.4.1: an image-diffusion UNet whose self-attention spans the
frames of a clip (like CAT3D), so the holes of a partial render are filled consistently.

Every frame is a latent of the kit's image VAE (4 channels, /8). Inputs per frame, in this order:
the noisy target latent, the latent of the partial render (holes painted grey), the render's
coverage pooled to latent resolution (1 channel), and the reference frame's latent; the reference
frame's latent tokens also enter through cross-attention. Output: the v-prediction of the target
latent. With ``frame_attention="flattened"`` every self-attention layer attends over the tokens of
all F frames of an item, ``(B·F, N, C) -> (B, F·N, C)``; ``"per-frame"`` is the plain image UNet
(the ablation).
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import Tensor

FRAME_ATTENTION = ("flattened", "per-frame")
#: channels of an image-VAE latent
LATENT_CHANNELS = 4


class FlattenedFramesAttnProcessor:
    """Self-attention over the frames of an item: ``(B·F, N, C)`` tokens are regrouped as
    ``(B, F·N, C)`` before attending and split back after. Cross-attention (``encoder_hidden_states``
    given) stays per frame. ``num_frames`` comes from ``cross_attention_kwargs``."""

    def __init__(self) -> None:
        self.inner = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        num_frames: int = 1,
    ) -> Tensor:
        if encoder_hidden_states is not None or num_frames == 1 or hidden_states.ndim != 3:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        BF, N, C = hidden_states.shape
        if BF % num_frames:
            raise ValueError(f"num_frames: {num_frames} does not divide the batch of {BF} frame tokens")
        grouped = hidden_states.reshape(BF // num_frames, num_frames * N, C)
        out = self.inner(attn, grouped, None, attention_mask, temb)
        return out.reshape(BF, N, C)


class PerFrameAttnProcessor(AttnProcessor2_0):
    """Plain attention that accepts (and ignores) ``num_frames``, so both variants take one call."""

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, num_frames=1
    ):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class CompletionUNet(ModelMixin, ConfigMixin):
    """Video completion UNet over image-VAE latents; ``forward`` takes items of F frames."""

    @register_to_config
    def __init__(
        self,
        frame_attention: Literal["flattened", "per-frame"] = "flattened",
        block_out_channels: tuple[int, ...] = (64, 96, 96),
        layers_per_block: int = 1,
        attention_head_dim: int = 32,
        cross_attention_dim: int = 128,
        norm_num_groups: int = 32,
        sample_size: int = 16,
        latent_scale: float = 0.45,
        init_source: str = "none",
    ):
        """``latent_scale`` multiplies image-VAE latents into unit range (1 / their std on sim
        frames); ``init_source`` records where the UNet's weights came from ("none" = scratch)."""
        super().__init__()
        if frame_attention not in FRAME_ATTENTION:
            raise ValueError(f"frame_attention: expected one of {FRAME_ATTENTION}, got {frame_attention!r}")
        levels = len(block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=3 * LATENT_CHANNELS + 1,
            out_channels=LATENT_CHANNELS,
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            encoder_hid_dim=LATENT_CHANNELS,
            encoder_hid_dim_type="text_proj",
            norm_num_groups=norm_num_groups,
        )
        self.set_frame_attention(frame_attention)

    def set_frame_attention(self, mode: str) -> None:
        """Sets the self-attention of every transformer block to span the frames or not."""
        if mode not in FRAME_ATTENTION:
            raise ValueError(f"frame_attention: expected one of {FRAME_ATTENTION}, got {mode!r}")
        processor = FlattenedFramesAttnProcessor if mode == "flattened" else PerFrameAttnProcessor
        self.unet.set_attn_processor({name: processor() for name in self.unet.attn_processors})

    @property
    def frame_attention(self) -> str:
        processors = list(self.unet.attn_processors.values())
        return (
            "flattened"
            if processors and isinstance(processors[0], FlattenedFramesAttnProcessor)
            else "per-frame"
        )

    def forward(
        self,
        noisy: Tensor,  # [B, F, 4, h, w] noisy target latents (scaled)
        partial: Tensor,  # [B, F, 4, h, w] latents of the partial renders (scaled)
        coverage: Tensor,  # [B, F, 1, h, w] render alpha pooled to latent resolution
        reference: Tensor,  # [B, 4, h, w] latent of the reference frame (scaled)
        timesteps: Tensor,  # [B] diffusion timesteps
    ) -> Tensor:
        """Returns the v-prediction [B, F, 4, h, w]."""
        B, F, C, h, w = noisy.shape
        if (
            partial.shape != noisy.shape
            or coverage.shape != (B, F, 1, h, w)
            or reference.shape != (B, C, h, w)
        ):
            raise ValueError(
                f"CompletionUNet: expected partial {tuple(noisy.shape)}, coverage {(B, F, 1, h, w)} and "
                f"reference {(B, C, h, w)}; got {tuple(partial.shape)}, {tuple(coverage.shape)}, "
                f"{tuple(reference.shape)}"
            )
        frames_reference = reference[:, None].expand(B, F, C, h, w)
        sample = torch.cat([noisy, partial, coverage, frames_reference], dim=2).reshape(B * F, -1, h, w)
        tokens = reference.flatten(2).transpose(1, 2)  # [B, h·w, 4]
        tokens = tokens[:, None].expand(B, F, h * w, C).reshape(B * F, h * w, C)
        timesteps = timesteps.reshape(B, 1).expand(B, F).reshape(-1)
        out = self.unet(
            sample.to(self.dtype),
            timesteps,
            encoder_hidden_states=tokens.to(self.dtype),
            cross_attention_kwargs={"num_frames": F},
        ).sample
        return out.reshape(B, F, C, h, w)
