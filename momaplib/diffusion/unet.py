"""The denoising UNet of paper §3.3.3: a diffusers ``UNet2DConditionModel`` over MoMap latents.

Input channels, in this order: the noisy MoMap latent (``latent_channels``, 32 by default), then
the three condition latents from the frozen image VAE (4 each): reference RGB, instance map in
random colours, normalised XYZ map; a UNet trained with prompt grounding has one more, the
grounding map of ``momaplib.diffusion.grounding``. Output: the ``latent_channels`` noise (or v)
prediction. Text enters through cross-attention.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import UNet2DConditionModel

#: the order of the condition latents after the noisy MoMap latent
CONDITION_NAMES = ("rgb", "instance", "xyz")
#: condition channels: 4 per image latent
CONDITION_CHANNELS = 4 * len(CONDITION_NAMES)
#: channels of the prompt-grounding map that follows the condition latents when used
GROUNDING_CHANNELS = 1


def build_unet(
    latent_channels: int = 32,
    condition_channels: int = 12,
    cross_attention_dim: int = 384,
    block_out_channels: tuple[int, ...] = (128, 256, 256),
    layers_per_block: int = 2,
    attention_head_dim: int = 8,
    norm_num_groups: int = 32,
    sample_size: int = 16,
) -> UNet2DConditionModel:
    """Returns a randomly initialised conditional UNet sized for MoMap latents.

    Every level has cross-attention to the text tokens except the last (highest-resolution
    levels are cheap at 16x16 latents, so all but the innermost down level attend).
    """
    levels = len(block_out_channels)
    down = ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels + condition_channels,
        out_channels=latent_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def inflate_unet(
    image_unet: UNet2DConditionModel,
    in_channels: int,
    out_channels: int,
    image_slot: int | None = None,
    text_dim: int | None = None,
    noisy_input: Literal["zero", "duplicate"] = "zero",
) -> UNet2DConditionModel:
    """Returns a copy of ``image_unet`` with ``conv_in``/``conv_out`` re-shaped to MoMap channels.

    Every weight except ``conv_in.weight`` and ``conv_out.weight``/``bias`` is copied unchanged
    (the time embedding, all resnets, attention, cross-attention and norms). What the new
    convolutions preserve:

    - ``conv_in``: the image UNet's ``conv_in`` kernel is placed on the input channels
      ``image_slot : image_slot + c_img`` (default: the RGB condition latent, right after the
      ``out_channels`` noisy MoMap latent channels); all other input channels start at zero.
      So, at initialisation, the inflated UNet computes exactly the image UNet's function of the
      RGB latent: every internal feature map equals the image UNet's on that latent.
    - ``noisy_input="duplicate"`` (Marigold's recipe): the kernel is also placed on the noisy MoMap
      latent channels, channel ``k`` taking the image channel ``k mod c_img``, and every copy
      (those and the RGB slot's) is divided by their number, ``out_channels / c_img + 1``. So the
      pretrained first layer reads the noisy latent from the first step instead of learning to:
      with the noisy latent equal to the RGB latent repeated (channel ``k`` = RGB channel
      ``k mod c_img``) the inflated UNet again computes the image UNet's function of it.
    - ``conv_out``: output channel ``k`` copies the image UNet's output channel ``k mod c_img``
      (bias too), so each group of ``c_img`` MoMap latent channels starts as the image UNet's
      prediction: the pretrained output head is reused rather than re-learnt.

    - ``text_dim``: the width of the text encoder the MoMap UNet will read. When it differs from the
      image UNet's ``cross_attention_dim`` (e.g. MiniLM's 384 against SD 1.5's CLIP 768), the UNet
      gets diffusers' ``encoder_hid_proj`` (``encoder_hid_dim_type="text_proj"``): a new linear map
      from ``text_dim`` to ``cross_attention_dim``, randomly initialised, in front of the kept
      cross-attention. Training learns it; every other weight is still copied.

    ``tests/test_diffusion.py`` checks these statements and that every other weight is kept.
    """
    config = dict(image_unet.config)
    old_in, old_out = config["in_channels"], config["out_channels"]
    image_slot = out_channels if image_slot is None else image_slot
    if noisy_input not in ("zero", "duplicate"):
        raise ValueError(f"noisy_input: expected 'zero' or 'duplicate', got {noisy_input!r}")
    if image_slot + old_in > in_channels:
        raise ValueError(
            f"inflate_unet: image_slot {image_slot} + {old_in} image channels "
            f"exceed in_channels {in_channels}"
        )
    config.update(in_channels=in_channels, out_channels=out_channels)
    new = set()
    if text_dim is not None and text_dim != config["cross_attention_dim"]:
        if config.get("encoder_hid_dim_type") is not None:
            raise ValueError(
                f"image_unet: it already projects its text ({config['encoder_hid_dim_type']}); "
                f"cannot add a {text_dim}-d projection"
            )
        config.update(encoder_hid_dim=text_dim, encoder_hid_dim_type="text_proj")
        new = {"encoder_hid_proj.weight", "encoder_hid_proj.bias"}
    unet = UNet2DConditionModel.from_config(config)
    state = image_unet.state_dict()
    resized = {"conv_in.weight", "conv_out.weight", "conv_out.bias"}
    missing, unexpected = unet.load_state_dict(
        {k: v for k, v in state.items() if k not in resized}, strict=False
    )
    if set(missing) != resized | new or unexpected:
        raise RuntimeError(f"inflate_unet: unexpected state mismatch {missing} / {unexpected}")
    with torch.no_grad():
        unet.conv_in.weight.zero_()
        kernel = image_unet.conv_in.weight
        if noisy_input == "duplicate":
            kernel = kernel / (out_channels / old_in + 1)
            unet.conv_in.weight[:, :out_channels] = kernel[:, torch.arange(out_channels) % old_in]
        unet.conv_in.weight[:, image_slot : image_slot + old_in] = kernel
        unet.conv_in.bias.copy_(image_unet.conv_in.bias)
        rows = torch.arange(out_channels) % old_out
        unet.conv_out.weight.copy_(image_unet.conv_out.weight[rows])
        unet.conv_out.bias.copy_(image_unet.conv_out.bias[rows])
    return unet


def add_input_channels(unet: UNet2DConditionModel, count: int) -> UNet2DConditionModel:
    """Returns a copy of ``unet`` that takes ``count`` more input channels, appended last.

    The new ``conv_in`` columns start at zero and every weight is copied, so the new UNet
    computes exactly the old one's function whatever the new channels hold; training then
    learns what they add (as ``inflate_unet`` does for the condition latents, and as ControlNet
    and InstructPix2Pix add inputs to a pretrained UNet).
    """
    if count < 1:
        raise ValueError(f"count: expected >= 1 new input channels, got {count}")
    config = dict(unet.config)
    old_in = config["in_channels"]
    config["in_channels"] = old_in + count
    wider = UNet2DConditionModel.from_config(config).to(unet.device)
    if unet.dtype != wider.dtype:
        wider = wider.to(unet.dtype)
    state = dict(unet.state_dict())
    weight = state.pop("conv_in.weight")
    missing, unexpected = wider.load_state_dict(state, strict=False)
    if missing != ["conv_in.weight"] or unexpected:
        raise RuntimeError(f"add_input_channels: unexpected state mismatch {missing} / {unexpected}")
    with torch.no_grad():
        wider.conv_in.weight.zero_()
        wider.conv_in.weight[:, :old_in] = weight
    return wider


def inflation_report(image_unet: UNet2DConditionModel, unet: UNet2DConditionModel) -> list[dict]:
    """Returns one row per parameter of ``unet`` saying what the inflation did with it.

    Each row: ``name``, ``shape`` (tuple), ``status``, ``parameters`` (count) where ``status`` is
    ``"kept"`` (equal to the image UNet's tensor of the same name), ``"re-mapped"`` (same name, new
    shape: ``conv_in``'s new condition channels, ``conv_out``'s MoMap latent channels), ``"new"`` (no
    counterpart, e.g. the text projection) or ``"changed"`` (same name and shape, other values: the
    UNet was trained after the inflation).
    """
    before = image_unet.state_dict()
    rows = []
    for name, value in unet.state_dict().items():
        old = before.get(name)
        if old is None:
            status = "new"
        elif old.shape != value.shape:
            status = "re-mapped"
        elif torch.equal(old.to(value.device, value.dtype), value):
            status = "kept"
        else:
            status = "changed"
        rows.append(
            {"name": name, "shape": tuple(value.shape), "status": status, "parameters": value.numel()}
        )
    return rows
