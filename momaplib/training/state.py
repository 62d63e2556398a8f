"""Run state on disk: atomic checkpoints and the ``metrics.jsonl`` log (settings: ``settings``)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from momaplib.storage import atomic_write_text
from momaplib.training.config import CHECKPOINTS_DIR, METRICS_FILE, STATE_FILE, ResumeError


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


#: Pickle files accelerate writes and reads back with ``weights_only=True`` (RNG states of process i).
RNG_STATE_PREFIX = "random_states_"


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    keep: int = 2,
    extra: Mapping[str, Any] | None = None,
    states: Mapping[str, Any] | None = None,
) -> Path:
    """Writes accelerate's state + ``state.json`` (step, ``extra``) atomically; returns the folder.

    Every process calls it (each saves its RNG state). ``states`` are further objects with
    ``state_dict`` / ``load_state_dict`` (e.g. an EMA), written as ``<name>.safetensors`` plus
    ``<name>.json`` by ``save_states``: never pickled (accelerate's ``register_for_checkpointing``
    would pickle them and unpickle them unrestricted on resume). The folder is
    written under a hidden temporary name and renamed when complete; checkpoints beyond the
    newest ``keep`` are removed.
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
        save_states(temporary, states or {})
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


def load_checkpoint(
    accelerator: Accelerator, path: str | os.PathLike, states: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Restores accelerate's state (and ``states``, see ``save_checkpoint``) from a checkpoint
    folder; returns its ``state.json``.

    Nothing in the folder is unpickled beyond what ``torch.load(weights_only=True)`` allows: a
    checkpoint with any other pickle (e.g. a ``custom_checkpoint_*.pkl``, which this kit never
    writes) or an RNG state that needs more is refused with ``ResumeError`` before anything loads;
    so is a folder whose ``state.json`` or saved ``states`` are missing or malformed.
    """
    path = Path(path)
    state = _read_state(path)
    _check_pickles(path)
    saved = {name: _read_state_dict(path, name) for name in (states or {})}
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # e.g. a weights_only refusal of a tampered optimizer.bin
        raise ResumeError(
            f"checkpoint {path}: could not be loaded ({type(error).__name__}: {error})"
        ) from error
    for name, obj in (states or {}).items():
        _restore(path, name, obj, saved[name])
    return state


def _read_state(path: Path) -> dict[str, Any]:
    """Returns ``state.json`` of a checkpoint folder, checked: an object whose ``step`` is that of
    the folder's name."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise ResumeError(f"checkpoint {path}: no {STATE_FILE}; it is incomplete")
    try:
        state = json.loads(state_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResumeError(f"checkpoint {path}: {STATE_FILE} is not valid JSON ({error})") from error
    step = state.get("step") if isinstance(state, dict) else None
    named = path.name.removeprefix("step_")
    if (
        not isinstance(step, int)
        or isinstance(step, bool)
        or step < 0
        or (named.isdigit() and int(named) != step)
    ):
        raise ResumeError(
            f"checkpoint {path}: {STATE_FILE} gives step {step!r}; expected the integer of the folder's "
            "name (the file was changed or belongs to another checkpoint)"
        )
    return state


def _check_pickles(path: Path) -> None:
    """Refuses pickles this kit does not write; loads the RNG states as accelerate will, but strictly."""
    from accelerate.utils.other import load as accelerate_load

    for pickled in sorted(path.glob("*.pkl")):
        if not pickled.name.startswith(RNG_STATE_PREFIX):
            raise ResumeError(
                f"checkpoint {path}: {pickled.name} is a pickle this kit never writes (extra state is "
                "saved as safetensors + JSON); refusing to load it. Delete the file if you trust it."
            )
        try:  # accelerate itself would swallow a failure here and resume with other RNG states
            accelerate_load(pickled, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ResumeError(
                f"checkpoint {path}: {pickled.name} is not a plain RNG state ({type(error).__name__}); "
                "refusing to load it"
            ) from error


def save_states(folder: str | os.PathLike, states: Mapping[str, Any]) -> None:
    """Writes each object's ``state_dict()`` as ``<name>.safetensors`` (tensors, lists of tensors)
    and ``<name>.json`` (everything else, which must be JSON: numbers, strings, lists, dicts)."""
    folder = Path(folder)
    for name, obj in states.items():
        tensors: dict[str, torch.Tensor] = {}
        plain: dict[str, Any] = {}
        for key, value in obj.state_dict().items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
                plain[key] = {"tensor": key}
            elif (
                isinstance(value, list | tuple) and value and all(isinstance(v, torch.Tensor) for v in value)
            ):
                for i, v in enumerate(value):
                    tensors[f"{key}.{i}"] = v.detach().cpu().contiguous()
                plain[key] = {"tensors": [f"{key}.{i}" for i in range(len(value))]}
            else:
                try:
                    json.dumps(value)
                except TypeError as error:
                    raise TypeError(
                        f"states[{name!r}]: state_dict key {key!r} is not a tensor or JSON"
                    ) from error
                plain[key] = {"value": value}
        save_file(tensors, str(folder / f"{name}.safetensors"))
        atomic_write_text(folder / f"{name}.json", json.dumps(plain, indent=1) + "\n")


def load_states(folder: str | os.PathLike, states: Mapping[str, Any]) -> None:
    """Restores objects written by ``save_states``; a missing or malformed file is a ``ResumeError``.

    Tensors go where the object's own tensors are (an EMA moved to the GPU stays there) and must
    have their shapes."""
    folder = Path(folder)
    saved = {name: _read_state_dict(folder, name) for name in states}  # all read before any is set
    for name, obj in states.items():
        _restore(folder, name, obj, saved[name])


def _read_state_dict(folder: Path, name: str) -> dict[str, Any]:
    """Returns the state dict ``save_states`` wrote for ``name`` (CPU tensors)."""
    files = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not all(f.is_file() for f in files):
        raise ResumeError(f"checkpoint {folder}: no saved state {name!r} ({files[0].name}, {files[1].name})")
    try:
        tensors = load_file(str(files[0]))
        entries = json.loads(files[1].read_text())
        state = {}
        for key, entry in entries.items():
            if "tensor" in entry:
                state[key] = tensors[entry["tensor"]]
            elif "tensors" in entry:
                state[key] = [tensors[k] for k in entry["tensors"]]
            else:
                state[key] = entry["value"]
    except Exception as error:  # a torn or edited file: safetensors, JSON, or keys that do not match
        raise ResumeError(
            f"checkpoint {folder}: saved state {name!r} is malformed ({type(error).__name__}: {error})"
        ) from error
    return state


def _restore(folder: Path, name: str, obj: Any, state: dict[str, Any]) -> None:
    """Loads ``state`` into ``obj`` with its tensors on the device of the ones ``obj`` holds now."""
    current = obj.state_dict()

    def placed(key: str, saved: torch.Tensor, now: Any) -> torch.Tensor:
        if not isinstance(now, torch.Tensor):
            return saved
        if saved.shape != now.shape:
            raise ResumeError(
                f"checkpoint {folder}: saved state {name!r}: {key} has shape {tuple(saved.shape)}, this "
                f"run's {tuple(now.shape)} (the model differs from the checkpoint's)"
            )
        return saved.to(now.device)

    for key, value in state.items():
        now = current.get(key)
        if isinstance(value, torch.Tensor):
            state[key] = placed(key, value, now)
        elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            if isinstance(now, list | tuple) and len(now) != len(value):
                raise ResumeError(
                    f"checkpoint {folder}: saved state {name!r}: {key} holds {len(value)} tensors, this "
                    f"run's {len(now)} (the model differs from the checkpoint's)"
                )
            others = list(now) if isinstance(now, list | tuple) else [None] * len(value)
            state[key] = [
                placed(f"{key}.{i}", v, o) for i, (v, o) in enumerate(zip(value, others, strict=True))
            ]
    try:
        obj.load_state_dict(state)
    except (ValueError, TypeError, KeyError) as error:
        raise ResumeError(f"checkpoint {folder}: saved state {name!r} was refused ({error})") from error


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
    """Returns the records of a ``metrics.jsonl``, or of a gzip-compressed one (``.gz``, e.g. the
    logs kept beside the bundled checkpoints); a torn last line from a kill is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
