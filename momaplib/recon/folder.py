"""The output folder of ``momap recon``: locks, settings, finished clips, shard manifests and verification."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from momaplib.data import (
    CLIPS_DIR,
    DATASET_FILE,
    MANIFEST_FILE,
    check_clip_file,
    check_settings,
    load_settings,
    manifest_line,
    read_manifest,
)
from momaplib.data.manifest import clip_path
from momaplib.storage import DataFormatError, atomic_write_text, sha256_file

#: Sub-folder of the per-shard manifests of a sharded run, merged into manifest.jsonl at the end.
SHARDS_DIR = "shards"
#: Lock file taken while shard manifests are merged.
MERGE_LOCK_FILE = ".merge.lock"


@contextlib.contextmanager
def _lock(path: Path, blocking: bool = False) -> Iterator[None]:
    """Holds an exclusive lock on ``path`` (released by the OS even if the process is killed)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one writer per folder is then up to the user
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RuntimeError(
                f"{path.parent}: another `momap recon` with the same --shard is writing this dataset "
                f"(it holds {path}); wait for it to finish or stop it first"
            ) from None
        yield


def _check_new_folder(root: Path) -> None:
    """Raises ``DataFormatError`` if ``root`` holds files but no dataset.json (a foreign folder)."""
    if not root.is_dir() or (root / DATASET_FILE).exists():
        return
    ours = {CLIPS_DIR, SHARDS_DIR, MERGE_LOCK_FILE}
    others = sorted(p.name for p in root.iterdir() if p.name not in ours and not p.name.startswith(".lock"))
    if others:
        raise DataFormatError(
            f"{root}: not empty and has no {DATASET_FILE} (found {others[:5]}); "
            "choose an empty or new --out for a new dataset"
        )


def _open_dataset(root: Path, requested: dict) -> None:
    """Checks ``dataset.json`` against the request (or writes it for a new dataset)."""
    path = root / DATASET_FILE
    if path.exists():
        existing = load_settings(root)
        if existing.get("source") != "recon":
            raise DataFormatError(f"{path}: a dataset written by `momap sim`, not `momap recon`")
        check_settings(path, existing, requested)
        if existing["num_clips"] != requested["num_clips"]:  # more videos: record the new count
            atomic_write_text(
                path, json.dumps({**existing, "num_clips": requested["num_clips"]}, indent=2) + "\n"
            )
        return
    atomic_write_text(path, json.dumps(requested, indent=2) + "\n")


def _manifest_files(root: Path) -> list[Path]:
    files = [root / MANIFEST_FILE] if (root / MANIFEST_FILE).exists() else []
    return files + sorted((root / SHARDS_DIR).glob("manifest-*.jsonl"))


def _finished_entries(root: Path) -> dict[str, dict]:
    """Returns ``{id: entry}`` of clips that are done: in a manifest, with a file of the recorded size.

    Reads the merged manifest and every shard manifest; a torn last line (a writer killed
    mid-append) is skipped. A shard manifest whose last line lacks its newline gets one, so the
    next append does not glue onto it.
    """
    candidates: dict[str, dict[str, dict]] = {}  # id -> sha256 -> entry
    for path in _manifest_files(root):
        entries, torn = read_manifest(path, tolerate_torn=True)
        for entry in entries:
            file = clip_path(root, entry)  # never outside the dataset folder
            if file.is_file() and file.stat().st_size == entry["bytes"]:
                candidates.setdefault(entry["id"], {})[entry["sha256"]] = entry
        data = path.read_bytes()
        if torn or (data and not data.endswith(b"\n")):
            kept = [entry for entry in entries if entry["id"] in candidates]
            atomic_write_text(path, "".join(manifest_line(entry) for entry in kept))
    done: dict[str, dict] = {}
    for clip_id, by_hash in candidates.items():
        if len(by_hash) == 1:
            done[clip_id] = next(iter(by_hash.values()))
            continue
        # Manifests disagree: the clip was redone after its file was lost (a reconstruction need
        # not be bit-identical), and an older manifest still lists the first file. The file decides.
        entry = next(iter(by_hash.values()))
        actual = by_hash.get(sha256_file(clip_path(root, entry)))
        if actual is not None:
            done[clip_id] = actual
    return done


def merge_manifests(root: str | os.PathLike, ids: list[str]) -> int:
    """Writes ``manifest.jsonl`` as the union of every manifest's finished clips; returns their number.

    Entries are sorted by id and their ``index`` is the id's position in ``ids`` (the sorted
    listing of the videos folder). Holds a lock while reading and writing, so two shards that
    finish at once cannot drop each other's lines.
    """
    root = Path(root)
    position = {clip_id: i for i, clip_id in enumerate(ids)}
    with _lock(root / MERGE_LOCK_FILE, blocking=True):
        done = _finished_entries(root)
        entries = sorted(done.values(), key=lambda entry: entry["id"])
        for entry in entries:
            entry["index"] = position.get(entry["id"], entry["index"])
        atomic_write_text(root / MANIFEST_FILE, "".join(manifest_line(entry) for entry in entries))
    return len(entries)


def verify_recon_dataset(root: str | os.PathLike) -> tuple[int, int]:
    """Returns ``(clips, bytes)`` after checking every clip file of ``manifest.jsonl`` (size, sha256).

    Raises ``DataFormatError`` naming every clip whose file is missing or differs from its line
    (and a duplicate id); clips still being written by other shards are simply not listed yet.
    """
    root = Path(root)
    load_settings(root)
    entries, _ = read_manifest(root / MANIFEST_FILE, tolerate_torn=False)
    problems, seen, total = [], set(), 0
    for entry in entries:
        if entry["id"] in seen:
            problems.append(f"clip {entry['id']}: appears more than once in the manifest")
        seen.add(entry["id"])
        problem, size = check_clip_file(root, entry)
        total += size
        if problem:
            problems.append(problem)
    if problems:
        raise DataFormatError(f"{root}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems[:20]))
    return len(entries), total
