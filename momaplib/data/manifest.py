"""A dataset folder's description: ``dataset.json`` settings, the ``manifest.jsonl`` and verification
(layout in ``momaplib.data``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from momaplib.data.splits import SPLITS, check_splits, clip_id, split_of
from momaplib.sim import SimConfig, clip_seed
from momaplib.storage import (
    DataFormatError,
    atomic_write_text,
    check_relative_path,
    confined_path,
    sha256_file,
)

#: Version of the on-disk layout; bump it when dataset.json, the manifest or the npz keys change.
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
CLIPS_DIR = "clips"
LOCK_FILE = ".lock"
#: Sub-folder of the per-shard manifests of a sharded run (``--shard i/N``), joined by ``momap merge``.
SHARDS_DIR = "shards"
#: Keys of every manifest line, in the order they are written.
MANIFEST_KEYS = (
    "id",
    "index",
    "split",
    "file",
    "family",
    "seed",
    "shape",
    "prompt",
    "action",
    "sha256",
    "bytes",
)
#: At most this many worker processes by default (beyond it, compression and disk dominate).
MAX_DEFAULT_WORKERS = 8


class DatasetSettingsError(ValueError):
    """A dataset folder was generated with other settings than the ones requested."""


# ----------------------------------------------------------------------------- settings
def _settings(config: SimConfig, num_clips: int, seed: int, splits: Sequence[float], split_seed: int) -> dict:
    """Returns the dataset.json content of a request (JSON types only, so it compares to a read file)."""
    settings = {
        "format_version": FORMAT_VERSION,
        "num_clips": int(num_clips),
        "seed": int(seed),
        "splits": dict(zip(SPLITS, check_splits(splits), strict=True)),
        "split_seed": int(split_seed),
        "sim": asdict(config),
        "library": library_versions(),
    }
    return json.loads(json.dumps(settings))


def library_versions() -> dict[str, str]:
    try:
        momaplib_version = importlib.metadata.version("momaplib")
    except importlib.metadata.PackageNotFoundError:
        momaplib_version = "unknown"
    return {"momaplib": momaplib_version, "torch": torch.__version__, "numpy": np.__version__}


def flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Returns nested settings as ``{"dotted.name": value}`` (to compare two runs field by field)."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_settings(path: Path, existing: dict, requested: dict) -> None:
    """Raises ``DatasetSettingsError`` naming every field where ``existing`` differs from ``requested``.

    A ``sim`` field missing from ``existing`` (a dataset written before the field existed) counts as
    the field's default, since defaults keep the clips of older versions bit for bit.

    ``num_clips`` may grow (the first clips stay the same); the library versions are only
    compared with a warning, since they may change the clips' bits but not what they mean.
    """
    old, new = flatten_settings(existing), flatten_settings(requested)
    # a SimConfig field added after the dataset was written reads as its default (same clips)
    sim_defaults = flatten_settings({"sim": json.loads(json.dumps(asdict(SimConfig())))})
    old = {**{key: value for key, value in sim_defaults.items() if key in new}, **old}
    differences = [
        f"{key} is {old.get(key, '<missing>')!r} there but {new.get(key, '<missing>')!r} here"
        for key in sorted(set(old) | set(new))
        if key != "num_clips" and not key.startswith("library.") and old.get(key) != new.get(key)
    ]
    if old.get("num_clips", 0) > new["num_clips"]:
        differences.append(
            f"num_clips is {old['num_clips']} there but {new['num_clips']} here "
            "(a dataset can grow, not shrink)"
        )
    if differences:
        raise DatasetSettingsError(
            f"{path}: this folder holds a dataset generated with other settings: "
            + "; ".join(differences)
            + ". Rerun with the same settings to resume, or choose another --out."
        )
    changed = [key for key in new if key.startswith("library.") and old.get(key) != new[key]]
    if changed:
        warnings.warn(
            f"{path}: resuming with other library versions "
            f"({', '.join(f'{k}: {old.get(k)} -> {new[k]}' for k in changed)}); "
            "new clips may differ in the last bits from a run with the original versions",
            stacklevel=4,
        )


def _read_json(path: Path) -> dict:
    try:
        settings = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: not a readable dataset.json ({exc})") from exc
    if not isinstance(settings, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(settings).__name__}")
    return settings


def load_settings(root: str | os.PathLike) -> dict:
    """Returns the content of ``<root>/dataset.json`` (raises ``DataFormatError`` if missing or bad)."""
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        raise DataFormatError(
            f"{Path(root)}: no {DATASET_FILE}; expected a dataset folder written by `momap sim`"
        )
    settings = _read_json(path)
    if settings.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(
            f"{path}: format_version is {settings.get('format_version')!r}, "
            f"this library reads {FORMAT_VERSION}"
        )
    return settings


# ----------------------------------------------------------------------------- manifest
def read_manifest(path: Path, tolerate_torn: bool) -> tuple[list[dict], bool]:
    """Returns ``(entries, torn)``: the manifest's entries in file order, and whether a torn last line
    (an interrupted append) was dropped. Any other bad line raises ``DataFormatError``."""
    if not path.is_file():
        raise DataFormatError(
            f"{path.parent}: no {MANIFEST_FILE}; expected a dataset folder written by `momap sim`"
        )
    # The writer emits ASCII JSON; "replace" keeps a line torn inside a byte sequence readable as torn.
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    entries, torn = [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last_without_newline = number == len(lines)
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError(f"expected a JSON object, got {type(entry).__name__}")
            missing = [key for key in MANIFEST_KEYS if key not in entry]
            if missing:
                raise ValueError(f"missing keys {missing}")
            check_clip_id(entry["id"])
            check_relative_path(entry["file"], "file")  # readers also resolve symlinks (clip_path)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            if last_without_newline and tolerate_torn:
                torn = True
                continue
            hint = " (a torn last line: the writer was interrupted; rerun `momap sim` to finish)"
            raise DataFormatError(
                f"{path}:{number}: not a manifest entry ({exc})" + (hint if last_without_newline else "")
            ) from exc
        entries.append(entry)
    return entries, torn


def check_clip_id(identifier: Any) -> str:
    """Returns a manifest ``id`` after checking that it can name a file (``<id>.npz``) in its folder.

    Ids name prediction files and clip files, so one from a foreign manifest must not be able to
    point elsewhere: a non-empty string without path separators, not "." or "..".
    """
    if (
        not isinstance(identifier, str)
        or identifier.strip() in ("", ".", "..")
        or any(c in identifier for c in "/\\\0")
    ):
        raise DataFormatError(
            f"id: expected a clip name usable as a file name (no '/', '\\', not '..'), got {identifier!r}"
        )
    return identifier


def clip_path(root: str | os.PathLike, entry: dict) -> Path:
    """Returns the path of a manifest entry's clip file, confined to the dataset folder ``root``.

    Raises ``DataFormatError`` naming the clip when ``file`` is absolute, climbs out with ``..``
    or leads out of the folder through a symlink (``momaplib.storage.confined_path``).
    """
    return confined_path(root, entry["file"], f"clip {entry['id']}: file")


def _check_unique(path: Path, entries: list[dict]) -> None:
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries):
        if entry["id"] in seen:
            raise DataFormatError(
                f"{path}: clip {entry['id']} appears twice (entries {seen[entry['id']] + 1} and {number + 1})"
            )
        seen[entry["id"]] = number


def load_manifest(root: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Returns the manifest entries (dicts with ``MANIFEST_KEYS``) of ``split`` (None: all), in file order.

    A torn last line, left by a writer that was killed mid-append, is skipped with a warning;
    any other malformed line or a duplicate id raises ``DataFormatError``.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS} or None, got {split!r}")
    path = Path(root) / MANIFEST_FILE
    entries, torn = read_manifest(path, tolerate_torn=True)
    if torn:
        warnings.warn(
            f"{path}: ignoring a torn last line (an interrupted writer); "
            "rerun `momap sim` to finish the dataset",
            stacklevel=2,
        )
    _check_unique(path, entries)
    return [entry for entry in entries if split is None or entry["split"] == split]


def manifest_line(entry: dict) -> str:
    return json.dumps({key: entry[key] for key in MANIFEST_KEYS}) + "\n"


def _rewrite_manifest(root: Path, entries: list[dict], name: str = MANIFEST_FILE) -> None:
    """Writes ``entries`` sorted by index to ``root/name`` atomically (a shard's manifest: ``shards/...``)."""
    entries = sorted(entries, key=lambda entry: entry["index"])
    atomic_write_text(root / name, "".join(manifest_line(entry) for entry in entries))


def _check_entry(entry: dict, settings: dict) -> str | None:
    """Returns why a manifest entry does not belong to the dataset of ``settings`` (None if it does)."""
    index, family = entry["index"], settings["sim"]["family"]
    if not isinstance(index, int) or not 0 <= index < settings["num_clips"]:
        return f"clip {entry['id']}: index {index!r} outside 0..{settings['num_clips'] - 1}"
    expected = {
        "id": clip_id(family, index),
        "file": f"{CLIPS_DIR}/{clip_id(family, index)}.npz",
        "seed": clip_seed(settings["seed"], index),
        "split": split_of(
            clip_id(family, index), settings["split_seed"], [settings["splits"][s] for s in SPLITS]
        ),
        "family": family,
    }
    wrong = [
        f"{key} {entry[key]!r} (expected {value!r})" for key, value in expected.items() if entry[key] != value
    ]
    return f"clip {entry['id']} (index {index}): " + ", ".join(wrong) if wrong else None


# ----------------------------------------------------------------------------- verification
@dataclass
class VerifyReport:
    """What ``verify_dataset`` checked: a dataset whose every file matches its manifest line."""

    root: Path  # the dataset folder
    num_clips: int  # clips in the manifest (= dataset.json's num_clips)
    split_counts: dict[str, int]  # clips per split
    bytes: int  # total size of the clip files
    extra_files: list[str]  # files under clips/ (or *.tmp in root) that no manifest line names
    seconds: float  # wall-clock time of the check


def check_clip_file(root: Path, entry: dict) -> tuple[str | None, int]:
    """Returns ``(problem or None, bytes on disk)`` of the file of one manifest line.

    A problem names the clip: its file is missing, or its size or sha256 differs from the line.
    """
    try:
        file = clip_path(root, entry)
    except DataFormatError as exc:
        return str(exc), 0
    if not file.is_file():
        return f"clip {entry['id']}: file {file} is missing", 0
    size, sha256 = file.stat().st_size, sha256_file(file)
    if sha256 != entry["sha256"] or size != entry["bytes"]:
        return (
            f"clip {entry['id']}: {file} has sha256 {sha256} ({size} bytes) but the manifest says "
            f"sha256 {entry['sha256']} ({entry['bytes']} bytes); the file is truncated, corrupted or was "
            "changed after writing"
        ), size
    return None, size


def verify_dataset(root: str | os.PathLike, progress: bool = False) -> VerifyReport:
    """Returns a ``VerifyReport`` after checking every clip file against its manifest line.

    Checks: dataset.json is readable; every manifest line is complete (no torn line) and
    belongs to these settings (id, seed, split, file); no id appears twice; every clip file
    exists with the recorded size and sha256; the manifest holds exactly dataset.json's
    ``num_clips`` clips. All problems are collected and raised as one ``DataFormatError`` that
    names each clip (and both hashes on a mismatch). Files that no manifest line names are
    listed in ``extra_files`` with a warning; they are harmless to readers, which go through
    the manifest.
    """
    started = time.perf_counter()
    root = Path(root)
    settings = load_settings(root)
    path = root / MANIFEST_FILE
    entries, _ = read_manifest(path, tolerate_torn=False)
    problems = []
    seen: set[str] = set()
    total_bytes = 0
    for entry in tqdm(entries, desc="verify", unit="clip", disable=not progress):
        if entry["id"] in seen:
            problems.append(f"clip {entry['id']}: appears more than once in the manifest")
            continue
        seen.add(entry["id"])
        problem = _check_entry(entry, settings)
        if problem:
            problems.append(problem)
            continue
        problem, size = check_clip_file(root, entry)
        total_bytes += size
        if problem:
            problems.append(problem)
    expected = {clip_id(settings["sim"]["family"], i) for i in range(settings["num_clips"])}
    missing = sorted(expected - seen)
    if missing:
        problems.append(
            f"{len(missing)} of {settings['num_clips']} clips are not in the manifest (e.g. {missing[:3]}); "
            "the writer did not finish: rerun the same `momap sim` command"
        )
    if problems:
        shown = "\n  - ".join(problems[:20]) + (
            f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        raise DataFormatError(f"{root}: {len(problems)} problem(s):\n  - {shown}")
    named = {entry["file"] for entry in entries}
    clip_files = (root / CLIPS_DIR).iterdir() if (root / CLIPS_DIR).is_dir() else ()
    extra = sorted(f"{CLIPS_DIR}/{p.name}" for p in clip_files if f"{CLIPS_DIR}/{p.name}" not in named)
    extra += sorted(p.name for p in root.glob("*.tmp"))
    if extra:
        warnings.warn(
            f"{root}: {len(extra)} file(s) not named by the manifest, e.g. {extra[:3]}", stacklevel=2
        )
    split_counts = {name: sum(entry["split"] == name for entry in entries) for name in SPLITS}
    return VerifyReport(root, len(entries), split_counts, total_bytes, extra, time.perf_counter() - started)
