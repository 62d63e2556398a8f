"""Condition latents of paper §3.3.3: RGB, instance map and XYZ map through the frozen image VAE.

Each condition is a 3-channel image in roughly [-1, 1]; the frozen image VAE (an RGB
``AutoencoderKL``, Stable Diffusion's or the kit's own) turns each into a 4-channel latent at
1/8 resolution, and the three latents are concatenated after the noisy MoMap latent.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from momaplib.geometry import nearest_known_pixel

#: Ids up to this many get one palette slot per id value (the colours the kit always drew); maps with
#: larger ids are coloured by the rank of each id among the ids present.
MAX_PALETTE = 65536


def instance_colors(instance: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Returns (B, 3, H, W) in [-1, 1]: instance ids (B, H, W) painted in random colours.

    Each sample gets its own random palette (ids are arbitrary labels, so the model must not
    learn meaning from a colour); the palette is drawn on the generator's device.
    """
    if instance.dtype.is_floating_point or instance.dtype == torch.bool:
        raise TypeError(f"instance: expected an integer id map (B, H, W), got dtype {instance.dtype}")
    if instance.ndim != 3:
        raise ValueError(f"instance: expected (B, H, W), got shape {tuple(instance.shape)}")
    if bool((instance < 0).any()):
        raise ValueError("instance: ids must be >= 0 (0 = background)")
    num_ids = int(instance.max()) + 1
    if num_ids > MAX_PALETTE:
        # large ids (a 32-bit id of 2^31 - 1 would need a 25 GB palette): colour them by rank instead,
        # which draws the same kind of palette (one random colour per id) in the memory of the ids seen
        _, instance = torch.unique(instance, return_inverse=True)
        num_ids = int(instance.max()) + 1
    device = generator.device if generator is not None else torch.device("cpu")
    palette = torch.rand(instance.shape[0], num_ids, 3, generator=generator, device=device) * 2 - 1
    palette = palette.to(instance.device)
    colours = torch.gather(palette, 1, instance.flatten(1)[..., None].expand(-1, -1, 3).long())
    return colours.reshape(*instance.shape, 3).permute(0, 3, 1, 2).contiguous()


def fill_holes_nearest(x: Tensor, known: Tensor) -> Tensor:
    """Returns ``x`` (B, C, H, W) with every pixel where ``known`` (B, H, W) is False set to the value
    of its nearest known pixel (``momaplib.geometry.nearest_known_pixel``, on the CPU). Items with every
    pixel known or none are returned as they are.

    The XYZ condition's holes (pixels without depth) then look like the surface around them
    instead of a point at the scene centre; training (``momaplib.diffusion.latents``) and the
    pipeline (``fill_condition_holes``) fill them alike.
    """
    if x.ndim != 4 or known.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"fill_holes_nearest: expected x (B, C, H, W) and known (B, H, W), got "
                         f"{tuple(x.shape)} and {tuple(known.shape)}")  # fmt: skip
    known_np = known.detach().cpu().numpy().astype(bool)
    holes = [b for b in range(len(known_np)) if 0 < known_np[b].sum() < known_np[b].size]
    if not holes:
        return x
    out = x.clone()
    for b in holes:
        rows, cols = (torch.from_numpy(i).to(x.device) for i in nearest_known_pixel(known_np[b]))
        out[b] = x[b][:, rows, cols]
    return out


def encode_image(image_vae: AutoencoderKL, images: Tensor) -> Tensor:
    """Returns (B, 4, H/8, W/8) scaled posterior means of (B, 3, H, W) images in [-1, 1]."""
    dtype = next(image_vae.parameters()).dtype
    mean = image_vae.encode(images.to(dtype)).latent_dist.mean
    return mean * image_vae.config.scaling_factor


@torch.no_grad()
def condition_latents(
    image_vae: AutoencoderKL,
    rgb: Tensor,
    instance: Tensor,
    xyz0: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Returns the (B, 12, H/8, W/8) condition latents [rgb | instance colours | xyz].

    ``rgb`` (B, 3, H, W) in [-1, 1]; ``instance`` (B, H, W) integer ids; ``xyz0`` (B, 3, H, W)
    the normalised reference XYZ map (``momaplib.data.model_inputs``'s ``xyz0``).
    """
    if rgb.shape[-2:] != xyz0.shape[-2:] or rgb.shape[-2:] != instance.shape[-2:]:
        raise ValueError(
            f"conditions: rgb {tuple(rgb.shape)}, instance {tuple(instance.shape)} and xyz "
            f"{tuple(xyz0.shape)} must share (H, W)"
        )
    images = torch.cat([rgb, instance_colors(instance, generator).to(rgb), xyz0.to(rgb)])
    latents = encode_image(image_vae, images)
    return torch.cat(latents.chunk(3), dim=1)
