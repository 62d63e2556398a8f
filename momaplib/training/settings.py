"""A run's settings on disk (``train_config.json``) and the check that a rerun keeps them.

Rerunning a training command continues the run in its ``output_dir`` (``momaplib.training``). A
rerun with other settings would silently mix two experiments in one curve and overwrite the
record of the first, so every trainer calls ``check_job_settings`` before it writes anything:
when ``output_dir`` already holds a ``train_config.json``, the new settings must equal it,
except the fields of ``MAY_CHANGE_ON_RESUME``; otherwise the run is refused with a
``ResumeError`` listing each changed field by its dotted name (``train.learning_rate: 0.0002 ->
0.001``). ``TrainConfig.allow_config_change`` (``--allow-config-change``) continues anyway;
``save_job_settings`` then keeps the old file as ``train_config.<step>.json`` (the step of the
latest checkpoint) before writing the new one, so no record is lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate import PartialState

from momaplib.data.manifest import flatten_settings
from momaplib.storage import atomic_write_bytes, atomic_write_text
from momaplib.training.config import ResumeError, TrainConfig
from momaplib.training.fields import check_job_fields
from momaplib.training.state import latest_checkpoint, list_checkpoints

#: The settings of a run, inside its ``output_dir``.
SETTINGS_FILE = "train_config.json"
#: Key of the saved settings that names the job class (absent from files of older versions).
JOB_KEY = "_job"

#: Fields (of a job or its ``TrainConfig``, matched by name at any depth) that may differ when a
#: run is continued, and why: they change how long it runs, what it shows, where it writes its
#: outputs or how it is validated, never the training steps it continues. Everything else must
#: match, or needs ``--allow-config-change``.
MAY_CHANGE_ON_RESUME: dict[str, str] = {
    "max_steps": "extends (or ends) the run; the LR schedule follows the new length from here on",
    "time_limit_minutes": "the wall-clock budget of one invocation",
    "progress": "display only",
    "output_dir": "the run folder itself, which may be moved or named otherwise",
    "resume": "False refuses a folder with checkpoints anyway",
    "allow_config_change": "this switch",
    "num_workers": "loader processes; the batch of a step does not depend on them",
    "checkpoint_every": "when checkpoints are written; saving never changes the run",
    "keep_checkpoints": "disk use only",
    "validate_every": "validation runs without gradients and with the RNG state restored",
    "num_val_clips": "validation only",
    "val_samples": "validation only",
    "val_steps": "validation only",
    "guidance_scale": "validation sampling and the saved pipeline's default",
    "bundle_dir": "where the final weights are also written",
    "pipeline_text_encoder": "the text-encoder spec written into the saved pipeline",
    "encode_only": "stops after the latent cache, which a later run reads",
    "batch_size": "per process: it changes with the number of processes; fit refuses a resume whose global "
    "batch (batch x accumulation x processes) differs from the checkpoint's",
    "gradient_accumulation_steps": "as batch_size: only the global batch must stay (checked by fit)",
}

_ABSENT = "(not recorded)"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {key: _plain(v) for key, v in value.__dict__.items()}
    return value


def job_settings(job: Any) -> dict[str, Any]:
    """Returns a job dataclass (nested configs included) as the JSON object ``save_job_settings`` writes."""
    return {JOB_KEY: type(job).__name__, **json.loads(json.dumps(_plain(job)))}


def settings_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Returns ``"dotted.name: old -> new"`` for every field that differs between two saved
    settings, leaving out ``MAY_CHANGE_ON_RESUME`` (fields one side lacks count as changed)."""
    before, after = flatten_settings(old), flatten_settings(new)
    if JOB_KEY not in before:  # written by a version that did not record the job class
        after.pop(JOB_KEY, None)
    changes = []
    for name in [*before, *(key for key in after if key not in before)]:
        if name.rsplit(".", 1)[-1] in MAY_CHANGE_ON_RESUME:
            continue
        a, b = before.get(name, _ABSENT), after.get(name, _ABSENT)
        if a != b:
            changes.append(f"{name}: {_show(a)} -> {_show(b)}")
    return changes


def _show(value: Any) -> str:
    return value if value == _ABSENT else json.dumps(value)


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        settings = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResumeError(
            f"{path}: not readable as the run's settings ({error}); restore it, choose another "
            "output_dir, or pass --allow-config-change to replace it"
        ) from error
    if not isinstance(settings, dict):
        raise ResumeError(f"{path}: expected a JSON object of settings, got {type(settings).__name__}")
    return settings


def check_job_settings(job: Any, config: TrainConfig) -> None:
    """Refuses, before anything is written, to continue the run in ``config.output_dir`` with
    other settings than it was started with, or at all when ``config.resume`` is False and it has
    checkpoints (``ResumeError``; see the module docstring). ``config`` is the job's ``TrainConfig``."""
    check_job_fields(job)  # the job may have changed since it was built
    config.validate()
    output_dir = config.output_dir
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"TrainConfig.output_dir (--output-dir): {output_dir} is a file; expected a folder")
    latest = latest_checkpoint(output_dir)
    if latest is not None and not config.resume:
        raise ResumeError(
            f"output_dir {output_dir} holds checkpoints of an earlier run ({latest.name}); "
            "resume it (resume=True, the default) or choose another output_dir"
        )
    path = output_dir / SETTINGS_FILE
    if not path.is_file():
        return
    if config.allow_config_change:
        return
    changes = settings_changes(_read_settings(path), job_settings(job))
    if changes:
        where = f"its checkpoint {latest.name}" if latest is not None else "no checkpoint yet"
        shown = changes[:20] + ([f"... and {len(changes) - 20} more"] if len(changes) > 20 else [])
        raise ResumeError(
            f"output_dir {output_dir} holds a run ({where}) started with other settings; changed "
            f"fields (saved -> now):\n  " + "\n  ".join(shown) + "\nRerun with the saved settings "
            f"({path}), choose another output_dir, or pass --allow-config-change to continue with the "
            f"new ones (the old file is kept as {SETTINGS_FILE.removesuffix('.json')}.<step>.json). "
            f"Fields that may always change: {', '.join(MAY_CHANGE_ON_RESUME)}"
        )


def save_job_settings(job: Any, config: TrainConfig | str | os.PathLike) -> Path:
    """Writes a job dataclass (nested configs included) as ``output_dir/train_config.json``;
    returns the file.

    With a ``TrainConfig`` (the job's), ``check_job_settings`` runs first. A different earlier
    file is kept as ``train_config.<step>.json`` (the latest checkpoint's step, 7 digits, ``.1``,
    ``.2``, ... added when taken), never overwritten.
    """
    if isinstance(config, TrainConfig):
        check_job_settings(job, config)
        output_dir = config.output_dir
    else:
        output_dir = Path(config)
    path = output_dir / SETTINGS_FILE
    if not PartialState().is_main_process:  # one writer: the processes of a run share output_dir
        return path
    text = json.dumps(job_settings(job), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = path.read_bytes()
        if old == text.encode():
            return path
        found = list_checkpoints(output_dir)
        stem = f"{path.stem}.{found[-1][0] if found else 0:07d}"
        kept, number = path.with_name(f"{stem}.json"), 0
        while kept.exists():
            number += 1
            kept = path.with_name(f"{stem}.{number}.json")
        atomic_write_bytes(kept, old)
    atomic_write_text(path, text)
    return path
