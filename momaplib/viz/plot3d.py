"""Plotly 3D trajectories of MoMaps with a time slider: one MoMap with its cameras, or several side by
side (a result's GT and samples)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from momaplib.eval.samples import SamplingResult
from momaplib.geometry import transform_points
from momaplib.momap import TAU_MOVE, moving_mask
from momaplib.viz.colors import XYZ_PERCENTILES, _as_momap

#: 3D view from behind and above the reference camera, image "up" (-y) on screen up.
REFERENCE_VIEW = {"up": {"x": 0, "y": -1, "z": 0}, "eye": {"x": 0.25, "y": -0.9, "z": -1.7}}
#: A 3D scene in the reference camera's frame: OpenCV axes in metres, true aspect, ``REFERENCE_VIEW``.
REFERENCE_SCENE = {
    "xaxis_title": "x (right) [m]",
    "yaxis_title": "y (down) [m]",
    "zaxis_title": "z (forward) [m]",
    "aspectmode": "data",
    "camera": REFERENCE_VIEW,
}
#: Horizontal legend at the top right, on its own line under the title (``top_matter`` sets its
#: height), clear of the view titles and of the play/pause buttons and slider at the bottom.
LEGEND = {"orientation": "h", "x": 1.0, "xanchor": "right", "yanchor": "top", "yref": "container"}
#: Pixels from the figure's top edge to the title line, to the legend line and past the legend.
TITLE_TOP_PX, LEGEND_TOP_PX, LEGEND_BOTTOM_PX = 10, 40, 66
#: Pixels above the plot kept for the view titles of ``figure_3d`` (one line of 16 px text).
VIEW_TITLES_PX = 28


def _allocate(counts: np.ndarray, budget: int) -> np.ndarray:
    """Returns per-group sample counts (G,) summing to ``min(budget, counts.sum())``, as equal as
    the group sizes ``counts`` (G,) allow (small groups give their unused share to larger ones)."""
    take = np.zeros_like(counts)
    budget = int(min(budget, counts.sum()))
    while budget > take.sum():
        open_groups = np.flatnonzero(take < counts)
        share = max(1, (budget - int(take.sum())) // len(open_groups))
        for g in open_groups:
            extra = min(share, counts[g] - take[g], budget - int(take.sum()))
            take[g] += extra
    return take


def subsample_pixels(
    momap_or_clip: Any,
    num_points: int = 600,
    moving_fraction: float = 0.5,
    seed: int = 0,
    tau_move: float = TAU_MOVE,
    moving: np.ndarray | None = None,
) -> np.ndarray:
    """Returns (N, 2) int pixel coordinates ``(v, u)`` of valid pixels to draw, N <= num_points.

    Moving pixels would be a few percent of a uniform sample, so up to ``moving_fraction`` of the
    budget goes to moving pixels (``moving_mask(tau_move)``), split equally between the moving
    instances (a small moving lid gets as many points as a large moving hand); the rest is drawn
    uniformly from static pixels. Moving pixels come first; the draw is seeded. ``moving`` (H, W)
    bool replaces the MoMap's own moving mask (e.g. pixels that move in any of several MoMaps).
    """
    momap = _as_momap(momap_or_clip)
    if num_points < 1:
        raise ValueError(f"num_points: expected >= 1, got {num_points}")
    if not 0.0 <= moving_fraction <= 1.0:
        raise ValueError(f"moving_fraction: expected a value in [0, 1], got {moving_fraction}")
    rng = np.random.default_rng(seed)
    moving = momap.moving_mask(tau_move) if moving is None else np.asarray(moving, dtype=bool)
    static = momap.valid & ~moving
    picks: list[np.ndarray] = []
    moving_ids = np.unique(momap.instance[moving])
    pixels_of = [np.argwhere(moving & (momap.instance == i)) for i in moving_ids]
    counts = np.array([len(p) for p in pixels_of], dtype=np.int64)
    static_pixels = np.argwhere(static)
    # Moving pixels get their share first; any budget they cannot use goes to static pixels and back.
    moving_budget = min(round(moving_fraction * num_points), int(counts.sum()))
    static_take = min(num_points - moving_budget, len(static_pixels))
    moving_budget = min(num_points - static_take, int(counts.sum()))
    for pixels, take in zip(pixels_of, _allocate(counts, moving_budget), strict=True):
        picks.append(pixels[rng.choice(len(pixels), size=int(take), replace=False)])
    picks.append(static_pixels[rng.choice(len(static_pixels), size=static_take, replace=False)])
    return np.concatenate(picks).astype(np.int64)


def _rgb_strings(colors: np.ndarray) -> list[str]:
    return [f"rgb({r},{g},{b})" for r, g, b in np.asarray(colors, dtype=np.uint8)]


def _polylines(curves: np.ndarray) -> tuple[np.ndarray, ...]:
    """Returns x, y, z arrays (N * (T + 1),) of curves (N, T, 3) with NaN gaps between curves."""
    padded = np.concatenate([curves, np.full((len(curves), 1, 3), np.nan)], axis=1).reshape(-1, 3)
    return padded[:, 0], padded[:, 1], padded[:, 2]


def _frustum(K: np.ndarray, height: int, width: int, depth: float, pose: np.ndarray) -> np.ndarray:
    """Returns (17, 3) polyline points (NaN-separated) of a camera frustum drawn at ``depth``,
    mapped by ``pose`` (4, 4) (``ref_from_cam``) into the reference frame."""
    corners_uv = np.array(
        [[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]]
    )
    K = K.astype(np.float64)
    rays = np.stack(
        [(corners_uv[:, 0] - K[0, 2]) / K[0, 0], (corners_uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(4)], -1
    )
    corners = rays * depth
    origin = np.zeros(3)
    gap = np.full(3, np.nan)
    path = [*corners, corners[0], gap]
    for corner in corners:
        path += [origin, corner, gap]
    points = np.array(path[:-1])
    return transform_points(pose.astype(np.float64), points)


def _trajectory_traces(
    curves: np.ndarray,
    colors: Sequence[str],
    num_moving: int,
    marker_size: float,
    line_width: float,
    **trace_options: Any,
) -> list[go.Scatter3d]:
    """Returns the three traces of one 3D view of curves (P, T, 3) whose first ``num_moving`` move:
    ``"trajectories"`` (the moving curves, each in its pixel's colour), ``"scene at t0"`` (every
    point at t = 0) and ``"points at t"`` (the moving points, moved by the animation frames)."""
    moving_curves, T = curves[:num_moving], curves.shape[1]
    x, y, z = _polylines(moving_curves)
    # One colour per curve through a colour scale with one stop per curve: plotly validates colour
    # strings one by one, which would take seconds for M * (T + 1) per-vertex strings.
    stops = np.linspace(0.0, 1.0, max(num_moving, 2))
    line = {"width": line_width, "color": "grey"}
    if num_moving:
        colorscale = [[float(stop), colors[min(i, num_moving - 1)]] for i, stop in enumerate(stops)]
        line.update(color=np.repeat(stops[:num_moving], T + 1), colorscale=colorscale, cmin=0.0, cmax=1.0)
    start = curves[:, 0]
    return [
        go.Scatter3d(x=x, y=y, z=z, mode="lines", name="trajectories", line=line, **trace_options),
        go.Scatter3d(
            x=start[:, 0], y=start[:, 1], z=start[:, 2], mode="markers", name="scene at t0",
            marker={"size": marker_size, "color": list(colors), "opacity": 0.8}, **trace_options,
        ),
        go.Scatter3d(
            x=moving_curves[:, 0, 0], y=moving_curves[:, 0, 1], z=moving_curves[:, 0, 2], mode="markers",
            name="points at t", **trace_options,
            marker={"size": marker_size * 2, "color": list(colors[:num_moving]),
                    "line": {"color": "black", "width": 1}},
        ),
    ]  # fmt: skip


def plot_trajectories_3d(
    momap_or_clip: Any,
    num_points: int = 600,
    moving_fraction: float = 0.5,
    seed: int = 0,
    frame_step: int = 1,
    show_camera: bool = True,
    marker_size: float = 2.5,
    line_width: float = 4.0,
    title: str | None = None,
) -> go.Figure:
    """Returns a plotly figure of the MoMap's 3D trajectories with a time slider and play button.

    Pixels come from ``subsample_pixels`` (moving ones always represented). Traces, in order:
    0 ``"trajectories"``: curves ``xyz[:, v, u]`` of the sampled pixels that move, coloured by
    their reference RGB; 1 ``"scene at t0"``: every sampled point at t = 0; 2 ``"points at t"``:
    the moving points at the slider's frame; 3 ``"camera t"`` and 4 ``"reference camera"``
    frustums (with ``show_camera``; the camera path too when it moves). One animation frame per
    ``frame_step`` frames updates traces 2 (and 3). Axes are the reference camera's (metres):
    the view starts behind and above that camera with y pointing down and z forward, as in the
    image.
    """
    momap = _as_momap(momap_or_clip)
    if frame_step < 1:
        raise ValueError(f"frame_step: expected >= 1, got {frame_step}")
    pixels = subsample_pixels(momap, num_points, moving_fraction, seed)
    v, u = pixels[:, 0], pixels[:, 1]
    curves = momap.xyz[:, v, u].transpose(1, 0, 2).astype(np.float64)  # (N, T, 3)
    colors = momap.rgb[v, u]  # (N, 3) uint8
    moves = np.linalg.norm(curves - curves[:, :1], axis=-1).max(-1) > 1e-6 * momap.scene_scale
    color_strings = _rgb_strings(colors)
    T = momap.num_frames

    moving_curves = curves[moves]  # (M, T, 3)
    order = np.argsort(~moves, kind="stable")  # moving pixels first, as _trajectory_traces expects
    traces = _trajectory_traces(
        curves[order], [color_strings[i] for i in order], len(moving_curves), marker_size, line_width
    )
    depth = 0.15 * momap.scene_scale
    # Frustum polylines (T, 16, 3) of camera t in the reference frame.
    frustums = [_frustum(momap.K, momap.height, momap.width, depth, pose) for pose in momap.ref_from_cam]
    if show_camera:
        reference = _frustum(momap.K, momap.height, momap.width, depth, np.eye(4))
        centres = momap.ref_from_cam[:, :3, 3].astype(np.float64)
        path = np.concatenate([reference, np.full((1, 3), np.nan), centres])
        for name, points, color in (
            ("camera t", frustums[0], "crimson"),
            ("reference camera", path, "black"),
        ):
            traces.append(
                go.Scatter3d(
                    x=points[:, 0],
                    y=points[:, 1],
                    z=points[:, 2],
                    mode="lines",
                    name=name,
                    line={"color": color, "width": 3},
                )
            )

    shown = list(range(0, T, frame_step))
    if shown[-1] != T - 1:
        shown.append(T - 1)
    frames = []
    for t in shown:
        # Frames carry positions only; plotly keeps the other properties of the traces they update.
        data = [
            {
                "type": "scatter3d",
                "x": moving_curves[:, t, 0],
                "y": moving_curves[:, t, 1],
                "z": moving_curves[:, t, 2],
            }
        ]
        if show_camera:
            data.append(
                {"type": "scatter3d", "x": frustums[t][:, 0], "y": frustums[t][:, 1], "z": frustums[t][:, 2]}
            )
        frames.append(go.Frame(data=data, traces=[2, 3] if show_camera else [2], name=str(t)))
    fig = go.Figure(data=traces, frames=frames)
    fig.update_layout(
        height=620,
        **top_matter(title if title is not None else momap.prompt, 620),
        scene=REFERENCE_SCENE,
        **time_controls([str(t) for t in shown]),
    )
    return fig


def top_matter(title: str, height: int, view_titles_px: int = 0) -> dict[str, Any]:
    """Returns plotly layout entries (``title``, ``legend``, ``margin``) of a figure ``height``
    pixels high: the title on the first line of the top margin (left), the legend on the second
    (right), then ``view_titles_px`` pixels for subplot titles above the plot. The margin is fixed
    in pixels, so the lines never overlap, however wide the figure is drawn."""
    return {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "yref": "container", "yanchor": "top",
                  "y": 1 - TITLE_TOP_PX / height},
        "legend": {**LEGEND, "y": 1 - LEGEND_TOP_PX / height},
        "margin": {"l": 0, "r": 0, "b": 0, "t": LEGEND_BOTTOM_PX + view_titles_px},
    }  # fmt: skip


def time_controls(frame_names: Sequence[str]) -> dict[str, list]:
    """Returns plotly layout entries (``updatemenus``, ``sliders``): play/pause buttons and a
    ``t = ...`` slider over the figure's frames named ``frame_names``."""
    play = {"frame": {"duration": 120, "redraw": True}, "transition": {"duration": 0}, "fromcurrent": True}
    pause = {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}
    steps = [
        {
            "label": name,
            "method": "animate",
            "args": [[name], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
        }
        for name in frame_names
    ]
    buttons = [
        {"label": "▶ play", "method": "animate", "args": [None, play]},
        {"label": "❚❚ pause", "method": "animate", "args": [[None], pause]},
    ]
    # buttons left of the slider, both below the plot: neither covers the legend (top right)
    menu = {"type": "buttons", "direction": "left", "showactive": False, "x": 0.0, "y": 0.0}
    menu.update(xanchor="left", yanchor="top", pad={"t": 30})
    # the "t = ..." label at the slider's right end, never under the buttons of a narrow figure
    slider = {"active": 0, "currentvalue": {"prefix": "t = ", "xanchor": "right"}, "pad": {"t": 30}}
    return {
        "updatemenus": [{**menu, "buttons": buttons}],
        "sliders": [{**slider, "steps": steps, "x": 0.22, "len": 0.78}],
    }


def figure_3d(
    result: SamplingResult,
    num_points: int = 300,
    max_samples: int = 3,
    samples: Sequence[int] | None = None,
    moving_fraction: float = 0.7,
    tau_move: float = TAU_MOVE,
    seed: int = 0,
    view_height: int = 460,
) -> go.Figure:
    """Returns a plotly figure: the GT and samples as 3D trajectories side by side, one time slider.

    Views, left to right: the GT (when the scene has one), then ``samples`` (default the first
    ``max_samples``; ★ marks the best of N), as ``SamplingResult.views``. Every view draws the same
    pixels (``subsample_pixels``), picked from those that move (``|x_t - x_0| > tau_move * s``) in
    any view, plus static ones for context. View ``k`` has traces ``3k .. 3k + 2`` (see
    ``plot_trajectories_3d``); one animation frame per time step moves the points at t of every
    view; all views share axis ranges (metres, reference camera frame, seen from behind the
    camera with y down).
    """
    shown = result.views(samples, max_samples)
    scene = result.scene
    moving = np.zeros_like(scene.valid)
    for _, xyz in shown:
        moving |= moving_mask(xyz, scene.valid, tau_move, scale=scene.scene_scale)
    pixels = subsample_pixels(scene, num_points, moving_fraction, seed, moving=moving)
    v, u = pixels[:, 0], pixels[:, 1]
    num_moving = int(moving[v, u].sum())  # moving pixels come first
    colors = _rgb_strings(scene.rgb[v, u])
    curves = [xyz[:, v, u].transpose(1, 0, 2).astype(np.float64) for _, xyz in shown]  # (P, T, 3) each
    T = curves[0].shape[1]
    fig = make_subplots(
        rows=1,
        cols=len(shown),
        specs=[[{"type": "scene"}] * len(shown)],
        subplot_titles=[title for title, _ in shown],
        horizontal_spacing=0.01,
    )
    for k, curve in enumerate(curves):
        for trace in _trajectory_traces(curve, colors, num_moving, 2.0, 3.0, showlegend=k == 0):
            fig.add_trace(trace.update(legendgroup=trace.name), row=1, col=k + 1)
    # Frames carry positions only; plotly keeps the other properties of the traces they update.
    fig.frames = [
        go.Frame(
            data=[
                {
                    "type": "scatter3d",
                    "x": c[:num_moving, t, 0],
                    "y": c[:num_moving, t, 1],
                    "z": c[:num_moving, t, 2],
                }
                for c in curves
            ],
            traces=[3 * k + 2 for k in range(len(curves))],
            name=str(t),
        )
        for t in range(T)
    ]
    points = np.concatenate([c.reshape(-1, 3) for c in curves])
    low, high = np.nanpercentile(points, XYZ_PERCENTILES, axis=0)  # far stray points do not zoom out
    pad = 0.05 * (high - low).max()
    low, high = low - pad, high + pad
    span = (high - low) / (high - low).max()
    axes = {
        f"{axis}axis": {"range": [float(lo), float(hi)], "title": f"{axis} [m]"}
        for axis, lo, hi in zip("xyz", low, high, strict=True)
    }
    view = {
        **axes,
        "aspectmode": "manual",
        "aspectratio": dict(zip("xyz", map(float, span), strict=True)),
        "camera": REFERENCE_VIEW,
    }
    fig.update_layout({f"scene{k + 1 if k else ''}": view for k in range(len(curves))})
    title = f"{result.prompt or '(no text)'!r}: {len(shown)} MoMaps of the same input"
    fig.update_layout(
        height=view_height,
        **top_matter(title, view_height, view_titles_px=VIEW_TITLES_PX),
        **time_controls([str(t) for t in range(T)]),
    )
    return fig
