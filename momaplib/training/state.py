"""Run state on disk: job settings, atomic checkpoints and the ``metrics.jsonl`` log."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from momaplib.storage import atomic_write_text
from momaplib.training.config import CHECKPOINTS_DIR, METRICS_FILE, STATE_FILE, ResumeError


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
