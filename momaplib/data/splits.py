"""Clip ids and train/val/test splits: a clip's split is a pure function of ``(split_seed, id)``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from tqdm.auto import tqdm

from momaplib.momap import MoMap
from momaplib.sim import FAMILIES, Clip, SimConfig, clip_seed, generate_clip


# ----------------------------------------------------------------------------- ids and splits
def clip_id(family: str, index: int, task_variant: int = 0) -> str:
    """Returns the id of clip ``index`` of a ``family`` dataset, e.g. ``"tabletop_000042"``; a
    ``SimConfig.task_variant`` > 0 of it ends in ``_v<variant>`` (``"tabletop_000042_v1"``)."""
    return f"{family}_{index:06d}" + (f"_v{task_variant}" if task_variant else "")


def clip_family(clip_id: str) -> str:
    """Returns the family a ``clip_id`` names (``"tabletop_000042_v1"`` -> ``"tabletop"``)."""
    return clip_id.split("_", 1)[0]


#: The dataset splits, in order.
SPLITS = ("train", "val", "test")


def split_of(clip_id: str, split_seed: int = 0, splits: Sequence[float] = (0.9, 0.05, 0.05)) -> str:
    """Returns the split ("train", "val" or "test") of a clip: a pure function of its id.

    A hash of ``(split_seed, clip_id)`` is mapped to [0, 1) and cut at the cumulative
    fractions ``splits`` (train, val, test), so a clip keeps its split when the dataset grows
    or a run resumes, and the split sizes follow the fractions up to sampling noise.
    """
    fractions = check_splits(splits)
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


def check_splits(splits: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in splits)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"splits: expected 3 fractions (train, val, test) >= 0 summing to 1, got {splits}")
    return fractions


def simulate_split_clips(
    family: str,
    count: int,
    seed: int = 0,
    config: SimConfig | None = None,
    split: str = "test",
    shard: tuple[int, int] = (0, 1),
    skip: int = 0,
    progress: bool = True,
    workers: int = 0,
) -> list[tuple[str, MoMap]]:
    """Returns ``[(clip_id, MoMap)]`` of the first ``count`` clips of a family in ``split``, in id
    order, simulated in memory: no dataset folder needed (``dict(...)`` gives ``{clip_id: MoMap}``).

    Without the first ``skip``; with ``shard=(k, n)`` only every n-th of them from the k-th on
    (only those are simulated). Clip ``i`` is ``generate_clip(clip_seed(seed, i), config)`` with
    ``config``'s family replaced by ``family`` (default ``SimConfig()``: 128 x 128, T = 32): the
    clip ``momap sim --seed seed`` writes, so evaluations on simulated and written splits agree.
    ``progress`` shows a ``tqdm.auto`` bar of the clips being simulated; ``workers`` > 0 simulates
    in that many spawned processes (same clips, same order).
    """
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if count < 0:
        raise ValueError(f"count: expected >= 0 clips, got {count}")
    if not 0 <= skip <= count:
        raise ValueError(f"skip: expected 0 <= skip <= count ({count}), got {skip}")
    config = replace(config or SimConfig(), family=family)
    k, n = shard
    from momaplib.data.writer import parallel_map  # writer imports this module

    chosen = split_indices(family, count, split)[skip:][k::n]
    tasks = [(index, clip_seed(seed, index), config) for index in chosen]
    bar = tqdm(total=len(tasks), desc=f"simulate {family} {split} clips", leave=False, disable=not progress)
    done = {}
    with bar:
        for index, clip in parallel_map(tasks, workers, _simulate_indexed):
            done[index] = clip.momap
            bar.update()
    return [(clip_id(family, index), done[index]) for index in chosen]


def _simulate_indexed(task: tuple[int, int, SimConfig]) -> tuple[int, Clip]:
    index, seed, config = task
    return index, generate_clip(seed, config)


def simulate_split_videos(
    family: str,
    count: int,
    seed: int = 0,
    config: SimConfig | None = None,
    split: str = "test",
    workers: int = 0,
    progress: bool = True,
) -> list[tuple[str, Clip]]:
    """Returns ``[(clip_id, Clip)]``: the clips of ``simulate_split_clips`` with their videos
    (frames, depth, instances), simulated by ``workers`` processes (0: in this one), in id order."""
    from momaplib.data.writer import parallel_map

    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    if count < 0:
        raise ValueError(f"count: expected >= 0 clips, got {count}")
    config = replace(config or SimConfig(), family=family)
    tasks = [(index, clip_seed(seed, index), config) for index in split_indices(family, count, split)]
    results = dict(
        tqdm(
            parallel_map(tasks, workers, _simulate_indexed),
            total=len(tasks),
            desc=f"simulate {family} {split} clips",
            leave=False,
            disable=not progress,
        )
    )
    return [(clip_id(family, index), results[index]) for index, _, _ in tasks]
