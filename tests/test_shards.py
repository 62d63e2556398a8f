"""Sharded dataset jobs: 3 shards merged equal the unsharded dataset byte for byte; merge refuses
mismatches; the SLURM default of --shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from momaplib.cli import main
from momaplib.data import (
    MANIFEST_FILE,
    SHARDS_DIR,
    DatasetSettingsError,
    merge_dataset,
    resolve_shard,
    verify_dataset,
    write_dataset,
)
from momaplib.sim import SimConfig
from momaplib.storage import DataFormatError, sha256_file

CONFIG = SimConfig(family="tabletop").smoke()
NUM_CLIPS = 7  # not a multiple of 3: the shards hold 3, 2 and 2 clips


def _files(root: Path) -> dict[str, str]:
    """Returns {relative path: sha256} of every file that readers see (clips and manifest)."""
    files = {
        MANIFEST_FILE: sha256_file(root / MANIFEST_FILE),
        "dataset.json": sha256_file(root / "dataset.json"),
    }
    files.update({f"clips/{p.name}": sha256_file(p) for p in sorted((root / "clips").glob("*.npz"))})
    return files


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("whole") / "data"
    write_dataset(root, CONFIG, NUM_CLIPS, seed=3, workers=0, progress=False)
    return root


def test_three_shards_in_one_folder_merge_into_the_unsharded_dataset(unsharded, tmp_path):
    root = tmp_path / "sharded"
    sizes = [
        write_dataset(root, CONFIG, NUM_CLIPS, 3, 0, progress=False, shard=(i, 3)).num_clips for i in range(3)
    ]
    assert sizes == [3, 2, 2]
    assert not (root / MANIFEST_FILE).exists()  # shards write only their own manifests
    assert sorted(p.name for p in (root / SHARDS_DIR).iterdir()) == [
        f"manifest-{i}-of-3.jsonl" for i in range(3)
    ]
    report = merge_dataset(root)
    assert report.num_clips == NUM_CLIPS and report.manifests == 3
    assert (root / MANIFEST_FILE).read_bytes() == (unsharded / MANIFEST_FILE).read_bytes()
    assert _files(root) == _files(unsharded)
    assert verify_dataset(root).num_clips == NUM_CLIPS
    # A rerun of a finished shard does nothing; a second merge gives the same bytes.
    assert write_dataset(root, CONFIG, NUM_CLIPS, 3, 0, progress=False, shard=(1, 3)).generated == 0
    merge_dataset(root)
    assert _files(root) == _files(unsharded)


def test_shards_in_folders_of_their_own_are_gathered_by_momap_merge(unsharded, tmp_path, capsys):
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):  # through the command line, as a job array would run it
        main(["sim", "--out", str(part), "--num-clips", str(NUM_CLIPS), "--seed", "3", "--smoke",
              "--workers", "0", "--shard", f"{i}/3", "--no-progress"])  # fmt: skip
    assert "momap merge" in capsys.readouterr().out
    # A corrupted clip in one part: refused, naming the clip and both hashes; nothing is written.
    victim = next((parts[1] / "clips").glob("*.npz"))
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    out = tmp_path / "merged"
    with pytest.raises(
        DataFormatError, match=rf"(?s)merge refused.*clip {victim.stem}: .* has sha256 \w+ .* says"
    ):
        merge_dataset(out, parts)
    assert not out.exists()
    victim.write_bytes(good)
    # A missing shard: refused, naming the shard to run.
    with pytest.raises(DataFormatError, match=r"(?s)2 of 7 clips are in no manifest.*shard\(s\) 2/3"):
        merge_dataset(out, parts[:2])
    main(["merge", "--out", str(out), "--parts", *map(str, parts), "--no-progress"])
    assert "7 clips" in capsys.readouterr().out
    assert _files(out) == _files(unsharded)


def test_merge_refuses_shards_of_other_settings(tmp_path):
    write_dataset(tmp_path / "a", CONFIG, 4, seed=0, workers=0, progress=False, shard=(0, 2))
    write_dataset(tmp_path / "b", CONFIG, 4, seed=1, workers=0, progress=False, shard=(1, 2))
    with pytest.raises(DatasetSettingsError, match="seed is 0 there but 1 here"):
        merge_dataset(tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    # Clips listed twice with different hashes (here: a manifest line edited by hand) are refused.
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    line = (tmp_path / "c" / SHARDS_DIR / "manifest-0-of-2.jsonl").read_text()
    edited = line.replace('"sha256": "', '"sha256": "0', 1)
    (tmp_path / "c" / SHARDS_DIR / "manifest-0-of-2.jsonl").write_text(edited)
    with pytest.raises(DataFormatError, match=r"(?s)says sha256 .* but .* says"):
        merge_dataset(tmp_path / "a", [tmp_path / "c"])


@pytest.mark.parametrize(
    ("spec", "environ", "expected"),
    [
        ("2/5", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 5)),  # explicit wins
        (None, {}, (0, 1)),
        (None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "8"}, (4, 8)),
        (
            None,
            {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"},
            (7, 8),
        ),
    ],
)
def test_the_shard_defaults_to_the_slurm_array_task(spec, environ, expected):
    assert resolve_shard(spec, environ) == expected


@pytest.mark.parametrize("spec", ["3/3", "1", "-1/2", "a/b"])
def test_bad_shard_specs_are_named(spec):
    with pytest.raises(ValueError, match=r"shard: expected 'i/N' with 0 <= i < N"):
        resolve_shard(spec)
    with pytest.raises(ValueError, match="SLURM array task 9"):
        resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"})
