"""Figures of rendered and completed videos (paper §3.4.1)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from momaplib.viz.colors import colorize_instances


def _as_uint8(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)


def video_panels(partial: np.ndarray, frames: np.ndarray, instance: np.ndarray, gap: int = 2) -> np.ndarray:
    """Returns (T, H, 3W + 2 gap, 3) uint8: partial render | completed frames | semantic video, with
    white gaps (frames uint8 or float in [0, 1]; ``instance`` (T, H, W) ids, holes -1 shown black)."""
    partial, frames = _as_uint8(partial), _as_uint8(frames)
    semantic = colorize_instances(np.maximum(instance, 0))
    semantic[np.asarray(instance) < 0] = 0
    white = np.full((*frames.shape[:2], gap, 3), 255, np.uint8)
    return np.concatenate([partial, white, frames, white, semantic], axis=2)


def plot_video_rows(
    videos: Mapping[str, np.ndarray],
    frames: Sequence[int],
    holes: np.ndarray | None = None,
    size: float = 1.6,
) -> plt.Figure:
    """Returns a grid: one row per named video (T, H, W, 3) (uint8 or float in [0, 1]; instance
    videos (T, H, W) are coloured), one column per frame index; ``holes`` (T, H, W) are outlined in
    magenta on the first row."""
    fig, axes = plt.subplots(len(videos), len(frames), figsize=(size * len(frames), size * len(videos)))
    axes = np.atleast_2d(axes)
    for row, (name, video) in enumerate(videos.items()):
        video = np.asarray(video)
        images = colorize_instances(np.maximum(video, 0)) if video.ndim == 3 else _as_uint8(video)
        for col, t in enumerate(frames):
            ax = axes[row, col]
            ax.imshow(images[t])
            if holes is not None and row == 0 and holes[t].any():
                ax.contour(holes[t], levels=[0.5], colors="magenta", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
            if row == 0:
                ax.set_title(f"t = {t}", fontsize=8)
    fig.tight_layout()
    return fig


def video_html(frames: np.ndarray, fps: float = 8.0, width: int = 384) -> str:
    """Returns an HTML ``<img>`` of the frames (T, H, W, 3) as an inline looping GIF, to show a
    playable video in a notebook (``IPython.display.HTML``) without files or codecs."""
    images = [Image.fromarray(frame) for frame in _as_uint8(frames)]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
    )
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/gif;base64,{data}" width="{width}" style="image-rendering: pixelated">'
