"""``momap train-video``: trains the completion model on MoMap-Sim clips (paper §3.4.1).

Each training clip's GT MoMap is rendered into the clip's own cameras (``momaplib.render``); the
model learns to turn these partial frames into the true ones. Frames, renders and the reference
frame are encoded once by the frozen image VAE and held in memory; every step draws a window of
``frames_per_item`` frames per clip (random start and stride), noises the target latents and
regresses the v-prediction. With ``frame_attention="flattened"`` the frames of a window attend to
each other; ``"per-frame"`` trains the ablation. Validation completes a few val clips with DDIM
and reports the PSNR of the holes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from momaplib.checkpoints import resolve_checkpoint
from momaplib.data.manifest import clip_path, load_manifest
from momaplib.render import psnr
from momaplib.sim.clip import Clip
from momaplib.training import (
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    check_job_fields,
    check_job_settings,
    dataset_shape,
    fit,
    micro_batch_generator,
    save_bundle,
    save_job_settings,
    save_model,
    smoke_train,
)
from momaplib.video.frames import frame_windows, render_own_cameras, select_frames, video_dataset
from momaplib.video.model import CompletionUNet
from momaplib.video.sampling import build_scheduler as build_noise_scheduler
from momaplib.video.sampling import complete_render

MODEL_DIR = "model"


def load_clips(roots: tuple[Path, ...], split: str, limit: int | None = None) -> list[Clip]:
    """Returns the ``split`` clips (frames included) of dataset folders written by ``momap sim``."""
    clips = []
    for root in roots:
        for entry in load_manifest(root, split):
            if limit is not None and len(clips) >= limit:
                return clips
            clips.append(Clip.load(clip_path(root, entry)))
    return clips


@dataclass
class TrainVideoJob:
    """Trains ``CompletionUNet``; writes ``output_dir/model``, ``metrics.jsonl`` and checkpoints;
    ``--bundle-dir`` also writes fp16 shards for ``checkpoints/``."""

    datasets: tuple[Path, ...] = (Path("data/sim_tabletop"), Path("data/sim_egocentric"))
    """Dataset folders written by `momap sim` (train split for training, val for validation)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            Path("outputs/momap-video"), max_steps=4000, batch_size=8, learning_rate=3e-4, in_memory=True
        )
    )
    """The optimisation loop."""
    image_vae: str = "image-vae"
    """Frozen image VAE (folder, bundled name or hub id) whose latents the model works in."""
    frame_attention: Literal["flattened", "per-frame"] = "flattened"
    """Self-attention across the frames of a window (paper, like CAT3D) or per frame (ablation)."""
    frames_per_item: int = 8
    """Frames per training window, 1..T."""
    block_out_channels: tuple[int, ...] = (64, 96, 96)
    """UNet widths per level."""
    layers_per_block: int = 1
    """Resnet layers per level (the default size, 3.8 M parameters, keeps the bundle under 8 MiB)."""
    attention_head_dim: int = 32
    """Channels per attention head."""
    norm_num_groups: int = 32
    """GroupNorm groups (must divide every width)."""
    render_backend: Literal["auto", "torch", "gsplat"] = "auto"
    """Rasteriser for the partial renders of the training clips."""
    num_val_clips: int = 8
    """Validation clips (hole PSNR after 10 DDIM steps)."""
    bundle_dir: Path | None = None
    """Also write fp16 shards here, e.g. checkpoints/momap-video/completion."""
    smoke: bool = False
    """Tiny, fast settings for tests and CPU smoke runs."""

    def __post_init__(self) -> None:
        check_job_fields(self)

    def resolved(self) -> TrainVideoJob:
        """Returns the job with smoke overrides applied."""
        if not self.smoke:
            return self
        return replace(
            self, train=smoke_train(self.train, max_steps=6, checkpoint_every=3), block_out_channels=(8, 16),
            layers_per_block=1, attention_head_dim=8, norm_num_groups=4, num_val_clips=1,
            frames_per_item=min(self.frames_per_item, 4), smoke=False,
        )  # fmt: skip

    def build_model(self, sample_size: int, latent_scale: float) -> CompletionUNet:
        """Returns a randomly initialised completion UNet of this job's size."""
        return CompletionUNet(
            frame_attention=self.frame_attention,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            attention_head_dim=self.attention_head_dim,
            cross_attention_dim=self.block_out_channels[0] * 2,
            norm_num_groups=self.norm_num_groups,
            sample_size=sample_size,
            latent_scale=latent_scale,
        )

    def run(
        self, dataset: torch.utils.data.Dataset | None = None, val_clips: list[Clip] | None = None
    ) -> Path:
        """Trains and returns the folder of the saved model.

        ``dataset`` (from ``momaplib.video.video_dataset``) and ``val_clips`` replace the clips of
        ``datasets`` (e.g. clips simulated in memory that several runs share).
        """
        job = self.resolved()
        config = job.train
        check_job_settings(job, config)
        accelerator = build_accelerator(config)
        device = accelerator.device
        image_vae = AutoencoderKL.from_pretrained(resolve_checkpoint(job.image_vae)).to(device).eval()
        image_vae.requires_grad_(False)
        scale = latent_scale(image_vae) if dataset is None else float(dataset.scale)
        if dataset is None:
            dataset_shape(job.datasets, require_split="train")  # checks the folders before loading
            clips = load_clips(job.datasets, "train")
            dataset = video_dataset(
                clips, image_vae, scale, job.render_backend, device, progress=config.progress
            )
            val_clips = load_clips(job.datasets, "val", job.num_val_clips)
        T, _, h, _ = dataset.tensors["target"].shape[1:]
        model = job.build_model(h, scale)
        optimizer = build_optimizer(model.parameters(), config)
        model, optimizer = accelerator.prepare(model, optimizer)
        lr_scheduler = build_scheduler(optimizer, config)
        noise_scheduler = build_noise_scheduler()
        alphas = noise_scheduler.alphas_cumprod.to(device)
        save_job_settings(job, config)

        def loss_fn(model: CompletionUNet, batch: dict[str, Any], step: int):
            generator = micro_batch_generator(batch, config.seed)  # differs per process
            index = frame_windows(len(batch["target"]), T, job.frames_per_item, generator)
            batch = select_frames(batch, index)
            target = batch["target"]
            B = len(target)
            noise = torch.randn(target.shape, generator=generator).to(target.device)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (B,), generator=generator).to(
                device
            )
            a = alphas[t].view(B, 1, 1, 1, 1)
            noisy = a.sqrt() * target + (1 - a).sqrt() * noise
            v_target = a.sqrt() * noise - (1 - a).sqrt() * target
            v = model(noisy, batch["partial"], batch["coverage"], batch["reference"], t)
            loss = F.mse_loss(v.float(), v_target)
            return loss, {}

        def validate(model: CompletionUNet, step: int) -> dict[str, float]:
            model = accelerator.unwrap_model(model)
            scores = [
                hole_psnr(model, image_vae, clip, job.render_backend, frames_per_chunk=job.frames_per_item)
                for clip in val_clips or []
            ]
            return {"val/psnr_hole": float(np.nanmean(scores))} if scores else {}

        fit(
            accelerator,
            config,
            model,
            optimizer,
            lr_scheduler,
            dataset,
            loss_fn,
            validate if val_clips else None,
        )
        model = accelerator.unwrap_model(model)
        folder = save_model(model, config.output_dir / MODEL_DIR)
        if job.bundle_dir is not None and accelerator.is_main_process:
            save_bundle(model, job.bundle_dir)
        return folder


@torch.no_grad()
def latent_scale(image_vae: AutoencoderKL, num_clips: int = 16, seed: int = 0) -> float:
    """Returns 1 / std of the image VAE's latent means on reference frames of sim clips."""
    from momaplib.sim import SimConfig, generate_clip
    from momaplib.video.frames import encode_images, images_to_model

    size = image_vae.config.sample_size
    frames = [
        generate_clip(seed + i, SimConfig(height=size, width=size, num_frames=2)).frames[0]
        for i in range(num_clips)
    ]
    latents = encode_images(image_vae, images_to_model(np.stack(frames)), 1.0)
    return float(1.0 / latents.std())


@torch.no_grad()
def hole_psnr(
    model: CompletionUNet,
    image_vae,
    clip: Clip,
    backend: str = "auto",
    steps: int = 10,
    frames_per_chunk: int = 8,
) -> float:
    """Returns the PSNR (dB) of the completed frames of a clip on its hole pixels."""
    render = render_own_cameras(clip, backend, model.device)
    frames, _ = complete_render(
        model, image_vae, render, clip.frames[0], steps, torch.Generator().manual_seed(0), frames_per_chunk
    )
    return psnr(frames, clip.frames / 255.0, render.holes)
