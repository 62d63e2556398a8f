"""From clips and renders to the completion model's tensors, and back to frames.

A training item is one clip: its GT MoMap rendered into the clip's own cameras (the partial video),
the true frames and the reference frame, all as scaled image-VAE latents, plus the render's
coverage at latent resolution. The model sees the partial render only; what it must produce is
the true frame, so it learns to fill what came into view and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.render import RenderOutput, render_momap
from momaplib.sim.clip import Clip
from momaplib.training.batches import InMemoryDataset

#: image-VAE downsampling factor
LATENT_FACTOR = 8


def images_to_model(images: np.ndarray | Tensor) -> Tensor:
    """Returns (N, 3, H, W) in [-1, 1] from (N, H, W, 3) uint8 or float in [0, 1]."""
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    return images.permute(0, 3, 1, 2).float() * 2 - 1


def model_to_images(images: Tensor) -> np.ndarray:
    """Returns (N, H, W, 3) float32 in [0, 1] from (N, 3, H, W) in [-1, 1]."""
    return ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


def partial_images(rgb: np.ndarray | Tensor, alpha: np.ndarray | Tensor) -> Tensor:
    """Returns partial renders (N, 3, H, W) in [-1, 1] with holes painted grey (0): ``rgb``
    (N, H, W, 3) in [0, 1] (un-premultiplied) blended with grey by ``alpha`` (N, H, W)."""
    rgb = torch.as_tensor(rgb).float().permute(0, 3, 1, 2) * 2 - 1
    alpha = torch.as_tensor(alpha).float()[:, None]
    return rgb * alpha


def pooled_coverage(alpha: np.ndarray | Tensor) -> Tensor:
    """Returns (N, 1, H/8, W/8): the mean render coverage over each latent cell."""
    alpha = torch.as_tensor(alpha).float()[:, None]
    return F.avg_pool2d(alpha, LATENT_FACTOR)


@torch.no_grad()
def encode_images(image_vae, images: Tensor, scale: float, batch_size: int = 64) -> Tensor:
    """Returns scaled latent means (N, 4, H/8, W/8) of images (N, 3, H, W) in [-1, 1]."""
    device, dtype = image_vae.device, image_vae.dtype
    parts = [
        image_vae.encode(images[i : i + batch_size].to(device, dtype)).latent_dist.mean.float() * scale
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts)


@torch.no_grad()
def decode_latents(image_vae, latents: Tensor, scale: float, batch_size: int = 64) -> Tensor:
    """Returns images (N, 3, H, W) in [-1, 1] of scaled latents (N, 4, h, w)."""
    device, dtype = image_vae.device, image_vae.dtype
    parts = [
        image_vae.decode(latents[i : i + batch_size].to(device, dtype) / scale).sample.float()
        for i in range(0, len(latents), batch_size)
    ]
    return torch.cat(parts)


def composite(partial_rgb: np.ndarray, alpha: np.ndarray, completed: np.ndarray) -> np.ndarray:
    """Returns frames (N, H, W, 3) in [0, 1]: the render where it covers the pixel, the completion
    in the holes, blended over alpha 0.25..0.75 (the render is exact where it is opaque, while the
    completion goes through the image VAE)."""
    weight = np.clip(2 * np.asarray(alpha, np.float32) - 0.5, 0, 1)[..., None]
    return weight * partial_rgb + (1 - weight) * completed


def render_own_cameras(clip: Clip, backend: str = "auto", device: str | torch.device = "cpu") -> RenderOutput:
    """Returns the clip's GT MoMap rendered into the clip's own cameras (the partial video)."""
    return render_momap(clip.momap, backend=backend, device=device)


def render_tensors(
    render: RenderOutput, reference_rgb: np.ndarray, image_vae, scale: float
) -> dict[str, Tensor]:
    """Returns the model inputs of a partial render: ``partial`` (T, 4, h, w) scaled latents,
    ``coverage`` (T, 1, h, w) and ``reference`` (4, h, w), the latent of ``reference_rgb`` (H, W, 3)."""
    partial = encode_images(image_vae, partial_images(render.rgb, render.alpha), scale)
    reference = encode_images(image_vae, images_to_model(np.asarray(reference_rgb)[None]), scale)[0]
    return {"partial": partial.cpu(), "coverage": pooled_coverage(render.alpha), "reference": reference.cpu()}


def clip_tensors(
    clip: Clip, image_vae, scale: float, backend: str = "auto", device: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    """Returns one training item: ``render_tensors`` of the clip's partial video plus ``target``
    (T, 4, h, w), the scaled latents of the true frames."""
    render = render_own_cameras(clip, backend, device)
    item = render_tensors(render, clip.frames[0], image_vae, scale)
    item["target"] = encode_images(image_vae, images_to_model(clip.frames), scale).cpu()
    return item


def video_dataset(
    clips: Iterable[Clip],
    image_vae,
    scale: float,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    total: int | None = None,
    progress: bool = True,
) -> InMemoryDataset:
    """Returns the training items of ``clips`` stacked in an ``InMemoryDataset`` (fp16 latents)."""
    items = [
        clip_tensors(clip, image_vae, scale, backend, device)
        for clip in tqdm(clips, total=total, desc="render + encode clips", unit="clip", disable=not progress)
    ]
    if not items:
        raise ValueError("clips: expected at least one clip to build the video dataset from")
    dataset = InMemoryDataset({key: torch.stack([item[key] for item in items]).half() for key in items[0]})
    dataset.scale = scale  # the latent scale the items were encoded with
    return dataset


def frame_windows(num_items: int, num_frames: int, window: int, generator: torch.Generator) -> Tensor:
    """Returns (num_items, window) sorted frame indices: ``window`` frames at a random stride
    (1, 2 or 4, as far as the clip allows) from a random start, so items show slow and fast change."""
    if window > num_frames:
        raise ValueError(f"frames_per_item: expected at most the clip's {num_frames} frames, got {window}")
    rows = []
    for _ in range(num_items):
        strides = [s for s in (1, 2, 4) if (window - 1) * s < num_frames]
        stride = strides[int(torch.randint(len(strides), (1,), generator=generator))]
        start = int(torch.randint(num_frames - (window - 1) * stride, (1,), generator=generator))
        rows.append(torch.arange(window) * stride + start)
    return torch.stack(rows)


def select_frames(batch: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    """Returns the per-frame tensors of a batch at ``index`` (B, F)."""
    rows = torch.arange(len(index), device=index.device)[:, None]
    out = dict(batch)
    for key in ("partial", "target", "coverage"):
        out[key] = batch[key][rows, index.to(batch[key].device)]
    return out


def chunks(num_frames: int, size: int | None) -> Sequence[slice]:
    """Returns consecutive frame slices of at most ``size`` frames (one slice when None)."""
    size = num_frames if size is None else size
    return [slice(start, min(num_frames, start + size)) for start in range(0, num_frames, size)]
