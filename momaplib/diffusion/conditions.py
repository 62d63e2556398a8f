"""Which conditions a MoMap UNet reads: conditions as configuration, not constants.

Paper §3.3.3 conditions the UNet on the reference RGB, the instance map and the XYZ map (each a
4-channel latent of the frozen image VAE) and on text (cross-attention); §4.4 ablates XYZ and the
instance map, and §3.4.2 replaces the text by the motion DSL. A pipeline names its conditions in
``model_index.json`` (``conditions``), so one UNet class and one sampling loop serve all of them.

Channels after the noisy MoMap latent, in this order (names not used are left out):

==============  ========  ==========================================================================
name            channels  what
==============  ========  ==========================================================================
``rgb``         4         reference frame through the image VAE
``instance``    4         instance map in random colours through the image VAE
``xyz``         4         normalised reference XYZ map through the image VAE
``grounding``   1         the grounding map of the instance the prompt names (needs ``text``)
``dsl``         3 x n     the motion DSL's pixel form (``momaplib.control.MotionDSL.to_pixels``),
                          averaged over each latent cell; ``n`` windows (4 for T = 32, window 8)
``text``        0         prompt tokens through cross-attention; without it the UNet always gets
                          the empty prompt's tokens, i.e. no text
==============  ========  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: conditions that are image latents of the frozen image VAE, in channel order
IMAGE_CONDITIONS = ("rgb", "instance", "xyz")
#: every condition name, in channel order
CONDITIONS = (*IMAGE_CONDITIONS, "grounding", "dsl", "text")
#: the paper's text-conditioned model (and every pipeline saved before conditions were configurable)
DEFAULT_CONDITIONS = ("rgb", "instance", "xyz", "text")
#: channels of each image-latent condition
IMAGE_LATENT_CHANNELS = 4


def check_conditions(conditions: Sequence[str] | str) -> tuple[str, ...]:
    """Returns the condition names in channel order; raises ``ValueError`` naming what is wrong.

    Accepts a sequence or a comma-separated string ("rgb,instance,xyz,dsl"). Unknown or repeated
    names, an empty list and ``grounding`` without ``text`` are refused.
    """
    if isinstance(conditions, str):
        conditions = [name.strip() for name in conditions.split(",") if name.strip()]
    if not isinstance(conditions, Sequence) or not all(isinstance(name, str) for name in conditions):
        raise TypeError(f"conditions: expected names (str), got {conditions!r}")
    unknown = [name for name in conditions if name not in CONDITIONS]
    if unknown:
        raise ValueError(f"conditions: unknown {unknown}; expected names from {list(CONDITIONS)}")
    repeated = sorted({name for name in conditions if list(conditions).count(name) > 1})
    if repeated:
        raise ValueError(f"conditions: {repeated} named more than once")
    if not conditions:
        raise ValueError(f"conditions: expected at least one of {list(CONDITIONS)}")
    if "grounding" in conditions and "text" not in conditions:
        raise ValueError("conditions: 'grounding' is the map of the instance a prompt names; it needs 'text'")
    return tuple(name for name in CONDITIONS if name in conditions)


def condition_channels(conditions: Sequence[str], dsl_windows: int = 0) -> int:
    """Returns the UNet input channels the conditions take (``dsl_windows`` windows of the DSL)."""
    conditions = check_conditions(conditions)
    if "dsl" in conditions and dsl_windows < 1:
        raise ValueError(f"dsl_windows: the 'dsl' condition needs >= 1 window, got {dsl_windows}")
    image = IMAGE_LATENT_CHANNELS * sum(name in IMAGE_CONDITIONS for name in conditions)
    return image + ("grounding" in conditions) + (3 * dsl_windows if "dsl" in conditions else 0)


def select_image_latents(latents: Tensor, conditions: Sequence[str]) -> Tensor:
    """Returns the image-latent channels of ``conditions`` from the (B, 12, h, w) [rgb | instance | xyz]
    condition latents (``momaplib.diffusion.conditioning.condition_latents``)."""
    conditions = check_conditions(conditions)
    width = IMAGE_LATENT_CHANNELS
    if latents.ndim != 4 or latents.shape[1] != width * len(IMAGE_CONDITIONS):
        expected = width * len(IMAGE_CONDITIONS)
        raise ValueError(f"condition latents: expected (B, {expected}, h, w), got {tuple(latents.shape)}")
    keep = [i for i, name in enumerate(IMAGE_CONDITIONS) if name in conditions]
    if len(keep) == len(IMAGE_CONDITIONS):
        return latents
    return torch.cat([latents[:, i * width : (i + 1) * width] for i in keep], dim=1)


def dsl_latent(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """Returns the (B, 3n, h, w) DSL condition: the pixel form (B, 3n, H, W) in [-1, 1] averaged over
    each latent cell (a cell on a patch border gets the area-weighted mean of its patches' flags)."""
    if pixels.ndim != 4 or pixels.shape[1] % 3:
        raise ValueError(f"dsl pixels: expected (B, 3 * n_windows, H, W), got {tuple(pixels.shape)}")
    return F.adaptive_avg_pool2d(pixels.float(), size)
