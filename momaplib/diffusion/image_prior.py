"""An image-diffusion prior trained on MoMap-Sim: the kit's stand-in for Stable Diffusion (paper §3.3.3).

The paper repurposes a pretrained text-to-image UNet (SD 1.5) into the MoMap UNet. Its weights
cannot be downloaded here, so the kit trains its own latent text-to-image model on MoMap-Sim
reference frames and their captions (``scene_caption``: the family's view and the task
prompt), over the kit's image VAE, and inflates it through the same code path that would load
SD's UNet (``momap train-diffusion --init inflate --image-unet <this pipeline's folder>``).

- ``ImageDiffusionPipeline``: ``unet`` (``UNet2DConditionModel``, 4 -> 4 latent channels, text by
  cross-attention), ``vae`` (the frozen image VAE), ``scheduler`` (DDIM), ``text_encoder`` (a spec
  of ``momaplib.diffusion.text``). Same folder layout as an SD pipeline, so ``unet/`` is where the
  inflation looks. ``pipeline(prompts, ...)`` returns uint8 images.
- ``TrainImageDiffusionJob`` (``momap train-image-diffusion``): encodes the reference frames of the
  train split once (more come from the MoMap generators' latent caches, ``latent_sets``), then
  trains with ``momaplib.training.fit`` (accelerate, resume, progress) with caption dropout for
  guidance; validation samples images for the first val captions and logs
  their L1 to the true frames; ``--bundle-dir`` writes fp16 shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel

from momaplib.checkpoints import resolve_checkpoint
from momaplib.data import MoMapDataset, clip_family, collate
from momaplib.diffusion.latents import MOTION_VARIANT, load_latent_set
from momaplib.diffusion.objectives import diffusion_loss
from momaplib.diffusion.text import load_text_encoder, text_dim
from momaplib.diffusion.unet import build_unet
from momaplib.training import (
    InMemoryDataset,
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    check_job_fields,
    check_job_settings,
    check_model_folder,
    dataset_shape,
    fit,
    micro_batch_generator,
    save_job_settings,
    save_pipeline,
    smoke_train,
)

FAMILY_WORDS = {"tabletop": "a tabletop scene seen from above", "egocentric": "an egocentric view of a table"}


def scene_caption(prompt: str, family: str = "") -> str:
    """Returns the caption of a MoMap-Sim reference frame: the view of its family and its prompt."""
    return f"{FAMILY_WORDS.get(family, 'a scene')}. {prompt}".strip()


class ImageDiffusionPipeline(DiffusionPipeline):
    """Text-to-image latent diffusion over the kit's image VAE (the Stable Diffusion layout)."""

    def __init__(
        self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDIMScheduler, text_encoder="minilm"
    ):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler)
        self.register_to_config(text_encoder=text_encoder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads a pipeline folder, a bundled name (``"image-diffusion"``) or a hub id; a folder
        without ``vae/`` (the bundle shares the image VAE of ``momap-diffusion``) gets the bundled
        ``image-vae`` unless ``vae=`` is passed."""
        path = resolve_checkpoint(pretrained_model_name_or_path, revision=kwargs.get("revision"))
        if "vae" not in kwargs and not (path / "vae").is_dir():
            kwargs["vae"] = AutoencoderKL.from_pretrained(resolve_checkpoint("image-vae"))
        return super().from_pretrained(path, **kwargs)

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str] | str,
        height: int = 128,
        width: int = 128,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Returns (N, height, width, 3) uint8 images, one per prompt."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or height % 8 or width % 8:
            raise ValueError(
                f"prompts / size: expected >= 1 prompt and H, W multiples of 8, got {height}x{width}"
            )
        encoder = load_text_encoder(self.config.text_encoder)
        dtype = self.unet.dtype
        text = encoder(prompts).to(self.device, dtype)
        uncond = encoder([""] * len(prompts)).to(self.device, dtype)
        shape = (len(prompts), self.unet.config.in_channels, height // 8, width // 8)
        latents = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
        latents = latents.to(self.device) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for t in self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps:
            model_in = self.scheduler.scale_model_input(torch.cat([latents, latents]), t).to(dtype)
            out = self.unet(model_in, t, encoder_hidden_states=torch.cat([uncond, text])).sample.float()
            noise_uncond, noise_text = out.chunk(2)
            latents = self.scheduler.step(
                noise_uncond + guidance_scale * (noise_text - noise_uncond), t, latents
            ).prev_sample
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample
        return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class TrainImageDiffusionJob:
    """Trains the image-diffusion prior; writes ``output_dir/pipeline`` (an ``ImageDiffusionPipeline``),
    ``metrics.jsonl`` and checkpoints; ``--bundle-dir`` also writes fp16 shards."""

    datasets: tuple[Path, ...] = (Path("data/sim_tabletop"), Path("data/sim_egocentric"))
    """Dataset folders written by `momap sim` (reference frames of the train split; val for validation)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(Path("outputs/image-diffusion"), max_steps=20_000, batch_size=128)
    )
    """The optimisation loop."""
    image_vae: str = "image-vae"
    """Frozen image VAE (folder, bundled name or hub id) whose latents the UNet denoises."""
    text_encoder: str = "minilm"
    """Text encoder spec (momaplib.diffusion.text); the MoMap UNet inflated from this prior reads the same."""
    pipeline_text_encoder: str | None = None
    """Spec written into the saved pipeline (default: ``text_encoder``), e.g. ``minilm`` when
    training reads the same model from a folder (``minilm:/path``)."""
    block_out_channels: tuple[int, ...] = (64, 128, 192)
    """UNet widths per level (the MoMap UNet's default, so inflation keeps every weight)."""
    layers_per_block: int = 2
    """Resnet (+ attention) layers per level."""
    caption_dropout: float = 0.1
    """Probability of training on the empty caption (classifier-free guidance)."""
    num_val_images: int = 4
    """Val frames sampled at each validation (L1 to the true frames in model range)."""
    latent_sets: tuple[Path, ...] = ()
    """Latent caches of the MoMap generators (``momaplib.diffusion.latents``, e.g. train_paper's
    streamed clips) whose reference frames join the training images: their RGB condition latents
    (channels 0-3, scaled posterior means as here), captioned from their prompt and the family in
    their id, one per scene (motion variants share a frame). They must be encoded by ``image_vae``:
    a cache does not record its image VAE, so only the latent shape is checked."""
    pretrained: str | None = None
    """Start the UNet from this one (an ``ImageDiffusionPipeline`` folder, its ``unet`` subfolder,
    or a hub id) instead of random weights, e.g. to continue an earlier run on a fine-tuned image VAE
    (its architecture replaces the width fields; None: random init)."""
    bundle_dir: Path | None = None
    """Also write the pipeline with fp16 shards here, e.g. checkpoints/image-diffusion."""
    smoke: bool = False
    """Tiny, fast settings for tests and CPU smoke runs."""

    def __post_init__(self) -> None:
        check_job_fields(self)
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout: expected a probability in [0, 1), got {self.caption_dropout}")

    def resolved(self) -> TrainImageDiffusionJob:
        """Returns the job with smoke overrides applied."""
        if not self.smoke:
            return self
        return replace(self, train=smoke_train(self.train), block_out_channels=(32, 32), layers_per_block=1,
                       num_val_images=1, smoke=False)  # fmt: skip

    def run(self) -> Path:
        """Trains (or resumes) and returns the folder of the saved pipeline."""
        return train_image_prior(self.resolved())


def _encode(
    job: TrainImageDiffusionJob, split: str, image_vae, encoder, device, limit=None
) -> dict[str, Any]:
    """Returns the scaled image latents, caption embeddings and frames of a split's reference frames."""
    latents, captions, frames = [], [], []
    for root in job.datasets:
        dataset = MoMapDataset(root, split)
        family = dataset.settings["sim"]["family"]
        count = len(dataset) if limit is None else min(limit, len(dataset))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, range(count)), batch_size=32, collate_fn=collate,
            num_workers=job.train.num_workers,
        )  # fmt: skip
        for batch in loader:
            rgb = batch["rgb"].to(device)
            with torch.no_grad():
                mean = image_vae.encode(rgb.to(image_vae.dtype)).latent_dist.mean
            latents.append(mean.float().cpu() * image_vae.config.scaling_factor)
            captions += [scene_caption(prompt, family) for prompt in batch["prompt"]]
            frames.append(rgb.cpu())
    if not latents:
        return None  # a split without clips (tiny datasets have no val clips)
    return {"latents": torch.cat(latents), "captions": captions, "frames": torch.cat(frames)}


def _cached_frames(paths, latent_shape: tuple[int, ...]) -> tuple[torch.Tensor, list[str]]:
    """Returns the reference-frame latents and captions of the latent caches ``paths`` (see
    ``TrainImageDiffusionJob.latent_sets``), checked against the image latents' ``(C, h, w)``."""
    latents, captions = [], []
    for path in paths:
        cache = load_latent_set(path)
        frames = cache.condition[:, : latent_shape[0]]
        if tuple(frames.shape[1:]) != tuple(latent_shape):
            raise ValueError(
                f"latent_sets: {path}'s RGB condition latents are {tuple(frames.shape[1:])}, expected "
                f"{tuple(latent_shape)} (the image VAE's latents of the datasets' frames)"
            )
        keep = [i for i, name in enumerate(cache.ids) if not MOTION_VARIANT.search(name)]
        latents.append(frames[keep].float())
        prompts = cache.prompt_index.tolist()
        captions += [scene_caption(cache.prompts[prompts[i]], clip_family(cache.ids[i])) for i in keep]
    return torch.cat(latents), captions


def pretrained_unet(source: str, latent_channels: int, cross_attention_dim: int) -> UNet2DConditionModel:
    """Returns the float32 UNet of ``source`` (a pipeline folder with a ``unet`` subfolder, a UNet
    folder or a hub id), checked against the image VAE's latent channels and the text width."""
    path = Path(resolve_checkpoint(source))
    folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
    check_model_folder(folder, "pretrained", "a UNet2DConditionModel folder (or a pipeline with unet/)")
    unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)
    found = (unet.config.in_channels, unet.config.out_channels, unet.config.cross_attention_dim)
    if found != (latent_channels, latent_channels, cross_attention_dim):
        raise ValueError(
            f"pretrained: {source}'s UNet has in/out channels and cross-attention dim {found}, "
            f"expected {(latent_channels, latent_channels, cross_attention_dim)} (image VAE, text encoder)"
        )
    return unet


def train_image_prior(job: TrainImageDiffusionJob) -> Path:
    """Runs (or resumes) ``job`` and returns ``output_dir/pipeline``."""
    config = job.train
    check_job_settings(job, config)
    dataset_shape(job.datasets, require_split="train")
    accelerator = build_accelerator(config)
    device = accelerator.device
    image_vae = AutoencoderKL.from_pretrained(resolve_checkpoint(job.image_vae)).to(device).eval()
    image_vae.requires_grad_(False)
    encoder = load_text_encoder(job.text_encoder, str(device))
    data = _encode(job, "train", image_vae, encoder, device)
    if job.latent_sets:
        cached, captions = _cached_frames(job.latent_sets, tuple(data["latents"].shape[1:]))
        if accelerator.is_main_process:
            print(f"image prior: {len(data['captions'])} dataset frames and {len(captions)} of latent caches")
        data = {"latents": torch.cat([data["latents"], cached]), "captions": data["captions"] + captions}
    prompts = ["", *sorted(set(data["captions"]))]
    lookup = {p: i for i, p in enumerate(prompts)}
    table = torch.cat([encoder(prompts[i : i + 256]) for i in range(0, len(prompts), 256)]).to(device)
    columns = {"latents": data["latents"], "caption": torch.tensor([lookup[c] for c in data["captions"]])}
    size = data["latents"].shape[-1]
    if job.pretrained is None:
        unet = build_unet(
            latent_channels=data["latents"].shape[1], condition_channels=0,
            cross_attention_dim=text_dim(job.text_encoder),
            block_out_channels=job.block_out_channels, layers_per_block=job.layers_per_block,
            norm_num_groups=min(32, *job.block_out_channels), sample_size=size,
        )  # fmt: skip
    else:
        unet = pretrained_unet(job.pretrained, data["latents"].shape[1], text_dim(job.text_encoder))
    optimizer = build_optimizer(unet.parameters(), config)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    lr_scheduler = build_scheduler(optimizer, config)
    noise = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
    )  # fmt: skip
    save_job_settings(job, config)

    def loss_fn(model, batch: dict[str, Any], step: int):
        latents = batch["latents"]
        generator = micro_batch_generator(batch, config.seed, latents.device)  # differs per process
        drop = torch.rand(len(latents), generator=generator, device=latents.device) < job.caption_dropout
        text = table[torch.where(drop, 0, batch["caption"].to(latents.device))]
        empty = latents.new_zeros(len(latents), 0, *latents.shape[-2:])
        return diffusion_loss(model, noise, latents, empty, text, generator), {}

    def make(model, text_encoder: str) -> ImageDiffusionPipeline:
        scheduler = DDIMScheduler.from_config(noise.config, timestep_spacing="trailing", clip_sample=False)
        return ImageDiffusionPipeline(
            unet=model, vae=image_vae, scheduler=scheduler, text_encoder=text_encoder
        )

    val = _encode(job, "val", image_vae, encoder, device, job.num_val_images) if job.num_val_images else None

    def validate(model, step: int) -> dict[str, float]:
        if val is None or not val["captions"]:
            return {}
        pipe = make(accelerator.unwrap_model(model), job.text_encoder)
        images = pipe(val["captions"], *val["frames"].shape[-2:], num_inference_steps=10,
                      generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
        frames = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        return {"val/l1": float((frames - val["frames"].float()).abs().mean())}

    fit(accelerator, config, unet, optimizer, lr_scheduler, InMemoryDataset(columns), loss_fn,
        validate=validate if job.num_val_images else None)  # fmt: skip
    path = config.output_dir / "pipeline"
    if accelerator.is_main_process:
        pipeline = make(accelerator.unwrap_model(unet).eval(), job.pipeline_text_encoder or job.text_encoder)
        save_pipeline(pipeline, path)
        if job.bundle_dir is not None:
            save_pipeline(pipeline, job.bundle_dir, bundle=True)
    accelerator.wait_for_everyone()
    return path
