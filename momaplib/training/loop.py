"""``fit``: the training loop shared by every trainer of the kit (see ``momaplib.training``)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.training.batches import InMemoryDataset, batch_stream
from momaplib.training.config import LOG_FLUSH_STEPS, METRICS_FILE, ResumeError, TrainConfig
from momaplib.training.state import MetricsLog, latest_checkpoint, load_checkpoint, save_checkpoint

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


def resume_step(
    accelerator: Accelerator, config: TrainConfig, states: Mapping[str, Any] | None = None
) -> int:
    """Returns the step to start from: 0, or that of the latest checkpoint (whose state is loaded,
    ``states`` included)."""
    path = latest_checkpoint(config.output_dir)
    if path is None:
        return 0
    if not config.resume:
        raise ResumeError(
            f"output_dir {config.output_dir} holds checkpoints of an earlier run ({path.name}); "
            "resume it (resume=True, the default) or choose another output_dir"
        )
    state = load_checkpoint(accelerator, path, states)
    saved, now = state.get("global_batch"), global_batch(accelerator, config)
    if saved is not None and saved != now and not config.allow_config_change:
        raise ResumeError(
            f"checkpoint {path}: it was trained with a global batch of {saved} items per step "
            f"({state.get('num_processes')} process(es)); this run has {now} (batch_size "
            f"{config.batch_size} x gradient_accumulation_steps {config.gradient_accumulation_steps} x "
            f"{accelerator.num_processes} process(es)). With another number of processes keep the global "
            "batch (e.g. --batch-size global / processes) to continue the same run, or pass "
            "--allow-config-change"
        )
    if accelerator.is_main_process and config.progress:
        print(f"resuming from {path} (step {state['step']}, {accelerator.num_processes} process(es))")
    return int(state["step"])


def global_batch(accelerator: Accelerator, config: TrainConfig) -> int:
    """Returns the items of one optimizer step over all processes: batch x accumulation x processes."""
    return config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes


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
    states: Mapping[str, Any] | None = None,
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
    state it keeps go in ``states``, ``{name: object with state_dict/load_state_dict}``, saved in
    every checkpoint as safetensors + JSON and restored on resume, so the run resumes exactly
    without unpickling anything). Returns a ``FitResult``.
    """
    started = time.perf_counter()
    output_dir = config.output_dir
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    start = resume_step(accelerator, config, states)
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
            extra = {
                "global_batch": global_batch(accelerator, config),
                "num_processes": accelerator.num_processes,
            }
            save_checkpoint(
                accelerator, output_dir, done, keep=config.keep_checkpoints, extra=extra, states=states
            )
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


def call_through_forward(model: torch.nn.Module, function: Callable[..., Any], *args: Any) -> Any:
    """Returns ``function(inner, *args)`` run inside ``model``'s forward, ``inner`` being the model
    that ``accelerator.prepare`` wrapped (``model`` itself when it is not wrapped).

    Under several processes ``model`` is a ``DistributedDataParallel``, which averages gradients
    only for computations that ran through its forward: a loss that calls other methods (a VAE's
    ``encode`` and ``decode``) directly would leave every process training its own copy. This runs
    ``function`` as the inner model's forward for one call, so DDP sees it.
    """
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if inner is model:
        return function(model, *args)
    saved = inner.__dict__.get("forward")  # accelerate's mixed-precision wrapper, if any
    inner.forward = lambda: function(inner, *args)
    try:
        return model()
    finally:
        if saved is None:
            del inner.forward
        else:
            inner.forward = saved


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
