"""Few-step sampling: latent-consistency distillation (LCM; Luo et al. 2023) of a trained ``MoMapPipeline``.

``momap distill --teacher <pipeline> --latents <cache>`` trains a student UNet, a copy of the
teacher's, to map a noisy MoMap latent at any timestep of a ``num_ddim_timesteps`` grid straight to
the clean latent: the consistency function ``f(x_t, t) = c_skip(t) x_t + c_out(t) x0(x_t, t)``
with diffusers' ``LCMScheduler`` boundary scalings (``f(x, 0) = x``), with the teacher's
classifier-free guidance baked in:

- a training latent is noised to a grid timestep ``t`` and the frozen teacher takes one guided
  DDIM step from it to ``s = t - k`` (``k`` training timesteps per grid step, ``s`` at least 0);
- the target is the consistency function of the target network (an exponential moving average of
  the student, ``target_decay``) at ``(x_s, s)``; the student's at ``(x_t, t)`` is pulled to it by
  a pseudo-Huber loss (``huber_c``).

With ``lora_rank`` > 0 the student is the teacher plus low-rank adapters (LCM-LoRA; Luo et al.
2023, "LCM-LoRA: a universal Stable-Diffusion acceleration module"; peft's ``LoraConfig`` on the
attention, feed-forward and ResNet layers ``LORA_TARGETS``), trained alone with the teacher frozen,
and the target network is the student itself without gradients (as LCM-LoRA does). Its bundle holds
only the adapters (``lcm_lora.safetensors`` and ``lcm_lora.json``, naming the teacher): a few MiB
instead of a second UNet; ``load_pipeline`` of that folder loads the teacher and merges them.

The student samples with ``LCMScheduler`` in 1-8 steps and without guidance (one UNet call per
step instead of two): a ``MoMapPipeline`` whose config says ``guidance_scale=1.0`` and
``init_source="distill:<teacher>"``, with the teacher's VAE, image VAE, grounder and conditions. The
conditions, text and unconditional branch are those of the teacher's training
(``momaplib.diffusion.train.training_loss``); a fraction ``text_dropout`` of items get the empty
prompt, so the student also samples without one. The target network is saved in every checkpoint
and restored on resume.

Mind the learning rate: LCM-LoRA's 1e-4 for Stable Diffusion made a student of the bundled model
drift away from its teacher (its loss rose five-fold within 160 steps, in float32 as in bf16, and
its samples got worse with every added step), where 1e-5 kept it at its teacher
(``docs/experiments.md``, "A distilled few-step student").

Written here rather than taken from diffusers' example scripts: those are scripts that distill
Stable Diffusion's UNet on its own inputs; this reads the kit's latent caches and condition
channels and trains through ``momaplib.training.fit`` (accelerate, resume, several processes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, LCMScheduler, UNet2DConditionModel
from torch import Tensor

from momaplib.diffusion.conditions import select_image_latents
from momaplib.diffusion.latents import load_latent_set
from momaplib.diffusion.pipeline import DEFAULT_GUIDANCE, MoMapPipeline, MoMapVAEPipeline, load_pipeline
from momaplib.storage import atomic_write_bytes, atomic_write_text
from momaplib.training import (
    InMemoryDataset,
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    check_job_fields,
    check_job_settings,
    fit,
    micro_batch_generator,
    save_job_settings,
    save_pipeline,
    smoke_train,
)


@dataclass
class DistillJob:
    """Distils a trained ``MoMapPipeline`` into a few-step student (see the module docstring)."""

    teacher: str = "momap-diffusion"
    """Pipeline folder, bundled name or hub id of the teacher (a diffusion ``MoMapPipeline``)."""
    latents: Path = Path("outputs/diffusion/latents_train.safetensors")
    """Latent cache of training clips encoded by the teacher's VAE and image VAE, e.g. the teacher's
    own training cache (``momap train-diffusion`` writes ``<output_dir>/latents_train.safetensors``;
    ``--encode-only`` writes just that)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            Path("outputs/distill"), max_steps=4000, batch_size=64, learning_rate=2e-5
        )
    )
    """The optimisation loop."""
    guidance_scale: float | None = None
    """Guidance the student learns to reproduce (None: the teacher's ``config.guidance_scale``)."""
    num_ddim_timesteps: int = 50
    """Timesteps of the grid the teacher steps on; the student's ``LCMScheduler`` picks its steps
    from the same grid (``original_inference_steps``). Must divide the training timesteps."""
    target_decay: float = 0.95
    """Decay of the target network's moving average of the student (LCM: 0.95)."""
    huber_c: float = 0.001
    """Pseudo-Huber constant: ``sqrt(d^2 + c^2) - c`` per latent element."""
    text_dropout: float = 0.1
    """Fraction of items trained with the empty prompt (and no grounding map or DSL)."""
    lora_rank: int = 0
    """0: the student is a full copy of the teacher's UNet; > 0: LoRA adapters of this rank on the
    frozen teacher (``LORA_TARGETS``), saved alone (see the module docstring)."""
    bundle_dir: Path | None = None
    """Also write the student here, e.g. checkpoints/momap-diffusion-lcm: the pipeline with fp16
    shards, or with ``lora_rank`` the adapters in fp16."""
    smoke: bool = False
    """Tiny, fast settings for tests and CPU smoke runs."""

    def __post_init__(self) -> None:
        check_job_fields(self)
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise ValueError(f"guidance_scale: expected a finite value >= 0, got {self.guidance_scale}")
        if not isinstance(self.num_ddim_timesteps, int) or self.num_ddim_timesteps < 1:
            raise ValueError(f"num_ddim_timesteps: expected an integer >= 1, got {self.num_ddim_timesteps!r}")
        for name in ("target_decay", "text_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a value in [0, 1), got {getattr(self, name)}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"lora_rank: expected an integer >= 0, got {self.lora_rank!r}")
        if not self.huber_c > 0:
            raise ValueError(f"huber_c: expected a value > 0, got {self.huber_c}")

    def resolved(self) -> DistillJob:
        """Returns the job with smoke overrides applied."""
        return replace(self, train=smoke_train(self.train), smoke=False) if self.smoke else self

    def run(self) -> Path:
        """Trains (or resumes) and returns the folder of the student pipeline."""
        return distill(self.resolved())


def guided_ddim_step(x_t: Tensor, v: Tensor, alpha_t, sigma_t, alpha_s, sigma_s) -> Tensor:
    """Returns the deterministic DDIM step of a v-prediction ``v`` from ``x_t`` (signal and noise
    scales ``alpha_t``, ``sigma_t``) to the scales ``alpha_s``, ``sigma_s``."""
    x0 = alpha_t * x_t - sigma_t * v
    noise = sigma_t * x_t + alpha_t * v
    return alpha_s * x0 + sigma_s * noise


def consistency_function(lcm: LCMScheduler, x: Tensor, v: Tensor, t: Tensor, alpha, sigma) -> Tensor:
    """Returns ``c_skip(t) x + c_out(t) x0``: what ``LCMScheduler.step`` calls ``denoised`` for the
    v-prediction ``v`` at ``(x, t)`` (``t`` (B,); ``alpha``, ``sigma`` broadcastable to ``x``)."""
    c_skip, c_out = lcm.get_scalings_for_boundary_condition_discrete(t.float())
    shape = (-1, *[1] * (x.dim() - 1))
    return c_skip.view(shape) * x + c_out.view(shape) * (alpha * x - sigma * v)


def _conditions(batch: dict[str, Any], spec: tuple[str, ...], prompt_index: Tensor) -> tuple[Tensor, Tensor]:
    """Returns the (conditioned, unconditional) condition channels of a latent-cache batch, as
    ``training_loss`` and the pipeline's guidance lay them out (grounding map and DSL zero when
    unconditional; the grounding map also zero when the prompt is dropped)."""
    image = select_image_latents(batch["condition"], spec)
    cond, uncond = [image], [image]
    if "grounding" in spec:
        keep = (prompt_index > 0).to(image.dtype)[:, None, None, None]
        cond.append(batch["target"].to(image.dtype) * keep)
        uncond.append(torch.zeros_like(cond[-1]))
    if "dsl" in spec:
        cond.append(batch["dsl"].to(image.dtype))
        uncond.append(torch.zeros_like(cond[-1]))
    return torch.cat(cond, 1), torch.cat(uncond, 1)


def consistency_loss(
    job: DistillJob,
    teacher: UNet2DConditionModel,
    target: UNet2DConditionModel | None,
    noise: DDPMScheduler,
    lcm: LCMScheduler,
    text_table: Tensor,
    spec: tuple[str, ...],
    guidance: float,
):
    """Returns ``loss_fn(model, batch, step)`` of the student for ``momaplib.training.fit``
    (``target`` None: the student itself, without gradients, is its own target network)."""
    k = noise.config.num_train_timesteps // job.num_ddim_timesteps

    def loss_fn(model, batch: dict[str, Any], step: int):
        x0 = batch["latents"].float()
        device = x0.device
        generator = micro_batch_generator(batch, job.train.seed, device)
        prompt_index = batch["prompt_index"] if "text" in spec else torch.zeros_like(batch["prompt_index"])
        drop = torch.rand(len(x0), generator=generator, device=device) < job.text_dropout
        prompt_index = torch.where(drop, 0, prompt_index)
        text, empty = text_table[prompt_index], text_table[torch.zeros_like(prompt_index)]
        cond, uncond = _conditions(batch, spec, prompt_index)
        index = torch.randint(0, job.num_ddim_timesteps, (len(x0),), generator=generator, device=device)
        t = (index + 1) * k - 1
        s = (t - k).clamp(min=0)
        x_t = noise.add_noise(x0, torch.randn(x0.shape, generator=generator, device=device), t)
        cumprod = noise.alphas_cumprod.to(device)
        shape = (-1, 1, 1, 1)
        alpha_t, sigma_t = cumprod[t].sqrt().view(shape), (1 - cumprod[t]).sqrt().view(shape)
        alpha_s, sigma_s = cumprod[s].sqrt().view(shape), (1 - cumprod[s]).sqrt().view(shape)
        with torch.no_grad():
            both = teacher(
                torch.cat([torch.cat([x_t, cond], 1), torch.cat([x_t, uncond], 1)]),
                torch.cat([t, t]), encoder_hidden_states=torch.cat([text, empty]),
            ).sample.float()  # fmt: skip
            v_cond, v_uncond = both.chunk(2)
            v = v_uncond + guidance * (v_cond - v_uncond)
            x_s = guided_ddim_step(x_t, v, alpha_t, sigma_t, alpha_s, sigma_s)
            v_target = (target or model)(
                torch.cat([x_s, cond], 1), s, encoder_hidden_states=text
            ).sample.float()
            f_target = consistency_function(lcm, x_s, v_target, s, alpha_s, sigma_s)
        v_student = model(torch.cat([x_t, cond], 1), t, encoder_hidden_states=text).sample.float()
        f_student = consistency_function(lcm, x_t, v_student, t, alpha_t, sigma_t)
        difference = f_student - f_target
        loss = ((difference.square() + job.huber_c**2).sqrt() - job.huber_c).mean()
        return loss, {}

    return loss_fn


def load_teacher(job: DistillJob) -> MoMapPipeline:
    """Loads and checks the teacher: a diffusion ``MoMapPipeline`` with a v-prediction schedule."""
    teacher = load_pipeline(job.teacher)
    if not isinstance(teacher, MoMapPipeline) or isinstance(teacher, MoMapVAEPipeline):
        raise ValueError(
            f"teacher: {job.teacher} is a {type(teacher).__name__}; expected a diffusion MoMapPipeline"
        )
    prediction = teacher.scheduler.config.prediction_type
    if prediction != "v_prediction":
        raise ValueError(f"teacher: {job.teacher} predicts {prediction!r}; distillation needs 'v_prediction'")
    steps = teacher.scheduler.config.num_train_timesteps
    if steps % job.num_ddim_timesteps:
        raise ValueError(
            f"num_ddim_timesteps: expected a divisor of the teacher's {steps} training timesteps, "
            f"got {job.num_ddim_timesteps}"
        )
    return teacher


def distill(job: DistillJob) -> Path:
    """Runs (or resumes) ``job`` and returns ``output_dir/pipeline``."""
    config = job.train
    check_job_settings(job, config)
    teacher = load_teacher(job)
    spec = teacher.conditions
    data = load_latent_set(job.latents)
    columns = {"latents": data.latents, "condition": data.condition, "prompt_index": data.prompt_index}
    for name, key in (("grounding", "target"), ("dsl", "dsl")):
        if name in spec:
            if getattr(data, key) is None:
                raise ValueError(f"latents: the teacher reads {name!r}, and {job.latents} has no {key!r}")
            columns[key] = getattr(data, key)
    channels = data.latents.shape[1] + _conditions(columns, spec, data.prompt_index[:1])[0].shape[1]
    if (
        data.latents.shape[1] != teacher.unet.config.out_channels
        or channels != teacher.unet.config.in_channels
    ):
        unet = teacher.unet.config
        raise ValueError(
            f"latents: {job.latents} gives {data.latents.shape[1]} latent and {channels} UNet input "
            f"channels; the teacher's UNet takes {unet.out_channels} and {unet.in_channels} "
            "(encode the cache with the teacher's VAE and image VAE)"
        )
    accelerator = build_accelerator(config)
    device = accelerator.device
    frozen = teacher.unet.to(device).eval().requires_grad_(False)
    student = UNet2DConditionModel.from_config(frozen.config)
    student.load_state_dict(frozen.state_dict())
    target = None
    if job.lora_rank:
        student.requires_grad_(False)
        student.add_adapter(lora_config(job.lora_rank))  # only the adapters train
    else:
        target = UNet2DConditionModel.from_config(frozen.config).to(device)
        target.load_state_dict(frozen.state_dict())
        target.eval().requires_grad_(False)
    noise = DDPMScheduler.from_config(teacher.scheduler.config)
    lcm = LCMScheduler.from_config(teacher.scheduler.config, original_inference_steps=job.num_ddim_timesteps)
    guidance = job.guidance_scale
    if guidance is None:
        guidance = getattr(teacher.config, "guidance_scale", DEFAULT_GUIDANCE)
    optimizer = build_optimizer([p for p in student.parameters() if p.requires_grad], config)
    student, optimizer = accelerator.prepare(student, optimizer)
    scheduler = build_scheduler(optimizer, config)
    if accelerator.is_main_process:
        save_job_settings(job, config)
    targets = list(target.parameters()) if target is not None else []  # LoRA: the student is its own target

    def after_step(model, step: int) -> None:  # the target network follows the student
        online = list(accelerator.unwrap_model(model).parameters())
        torch._foreach_lerp_(targets, online, 1 - job.target_decay)

    loss_fn = consistency_loss(job, frozen, target, noise, lcm, data.text.to(device), spec, guidance)
    ema = dict(after_step=after_step, states={"target": target}) if target is not None else {}
    fit(accelerator, config, student, optimizer, scheduler, InMemoryDataset(columns), loss_fn, **ema)
    path = config.output_dir / "pipeline"
    if job.lora_rank:
        if accelerator.is_main_process:
            adapters = accelerator.unwrap_model(student)
            save_lora_student(adapters, job, lcm, path)
            if job.bundle_dir is not None:
                save_lora_student(adapters, job, lcm, job.bundle_dir, dtype=torch.float16)
        accelerator.wait_for_everyone()
        return path
    if accelerator.is_main_process:
        pipeline = MoMapPipeline(
            unet=accelerator.unwrap_model(student).eval(), vae=teacher.vae, image_vae=teacher.image_vae,
            scheduler=lcm, text_encoder=teacher.config.text_encoder, grounder=teacher.grounder,
            conditions=list(teacher.config.conditions), dsl_window=teacher.config.dsl_window,
            init_source=f"distill:{job.teacher}", guidance_scale=1.0,
            anchor_t0=getattr(teacher.config, "anchor_t0", True),
            fill_condition_holes=getattr(teacher.config, "fill_condition_holes", True),
        )  # fmt: skip
        save_pipeline(pipeline, path)
        if job.bundle_dir is not None:
            save_pipeline(pipeline, job.bundle_dir, bundle=True)
    accelerator.wait_for_everyone()
    return path


#: The layers LoRA adapts (peft matches name suffixes): attention projections, feed-forward and the
#: ResNet blocks' convolutions and time projections, as LCM-LoRA adapts SD's UNet.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "time_emb_proj")  # fmt: skip
LORA_CONFIG, LORA_WEIGHTS = "lcm_lora.json", "lcm_lora.safetensors"


def lora_config(rank: int):
    """Returns peft's ``LoraConfig`` of a student of rank ``rank`` (alpha = rank: scale 1)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)
    )


def save_lora_student(unet, job: DistillJob, lcm: LCMScheduler, folder: Path, dtype=torch.float32) -> None:
    """Writes a LoRA student's adapters (``LORA_WEIGHTS``), what they adapt (``LORA_CONFIG``: the
    teacher, rank, LCM schedule) and the weight manifest into ``folder``, each file atomically."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save

    from momaplib.checkpoints import write_weight_manifest

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    atomic_write_bytes(folder / LORA_WEIGHTS, save(state))
    settings = {
        "teacher": job.teacher, "rank": job.lora_rank, "target_modules": list(LORA_TARGETS),
        "scheduler": dict(lcm.config), "guidance_scale": 1.0,
    }  # fmt: skip
    atomic_write_text(folder / LORA_CONFIG, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    write_weight_manifest(folder)


def load_lora_student(folder, teacher: str | None = None, **kwargs) -> MoMapPipeline:
    """Returns the few-step ``MoMapPipeline`` of a LoRA student folder: its teacher (``teacher``
    overrides the recorded one) with the adapters merged into the UNet, ``LCMScheduler`` and no
    guidance. ``kwargs`` go to the teacher's ``from_pretrained``."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    from momaplib.checkpoints import resolve_checkpoint

    folder = resolve_checkpoint(folder)  # the adapters checked against their manifest
    settings = json.loads((folder / LORA_CONFIG).read_text())
    pipeline = load_pipeline(teacher or settings["teacher"], **kwargs)
    unet = pipeline.unet
    dtype = unet.dtype
    unet.add_adapter(lora_config(int(settings["rank"])))
    state = load_file(str(folder / LORA_WEIGHTS))
    result = set_peft_model_state_dict(unet, {k: v.to(dtype) for k, v in state.items()})
    if result.unexpected_keys:
        raise ValueError(
            f"{folder}: adapters the teacher's UNet has no layer for: {result.unexpected_keys[:3]}"
        )
    unet.fuse_lora()
    unet.unload_lora()
    pipeline.scheduler = LCMScheduler.from_config(settings["scheduler"])
    pipeline.register_to_config(
        guidance_scale=float(settings["guidance_scale"]),
        init_source=f"distill-lora:{teacher or settings['teacher']}",
    )
    return pipeline


__all__ = [
    "LORA_TARGETS",
    "DistillJob",
    "consistency_function",
    "distill",
    "guided_ddim_step",
    "load_lora_student",
    "lora_config",
    "save_lora_student",
]  # fmt: skip
