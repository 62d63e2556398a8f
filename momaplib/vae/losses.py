"""Losses of the VAE trainers (the KL term and the MoMap VAE's reconstruction terms) and their
validation errors (the MoMap VAE's end-point error / scene scale, the image VAE's L1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.momap import TAU_MOVE
from momaplib.training import ITEM_POSITION, call_through_forward, item_noise, to_device
from momaplib.vae.model import MoMapVAE


def kl_loss(posterior: Any) -> Tensor:
    """Mean KL(q || N(0, I)) per latent element."""
    mean, logvar = posterior.mean.float(), posterior.logvar.float()
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def momap_vae_loss(
    visible_weight: float = 1.0,
    velocity_weight: float = 0.0,
    kl_weight: float = 1e-6,
    displacement_weight: float = 0.0,
    moving_weight: float = 0.0,
    tau_move: float = TAU_MOVE,
):
    """Returns ``loss_fn(model, batch, step)`` of the MoMap VAE (for ``momaplib.training.fit``).

    Terms (model range, i.e. metres / scene scale): mean L1 over valid points of every frame,
    ``visible_weight`` times the mean L1 over visible points, ``velocity_weight`` times the L1 of
    frame-to-frame displacements over valid points, ``displacement_weight`` times the L1 of
    displacements from the reference frame (``x_t - x_0``, t >= 1) over valid points, and
    ``kl_weight`` times the KL per element. With ``moving_weight``, every mean weighs a point that
    moves (``max_t |x_t - x_0| > tau_move`` in model range, i.e. the metrics' moving mask) by
    ``1 + moving_weight``. The decoder sees a posterior sample, as in SD's VAE
    training.
    """

    def loss_fn(model: MoMapVAE, batch: dict[str, Any], step: int):
        x = batch["momap"]
        B, C, H, W = x.shape
        T = C // 3

        def autoencode(vae: MoMapVAE):
            posterior = vae.encode(x).latent_dist
            if ITEM_POSITION not in batch:  # called outside fit
                return posterior, vae.decode(posterior.sample()).sample.float()
            # Noise per item (seeded by its stream position): processes never share draws.
            noise = item_noise(batch, posterior.mean.shape[1:], dtype=posterior.mean.dtype)
            return posterior, vae.decode(posterior.mean + posterior.std * noise).sample.float()

        posterior, decoded = call_through_forward(model, autoencode)  # DDP syncs only its forward
        delta = (decoded - x).view(B, T, 3, H, W)  # trajectory error per point and frame
        error = delta.abs().sum(2)  # L1 over xyz per point
        valid = batch["valid"][:, None].expand(B, T, H, W).float()
        if moving_weight:  # GT points that move count 1 + moving_weight in every term
            travel = (x.view(B, T, 3, H, W) - x.view(B, T, 3, H, W)[:, :1]).norm(dim=2).amax(1)
            valid = valid * (1 + moving_weight * (travel > tau_move).float())[:, None]
        visible = batch["visible"].float() * valid
        l1 = (error * valid).sum() / valid.sum().clamp(min=1)
        l1_visible = (error * visible).sum() / visible.sum().clamp(min=1)
        loss = l1 + visible_weight * l1_visible
        logs: dict[str, Tensor] = {"l1": l1, "l1_visible": l1_visible}
        later = valid[:, 1:]  # frames 1..T-1: both motion terms compare two frames' errors

        def mean_l1(difference: Tensor) -> Tensor:
            return (difference.abs().sum(2) * later).sum() / later.sum().clamp(min=1)

        if velocity_weight:  # frame-to-frame: (x_t - x_{t-1}) decoded against true
            velocity = mean_l1(delta.diff(dim=1))
            loss = loss + velocity_weight * velocity
            logs["velocity"] = velocity
        if displacement_weight:  # from the reference frame: (x_t - x_0) decoded against true
            displacement = mean_l1(delta[:, 1:] - delta[:, :1])
            loss = loss + displacement_weight * displacement
            logs["displacement"] = displacement
        kl = kl_loss(posterior)
        logs["kl"] = kl
        return loss + kl_weight * kl, logs

    return loss_fn


@torch.no_grad()
def image_vae_errors(model: torch.nn.Module, dataset: torch.utils.data.Dataset, max_clips: int) -> dict:
    """Returns mean L1 (model range) of RGB and valid-XYZ reconstructions of reference frames."""
    from momaplib.data import collate

    subset = torch.utils.data.Subset(dataset, range(min(max_clips, len(dataset))))
    sums = {"val/l1_rgb": 0.0, "val/l1_xyz": 0.0, "val/object_color_rgb": 0.0}
    for batch in torch.utils.data.DataLoader(subset, batch_size=16, collate_fn=collate):
        batch = to_device(batch, model.device)
        for key, name in (("rgb", "val/l1_rgb"), ("xyz0", "val/l1_xyz")):
            decoded = model.decode(model.encode(batch[key].to(model.dtype)).latent_dist.mean).sample.float()
            error = (decoded - batch[key]).abs().mean(1).flatten(1)  # (B, H*W)
            if key == "xyz0":
                valid = batch["valid"].flatten(1)
                error = (error * valid).sum(1) / valid.sum(1).clamp(min=1)
            else:
                error = error.mean(1)
                color = object_color_error(decoded, batch[key], batch["instance"])
                sums["val/object_color_rgb"] += float(color.sum())
            sums[name] += float(error.sum())
    return {key: value / max(len(subset), 1) for key, value in sums.items()}


def object_color_error(decoded: Tensor, rgb: Tensor, instance: Tensor) -> Tensor:
    """Returns (B,) the mean over objects (instance ids > 0) of the L1 between each object's mean
    colour in ``decoded`` and in ``rgb`` (both (B, 3, H, W), model range); 0 for a clip without objects.

    The pixel L1 is dominated by the background; this catches an image VAE that keeps shapes but
    washes out the colours of small objects, which the prompts name ("the green block").
    """
    errors = []
    for b in range(rgb.shape[0]):
        ids = [int(i) for i in torch.unique(instance[b]) if i > 0]
        per_object = [
            (decoded[b][:, instance[b] == i].mean(1) - rgb[b][:, instance[b] == i].mean(1)).abs().mean()
            for i in ids
        ]
        errors.append(torch.stack(per_object).mean() if per_object else rgb.new_zeros(()))
    return torch.stack(errors)


@torch.no_grad()
def reconstruction_epe(vae: MoMapVAE, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Returns per-clip reconstruction errors of a batch of ``MoMapDataset`` items (posterior mean).

    ``epe_median`` / ``epe_mean`` (B,): median / mean over valid points (every frame) of
    ``||decoded - gt|| / scale`` (metres relative to the scene scale); ``epe_visible`` (B,):
    the mean over visible points only.
    """
    x = batch["momap"].to(vae.device, vae.dtype)
    decoded = vae.decode_channels(vae.encode_channels(x)).float()
    T = x.shape[1] // 3
    B, _, H, W = x.shape
    error = (decoded - x.float()).view(B, T, 3, H, W).norm(dim=2)  # model range = metres / scale
    valid = batch["valid"].to(error.device)[:, None].expand(B, T, H, W)
    visible = batch["visible"].to(error.device) & valid
    median = torch.stack(
        [e[m].median() if m.any() else e.new_tensor(math.nan) for e, m in zip(error, valid, strict=True)]
    )
    mean = (error * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    mean_visible = (error * visible).flatten(1).sum(1) / visible.flatten(1).sum(1).clamp(min=1)
    return {"epe_median": median, "epe_mean": mean, "epe_visible": mean_visible}


@torch.no_grad()
def evaluate_reconstruction(
    vae: MoMapVAE,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 16,
    max_clips: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Returns reconstruction errors of ``vae`` over a dataset (``MoMapDataset`` items).

    ``epe_median``: the median over clips of the per-clip median point error relative to the
    scene scale (the number of the VAE issue, target <= 1 %); ``epe_mean`` and ``epe_visible``:
    means over clips of per-clip means; ``num_clips``.
    """
    from momaplib.data import collate

    count = len(dataset) if max_clips is None else min(max_clips, len(dataset))
    if count == 0:
        raise ValueError("evaluate_reconstruction: the dataset is empty")
    subset = torch.utils.data.Subset(dataset, range(count))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate)
    rows: dict[str, list[Tensor]] = {}
    was_training = vae.training
    vae.eval()
    for batch in tqdm(loader, desc="reconstruct", disable=not progress, leave=False):
        for key, value in reconstruction_epe(vae, to_device(batch, vae.device)).items():
            rows.setdefault(key, []).append(value.cpu())
    vae.train(was_training)
    values = {key: torch.cat(value) for key, value in rows.items()}
    return {
        "epe_median": float(values["epe_median"].nanmedian()),
        "epe_mean": float(values["epe_mean"].mean()),
        "epe_visible": float(values["epe_visible"].mean()),
        "num_clips": float(count),
    }
