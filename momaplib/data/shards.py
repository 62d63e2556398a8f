"""Sharded dataset jobs: ``--shard i/N`` specs (SLURM job arrays) and ``momap merge``.

A dataset of ``num_clips`` clips can be written by N jobs on N machines: job ``i`` writes the
clips whose index is ``i`` modulo ``N`` (interleaved, so every shard gets the same mix and the
same amount of work), with its manifest lines in ``shards/manifest-i-of-N.jsonl``. Every clip is
a pure function of its index, so the shards need not talk to each other. ``merge_dataset`` (the
``momap merge`` job) then joins the shard manifests into ``manifest.jsonl`` after checking every
clip file's sha256, which gives exactly the dataset (manifest bytes and npz bytes) one unsharded
run writes. Shards may write into one shared folder, or each into its own folder (e.g. a local
disk), whose clips ``merge_dataset(parts=...)`` links or copies into the output folder.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from momaplib.data.manifest import (
    CLIPS_DIR,
    DATASET_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    SHARDS_DIR,
    _check_entry,
    check_clip_file,
    check_settings,
    clip_path,
    load_settings,
    manifest_line,
    read_manifest,
    verify_dataset,
)
from momaplib.data.splits import clip_id
from momaplib.storage import DataFormatError, atomic_write_text

#: Environment variables of a SLURM job array that give the default shard (task id - min / count).
SLURM_TASK_ID, SLURM_TASK_MIN, SLURM_TASK_COUNT = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
)
_SHARD_MANIFEST = re.compile(r"manifest-(\d+)-of-(\d+)\.jsonl")


# ----------------------------------------------------------------------------- shard specs
def parse_shard(spec: str) -> tuple[int, int]:
    """Returns ``(i, N)`` of a shard spec ``"i/N"``, ``0 <= i < N`` (else ``ValueError`` naming ``shard``)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"shard: expected 'i/N' with 0 <= i < N (e.g. '0/4'), got {spec!r}")
    return int(match[1]), int(match[2])


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """Returns ``shard`` after checking it is ``(i, N)`` with ``0 <= i < N``."""
    if (
        not isinstance(shard, tuple | list)
        or len(shard) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
        or not 0 <= shard[0] < shard[1]
    ):
        raise ValueError(f"shard: expected (i, N) with 0 <= i < N, got {shard!r}")
    return int(shard[0]), int(shard[1])


def format_shard(shard: tuple[int, int]) -> str:
    """Returns the ``"i/N"`` spec of a shard."""
    return f"{shard[0]}/{shard[1]}"


def resolve_shard(spec: str | None, environ: os._Environ | dict | None = None) -> tuple[int, int]:
    """Returns ``(i, N)`` of ``spec``; ``None`` takes the SLURM job array's task when there is one.

    ``i = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` (arrays may start at 1, e.g. ``--array=1-8``)
    and ``N = SLURM_ARRAY_TASK_COUNT``; without them (or outside an array) the job is unsharded, 0/1.
    """
    if spec is not None:
        return parse_shard(spec)
    environ = os.environ if environ is None else environ
    if SLURM_TASK_ID not in environ or SLURM_TASK_COUNT not in environ:
        return 0, 1
    try:
        task, first = int(environ[SLURM_TASK_ID]), int(environ.get(SLURM_TASK_MIN, 0))
        count = int(environ[SLURM_TASK_COUNT])
    except ValueError:
        raise ValueError(
            f"shard: {SLURM_TASK_ID}/{SLURM_TASK_MIN}/{SLURM_TASK_COUNT} are not integers "
            f"({environ.get(SLURM_TASK_ID)!r}, {environ.get(SLURM_TASK_MIN)!r}, "
            f"{environ.get(SLURM_TASK_COUNT)!r}); pass --shard i/N"
        ) from None
    if not 0 <= task - first < count:
        raise ValueError(
            f"shard: the SLURM array task {task} (first task {first}, {count} tasks) is not a shard "
            "0..N-1 (an array with gaps or steps?); pass --shard i/N"
        )
    return task - first, count


def shard_manifest(shard: tuple[int, int]) -> str:
    """Returns the manifest a shard writes, relative to the dataset folder."""
    i, n = shard
    return MANIFEST_FILE if n == 1 else f"{SHARDS_DIR}/manifest-{i}-of-{n}.jsonl"


def shard_lock(shard: tuple[int, int]) -> str:
    """Returns the lock file a shard holds while it writes, relative to the dataset folder."""
    i, n = shard
    return LOCK_FILE if n == 1 else f"{LOCK_FILE}-{i}-of-{n}"


# ----------------------------------------------------------------------------- merging
@dataclass
class MergeReport:
    """What ``merge_dataset`` did."""

    root: Path  # the merged dataset folder
    num_clips: int  # clips in manifest.jsonl now
    manifests: int  # manifests read (shard manifests and earlier merged ones, of root and the parts)
    imported: int  # clip files linked or copied in from ``parts``
    bytes: int  # total size of the clip files
    seconds: float  # wall-clock time


def _manifests(folder: Path) -> list[Path]:
    """Returns the manifests of a folder: ``manifest.jsonl`` (if any) and ``shards/manifest-i-of-N.jsonl``."""
    found = [folder / MANIFEST_FILE] if (folder / MANIFEST_FILE).is_file() else []
    shards = (folder / SHARDS_DIR).glob("manifest-*.jsonl")
    return found + sorted(p for p in shards if _SHARD_MANIFEST.fullmatch(p.name))


def _same_settings(path: Path, reference: dict, other: dict) -> None:
    """Raises ``DatasetSettingsError`` (``check_settings``) unless ``other`` describes the same dataset."""
    check_settings(path, reference, other)
    if reference["num_clips"] != other["num_clips"]:
        check_settings(path, other, reference)  # the smaller one names num_clips


def _link_or_copy(source: Path, target: Path) -> None:
    """Places ``source`` at ``target`` atomically: a hard link when both are on one file system
    (clip files are never changed in place, writers replace them), else a copy."""
    temporary = target.with_name(f".{target.name}.merge.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def merge_dataset(
    root: str | os.PathLike, parts: Sequence[str | os.PathLike] = (), progress: bool = False
) -> MergeReport:
    """Returns a ``MergeReport`` after joining the shard manifests of a dataset into ``manifest.jsonl``.

    Reads ``root``'s manifests (``shards/manifest-i-of-N.jsonl`` and an earlier ``manifest.jsonl``)
    and those of every folder in ``parts`` (shards written into folders of their own, whose
    ``dataset.json`` must describe the same dataset). Every entry is checked before anything is
    written: it belongs to the settings (id, seed, split, file), its file has the recorded size
    and sha256, two manifests that list the same clip agree on its sha256, and for a ``momap sim``
    dataset every clip ``0..num_clips-1`` is present. Any problem raises one ``DataFormatError``
    (``DatasetSettingsError`` for settings) naming each clip, and nothing is written. Then clip
    files of ``parts`` are linked or copied into ``root/clips`` and ``manifest.jsonl`` is written
    atomically, sorted like an unsharded run's (by index; reconstructed datasets by id).
    """
    started = time.perf_counter()
    root, parts = Path(root), [Path(part) for part in parts]
    folders = [root] + [part for part in parts if part.resolve() != root.resolve()]
    settings = load_settings(root) if (root / DATASET_FILE).is_file() else None
    for folder in folders[1:]:
        other = load_settings(folder)
        if settings is None:
            settings = other
        else:
            _same_settings(folder / DATASET_FILE, settings, other)
    if settings is None:
        raise DataFormatError(
            f"{root}: no {DATASET_FILE}; expected a dataset folder written by sharded `momap sim` or "
            "`momap recon` runs (or pass the folders of the shards with --parts)"
        )
    recon = settings.get("source") == "recon"
    sources = [(folder, path) for folder in folders for path in _manifests(folder)]
    if not sources:
        raise DataFormatError(
            f"{root}: no manifests to merge (expected {SHARDS_DIR}/manifest-i-of-N.jsonl); run the "
            "shards first, e.g. `momap sim --out DIR --shard i/N` for i = 0..N-1"
        )
    chosen: dict[str, tuple[dict, Path, Path]] = {}  # id -> (entry, folder of its file, manifest)
    problems: list[str] = []
    counts: set[int] = set()
    for folder, path in sources:
        match = _SHARD_MANIFEST.fullmatch(path.name)
        if match:
            counts.add(int(match[2]))
        entries, torn = read_manifest(path, tolerate_torn=True)
        if torn:
            problems.append(f"{path}: a torn last line (its shard was interrupted): rerun that shard")
        for entry in entries:
            problem = None if recon else _check_entry(entry, settings)
            if problem:
                problems.append(f"{path}: {problem}")
                continue
            earlier = chosen.get(entry["id"])
            if earlier is None:
                chosen[entry["id"]] = (entry, folder, path)
            elif earlier[0]["sha256"] != entry["sha256"]:
                problems.append(
                    f"clip {entry['id']}: {earlier[2]} says sha256 {earlier[0]['sha256']} but {path} says "
                    f"{entry['sha256']}; the shards were written with other settings or library versions"
                )
    total_bytes = 0
    for entry, folder, _ in tqdm(chosen.values(), desc="check sha256", unit="clip", disable=not progress):
        problem, size = check_clip_file(folder, entry)
        total_bytes += size
        if problem:
            problems.append(problem if folder == root else f"{folder}: {problem}")
    if not recon:
        missing = [
            i for i in range(settings["num_clips"]) if clip_id(settings["sim"]["family"], i) not in chosen
        ]
        if missing:
            rerun = sorted({f"{i % n}/{n}" for i in missing for n in counts}) if counts else []
            problems.append(
                f"{len(missing)} of {settings['num_clips']} clips are in no manifest (indices {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''})"
                + (f": run (or finish) shard(s) {', '.join(rerun[:8])}" if rerun else "")
            )
    if problems:
        shown = "\n  - ".join(problems[:20]) + (
            f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        raise DataFormatError(
            f"{root}: merge refused, nothing was written; {len(problems)} problem(s):\n  - {shown}"
        )
    (root / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    if not (root / DATASET_FILE).is_file():
        shutil.copyfile(folders[1] / DATASET_FILE, root / f".{DATASET_FILE}.merge.tmp")
        os.replace(root / f".{DATASET_FILE}.merge.tmp", root / DATASET_FILE)
    imported = 0
    for entry, folder, _ in chosen.values():
        if folder != root:
            target = clip_path(root, entry)
            if not (target.is_file() and check_clip_file(root, entry)[0] is None):
                _link_or_copy(clip_path(folder, entry), target)
                imported += 1
    order = (lambda e: e["id"]) if recon else (lambda e: e["index"])
    entries = sorted((entry for entry, _, _ in chosen.values()), key=order)
    atomic_write_text(root / MANIFEST_FILE, "".join(manifest_line(entry) for entry in entries))
    return MergeReport(root, len(entries), len(sources), imported, total_bytes, time.perf_counter() - started)


@dataclass
class MergeJob:
    """Joins the shards of a dataset (``momap sim`` / ``momap recon`` with ``--shard i/N``) into one
    ``manifest.jsonl``, after checking every clip's sha256; refuses (and writes nothing) on a
    missing clip, a file that does not match its manifest line or shards of other settings."""

    out: Path
    """The dataset folder: the one the shards wrote into, or a new one to gather --parts into."""
    parts: tuple[Path, ...] = ()
    """Folders written by shards elsewhere (one per machine); their clips are linked or copied into --out."""
    verify: bool = True
    """Check the merged dataset as a whole afterwards (``momap sim`` datasets)."""
    progress: bool = True
    """Show a progress bar."""

    def run(self) -> MergeReport:
        """Merges, prints a summary and returns the ``MergeReport``."""
        report = merge_dataset(self.out, self.parts, progress=self.progress)
        copied = (
            f", {report.imported} clip files brought in from {len(self.parts)} folder(s)"
            if self.parts
            else ""
        )
        print(
            f"{report.root}: merged {report.manifests} manifest(s) into {MANIFEST_FILE}: {report.num_clips} "
            f"clips ({report.bytes / 1e6:.1f} MB, sha256 checked){copied} in {report.seconds:.1f} s"
        )
        if self.verify and load_settings(self.out).get("source") != "recon":
            verify_dataset(self.out, progress=self.progress)
        return report
