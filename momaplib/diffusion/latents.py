"""Pre-encoded training data for the MoMap generators (diffusion UNet and the MoMap-VAE baseline).

Both generators work on frozen encodings: the MoMap VAE latent of each clip, the image-VAE
condition latents and the text tokens. Encoding them once (a few seconds on a GPU for thousands
of clips) makes every later training step a pure UNet step on 16x16 tensors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.data import MoMapDataset, collate
from momaplib.diffusion.conditioning import condition_latents
from momaplib.diffusion.text import TextEncoder


@dataclass
class LatentSet:
    """Encoded clips: ``latents`` (N, C, h, w), ``condition`` (N, 12, h, w), text per clip.

    ``prompt_index`` (N,) indexes ``prompts`` (unique, ``prompts[0] == ""``) and ``text``
    (P, L, D) their embeddings; ``ids`` are the clip ids (manifest order).
    """

    latents: Tensor
    condition: Tensor
    prompt_index: Tensor
    prompts: list[str]
    text: Tensor
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.latents.shape[0]


@torch.no_grad()
def encode_datasets(
    roots: Sequence[str | os.PathLike],
    split: str,
    vae,
    image_vae,
    text_encoder: TextEncoder,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    max_clips: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    dataset: torch.utils.data.Dataset | None = None,
) -> LatentSet:
    """Returns the ``LatentSet`` of a split of one or more dataset folders (``momap sim`` layout).

    MoMap latents are posterior means (``vae.encode_channels``); instance maps get one random
    palette per clip drawn from ``seed``. ``dataset`` (items like ``MoMapDataset``'s, e.g. an
    ``InMemoryDataset`` already on the GPU) replaces the split of ``roots``.
    """
    if dataset is None:
        dataset = torch.utils.data.ConcatDataset([MoMapDataset(root, split) for root in roots])
    else:
        num_workers = 0  # in-memory items may live on the GPU
    if max_clips is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(max_clips, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"encode_datasets: split {split!r} of {list(map(str, roots))} holds no clips")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers
    )
    generator = torch.Generator().manual_seed(seed)
    latents, conditions, prompts_of, ids = [], [], [], []
    vae_dtype, image_dtype = vae.dtype, image_vae.dtype
    for batch in tqdm(loader, desc=f"encode {split}", disable=not progress, leave=False):
        latents.append(vae.encode_channels(batch["momap"].to(device, vae_dtype)).float().cpu())
        conditions.append(
            condition_latents(
                image_vae,
                batch["rgb"].to(device, image_dtype),
                batch["instance"].to(device),
                batch["xyz0"].to(device, image_dtype),
                generator=generator,
            )
            .float()
            .cpu()
        )
        prompts_of += list(batch["prompt"])
        ids += list(batch["id"])
    prompts = ["", *sorted(set(prompts_of) - {""})]
    lookup = {prompt: i for i, prompt in enumerate(prompts)}
    text = torch.cat([text_encoder(prompts[i : i + 256]) for i in range(0, len(prompts), 256)])
    return LatentSet(
        latents=torch.cat(latents),
        condition=torch.cat(conditions),
        prompt_index=torch.tensor([lookup[p] for p in prompts_of]),
        prompts=prompts,
        text=text.float().cpu(),
        ids=ids,
    )
