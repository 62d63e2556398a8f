"""Pre-encoded training data for the MoMap generators (diffusion UNet and the MoMap-VAE baseline).

Both generators work on frozen encodings: the MoMap VAE latent of each clip, the image-VAE
condition latents and the text tokens. Encoding them once (a few seconds on a GPU for thousands
of clips) makes every later training step a pure UNet step on 16x16 tensors.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.control.batch import dsl_pixels_from_channels
from momaplib.data import MoMapDataset, clip_id, collate, model_inputs, parallel_map, split_indices
from momaplib.diffusion.conditioning import condition_latents, fill_holes_nearest
from momaplib.diffusion.conditions import dsl_latent
from momaplib.diffusion.grounding import instance_features, pad_instances, target_map, target_slots
from momaplib.diffusion.text import TextEncoder
from momaplib.momap import TAU_MOVE, channels_to_xyz, moving_mask
from momaplib.sim import SimConfig, clip_seed, generate_clip
from momaplib.storage import atomic_write_text


@dataclass
class LatentSet:
    """Encoded clips: ``latents`` (N, C, h, w), ``condition`` (N, 12, h, w), text per clip.

    ``prompt_index`` (N,) indexes ``prompts`` (unique, ``prompts[0] == ""``) and ``text``
    (P, L, D) their embeddings; ``ids`` are the clip ids (manifest order). ``motion`` (N, 1, h, w)
    is the fraction of moving pixels under each latent cell (``motion_fraction``; None in caches
    written before it existed).

    For prompt grounding (``momaplib.diffusion.grounding``; None in older caches):
    ``target`` (N, 1, h, w) the fraction of each latent cell covered by the clip's target
    instance; ``instance_features`` (N, K, 12) and ``instance_ids`` (N, K) (0 = empty slot) of
    the reference frame's instances; ``target_slot`` (N,) the target's slot, -1 when unknown or
    out of view.

    ``dsl`` (N, 3 n_windows, h, w): the GT motion DSL's pixel form averaged over each latent cell
    (``momaplib.diffusion.conditions.dsl_latent``, windows of ``DEFAULT_WINDOW`` frames; None in
    caches written before the DSL condition existed).
    """

    latents: Tensor
    condition: Tensor
    prompt_index: Tensor
    prompts: list[str]
    text: Tensor
    ids: list[str] = field(default_factory=list)
    motion: Tensor | None = None
    target: Tensor | None = None
    instance_features: Tensor | None = None
    instance_ids: Tensor | None = None
    target_slot: Tensor | None = None
    dsl: Tensor | None = None

    @property
    def has_grounding(self) -> bool:
        """Whether the set holds what prompt grounding trains on (caches before it did not)."""
        return all(getattr(self, name) is not None for name in GROUNDING_TENSORS)

    def __len__(self) -> int:
        return self.latents.shape[0]


GROUNDING_TENSORS = ("target", "instance_features", "instance_ids", "target_slot")
LATENT_TENSORS = ("latents", "condition", "prompt_index", "text", "motion", *GROUNDING_TENSORS, "dsl")


def save_latent_set(latents: LatentSet, path: str | os.PathLike) -> None:
    """Writes ``latents`` to ``path`` (safetensors) and ``path.json`` (prompts, ids), atomically:
    the tensors go to a ``.partial`` file renamed last, so a half-written cache is never read."""
    path = Path(path)
    tensors = {
        name: getattr(latents, name).contiguous()
        for name in LATENT_TENSORS
        if getattr(latents, name) is not None
    }
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(partial))
    atomic_write_text(path.with_suffix(".json"), json.dumps({"prompts": latents.prompts, "ids": latents.ids}))
    partial.replace(path)


def load_latent_set(path: str | os.PathLike) -> LatentSet:
    """Reads a ``save_latent_set`` cache (fields missing from older caches are None)."""
    path = Path(path)
    tensors = load_file(path)
    info = json.loads(path.with_suffix(".json").read_text())
    return LatentSet(**tensors, prompts=info["prompts"], ids=info["ids"])


def concat_latent_sets(sets: Sequence[LatentSet]) -> LatentSet:
    """Returns the clips of every set in ``sets``, in order, as one set: caches streamed in chunks
    (e.g. one per run of a training budget cut into sessions) become one training set.

    The sets must come from one codec, image VAE and text encoder (latent, condition and text
    shapes are checked); prompts are merged (``""`` first) and instance slots padded to the widest
    set. A tensor that only some sets have (older caches) is dropped, so the result never pairs
    clips with the wrong ones. Ids are kept as they are (a streamed set already repeats a scene's
    id for each ``SimConfig`` of its family): streaming the chunks past each other's scenes
    (``simulate_latents(first_index=...)``) is what keeps them apart.
    """
    if not sets:
        raise ValueError("concat_latent_sets: expected at least one LatentSet")
    for name in ("latents", "condition", "text"):
        shapes = {tuple(getattr(s, name).shape[1:]) for s in sets}
        if len(shapes) > 1:
            raise ValueError(f"concat_latent_sets: {name} shapes differ between the sets: {sorted(shapes)}")
    prompts, lookup = _prompt_table(p for s in sets for p in s.prompts)
    text = torch.zeros(len(prompts), *sets[0].text.shape[1:], dtype=sets[0].text.dtype)
    for s in sets:
        text[[lookup[p] for p in s.prompts]] = s.text
    index = [torch.tensor([lookup[p] for p in s.prompts])[s.prompt_index.long()] for s in sets]
    optional = {
        name: torch.cat([getattr(s, name) for s in sets])
        for name in ("motion", "dsl")
        if all(getattr(s, name) is not None for s in sets)
    }
    if all(s.has_grounding for s in sets):
        features, instance_ids = _pad_to_widest(
            [s.instance_features for s in sets], [s.instance_ids for s in sets]
        )
        optional.update(
            target=torch.cat([s.target for s in sets]),
            instance_features=features,
            instance_ids=instance_ids,
            target_slot=torch.cat([s.target_slot for s in sets]),
        )
    return LatentSet(
        latents=torch.cat([s.latents for s in sets]),
        condition=torch.cat([s.condition for s in sets]),
        prompt_index=torch.cat(index),
        prompts=prompts,
        text=text,
        ids=[i for s in sets for i in s.ids],
        **optional,
    )


def _prompt_table(prompts) -> tuple[list[str], dict[str, int]]:
    """Returns the unique ``prompts``, ``""`` first then sorted (``LatentSet.prompts``), and the
    index of each."""
    table = ["", *sorted(set(prompts) - {""})]
    return table, {prompt: i for i, prompt in enumerate(table)}


def _pad_to_widest(features: Sequence[Tensor], ids: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Returns the (N_k, K_k, F) ``features`` and (N_k, K_k) instance ``ids`` of several batches
    padded with empty slots to the widest one's K and concatenated."""
    K = max(i.shape[1] for i in ids)
    padded = [pad_instances(f, i, K) for f, i in zip(features, ids, strict=True)]
    return torch.cat([f for f, _ in padded]), torch.cat([i for _, i in padded])


def motion_fraction(momap: Tensor, latent_size: tuple[int, int], tau_move: float = TAU_MOVE) -> Tensor:
    """Returns (B, 1, h, w): the fraction of pixels under each latent cell that move.

    ``momap`` (B, 3T, H, W) are normalised trajectories in model layout (``model_inputs``), whose
    unit is the scene scale, so a pixel moves when ``max_t |x_t - x_0| > tau_move`` as in
    ``momaplib.momap.moving_mask`` with a scale of 1. Invalid pixels are 0 at every t and never
    move.
    """
    if momap.ndim != 4 or momap.shape[1] % 3:
        raise ValueError(f"momap: expected (B, 3T, H, W), got shape {tuple(momap.shape)}")
    xyz = channels_to_xyz(momap.float())  # (B, T, H, W, 3), in units of the scene scale
    valid = torch.ones_like(xyz[:, 0, ..., 0], dtype=torch.bool)  # invalid pixels are 0: never move
    moving = moving_mask(xyz, valid, tau_move=tau_move, scale=torch.ones((), device=xyz.device))
    return F.adaptive_avg_pool2d(moving[:, None].float(), latent_size)


@torch.no_grad()
def encode_datasets(
    roots: Sequence[str | os.PathLike],
    split: str,
    vae,
    image_vae,
    text_encoder: TextEncoder,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    max_clips: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    dataset: torch.utils.data.Dataset | None = None,
) -> LatentSet:
    """Returns the ``LatentSet`` of a split of one or more dataset folders (``momap sim`` layout).

    MoMap latents are posterior means (``vae.encode_channels``); instance maps get one random
    palette per clip drawn from ``seed``. ``dataset`` (items like ``MoMapDataset``'s, e.g. an
    ``InMemoryDataset`` already on the GPU) replaces the split of ``roots``.
    """
    if dataset is None:
        dataset = torch.utils.data.ConcatDataset([MoMapDataset(root, split) for root in roots])
    else:
        num_workers = 0  # in-memory items may live on the GPU
    if max_clips is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(max_clips, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"encode_datasets: split {split!r} of {list(map(str, roots))} holds no clips")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers
    )
    encoder = _BatchEncoder(vae, image_vae, device, torch.Generator().manual_seed(seed))
    for batch in tqdm(loader, desc=f"encode {split}", disable=not progress, leave=False):
        encoder.add(
            batch["momap"], batch["rgb"], batch["instance"], batch["prompt"], batch["id"], batch["target_id"],
            xyz0=batch["xyz0"],
        )  # fmt: skip
    return encoder.finish(text_encoder)


class _BatchEncoder:
    """Encodes batches of model inputs with the frozen VAEs and collects a ``LatentSet``."""

    def __init__(self, vae, image_vae, device, generator: torch.Generator):
        self.vae, self.image_vae, self.device, self.generator = vae, image_vae, device, generator
        self.latents, self.conditions, self.motion, self.prompts, self.ids = [], [], [], [], []
        self.targets, self.features, self.instance_ids, self.slots, self.dsl = [], [], [], [], []

    @torch.no_grad()
    def add(
        self, momap: Tensor, rgb: Tensor, instance: Tensor, prompts, ids, target_ids: Tensor, xyz0=None
    ) -> None:
        """``momap`` (B, 3T, H, W) normalised, ``rgb`` (B, 3, H, W) in [-1, 1], ``instance`` (B, H, W),
        ``target_ids`` (B,) the instance id each prompt names (-1: unknown), ``xyz0`` (B, 3, H, W) the
        reference XYZ condition as observed (``model_inputs``; None: ``momap[:, :3]``, the GT)."""
        momap = momap.to(self.device, torch.float32)
        xyz0 = momap[:, :3] if xyz0 is None else xyz0.to(self.device, torch.float32)
        instance = instance.to(self.device).long()
        target_ids = torch.as_tensor(target_ids, device=self.device).long()
        latents = self.vae.encode_channels(momap.to(self.vae.dtype))
        # the raw codec's latents are the MoMap itself (3 MB a clip): kept in its storage dtype
        latents = latents.to(getattr(self.vae, "latent_storage_dtype", torch.float32))
        image_dtype = self.image_vae.dtype
        seen = xyz0.abs().sum(1) > 0  # pixels with (observed) depth; holes are exactly 0
        condition = condition_latents(
            self.image_vae,
            rgb.to(self.device, image_dtype),
            instance,
            # the reference XYZ as the pipeline gets it: holes filled from their nearest pixel
            fill_holes_nearest(xyz0, seen).to(image_dtype),
            generator=self.generator,
        )
        size = tuple(latents.shape[-2:])
        valid = momap[:, :3].abs().sum(1) > 0  # invalid pixels are exactly 0 (the scene centre)
        features, instance_ids = instance_features(rgb.to(self.device), instance, xyz0, seen)
        self.targets.append(target_map(instance, target_ids, size).cpu())
        self.features.append(features.cpu())
        self.instance_ids.append(instance_ids.cpu())
        self.slots.append(target_slots(instance_ids, target_ids).cpu())
        self.latents.append(latents.cpu())
        self.conditions.append(condition.float().cpu())
        self.motion.append(motion_fraction(momap, size).cpu())
        self.dsl.append(dsl_latent(dsl_pixels_from_channels(momap, instance, valid), size).cpu())
        self.prompts += list(prompts)
        self.ids += list(ids)

    def finish(self, text_encoder: TextEncoder) -> LatentSet:
        prompts, lookup = _prompt_table(self.prompts)
        text = torch.cat([text_encoder(prompts[i : i + 256]) for i in range(0, len(prompts), 256)])
        features, instance_ids = _pad_to_widest(self.features, self.instance_ids)
        return LatentSet(
            latents=torch.cat(self.latents),
            condition=torch.cat(self.conditions),
            prompt_index=torch.tensor([lookup[p] for p in self.prompts]),
            prompts=prompts,
            text=text.float().cpu(),
            ids=self.ids,
            motion=torch.cat(self.motion),
            target=torch.cat(self.targets),
            instance_features=features,
            instance_ids=instance_ids,
            target_slot=torch.cat(self.slots),
            dsl=torch.cat(self.dsl),
        )


#: The end of a motion variant's clip id (``_simulate_inputs``: variant k > 0): the same scene and
#: reference frame as variant 0.
MOTION_VARIANT = re.compile(r"_m\d+$")


def _simulate_inputs(task: tuple[str, int, SimConfig]) -> dict:
    """Simulates one clip (worker side) and returns its compact model inputs.

    Arrays travel as numpy, not tensors: torch sends a tensor between processes as a shared-memory
    file descriptor, and thousands of clips in flight exhaust the descriptors ("received 0 items
    of ancdata")."""
    family, index, config = task
    clip = generate_clip(clip_seed(0, index), config)
    inputs = model_inputs(clip.momap, clip.depth[0] if config.sensor != "ideal" else None)
    return {
        "momap": inputs["momap"].half().numpy(),  # 1e-3 of the scene scale: far below what the VAE keeps
        "xyz0": inputs["xyz0"].half().numpy(),  # as the sensor saw it (= momap[:3] with an ideal one)
        "rgb": clip.momap.rgb.copy(),
        "instance": clip.momap.instance.astype("int16"),
        "prompt": clip.momap.prompt,
        "id": clip_id(family, index, config.task_variant)
        + (f"_m{config.motion_variant}" * bool(config.motion_variant)),
        "target_id": inputs["target_id"],
    }


@torch.no_grad()
def simulate_latents(
    configs: Sequence[SimConfig],
    clips_per_config: int,
    vae,
    image_vae,
    text_encoder: TextEncoder,
    device: torch.device | str = "cpu",
    split: str = "train",
    first_index: int = 0,
    workers: int = 0,
    time_limit_minutes: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    task_variants: int = 1,
    motion_variants: int = 1,
    stall_timeout: float = 300.0,
) -> LatentSet:
    """Returns the ``LatentSet`` of freshly simulated clips, encoded as they come (no files).

    A dataset folder costs about 4 MB per clip at 128x128, T = 32; training data only needs the
    ~45 kB of latents, so this simulates clip after clip in ``workers`` spawned processes (0: in
    this process) and encodes batches on ``device``. Clip ``i`` of ``config.family`` is the one
    ``momap sim --seed 0`` writes as index ``i`` (seed ``clip_seed(0, i)``; a ``config.device`` of
    "cuda" ray-casts on the GPU, ~2x faster with 15 workers on an H100 host, not bit-identical).
    Only indices from ``first_index`` on whose id falls in ``split`` (``momaplib.data.split_of``)
    are used, so the test clips of every ``momap sim`` dataset stay unseen. Families alternate
    (with workers, in the order clips finish); ``time_limit_minutes`` > 0 stops early with what is
    done. ``task_variants`` > 1 adds, after each clip, its ``SimConfig.task_variant`` 1, 2, ...
    (same scene, another task and target; ids end in ``_v1``, ...), so ``clips_per_config``
    scenes give ``clips_per_config * task_variants`` clips. ``vae`` may be a mapping ``{name: codec}``
    (MoMap VAEs, ``RawMoMapCodec``): the clips are simulated once and encoded by each, and the result
    is ``{name: LatentSet}`` (same clips, ids and conditions). ``motion_variants`` > 1 adds, likewise,
    ``SimConfig.motion_variant`` 1, 2, ... of each (the same start frame and task, another future;
    ids end in ``_m1``, ...): several futures per scene for a model to learn a distribution from.
    With workers, ``stall_timeout`` seconds without a finished clip raise ``TimeoutError`` (a worker
    that died or hung) rather than waiting for ever; the progress bar refreshes at most every 10 s
    so that it can go to a log file.
    """
    if clips_per_config < 1 or not configs:
        raise ValueError(f"clips_per_config: expected >= 1 and at least one config, got {clips_per_config}")
    if task_variants < 1 or motion_variants < 1:
        raise ValueError(
            f"task_variants, motion_variants: expected >= 1, got {task_variants}, {motion_variants}"
        )
    per_config = []
    for config in configs:
        indices = split_indices(config.family, clips_per_config, split, first_index)
        variants = [
            replace(config, task_variant=v, motion_variant=m)
            for v in range(task_variants)
            for m in range(motion_variants)
        ]
        per_config.append([(config.family, i, c) for i in indices for c in variants])
    tasks = [task for group in zip(*per_config, strict=True) for task in group]
    codecs = dict(vae) if isinstance(vae, Mapping) else {None: vae}
    encoders = {
        name: _BatchEncoder(codec, image_vae, device, torch.Generator().manual_seed(seed))
        for name, codec in codecs.items()
    }  # the same seed: every codec's set gets the same instance palettes, so the same conditions
    pending: list[dict] = []

    def flush() -> None:
        for encoder in encoders.values() if pending else ():
            encoder.add(
                torch.from_numpy(np.stack([item["momap"] for item in pending])),
                torch.from_numpy(np.stack([item["rgb"] for item in pending])).permute(0, 3, 1, 2).float()
                / 127.5
                - 1.0,
                torch.from_numpy(np.stack([item["instance"] for item in pending])),
                [item["prompt"] for item in pending],
                [item["id"] for item in pending],
                torch.tensor([item["target_id"] for item in pending]),
                xyz0=torch.from_numpy(np.stack([item["xyz0"] for item in pending])),
            )
        pending.clear()

    started = time.perf_counter()
    items = parallel_map(tasks, workers, _simulate_inputs, chunksize=4, stall_timeout=stall_timeout)
    with tqdm(total=len(tasks), desc="simulate + encode", disable=not progress, mininterval=10) as bar:
        for item in items:
            pending.append(item)
            bar.update()
            if len(pending) >= batch_size:
                flush()
            if time_limit_minutes > 0 and time.perf_counter() - started > 60 * time_limit_minutes:
                break
        items.close()  # stops the workers now, not when the generator is collected
        flush()
    sets = {name: encoder.finish(text_encoder) for name, encoder in encoders.items()}
    return sets if isinstance(vae, Mapping) else sets[None]
