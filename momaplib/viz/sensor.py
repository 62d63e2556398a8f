"""Figures of MoMap-Sim's sensor models: what a real camera records of a clip, against the exact one.

Each function takes the exact clip (``SimConfig(sensor="ideal")``) and clips of the same seed
under other sensors (``{"structured-light": clip, ...}``), and returns a matplotlib ``Figure``.
Depth uses the turbo colours of ``momaplib.viz`` with one range for all panels; holes (no
depth) are drawn white.
"""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from scipy import ndimage

from momaplib.sim import SENSOR_MODELS, Clip
from momaplib.sim.sensor import TriangulationDepth, depth_edges
from momaplib.viz.colors import colorize_depth

HOLE_COLOR = (255, 255, 255)


def _blank(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def edge_mask(clip: Clip) -> np.ndarray:
    """Returns the (T, H, W) bool mask of pixels within one pixel of a depth discontinuity of ``clip``."""
    edges = depth_edges(clip.depth, clip.K)
    return ndimage.binary_dilation(edges, structure=np.ones((1, 3, 3), dtype=bool))


def plot_sensor_frames(exact: Clip, observed: dict[str, Clip], t: int = 0) -> Figure:
    """Returns one column per clip (``exact`` first): frame t, its depth and the depth error.

    Rows: the colour frame; the depth (holes white); ``|z - z_exact| / z_exact`` (holes white),
    titled with the hole fraction and the median relative error of the measured pixels.
    """
    clips = {"ideal": exact, **observed}
    fig, axes = plt.subplots(3, len(clips), figsize=(2.3 * len(clips), 6.9), squeeze=False)
    exact_z = exact.depth[t]
    low, high = np.percentile(exact_z[np.isfinite(exact_z)], [1, 99])
    for column, (name, clip) in enumerate(clips.items()):
        z = clip.depth[t]
        holes = ~(np.isfinite(z) & (z > 0))
        axes[0, column].imshow(clip.frames[t])
        _blank(axes[0, column], name)
        image = colorize_depth(np.where(holes, np.nan, z), low, high)
        image[holes] = HOLE_COLOR
        axes[1, column].imshow(image)
        _blank(axes[1, column], f"depth, holes {holes.mean():.1%}")
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.abs(z - exact_z) / exact_z
        error = np.where(holes | ~np.isfinite(exact_z), np.nan, error)
        cmap = plt.get_cmap("magma").with_extremes(bad="white")
        shown = axes[2, column].imshow(np.ma.masked_invalid(error), cmap=cmap, vmin=0, vmax=0.02)
        median = np.nanmedian(error) if np.isfinite(error).any() else np.nan
        _blank(axes[2, column], f"rel. error {median:.2%}")
    fig.colorbar(shown, ax=list(axes[2]), fraction=0.02, label="|z - z_exact| / z_exact")
    fig.suptitle(f"frame {t}: depth {low:.2f}-{high:.2f} m; white = no depth", fontsize=9)
    return fig


def plot_depth_noise(exact: Clip, observed: dict[str, Clip], num_bins: int = 8) -> Figure:
    """Returns the depth noise against depth, and the hole fraction on and off depth edges.

    Left (log-log): the standard deviation of ``z - z_exact`` over measured pixels away from
    depth edges, in bins of exact depth, per sensor; dashed, the model's own
    ``z^2 sqrt(sigma_d^2 + step^2 / 12) / (f b)`` for triangulating sensors. Right: the fraction
    of pixels without depth on depth edges (``edge_mask``) and elsewhere.
    """
    edges = edge_mask(exact)
    finite = np.isfinite(exact.depth)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(observed)
    for index, (name, clip) in enumerate(observed.items()):
        color = f"C{index}"
        measured = finite & ~edges & (clip.depth > 0)
        z, error = exact.depth[measured], (clip.depth - exact.depth)[measured]
        if z.size > 10 * num_bins:
            bounds = np.quantile(z, np.linspace(0, 1, num_bins + 1))
            which = np.clip(np.searchsorted(bounds, z, side="right") - 1, 0, num_bins - 1)
            centres = np.array([np.median(z[which == b]) for b in range(num_bins)])
            stds = np.array([error[which == b].std() for b in range(num_bins)])
            left.loglog(centres, stds * 1e3, "o-", color=color, label=name)
        model = SENSOR_MODELS[name].depth if name in SENSOR_MODELS else None
        if isinstance(model, TriangulationDepth) and z.size:
            span = np.linspace(z.min(), z.max(), 20)
            step = model.disparity_step_px / np.sqrt(12)
            sigma = span**2 * np.hypot(model.disparity_noise_px, step) / (model.focal_px * model.baseline_m)
            left.loglog(span, sigma * 1e3, "--", color=color, linewidth=1)
        holes = ~(clip.depth > 0) & finite
        right.bar(index - 0.2, holes[edges].mean(), width=0.4, color=color)
        right.bar(index + 0.2, holes[~edges].mean(), width=0.4, color=color, alpha=0.4)
    left.set_xlabel("exact depth z (m)")
    left.set_ylabel("std of z - z_exact (mm)")
    left.set_title("depth noise off edges (dashed: sensor model)", fontsize=9)
    left.legend(fontsize=8)
    right.set_xticks(range(len(names)), names, fontsize=8)
    right.set_ylabel("fraction without depth")
    right.set_title("holes on depth edges (dark) and elsewhere (light)", fontsize=9)
    fig.tight_layout()
    return fig
