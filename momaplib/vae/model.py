"""MoMap compression (paper §3.3.2): an inflated ``AutoencoderKL`` from ``(3T, H, W)`` to ``(32, H/8, W/8)``.

- ``MoMapVAE``: a diffusers ``AutoencoderKL`` with ``in_channels = out_channels = 3T`` (model layout,
  channel ``3t + c``) and ``latent_channels = 32``, plus the MoMap normalisation of
  ``momaplib.momap``: ``encode_momap`` / ``decode_momap`` take and return trajectories in metres.
- ``inflate_from_image_vae``: builds one from any RGB ``AutoencoderKL`` (Stable Diffusion's, or
  the kit's own ``image-vae``) so that, before fine-tuning, it *is* the image VAE applied to the
  time-average of the XYZ channels (exactly, on time-constant MoMaps).
- ``build_image_vae``: the small RGB ``AutoencoderKL`` (SD VAE family) the kit trains offline.

Training (``momap train-image-vae``, ``momap train-vae``) and the reconstruction error relative to
the scene scale are in ``momaplib.vae.train``.

Latent scaling: ``encode_channels`` returns latents multiplied by ``config.scaling_factor`` (as
diffusers pipelines do with ``vae.config.scaling_factor``), ``decode_channels`` divides first.
An inflated model starts with the image VAE's factor (0.18215 for SD); ``momap train-vae`` ends by
setting it to ``1 / std`` of posterior-mean latents of training MoMaps, so diffusion sees unit-variance
latents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, ModelMixin  # noqa: F401 - see below
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from momaplib.checkpoints import resolve_checkpoint
from momaplib.momap import (
    channels_to_xyz,
    denormalize_xyz,
    normalization_stats,
    normalize_xyz,
    xyz_to_channels,
)

# ``ModelMixin`` is imported so that diffusers' pipeline loader, which looks up the loadable base
# classes in a component's module, can load a ``MoMapVAE`` saved inside a pipeline folder.

#: Spatial down-sampling of every VAE in the kit (paper §3.3.2: H_L = H / 8, W_L = W / 8).
DOWNSAMPLE = 8
#: Latent channels of the MoMap VAE (paper §3.3.2: C_L = 32).
LATENT_CHANNELS = 32
#: Widths of the default VAEs (image and MoMap share them: inflation copies the body). With
#: ``LAYERS_PER_BLOCK = 2`` the image VAE has 1.7 M parameters (3.3 MiB in fp16), the MoMap VAE
#: at T = 32 1.8 M (3.5 MiB): small enough to bundle, large enough for <= 1 % EPE on MoMap-Sim.
BLOCK_OUT_CHANNELS = (32, 64, 64, 64)
LAYERS_PER_BLOCK = 2


def _check_downsampling(block_out_channels: tuple[int, ...]) -> None:
    # diffusers' Encoder halves the resolution after every block but the last.
    factor = 2 ** (len(block_out_channels) - 1)
    if factor != DOWNSAMPLE:
        raise ValueError(
            f"block_out_channels: expected 4 entries (3 down-samplings, H/{DOWNSAMPLE} latents), got "
            f"{len(block_out_channels)} entries {tuple(block_out_channels)} (H/{factor})"
        )


def _check_groups(block_out_channels: tuple[int, ...], norm_num_groups: int) -> None:
    bad = [width for width in block_out_channels if width % norm_num_groups]
    if bad:
        raise ValueError(
            f"norm_num_groups: every width in block_out_channels {tuple(block_out_channels)} must be a "
            f"multiple of it, got {norm_num_groups} (not dividing {bad})"
        )


# ----------------------------------------------------------------------------- the model
@dataclass
class MoMapLatents:
    """A batch of MoMaps in latent form, with what ``decode_momap`` needs to get metres back."""

    latents: Tensor  # (B, latent_channels, H/8, W/8), already times config.scaling_factor
    center: Tensor  # (B, 3) float32: normalisation centre (metres, reference camera frame)
    scale: Tensor  # (B,) float32: scene scale (median reference depth, metres)


class MoMapVAE(AutoencoderKL):
    """``AutoencoderKL`` over MoMaps in model layout ``(B, 3T, H, W)`` (paper §3.3.2).

    The config is ``AutoencoderKL``'s with MoMap defaults (``in_channels = out_channels = 3T``,
    ``latent_channels = 32``, four blocks so latents are ``H/8 x W/8``). ``save_pretrained`` /
    ``from_pretrained`` work as for any diffusers model; ``from_pretrained`` also accepts a
    bundled checkpoint name or a hub id (``momaplib.checkpoints.resolve_checkpoint``).
    Build one with ``MoMapVAE.build(num_frames)`` or ``inflate_from_image_vae``.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 96,
        out_channels: int = 96,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4,
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 4,
        block_out_channels: tuple[int, ...] = BLOCK_OUT_CHANNELS,
        layers_per_block: int = LAYERS_PER_BLOCK,
        act_fn: str = "silu",
        latent_channels: int = LATENT_CHANNELS,
        norm_num_groups: int = 32,
        sample_size: int = 128,
        scaling_factor: float = 1.0,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = False,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
    ):
        if in_channels != out_channels or in_channels % 3 or in_channels < 3:
            raise ValueError(
                f"in_channels/out_channels: expected equal multiples of 3 (3T), got {in_channels} and "
                f"{out_channels}"
            )
        _check_downsampling(tuple(block_out_channels))
        _check_groups(tuple(block_out_channels), norm_num_groups)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            force_upcast=force_upcast,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )

    @classmethod
    def build(
        cls,
        num_frames: int,
        latent_channels: int = LATENT_CHANNELS,
        block_out_channels: tuple[int, ...] = BLOCK_OUT_CHANNELS,
        layers_per_block: int = LAYERS_PER_BLOCK,
        norm_num_groups: int = 32,
        sample_size: int = 128,
        mid_block_add_attention: bool = True,
    ) -> MoMapVAE:
        """Returns a randomly initialised MoMap VAE for ``num_frames`` frames (``3 * num_frames`` channels).

        ``block_out_channels`` needs exactly 4 entries (3 down-samplings: latents are H/8 x W/8),
        each a multiple of ``norm_num_groups``.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
        if latent_channels < 1:
            raise ValueError(f"latent_channels: expected >= 1, got {latent_channels}")
        blocks = len(block_out_channels)
        return cls(
            in_channels=3 * num_frames,
            out_channels=3 * num_frames,
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            mid_block_add_attention=mid_block_add_attention,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> MoMapVAE:
        """Returns the model saved in a folder, a bundled checkpoint (e.g. ``"momap-vae"``) or a hub id."""
        path = resolve_checkpoint(
            pretrained_model_name_or_path, subfolder=kwargs.get("subfolder"), revision=kwargs.get("revision")
        )
        return super().from_pretrained(path, **kwargs)

    @property
    def num_frames(self) -> int:
        """Frames T of the MoMaps this model encodes (``in_channels // 3``)."""
        return self.config.in_channels // 3

    # ------------------------------------------------------------------ model layout
    def _check_channels(self, name: str, x: Tensor) -> None:
        C = self.config.in_channels
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != C:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{name}: expected (B, 3T, H, W) = (B, {C}, H, W) with T = {C // 3}, got {shape}"
            )
        if x.shape[-2] % DOWNSAMPLE or x.shape[-1] % DOWNSAMPLE:
            raise ValueError(
                f"{name}: H and W must be multiples of {DOWNSAMPLE} (latents are H/{DOWNSAMPLE} x "
                f"W/{DOWNSAMPLE}), got H, W = {tuple(x.shape[-2:])}"
            )

    def encode_channels(
        self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Returns latents (B, latent_channels, H/8, W/8) times ``config.scaling_factor``.

        ``x`` is (B, 3T, H, W) in model range (``momaplib.data.model_inputs``' ``momap``).
        ``sample=False`` takes the posterior mean, ``True`` a sample (drawn with ``generator``).
        """
        self._check_channels("x", x)
        posterior = self.encode(x.to(self.dtype)).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mean
        shift = self.config.shift_factor or 0.0
        return (latents - shift) * self.config.scaling_factor

    def decode_channels(self, latents: Tensor) -> Tensor:
        """Returns MoMaps (B, 3T, H, W) in model range from latents of ``encode_channels``."""
        L = self.config.latent_channels
        if not isinstance(latents, Tensor) or latents.ndim != 4 or latents.shape[1] != L:
            shape = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
            raise ValueError(f"latents: expected (B, {L}, H/8, W/8), got {shape}")
        shift = self.config.shift_factor or 0.0
        return self.decode(latents.to(self.dtype) / self.config.scaling_factor + shift).sample

    # ------------------------------------------------------------------ metric MoMaps
    def encode_momap(
        self,
        xyz: Tensor,
        valid: Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> MoMapLatents:
        """Returns the ``MoMapLatents`` of trajectories ``xyz`` (B, T, H, W, 3) in metres.

        ``valid`` (B, H, W) bool marks pixels with a trajectory; normalisation is
        ``momaplib.momap.normalization_stats`` of the reference frame, and invalid pixels are set
        to 0 (the scene centre) as in ``momaplib.data.model_inputs``.
        """
        T = self.num_frames
        if not isinstance(xyz, Tensor) or xyz.ndim != 5 or xyz.shape[1] != T or xyz.shape[-1] != 3:
            shape = tuple(xyz.shape) if isinstance(xyz, Tensor) else type(xyz).__name__
            raise ValueError(f"xyz: expected (B, T, H, W, 3) with T = {T}, got {shape}")
        B, _, H, W, _ = xyz.shape
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool or tuple(valid.shape) != (B, H, W):
            shape = tuple(valid.shape) if isinstance(valid, Tensor) else type(valid).__name__
            raise ValueError(f"valid: expected (B, H, W) = {(B, H, W)} bool, got {shape}")
        xyz = xyz.float()
        center, scale = normalization_stats(xyz[:, 0], valid)
        normalized = torch.where(valid[:, None, :, :, None], normalize_xyz(xyz, center, scale), 0.0)
        latents = self.encode_channels(xyz_to_channels(normalized), sample=sample, generator=generator)
        return MoMapLatents(latents, center.float(), scale.float())

    def decode_momap(self, latents: Tensor, center: Tensor, scale: Tensor) -> Tensor:
        """Returns trajectories (B, T, H, W, 3) float32 in metres from latents and their normalisation."""
        B = latents.shape[0] if isinstance(latents, Tensor) else None
        if not isinstance(center, Tensor) or tuple(center.shape) != (B, 3):
            raise ValueError(f"center: expected (B, 3) = ({B}, 3), got {getattr(center, 'shape', center)}")
        if not isinstance(scale, Tensor) or tuple(scale.shape) != (B,):
            raise ValueError(f"scale: expected (B,) = ({B},), got {getattr(scale, 'shape', scale)}")
        channels = self.decode_channels(latents).float()
        return denormalize_xyz(channels_to_xyz(channels), center.float(), scale.float())


# ----------------------------------------------------------------------------- image VAE and inflation
def build_image_vae(
    block_out_channels: tuple[int, ...] = BLOCK_OUT_CHANNELS,
    layers_per_block: int = LAYERS_PER_BLOCK,
    latent_channels: int = 4,
    norm_num_groups: int = 32,
    sample_size: int = 128,
    mid_block_add_attention: bool = True,
) -> AutoencoderKL:
    """Returns a random RGB ``AutoencoderKL`` of Stable Diffusion's family (3 -> 4 channels, /8).

    SD's VAE is this with ``block_out_channels = (128, 256, 512, 512)`` and ``layers_per_block = 2``.
    """
    _check_downsampling(tuple(block_out_channels))
    _check_groups(tuple(block_out_channels), norm_num_groups)
    blocks = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=1.0,
        force_upcast=False,
        mid_block_add_attention=mid_block_add_attention,
    )


def load_image_vae(name_or_path: str | os.PathLike, **kwargs: Any) -> AutoencoderKL:
    """Returns an ``AutoencoderKL`` from a folder, a bundled name (``"image-vae"``) or a hub id.

    For a Stable Diffusion repository pass ``subfolder="vae"``; ``kwargs`` go to ``from_pretrained``.
    """
    path = resolve_checkpoint(
        name_or_path, subfolder=kwargs.get("subfolder"), revision=kwargs.get("revision")
    )
    return AutoencoderKL.from_pretrained(path, **kwargs)


def _conv(module: torch.nn.Conv2d | None, channels: int) -> tuple[Tensor, Tensor]:
    """Returns (weight (C, C), bias (C,)) of a 1x1 conv; an absent conv is the identity."""
    if module is None:
        return torch.eye(channels), torch.zeros(channels)
    return module.weight.detach()[:, :, 0, 0], module.bias.detach()


@torch.no_grad()
def inflate_from_image_vae(
    image_vae: AutoencoderKL,
    num_frames: int,
    latent_channels: int = LATENT_CHANNELS,
    extra_logvar: float = 0.0,
    seed: int = 0,
) -> MoMapVAE:
    r"""Returns a ``MoMapVAE`` that acts, on time-constant MoMaps, exactly like ``image_vae`` (paper §3.3.2).

    Let the image VAE map ``X`` (3, H, W) to latent moments ``(mu, log sigma^2)`` with ``l``
    channels each, and decode ``z`` to ``D(z)`` (3, H, W). Write the MoMap's channel ``3t + c``
    as ``x_{t,c}``, ``T`` = ``num_frames``, ``L`` = ``latent_channels`` (>= ``l``). Only the six
    layers that touch channel counts change; every other weight is copied:

    1. ``encoder.conv_in`` (3 -> C0 becomes 3T -> C0): ``W'[:, 3t + c] = W[:, c] / T``, same bias.
       By linearity ``conv'(x) = conv(mean_t x_t)``: the encoder sees the *time-average* XYZ map,
       and for ``x_t = X`` for all t exactly ``conv(X)``. The encoder body is copied, so its
       features equal the image VAE's.
    2. ``encoder.conv_out`` (-> 2l becomes -> 2L) and ``quant_conv`` (2l -> 2l becomes 2L -> 2L):
       the moments are laid out ``[mean (L) | logvar (L)]``; image moment ``j`` goes to slot
       ``p(j) = j`` for means and ``L + j - l`` for log-variances. ``conv_out'`` rows ``p(j)`` are
       the image rows ``j`` (other rows keep their fresh random init), and
       ``quant'[p(i), p(j)] = quant[i, j]`` with zeros elsewhere in those rows, so latent channels
       ``0..l-1`` have exactly the image VAE's mean and log-variance. The extra ``L - l`` channels
       get zero weights, mean 0 and log-variance ``extra_logvar`` (0: the prior N(0, 1), so they
       add no KL and, when sampled, pure noise that step 3 ignores).
    3. ``post_quant_conv`` (l -> l becomes L -> L): rows ``0..l-1`` are the image rows reading
       channels ``0..l-1`` only (zeros for the extra channels); rows ``l..L-1`` keep their random
       init. ``decoder.conv_in`` (l -> C becomes L -> C): the image weights on inputs ``0..l-1``,
       zeros on the others. So the decoder's features depend only on ``z[:l]`` and equal the
       image decoder's; the random rows make gradients flow into the new channels from the
       first fine-tuning step (the zero columns then grow, like LoRA's zero-initialised B).
    4. ``decoder.conv_out`` (C0 -> 3 becomes C0 -> 3T): ``W'[3t + c] = W[c]``, bias tiled: every
       frame is the image decoder's output.

    Hence for ``x_t = X``, decoding the posterior mean gives ``D(mu(X))`` at every t (up to float
    rounding of the 1/T sum), and sampling gives the image VAE's posterior in channels ``0..l-1``.
    For a moving MoMap the initial model reconstructs the time-average at every frame; fine-tuning
    (``momap train-vae``) teaches it the motion. Scaling: the result keeps the image VAE's
    ``scaling_factor`` (the extra channels are 0 in the mean), ``momap train-vae`` re-estimates it.
    ``seed`` fixes the random init of the free entries. ``image_vae`` may be SD's (``subfolder="vae"``
    of a Stable Diffusion repository) or the kit's ``image-vae``; it must have 3 input and output
    channels and 3 down-samplings.
    """
    config = image_vae.config
    if config.in_channels != 3 or config.out_channels != 3:
        raise ValueError(
            "image_vae: expected an RGB AutoencoderKL (3 in/out channels), got "
            f"in_channels={config.in_channels}, "
            f"out_channels={config.out_channels}"
        )
    l, L, T = config.latent_channels, latent_channels, num_frames
    if L < l:
        raise ValueError(f"latent_channels: expected >= the image VAE's {l}, got {L}")
    if T < 1:
        raise ValueError(f"num_frames: expected >= 1, got {T}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = MoMapVAE(
            in_channels=3 * T,
            out_channels=3 * T,
            down_block_types=tuple(config.down_block_types),
            up_block_types=tuple(config.up_block_types),
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            act_fn=config.act_fn,
            latent_channels=L,
            norm_num_groups=config.norm_num_groups,
            sample_size=config.sample_size,
            scaling_factor=config.scaling_factor,
            force_upcast=False,
            mid_block_add_attention=config.get("mid_block_add_attention", True),
        )
    source = {key: value.detach().float() for key, value in image_vae.state_dict().items()}
    target = {key: value.clone() for key, value in vae.state_dict().items()}
    special = {
        "encoder.conv_in.weight",
        "encoder.conv_out.weight",
        "encoder.conv_out.bias",
        "quant_conv.weight",
        "quant_conv.bias",
        "post_quant_conv.weight",
        "post_quant_conv.bias",
        "decoder.conv_in.weight",
        "decoder.conv_out.weight",
        "decoder.conv_out.bias",
    }
    for key in target:
        if key in special:
            continue
        if key not in source or source[key].shape != target[key].shape:
            raise ValueError(
                f"image_vae: weight {key!r} missing or of another shape; not an SD-style AutoencoderKL"
            )
        target[key] = source[key]

    # 1. encoder.conv_in sees the time-average
    target["encoder.conv_in.weight"] = source["encoder.conv_in.weight"].repeat(1, T, 1, 1) / T
    # 2. moments: image slot j -> p(j)
    slots = torch.cat([torch.arange(l), L + torch.arange(l)])
    target["encoder.conv_out.weight"][slots] = source["encoder.conv_out.weight"]
    target["encoder.conv_out.bias"][slots] = source["encoder.conv_out.bias"]
    quant, quant_bias = _conv(image_vae.quant_conv, 2 * l)
    weight = torch.zeros(2 * L, 2 * L)
    weight[slots[:, None], slots[None, :]] = quant.float()
    bias = torch.zeros(2 * L)
    bias[slots] = quant_bias.float()
    bias[L + l :] = extra_logvar
    target["quant_conv.weight"], target["quant_conv.bias"] = weight[:, :, None, None], bias
    # 3. the decoder reads latent channels 0..l-1 only
    post, post_bias = _conv(image_vae.post_quant_conv, l)
    target["post_quant_conv.weight"][:l] = 0.0
    target["post_quant_conv.weight"][:l, :l, 0, 0] = post.float()
    target["post_quant_conv.bias"][:l] = post_bias.float()
    target["decoder.conv_in.weight"] = torch.zeros_like(target["decoder.conv_in.weight"])
    target["decoder.conv_in.weight"][:, :l] = source["decoder.conv_in.weight"]
    # 4. every frame gets the image decoder's output
    target["decoder.conv_out.weight"] = source["decoder.conv_out.weight"].repeat(T, 1, 1, 1)
    target["decoder.conv_out.bias"] = source["decoder.conv_out.bias"].repeat(T)
    vae.load_state_dict(target)
    return vae
