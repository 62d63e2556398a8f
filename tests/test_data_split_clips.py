"""momaplib.data.simulate_split_clips: a split's clips, simulated in memory as ``momap sim`` writes them."""

from __future__ import annotations

import time

import numpy as np
import pytest

from momaplib.data import simulate_split_clips
from momaplib.data.splits import split_indices, split_of
from momaplib.sim import SimConfig, clip_seed, generate_clip

SMOKE = SimConfig().smoke()  # 32 x 32, T = 8


def simulate_split(family, count, **options):
    return dict(simulate_split_clips(family, count, **options))


def test_simulate_split_returns_the_writers_clips_of_the_split(capsys):
    clips = simulate_split("egocentric", 3, seed=5, config=SMOKE)
    indices = split_indices("egocentric", 3, "test")
    assert list(clips) == [f"egocentric_{index:06d}" for index in indices]
    assert all(split_of(name) == "test" for name in clips)
    for momap, index in zip(clips.values(), indices, strict=True):
        # the clip the dataset writer stores under this id: same seed, same config, family replaced
        expected = generate_clip(clip_seed(5, index), SimConfig(family="egocentric").smoke()).momap
        np.testing.assert_array_equal(momap.xyz, expected.xyz)
        assert momap.xyz.shape == (8, 32, 32, 3) and momap.prompt == expected.prompt
    assert "simulate egocentric test clips" in capsys.readouterr().err  # the progress bar
    train = simulate_split("tabletop", 2, split="train", config=SMOKE, progress=False)
    assert all(split_of(name) == "train" and name.startswith("tabletop_") for name in train)
    assert not set(train) & set(simulate_split("tabletop", 2, config=SMOKE, progress=False))
    assert simulate_split("tabletop", 0, config=SMOKE) == {}


def test_simulate_split_names_bad_arguments():
    with pytest.raises(ValueError, match="split: expected one of"):
        simulate_split("tabletop", 1, split="holdout")
    with pytest.raises(ValueError, match="count: expected >= 0"):
        simulate_split("tabletop", -1)
    with pytest.raises(ValueError, match="family: expected one of"):
        simulate_split("kitchen", 1)


def test_an_empty_part_of_a_shard_gives_no_clips_with_worker_processes():
    # a shard's part can hold no clip (more parts than clips); with workers it must not start a pool of 0
    config = SimConfig().smoke()
    assert simulate_split_clips("tabletop", 1, config=config, shard=(1, 5), workers=1, progress=False) == []


def test_parallel_map_raises_when_the_workers_stall_instead_of_waiting_for_ever():
    # a worker that dies or hangs loses its task, and a process pool then waits for it forever
    from momaplib.data import parallel_map

    assert list(parallel_map([0.01, 0.02, 0.01], 2, time.sleep, stall_timeout=120.0)) == [None] * 3
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"no result from 1 worker processes in 8 s \(sleep\)"):
        list(parallel_map([600.0], 1, time.sleep, stall_timeout=8.0))
    assert time.perf_counter() - started < 120  # and the hung worker is terminated, not waited for
