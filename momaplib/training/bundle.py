"""Final weights: ``save_pretrained`` folders and bundles sharded to fit the checkpoint size budget."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import torch
from accelerate import PartialState
from diffusers.training_utils import EMAModel

from momaplib.checkpoints import write_weight_manifest
from momaplib.training.config import BUNDLE_SHARD_BYTES, SHARD_HEADER_ROOM


# ----------------------------------------------------------------------------- final weights
def save_model(
    model: torch.nn.Module,
    folder: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    max_shard_size: int | str = "10GB",
) -> Path:
    """Writes ``model.save_pretrained`` (safetensors) in ``dtype`` atomically; returns the folder.

    The model itself is not changed (a copy is cast). The folder is written under a temporary
    name and renamed into place, replacing an older one. Under ``accelerate launch`` every
    process may call it: only the main process writes (no barrier, so a call inside ``if
    accelerator.is_main_process`` cannot hang; wait with ``accelerator.wait_for_everyone()``).
    """
    folder = Path(folder)
    if not PartialState().is_main_process:  # the processes of a run would race on one folder
        return folder
    temporary = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    source = model
    if dtype != next(model.parameters()).dtype:
        source = _copy_model(model).to(dtype)
    source.save_pretrained(temporary, safe_serialization=True, max_shard_size=max_shard_size)
    write_weight_manifest(temporary)
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


def check_model_folder(folder: str | os.PathLike, field: str, what: str) -> Path:
    """Returns ``folder`` when it holds a ``save_pretrained`` model (``config.json`` and weight
    files); else raises ``ValueError`` naming ``field`` and ``what`` was expected (e.g. "a MoMapVAE
    folder"), before anything tries to load it."""
    folder = Path(folder)
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        missing.append("weight files (*.safetensors)")
    if missing:
        raise ValueError(f"{field}: {folder} is not {what}; it has no {' and no '.join(missing)}")
    return folder


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    if hasattr(model, "config") and hasattr(type(model), "from_config"):
        copy = type(model).from_config(model.config)
        copy.load_state_dict(model.state_dict())
        return copy
    import copy as copy_module

    return copy_module.deepcopy(model)


@contextmanager
def ema_weights(model: torch.nn.Module, ema: EMAModel | None) -> Iterator[torch.nn.Module]:
    """Context: ``model`` holds the EMA weights inside, its own weights again after."""
    if ema is None:
        yield model
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema.restore(model.parameters())


def strip_machine_paths(folder: str | os.PathLike) -> None:
    """Drops ``_name_or_path`` from every ``config.json`` under ``folder``: a bundle names no
    training machine's folders."""
    for config in Path(folder).rglob("config.json"):
        settings = json.loads(config.read_text())
        if settings.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def save_pipeline(pipeline, folder: Path, bundle: bool = False) -> None:
    """Writes a diffusers pipeline with ``save_pretrained`` atomically (a ``.partial`` folder renamed
    into place); ``bundle``: fp16 shards of at most ``BUNDLE_SHARD_BYTES``, no machine paths in configs."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if bundle:
        # a module's dtype is its first parameter's, or its first buffer's (the raw MoMap codec has
        # buffers only)
        first = {name: next(chain(m.parameters(), m.buffers()), None) for name, m in _modules(pipeline)}
        dtypes = {name: tensor.dtype for name, tensor in first.items() if tensor is not None}
        pipeline.to(torch.float16)
        try:
            shard = BUNDLE_SHARD_BYTES - SHARD_HEADER_ROOM  # diffusers counts tensor bytes, not headers
            pipeline.save_pretrained(partial, safe_serialization=True, max_shard_size=shard)
        finally:
            for name, module in _modules(pipeline):
                if name in dtypes:
                    module.to(dtypes[name])
        check_shard_sizes(partial, BUNDLE_SHARD_BYTES)
        strip_machine_paths(partial)
    else:
        pipeline.save_pretrained(partial, safe_serialization=True)
    write_weight_manifest(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)


def _modules(pipeline) -> list[tuple[str, torch.nn.Module]]:
    return [
        (name, module) for name, module in pipeline.components.items() if isinstance(module, torch.nn.Module)
    ]
