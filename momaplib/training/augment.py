"""Training data that teaches geometry rather than one layout: batch augmentation and procedural mixing.

- ``augment_batch``: geometric augmentation of a training batch of model-layout MoMaps
  (``momaplib.data.model_inputs`` items, collated). Per item, independently:

  * a random crop with probability ``crop_probability``: a window of ``crop_scale`` (0.6-1.0
    by default) of the image's height and width, same aspect, anywhere in the image, resampled
    back to the training size (``momaplib.data.views.resample_trajectories``: each new pixel's
    ``xyz`` at t = 0 lies on its own ray, interpolated within surfaces, nearest across edges), with
    ``K`` updated (focal lengths scaled by the zoom, principal point shifted);
  * with probability ``turn_probability`` (default 0: off), the reference camera turned about its
    centre (``momaplib.data.views.camera_rotation``): roll uniform within +-``turn_degrees[0]``
    (45: with the quarter turns below, every roll angle), pitch and yaw within
    +-``turn_degrees[1]``; the image is warped by the homography ``K R^T K^-1`` with ``K`` kept,
    trajectories resampled and rotated into the new frame, and pixels that now see outside the
    original image invalid, as ``momaplib.data.views.rotate_camera`` does for one MoMap;
  * an in-plane rotation by 0, 90, 180 or 270 degrees (uniform; 0 or 180 for non-square images),
    with ``(x, y)`` rotated to match and ``K`` permuted (``momaplib.data.views.roll_quarter_turns``);
  * a left-right flip with probability 1/2, ``x`` negated and ``cx -> W - 1 - cx`` (with the
    rotations, every one of the 8 symmetries of the square is reached);
  * with probability ``holes_probability`` (default 0: off), a region without data: a band along
    one edge (5-40 % of the image) or a disc (radius 5-25 %), its pixels made invalid, as in frames
    reconstructed from a sensor with holes or warped to another view; the points that remain are
    not moved (an item left with fewer than ``MIN_CROP_VALID`` valid pixels keeps its own).

  Then the item is normalised again (``momaplib.momap.normalization_stats`` of the new reference
  frame), so an augmented item equals ``model_inputs`` of the transformed MoMap: ``momap``,
  ``xyz0``, ``center``, ``scale``, ``rgb``, ``instance``, ``valid``, ``visible``, ``K`` and
  ``ref_from_cam`` all change together; other keys (``prompt``, ``id``, ...) pass through.
- ``augmented_loss``: wraps a ``fit`` loss function so every micro-batch is augmented first, each
  item seeded by its position in the run's item stream (``momaplib.training.randomness``), so a
  resumed run, or one on more processes, augments every item exactly as a single run would.
- ``with_procedural``: the training set with procedural MoMaps (``momaplib.data.ProceduralDataset``)
  appended, so they make up ``fraction`` of the stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from momaplib.data.procedural_dataset import ProceduralDataset
from momaplib.data.views import camera_rotation, resample_trajectories
from momaplib.momap import (
    channels_to_xyz,
    denormalize_xyz,
    normalization_stats,
    normalize_xyz,
    xyz_to_channels,
)
from momaplib.training.batches import ITEM_POSITION, InMemoryDataset
from momaplib.training.config import TrainConfig
from momaplib.training.randomness import item_seed

#: Keys an augmented batch needs besides ``momap`` or ``xyz0``: the normalisation, to work in
#: metres, ``K``, which crops and rotations update, and ``instance``, which tells object edges.
AUGMENT_KEYS = ("center", "scale", "K", "instance", "valid")
#: Keys transformed per pixel (their last two dimensions are H, W).
_SPATIAL = ("momap", "xyz0", "rgb", "instance", "valid", "visible", "observed")
#: ``item_seed`` stream of the augmentation draws (other per-item draws use other streams).
AUGMENT_STREAM = 29
#: An item whose crop keeps fewer valid pixels than this fraction is not cropped.
MIN_CROP_VALID = 0.05
#: ``item_seed`` stream of the holes' draws (apart, so turning holes on changes no other draw).
HOLES_STREAM = 31
#: ``item_seed`` stream of the camera turns' draws (apart, likewise).
TURN_STREAM = 37


def _quarter_turn(xyz: Tensor, K: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Returns ``xyz`` (B, T, H, W, 3) and ``K`` (B, 3, 3) after one counter-clockwise quarter turn."""
    xyz = torch.rot90(xyz, 1, dims=(2, 3))
    xyz = torch.stack([xyz[..., 1], -xyz[..., 0], xyz[..., 2]], -1)
    new_K = K.clone()
    new_K[:, 0, 0], new_K[:, 1, 1], new_K[:, 0, 2], new_K[:, 1, 2] = (
        K[:, 1, 1], K[:, 0, 0], K[:, 1, 2], width - 1 - K[:, 0, 2]
    )  # fmt: skip
    return xyz, new_K


def _conjugate(ref_from_cam: Tensor, new_from_old: Tensor) -> Tensor:
    P = torch.eye(4, dtype=ref_from_cam.dtype, device=ref_from_cam.device)
    P[:3, :3] = new_from_old.to(ref_from_cam.dtype)
    return P @ ref_from_cam @ P.T


def _pixels_and_rays(K: Tensor, H: int, W: int) -> tuple[Tensor, Tensor, Tensor]:
    """Returns the pixel coordinates ``v, u`` (H, W) and every pixel's ray (B, H, W, 3) of the
    cameras ``K`` (B, 3, 3), float64."""
    K = K.double()
    v, u = torch.meshgrid(
        torch.arange(H, dtype=torch.float64, device=K.device),
        torch.arange(W, dtype=torch.float64, device=K.device),
        indexing="ij",
    )
    fx, fy, cx, cy = (K[:, i, j, None, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return v, u, torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u - cx)], -1)


def _resampled(
    item: dict[str, Tensor],
    source: Tensor,
    rays: Tensor,
    rotation: Tensor | None,
    rgb_padding: str,
    new_K: Tensor | None = None,
) -> dict[str, Tensor]:
    """Returns the items (batched, B leading) resampled at ``source`` (B, H, W, 2) pixel positions
    (NaN: unseen) of their images, the new pixels looking along ``rays`` (B, H, W, 3) of a camera
    turned by ``rotation`` (B, 3, 3; None: not turned) with intrinsics ``new_K`` (None: kept),
    colours padded by ``rgb_padding`` outside; an item left with too few valid pixels stays as it was."""
    _, _, H, W, _ = item["xyz"].shape
    new_xyz, valid, visible, instance = resample_trajectories(
        item["xyz"], item["valid"], item["visible"], item["instance"], source, rays, rotation
    )
    out = {**item, "xyz": new_xyz, "valid": valid, "visible": visible, "instance": instance}
    if new_K is not None:
        out["K"] = new_K.to(item["K"].dtype)
    if "seen_xyz" in item:  # the observed reference XYZ, resampled with its own validity
        observed = item["observed"]
        seen = resample_trajectories(
            item["seen_xyz"], observed, observed[:, None], item["instance"], source, rays, rotation
        )
        out["seen_xyz"], out["observed"] = seen[0], seen[1]
    if "rgb" in item:
        uv = torch.nan_to_num(source, nan=-10.0)
        grid = torch.stack([2 * uv[..., 0] / (W - 1) - 1, 2 * uv[..., 1] / (H - 1) - 1], -1)
        rgb = F.grid_sample(
            item["rgb"].double(), grid, mode="bilinear", padding_mode=rgb_padding, align_corners=True
        )
        out["rgb"] = rgb.to(item["rgb"].dtype)
    if "ref_from_cam" in item and rotation is not None:
        out["ref_from_cam"] = torch.stack(
            [_conjugate(poses, r) for poses, r in zip(item["ref_from_cam"], rotation, strict=True)]
        )
    keep = valid.flatten(1).float().mean(1) >= MIN_CROP_VALID
    return {
        key: torch.where(keep.view(-1, *[1] * (value.dim() - 1)), value, item[key])
        for key, value in out.items()
    }


def _crop(item: dict[str, Tensor], zoom: Tensor, corner: Tensor) -> dict[str, Tensor]:
    """Returns the items (batched, B leading) cropped to windows of ``zoom`` (B,) x their size at
    left/top edges ``corner`` (B, 2) (continuous pixel coordinates, pixel ``u`` covering
    ``[u - 0.5, u + 0.5)``), resampled back; an item whose crop keeps too few valid pixels stays."""
    K = item["K"].double()
    zoom, corner = zoom.to(K.device, torch.float64), corner.to(K.device, torch.float64)
    new_K = K.clone()
    new_K[:, 0, 0], new_K[:, 1, 1] = K[:, 0, 0] / zoom, K[:, 1, 1] / zoom
    new_K[:, 0, 2] = (K[:, 0, 2] - corner[:, 0]) / zoom - 0.5
    new_K[:, 1, 2] = (K[:, 1, 2] - corner[:, 1]) / zoom - 0.5
    _, _, H, W, _ = item["xyz"].shape
    v, u, rays = _pixels_and_rays(new_K, H, W)
    z, x, y = zoom[:, None, None], corner[:, 0, None, None], corner[:, 1, None, None]
    source = torch.stack([x + (u + 0.5) * z, y + (v + 0.5) * z], -1)  # (B, H, W, 2)
    return _resampled(item, source, rays, None, "border", new_K)


def _turn_camera(item: dict[str, Tensor], new_from_old: Tensor) -> dict[str, Tensor]:
    """Returns the items (batched, B leading) seen by their cameras turned by ``new_from_old``
    (B, 3, 3) about their centres, ``K`` kept; an item left with too few valid pixels stays."""
    K = item["K"].double()
    _, _, H, W, _ = item["xyz"].shape
    _, _, rays = _pixels_and_rays(K, H, W)  # the new pixels' rays
    rotation = new_from_old.to(K.device, torch.float64)
    old_rays = rays @ rotation[:, None]  # R^T r for every row r
    fx, fy, cx, cy = (K[:, i, j, None, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    depth = old_rays[..., 2]
    source = torch.stack([fx * old_rays[..., 0] / depth + cx, fy * old_rays[..., 1] / depth + cy], -1)
    source = torch.where((depth > 1e-6)[..., None], source, torch.nan)  # behind the old camera: unseen
    return _resampled(item, source, rays, rotation, "zeros")


def _turn_and_flip(item: dict[str, Tensor], quarter_turns: int, flip: bool) -> dict[str, Tensor]:
    """Returns the items (batched, B leading) turned by ``quarter_turns`` x 90 degrees
    counter-clockwise, then mirrored left-right when ``flip``; exact index permutations."""
    item = dict(item)
    xyz, K = item["xyz"], item["K"].double()
    new_from_old = torch.eye(3, dtype=torch.float64, device=xyz.device)
    quarter = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    for _ in range(quarter_turns):
        if "seen_xyz" in item:
            item["seen_xyz"] = _quarter_turn(item["seen_xyz"], K, xyz.shape[3])[0]
        xyz, K = _quarter_turn(xyz, K, xyz.shape[3])
        new_from_old = quarter.to(xyz.device) @ new_from_old
        pixel_keys = (("valid", (1, 2)), ("observed", (1, 2)), ("instance", (1, 2)), ("visible", (2, 3)))
        for key, dims in (*pixel_keys, ("rgb", (2, 3))):
            if key in item:
                item[key] = torch.rot90(item[key], 1, dims=dims)
    if flip:
        xyz = torch.flip(xyz, dims=(3,)) * xyz.new_tensor([-1.0, 1.0, 1.0])
        if "seen_xyz" in item:
            item["seen_xyz"] = torch.flip(item["seen_xyz"], dims=(3,)) * xyz.new_tensor([-1.0, 1.0, 1.0])
        K = K.clone()
        K[:, 0, 2] = xyz.shape[3] - 1 - K[:, 0, 2]
        new_from_old = torch.diag(new_from_old.new_tensor([-1.0, 1.0, 1.0])) @ new_from_old
        for key in ("valid", "observed", "instance", "visible", "rgb"):
            if key in item:
                item[key] = torch.flip(item[key], dims=(-1,))
    item["xyz"], item["K"] = xyz, K.to(item["K"].dtype)
    if "ref_from_cam" in item:
        item["ref_from_cam"] = _conjugate(item["ref_from_cam"], new_from_old)
    return item


def _draws(batch: Mapping[str, Any], generator, seed: int, stream: int, count: int) -> Tensor:
    """Returns (B, count) float64 uniform draws: from ``generator``, else each item's own generator
    seeded by ``seed``, its stream position and ``stream``."""
    if generator is not None:
        return torch.rand(len(batch["center"]), count, generator=generator, dtype=torch.float64)
    seeds = [item_seed(seed, position, stream) for position in batch[ITEM_POSITION].tolist()]
    return torch.stack([torch.rand(count, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                        for s in seeds])  # fmt: skip


def _holes(draws: Tensor, valid: Tensor, probability: float) -> Tensor:
    """Returns (B, H, W) bool: the pixels of each item that ``draws`` (B, 7) in [0, 1) make a hole
    (see the module docstring); none where the item would keep too few valid pixels."""
    apply, kind, side, width, cx, cy, radius = (d.view(-1, 1, 1) for d in draws.to(valid.device).unbind(1))
    _, H, W = valid.shape
    v = ((torch.arange(H, dtype=torch.float64, device=valid.device) + 0.5) / H).view(1, H, 1)
    u = ((torch.arange(W, dtype=torch.float64, device=valid.device) + 0.5) / W).view(1, 1, W)
    vv, uu = v.expand(1, H, W), u.expand(1, H, W)
    to_edge = torch.stack([vv, 1 - vv, uu, 1 - uu])  # (4, 1, H, W): top, bottom, left, right
    edge = to_edge[(side.view(-1) * 4).long().clamp(max=3), 0]  # (B, H, W)
    band = edge < 0.05 + 0.35 * width
    disc = (u - cx).square() + (v - cy).square() < (0.05 + 0.2 * radius).square()
    hole = (apply < probability) & torch.where(kind < 0.5, band, disc)
    enough = (valid & ~hole).flatten(1).float().mean(1) >= MIN_CROP_VALID
    return hole & enough.view(-1, 1, 1)


def _rows(item: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    return {key: value[rows] for key, value in item.items()}


def _put_rows(item: dict[str, Tensor], rows: Tensor, part: dict[str, Tensor]) -> None:
    """Writes ``part`` (the items at ``rows``, transformed) back into ``item``, in place."""
    for key, value in item.items():
        value[rows] = part[key].to(value.dtype)


def augment_batch(
    batch: Mapping[str, Any],
    generator: torch.Generator | None = None,
    *,
    seed: int = 0,
    rotate: bool = True,
    flip: bool = True,
    crop_probability: float = 0.5,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    holes_probability: float = 0.0,
    turn_probability: float = 0.0,
    turn_degrees: tuple[float, float] = (45.0, 20.0),
) -> dict[str, Any]:
    """Returns an augmented copy of ``batch`` (see the module docstring); ``batch`` is not changed.

    ``batch`` holds ``momap`` (B, 3T, H, W) or only ``xyz0`` (B, 3, H, W) in model range, plus
    ``AUGMENT_KEYS``; ``visible`` (B, T, H, W), ``rgb`` (B, 3, H, W), ``ref_from_cam`` (B, T, 4, 4)
    and ``observed`` (B, H, W) are transformed when present; with ``observed``, ``xyz0`` is the
    observed reference XYZ (a sensor's, ``model_inputs(momap, observed_depth)``), transformed on its
    own and normalising the item as ``model_inputs`` does. Random choices are drawn on the CPU, so
    they are the same on every device: from ``generator`` when given, else per item from a generator seeded by
    ``seed`` and the item's position in the run's stream (``ITEM_POSITION``, which
    ``batch_stream`` adds), so an item is augmented alike whatever the number of processes, the
    accumulation steps or the resume point. The items are transformed together (the crops in one
    resampling pass, the turns and flips once per distinct choice), each exactly as it would be alone.
    """
    if generator is None and ITEM_POSITION not in batch:
        raise ValueError(f"batch: without a generator, augmentation needs {ITEM_POSITION!r} (batch_stream)")
    main = "momap" if "momap" in batch else "xyz0"
    missing = [key for key in (main, *AUGMENT_KEYS) if key not in batch]
    if missing:
        raise ValueError(f"batch: augmentation needs the keys {missing} (momaplib.data.model_inputs items)")
    B, C, H, W = batch[main].shape
    unknown = [
        key for key, value in batch.items()
        if isinstance(value, Tensor) and value.dim() >= 3 and tuple(value.shape[-2:]) == (H, W)
        and key not in _SPATIAL
    ]  # fmt: skip
    if unknown:
        raise ValueError(f"batch: augment_batch does not know how to transform the per-pixel keys {unknown}")
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale: expected 0 < low <= high <= 1, got {crop_scale}")
    if not all(0 <= d <= 90 for d in turn_degrees) or len(turn_degrees) != 2:
        raise ValueError(f"turn_degrees: expected (roll, tilt) in [0, 90] degrees, got {turn_degrees}")
    for name, value in (
        ("crop_probability", crop_probability), ("holes_probability", holes_probability),
        ("turn_probability", turn_probability),
    ):  # fmt: skip
        if not 0 <= value <= 1:
            raise ValueError(f"{name}: expected a probability in [0, 1], got {value}")
    T = C // 3
    separate_xyz0 = main == "momap" and "xyz0" in batch and "observed" in batch
    draws = _draws(batch, generator, seed, AUGMENT_STREAM, 6)
    crop_draw, scale_draw, x_draw, y_draw, flip_draw, turn_draw = draws.unbind(1)
    center, scale = batch["center"].double(), batch["scale"].double()

    def own(key: str, dtype: torch.dtype | None = None) -> Tensor:  # a copy: rows are written in place
        return batch[key].to(dtype or batch[key].dtype, copy=True)

    item: dict[str, Tensor] = {
        "xyz": denormalize_xyz(channels_to_xyz(batch[main].double()), center, scale),
        "valid": own("valid", torch.bool), "instance": own("instance"), "K": own("K"),
        "visible": own("visible", torch.bool) if "visible" in batch else own("valid", torch.bool)[:, None],
    }  # fmt: skip
    for key in ("rgb", "ref_from_cam"):
        if key in batch:
            item[key] = own(key)
    if separate_xyz0:  # a sensor's reference XYZ (model_inputs with observed depth)
        item["observed"] = own("observed", torch.bool)
        item["seen_xyz"] = denormalize_xyz(channels_to_xyz(batch["xyz0"].double()), center, scale)
    cropped = torch.nonzero(crop_draw < crop_probability).flatten()
    if len(cropped):
        zoom = low + (high - low) * scale_draw[cropped]
        corner = torch.stack(
            [-0.5 + x_draw[cropped] * (1 - zoom) * W, -0.5 + y_draw[cropped] * (1 - zoom) * H], -1
        )
        _put_rows(item, cropped.to(item["xyz"].device), _crop(_rows(item, cropped), zoom, corner))
    if turn_probability:
        apply, roll, pitch, yaw = _draws(batch, generator, seed, TURN_STREAM, 4).unbind(1)
        tilted = torch.nonzero(apply < turn_probability).flatten()
        if len(tilted):
            degrees = (torch.stack([roll, pitch, yaw], 1)[tilted] * 2 - 1) * roll.new_tensor(
                [turn_degrees[0], turn_degrees[1], turn_degrees[1]]
            )
            rotation = torch.from_numpy(np.stack([camera_rotation(*angles) for angles in degrees.tolist()]))
            rows = tilted.to(item["xyz"].device)
            _put_rows(item, rows, _turn_camera(_rows(item, rows), rotation))
    turns = (turn_draw * 4).long().clamp(max=3) if rotate else torch.zeros(B, dtype=torch.long)
    turns = turns if H == W else 2 * (turns % 2)  # a quarter turn would change the image size
    flips = flip_draw < 0.5 if flip else torch.zeros(B, dtype=torch.bool)
    for choice in sorted(set(zip(turns.tolist(), flips.tolist(), strict=True)) - {(0, False)}):
        rows = torch.nonzero((turns == choice[0]) & (flips == choice[1])).flatten().to(item["xyz"].device)
        _put_rows(item, rows, _turn_and_flip(_rows(item, rows), *choice))
    if holes_probability:
        hole = _holes(_draws(batch, generator, seed, HOLES_STREAM, 7), item["valid"], holes_probability)
        item["valid"] = item["valid"] & ~hole
        item["visible"] = item["visible"] & item["valid"][:, None]
        if "observed" in item:
            item["observed"] = item["observed"] & ~hole
    if separate_xyz0:  # normalised by the observed reference XYZ, as model_inputs does
        new_center, new_scale = normalization_stats(item["seen_xyz"][:, 0], item["observed"])
    else:
        new_center, new_scale = normalization_stats(item["xyz"][:, 0], item["valid"])
    valid = item["valid"][:, None, ..., None]
    channels = xyz_to_channels(torch.where(valid, normalize_xyz(item["xyz"], new_center, new_scale), 0.0))
    new = {main: channels, "center": new_center, "scale": new_scale}
    if separate_xyz0:
        seen = normalize_xyz(item["seen_xyz"], new_center, new_scale)
        new["xyz0"] = xyz_to_channels(torch.where(item["observed"][:, None, ..., None], seen, 0.0))
    elif main == "momap":
        new["xyz0"] = channels[:, :3]
    new["observed"] = item.get("observed", item["valid"])
    new.update({key: item[key] for key in ("valid", "instance", "K", "rgb", "ref_from_cam") if key in item})
    new["visible"] = item["visible"][:, :T]
    # every tensor of the result is new: the transformed ones, and copies of those passed through
    return {
        key: new[key].to(value.dtype)
        if key in new
        else (value.clone() if isinstance(value, Tensor) else value)
        for key, value in batch.items()
    }


def augmented_loss(loss_fn, seed: int, **options: Any):
    """Returns ``loss_fn(model, batch, step)`` that first augments ``batch`` (``augment_batch`` with
    ``options``), each item seeded by ``seed`` and its position in the run's item stream."""

    def wrapped(model: torch.nn.Module, batch: dict[str, Any], step: int):
        return loss_fn(model, augment_batch(batch, seed=seed, **options), step)

    return wrapped


def procedural_count(num_items: int, fraction: float) -> int:
    """Returns how many procedural items make up ``fraction`` of a stream with ``num_items`` others."""
    if not 0 <= fraction < 1 or not math.isfinite(fraction):
        raise ValueError(f"procedural_fraction: expected 0 <= fraction < 1, got {fraction!r}")
    return round(fraction / (1 - fraction) * num_items)


def with_procedural(
    dataset: torch.utils.data.Dataset,
    fraction: float,
    shape: tuple[int, int, int],
    config: TrainConfig,
    keys: Sequence[str] | None = None,
) -> torch.utils.data.Dataset:
    """Returns ``dataset`` followed by ``procedural_count(len(dataset), fraction)`` procedural MoMaps of
    ``shape`` (T, H, W) (``ProceduralDataset``, training seeds), or ``dataset`` itself for ``fraction``
    0. An ``InMemoryDataset`` gets the procedural items generated once (``config.num_workers``
    processes) and stored alongside (``keys``, default its own); any other is concatenated and
    generates them on access."""
    count = procedural_count(len(dataset), fraction)
    if count == 0:
        return dataset
    procedural = ProceduralDataset(count, *shape)
    if not isinstance(dataset, InMemoryDataset):
        return torch.utils.data.ConcatDataset([dataset, procedural])
    keys = list(keys) if keys is not None else [*dataset.tensors, *dataset.lists]
    floating = [v.dtype for k, v in dataset.tensors.items() if v.is_floating_point()]
    stored = [v.dtype for k, v in dataset.tensors.items() if k not in InMemoryDataset.FLOAT32_KEYS]
    dtype = next((d for d in stored if d in floating), None)
    loaded = InMemoryDataset.load(
        procedural, keys=keys, dtype=dtype or torch.float16, device=config.in_memory_device,
        num_workers=config.num_workers, progress=config.progress, desc="procedural clips",
    )  # fmt: skip
    tensors = {
        key: torch.cat([value, loaded.tensors[key].to(value.device)])
        for key, value in dataset.tensors.items()
    }
    lists = {key: [*value, *loaded.lists[key]] for key, value in dataset.lists.items()}
    return InMemoryDataset(tensors, lists)


__all__ = ["AUGMENT_KEYS", "augment_batch", "augmented_loss", "procedural_count", "with_procedural"]
