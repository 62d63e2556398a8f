"""Figures of MoMap diffusion (paper §3.3.3): the conditioning stack, condition and MoMap latents,
the forward noising, the prompt-grounding map, loss curves and how far samples move.

Every function returns a matplotlib ``Figure``. Latent maps are drawn with a diverging colour map
in a range symmetric about 0; maps of a probability or a distance start at 0. Arrays may be numpy
arrays or CPU/GPU tensors. ``momaplib.diffusion`` (and so diffusers) is imported only by the
functions that need it, so ``import momaplib.viz`` stays light.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

#: Tokens per prompt of the MiniLM text encoder (``momaplib.diffusion.text``).
TEXT_TOKENS = 32


def _numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu()
    return np.asarray(array)


def _image(ax, image: np.ndarray, title: str | None = None, fontsize: int = 9, **kwargs: Any):
    mappable = ax.imshow(image, interpolation="nearest", **kwargs)
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])
    return mappable


# ----------------------------------------------------------------------------- the stack (Fig. 3-B)
def plot_conditioning_stack(unet_config: Any, text_tokens: int = TEXT_TOKENS) -> Figure:
    """Returns a block diagram of what the denoising UNet reads and predicts (paper Fig. 3-B).

    ``unet_config`` has ``in_channels``, ``out_channels`` (the MoMap latent's C), ``sample_size``
    (h = w of the latent grid) and ``cross_attention_dim`` (e.g. ``pipeline.unet.config``); the
    prompt is ``text_tokens`` embeddings of that width (MiniLM: 32). The input is the noisy
    latent (C, h, w) plus 4 channels per condition image (``CONDITION_NAMES``) and, when
    ``in_channels`` has one more, the prompt-grounding map. Raises ``ValueError`` when
    ``in_channels`` fits neither.
    """
    from momaplib.diffusion.unet import CONDITION_CHANNELS, CONDITION_NAMES, GROUNDING_CHANNELS

    latent, total, h = unet_config.out_channels, unet_config.in_channels, unet_config.sample_size
    extra = total - latent - CONDITION_CHANNELS
    if extra not in (0, GROUNDING_CHANNELS):
        raise ValueError(
            f"unet_config: in_channels {total} is neither {latent} latent + {CONDITION_CHANNELS} "
            f"condition channels nor that + {GROUNDING_CHANNELS} grounding channel"
        )
    per_image = CONDITION_CHANNELS // len(CONDITION_NAMES)
    fig, ax = plt.subplots(figsize=(13, 5.4))

    def box(x, y, text, color="white", width=2.3):
        ax.add_patch(plt.Rectangle((x, y), width, 0.8, facecolor=color, edgecolor="black"))
        ax.text(x + width / 2, y + 0.4, text, ha="center", va="center", fontsize=8)

    def arrow(start, end, **style):
        ax.annotate("", end, start, arrowprops={"arrowstyle": "->", **style})

    box(5.8, 4.0, f"noisy MoMap latent $z_t$\n{latent} x {h} x {h}", "tab:orange", width=2.8)
    inputs = {  # y position: (input, latent name), in CONDITION_NAMES order
        2.8: ("reference RGB", "RGB"),
        1.7: ("instance map in\nrandom colours", "instance"),
        0.6: ("reference XYZ map\n(normalised)", "XYZ"),
    }
    for y, (name, short) in inputs.items():
        box(0, y, f"{name}\n3 x H x W")
        box(3.0, y, "frozen image VAE\nencoder", "lightgrey")
        box(6.0, y, f"{short} latent\n{per_image} x {h} x {h}", "tab:blue")
        arrow((2.3, y + 0.4), (3.0, y + 0.4))
        arrow((5.3, y + 0.4), (6.0, y + 0.4))
        arrow((8.3, y + 0.4), (9.4, 2.7))
    arrow((8.6, 4.4), (9.4, 2.7))
    box(9.4, 2.3, f"concatenate\n{total} x {h} x {h}", width=1.9)
    box(12.0, 2.3, "UNet\n(denoiser)", "tab:green", width=1.6)
    box(14.3, 2.3, f"v prediction\n{latent} x {h} x {h}", "tab:orange", width=2.1)
    arrow((11.3, 2.7), (12.0, 2.7))
    arrow((13.6, 2.7), (14.3, 2.7))
    text = f"prompt → frozen text encoder\n{text_tokens} tokens x {unet_config.cross_attention_dim}"
    box(6.0, -1.9, text, "khaki", width=3.3)
    arrow((9.3, -1.5), (12.8, 2.3), connectionstyle="angle,angleA=0,angleB=90")
    ax.text(12.95, 0.0, "cross-attention", fontsize=8)
    if extra:  # instance features + prompt tokens -> one map on the latent grid
        box(3.0, -0.65, "prompt grounder\n(per instance)", "lightgrey")
        box(6.0, -0.65, f"grounding map\n{GROUNDING_CHANNELS} x {h} x {h}", "plum")
        arrow((6.0, -1.5), (5.3, -0.45))
        arrow((1.1, 1.7), (3.6, 0.15))
        arrow((5.3, -0.25), (6.0, -0.25))
        arrow((8.3, -0.25), (9.4, 2.7))
    ax.set(xlim=(-0.2, 16.6), ylim=(-2.1, 5.0))
    ax.axis("off")
    return fig


# ----------------------------------------------------------------------------- latents
def plot_condition_latents(images: Mapping[str, Any], condition: Any) -> Figure:
    """Returns one row per condition image: the image, then its latent channels.

    ``images`` maps a title to an (H, W, 3) image (uint8, or float in [0, 1]), in the order of
    the channels of ``condition`` (C, h, w), which holds ``C / len(images)`` channels per image
    (``momaplib.diffusion.conditioning.condition_latents``: 4 each for RGB, instances, XYZ).
    Each row's latents share one colour range, symmetric about 0.
    """
    condition = _numpy(condition)
    if condition.ndim != 3 or not images or condition.shape[0] % len(images):
        raise ValueError(
            f"condition: expected (C, h, w) with C a multiple of the {len(images)} images, "
            f"got shape {condition.shape}"
        )
    per_image = condition.shape[0] // len(images)
    fig, axes = plt.subplots(
        len(images),
        1 + per_image,
        figsize=(2.2 * (1 + per_image), 2.3 * len(images)),
        squeeze=False,
        layout="constrained",
    )
    for row, (name, image) in enumerate(images.items()):
        _image(axes[row, 0], _numpy(image), name)
        latent = condition[per_image * row : per_image * (row + 1)]
        vmax = max(float(np.abs(latent).max()), 1e-6)
        for k in range(per_image):
            mappable = _image(
                axes[row, k + 1],
                latent[k],
                f"condition channel {per_image * row + k}",
                cmap="coolwarm",
                vmin=-vmax,
                vmax=vmax,
            )
        fig.colorbar(mappable, ax=list(axes[row, 1:]), fraction=0.02)
    return fig


def plot_latent_channels(
    latent: Any, vmax: float = 3.0, columns: int = 8, title: str | None = None
) -> Figure:
    """Returns a grid of the C channels of one latent (C, h, w), all in the range [-vmax, vmax]."""
    latent = _numpy(latent)
    if latent.ndim != 3:
        raise ValueError(f"latent: expected (C, h, w), got shape {latent.shape}")
    rows = -(-latent.shape[0] // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.25 * columns, 1.3 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for k, ax in enumerate(axes.flat):
        if k < latent.shape[0]:
            mappable = _image(ax, latent[k], str(k), cmap="coolwarm", vmin=-vmax, vmax=vmax)
        else:
            ax.axis("off")
    fig.colorbar(mappable, ax=axes, fraction=0.02)
    if title:
        fig.suptitle(title)
    return fig


def plot_forward_noising(
    latent: Any, scheduler: Any, timesteps: Sequence[int] = (0, 200, 400, 600, 800, 999), seed: int = 0
) -> Figure:
    """Returns one panel per timestep t: ``scheduler.add_noise`` of one latent channel (h, w).

    ``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`` with the same noise ``eps`` (drawn from
    ``seed``) in every panel; each title gives the signal weight ``sqrt(abar_t)``. All panels
    share the range [-3, 3]. ``scheduler`` is a diffusers DDPM-style scheduler (``alphas_cumprod``).
    """
    clean = torch.as_tensor(_numpy(latent), dtype=torch.float32)
    if clean.ndim != 2:
        raise ValueError(f"latent: expected one channel (h, w), got shape {tuple(clean.shape)}")
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(
        1, len(timesteps), figsize=(2 * len(timesteps), 2.5), squeeze=False, layout="constrained"
    )
    for ax, t in zip(axes[0], timesteps, strict=True):
        noisy = scheduler.add_noise(clean[None], noise[None], torch.tensor([int(t)]))[0]
        signal = float(scheduler.alphas_cumprod[int(t)].sqrt())
        title = f"t = {t}\nsignal {signal:.2f}"
        mappable = _image(ax, noisy.numpy(), title, cmap="coolwarm", vmin=-3, vmax=3)
    fig.colorbar(mappable, ax=axes, fraction=0.02)
    return fig


# ----------------------------------------------------------------------------- grounding
def plot_grounding_maps(
    rgb: Any,
    instance: Any,
    ids: Any,
    scores: Mapping[str, Any],
    latent_size: int,
    title: str = "reference RGB",
) -> Figure:
    """Returns the image, then per prompt its grounding scores painted over the instances and the
    grounding channel the UNet reads (the painting averaged to ``latent_size`` x ``latent_size``).

    ``rgb`` (H, W, 3), ``instance`` (H, W) ids, ``ids`` (K,) the instance of each score slot
    (0: empty), ``scores`` maps a panel title to (K,) probabilities (``MoMapPipeline.ground_prompts``).
    Both maps use the range [0, 1] (``momaplib.diffusion.grounding.paint_scores``).
    """
    from momaplib.diffusion.grounding import paint_scores

    instance = torch.as_tensor(_numpy(instance)).long()
    ids = torch.as_tensor(_numpy(ids)).long()
    fig, axes = plt.subplots(
        1,
        1 + 2 * len(scores),
        figsize=(2.6 * (1 + 2 * len(scores)), 3.0),
        squeeze=False,
        layout="constrained",
    )
    axes = axes[0]
    _image(axes[0], _numpy(rgb), title)
    for k, (label, probabilities) in enumerate(scores.items()):
        probabilities = torch.as_tensor(_numpy(probabilities)).float()
        if probabilities.shape != ids.shape:
            raise ValueError(
                f"scores[{label!r}]: expected {tuple(ids.shape)} like ids, got {tuple(probabilities.shape)}"
            )
        painted = [
            paint_scores(probabilities[None], ids[None], instance[None], size)[0, 0]
            for size in (tuple(instance.shape), (latent_size, latent_size))
        ]
        style = {"fontsize": 8, "cmap": "magma", "vmin": 0, "vmax": 1}
        _image(axes[1 + 2 * k], painted[0].numpy(), textwrap.fill(label, 32), **style)
        channel = f"the channel, {latent_size}x{latent_size}"
        mappable = _image(axes[2 + 2 * k], painted[1].numpy(), channel, **style)
    fig.colorbar(mappable, ax=list(axes[1:]), fraction=0.015, label="P(named instance)")
    return fig


# ----------------------------------------------------------------------------- training and samples
def plot_loss_curves(runs: Mapping[str, pd.DataFrame], smooth: int = 20) -> Figure:
    """Returns one panel per run: its ``loss`` against ``step`` (log scale), raw and smoothed.

    Each DataFrame (``momaplib.diffusion.train.read_metrics``) has ``step`` and ``loss`` columns;
    rows without a loss (validation records) are skipped. The smoothed line, the rolling mean over
    ``rows // smooth`` logged rows, is drawn over the faded raw curve where that window is longer
    than one row.
    """
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 3.4), squeeze=False, layout="constrained")
    for ax, (title, frame) in zip(axes[0], runs.items(), strict=True):
        missing = {"step", "loss"} - set(frame.columns)
        if missing:
            raise ValueError(f"runs[{title!r}]: missing columns {sorted(missing)}")
        frame = frame.dropna(subset=["loss"])
        window = max(1, len(frame) // smooth)
        ax.plot(frame["step"], frame["loss"], alpha=0.3 if window > 1 else 1.0, label="logged")
        if window > 1:
            smoothed = frame["loss"].rolling(window, min_periods=1).mean()
            ax.plot(frame["step"], smoothed, label=f"mean of {window} rows")
        ax.set(title=title, xlabel="step", ylabel="v-prediction MSE", yscale="log")
        ax.legend(fontsize=8)
    return fig


def plot_max_displacement(
    trajectories: Mapping[str, Any], valid: Any, scene_scale: float, outline: Any = None
) -> Figure:
    """Returns one panel per MoMap: how far each pixel gets from where it starts,
    ``max_t |x_t - x_0| / s``, all panels in one colour range [0, largest value].

    ``trajectories`` maps a title to xyz (T, H, W, 3) metres; ``valid`` (H, W) (invalid pixels are
    blank); ``s`` the GT's ``scene_scale``. ``outline`` (H, W) bool, e.g. the object the prompt
    names, is drawn in cyan and each title gets the mean of the map inside it.
    """
    valid = _numpy(valid).astype(bool)
    maps = {}
    for name, xyz in trajectories.items():
        xyz = _numpy(xyz)
        if xyz.ndim != 4 or xyz.shape[1:] != (*valid.shape, 3):
            raise ValueError(
                f"trajectories[{name!r}]: expected (T, {valid.shape[0]}, {valid.shape[1]}, 3), "
                f"got shape {xyz.shape}"
            )
        travel = np.linalg.norm(xyz - xyz[:1], axis=-1).max(0) / scene_scale
        maps[name] = np.where(valid, travel, np.nan)
    vmax = max(max(float(np.nanmax(m)) for m in maps.values()), 1e-6)
    fig, axes = plt.subplots(
        1, len(maps), figsize=(2.4 * len(maps) + 0.8, 2.8), squeeze=False, layout="constrained"
    )
    for ax, (name, travel) in zip(axes[0], maps.items(), strict=True):
        title = name
        if outline is not None:
            inside = _numpy(outline).astype(bool) & valid
            title += f"\noutlined: {np.nanmean(travel[inside]):.2f}" if inside.any() else ""
            ax.contour(inside, levels=[0.5], colors="cyan", linewidths=1)
        mappable = _image(ax, travel, title, cmap="magma", vmin=0, vmax=vmax)
    fig.colorbar(mappable, ax=axes, fraction=0.03, label="max_t |x_t - x_0| / s")
    return fig


__all__ = [
    "TEXT_TOKENS",
    "plot_condition_latents",
    "plot_conditioning_stack",
    "plot_forward_noising",
    "plot_grounding_maps",
    "plot_latent_channels",
    "plot_loss_curves",
    "plot_max_displacement",
]
