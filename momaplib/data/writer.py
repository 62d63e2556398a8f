"""The resumable, atomic, parallel MoMap-Sim dataset writer and the ``momap sim`` job."""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from momaplib.checks import is_integer
from momaplib.data.manifest import (
    CLIPS_DIR,
    DATASET_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MAX_DEFAULT_WORKERS,
    SHARDS_DIR,
    SPLITS,
    _check_entry,
    _rewrite_manifest,
    _settings,
    check_settings,
    clip_path,
    load_settings,
    manifest_line,
    read_manifest,
    verify_dataset,
)
from momaplib.data.shards import check_shard, format_shard, resolve_shard, shard_lock, shard_manifest
from momaplib.data.splits import clip_id, split_of
from momaplib.sim import SimConfig, clip_seed, generate_clip
from momaplib.storage import DataFormatError, atomic_write_text

#: Most clips of one dataset: the writer keeps one task per clip in memory (1e6 clips of the
#: default size are ~1 TB on disk).
MAX_CLIPS = 1_000_000
#: Most worker processes (each holds a clip's working memory; see ``momaplib.sim.SimConfig``).
MAX_WORKERS = 256


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


def usable_cores() -> int:
    """Returns the CPU cores this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Returns the default number of worker processes: one per usable CPU core, at most 8."""
    return max(1, min(usable_cores(), MAX_DEFAULT_WORKERS))


def parallel_map(
    tasks: Sequence[Any],
    workers: int,
    function: Callable[[Any], Any],
    chunksize: int = 1,
    stall_timeout: float | None = None,
) -> Iterator[Any]:
    """Yields ``function(task)`` of every task (e.g. the manifest entry of a written clip),
    in completion order, from ``workers`` spawned processes (0: in this process). Closing the
    iterator early terminates the workers.

    ``stall_timeout`` (seconds): raise ``TimeoutError`` when no result has come for that long. A
    worker that dies hard (killed, a crashed native library) loses its task, and a pool then waits
    for it forever; with a timeout the caller learns of it instead of hanging."""
    if workers == 0 or not tasks:  # in this process: for notebooks, debugging and tiny datasets
        yield from map(function, tasks)
        return
    # "spawn", not fork: forking a process that has initialised torch's thread pools can deadlock.
    context = multiprocessing.get_context("spawn")
    # chunks made here, not by imap's chunksize: with chunksize > 1 imap returns a plain generator,
    # whose next() takes no timeout
    step = max(chunksize, 1)
    chunks = [(function, tasks[i : i + step]) for i in range(0, len(tasks), step)]
    processes = min(workers, len(chunks))  # a process per chunk at most: more would idle
    with context.Pool(processes, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        results = pool.imap_unordered(_apply_chunk, chunks)
        while True:
            try:
                yield from results.next(stall_timeout)
            except StopIteration:
                return
            except multiprocessing.TimeoutError:
                raise TimeoutError(
                    f"parallel_map: no result from {processes} worker processes in {stall_timeout:g} s "
                    f"({getattr(function, '__name__', function)}); a worker may have died or hung"
                ) from None


def _apply_chunk(job: tuple[Callable[[Any], Any], Sequence[Any]]) -> list[Any]:
    function, tasks = job
    return [function(task) for task in tasks]


@contextlib.contextmanager
def _writer_lock(root: Path, shard: tuple[int, int] = (0, 1)) -> Iterator[None]:
    """Holds an exclusive lock on ``<root>/.lock`` (``.lock-i-of-N`` for shard i/N; released by the OS
    even if the process is killed)."""
    lock = root / shard_lock(shard)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one writer per folder is then up to the user
        yield
        return
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{root}: another `momap sim` is writing this dataset (it holds {lock}); "
                "wait for it to finish or stop it first"
            ) from None
        yield


def _open_dataset(root: Path, requested: dict) -> None:
    """Checks ``dataset.json`` against the request (or writes it for a new dataset)."""
    path = root / DATASET_FILE
    if path.exists():
        existing = load_settings(root)
        check_settings(path, existing, requested)
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
    ours = (CLIPS_DIR, SHARDS_DIR)  # and lock files: shards of a new dataset may start at the same time
    others = sorted(p.name for p in root.iterdir() if p.name not in ours and not p.name.startswith(LOCK_FILE))
    if others:
        raise DataFormatError(
            f"{root}: not empty and has no {DATASET_FILE} (found {others[:5]}); "
            "choose an empty or new --out for a new dataset"
        )


def _remove_temporary_files(root: Path, shard: tuple[int, int] = (0, 1), family: str = "") -> int:
    """Deletes ``*.tmp`` files left by killed writers; returns how many. Only call under the lock.

    A shard (N > 1) removes only temporary files of its own clips and manifest: the other shards
    may be writing theirs in the same folder right now.
    """
    if shard[1] == 1:
        stale = [*root.glob("*.tmp"), *(root / CLIPS_DIR).glob("*.tmp")]
    else:
        own = [*(root / CLIPS_DIR).glob(f".{family}_*.npz.*.tmp"), *(root / SHARDS_DIR).glob("*.tmp")]
        manifest = Path(shard_manifest(shard)).name
        stale = [
            path
            for path in own
            if (path.parent.name == SHARDS_DIR and path.name.startswith(f".{manifest}."))
            or (path.parent.name == CLIPS_DIR and _temporary_clip_index(path, family) % shard[1] == shard[0])
        ]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _temporary_clip_index(path: Path, family: str) -> int:
    """Returns the clip index in a temporary clip file name ``.<family>_<index>.npz.<random>.tmp`` (or -1)."""
    digits = path.name[len(family) + 2 :].split(".", 1)[0]
    return int(digits) if digits.isdigit() else -1


def _finished_entries(root: Path, settings: dict, name: str = MANIFEST_FILE) -> dict[int, dict]:
    """Returns ``{index: entry}`` of clips that are done (in the manifest, file of the recorded size).

    Rewrites the manifest atomically with exactly those entries, which drops a torn last line
    and entries whose file is missing or truncated (they are generated again).
    """
    path = root / name
    if not path.exists():
        return {}
    entries, torn = read_manifest(path, tolerate_torn=True)
    done: dict[int, dict] = {}
    for entry in entries:
        problem = _check_entry(entry, settings)
        if problem:  # never mix clips of different settings in one folder
            raise DataFormatError(
                f"{path}: {problem}; this manifest does not belong to {root / DATASET_FILE}"
            )
        file = clip_path(root, entry)
        if file.is_file() and file.stat().st_size == entry["bytes"]:
            done[entry["index"]] = entry
    # Also rewrite when an entry lacks only its newline (it would glue onto the next append) and
    # when workers finished out of order (a killed run never reached the final sorted rewrite).
    in_order = [entry["index"] for entry in entries] == sorted(done)
    if torn or not in_order or not path.read_bytes().endswith(b"\n"):
        _rewrite_manifest(root, list(done.values()), name)
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
    shard: tuple[int, int] = (0, 1),
) -> WriteReport:
    """Returns a ``WriteReport`` after writing (or finishing) a dataset of ``num_clips`` clips at ``root``.

    Clip ``i`` is ``generate_clip(clip_seed(seed, i), config)`` with id ``clip_id(family, i)``
    and split ``split_of(id, split_seed, splits)``. ``workers`` processes render and write the
    clips (None: ``default_workers()``; 0: in this process). Rerunning with the same arguments
    resumes an interrupted run and does nothing for a complete dataset; a larger ``num_clips``
    extends it; other settings raise ``DatasetSettingsError``. ``progress`` shows a ``tqdm`` bar
    and a line when there is nothing to do.

    ``shard = (i, N)`` writes only the clips whose index is ``i`` modulo ``N``, with their manifest
    lines in ``shards/manifest-i-of-N.jsonl`` instead of ``manifest.jsonl``; the N shards may run
    at the same time (on machines sharing the folder, or each into its own folder) and
    ``merge_dataset`` joins them into the dataset an unsharded call writes, byte for byte.
    ``num_clips`` in the report then counts this shard's clips.
    """
    if not is_integer(num_clips) or not 1 <= num_clips <= MAX_CLIPS:
        raise ValueError(f"num_clips: expected 1..{MAX_CLIPS}, got {num_clips!r}")
    workers = default_workers() if workers is None else workers
    if not is_integer(workers) or not 0 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers: expected 0..{MAX_WORKERS} (0 = in this process), got {workers!r}")
    for name, value in (("seed", seed), ("split_seed", split_seed)):
        if not is_integer(value):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
    check_shard(shard)
    started = time.perf_counter()
    root = Path(root)
    requested = _settings(config, num_clips, seed, splits, split_seed)
    _check_new_folder(root)  # before creating the lock file in it
    root.mkdir(parents=True, exist_ok=True)
    own_manifest = shard_manifest(shard)
    with _writer_lock(root, shard):
        _open_dataset(root, requested)
        (root / CLIPS_DIR).mkdir(exist_ok=True)
        (root / own_manifest).parent.mkdir(exist_ok=True)
        _remove_temporary_files(root, shard, config.family)
        done = _finished_entries(root, requested, own_manifest)
        already_done = len(done)
        tasks = []
        mine = range(shard[0], num_clips, shard[1])
        for index in mine:
            if index not in done:
                identifier = clip_id(config.family, index)
                split = split_of(identifier, split_seed, splits)
                tasks.append(_ClipTask(str(root), identifier, index, clip_seed(seed, index), split, config))
        if not tasks:
            if progress:
                part = f" of shard {format_shard(shard)}" if shard[1] > 1 else ""
                print(f"{root}: all {len(mine)} clips{part} are already written; nothing to do")
        else:
            bar = tqdm(
                total=len(mine),
                initial=already_done,
                desc=f"momap sim {config.family}" + (f" {format_shard(shard)}" if shard[1] > 1 else ""),
                unit="clip",
                disable=not progress,
            )
            try:
                with bar, open(root / own_manifest, "a") as manifest:
                    for entry in parallel_map(tasks, workers, _write_clip):
                        manifest.write(manifest_line(entry))
                        manifest.flush()
                        os.fsync(manifest.fileno())  # the clip counts as done only once its line is on disk
                        done[entry["index"]] = entry
                        bar.update()
            except KeyboardInterrupt:
                print(
                    f"\ninterrupted: {len(done)} of {len(mine)} clips are written; "
                    "rerun the same command to resume"
                )
                raise
            _rewrite_manifest(root, list(done.values()), own_manifest)
    split_counts = {name: sum(entry["split"] == name for entry in done.values()) for name in SPLITS}
    return WriteReport(root, len(done), len(tasks), already_done, split_counts, time.perf_counter() - started)


# ----------------------------------------------------------------------------- command line
@dataclass
class SimJob:
    """Writes a MoMap-Sim dataset: one npz per clip, manifest.jsonl with sha256, train/val/test splits.

    Resumable: rerun the same command after an interruption to finish the dataset (finished
    clips are skipped); a larger --num-clips extends it. The layout is described in
    data/README.md. On many machines, run shards ``--shard i/N`` (a SLURM job array sets it) and
    join them with ``momap merge --out``: the result is the dataset one unsharded run writes.
    """

    out: Path
    """Dataset folder to write (created if missing), e.g. data/sim_tabletop."""
    num_clips: int = 1000
    """Number of clips, 1..1000000."""
    sim: SimConfig = field(default_factory=SimConfig)
    """Simulator settings, shared by every clip."""
    smoke: bool = False
    """Use the smoke size (32x32 pixels, T = 8) instead of --height/--width/--num-frames."""
    seed: int = 0
    """Base seed: clip i uses momaplib.sim.clip_seed(seed, i)."""
    workers: int | None = None
    """Worker processes, 0..256 (None: one per CPU core, at most 8; 0: generate in this process)."""
    splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    """Fractions of train, val and test clips."""
    split_seed: int = 0
    """Seed of the split assignment (a hash of this seed and the clip id)."""
    shard: str | None = None
    """'i/N': write only the clips whose index is i modulo N (manifest in shards/; join the N parts
    with `momap merge`). Default: from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set, else 0/1."""
    verify: bool = True
    """Check every file's sha256 against the manifest at the end (`momap merge` checks a shard's files)."""
    progress: bool = True
    """Show a progress bar."""

    def run(self) -> WriteReport:
        """Writes (or finishes) the dataset, prints a summary and returns the ``WriteReport``."""
        config = self.sim.smoke() if self.smoke else self.sim
        shard = resolve_shard(self.shard)
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
                shard=shard,
            )
        except KeyboardInterrupt:  # write_dataset said how to resume; a traceback would only bury it
            raise SystemExit(130) from None
        counts = ", ".join(f"{name} {count}" for name, count in report.split_counts.items())
        speed = f", {report.clips_per_second:.2f} clips/s" if report.generated else ""
        part = f" of shard {format_shard(shard)}" if shard[1] > 1 else ""
        print(
            f"{report.root}: {report.num_clips} clips{part} ({counts}); generated {report.generated} "
            f"({report.already_done} were already done) in {report.seconds:.1f} s{speed}"
        )
        if shard[1] > 1:
            print(f"when all {shard[1]} shards are done, join them with: momap merge --out {self.out}")
        elif self.verify:
            checked = verify_dataset(self.out, progress=self.progress)
            print(
                f"verified {checked.num_clips} clips ({checked.bytes / 1e6:.1f} MB, sha256) "
                f"in {checked.seconds:.1f} s"
            )
        return report
