"""MoMap-Sim datasets on disk: a resumable parallel writer, a verifier and a torch ``Dataset``.

Layout of a dataset folder ``<root>`` (DESIGN.md, "On disk"; see also ``data/README.md``)::

    <root>/dataset.json     what generated it: format_version, seed (base seed), num_clips,
                            splits (fractions), split_seed, sim (every SimConfig field:
                            family, height, width, num_frames, fov_deg, ..., device) and
                            library (versions; informational, not compared on resume)
    <root>/manifest.jsonl   one JSON line per finished clip (sorted by id once the writer
                            ends): id, index, split, file, family, seed, shape [T, H, W],
                            prompt, action, sha256, bytes
    <root>/clips/<id>.npz   one ``Clip.save`` file per clip; id = "<family>_<index:06d>",
                            e.g. "tabletop_000042"
    <root>/.lock            locked by a running writer, so two writers never share a folder

Guarantees:
- Deterministic: clip ``i`` is ``generate_clip(clip_seed(seed, i), sim)``; its split is a pure
  function of ``(split_seed, id)`` (``split_of``), so it never changes when the dataset grows
  or a run resumes. Files are bit-identical across runs on the same device and torch build.
- Atomic: workers write each npz to a temporary file and rename it into place; only the parent
  appends to the manifest (append, flush, fsync per line), after the clip's file is complete.
  A clip counts as done only when it is in the manifest *and* its file has the recorded size.
- Resumable: rerunning the same command finishes an interrupted run (a kill at any moment
  leaves at worst a torn last manifest line, stray ``*.tmp`` files or an npz without a manifest
  line; all are dropped or regenerated). Different settings in the same folder are refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from momaplib.momap import MoMap, normalization_stats, normalize_xyz, xyz_to_channels
from momaplib.sim import SimConfig, clip_seed, generate_clip
from momaplib.storage import DataFormatError, atomic_write_text, sha256_file

#: Version of the on-disk layout; bump it when dataset.json, the manifest or the npz keys change.
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
CLIPS_DIR = "clips"
LOCK_FILE = ".lock"
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


# ----------------------------------------------------------------------------- ids and splits
def clip_id(family: str, index: int, task_variant: int = 0) -> str:
    """Returns the id of clip ``index`` of a ``family`` dataset, e.g. ``"tabletop_000042"``; a
    ``SimConfig.task_variant`` > 0 of it ends in ``_v<variant>`` (``"tabletop_000042_v1"``)."""
    return f"{family}_{index:06d}" + (f"_v{task_variant}" if task_variant else "")


def split_of(clip_id: str, split_seed: int = 0, splits: Sequence[float] = (0.9, 0.05, 0.05)) -> str:
    """Returns the split ("train", "val" or "test") of a clip: a pure function of its id.

    A hash of ``(split_seed, clip_id)`` is mapped to [0, 1) and cut at the cumulative
    fractions ``splits`` (train, val, test), so a clip keeps its split when the dataset grows
    or a run resumes, and the split sizes follow the fractions up to sampling noise.
    """
    fractions = _check_splits(splits)
    digest = hashlib.sha256(f"momap-split:{split_seed}:{clip_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2**64
    cumulative = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if u < cumulative:
            return name
    # Fractions that sum to 1 only up to rounding can leave u above the last cut.
    return [name for name, fraction in zip(SPLITS, fractions, strict=True) if fraction > 0][-1]


def split_indices(family: str, count: int, split: str, first_index: int = 0) -> list[int]:
    """Returns the first ``count`` clip indices of a ``family`` from ``first_index`` on whose id
    falls in ``split`` (``split_of`` with the default seed and fractions, as ``momap sim`` writes
    them). A clip's split does not depend on the dataset size, so the first 117 tabletop test
    indices are the test split of a 2,500-clip dataset and the list goes on past it."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    indices, index = [], first_index
    while len(indices) < count:
        if split_of(clip_id(family, index)) == split:
            indices.append(index)
        index += 1
    return indices


def _check_splits(splits: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in splits)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"splits: expected 3 fractions (train, val, test) >= 0 summing to 1, got {splits}")
    return fractions


# ----------------------------------------------------------------------------- settings
def _settings(config: SimConfig, num_clips: int, seed: int, splits: Sequence[float], split_seed: int) -> dict:
    """Returns the dataset.json content of a request (JSON types only, so it compares to a read file)."""
    settings = {
        "format_version": FORMAT_VERSION,
        "num_clips": int(num_clips),
        "seed": int(seed),
        "splits": dict(zip(SPLITS, _check_splits(splits), strict=True)),
        "split_seed": int(split_seed),
        "sim": asdict(config),
        "library": _library_versions(),
    }
    return json.loads(json.dumps(settings))


def _library_versions() -> dict[str, str]:
    try:
        momaplib_version = importlib.metadata.version("momaplib")
    except importlib.metadata.PackageNotFoundError:
        momaplib_version = "unknown"
    return {"momaplib": momaplib_version, "torch": torch.__version__, "numpy": np.__version__}


def _flatten(settings: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_settings(path: Path, existing: dict, requested: dict) -> None:
    """Raises ``DatasetSettingsError`` naming every field where ``existing`` differs from ``requested``.

    ``num_clips`` may grow (the first clips stay the same); the library versions are only
    compared with a warning, since they may change the clips' bits but not what they mean.
    """
    old, new = _flatten(existing), _flatten(requested)
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
def _read_manifest(path: Path, tolerate_torn: bool) -> tuple[list[dict], bool]:
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
    entries, torn = _read_manifest(path, tolerate_torn=True)
    if torn:
        warnings.warn(
            f"{path}: ignoring a torn last line (an interrupted writer); "
            "rerun `momap sim` to finish the dataset",
            stacklevel=2,
        )
    _check_unique(path, entries)
    return [entry for entry in entries if split is None or entry["split"] == split]


def _manifest_line(entry: dict) -> str:
    return json.dumps({key: entry[key] for key in MANIFEST_KEYS}) + "\n"


def _rewrite_manifest(root: Path, entries: list[dict]) -> None:
    entries = sorted(entries, key=lambda entry: entry["index"])
    atomic_write_text(root / MANIFEST_FILE, "".join(_manifest_line(entry) for entry in entries))


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


# ----------------------------------------------------------------------------- writing
@dataclass
class WriteReport:
    """What ``write_dataset`` did."""

    root: Path  # the dataset folder
    num_clips: int  # clips in the dataset now
    generated: int  # clips rendered by this call
    already_done: int  # clips found finished when the call started (resume)
    split_counts: dict[str, int]  # clips per split, over the whole dataset
    seconds: float  # wall-clock time of the call

    @property
    def clips_per_second(self) -> float:
        """Returns the generation throughput of this call (0 when nothing was generated)."""
        return self.generated / self.seconds if self.generated and self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _ClipTask:
    """Everything a worker needs to render and write one clip (picklable for spawned workers)."""

    root: str
    clip_id: str
    index: int
    seed: int
    split: str
    config: SimConfig


def _write_clip(task: _ClipTask) -> dict:
    """Renders one clip, writes its npz atomically and returns its manifest entry."""
    try:
        clip = generate_clip(task.seed, task.config)
        file = f"{CLIPS_DIR}/{task.clip_id}.npz"
        path = Path(task.root) / file
        sha256 = clip.save(path)
    except Exception as exc:
        raise RuntimeError(f"clip {task.clip_id} (index {task.index}, seed {task.seed}): {exc!r}") from exc
    T, H, W = clip.momap.xyz.shape[:3]
    entry = {
        "id": task.clip_id,
        "index": task.index,
        "split": task.split,
        "file": file,
        "family": clip.family,
        "seed": task.seed,
        "shape": [T, H, W],
        "prompt": clip.prompt,
        "action": clip.task.action,
        "sha256": sha256,
        "bytes": path.stat().st_size,
    }
    return entry


def _init_worker(parent_pid: int) -> None:
    # One clip per core: torch's own thread pool on top of N processes oversubscribes the cores
    # and makes generation ~10x slower.
    torch.set_num_threads(1)
    # Ctrl-C is the parent's to handle: it terminates the pool and reports how to resume.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker must not outlive a killed parent: it would keep writing into a folder that the
    # next run is already resuming. Linux can kill it with the parent (prctl PR_SET_PDEATHSIG).
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def default_workers() -> int:
    """Returns the default number of worker processes: one per usable CPU core, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def _generate(
    tasks: Sequence[Any], workers: int, function: Callable[[Any], Any] = _write_clip, chunksize: int = 1
) -> Iterator[Any]:
    """Yields ``function(task)`` of every task (default: the manifest entry of a written clip),
    in completion order, from ``workers`` spawned processes (0: in this process). Closing the
    iterator early terminates the workers."""
    if workers == 0:  # in this process: for notebooks, debugging and tiny datasets
        yield from map(function, tasks)
        return
    # "spawn", not fork: forking a process that has initialised torch's thread pools can deadlock.
    context = multiprocessing.get_context("spawn")
    processes = min(workers, len(tasks))
    with context.Pool(processes, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        yield from pool.imap_unordered(function, tasks, chunksize=chunksize)


@contextlib.contextmanager
def _writer_lock(root: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``<root>/.lock`` (released by the OS even if the process is killed)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one writer per folder is then up to the user
        yield
        return
    with open(root / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{root}: another `momap sim` is writing this dataset (it holds {root / LOCK_FILE}); "
                "wait for it to finish or stop it first"
            ) from None
        yield


def _open_dataset(root: Path, requested: dict) -> None:
    """Checks ``dataset.json`` against the request (or writes it for a new dataset)."""
    path = root / DATASET_FILE
    if path.exists():
        existing = load_settings(root)
        _check_settings(path, existing, requested)
        if existing["num_clips"] != requested["num_clips"]:  # growing: record the new size first
            atomic_write_text(
                path, json.dumps({**existing, "num_clips": requested["num_clips"]}, indent=2) + "\n"
            )
        return
    _check_new_folder(root)
    atomic_write_text(path, json.dumps(requested, indent=2) + "\n")


def _check_new_folder(root: Path) -> None:
    """Raises ``DataFormatError`` if ``root`` holds files but no dataset.json (a foreign folder)."""
    if not root.is_dir() or (root / DATASET_FILE).exists():
        return
    others = sorted(p.name for p in root.iterdir() if p.name not in (LOCK_FILE, CLIPS_DIR))
    if others:
        raise DataFormatError(
            f"{root}: not empty and has no {DATASET_FILE} (found {others[:5]}); "
            "choose an empty or new --out for a new dataset"
        )


def _remove_temporary_files(root: Path) -> int:
    """Deletes ``*.tmp`` files left by killed writers; returns how many. Only call under the lock."""
    stale = [*root.glob("*.tmp"), *(root / CLIPS_DIR).glob("*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _finished_entries(root: Path, settings: dict) -> dict[int, dict]:
    """Returns ``{index: entry}`` of clips that are done (in the manifest, file of the recorded size).

    Rewrites the manifest atomically with exactly those entries, which drops a torn last line
    and entries whose file is missing or truncated (they are generated again).
    """
    path = root / MANIFEST_FILE
    if not path.exists():
        return {}
    entries, torn = _read_manifest(path, tolerate_torn=True)
    done: dict[int, dict] = {}
    for entry in entries:
        problem = _check_entry(entry, settings)
        if problem:  # never mix clips of different settings in one folder
            raise DataFormatError(
                f"{path}: {problem}; this manifest does not belong to {root / DATASET_FILE}"
            )
        file = root / entry["file"]
        if file.is_file() and file.stat().st_size == entry["bytes"]:
            done[entry["index"]] = entry
    # Also rewrite when an entry lacks only its newline (it would glue onto the next append) and
    # when workers finished out of order (a killed run never reached the final sorted rewrite).
    in_order = [entry["index"] for entry in entries] == sorted(done)
    if torn or not in_order or not path.read_bytes().endswith(b"\n"):
        _rewrite_manifest(root, list(done.values()))
    return done


def write_dataset(
    root: str | os.PathLike,
    config: SimConfig,
    num_clips: int,
    seed: int = 0,
    workers: int | None = None,
    splits: Sequence[float] = (0.9, 0.05, 0.05),
    split_seed: int = 0,
    progress: bool = True,
) -> WriteReport:
    """Returns a ``WriteReport`` after writing (or finishing) a dataset of ``num_clips`` clips at ``root``.

    Clip ``i`` is ``generate_clip(clip_seed(seed, i), config)`` with id ``clip_id(family, i)``
    and split ``split_of(id, split_seed, splits)``. ``workers`` processes render and write the
    clips (None: ``default_workers()``; 0: in this process). Rerunning with the same arguments
    resumes an interrupted run and does nothing for a complete dataset; a larger ``num_clips``
    extends it; other settings raise ``DatasetSettingsError``. ``progress`` shows a ``tqdm`` bar
    and a line when there is nothing to do.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips: expected >= 1, got {num_clips}")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers: expected >= 0 (0 = in this process), got {workers}")
    started = time.perf_counter()
    root = Path(root)
    requested = _settings(config, num_clips, seed, splits, split_seed)
    _check_new_folder(root)  # before creating the lock file in it
    root.mkdir(parents=True, exist_ok=True)
    with _writer_lock(root):
        _open_dataset(root, requested)
        (root / CLIPS_DIR).mkdir(exist_ok=True)
        _remove_temporary_files(root)
        done = _finished_entries(root, requested)
        already_done = len(done)
        tasks = []
        for index in range(num_clips):
            if index not in done:
                identifier = clip_id(config.family, index)
                split = split_of(identifier, split_seed, splits)
                tasks.append(_ClipTask(str(root), identifier, index, clip_seed(seed, index), split, config))
        if not tasks:
            if progress:
                print(f"{root}: all {num_clips} clips are already written; nothing to do")
        else:
            bar = tqdm(
                total=num_clips,
                initial=already_done,
                desc=f"momap sim {config.family}",
                unit="clip",
                disable=not progress,
            )
            try:
                with bar, open(root / MANIFEST_FILE, "a") as manifest:
                    for entry in _generate(tasks, workers):
                        manifest.write(_manifest_line(entry))
                        manifest.flush()
                        os.fsync(manifest.fileno())  # the clip counts as done only once its line is on disk
                        done[entry["index"]] = entry
                        bar.update()
            except KeyboardInterrupt:
                print(
                    f"\ninterrupted: {len(done)} of {num_clips} clips are written; "
                    "rerun the same command to resume"
                )
                raise
            _rewrite_manifest(root, list(done.values()))
    split_counts = {name: sum(entry["split"] == name for entry in done.values()) for name in SPLITS}
    return WriteReport(root, len(done), len(tasks), already_done, split_counts, time.perf_counter() - started)


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
    file = root / entry["file"]
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
    entries, _ = _read_manifest(path, tolerate_torn=False)
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


# ----------------------------------------------------------------------------- torch Dataset
def model_inputs(momap: MoMap) -> dict[str, Any]:
    """Returns the model-ready tensors of one MoMap (the items of ``MoMapDataset``).

    Keys: ``momap`` (3T, H, W) float32 normalised trajectories in model layout (channel 3t + c),
    ``xyz0`` (3, H, W) the normalised reference XYZ (= ``momap[:3]``), ``center`` (3,) and
    ``scale`` () float32 from ``normalization_stats`` (``denormalize_xyz`` with them gives back
    metres), ``rgb`` (3, H, W) float32 in [-1, 1], ``instance`` (H, W) int64, ``valid`` (H, W)
    bool, ``visible`` (T, H, W) bool, ``K`` (3, 3) float32, ``ref_from_cam`` (T, 4, 4) float32,
    ``prompt`` str, ``target_id`` int (the instance the prompt names, ``meta["task"]["target_id"]``;
    -1 when the clip does not say). Invalid pixels carry no trajectory and are 0 (the scene centre) in
    ``momap`` and ``xyz0``.
    """
    xyz, valid = torch.from_numpy(momap.xyz), torch.from_numpy(momap.valid)
    center, scale = normalization_stats(xyz[0], valid)
    normalized = torch.where(valid[None, :, :, None], normalize_xyz(xyz, center, scale), 0.0)
    channels = xyz_to_channels(normalized).contiguous()  # (3T, H, W)
    return {
        "momap": channels,
        "xyz0": channels[:3].clone(),
        "center": center.float(),
        "scale": scale.float(),
        "rgb": torch.from_numpy(momap.rgb).permute(2, 0, 1).float() / 127.5 - 1.0,
        "instance": torch.from_numpy(momap.instance).long(),
        "valid": valid,
        "visible": torch.from_numpy(momap.visible),
        "K": torch.from_numpy(momap.K),
        "ref_from_cam": torch.from_numpy(momap.ref_from_cam),
        "prompt": momap.prompt,
        "target_id": int(momap.meta.get("task", {}).get("target_id", -1)),
    }


class MoMapDataset(torch.utils.data.Dataset):
    """The clips of one split of a dataset folder as model-ready tensors (see ``model_inputs``).

    ``MoMapDataset(root, split="train")[i]`` is ``model_inputs`` of clip i (manifest order) plus
    ``id`` (str). ``split=None`` takes every clip; a split may be empty for tiny datasets. With
    ``verify=True`` every load first checks the file's sha256 against the manifest. PyTorch's
    default collate batches items (tensors stacked, strings into lists), as does ``collate``.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = "train", verify: bool = False):
        self.root = Path(root)
        self.split = split
        self.verify = verify
        self.settings = load_settings(self.root)
        self.entries = load_manifest(self.root, split)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        path = self.root / entry["file"]
        if self.verify:
            if not path.is_file():
                raise DataFormatError(f"clip {entry['id']}: file {path} is missing")
            sha256 = sha256_file(path)
            if sha256 != entry["sha256"]:
                raise DataFormatError(
                    f"clip {entry['id']}: {path} has sha256 {sha256} "
                    f"but the manifest says {entry['sha256']}; "
                    "the file is truncated, corrupted or was changed after writing"
                )
        momap = MoMap.load(path)  # DataFormatError / MoMapValidationError name the file
        if list(momap.xyz.shape[:3]) != list(entry["shape"]):
            raise DataFormatError(
                f"clip {entry['id']}: {path} has (T, H, W) = {momap.xyz.shape[:3]}, "
                f"the manifest says {tuple(entry['shape'])}"
            )
        return {**model_inputs(momap), "id": entry["id"]}


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Returns a batch: tensors stacked to (B, ...), strings (``prompt``, ``id``) as lists of B."""
    return torch.utils.data.default_collate(list(items))


# ----------------------------------------------------------------------------- command line
@dataclass
class SimJob:
    """Writes a MoMap-Sim dataset: one npz per clip, manifest.jsonl with sha256, train/val/test splits.

    Resumable: rerun the same command after an interruption to finish the dataset (finished
    clips are skipped); a larger --num-clips extends it. The layout is described in
    data/README.md.
    """

    out: Path
    """Dataset folder to write (created if missing), e.g. data/sim_tabletop."""
    num_clips: int = 1000
    """Number of clips."""
    sim: SimConfig = field(default_factory=SimConfig)
    """Simulator settings, shared by every clip."""
    smoke: bool = False
    """Use the smoke size (32x32 pixels, T = 8) instead of --height/--width/--num-frames."""
    seed: int = 0
    """Base seed: clip i uses momaplib.sim.clip_seed(seed, i)."""
    workers: int | None = None
    """Worker processes (None: one per CPU core, at most 8; 0: generate in this process)."""
    splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    """Fractions of train, val and test clips."""
    split_seed: int = 0
    """Seed of the split assignment (a hash of this seed and the clip id)."""
    verify: bool = True
    """Check every file's sha256 against the manifest at the end."""
    progress: bool = True
    """Show a progress bar."""

    def run(self) -> WriteReport:
        """Writes (or finishes) the dataset, prints a summary and returns the ``WriteReport``."""
        config = self.sim.smoke() if self.smoke else self.sim
        try:
            report = write_dataset(
                self.out,
                config,
                self.num_clips,
                seed=self.seed,
                workers=self.workers,
                splits=self.splits,
                split_seed=self.split_seed,
                progress=self.progress,
            )
        except KeyboardInterrupt:  # write_dataset said how to resume; a traceback would only bury it
            raise SystemExit(130) from None
        counts = ", ".join(f"{name} {count}" for name, count in report.split_counts.items())
        speed = f", {report.clips_per_second:.2f} clips/s" if report.generated else ""
        print(
            f"{report.root}: {report.num_clips} clips ({counts}); generated {report.generated} "
            f"({report.already_done} were already done) in {report.seconds:.1f} s{speed}"
        )
        if self.verify:
            checked = verify_dataset(self.out, progress=self.progress)
            print(
                f"verified {checked.num_clips} clips ({checked.bytes / 1e6:.1f} MB, sha256) "
                f"in {checked.seconds:.1f} s"
            )
        return report


__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_KEYS",
    "SPLITS",
    "DatasetSettingsError",
    "MoMapDataset",
    "SimJob",
    "VerifyReport",
    "WriteReport",
    "clip_id",
    "collate",
    "default_workers",
    "load_manifest",
    "load_settings",
    "model_inputs",
    "split_of",
    "verify_dataset",
    "write_dataset",
]
