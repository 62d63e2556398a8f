"""Randomness of a training loss that does not depend on how many processes share a batch.

With N processes every process draws from its own RNG, so the noise an item gets would depend
on N and on its rank, and a run resumed with another N would continue another curve. Seeding
the draws by the item's position in the run's item stream (``ITEM_POSITION``, which
``batch_stream`` puts in every micro-batch) gives each item the same noise whatever N, the
number of accumulation steps or the resume point: N processes then train exactly what one
process with the same global batch trains (up to the order of float sums).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from momaplib.training.batches import ITEM_POSITION


def item_seed(seed: int, position: int, stream: int = 0) -> int:
    """Returns the 63-bit generator seed of one item's draws (``stream`` separates independent draws).

    A hash rather than arithmetic on the numbers: seeds of nearby (seed, position) pairs must
    not collide or correlate.
    """
    digest = hashlib.blake2b(f"{int(seed)}:{int(stream)}:{int(position)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def item_noise(
    batch: Mapping[str, Any],
    shape: Sequence[int],
    seed: int = 0,
    stream: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Returns standard normal noise (B, *shape), item ``b`` seeded by its ``ITEM_POSITION`` in ``batch``.

    Items are drawn one by one on the CPU (a generator per item; cheap next to a training
    step) and moved to ``device`` (default: the device of the batch's first tensor).
    """
    if ITEM_POSITION not in batch:
        raise ValueError(
            f"batch: expected {ITEM_POSITION!r} (added by training.batch_stream), got keys {list(batch)}"
        )
    positions = batch[ITEM_POSITION].tolist()
    if device is None:
        device = next(
            (v.device for k, v in batch.items() if isinstance(v, Tensor) and k != ITEM_POSITION), "cpu"
        )
    generator = torch.Generator()
    noise = torch.empty(len(positions), *shape)
    for b, position in enumerate(positions):
        generator.manual_seed(item_seed(seed, position, stream))
        noise[b] = torch.randn(tuple(shape), generator=generator)
    return noise.to(device=device, dtype=dtype)


def micro_batch_generator(
    batch: Mapping[str, Any], seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """Returns a generator seeded by ``seed`` and the micro-batch's first item position: different
    on every process and micro-batch, and the same when a run is resumed with the same processes.

    For losses whose draws are batched (e.g. one ``randn`` over the whole micro-batch); use
    ``item_noise`` when the draws must not depend on the number of processes.
    """
    first = int(batch[ITEM_POSITION][0]) if ITEM_POSITION in batch else 0
    return torch.Generator(device).manual_seed(item_seed(seed, first, stream=-1))
