"""Procedural MoMaps as a torch ``Dataset`` of model-ready items, to mix into training data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from momaplib.data.dataset import model_inputs
from momaplib.data.procedural import KINDS, TRAIN_SEED_START, procedural_momap


def procedural_case(seed: int) -> tuple[str, bool]:
    """Returns the ``(kind, moving)`` that seed ``seed`` of ``ProceduralDataset`` draws (uniform kinds,
    half of them moving)."""
    rng = np.random.default_rng([int(seed), 7])
    return KINDS[int(rng.integers(len(KINDS)))], bool(rng.integers(2))


class ProceduralDataset(torch.utils.data.Dataset):
    """``num_clips`` procedural MoMaps as model-ready items (``momaplib.data.model_inputs`` + ``id``).

    Item ``i`` is ``procedural_momap(kind, s, H, W, T, moving=moving)`` with seed ``s = first_seed + i``
    (default ``TRAIN_SEED_START``: disjoint from the evaluation seeds) and ``(kind, moving) =
    procedural_case(s)`` (a kind outside ``kinds`` is replaced by one of them). Items are built on access,
    so a ``DataLoader`` with workers generates them in parallel.
    """

    def __init__(
        self,
        num_clips: int,
        num_frames: int,
        height: int,
        width: int,
        first_seed: int = TRAIN_SEED_START,
        kinds: Sequence[str] = KINDS,
    ):
        if num_clips < 0:
            raise ValueError(f"num_clips: expected >= 0, got {num_clips}")
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds: expected a non-empty subset of {KINDS}, got {list(kinds)}")
        self.num_clips, self.first_seed, self.kinds = num_clips, first_seed, tuple(kinds)
        self.shape = (num_frames, height, width)

    def __len__(self) -> int:
        return self.num_clips

    def case(self, index: int) -> tuple[str, bool, int]:
        """Returns ``(kind, moving, seed)`` of item ``index``."""
        seed = self.first_seed + index
        kind, moving = procedural_case(seed)
        if kind not in self.kinds:
            kind = self.kinds[seed % len(self.kinds)]
        return kind, moving, seed

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"ProceduralDataset: index {index} out of range [0, {self.num_clips})")
        kind, moving, seed = self.case(index)
        T, H, W = self.shape
        momap = procedural_momap(kind, seed, H, W, T, moving=moving)
        return {**model_inputs(momap), "id": f"procedural_{kind}_{seed}"}


__all__ = ["ProceduralDataset", "procedural_case"]
