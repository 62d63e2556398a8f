"""Long evaluations in parts: each part's rows are saved as soon as it is done, and a rerun resumes.

An evaluation of hundreds of clips on a machine lent for a few minutes may be stopped at any point;
a script that writes only at the end then keeps nothing. ``evaluate_in_parts`` runs one
``compute(part)`` at a time, writes its rows (and an optional JSON-able dict, e.g. timings) under
``<folder>/parts/`` atomically, and on a rerun with the same folder skips the parts already there.
The settings the rows depend on are written beside them: a rerun with other settings stops with
an error instead of mixing rows of two configurations.

``sub_shard`` splits a shard ``(k, n)`` (every n-th item from the k-th) into ``chunks`` shards of
the same form whose union is the shard, so any shard-aware simulator can be asked for one part;
``evaluate_families`` runs a shard of every family that way, one part per family and chunk.
``read_parts`` returns what a folder holds, e.g. of a run that did not end. ``shard_threads`` gives
each of N shard processes run side by side its share of the cores.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from momaplib.storage import atomic_write_bytes, atomic_write_text

PARTS = "parts"


def shard_threads(shard: tuple[int, int]) -> int | None:
    """Sets torch's thread count of one of ``n`` shard processes run side by side to its share of the
    usable cores (at least 1) and returns it; returns None and changes nothing for one shard or when
    ``OMP_NUM_THREADS`` is set (the user's choice).

    Each process otherwise starts a thread per core: 12 shards on 16 cores ran 192 threads, and
    simulating one test clip took about 45 s instead of under one (one H100 host).
    """
    import torch

    from momaplib.data.writer import usable_cores

    n = shard[1]
    if n <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = max(1, usable_cores() // n)
    torch.set_num_threads(threads)
    return threads


def sub_shard(shard: tuple[int, int], chunk: int, chunks: int) -> tuple[int, int]:
    """Returns part ``chunk`` of ``chunks`` of ``shard = (k, n)``: every ``n * chunks``-th item from
    ``k + n * chunk``; the parts ``0 .. chunks - 1`` partition the shard's items."""
    k, n = shard
    if not (0 <= k < n and 0 <= chunk < chunks):
        raise ValueError(
            f"sub_shard: expected 0 <= k < n and 0 <= chunk < chunks, got {shard}, {chunk}/{chunks}"
        )
    return k + n * chunk, n * chunks


def evaluate_in_parts(
    folder: str | os.PathLike,
    parts: Sequence[str],
    compute: Callable[[str], tuple[pd.DataFrame, dict[str, Any] | None]],
    settings: dict[str, Any],
) -> tuple[list[pd.DataFrame], list[dict[str, Any] | None]]:
    """Returns the rows and extras of every part in the order of ``parts``, computing only those
    not yet saved under ``<folder>/parts`` and saving each as soon as it is done.

    ``parts`` are file-name-safe names; ``compute(name)`` returns ``(rows, extra)``. ``settings``
    (JSON-able) must equal those of the saved parts, or this raises ``ValueError``.
    """
    store = Path(folder) / PARTS
    for name in parts:
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            raise ValueError(f"parts: expected file-name-safe names, got {name!r}")
    store.mkdir(parents=True, exist_ok=True)
    recorded = store / "settings.json"
    wanted = json.loads(json.dumps(settings, default=str))
    if recorded.is_file():
        saved = json.loads(recorded.read_text())
        if saved != wanted:
            raise ValueError(
                f"{store}: its parts were computed with other settings; use another output folder "
                f"or remove it (saved {saved}, now {wanted})"
            )
    else:
        atomic_write_text(recorded, json.dumps(wanted, indent=2))
    frames, extras = [], []
    for name in parts:
        rows_path, extra_path = store / f"{name}.csv", store / f"{name}.json"
        if not rows_path.is_file():
            rows, extra = compute(name)
            atomic_write_text(extra_path, json.dumps(extra))  # first: a part with rows is complete
            buffer = io.StringIO()
            rows.to_csv(buffer, index=False)
            atomic_write_bytes(rows_path, buffer.getvalue().encode())
        frames.append(_read_rows(rows_path))
        extras.append(json.loads(extra_path.read_text()))
    return frames, extras


def evaluate_families(
    folder: str | os.PathLike,
    families: Sequence[str],
    shard: tuple[int, int],
    chunks: int,
    compute: Callable[[str, tuple[int, int]], tuple[pd.DataFrame, dict[str, Any] | None]],
    settings: dict[str, Any],
) -> tuple[pd.DataFrame, list[dict[str, Any] | None]]:
    """Returns the rows of ``shard`` of every family, concatenated, and every part's extra:
    ``evaluate_in_parts`` with the parts ``<family>-<chunk>``, ``compute(family, sub-shard)``
    giving each (a part may be empty). Raises ``ValueError`` when the shard holds no item at all."""
    parts = [f"{family}-{chunk:03d}" for family in families for chunk in range(chunks)]

    def part(name: str):
        family, chunk = name.rsplit("-", 1)
        return compute(family, sub_shard(shard, int(chunk), chunks))

    frames, extras = evaluate_in_parts(folder, parts, part, settings)
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        raise ValueError(f"shard {shard[0]}/{shard[1]}: no item of {list(families)} in it; use fewer shards")
    return pd.concat(frames, ignore_index=True), extras


def read_parts(
    folder: str | os.PathLike,
) -> tuple[list[pd.DataFrame], list[dict[str, Any] | None], dict[str, Any]] | None:
    """Returns the non-empty rows saved under ``<folder>/parts``, every saved part's extra (as
    ``evaluate_in_parts`` returns them) and their settings, or None when the folder has no parts."""
    store = Path(folder) / PARTS
    if not (store / "settings.json").is_file():
        return None
    rows_paths = sorted(store.glob("*.csv"))
    frames = [_read_rows(path) for path in rows_paths]
    extras = [json.loads(path.with_suffix(".json").read_text()) for path in rows_paths]
    settings = json.loads((store / "settings.json").read_text())
    return [frame for frame in frames if not frame.empty], extras, settings


def _read_rows(path: Path) -> pd.DataFrame:
    text = path.read_text()
    return pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()
