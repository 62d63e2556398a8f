"""Training items, the predictor and ``momap train-gflow`` for the GeneralFlow-style baselines.

``gflow_batch`` turns model-layout MoMaps (``momaplib.data.model_inputs``) into what
``GFlowModel`` reads: a random sample of the valid pixels at a start frame as the scene cloud (with
RGB or semantic colours), a chunk of query pixels, and their next ``horizon`` displacements.
``gflow_predictor`` samples whole MoMaps for the best-of-N harness (every valid pixel is a query,
in chunks; ``gflow-rollout`` rolls out from its own predictions). ``TrainGFlowJob`` trains a
variant with ``momaplib.training.fit`` (accelerate, resume, progress) on the train split;
``train_gflow_on_clips`` trains one on MoMaps in memory (a notebook's few clips, no dataset folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from momaplib.baselines.gflow import VARIANTS, GFlowModel, build_gflow, gflow_loss
from momaplib.momap import MoMap, channels_to_xyz, denormalize_xyz, normalization_stats, normalize_xyz
from momaplib.training import (
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    check_job_fields,
    check_job_settings,
    dataset_shape,
    fit,
    load_training_data,
    micro_batch_generator,
    save_job_settings,
    save_model,
    smoke_train,
)


def _colours(rgb: Tensor, instance: Tensor, semantic: bool, generator: torch.Generator) -> Tensor:
    """Returns (B, H*W, 3) point colours: RGB in [-1, 1], or one random colour per instance id."""
    if not semantic:
        return rgb.flatten(2).transpose(1, 2)
    palette = torch.rand(instance.shape[0], int(instance.max()) + 1, 3, generator=generator).to(rgb) * 2 - 1
    return torch.gather(palette, 1, instance.flatten(1)[..., None].expand(-1, -1, 3).long())


def gflow_batch(batch: dict[str, Tensor], model: GFlowModel, generator: torch.Generator) -> dict[str, Tensor]:
    """Returns scene, colours, queries and target displacements of a batch of ``model_inputs``."""
    xyz = channels_to_xyz(batch["momap"].float()).flatten(2, 3)  # (B, T, HW, 3)
    B, T = xyz.shape[:2]
    cfg = model.config
    colours = _colours(batch["rgb"].float(), batch["instance"], cfg.semantic_colours, generator)
    valid = batch["valid"].flatten(1).float().cpu() + 1e-6  # sample valid pixels (all, if none is)
    scene_idx = torch.multinomial(valid, cfg.scene_points, replacement=True, generator=generator).to(
        xyz.device
    )
    query_idx = torch.multinomial(valid, cfg.query_chunk, replacement=True, generator=generator).to(
        xyz.device
    )
    start = torch.randint(0, T - cfg.horizon, (B,), generator=generator).to(xyz.device)
    rows = torch.arange(B, device=xyz.device)
    at_start = xyz[rows, start]  # (B, HW, 3)
    steps = start[:, None] + torch.arange(1, cfg.horizon + 1, device=xyz.device)  # (B, horizon)
    future = xyz[rows[:, None], steps]  # (B, horizon, HW, 3)
    pick = lambda values, idx: torch.gather(values, 1, idx[..., None].expand(-1, -1, 3))  # noqa: E731
    queries = pick(at_start, query_idx)
    target = torch.stack([pick(future[:, h], query_idx) for h in range(cfg.horizon)], 2) - queries[:, :, None]
    return {
        "scene": pick(at_start, scene_idx), "scene_colour": pick(colours, scene_idx), "queries": queries,
        "query_colour": pick(colours, query_idx), "target": target,
    }  # fmt: skip


def gflow_predictor(model: GFlowModel, chunk: int = 4096):
    """Returns a ``Predictor`` ``(gt, num_samples, generator) -> (N, T, H, W, 3)`` metres."""

    @torch.no_grad()
    def predict(gt: MoMap, num_samples: int, generator) -> Tensor:
        if not isinstance(generator, torch.Generator):
            generator = torch.Generator().manual_seed(0 if generator is None else int(generator))
        device = model.device
        valid = torch.from_numpy(gt.valid)
        x0 = torch.from_numpy(gt.xyz[0])
        center, scale = normalization_stats(x0, valid)
        points = normalize_xyz(x0[None], center, scale)[0][valid].to(device)  # (Q, 3)
        H, W = gt.valid.shape
        rgb = torch.from_numpy(gt.rgb).permute(2, 0, 1).float()[None] / 127.5 - 1
        instance = torch.from_numpy(gt.instance).long()[None]
        colour = _colours(rgb, instance, model.config.semantic_colours, generator)[0][valid.flatten()].to(
            device
        )
        T, horizon = gt.num_frames, model.config.horizon
        # the samples side by side (a batch): each its own scene subset and latents
        scene_idx = torch.randint(
            0, len(points), (num_samples, model.config.scene_points), generator=generator
        )
        scene_idx = scene_idx.to(device)
        positions = [points.expand(num_samples, -1, -1)]  # (N, Q, 3) per frame
        while len(positions) < T:  # rollout: continue from the last prediction (one call if horizon = T - 1)
            now = positions[-1]
            scene = torch.gather(now, 1, scene_idx[..., None].expand(-1, -1, 3))
            context = model.scene_context(scene, colour[scene_idx])  # once for every chunk of queries
            query_colour = colour.expand(num_samples, -1, -1)
            parts = [
                model.sample(
                    None, None, now[:, s : s + chunk], query_colour[:, s : s + chunk], generator,
                    context=context,
                )
                for s in range(0, now.shape[1], chunk)
            ]  # fmt: skip
            displacement = torch.cat(parts, 1)  # (N, Q, horizon, 3)
            positions += [now + displacement[:, :, h] for h in range(min(horizon, T - len(positions)))]
        trajectory = denormalize_xyz(torch.stack(positions, 1).cpu()[:, :, None], center, scale)[:, :, 0]
        out = torch.zeros(num_samples, T, H, W, 3)
        out[:, :, valid] = trajectory.float()  # (N, T, Q, 3)
        return out

    return predict


@dataclass
class TrainGFlowJob:
    """Trains a GeneralFlow-style baseline; writes ``output_dir/model`` (``GFlowModel``), metrics and
    checkpoints."""

    datasets: tuple[Path, ...] = (Path("data/sim_tabletop"), Path("data/sim_egocentric"))
    """Dataset folders written by `momap sim` (train split)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            Path("outputs/gflow"), max_steps=20_000, batch_size=32, in_memory=True
        )
    )
    """The optimisation loop."""
    variant: str = "gflow-original"
    """One of gflow-original, gflow-rollout, gflow-extend (momaplib.baselines.gflow.VARIANTS)."""
    kl_weight: float = 1e-3
    """Weight of the CVAE's KL term."""
    smoke: bool = False
    """Tiny, fast settings for tests and CPU smoke runs."""

    def __post_init__(self) -> None:
        check_job_fields(self)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {sorted(VARIANTS)}, got {self.variant!r}")

    def run(self, dataset: torch.utils.data.Dataset | None = None) -> Path:
        """Trains (or resumes) and returns ``output_dir/model``; ``dataset`` replaces the train split."""
        job = replace(self, train=smoke_train(self.train), smoke=False) if self.smoke else self
        config = job.train
        check_job_settings(job, config)
        if dataset is None:
            dataset_shape(job.datasets, require_split="train")
            dataset = load_training_data(job.datasets, config, keys=("momap", "rgb", "instance", "valid"))
        accelerator = build_accelerator(config)
        model = build_gflow(job.variant, dataset[0]["momap"].shape[0] // 3)
        if self.smoke:
            model = GFlowModel(**{**model.config, "width": 32, "scene_points": 64, "query_chunk": 32})
        optimizer = build_optimizer(model.parameters(), config)
        model, optimizer = accelerator.prepare(model, optimizer)
        lr_scheduler = build_scheduler(optimizer, config)
        save_job_settings(job, config)

        def loss_fn(model, batch: dict[str, Any], step: int):
            generator = micro_batch_generator(batch, config.seed)  # differs per process
            return gflow_loss(
                model, gflow_batch(batch, accelerator.unwrap_model(model), generator), job.kl_weight
            )

        fit(accelerator, config, model, optimizer, lr_scheduler, dataset, loss_fn)
        path = config.output_dir / "model"
        if accelerator.is_main_process:
            save_model(accelerator.unwrap_model(model), path)
        accelerator.wait_for_everyone()
        return path


def train_gflow_on_clips(
    clips, variant: str, output_dir: str | Path, max_steps: int = 1500, batch_size: int = 32,
    smoke: bool = False,
) -> Path:  # fmt: skip
    """Trains ``variant`` on ``clips`` (MoMaps, or ``(id, MoMap)`` pairs) held in memory and returns
    the model folder (``output_dir/model``); ``smoke``: the tiny settings of ``TrainGFlowJob``."""
    from momaplib.data import model_inputs
    from momaplib.metrics.best_of_n import as_clips
    from momaplib.training import InMemoryDataset

    items = [model_inputs(momap) for _, momap in as_clips(clips)]
    if not items:
        raise ValueError("clips: expected at least one MoMap to train on")
    keys = ("momap", "rgb", "instance", "valid")
    dataset = InMemoryDataset({key: torch.stack([item[key] for item in items]) for key in keys})
    loop = TrainConfig(
        Path(output_dir), max_steps=max_steps, batch_size=batch_size, progress=False, num_workers=0,
        validate_every=0,
    )  # fmt: skip
    return TrainGFlowJob(train=loop, variant=variant, smoke=smoke).run(dataset)


def load_gflow(path: str | Path) -> GFlowModel:
    """Returns a trained ``GFlowModel`` (a folder written by ``TrainGFlowJob``)."""
    return GFlowModel.from_pretrained(str(path)).eval()


__all__ = ["TrainGFlowJob", "gflow_batch", "gflow_predictor", "load_gflow", "train_gflow_on_clips"]
