"""A split of a MoMap-Sim dataset simulated in memory: the clips ``momap sim`` would write, no files.

Notebooks and quick evaluations need a few test clips, not a dataset folder. ``simulate_split``
returns the first ``count`` clips of a family whose id falls in ``split`` (``splits.split_of``
with the writer's default seed and fractions), each ``generate_clip(clip_seed(seed, index),
config)`` as ``write_dataset(root, config, num_clips, seed)`` writes it, so an evaluation on
them scores the same clips as one on the folder (the model card's test split is the first 600
test clips of seed 0).
"""

from __future__ import annotations

from dataclasses import replace

from tqdm.auto import tqdm

from momaplib.data.splits import SPLITS, clip_id, split_indices
from momaplib.momap import MoMap
from momaplib.sim import FAMILIES, SimConfig, clip_seed, generate_clip


def simulate_split(
    family: str,
    count: int,
    *,
    split: str = "test",
    seed: int = 0,
    config: SimConfig | None = None,
    progress: bool = True,
) -> dict[str, MoMap]:
    """Returns ``{clip_id: MoMap}`` of the first ``count`` clips of ``family`` in ``split``, in id order.

    ``config`` sets the image size, frames and device (default ``SimConfig()``, 128 x 128, T = 32);
    its family is replaced by ``family``. The MoMaps are ``(T, H, W, 3)`` GT records with their
    prompts. ``progress`` shows a ``tqdm.auto`` bar of the clips being simulated.
    """
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if count < 0:
        raise ValueError(f"count: expected >= 0 clips, got {count}")
    config = replace(config or SimConfig(), family=family)
    indices = split_indices(family, count, split)
    return {
        clip_id(family, index): generate_clip(clip_seed(seed, index), config).momap
        for index in tqdm(indices, desc=f"simulate {family} {split} clips", disable=not progress)
    }


__all__ = ["simulate_split"]
