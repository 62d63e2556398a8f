"""The training configuration shared by every trainer, and the accelerator, optimizer and LR
schedule it builds."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from momaplib.checks import check_device
from momaplib.training.fields import check_choice, check_number, field_name

#: Sub-folder of ``output_dir`` that holds the training checkpoints.
CHECKPOINTS_DIR = "checkpoints"
#: The per-step log.
METRICS_FILE = "metrics.jsonl"
#: Written last into a checkpoint folder; a folder without it is incomplete.
STATE_FILE = "state.json"
#: Losses are fetched from the device and written every this many steps (and at checkpoints).
LOG_FLUSH_STEPS = 20
#: Default largest safetensors file of bundled weights (a repository-friendly file size).
BUNDLE_SHARD_BYTES = 15 * 2**20
#: Room kept for a shard's safetensors header: diffusers splits shards by tensor bytes alone, so
#: shards are planned this much below the file-size limit.
SHARD_HEADER_ROOM = 2**19


class ResumeError(ValueError):
    """``output_dir`` holds an earlier run that this one may not silently continue or overwrite."""


@dataclass
class TrainConfig:
    """The optimisation loop of one training run (shared by every trainer; nest it in a job)."""

    output_dir: Path = Path("outputs/train")
    """Run folder: checkpoints/, metrics.jsonl, the final model."""
    max_steps: int = 2000
    """Optimizer steps of the whole run (a resumed run continues up to this step)."""
    batch_size: int = 16
    """Items per micro-batch and process."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    learning_rate: float = 2e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_schedule: Literal["constant", "cosine", "linear"] = "cosine"
    """Learning-rate schedule after warm-up (decays to 0 at max_steps unless constant)."""
    lr_warmup_steps: int = 100
    """Linear warm-up steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: no clipping)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision of forward passes (bf16 on recent GPUs; weights and optimizer stay fp32)."""
    seed: int = 0
    """Seed of initialisation, data order and sampling noise."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (the latest ones)."""
    validate_every: int = 500
    """Run validation every this many steps and at the end (also on a time-limit stop); 0: only at the end."""
    resume: bool = True
    """Continue from the latest checkpoint in output_dir; False refuses a folder that has one."""
    num_workers: int = 4
    """DataLoader worker processes when items are read from disk (0: in the main process)."""
    in_memory: bool = False
    """Load every training clip into memory once (fp16) instead of reading files each step."""
    in_memory_device: str = "cpu"
    """Where in-memory tensors live: "cpu", or "cuda" to keep the whole dataset on the GPU."""
    progress: bool = True
    """Show progress bars."""
    time_limit_minutes: float = 0.0
    """Stop after the first step past this wall-clock budget, with a checkpoint (0: no limit);
    rerunning the command resumes towards max_steps."""

    allow_config_change: bool = False
    """Continue a run in output_dir whose saved settings (train_config.json) differ from these,
    keeping the old ones as train_config.<step>.json; without it such a rerun is refused with the
    changed fields (``momaplib.training.settings``; some fields may always change)."""

    def __post_init__(self) -> None:
        if not str(self.output_dir):  # Path("") would be the working directory
            raise ValueError(f"{field_name('TrainConfig', 'output_dir')}: expected a folder, got ''")
        self.output_dir = Path(self.output_dir)
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first field outside its range (every trainer calls it,
        through the constructor, before anything is written)."""
        owner = "TrainConfig"
        positive = (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "checkpoint_every",
            "keep_checkpoints",
        )
        for name in positive:
            check_number(owner, name, getattr(self, name), minimum=1, integer=True)
        for name in ("lr_warmup_steps", "validate_every", "num_workers"):
            check_number(owner, name, getattr(self, name), minimum=0, integer=True)
        check_number(owner, "seed", self.seed, minimum=0, maximum=2**32 - 1, integer=True)
        check_number(owner, "learning_rate", self.learning_rate, above=0)
        for name in ("weight_decay", "max_grad_norm", "time_limit_minutes"):
            check_number(owner, name, getattr(self, name), minimum=0)
        check_choice(owner, "lr_schedule", self.lr_schedule, ("constant", "cosine", "linear"))
        check_choice(owner, "mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))
        check_device(field_name(owner, "in_memory_device"), self.in_memory_device)


def build_accelerator(config: TrainConfig) -> Accelerator:
    """Returns an ``Accelerator`` for ``config`` (precision, accumulation) and seeds every RNG.

    The LR scheduler is stepped by ``fit`` once per optimizer step (``step_scheduler_with_optimizer
    =False``), whatever the number of processes.
    """
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        project_config=ProjectConfiguration(project_dir=str(config.output_dir)),
        step_scheduler_with_optimizer=False,
    )
    set_seed(config.seed)
    return accelerator


def build_optimizer(parameters: Any, config: TrainConfig) -> torch.optim.Optimizer:
    """Returns AdamW over ``parameters`` with the config's learning rate and weight decay."""
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def select_trainable(model: torch.nn.Module, fragments: str) -> list[torch.nn.Parameter]:
    """Freezes every parameter of ``model`` whose name contains none of the comma-separated
    ``fragments`` and returns the trainable ones (all of them for ``""``)."""
    parts = [part.strip() for part in fragments.split(",") if part.strip()]
    if not parts:
        return [p for p in model.parameters() if p.requires_grad]
    chosen = []
    for name, parameter in model.named_parameters():
        keep = any(part in name for part in parts)
        parameter.requires_grad_(keep)
        if keep:
            chosen.append(parameter)
    if not chosen:
        raise ValueError(f"trainable: no parameter name contains any of {parts} (e.g. 'attn2', 'conv_in')")
    return chosen


def smoke_train(
    config: TrainConfig, max_steps: int = 20, batch_size: int = 2, checkpoint_every: int = 10
) -> TrainConfig:
    """Returns the smoke override of a trainer's loop (a job's ``--smoke``): at most ``max_steps``
    steps of ``batch_size`` items, no warm-up, a checkpoint every ``checkpoint_every`` steps,
    validation only at the end, data read in the main process."""
    return replace(
        config,
        max_steps=min(config.max_steps, max_steps),
        batch_size=min(config.batch_size, batch_size),
        lr_warmup_steps=0,
        checkpoint_every=min(config.checkpoint_every, checkpoint_every),
        validate_every=0,
        num_workers=0,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Returns the warm-up + ``lr_schedule`` scheduler, in optimizer steps."""
    warmup, total = config.lr_warmup_steps, config.max_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if config.lr_schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
