"""Training utilities shared by every trainer of the kit (VAEs, diffusion UNet): small, with accelerate.

A trainer builds its model, optimizer and loss, then hands the loop to ``fit``::

    config = TrainConfig(output_dir=Path("outputs/my-run"), max_steps=2000)
    accelerator = build_accelerator(config)
    model, optimizer = accelerator.prepare(model, torch.optim.AdamW(model.parameters(), config.learning_rate))
    scheduler = build_scheduler(optimizer, config)
    run = fit(accelerator, config, model, optimizer, scheduler, dataset, loss_fn, validate=validate_fn)

What ``fit`` guarantees:
- **Deterministic data order.** Micro-batch ``k`` of the run is a pure function of ``(seed, k)``
  (``StepBatchSampler``: the stream is the concatenation of epoch permutations seeded by
  ``(seed, epoch)``, cut into consecutive batches), so a resumed run sees exactly the batches the
  uninterrupted run would have seen, whether items come from disk (a ``DataLoader`` with
  workers) or from memory (``InMemoryDataset``). With several processes, process ``r`` takes
  slice ``r`` of each global batch.
- **Atomic checkpoints** every ``checkpoint_every`` steps and at the end, in
  ``output_dir/checkpoints/step_XXXXXXX``: accelerate's state (model, optimizer, grad scaler,
  registered objects such as an EMA, RNG states of every process; safetensors for the model,
  ``torch.load`` with ``weights_only=True`` on the way back) plus ``state.json`` with the step,
  from which the LR scheduler is set again. Each is written into
  a hidden temporary folder and renamed into place, so a kill never leaves a checkpoint that
  ``latest_checkpoint`` accepts half-written; the last ``keep_checkpoints`` are kept.
- **Exact resume.** Rerunning the same command continues from the latest checkpoint: same
  weights, optimizer moments, LR, RNG state and data position, so on CPU the loss curve of an
  interrupted-and-resumed run equals the uninterrupted one bit for bit (a test checks this).
  ``metrics.jsonl`` is cut back to the checkpoint's step first, so it never holds two curves.
- **Logging**: one JSON line per optimizer step in ``output_dir/metrics.jsonl`` (``step``,
  ``loss``, ``lr``, the loss function's extra terms, validation metrics on validation steps),
  a ``tqdm.auto`` progress bar on the main process.

Step numbers count optimizer steps; one step is ``gradient_accumulation_steps`` micro-batches of
``batch_size`` items per process. The LR schedule is in optimizer steps too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.data import MoMapDataset, collate, load_settings
from momaplib.storage import atomic_write_text

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

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        positive = (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "checkpoint_every",
            "keep_checkpoints",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("lr_warmup_steps", "validate_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name}: expected >= 0, got {getattr(self, name)}")


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


# ----------------------------------------------------------------------------- data
class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the index lists of micro-batches ``start, start + 1, ...`` forever.

    The item stream is the concatenation of permutations of ``range(num_items)``, epoch ``e``
    permuted by ``torch.randperm`` seeded with ``(seed, e)``; global micro-batch ``k`` is stream
    positions ``[k * B * R, (k + 1) * B * R)`` (``B`` = ``batch_size``, ``R`` = ``num_replicas``)
    and process ``rank`` takes its ``rank``-th slice of ``B``. So batch ``k`` never depends on what
    ran before it, and no item is dropped (a batch may straddle two epochs).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        start: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if num_items < 1:
            raise ValueError("StepBatchSampler: the dataset is empty")
        if batch_size < 1 or start < 0 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"StepBatchSampler: expected batch_size >= 1, start >= 0, 0 <= rank < num_replicas; got "
                f"{batch_size}, {start}, {rank}, {num_replicas}"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.num_replicas, self.rank = start, num_replicas, rank
        self._permutations: dict[int, Tensor] = {}

    def _permutation(self, epoch: int) -> Tensor:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.pop(min(self._permutations))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutations[epoch] = torch.randperm(self.num_items, generator=generator)
        return self._permutations[epoch]

    def batch(self, k: int) -> list[int]:
        """Returns the item indices of micro-batch ``k`` for this process."""
        first = (k * self.num_replicas + self.rank) * self.batch_size
        positions = range(first, first + self.batch_size)
        return [int(self._permutation(p // self.num_items)[p % self.num_items]) for p in positions]

    def __iter__(self) -> Iterator[list[int]]:
        for k in count(self.start):
            yield self.batch(k)


class InMemoryDataset(torch.utils.data.Dataset):
    """Items of another dataset held as stacked tensors: one load, then batches by indexing.

    ``tensors`` maps keys to (N, ...) tensors, ``lists`` keys to length-N lists (strings). Items
    and batches look like the source dataset's (``get_batch`` skips collation). Floating tensors
    are stored in ``dtype`` (fp16 halves the memory: MoMaps in model range lose ~5e-4 relative)
    except ``FLOAT32_KEYS`` (normalisation and cameras), which stay exact.
    """

    #: Keys kept in float32 whatever ``dtype`` is.
    FLOAT32_KEYS = ("center", "scale", "K", "ref_from_cam")

    def __init__(self, tensors: Mapping[str, Tensor], lists: Mapping[str, list] | None = None):
        self.tensors, self.lists = dict(tensors), dict(lists or {})
        sizes = {len(value) for value in [*self.tensors.values(), *self.lists.values()]}
        if len(sizes) != 1:
            raise ValueError(f"InMemoryDataset: every key needs the same number of items, got sizes {sizes}")
        self.size = sizes.pop()

    @classmethod
    def load(
        cls,
        dataset: torch.utils.data.Dataset,
        keys: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float16,
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        batch_size: int = 16,
        progress: bool = True,
        desc: str = "load into memory",
    ) -> InMemoryDataset:
        """Returns every item of ``dataset`` (only ``keys``, default all) as one ``InMemoryDataset``.

        Items are read once in order by a ``DataLoader`` with ``num_workers`` processes; tensors
        are preallocated on ``device`` from the first batch's shapes.
        """
        if len(dataset) == 0:
            raise ValueError("InMemoryDataset.load: the dataset is empty")
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate, shuffle=False
        )
        tensors: dict[str, Tensor] = {}
        lists: dict[str, list] = {}
        position = 0
        with tqdm(total=len(dataset), desc=desc, unit="clip", disable=not progress) as bar:
            for batch in loader:
                size = len(next(iter(batch.values())))
                for key, value in batch.items():
                    if keys is not None and key not in keys:
                        continue
                    if isinstance(value, Tensor):
                        if key not in tensors:
                            store = value.dtype
                            if value.is_floating_point() and key not in cls.FLOAT32_KEYS:
                                store = dtype
                            tensors[key] = torch.empty(
                                (len(dataset), *value.shape[1:]), dtype=store, device=device
                            )
                        tensors[key][position : position + size] = value.to(device, tensors[key].dtype)
                    else:
                        lists.setdefault(key, []).extend(value)
                position += size
                bar.update(size)
        if keys is not None:
            missing = [key for key in keys if key not in tensors and key not in lists]
            if missing:
                raise ValueError(f"InMemoryDataset.load: the items have no keys {missing}")
        return cls(tensors, lists)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            **{key: value[index] for key, value in self.tensors.items()},
            **{key: value[index] for key, value in self.lists.items()},
        }

    def get_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Returns the batch of ``indices``: tensors indexed at once, lists as lists."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        batch: dict[str, Any] = {}
        for key, value in self.tensors.items():
            batch[key] = value[index.to(value.device)]
        for key, value in self.lists.items():
            batch[key] = [value[i] for i in indices]
        return batch


def open_datasets(
    roots: Sequence[str | os.PathLike], split: str | None = "train"
) -> torch.utils.data.Dataset:
    """Returns the ``split`` clips of one or more dataset folders as one dataset.

    Every folder must hold MoMaps of the same (T, H, W) (families may differ); the message names
    the folder that differs.
    """
    if not roots:
        raise ValueError("dataset: expected at least one dataset folder")
    datasets, shapes = [], {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"dataset: {root} does not exist; write one with `momap sim --out {root} --num-clips N`"
            )
        sim = load_settings(root)["sim"]
        shapes[str(root)] = (sim["num_frames"], sim["height"], sim["width"])
        datasets.append(MoMapDataset(root, split=split))
    if len(set(shapes.values())) > 1:
        raise ValueError(f"dataset: the folders hold MoMaps of different (T, H, W): {shapes}")
    return datasets[0] if len(datasets) == 1 else torch.utils.data.ConcatDataset(datasets)


def dataset_shape(roots: Sequence[str | os.PathLike]) -> tuple[int, int, int]:
    """Returns (T, H, W) of the MoMaps in dataset folders (``open_datasets`` checks they agree)."""
    sim = load_settings(Path(roots[0]))["sim"]
    return sim["num_frames"], sim["height"], sim["width"]


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Returns the batch with tensors on ``device`` and floating tensors in float32."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
            if value.is_floating_point() and value.dtype != torch.float32:
                value = value.float()
        moved[key] = value
    return moved


def batch_stream(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    seed: int,
    start: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yields micro-batches ``start, start + 1, ...`` (see ``StepBatchSampler``) on ``device``.

    An ``InMemoryDataset`` is indexed directly; any other dataset is read by a ``DataLoader``
    with ``num_workers`` processes (its own generator: the global RNG is not touched).
    """
    sampler = StepBatchSampler(len(dataset), batch_size, seed, start, num_replicas, rank)
    if isinstance(dataset, InMemoryDataset):
        for indices in sampler:
            yield to_device(dataset.get_batch(indices), device)
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    for batch in loader:
        yield to_device(batch, device)


def load_training_data(
    roots: Sequence[str | os.PathLike],
    config: TrainConfig,
    keys: Sequence[str] | None = None,
    split: str | None = "train",
) -> torch.utils.data.Dataset:
    """Returns the ``split`` clips of ``roots``, loaded into memory when ``config.in_memory``."""
    dataset = open_datasets(roots, split)
    if len(dataset) == 0:
        raise ValueError(f"dataset: no {split!r} clips in {[str(r) for r in roots]}")
    if not config.in_memory:
        return dataset
    loaded = InMemoryDataset.load(
        dataset,
        keys=keys,
        device=config.in_memory_device,
        num_workers=config.num_workers,
        progress=config.progress,
        desc=f"load {split} clips",
    )
    if config.progress:
        print(
            f"{len(loaded)} {split} clips in memory "
            f"({loaded.nbytes / 2**30:.2f} GiB on {config.in_memory_device})"
        )
    return loaded


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {key: _plain(v) for key, v in value.__dict__.items()}
    return value


def save_job_settings(job: Any, output_dir: str | os.PathLike) -> Path:
    """Writes a job dataclass (nested configs included) as ``output_dir/train_config.json``."""
    path = Path(output_dir) / "train_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_plain(job), indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------- checkpoints and logs
def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """Returns ``output_dir/checkpoints/step_XXXXXXX``."""
    return Path(output_dir) / CHECKPOINTS_DIR / f"step_{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Returns complete checkpoints as (step, folder), oldest first; temporary folders are skipped."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = []
    if root.is_dir():
        for path in root.glob("step_*"):
            if path.is_dir() and (path / STATE_FILE).is_file():
                try:
                    found.append((int(path.name.removeprefix("step_")), path))
                except ValueError:
                    continue
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """Returns the newest complete checkpoint folder of a run, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    keep: int = 2,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes accelerate's state + ``state.json`` (step, ``extra``) atomically; returns the folder.

    Every process calls it (each saves its RNG state). The folder is written under a hidden
    temporary name and renamed when complete; checkpoints beyond the newest ``keep`` are removed.
    """
    final = checkpoint_dir(output_dir, step)
    temporary = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "time": time.time(), **(extra or {})}
        atomic_write_text(temporary / STATE_FILE, json.dumps(state, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_dir(final.parent)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on every platform; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> dict[str, Any]:
    """Restores accelerate's state from a checkpoint folder; returns its ``state.json``."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise ResumeError(f"checkpoint {path}: no {STATE_FILE}; it is incomplete")
    accelerator.load_state(str(path))
    return json.loads(state_file.read_text())


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (main process only).

    Opening it for a run that starts at ``start_step`` drops lines of later steps (left by a run
    killed after its last checkpoint), so the file always holds one curve.
    """

    def __init__(self, path: str | os.PathLike, start_step: int = 0, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        records = read_metrics(self.path)
        kept = [record for record in records if record.get("step", 0) <= start_step]
        if len(kept) != len(records) or not self.path.read_text().endswith("\n"):
            atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Appends ``records`` and flushes them to disk."""
        if not self.enabled or not records:
            return
        with open(self.path, "a") as file:
            for record in records:
                file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Returns the records of a ``metrics.jsonl`` (a torn last line from a kill is skipped)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# ----------------------------------------------------------------------------- the loop
LossFn = Callable[[torch.nn.Module, dict[str, Any], int], tuple[Tensor, Mapping[str, Tensor | float]]]
ValidateFn = Callable[[torch.nn.Module, int], Mapping[str, float]]


@dataclass
class FitResult:
    """What ``fit`` did."""

    start_step: int  # step the run started from (0, or the resumed checkpoint's)
    final_step: int  # = config.max_steps
    last_loss: float | None  # loss of the last step run here (None when nothing was left to do)
    validation: dict[str, float] = field(default_factory=dict)  # metrics of the last validation
    seconds: float = 0.0  # wall-clock time of the loop


def resume_step(accelerator: Accelerator, config: TrainConfig) -> int:
    """Returns the step to start from: 0, or that of the latest checkpoint (whose state is loaded)."""
    path = latest_checkpoint(config.output_dir)
    if path is None:
        return 0
    if not config.resume:
        raise ResumeError(
            f"output_dir {config.output_dir} holds checkpoints of an earlier run ({path.name}); "
            "resume it (resume=True, the default) or choose another output_dir"
        )
    state = load_checkpoint(accelerator, path)
    if accelerator.is_main_process and config.progress:
        print(f"resuming from {path} (step {state['step']})")
    return int(state["step"])


def _advance_scheduler(lr_scheduler: Any, step: int) -> None:
    """Brings a freshly built LR scheduler to ``step`` after a resume.

    The scheduler is not part of accelerate's checkpoint (only prepared or registered objects
    are, and registering it now would shift the custom-object slots of existing checkpoints),
    but ``build_scheduler``'s factor is a pure function of the step, so setting the step gives
    exactly the LR of the uninterrupted run. Without this a resumed run started the warm-up over.
    """
    if step <= 0 or getattr(lr_scheduler, "last_epoch", None) != 0:
        return
    lr_scheduler.last_epoch = step - 1
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        lr_scheduler.step()


def fit(
    accelerator: Accelerator,
    config: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    dataset: torch.utils.data.Dataset,
    loss_fn: LossFn,
    validate: ValidateFn | None = None,
    stop_after: int | None = None,
    after_step: Callable[[torch.nn.Module, int], None] | None = None,
) -> FitResult:
    """Trains ``model`` up to ``config.max_steps``, resuming from the latest checkpoint.

    ``model`` and ``optimizer`` must already be ``accelerator.prepare``-d. ``loss_fn(model, batch,
    step)`` returns ``(loss, logs)``: a scalar tensor to minimise and extra named terms to log
    (tensors are averaged over micro-batches and fetched lazily). ``validate(model, step)``
    returns named floats; it runs on every process with the model in eval mode, without
    gradients, and with the RNG state saved and restored around it (so validating never changes
    the training curve). ``stop_after`` ends the loop after that step as if killed right after
    its checkpoint (tests use it to interrupt a run). ``after_step(model, step)`` runs after
    every optimizer step, before validation and checkpointing (e.g. an EMA update; objects with
    state it keeps must be registered with ``accelerator.register_for_checkpointing`` to resume
    exactly). Returns a ``FitResult``.
    """
    started = time.perf_counter()
    output_dir = config.output_dir
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    start = resume_step(accelerator, config)
    _advance_scheduler(lr_scheduler, start)
    log = MetricsLog(output_dir / METRICS_FILE, start, enabled=accelerator.is_main_process)
    result = FitResult(start, config.max_steps, None)
    if start >= config.max_steps:
        result.seconds = time.perf_counter() - started
        return result
    accumulation = config.gradient_accumulation_steps
    stream = batch_stream(
        dataset,
        config.batch_size,
        config.seed,
        start=start * accumulation,
        device=accelerator.device,
        num_workers=0 if isinstance(dataset, InMemoryDataset) else config.num_workers,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    pending: list[dict[str, Any]] = []  # records whose tensors are fetched at the next flush
    bar = tqdm(
        total=config.max_steps,
        initial=start,
        desc=f"train {output_dir.name}",
        unit="step",
        disable=not (config.progress and accelerator.is_main_process),
    )

    def flush() -> None:
        if not pending:
            return
        records = [{key: _as_float(value) for key, value in record.items()} for record in pending]
        pending.clear()
        log.write(records)
        result.last_loss = records[-1]["loss"]
        bar.set_postfix(loss=f"{result.last_loss:.4g}", refresh=False)

    model.train()
    for step in range(start, config.max_steps):
        loss_sum: Tensor | float = 0.0
        log_sums: dict[str, Tensor | float] = {}
        for _ in range(accumulation):
            batch = next(stream)
            with accelerator.accumulate(model):
                loss, logs = loss_fn(model, batch, step)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum = loss_sum + loss.detach().float()
            for key, value in logs.items():
                value = value.detach().float() if isinstance(value, Tensor) else float(value)
                log_sums[key] = log_sums.get(key, 0.0) + value
        lr = optimizer.param_groups[0]["lr"]
        lr_scheduler.step()
        done = step + 1
        if after_step is not None:
            after_step(model, done)
        record: dict[str, Any] = {"step": done, "loss": _mean(accelerator, loss_sum / accumulation), "lr": lr}
        record.update({key: _mean(accelerator, value / accumulation) for key, value in log_sums.items()})
        pending.append(record)
        last = done == config.max_steps
        out_of_time = _out_of_time(accelerator, config, started)
        periodic = bool(config.validate_every) and done % config.validate_every == 0
        if validate is not None and (last or out_of_time or periodic):
            model.eval()
            devices = [accelerator.device] if accelerator.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                result.validation = {key: float(value) for key, value in validate(model, done).items()}
            model.train()
            record.update(result.validation)
        checkpoint = last or out_of_time or done % config.checkpoint_every == 0
        if checkpoint or len(pending) >= LOG_FLUSH_STEPS:
            flush()
        if checkpoint:
            save_checkpoint(accelerator, output_dir, done, keep=config.keep_checkpoints)
        bar.update()
        if (stop_after is not None and done >= stop_after) or out_of_time:
            if out_of_time and not last and accelerator.is_main_process:
                print(f"time limit of {config.time_limit_minutes} min reached at step {done}")
            break
    flush()
    bar.close()
    accelerator.wait_for_everyone()
    result.seconds = time.perf_counter() - started
    return result


def _out_of_time(accelerator: Accelerator, config: TrainConfig, started: float) -> bool:
    """Whether the run is past its time limit; with several processes, as soon as any one is
    (all processes must agree, or one would wait forever in the next collective)."""
    if not config.time_limit_minutes:
        return False
    late = time.perf_counter() - started > 60 * config.time_limit_minutes
    if accelerator.num_processes > 1:
        flag = torch.tensor(float(late), device=accelerator.device)
        late = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return late


def _mean(accelerator: Accelerator, value: Tensor | float) -> Tensor | float:
    if isinstance(value, Tensor) and accelerator.num_processes > 1:
        return accelerator.reduce(value, reduction="mean")
    return value


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, Tensor | np.floating) else value


# ----------------------------------------------------------------------------- final weights
def save_model(
    model: torch.nn.Module,
    folder: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    max_shard_size: int | str = "10GB",
) -> Path:
    """Writes ``model.save_pretrained`` (safetensors) in ``dtype`` atomically; returns the folder.

    The model itself is not changed (a copy is cast). The folder is written under a temporary
    name and renamed into place, replacing an older one.
    """
    folder = Path(folder)
    temporary = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    source = model
    if dtype != next(model.parameters()).dtype:
        source = _copy_model(model).to(dtype)
    source.save_pretrained(temporary, safe_serialization=True, max_shard_size=max_shard_size)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(temporary, folder)
    return folder


def save_bundle(
    model: torch.nn.Module, folder: str | os.PathLike, max_shard_size: int = BUNDLE_SHARD_BYTES
) -> list[Path]:
    """Writes fp16 safetensors shards of at most ``max_shard_size`` bytes (15 MiB) for ``checkpoints/``.

    Returns the written files. ``from_pretrained`` loads them back as float32 by default.
    """
    folder = save_model(model, folder, dtype=torch.float16, max_shard_size=max_shard_size - SHARD_HEADER_ROOM)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    check_shard_sizes(folder, max_shard_size)
    return files


def check_shard_sizes(folder: str | os.PathLike, max_shard_size: int = BUNDLE_SHARD_BYTES) -> None:
    """Raises ``ValueError`` naming every safetensors file under ``folder`` larger than ``max_shard_size``."""
    too_big = [
        p.relative_to(folder).as_posix()
        for p in sorted(Path(folder).rglob("*.safetensors"))
        if p.stat().st_size > max_shard_size
    ]
    if too_big:  # a single tensor larger than the limit ends up alone in an oversized shard
        raise ValueError(f"bundle: shards {too_big} exceed {max_shard_size} bytes (one tensor is too large)")


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    if hasattr(model, "config") and hasattr(type(model), "from_config"):
        copy = type(model).from_config(model.config)
        copy.load_state_dict(model.state_dict())
        return copy
    import copy as copy_module

    return copy_module.deepcopy(model)


__all__ = [
    "BUNDLE_SHARD_BYTES",
    "CHECKPOINTS_DIR",
    "METRICS_FILE",
    "SHARD_HEADER_ROOM",
    "FitResult",
    "InMemoryDataset",
    "MetricsLog",
    "ResumeError",
    "StepBatchSampler",
    "TrainConfig",
    "batch_stream",
    "build_accelerator",
    "build_optimizer",
    "build_scheduler",
    "check_shard_sizes",
    "checkpoint_dir",
    "dataset_shape",
    "fit",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_training_data",
    "open_datasets",
    "read_metrics",
    "resume_step",
    "save_bundle",
    "save_checkpoint",
    "save_job_settings",
    "save_model",
    "select_trainable",
    "to_device",
]
