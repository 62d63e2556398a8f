"""``momap train-diffusion``: trains the MoMap diffusion UNet or the MoMap-VAE baseline (paper §3.3.3, §4.1).

The frozen encoders (MoMap VAE, image VAE, text encoder) run once over the dataset
(``momaplib.diffusion.latents``; cached in ``output_dir/latents_<split>.safetensors``); training
then steps a UNet on 16x16 latents with ``momaplib.training.fit`` (accelerate: mixed precision,
gradient accumulation, atomic checkpoints, exact resume, ``metrics.jsonl``, progress bar), plus an
EMA of the weights that validation and the saved pipeline use. Runs on CPU or one GPU as is, and
on several GPUs unchanged through ``accelerate launch -m momaplib.cli train-diffusion ...``.

Exact resume: the batch of step ``s`` and its noise depend only on ``(seed, s)``, and model,
optimizer, LR schedule, EMA and RNG states are restored from the last checkpoint, so an
interrupted run continued with the same command logs the same losses and saves the same weights
as an uninterrupted one, bit for bit on CPU (a test checks it). The uninterrupted run trains on
latents fresh from the encoders, the resumed one on the cache it reads back: same values, but the
encoders return channels-last tensors and the cache contiguous ones, and the memory layout picks
the convolution kernels; ``InMemoryDataset`` stores every tensor contiguous, so both see one
layout (before, they drifted apart by 1e-7 per step). The same command with other settings is
refused (``momaplib.training.settings``). On a GPU, kernels that are not deterministic (cuDNN,
atomics) can still differ in the last bits between any two runs, resumed or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel

from momaplib.control import DEFAULT_WINDOW
from momaplib.diffusion.conditions import (
    DEFAULT_CONDITIONS,
    check_conditions,
    condition_channels,
    select_image_latents,
)
from momaplib.diffusion.cvae import ConditionalMoMapVAE
from momaplib.diffusion.dsl import num_dsl_windows
from momaplib.diffusion.objectives import cvae_loss, diffusion_loss, motion_weight_map, pipeline_predictor
from momaplib.diffusion.pipeline import MoMapPipeline, MoMapVAEPipeline
from momaplib.diffusion.prepare import (
    check_inputs,
    image_unet_folder,
    job_grounder,
    latent_cache,
    latent_cache_path,
    load_frozen,
    pretrained_folder,
)
from momaplib.diffusion.unet import GROUNDING_CHANNELS, add_input_channels, build_unet, inflate_unet
from momaplib.training import (
    InMemoryDataset,
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    check_job_fields,
    check_job_settings,
    ema_weights,
    fit,
    micro_batch_generator,
    save_job_settings,
    save_pipeline,
    select_trainable,
)
from momaplib.training import (
    read_metrics as read_metric_records,
)


@dataclass
class TrainDiffusionJob:
    """Trains the MoMap diffusion model (``--model diffusion``) or the MoMap-VAE baseline.

    Writes ``output_dir/pipeline`` (a ``MoMapPipeline`` / ``MoMapVAEPipeline`` folder, EMA
    weights), ``metrics.jsonl`` (loss, learning rate, validation metrics) and
    ``checkpoints/step_*`` (exact resume: rerun the same command).
    """

    datasets: tuple[Path, ...] = (Path("data/sim_tabletop"), Path("data/sim_egocentric"))
    """Dataset folders written by `momap sim` (train and val splits are used)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            Path("outputs/diffusion"), max_steps=20_000, batch_size=128, lr_warmup_steps=500,
            checkpoint_every=2000, validate_every=2000, weight_decay=1e-2, num_workers=0,
        )
    )  # fmt: skip
    """The optimisation loop."""
    model: Literal["diffusion", "momap-vae"] = "diffusion"
    """What to train: the diffusion UNet (ours) or the conditional MoMap-VAE baseline."""
    vae: str = "momap-vae"
    """MoMap VAE: folder, bundled checkpoint name or hub id (frozen); "raw": no VAE, the UNet works on
    the MoMap itself (paper §4.4's ablation; ``momaplib.vae.raw.RawMoMapCodec``)."""
    image_vae: str = "image-vae"
    """Image VAE that encodes the conditions: folder, bundled name or hub id (frozen)."""
    text_encoder: str = "minilm"
    """Text encoder spec: minilm[:folder], clip[:id], none[:dim] (see momaplib.diffusion.text)."""
    pipeline_text_encoder: str | None = None
    """Text encoder spec written into the saved pipeline (None: --text-encoder); e.g. "minilm" when
    training read MiniLM from a local copy with "minilm:/path"."""
    init: Literal["scratch", "inflate", "pretrained"] = "scratch"
    """Initialisation: random; inflated from --image-unet (a pretrained image UNet); or the weights
    of a trained pipeline of the same kind (--pretrained), to fine-tune or continue training."""
    image_unet: str | None = None
    """With --init inflate: the image UNet2DConditionModel to start from, a folder or hub id of the
    UNet or of a whole Stable-Diffusion-style pipeline (its 'unet' subfolder is used). New input
    channels for the conditions, conv_out re-mapped to the MoMap latent channels, every other weight
    kept; a text encoder of another width than its cross-attention gets a learnt projection
    (``momaplib.diffusion.unet.inflate_unet``). The saved pipeline records it (init_source)."""
    inflate_input: Literal["zero", "duplicate"] = "zero"
    """With --init inflate: what the noisy MoMap latent's input channels start from: zero (the first
    layer reads only the RGB condition at first) or "duplicate" (Marigold's recipe: the image UNet's
    first-layer kernel copied onto them too, every copy divided by their number)."""
    pretrained: str | None = None
    """With --init pretrained: a MoMapPipeline (--model diffusion) or MoMapVAEPipeline
    (--model momap-vae) folder, bundled name or hub id whose UNet / conditional VAE starts training
    (its architecture replaces --block-out-channels and --layers-per-block)."""
    block_out_channels: tuple[int, ...] = (64, 128, 192)
    """UNet widths per level (latents are 1/8 of the image, so 3 levels reach 4x4 at 128 px)."""
    layers_per_block: int = 2
    """Resnet (+ attention) layers per UNet level."""
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    """Diffusion target."""
    num_train_timesteps: int = 1000
    """Noise levels of the DDPM schedule."""
    ema_decay: float = 0.999
    """EMA decay of the weights that are saved and validated (0 disables EMA)."""
    text_dropout: float = 0.1
    """Probability of replacing the prompt by "" (classifier-free guidance training)."""
    motion_weight: float = 0.0
    """Extra loss weight on latent cells where the scene moves: each cell's squared error counts
    ``1 + motion_weight * f``, with ``f`` the fraction of moving pixels under it (0: the paper's
    plain MSE). Moving objects cover a few cells of a mostly static map, so with plain MSE
    picking the wrong object costs little; weighting raises what the prompt is worth."""
    kl_weight: float = 1e-3
    """MoMap-VAE baseline only: weight of the KL term."""
    num_val_clips: int = 8
    """Validation clips per dataset folder (best-of-N metrics logged to metrics.jsonl)."""
    val_samples: int = 4
    """Samples per validation clip."""
    val_steps: int = 20
    """Denoising steps of validation sampling."""
    guidance_scale: float = 2.0
    """Guidance of validation sampling, stored as the saved pipeline's default (``config.guidance_scale``)."""
    max_clips: int | None = None
    """Use at most this many training clips (None: all)."""
    encode_batch_size: int = 64
    """Clips per batch when pre-encoding."""
    bundle_dir: Path | None = None
    """Also write the pipeline with fp16 shards (<= 15 MiB) here, e.g. checkpoints/momap-diffusion."""
    compile: str = ""
    """``torch.compile`` backend of the generator: "" (off), "inductor" (fast), "eager" (to debug a
    graph break). Compiled in place, so weights and checkpoints keep their names. Small UNets on
    16x16 latents are bound by kernel launches: inductor gives 1.7x more samples/s for the bundled
    UNet on an H100 (``benchmarks/bench_training.py``); the first steps pay the compile time."""
    trainable: str = ""
    """Comma-separated fragments of parameter names; when set, only the generator's parameters
    whose names contain one of them are trained and the rest stay frozen. "attn2" trains the
    text cross-attention alone (its query, key, value and output projections), the way Custom
    Diffusion fine-tunes only cross-attention: the image path cannot change, so the loss can
    only fall through what the prompt adds. "" trains everything."""
    grounding: bool = False
    """Prompt grounding (``momaplib.diffusion.grounding``): train a ``PromptGrounder`` on the
    latent set's instances first, and give the UNet one more condition channel, the map of the
    instance the prompt names (the true target in training, zeroed with the prompt when it is
    dropped; the grounder's scores at sampling). With --init pretrained from a UNet without the
    channel, it is added with zero weights, so training starts from that UNet's function."""
    conditions: tuple[str, ...] = DEFAULT_CONDITIONS
    """What the UNet reads (``momaplib.diffusion.conditions``): rgb, instance, xyz, text, dsl (and
    grounding, which --grounding adds). "rgb instance xyz dsl" is the paper's DSL model without text
    (the GT DSL of each clip, windows of 8 frames, from the latent cache); leaving out xyz or
    instance gives the paper's ablations. Saved in the pipeline's model_index.json."""
    dsl_dropout: float = 0.1
    """Probability of replacing the DSL by zeros (classifier-free guidance on the DSL)."""
    grounder_steps: int = 3000
    """Optimiser steps (batch 256) of the grounder."""
    encode_only: bool = False
    """Only write the latent cache (output_dir/latents_train.*), e.g. to share it between runs."""
    smoke: bool = False
    """Tiny, fast settings for tests and CPU smoke runs."""

    def __post_init__(self) -> None:
        check_job_fields(self)
        if self.grounding and self.model != "diffusion":
            raise ValueError(f"grounding: only --model diffusion takes the grounding map, not {self.model!r}")
        spec = job_conditions(self)
        if self.model != "diffusion" and spec != check_conditions(DEFAULT_CONDITIONS):
            raise ValueError(f"conditions: only --model diffusion takes other conditions, got {list(spec)}")
        if not 0 <= self.dsl_dropout < 1:
            raise ValueError(f"dsl_dropout: expected a probability in [0, 1), got {self.dsl_dropout}")

    def resolved(self) -> TrainDiffusionJob:
        """Returns the job with smoke overrides applied (a debug config is a small override)."""
        if not self.smoke:
            return self
        train = replace(
            self.train, max_steps=min(self.train.max_steps, 40), batch_size=min(self.train.batch_size, 4),
            lr_warmup_steps=0, checkpoint_every=min(self.train.checkpoint_every, 20), validate_every=0,
        )  # fmt: skip
        return replace(
            self, train=train, block_out_channels=(32, 32), layers_per_block=1, num_val_clips=2,
            val_samples=2, val_steps=3, grounder_steps=min(self.grounder_steps, 50), smoke=False,
        )  # fmt: skip

    def run(self, dataset: torch.utils.data.Dataset | None = None) -> Path:
        """Trains and returns the folder of the saved pipeline.

        ``dataset`` replaces the train split of ``datasets`` when encoding (e.g. an
        ``InMemoryDataset`` shared with the VAE jobs); validation reads ``datasets``.
        """
        return train(self.resolved(), dataset)


# ----------------------------------------------------------------------------- helpers
def job_conditions(job: TrainDiffusionJob) -> tuple[str, ...]:
    """Returns the job's conditions in channel order (``grounding`` added by --grounding)."""
    return check_conditions((*job.conditions, *(("grounding",) if job.grounding else ())))


def _build_model(
    job: TrainDiffusionJob, latent_channels: int, text_dim: int, latent_size: int, frames: int = 32
):
    spec = job_conditions(job)
    windows = num_dsl_windows(frames, DEFAULT_WINDOW) if "dsl" in spec else 0
    conditions = condition_channels(spec, windows)
    if job.init == "pretrained":
        model = _pretrained_model(job, latent_channels, text_dim)
        if job.model == "momap-vae":
            return model
        has = model.config.in_channels - latent_channels
        if job.grounding and has == conditions - GROUNDING_CHANNELS:
            return add_input_channels(model, GROUNDING_CHANNELS)
        if has != conditions:
            raise ValueError(
                f"pretrained: its UNet takes {has} condition channels, but --grounding "
                f"{job.grounding} with conditions {list(spec)} needs {conditions}"
            )
        return model
    if job.model == "momap-vae":
        return ConditionalMoMapVAE(
            latent_channels=latent_channels,
            cross_attention_dim=text_dim,
            block_out_channels=job.block_out_channels,
            layers_per_block=job.layers_per_block,
            norm_num_groups=min(32, *job.block_out_channels),
        )
    if job.init == "inflate":
        image_unet = UNet2DConditionModel.from_pretrained(image_unet_folder(job), torch_dtype=torch.float32)
        return inflate_unet(
            image_unet, latent_channels + conditions, latent_channels, text_dim=text_dim,
            noisy_input=job.inflate_input,
        )  # fmt: skip
    return build_unet(
        latent_channels=latent_channels,
        condition_channels=conditions,
        cross_attention_dim=text_dim,
        block_out_channels=job.block_out_channels,
        layers_per_block=job.layers_per_block,
        norm_num_groups=min(32, *job.block_out_channels),
        sample_size=latent_size,
    )


def _pretrained_model(job: TrainDiffusionJob, latent_channels: int, text_dim: int) -> torch.nn.Module:
    """Returns the float32 generator of the pipeline ``job.pretrained``, checked against the data."""
    folder = pretrained_folder(job)
    cls = ConditionalMoMapVAE if job.model == "momap-vae" else UNet2DConditionModel
    model = cls.from_pretrained(folder, torch_dtype=torch.float32)
    config = model.config
    got_latent = config.latent_channels if job.model == "momap-vae" else config.out_channels
    got_text = config.cross_attention_dim
    if got_latent != latent_channels or got_text != text_dim:
        raise ValueError(
            f"pretrained: {folder} expects {got_latent} latent channels and {got_text}-d text, but "
            f"the MoMap VAE gives {latent_channels} channels and the text encoder {text_dim}-d tokens"
        )
    return model


def init_source(job: TrainDiffusionJob) -> str:
    """Returns what the generator started from: "scratch", "inflate:<image UNet>" or
    "pretrained:<pipeline>" (followed by that pipeline's own source when it records one)."""
    if job.init == "inflate":
        duplicate = job.inflate_input == "duplicate"
        return f"inflate:{job.image_unet}" + (" (input: duplicate)" if duplicate else "")
    if job.init == "pretrained":
        import json

        from momaplib.checkpoints import resolve_checkpoint

        index = resolve_checkpoint(job.pretrained, verify=False) / "model_index.json"
        earlier = json.loads(index.read_text()).get("init_source") if index.is_file() else None
        return f"pretrained:{job.pretrained}" + (f" <- {earlier}" if earlier else "")
    return "scratch"


def noise_scheduler_for(job: TrainDiffusionJob) -> DDPMScheduler:
    """Returns the training noise schedule (scaled-linear; zero terminal SNR with v-prediction)."""
    return DDPMScheduler(
        num_train_timesteps=job.num_train_timesteps,
        beta_schedule="scaled_linear",
        prediction_type=job.prediction_type,
        rescale_betas_zero_snr=job.prediction_type == "v_prediction",
    )


def training_loss(job: TrainDiffusionJob, text_table: torch.Tensor):
    """Returns ``loss_fn(model, batch, step)`` for ``momaplib.training.fit``.

    ``batch`` holds ``latents``, ``condition`` and ``prompt_index`` of a ``LatentSet``;
    ``text_table`` (P, L, D) the prompt embeddings. Prompts are dropped to ``""`` with
    probability ``job.text_dropout``; noise, timesteps and dropout come from a generator seeded by
    the seed and the micro-batch's first item position: a resumed run draws the same, and the
    processes of a multi-GPU run draw different noise for their different items.
    """
    noise_scheduler = noise_scheduler_for(job)
    spec = job_conditions(job)

    def loss_fn(model, batch: dict[str, Any], step: int):
        latents = batch["latents"]
        # seeded by the micro-batch's first item: other noise on every process, the same on resume
        generator = micro_batch_generator(batch, job.train.seed, latents.device)
        prompt_index = batch["prompt_index"]
        if "text" not in spec:
            prompt_index = torch.zeros_like(prompt_index)  # always the empty prompt
        elif job.text_dropout > 0:
            drop = torch.rand(len(prompt_index), generator=generator, device=latents.device)
            prompt_index = torch.where(drop < job.text_dropout, 0, prompt_index)
        text = text_table[prompt_index]
        weight = motion_weight_map(batch["motion"], job.motion_weight) if job.motion_weight else None
        condition = batch["condition"]
        if job.model == "diffusion":
            condition = select_image_latents(condition, spec)
        if "target" in batch:  # the grounding map goes with the prompt: zeros when it is dropped
            keep = (prompt_index > 0).to(condition.dtype)[:, None, None, None]
            condition = torch.cat([condition, batch["target"].to(condition.dtype) * keep], dim=1)
        if "dsl" in batch:  # the GT DSL, zeros with probability dsl_dropout (the unguided branch)
            drop = torch.rand(len(prompt_index), generator=generator, device=latents.device)
            keep = (drop >= job.dsl_dropout).to(condition.dtype)[:, None, None, None]
            condition = torch.cat([condition, batch["dsl"].to(condition.dtype) * keep], dim=1)
        if job.model == "momap-vae":
            loss = cvae_loss(model, latents, condition, text, job.kl_weight, generator, weight)
        else:
            loss = diffusion_loss(model, noise_scheduler, latents, condition, text, generator, weight)
        return loss, {}

    return loss_fn


def make_pipeline(job: TrainDiffusionJob, model, vae, image_vae, text_spec: str | None = None, grounder=None):
    """Returns the inference pipeline around a trained generator (DDIM sampler for the UNet).

    ``text_spec`` is the text encoder the pipeline loads (default: the job's ``text_encoder``);
    ``grounder`` the ``PromptGrounder`` of a job with ``grounding``.
    """
    text_spec = text_spec or job.text_encoder
    if job.model == "momap-vae":
        return MoMapVAEPipeline(cvae=model, vae=vae, image_vae=image_vae, text_encoder=text_spec)
    scheduler = DDIMScheduler(
        num_train_timesteps=job.num_train_timesteps,
        prediction_type=job.prediction_type,
        beta_schedule="scaled_linear",
        clip_sample=False,
        timestep_spacing="trailing",
        rescale_betas_zero_snr=job.prediction_type == "v_prediction",
    )
    return MoMapPipeline(
        unet=model,
        vae=vae,
        image_vae=image_vae,
        scheduler=scheduler,
        text_encoder=text_spec,
        grounder=grounder,
        conditions=list(job_conditions(job)),
        init_source=init_source(job),
        guidance_scale=job.guidance_scale,
    )


def validate(job: TrainDiffusionJob, pipeline, device) -> dict[str, float]:
    """Returns mean best-of-N metrics of ``pipeline`` on the first val clips of each dataset."""
    from momaplib.control import OraclePlanner
    from momaplib.metrics import evaluate_predictor, load_split

    clips = []
    for root in job.datasets:
        try:
            clips += load_split(root, "val", max_clips=job.num_val_clips)
        except ValueError:
            continue  # tiny datasets may have no val clips
    if not clips:
        return {}
    options = {"num_inference_steps": job.val_steps, "guidance_scale": job.guidance_scale}
    planner = OraclePlanner() if "dsl" in job_conditions(job) else None  # the GT DSL of each clip
    predictor = pipeline_predictor(pipeline, use_text=True, planner=planner, **options)
    rows = evaluate_predictor(
        clips, predictor, num_samples=job.val_samples, seed=job.train.seed, progress=False
    )
    metrics = rows.drop(columns=["clip_id", "num_fg", "num_samples", "selected"]).mean(numeric_only=True)
    return {f"val/{name}": float(value) for name, value in metrics.items() if pd.notna(value)}


# ----------------------------------------------------------------------------- training
def train(job: TrainDiffusionJob, dataset: torch.utils.data.Dataset | None = None) -> Path:
    """Runs (or resumes) the training of ``job`` and returns ``output_dir/pipeline``."""
    config = job.train
    check_job_settings(job, config)  # reads only: nothing is written before the checks pass
    check_inputs(job, dataset)
    accelerator = build_accelerator(config)
    device = accelerator.device
    with accelerator.main_process_first():  # --vae raw: the main process fits and saves the codec
        vae, image_vae, text_encoder = load_frozen(job, device, dataset)
    with accelerator.main_process_first():  # the main process encodes, the others read its cache
        train_set = latent_cache(job, "train", vae, image_vae, text_encoder, device, dataset)
    if job.encode_only:
        return latent_cache_path(job)
    if job.motion_weight and train_set.motion is None:
        raise ValueError(
            f"motion_weight: the latent cache {latent_cache_path(job)} has no "
            "'motion' (written by an older version); delete it to re-encode, or set --motion-weight 0"
        )
    columns = {
        "latents": train_set.latents,
        "condition": train_set.condition,
        "prompt_index": train_set.prompt_index,
    }
    if job.motion_weight:
        columns["motion"] = train_set.motion
    grounder = None
    if "dsl" in job_conditions(job):
        if train_set.dsl is None:
            raise ValueError(
                f"conditions: 'dsl' needs the GT DSL in the latent cache, and {latent_cache_path(job)} has "
                "none (written by an older version); delete it to re-encode"
            )
        columns["dsl"] = train_set.dsl
    if job.grounding:
        with accelerator.main_process_first():
            grounder = job_grounder(job, train_set, device, accelerator.is_main_process)
        columns["target"] = train_set.target
    dataset = InMemoryDataset(columns)
    text_table = train_set.text.to(device)
    latent_channels, latent_size = train_set.latents.shape[1], train_set.latents.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        frames = vae.config.in_channels // 3
        model = _build_model(job, latent_channels, text_table.shape[-1], latent_size, frames)
    if job.compile:
        model.compile(backend=job.compile)  # in place: no "_orig_mod." in the state_dict
    optimizer = build_optimizer(select_trainable(model, job.trainable), config)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = build_scheduler(optimizer, config)
    ema = None
    if job.ema_decay:
        ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=job.ema_decay, foreach=True)
        ema.to(device)
    if accelerator.is_main_process:
        save_job_settings(job, config)

    def after_step(model, step: int) -> None:
        if ema is not None:
            ema.step(accelerator.unwrap_model(model).parameters())

    def validate_fn(model, step: int) -> dict[str, float]:
        with ema_weights(accelerator.unwrap_model(model), ema) as unwrapped:
            return validate(job, make_pipeline(job, unwrapped, vae, image_vae, grounder=grounder), device)

    fit(
        accelerator, config, model, optimizer, scheduler, dataset, training_loss(job, text_table),
        validate=validate_fn if job.num_val_clips > 0 else None, after_step=after_step,
        states={"ema": ema} if ema is not None else None,
    )  # fmt: skip
    path = config.output_dir / "pipeline"
    if accelerator.is_main_process:
        with ema_weights(accelerator.unwrap_model(model), ema) as unwrapped:
            text_spec = job.pipeline_text_encoder or job.text_encoder
            pipeline = make_pipeline(job, unwrapped.eval(), vae, image_vae, text_spec, grounder)
            save_pipeline(pipeline, path)
            if job.bundle_dir is not None:
                save_pipeline(pipeline, job.bundle_dir, bundle=True)
    accelerator.wait_for_everyone()
    return path


def read_metrics(output_dir: str | Path) -> pd.DataFrame:
    """Returns ``metrics.jsonl`` of a training run as a DataFrame (one row per step)."""
    return pd.DataFrame(read_metric_records(output_dir))


__all__ = [
    "TrainDiffusionJob",
    "make_pipeline",
    "read_metrics",
    "train",
    "training_loss",
    "validate",
]
