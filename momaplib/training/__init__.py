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
- **Same settings on resume.** A trainer calls ``check_job_settings`` before it writes anything:
  a rerun in an ``output_dir`` whose ``train_config.json`` holds other settings is refused with
  the changed fields (``--allow-config-change`` continues and keeps the old file as
  ``train_config.<step>.json``); ``MAY_CHANGE_ON_RESUME`` lists the fields that may differ
  (``max_steps``, ``time_limit_minutes``, output and logging fields).
- **Logging**: one JSON line per optimizer step in ``output_dir/metrics.jsonl`` (``step``,
  ``loss``, ``lr``, the loss function's extra terms, validation metrics on validation steps),
  a ``tqdm.auto`` progress bar on the main process.

Step numbers count optimizer steps; one step is ``gradient_accumulation_steps`` micro-batches of
``batch_size`` items per process. The LR schedule is in optimizer steps too.

Several processes (``accelerate launch --num_processes N -m momaplib.cli train-...``): process
``r`` takes slice ``r`` of every global batch (``batch_size`` items each), gradients are
averaged, and per-item randomness (``item_noise``) is seeded by each item's stream position, so
N processes with ``batch_size`` B follow one process with ``batch_size`` N x B (up to float
summation order; a test checks it with 2 CPU processes). A run may be resumed with another N as
long as the global batch (batch x accumulation x processes, recorded in every checkpoint) stays.

Modules: ``config`` (TrainConfig, accelerator, optimizer, schedule), ``fields`` (ranges of job
fields), ``randomness`` (per-item noise), ``batches``
(samplers and datasets), ``state`` (checkpoints, metrics log), ``settings`` (``train_config.json``
and the resume check), ``loop`` (``fit``), ``bundle`` (final weights).
"""

from momaplib.training.batches import (
    ITEM_POSITION,
    InMemoryDataset,
    StepBatchSampler,
    batch_stream,
    dataset_shape,
    load_training_data,
    open_datasets,
    to_device,
)
from momaplib.training.bundle import (
    check_model_folder,
    check_shard_sizes,
    ema_weights,
    save_bundle,
    save_model,
    save_pipeline,
)
from momaplib.training.config import (
    BUNDLE_SHARD_BYTES,
    CHECKPOINTS_DIR,
    METRICS_FILE,
    SHARD_HEADER_ROOM,
    ResumeError,
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    select_trainable,
    smoke_train,
)
from momaplib.training.fields import FIELD_RANGES, check_choice, check_job_fields, check_number
from momaplib.training.loop import FitResult, call_through_forward, fit, global_batch, resume_step
from momaplib.training.randomness import item_noise, item_seed, micro_batch_generator
from momaplib.training.settings import (
    MAY_CHANGE_ON_RESUME,
    SETTINGS_FILE,
    check_job_settings,
    save_job_settings,
    settings_changes,
)
from momaplib.training.state import (
    MetricsLog,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_states,
    read_metrics,
    save_checkpoint,
    save_states,
)

__all__ = [
    "BUNDLE_SHARD_BYTES",
    "CHECKPOINTS_DIR",
    "FIELD_RANGES",
    "ITEM_POSITION",
    "MAY_CHANGE_ON_RESUME",
    "METRICS_FILE",
    "SETTINGS_FILE",
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
    "call_through_forward",
    "check_choice",
    "check_job_fields",
    "check_job_settings",
    "check_model_folder",
    "check_number",
    "check_shard_sizes",
    "checkpoint_dir",
    "dataset_shape",
    "ema_weights",
    "fit",
    "global_batch",
    "item_noise",
    "item_seed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_states",
    "load_training_data",
    "micro_batch_generator",
    "open_datasets",
    "read_metrics",
    "resume_step",
    "save_bundle",
    "save_checkpoint",
    "save_job_settings",
    "save_model",
    "save_pipeline",
    "save_states",
    "select_trainable",
    "settings_changes",
    "smoke_train",
    "to_device",
]
