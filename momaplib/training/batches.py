"""Training data for ``fit``: a deterministic step-indexed batch sampler, in-memory and on-disk datasets.

Micro-batch ``k`` of a run is a pure function of ``(seed, k)``, so a resumed run sees exactly the
batches the uninterrupted run would have seen (see ``momaplib.training``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.data import MoMapDataset, collate, load_settings
from momaplib.training.config import TrainConfig

#: Key ``batch_stream`` adds to every micro-batch: the items' positions in the run's item stream,
#: (B,) int64. They name each drawn item uniquely and the same way whatever the number of
#: processes, so per-item randomness seeded by them (``momaplib.training.item_noise``) makes
#: a run with N processes draw what a single process with the same global batch draws.
ITEM_POSITION = "item_position"


# ----------------------------------------------------------------------------- data
class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the index lists of micro-batches ``start, start + 1, ...`` forever.

    The item stream is the concatenation of permutations of ``range(num_items)``, epoch ``e``
    permuted by ``torch.randperm`` seeded with ``(seed, e)``; global micro-batch ``k`` is stream
    positions ``[k * B * R, (k + 1) * B * R)`` (``B`` = ``batch_size``, ``R`` = ``num_replicas``)
    and process ``rank`` takes its ``rank``-th slice of ``B``. So batch ``k`` never depends on what
    ran before it, and no item is dropped (a batch may straddle two epochs).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        start: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if num_items < 1:
            raise ValueError("StepBatchSampler: the dataset is empty")
        if batch_size < 1 or start < 0 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"StepBatchSampler: expected batch_size >= 1, start >= 0, 0 <= rank < num_replicas; got "
                f"{batch_size}, {start}, {rank}, {num_replicas}"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.num_replicas, self.rank = start, num_replicas, rank
        self._permutations: dict[int, Tensor] = {}

    def _permutation(self, epoch: int) -> Tensor:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.pop(min(self._permutations))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutations[epoch] = torch.randperm(self.num_items, generator=generator)
        return self._permutations[epoch]

    def positions(self, k: int) -> range:
        """Returns the stream positions of this process's items of micro-batch ``k``."""
        first = (k * self.num_replicas + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def batch(self, k: int) -> list[int]:
        """Returns the item indices of micro-batch ``k`` for this process."""
        return [int(self._permutation(p // self.num_items)[p % self.num_items]) for p in self.positions(k)]

    def __iter__(self) -> Iterator[list[int]]:
        for k in count(self.start):
            yield self.batch(k)


class InMemoryDataset(torch.utils.data.Dataset):
    """Items of another dataset held as stacked tensors: one load, then batches by indexing.

    ``tensors`` maps keys to (N, ...) tensors, ``lists`` keys to length-N lists (strings). Items
    and batches look like the source dataset's (``get_batch`` skips collation). Floating tensors
    are stored in ``dtype`` (fp16 halves the memory: MoMaps in model range lose ~5e-4 relative)
    except ``FLOAT32_KEYS`` (normalisation and cameras), which stay exact.

    Tensors are stored contiguous: a batch's memory layout picks the CPU kernels and with them the
    last bits of every result, so tensors fresh from an encoder (whose convolutions return
    channels-last) and the same values read back from a cache must give the same batches, or a
    resumed run would drift from the uninterrupted one by 1e-7 per step.
    """

    #: Keys kept in float32 whatever ``dtype`` is.
    FLOAT32_KEYS = ("center", "scale", "K", "ref_from_cam")

    def __init__(self, tensors: Mapping[str, Tensor], lists: Mapping[str, list] | None = None):
        self.tensors = {key: value.contiguous() for key, value in tensors.items()}
        self.lists = dict(lists or {})
        sizes = {len(value) for value in [*self.tensors.values(), *self.lists.values()]}
        if len(sizes) != 1:
            raise ValueError(f"InMemoryDataset: every key needs the same number of items, got sizes {sizes}")
        self.size = sizes.pop()

    @classmethod
    def load(
        cls,
        dataset: torch.utils.data.Dataset,
        keys: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float16,
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        batch_size: int = 16,
        progress: bool = True,
        desc: str = "load into memory",
    ) -> InMemoryDataset:
        """Returns every item of ``dataset`` (only ``keys``, default all) as one ``InMemoryDataset``.

        Items are read once in order by a ``DataLoader`` with ``num_workers`` processes; tensors
        are preallocated on ``device`` from the first batch's shapes.
        """
        if len(dataset) == 0:
            raise ValueError("InMemoryDataset.load: the dataset is empty")
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate, shuffle=False
        )
        tensors: dict[str, Tensor] = {}
        lists: dict[str, list] = {}
        position = 0
        with tqdm(total=len(dataset), desc=desc, unit="clip", disable=not progress) as bar:
            for batch in loader:
                size = len(next(iter(batch.values())))
                for key, value in batch.items():
                    if keys is not None and key not in keys:
                        continue
                    if isinstance(value, Tensor):
                        if key not in tensors:
                            store = value.dtype
                            if value.is_floating_point() and key not in cls.FLOAT32_KEYS:
                                store = dtype
                            tensors[key] = torch.empty(
                                (len(dataset), *value.shape[1:]), dtype=store, device=device
                            )
                        tensors[key][position : position + size] = value.to(device, tensors[key].dtype)
                    else:
                        lists.setdefault(key, []).extend(value)
                position += size
                bar.update(size)
        if keys is not None:
            missing = [key for key in keys if key not in tensors and key not in lists]
            if missing:
                raise ValueError(f"InMemoryDataset.load: the items have no keys {missing}")
        return cls(tensors, lists)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            **{key: value[index] for key, value in self.tensors.items()},
            **{key: value[index] for key, value in self.lists.items()},
        }

    def get_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Returns the batch of ``indices``: tensors indexed at once, lists as lists."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        batch: dict[str, Any] = {}
        for key, value in self.tensors.items():
            batch[key] = value[index.to(value.device)]
        for key, value in self.lists.items():
            batch[key] = [value[i] for i in indices]
        return batch


def open_datasets(
    roots: Sequence[str | os.PathLike], split: str | None = "train"
) -> torch.utils.data.Dataset:
    """Returns the ``split`` clips of one or more dataset folders as one dataset.

    Every folder must hold MoMaps of the same (T, H, W) (families may differ); the message names
    the folder that differs.
    """
    dataset_shape(roots)
    datasets = [MoMapDataset(Path(root), split=split) for root in roots]
    return datasets[0] if len(datasets) == 1 else torch.utils.data.ConcatDataset(datasets)


def dataset_shape(
    roots: Sequence[str | os.PathLike], require_split: str | None = None
) -> tuple[int, int, int]:
    """Returns (T, H, W) of the MoMaps in dataset folders, checking that there is at least one,
    that each exists and is a dataset (``dataset.json``), that they agree and, with
    ``require_split``, that they hold clips of that split (manifests only: nothing is loaded)."""
    if not roots:
        raise ValueError("datasets: expected at least one dataset folder written by `momap sim`")
    shapes = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"dataset: {root} does not exist; write one with `momap sim --out {root} --num-clips N`"
            )
        sim = load_settings(root)["sim"]
        shapes[str(root)] = (sim["num_frames"], sim["height"], sim["width"])
    if len(set(shapes.values())) > 1:
        raise ValueError(f"dataset: the folders hold MoMaps of different (T, H, W): {shapes}")
    if require_split is not None and not any(len(MoMapDataset(Path(r), require_split)) for r in roots):
        raise ValueError(
            f"datasets: no {require_split!r} clips in {[str(r) for r in roots]} to train on "
            "(write more clips with `momap sim --num-clips N`)"
        )
    return next(iter(shapes.values()))


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Returns the batch with tensors on ``device`` and floating tensors in float32."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
            if value.is_floating_point() and value.dtype != torch.float32:
                value = value.float()
        moved[key] = value
    return moved


def batch_stream(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    seed: int,
    start: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yields micro-batches ``start, start + 1, ...`` (see ``StepBatchSampler``) on ``device``.

    An ``InMemoryDataset`` is indexed directly; any other dataset is read by a ``DataLoader``
    with ``num_workers`` processes (its own generator: the global RNG is not touched). Every
    batch also holds ``ITEM_POSITION``: (B,) int64 stream positions of its items.
    """
    sampler = StepBatchSampler(len(dataset), batch_size, seed, start, num_replicas, rank)

    def with_positions(batch: dict[str, Any], k: int) -> dict[str, Any]:
        batch = to_device(batch, device)
        batch[ITEM_POSITION] = torch.tensor(sampler.positions(k), dtype=torch.long)
        return batch

    if isinstance(dataset, InMemoryDataset):
        for k, indices in zip(count(start), sampler, strict=False):
            yield with_positions(dataset.get_batch(indices), k)
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    for k, batch in zip(count(start), loader, strict=False):  # the sampler yields micro-batches start, ...
        yield with_positions(batch, k)


def load_training_data(
    roots: Sequence[str | os.PathLike],
    config: TrainConfig,
    keys: Sequence[str] | None = None,
    split: str | None = "train",
) -> torch.utils.data.Dataset:
    """Returns the ``split`` clips of ``roots``, loaded into memory when ``config.in_memory``."""
    dataset = open_datasets(roots, split)
    if len(dataset) == 0:
        raise ValueError(f"dataset: no {split!r} clips in {[str(r) for r in roots]}")
    if not config.in_memory:
        return dataset
    loaded = InMemoryDataset.load(
        dataset,
        keys=keys,
        device=config.in_memory_device,
        num_workers=config.num_workers,
        progress=config.progress,
        desc=f"load {split} clips",
    )
    if config.progress:
        print(
            f"{len(loaded)} {split} clips in memory "
            f"({loaded.nbytes / 2**30:.2f} GiB on {config.in_memory_device})"
        )
    return loaded
