"""``momaplib.eval.parts``: long evaluations saved part by part, resumed, never mixed across settings."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

from momaplib.eval.parts import evaluate_in_parts, shard_threads, sub_shard


@pytest.mark.parametrize(("shard", "chunks"), [((0, 1), 1), ((0, 1), 3), ((2, 4), 3), ((7, 8), 5)])
def test_sub_shards_partition_the_shard(shard, chunks):
    k, n = shard
    items = range(200)
    parts = [sub_shard(shard, c, chunks) for c in range(chunks)]
    chosen = [i for kc, nc in parts for i in items if i % nc == kc]
    assert sorted(chosen) == [i for i in items if i % n == k]  # each item once, none added


def test_sub_shard_rejects_bad_parts():
    with pytest.raises(ValueError, match="sub_shard"):
        sub_shard((0, 2), 3, 3)


def test_parts_are_saved_as_they_finish_and_a_rerun_resumes(tmp_path):
    calls = []

    def compute(name):
        calls.append(name)
        if name == "c" and len(calls) == 3:  # the first run stops at its third part
            raise KeyboardInterrupt
        return pd.DataFrame({"part": [name], "value": [0.1 * len(name) + 1 / 3]}), {"n": len(calls)}

    settings = {"clips": 4, "steps": [4, 8]}
    with pytest.raises(KeyboardInterrupt):
        evaluate_in_parts(tmp_path, ["a", "b", "c"], compute, settings)
    assert sorted(p.name for p in (tmp_path / "parts").glob("*.csv")) == ["a.csv", "b.csv"]
    frames, extras = evaluate_in_parts(tmp_path, ["a", "b", "c"], compute, settings)
    assert calls == ["a", "b", "c", "c"]  # only the missing part ran again
    assert [f["part"].item() for f in frames] == ["a", "b", "c"]
    assert frames[0]["value"].item() == 0.1 + 1 / 3  # floats come back exactly
    assert extras == [{"n": 1}, {"n": 2}, {"n": 4}]
    # other settings: an error, not a table mixing two configurations
    with pytest.raises(ValueError, match="other settings"):
        evaluate_in_parts(tmp_path, ["a"], compute, {**settings, "steps": [4]})


def test_an_empty_part_and_unsafe_names(tmp_path):
    frames, _ = evaluate_in_parts(tmp_path, ["empty"], lambda name: (pd.DataFrame(), None), {})
    assert frames[0].empty
    with pytest.raises(ValueError, match="file-name-safe"):
        evaluate_in_parts(tmp_path, ["../x"], lambda name: (pd.DataFrame(), None), {})


def test_families_are_run_shard_by_shard_and_read_back(tmp_path):
    from momaplib.eval.parts import evaluate_families, read_parts

    seen = []

    def compute(family, shard):
        seen.append((family, shard))
        k, n = shard
        items = [i for i in range(5) if i % n == k]  # 5 items per family, this shard's
        return pd.DataFrame({"family": family, "item": items}), {"n": len(items)}

    assert read_parts(tmp_path) is None
    rows, extras = evaluate_families(tmp_path, ["a", "b"], (1, 2), 2, compute, {"x": 1})
    assert seen == [("a", (1, 4)), ("a", (3, 4)), ("b", (1, 4)), ("b", (3, 4))]
    assert sorted(rows.loc[rows["family"] == "a", "item"]) == [1, 3]  # shard 1/2 of the 5 items
    assert extras == [{"n": 1}, {"n": 1}, {"n": 1}, {"n": 1}]
    frames, saved_extras, settings = read_parts(tmp_path)
    assert settings == {"x": 1} and pd.concat(frames, ignore_index=True).equals(rows)
    assert saved_extras == extras
    with pytest.raises(ValueError, match="no item"):  # a shard beyond the items
        evaluate_families(tmp_path / "empty", ["a"], (0, 1), 1, lambda f, s: (pd.DataFrame(), None), {})


def test_per_clip_csvs_are_written_whole_and_reproducibly(tmp_path):
    from momaplib.storage import atomic_write_csv

    frame = pd.DataFrame({"clip_id": ["a", "b"], "ate_dtw": [0.123456789, 2.0 / 3.0]})
    path = tmp_path / "per_clip.csv.gz"
    atomic_write_csv(path, frame, float_format="%.5g")
    first = path.read_bytes()
    assert first[:2] == b"\x1f\x8b"  # gzip, as the name says
    assert pd.read_csv(path)["ate_dtw"].tolist() == [0.12346, 0.66667]
    atomic_write_csv(path, frame, float_format="%.5g")
    assert path.read_bytes() == first  # no time stamp in the header: the same rows, the same bytes

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("stopped while formatting")

    with pytest.raises(RuntimeError, match="stopped"):
        atomic_write_csv(path, Broken(frame))
    assert path.read_bytes() == first and sorted(p.name for p in tmp_path.iterdir()) == ["per_clip.csv.gz"]
    atomic_write_csv(tmp_path / "plain.csv", frame)
    assert (tmp_path / "plain.csv").read_text().splitlines()[0] == "clip_id,ate_dtw"


def test_shard_threads_gives_each_shard_its_share_of_the_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    try:
        assert shard_threads((3, 12)) == 1 and torch.get_num_threads() == 1  # 16 cores // 12 shards
        assert shard_threads((1, 4)) == 4 and torch.get_num_threads() == 4
        torch.set_num_threads(before)
        assert shard_threads((0, 1)) is None and torch.get_num_threads() == before  # one shard: untouched
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert shard_threads((0, 8)) is None and torch.get_num_threads() == before  # the user's setting
    finally:
        torch.set_num_threads(before)
