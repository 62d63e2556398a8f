"""Reference predictors: rows for the metric tables before any model exists, and metric checks.

Each predictor takes the GT MoMap of an input, a number of samples N and a ``torch.Generator``
(or an int seed, or None) and returns N generated MoMaps' ``xyz`` as a float32 CPU tensor
[N, T, H, W, 3] in metres, in the reference frame. Most of them cheat on purpose (they read the
GT): they bracket what the metrics can say. ``gt`` must score perfectly, ``static`` shows the
score of predicting no motion, and the perturbed ones show which metric notices which mistake.
Deterministic predictors return N identical samples.

Options of a predictor are keyword arguments; ``get_predictor("gt+noise", noise_scale=0.05)``
binds them, so every predictor is then called as ``predictor(gt, num_samples, generator)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from momaplib.geometry import umeyama
from momaplib.metrics.best_of_n import Predictor
from momaplib.momap import MoMap

#: The call signature shared by every predictor (reference and learned).


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def _repeat(xyz: np.ndarray | Tensor, num_samples: int) -> Tensor:
    """Returns [N, T, H, W, 3] float32: ``num_samples`` copies of one [T, H, W, 3] MoMap."""
    if num_samples < 1:
        raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
    xyz = torch.as_tensor(xyz, dtype=torch.float32)
    return xyz[None].repeat(num_samples, *([1] * xyz.dim()))


def static(gt: MoMap, num_samples: int = 10, generator: torch.Generator | int | None = None) -> Tensor:
    """Returns [N, T, H, W, 3]: every point stays at its reference position (nothing moves)."""
    return _repeat(np.repeat(gt.xyz[:1], gt.num_frames, axis=0), num_samples)


def ground_truth(gt: MoMap, num_samples: int = 10, generator: torch.Generator | int | None = None) -> Tensor:
    """Returns [N, T, H, W, 3]: N copies of the GT (scores perfectly on every metric)."""
    return _repeat(gt.xyz, num_samples)


def gt_noise(
    gt: MoMap,
    num_samples: int = 10,
    generator: torch.Generator | int | None = None,
    *,
    noise_scale: float = 0.01,
) -> Tensor:
    """Returns [N, T, H, W, 3]: the GT plus i.i.d. Gaussian noise of std ``noise_scale * s``.

    ``s`` is the scene scale, so ``noise_scale`` is in the metrics' units; every frame (t = 0
    too), pixel and axis gets its own draw, so static pixels start to look moving as it grows.
    """
    if noise_scale < 0:
        raise ValueError(f"noise_scale: expected >= 0, got {noise_scale}")
    samples = _repeat(gt.xyz, num_samples)
    noise = torch.randn(samples.shape, generator=_generator(generator))
    return samples + noise * (noise_scale * gt.scene_scale)


def gt_time_shift(
    gt: MoMap,
    num_samples: int = 10,
    generator: torch.Generator | int | None = None,
    *,
    shift: int | None = None,
) -> Tensor:
    """Returns [N, T, H, W, 3]: the GT delayed by ``shift`` frames (``x'_t = x_{max(t - shift, 0)}``).

    ``shift`` defaults to ``max(1, T // 8)`` frames (4 for T = 32). The path is right but late:
    plain ATE penalises it, ``ate_dtw`` much less.
    """
    shift = max(1, gt.num_frames // 8) if shift is None else shift
    if shift < 0:
        raise ValueError(f"shift: expected >= 0 frames, got {shift}")
    source_frame = (torch.arange(gt.num_frames) - shift).clamp_min(0)
    return _repeat(torch.as_tensor(gt.xyz)[source_frame], num_samples)


def constant_velocity(
    gt: MoMap, num_samples: int = 10, generator: torch.Generator | int | None = None
) -> Tensor:
    """Returns [N, T, H, W, 3]: ``x_0 + t (x_1 - x_0)``, the GT's first-frame motion extrapolated.

    An oracle-ish baseline (it reads the GT's first step) for checking trends of the metrics.
    """
    xyz = torch.as_tensor(gt.xyz)
    velocity = xyz[1] - xyz[0] if gt.num_frames > 1 else torch.zeros_like(xyz[0])
    time = torch.arange(gt.num_frames, dtype=torch.float32)[:, None, None, None]
    return _repeat(xyz[0] + time * velocity, num_samples)


def gt_wrong_object(
    gt: MoMap, num_samples: int = 10, generator: torch.Generator | int | None = None
) -> Tensor:
    """Returns [N, T, H, W, 3]: the right motion applied to a different object.

    The source is the moving object (the instance whose ``meta["instances"]`` role is
    "target" when the record has one, else the instance with the most moving pixels); it stays
    still. Its per-frame rigid motion (a least-squares fit, ``geometry.umeyama``) is applied to
    another instance about that instance's own centroid: same rotation, same centroid
    displacement. Each sample picks the other instance at random among the still ones (any
    other when none is still). Everything else is the GT. When no instance moves there is no
    motion to misplace and the samples are the GT; a record with a single instance raises.
    """
    generator = _generator(generator)
    samples = _repeat(gt.xyz, num_samples)
    valid, instance = gt.valid, gt.instance
    moving = gt.moving_mask()
    ids = [int(i) for i in np.unique(instance[valid]) if i > 0]
    if len(ids) < 2:
        raise ValueError(f"gt_wrong_object: needs at least two instances (ids > 0), found {ids}")
    moving_pixels = {i: int((moving & (instance == i)).sum()) for i in ids}
    source = _target_instance(gt, ids) or max(ids, key=lambda i: moving_pixels[i])
    if moving_pixels[source] == 0:
        return samples
    still = [i for i in ids if i != source and 2 * moving_pixels[i] < int((valid & (instance == i)).sum())]
    candidates = still or [i for i in ids if i != source]

    xyz = torch.as_tensor(gt.xyz, dtype=torch.float64)
    source_mask = torch.as_tensor(valid & (instance == source))
    source_points = xyz[:, source_mask]  # [T, S, 3]
    _, rotation, translation = umeyama(source_points[:1].expand_as(source_points), source_points)
    source_centre = source_points[0].mean(0)
    # displacement of the source's centroid under the fitted motion, per frame
    shift = (rotation @ source_centre) + translation - source_centre  # [T, 3]
    for n in range(num_samples):
        other = candidates[int(torch.randint(len(candidates), (1,), generator=generator))]
        mask = torch.as_tensor(valid & (instance == other))
        points = xyz[0, mask]  # [M, 3]
        centre = points.mean(0)
        moved = (points - centre) @ rotation.transpose(-1, -2) + centre + shift[:, None]  # [T, M, 3]
        samples[n][:, mask] = moved.float()
        samples[n][:, source_mask] = torch.as_tensor(gt.xyz[0])[source_mask]
    return samples


def _target_instance(gt: MoMap, ids: list[int]) -> int | None:
    """Returns the id whose ``meta["instances"]`` role is "target" (MoMap-Sim records), if any."""
    for key, info in gt.meta.get("instances", {}).items():
        if isinstance(info, dict) and info.get("role") == "target" and int(key) in ids:
            return int(key)
    return None


def vae_reconstruction(vae) -> Predictor:
    """Returns a predictor whose samples are the GT encoded and decoded by a MoMap VAE.

    ``vae`` is a ``momaplib.vae.MoMapVAE`` (on any device); the posterior mean is decoded, so the
    N samples are identical. A generator that hit the GT's latent exactly would score this, so
    it is about the ceiling of every model that samples in that latent space (``Ours``,
    ``MoMap-VAE``; a best-of-N pick among varied samples can land a little above it), and the
    row that shows how much of a metric the autoencoder alone gives away.
    """

    @torch.no_grad()
    def predict(gt: MoMap, num_samples: int = 10, generator: torch.Generator | int | None = None) -> Tensor:
        valid = torch.from_numpy(gt.valid)[None].to(vae.device)
        xyz = torch.from_numpy(gt.xyz)[None].to(vae.device)
        latents = vae.encode_momap(xyz, valid)
        decoded = vae.decode_momap(latents.latents, latents.center, latents.scale)[0]
        return _repeat(torch.where(valid[0, None, ..., None], decoded, 0.0).cpu(), num_samples)

    return predict


#: name -> predictor; names are the row labels of the metric tables.
PREDICTORS: dict[str, Callable[..., Tensor]] = {
    "static": static,
    "gt": ground_truth,
    "gt+noise": gt_noise,
    "gt_wrong_object": gt_wrong_object,
    "gt_time_shift": gt_time_shift,
    "constant_velocity": constant_velocity,
}


def get_predictor(name: str, **options: float) -> Predictor:
    """Returns the reference predictor ``name`` with ``options`` bound (e.g. ``noise_scale=0.05``)."""
    if name not in PREDICTORS:
        raise KeyError(f"unknown reference predictor {name!r}; expected one of {sorted(PREDICTORS)}")
    return functools.partial(PREDICTORS[name], **options) if options else PREDICTORS[name]
