"""Training and evaluation of the kit's autoencoders: ``momap train-image-vae`` and ``momap train-vae``.

- ``TrainImageVAEJob`` trains the small RGB ``AutoencoderKL`` (``momaplib.vae.build_image_vae``)
  on MoMap-Sim reference frames *and* reference XYZ maps, the offline stand-in for Stable
  Diffusion's VAE: it must encode the RGB and XYZ conditions of the diffusion model, and it is
  the "pretrained" model that ``inflate_from_image_vae`` starts the MoMap VAE from.
- ``TrainVAEJob`` fine-tunes the ``MoMapVAE`` (inflated from an image VAE, or from scratch for
  the ablation) on MoMaps: L1 on decoded trajectories over every valid point and again over the
  visible ones, optional velocity and displacement terms, a small KL weight. It ends by setting
  ``config.scaling_factor`` to ``1 / std`` of posterior-mean latents of training MoMaps, so the
  diffusion model sees unit-variance latents. ``--init pretrained --trainable decoder`` fine-tunes
  only the decoder of a trained MoMap VAE, as Stable Diffusion's ``sd-vae-ft-mse`` did: the
  encoder, the latent space and its scaling factor stay as they were, so the generators trained
  on them keep working with the new decoder.
- ``reconstruction_epe`` / ``evaluate_reconstruction`` (from ``momaplib.vae.losses``): the MoMap VAE's
  end-point error / scene scale.

Both jobs use ``momaplib.training.fit`` (accelerate; mixed precision; checkpoints with exact
resume; progress bar; ``metrics.jsonl``), so ``accelerate launch -m momaplib.cli train-vae ...``
runs them on several GPUs unchanged. Losses are in model range (metres / scene scale,
``momaplib.momap.normalize_xyz``): metric L1 that weights tabletop and egocentric scenes alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL

from momaplib.training import (
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    call_through_forward,
    check_job_fields,
    check_job_settings,
    check_model_folder,
    dataset_shape,
    fit,
    item_noise,
    load_training_data,
    open_datasets,
    save_bundle,
    save_job_settings,
    save_model,
    select_trainable,
    smoke_train,
)
from momaplib.training.augment import AUGMENT_KEYS, augmented_loss, procedural_count, with_procedural
from momaplib.vae.adversarial import PatchDiscriminator, WithDiscriminator, adversarial_losses, balance_weight
from momaplib.vae.losses import (
    evaluate_reconstruction,
    image_vae_errors,
    momap_vae_loss,
    object_color_error,
    reconstruction_epe,
)
from momaplib.vae.losses import kl_loss as _kl
from momaplib.vae.model import (
    BLOCK_OUT_CHANNELS,
    LATENT_CHANNELS,
    LAYERS_PER_BLOCK,
    MoMapVAE,
    build_image_vae,
)

#: Where a training run writes its final model (inside ``output_dir``).
MODEL_DIR = "model"

#: ``trainable`` of both jobs -> the parameter-name fragments that train (``select_trainable``): the
#: decoder side is ``post_quant_conv`` + ``decoder``; the encoder and ``quant_conv`` set the latents.
TRAINABLE_PARTS = {"all": "", "decoder": "decoder.,post_quant_conv."}


@torch.no_grad()
def latent_scaling_factor(
    vae: MoMapVAE, dataset: torch.utils.data.Dataset, max_clips: int = 256, batch_size: int = 16
) -> float:
    """Returns ``1 / std`` of posterior-mean latents (unscaled) of up to ``max_clips`` clips."""
    from momaplib.data import collate

    subset = torch.utils.data.Subset(dataset, range(min(max_clips, len(dataset))))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate)
    latents = []
    for batch in loader:
        posterior = vae.encode(batch["momap"].to(vae.device, vae.dtype)).latent_dist
        latents.append(posterior.mean.float().cpu())
    std = float(torch.cat(latents).std())
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"latent_scaling_factor: latents have std {std}; the VAE is broken")
    return 1.0 / std


# ----------------------------------------------------------------------------- jobs
@dataclass
class TrainImageVAEJob:
    """Trains the RGB ``AutoencoderKL`` on reference frames and reference XYZ maps of MoMap-Sim.

    Writes ``output_dir/model`` (diffusers folder), ``metrics.jsonl`` and resumable checkpoints;
    ``--bundle-dir`` also writes fp16 shards for ``checkpoints/``.
    """

    datasets: tuple[Path, ...] = (Path("data/sim_tabletop"), Path("data/sim_egocentric"))
    """Dataset folders written by `momap sim` (train split for training, val for validation)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(Path("outputs/image-vae"), max_steps=4000, batch_size=32)
    )
    """The optimisation loop."""
    block_out_channels: tuple[int, ...] = BLOCK_OUT_CHANNELS
    """Widths of the four encoder/decoder levels (SD: 128, 256, 512, 512)."""
    layers_per_block: int = LAYERS_PER_BLOCK
    """Resnet layers per level."""
    norm_num_groups: int = 32
    """GroupNorm groups (must divide every width)."""
    kl_weight: float = 1e-6
    """Weight of the KL term (SD's VAE uses 1e-6)."""
    num_val_clips: int = 64
    """Validation clips (L1 of RGB and XYZ reconstructions)."""
    pretrained: str | None = None
    """Start from this ``AutoencoderKL`` (folder, bundled name or hub id) instead of random weights:
    a fine-tune on new data, e.g. continuing an earlier run with another learning-rate schedule
    (its architecture replaces the width fields; None: random init)."""
    procedural_fraction: float = 0.0
    """Fraction of the training stream that is procedural MoMaps, 0 <= f < 1 (0: off): planes at any
    tilt, rooms, primitives in front of backgrounds and smooth surfaces at 0.3-10 m with random
    intrinsics, half with one rigid part moving (``momaplib.data.procedural``; training seeds from
    ``TRAIN_SEED_START``, disjoint from the generalisation suite's)."""
    augment: bool = False
    """Augment every batch geometrically (``momaplib.training.augment``): random crops (60-100 %,
    half of the items) with ``K`` updated, rotations by multiples of 90 degrees and left-right
    flips with x, y transformed to match."""
    camera_turns: float = 0.0
    """With ``augment``: the fraction of items seen by their camera turned about its centre (roll
    within +-45 degrees, pitch and yaw within +-20; ``augment_batch(turn_probability=...)``), so
    tilted and rolled views of every layout are met, not only the simulator's camera ranges."""
    adversarial_weight: float = 0.0
    """Weight of a patch-adversarial hinge term on the RGB decodes, against a ``PatchDiscriminator``
    trained alongside, times ``balance_weight`` (``momaplib.vae.adversarial``; SD: 0.5; 0: off)."""
    adversarial_start: int = 0
    """Steps the critic trains alone before its verdict reaches the decoder (a critic at chance
    only adds noise to the decoder's gradient)."""
    trainable: Literal["all", "decoder"] = "all"
    """``decoder``: only ``post_quant_conv`` and the decoder train (needs ``pretrained``), so the latent
    space, and what was trained on it (the image prior, the conditions' encodings), stays valid."""
    bundle_dir: Path | None = None
    """Also write fp16 shards (<= 15 MiB) here, e.g. checkpoints/image-vae."""
    smoke: bool = False
    """Tiny, fast settings for tests and CPU smoke runs."""

    def __post_init__(self) -> None:
        check_job_fields(self)
        procedural_count(0, self.procedural_fraction)  # ValueError naming the field when out of range
        if not 0 <= self.camera_turns <= 1:
            raise ValueError(f"camera_turns: expected a fraction in [0, 1], got {self.camera_turns}")
        if self.adversarial_weight < 0:
            raise ValueError(f"adversarial_weight: expected >= 0, got {self.adversarial_weight}")
        if self.trainable == "decoder" and self.pretrained is None:
            raise ValueError("trainable: 'decoder' keeps a trained encoder; it needs pretrained")

    def resolved(self) -> TrainImageVAEJob:
        """Returns the job with smoke overrides applied."""
        if not self.smoke:
            return self
        return replace(
            self, train=smoke_train(self.train), block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            norm_num_groups=4, num_val_clips=4, smoke=False,
        )  # fmt: skip

    def build_model(self, sample_size: int) -> AutoencoderKL:
        """Returns the initial image VAE: ``pretrained`` (float32) or random."""
        if self.pretrained is None:
            return build_image_vae(
                self.block_out_channels, self.layers_per_block, norm_num_groups=self.norm_num_groups,
                sample_size=sample_size,
            )  # fmt: skip
        from momaplib.checkpoints import resolve_checkpoint

        folder = check_model_folder(
            resolve_checkpoint(self.pretrained), "pretrained", "an AutoencoderKL folder"
        )
        model = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32)
        if model.config.in_channels != 3 or model.config.out_channels != 3:
            raise ValueError(
                f"pretrained: {self.pretrained} is not an RGB autoencoder "
                f"(in/out channels {model.config.in_channels}/{model.config.out_channels}, expected 3/3)"
            )
        return model

    def run(self, dataset: torch.utils.data.Dataset | None = None) -> Path:
        """Trains and returns the folder of the saved model.

        ``dataset`` replaces the train split of ``datasets`` (e.g. an ``InMemoryDataset`` that
        several jobs share); validation still reads the val split of ``datasets``.
        """
        job = self.resolved()
        config = job.train
        check_job_settings(job, config)  # before anything is written
        accelerator = build_accelerator(config)
        T, H, W = dataset_shape(job.datasets)
        keys = ("rgb", "xyz0", "valid", *(AUGMENT_KEYS if job.augment else ()))
        if dataset is None:
            dataset = load_training_data(job.datasets, config, keys=keys)
        dataset = with_procedural(dataset, job.procedural_fraction, (T, H, W), config, keys)
        vae = job.build_model(H)
        parameters = select_trainable(vae, TRAINABLE_PARTS[job.trainable])
        adversarial = job.adversarial_weight > 0
        model = vae
        if adversarial:
            critic = PatchDiscriminator(num_layers=3 if min(H, W) >= 32 else 1)  # 1: tiny smoke images
            model = WithDiscriminator(vae, critic)
            parameters += list(critic.parameters())
        optimizer = build_optimizer(parameters, config)
        model, optimizer = accelerator.prepare(model, optimizer)
        scheduler = build_scheduler(optimizer, config)
        save_job_settings(job, config)

        def loss_fn(model: torch.nn.Module, batch: dict[str, Any], step: int):
            images = torch.cat([batch["rgb"], batch["xyz0"]])
            n = batch["rgb"].shape[0]

            def autoencode(inner: torch.nn.Module):
                vae = inner.vae if adversarial else inner
                posterior = vae.encode(images).latent_dist
                # The posterior sample's noise is drawn per item (its RGB and XYZ latents), so N
                # processes train what one process with the same global batch trains.
                mean = posterior.mean
                noise = item_noise(batch, (2, *mean.shape[1:]), config.seed, dtype=mean.dtype)
                decoded = vae.decode(mean + posterior.std * noise.transpose(0, 1).flatten(0, 1)).sample
                terms = (
                    adversarial_losses(inner.discriminator, batch["rgb"], decoded[:n]) if adversarial else ()
                )
                return posterior, decoded, terms

            posterior, decoded, terms = call_through_forward(model, autoencode)  # DDP syncs only its forward
            l1 = (decoded.float() - images).abs()
            kl = _kl(posterior)
            logs = {"l1_rgb": l1[:n].mean(), "l1_xyz": l1[n:].mean(), "kl": kl}
            loss = l1.mean() + job.kl_weight * kl
            if adversarial:  # the RGB decodes only: an XYZ map has no texture to invent
                logs["adversarial"], logs["critic"] = terms
                loss = loss + terms[1]
                if step >= job.adversarial_start:  # scaled to the L1 term's gradient at the last layer
                    balance = balance_weight(l1[:n].mean(), terms[0], vae.decoder.conv_out.weight)
                    logs["balance"] = balance
                    loss = loss + job.adversarial_weight * balance * terms[0]
            return loss, logs

        if job.augment:
            loss_fn = augmented_loss(loss_fn, config.seed, turn_probability=job.camera_turns)
        val = open_datasets(job.datasets, "val")

        def validate(model: torch.nn.Module, step: int) -> dict[str, float]:
            model = accelerator.unwrap_model(model)
            return image_vae_errors(model.vae if adversarial else model, val, job.num_val_clips)

        validate_fn = validate if len(val) else None
        fit(accelerator, config, model, optimizer, scheduler, dataset, loss_fn, validate_fn)
        model = accelerator.unwrap_model(model)
        model = model.vae if adversarial else model
        folder = save_model(model, config.output_dir / MODEL_DIR)
        if job.bundle_dir is not None and accelerator.is_main_process:
            save_bundle(model, job.bundle_dir)
        return folder


@dataclass
class TrainVAEJob:
    """Fine-tunes the ``MoMapVAE`` on MoMap-Sim (paper §3.3.2), from an inflated image VAE or from scratch.

    Writes ``output_dir/model`` (a ``MoMapVAE`` folder with the latent scaling factor set),
    ``metrics.jsonl`` (loss terms, validation EPE) and resumable checkpoints; ``--bundle-dir``
    also writes fp16 shards for ``checkpoints/``.
    """

    datasets: tuple[Path, ...] = (Path("data/sim_tabletop"), Path("data/sim_egocentric"))
    """Dataset folders written by `momap sim` (train split for training, val for validation)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(Path("outputs/momap-vae"), max_steps=4000, batch_size=16)
    )
    """The optimisation loop."""
    init: Literal["inflate", "scratch", "pretrained"] = "inflate"
    """Initialisation: inflated from --image-vae (paper), random (the ablation), or a trained
    MoMap VAE (--pretrained) to fine-tune."""
    pretrained: str | None = None
    """With --init pretrained: a MoMapVAE folder, bundled name (momap-vae) or hub id."""
    trainable: Literal["all", "decoder"] = "all"
    """What trains: the whole VAE, or only its decoder (``post_quant_conv`` + ``decoder``). A
    decoder-only run keeps the encoder and the latent scaling factor, so the latents that
    diffusion models were trained on do not change; it needs --init pretrained."""
    image_vae: str = "image-vae"
    """Image AutoencoderKL to inflate: folder, bundled name or hub id (SD: add --image-vae-subfolder vae)."""
    image_vae_subfolder: str | None = None
    """Subfolder of --image-vae that holds the VAE (``vae`` in a Stable Diffusion repository)."""
    latent_channels: int = LATENT_CHANNELS
    """Latent channels C_L (paper: 32)."""
    block_out_channels: tuple[int, ...] = BLOCK_OUT_CHANNELS
    """Widths for --init scratch (an inflated model takes the image VAE's)."""
    layers_per_block: int = LAYERS_PER_BLOCK
    """Resnet layers per level for --init scratch."""
    norm_num_groups: int = 32
    """GroupNorm groups for --init scratch."""
    visible_weight: float = 1.0
    """Weight of the extra L1 term over visible points (the all-points term has weight 1)."""
    velocity_weight: float = 0.0
    """Weight of the L1 term on frame-to-frame displacements (0: off)."""
    moving_weight: float = 0.0
    """Extra weight of the points that move (GT moving mask, ``TAU_MOVE``) in the reconstruction terms:
    each point counts ``1 + moving_weight``. Moving objects cover a few per cent of a frame, so with
    plain L1 the latent space keeps them worst (0: off)."""
    displacement_weight: float = 0.0
    """Weight of the L1 term on displacements from the reference frame, ``x_t - x_0`` (0: off).
    Every motion metric (the moving mask, ``ate_dtw``, the direction words) reads trajectories
    relative to ``x_0``; with plain L1 a static point may wobble by a few per cent of the scene
    scale over time, which the moving mask's 2 % threshold counts as motion."""
    kl_weight: float = 1e-6
    """Weight of the KL term."""
    num_val_clips: int = 64
    """Validation clips (reconstruction EPE)."""
    procedural_fraction: float = 0.0
    """Fraction of the training stream that is procedural MoMaps, 0 <= f < 1 (0: off; as
    ``TrainImageVAEJob.procedural_fraction``)."""
    augment: bool = False
    """Augment every batch geometrically (``momaplib.training.augment``): random crops (60-100 %,
    half of the items) with ``K`` updated, rotations by multiples of 90 degrees and left-right
    flips with x, y transformed to match."""
    holes: float = 0.0
    """With ``augment``: the fraction of items given a region without data (an edge band or a disc
    of invalid pixels, ``augment_batch(holes_probability=...)``), so the encoder meets missing data."""
    camera_turns: float = 0.0
    """With ``augment``: the fraction of items seen by their camera turned about its centre (roll
    within +-45 degrees, pitch and yaw within +-20; ``augment_batch(turn_probability=...)``), so
    tilted and rolled views of every layout are met, not only the simulator's camera ranges."""
    bundle_dir: Path | None = None
    """Also write fp16 shards (<= 15 MiB) here, e.g. checkpoints/momap-vae."""
    smoke: bool = False
    """Tiny, fast settings for tests and CPU smoke runs."""

    def __post_init__(self) -> None:
        check_job_fields(self)
        procedural_count(0, self.procedural_fraction)  # ValueError naming the field when out of range
        if not 0 <= self.camera_turns <= 1:
            raise ValueError(f"camera_turns: expected a fraction in [0, 1], got {self.camera_turns}")
        if not 0 <= self.holes <= 1:
            raise ValueError(f"holes: expected a fraction in [0, 1], got {self.holes}")
        if self.init == "pretrained" and not self.pretrained:
            raise ValueError(
                "pretrained: --init pretrained needs --pretrained (a MoMapVAE folder, name or hub id)"
            )
        if self.trainable == "decoder" and self.init != "pretrained":
            raise ValueError(
                f"trainable: 'decoder' keeps a trained encoder; it needs --init pretrained, not {self.init!r}"
            )

    def resolved(self) -> TrainVAEJob:
        """Returns the job with smoke overrides applied."""
        if not self.smoke:
            return self
        return replace(
            self, train=smoke_train(self.train), block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            norm_num_groups=4, latent_channels=min(self.latent_channels, 8), num_val_clips=4, smoke=False,
        )  # fmt: skip

    def build_model(self, num_frames: int, sample_size: int) -> MoMapVAE:
        """Returns the initial ``MoMapVAE``: inflated from ``image_vae``, random, or ``pretrained``."""
        if self.init == "pretrained":
            from momaplib.checkpoints import resolve_checkpoint

            folder = check_model_folder(
                resolve_checkpoint(self.pretrained), "pretrained", "a MoMapVAE folder"
            )
            model = MoMapVAE.from_pretrained(folder, torch_dtype=torch.float32)
            if model.num_frames != num_frames:
                raise ValueError(
                    f"pretrained: {self.pretrained} encodes T = {model.num_frames} frames, "
                    f"the data has {num_frames}"
                )
            return model
        if self.init == "inflate":
            from momaplib.vae import inflate_from_image_vae, load_image_vae

            kwargs = {"subfolder": self.image_vae_subfolder} if self.image_vae_subfolder else {}
            image_vae = load_image_vae(self.image_vae, **kwargs)
            return inflate_from_image_vae(image_vae, num_frames, self.latent_channels, seed=self.train.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.train.seed)
            return MoMapVAE.build(
                num_frames, self.latent_channels, self.block_out_channels, self.layers_per_block,
                self.norm_num_groups, sample_size=sample_size,
            )  # fmt: skip

    def run(self, dataset: torch.utils.data.Dataset | None = None) -> Path:
        """Trains and returns the folder of the saved model (``dataset``: as for ``TrainImageVAEJob``)."""
        job = self.resolved()
        config = job.train
        check_job_settings(job, config)  # before anything is written
        accelerator = build_accelerator(config)
        T, H, W = dataset_shape(job.datasets, require_split="train" if dataset is None else None)
        model = job.build_model(T, H)  # a bad --pretrained fails before the data loads
        keys = ("momap", "valid", "visible", *(AUGMENT_KEYS if job.augment else ()))
        if dataset is None:
            dataset = load_training_data(job.datasets, config, keys=keys)
        dataset = with_procedural(dataset, job.procedural_fraction, (T, H, W), config, keys)
        optimizer = build_optimizer(select_trainable(model, TRAINABLE_PARTS[job.trainable]), config)
        model, optimizer = accelerator.prepare(model, optimizer)
        scheduler = build_scheduler(optimizer, config)
        save_job_settings(job, config)
        loss_fn = momap_vae_loss(
            job.visible_weight, job.velocity_weight, job.kl_weight, job.displacement_weight, job.moving_weight
        )
        if job.augment:
            loss_fn = augmented_loss(
                loss_fn, config.seed, holes_probability=job.holes, turn_probability=job.camera_turns
            )
        val = open_datasets(job.datasets, "val")

        def validate(model: MoMapVAE, step: int) -> dict[str, float]:
            model = accelerator.unwrap_model(model)
            scores = evaluate_reconstruction(model, val, max_clips=job.num_val_clips)
            return {f"val/{key}": value for key, value in scores.items() if key != "num_clips"}

        validate_fn = validate if len(val) else None
        fit(accelerator, config, model, optimizer, scheduler, dataset, loss_fn, validate_fn)
        model = accelerator.unwrap_model(model)
        model.eval()
        if job.trainable == "all":  # a new encoder: new latent statistics
            model.register_to_config(scaling_factor=latent_scaling_factor(model, dataset))
        folder = save_model(model, config.output_dir / MODEL_DIR)
        if job.bundle_dir is not None and accelerator.is_main_process:
            save_bundle(model, job.bundle_dir)
        return folder


__all__ = [
    "MODEL_DIR",
    "TrainImageVAEJob",
    "TrainVAEJob",
    "evaluate_reconstruction",
    "image_vae_errors",
    "latent_scaling_factor",
    "momap_vae_loss",
    "object_color_error",
    "reconstruction_epe",
]
