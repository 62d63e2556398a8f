"""Figures of the motion DSL (paper §3.4.2): each window's flags drawn over the reference image."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from momaplib.control import MotionDSL, window_frames

#: marker of the z flag at a patch centre: away from the camera (+z) and towards it (-z)
Z_MARKERS = {1: ("x", "forward"), -1: ("o", "backward")}


def plot_dsl(
    dsl: MotionDSL, image: Any, instance_map: Any, num_frames: int | None = None, title: str = ""
) -> Figure:
    """Returns one panel per window: the reference image with, at each patch centre, an arrow for
    its x/y flags (image right/down) and a marker for z (x: forward, away from the camera; o:
    backward). Patches that stay get a dot; the panel title gives the window's frames."""
    image = np.asarray(image)
    instance_map = np.asarray(instance_map)
    flags = dsl.flags()  # (P, n, 3)
    n = dsl.num_windows
    bounds = window_frames(n, dsl.window, num_frames)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
    arrow = 0.12 * max(instance_map.shape)
    for w, ax in enumerate(axes[0]):
        ax.imshow(image, alpha=0.55)
        for k, patch in enumerate(dsl.patches):
            pixels = np.argwhere(instance_map == patch.id)
            if not len(pixels):
                continue
            y, x = pixels.mean(0)
            fx, fy, fz = (int(v) for v in flags[k, w])
            colour = "crimson" if (fx, fy, fz) != (0, 0, 0) else "0.3"
            if fx or fy:
                ax.annotate(
                    "",
                    (x + fx * arrow, y + fy * arrow),
                    (x, y),
                    arrowprops={"arrowstyle": "->", "color": colour, "lw": 2},
                )
            else:
                ax.plot(x, y, ".", color=colour, ms=6)
            if fz:
                ax.plot(x, y, Z_MARKERS[fz][0], color=colour, ms=9, mfc="none", mew=2)
        start, end = bounds[w]
        ax.set_title(f"frames {start}-{end}", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title or "motion DSL: arrows x/y, x = forward, o = backward", fontsize=10)
    fig.tight_layout()
    return fig
