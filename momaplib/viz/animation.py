"""Animations (GIF, MP4) of clips and MoMaps, and ``save_figure`` for matplotlib and plotly figures."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from PIL import Image

from momaplib.viz.colors import ANIMATION_SUFFIXES, _check_rgb, colorize_depth, colorize_instances


# ----------------------------------------------------------------------------- animation and saving
def _animation_frames(clip_or_frames: Any, panels: Sequence[str], upscale: int) -> np.ndarray:
    """Returns (T, H', W', 3) uint8 frames: the requested panels side by side, upscaled."""
    known = ("rgb", "depth", "instance")
    unknown = [p for p in panels if p not in known]
    if unknown or not panels:
        raise ValueError(f"panels: expected a non-empty subset of {known}, got {tuple(panels)}")
    if hasattr(clip_or_frames, "frames"):
        video = _check_rgb("clip.frames", clip_or_frames.frames, ndim=4)
        depth, instances = clip_or_frames.depth, clip_or_frames.instances
    else:
        video = _check_rgb("frames", clip_or_frames, ndim=4)
        if set(panels) != {"rgb"}:
            raise ValueError("panels: 'depth' and 'instance' need a clip, not a frames array")
        depth = instances = None
    images = []
    for panel in panels:
        if panel == "rgb":
            images.append(video)
        elif panel == "depth":
            images.append(colorize_depth(depth))
        else:
            images.append(colorize_instances(instances))
    T, H = video.shape[:2]
    gap = np.full((T, H, 2, 3), 255, dtype=np.uint8)  # white 2-px separator between panels
    joined = np.concatenate([part for image in images for part in (image, gap)][:-1], axis=2)
    if upscale > 1:  # nearest neighbour: small sim frames stay crisp
        joined = joined.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return joined


def save_clip_animation(
    clip_or_frames: Any,
    path: str | os.PathLike,
    fps: float = 10.0,
    panels: Sequence[str] = ("rgb",),
    upscale: int = 1,
) -> Path:
    """Writes an animation of a clip (or frames (T, H, W, 3) uint8) and returns its path.

    ``.gif`` is written with Pillow, looping; GIF delays are whole multiples of 10 ms, so each frame
    lasts ``1000 / fps`` ms rounded to 10 ms, and identical consecutive frames are merged by the
    encoder with their delays added (the timing is unchanged). ``.mp4`` (H.264) needs the
    optional package ``imageio-ffmpeg``; without it a ``RuntimeError`` says so (save a ``.gif``
    instead). ``panels`` chooses what is shown side by side: ``"rgb"``, ``"depth"`` (one turbo
    range for the clip) and ``"instance"`` (the latter two need a clip). ``upscale`` repeats pixels.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"path: expected a file ending in one of {ANIMATION_SUFFIXES}, got {path.name!r}")
    if fps <= 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    if int(upscale) < 1:
        raise ValueError(f"upscale: expected an integer >= 1, got {upscale}")
    frames = _animation_frames(clip_or_frames, panels, int(upscale))
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(
            path,
            save_all=True,
            append_images=images[1:],
            duration=10 * max(1, round(100 / fps)),
            loop=0,
            disposal=1,
        )
        return path
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RuntimeError(
            "save_clip_animation: writing .mp4 needs the optional package imageio-ffmpeg "
            "(pip install imageio-ffmpeg); or save a .gif instead"
        )
    import imageio.v2 as imageio

    # H.264 in yuv420p needs even sizes: pad with white rather than let the writer rescale.
    H, W = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), constant_values=255)
    with imageio.get_writer(
        path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p"
    ) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def save_figure(
    fig: Figure | go.Figure,
    path: str | os.PathLike,
    dpi: int = 120,
    include_plotlyjs: bool | str = True,
    close: bool = False,
) -> list[Path]:
    """Writes a figure and returns the written paths.

    Matplotlib figures go to ``path`` (PNG when it has no suffix; any suffix matplotlib knows,
    e.g. .pdf or .svg, works). Plotly figures go to ``path`` with suffix ``.html`` (interactive;
    ``include_plotlyjs`` as in ``plotly``'s ``write_html``: True embeds plotly.js, "directory" shares
    one copy next to the file, "cdn" needs internet), plus a ``.png`` when the optional package
    ``kaleido`` is installed and can render (a warning otherwise). ``close`` frees a matplotlib figure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(fig, Figure):
        path = path if path.suffix else path.with_suffix(".png")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if close:
            plt.close(fig)
        return [path]
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig: expected a matplotlib or plotly figure, got {type(fig).__name__}")
    html = path.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=include_plotlyjs, auto_play=False)
    written = [html]
    if importlib.util.find_spec("kaleido") is not None:
        png = path.with_suffix(".png")
        try:
            fig.write_image(png)
            written.append(png)
        except Exception as exc:  # kaleido needs a headless browser; the HTML is the main output
            warnings.warn(f"save_figure: no PNG for {html.name} ({exc})", stacklevel=2)
    return written
