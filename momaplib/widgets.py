"""An interactive sampling panel for MoMap diffusion (paper §3.3.3) and figures of its samples.

``SamplingPanel`` holds a ``MoMapPipeline`` and samples MoMaps for one scene at a time: a
freshly simulated MoMap-Sim scene or a bundled example (``data/examples/``: an example folder of
``momaplib.examples``, or any ``*.npz`` file ``MoMap.load`` reads). ``SamplingPanel.generate``
is plain Python (notebooks, scripts, tests) and returns a ``SamplingResult``: the N samples and,
when the scene's MoMap has the samples' shape (so it is a ground truth, GT), one row of metrics
per sample (``momaplib.metrics``) and the sample the paper reports (best of N: lowest
``ate_dtw``). ``SamplingPanel.panel()`` wraps the same call in an ipywidgets UI: pick a scene,
edit the prompt, set samples / steps / guidance / seed, press Generate.

Figures of a result put the GT first and then the samples side by side, like the paper's
Fig. 5-C ("diverse generations from the same condition with different random seeds"):

- ``figure_3d``: plotly 3D trajectories, one view per MoMap, one time slider for all views;
- ``sample_image_grid``: trajectory images (XYZ as RGB in one colour range for every row);
- ``metrics_table``: metric rows x sample columns, the best value of each row in bold.

All positions are metres in the reference camera frame (x right, y down, z forward).
ipywidgets and IPython are imported only by ``panel()``, so the rest works without them.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch
from matplotlib.figure import Figure
from PIL import Image
from plotly.subplots import make_subplots

from momaplib.evaluation import CLIPS_ROW, format_table, select_best, style_table
from momaplib.examples import EXAMPLES_DIR, find_examples, load_example
from momaplib.metrics import MetricConfig, sample_metrics
from momaplib.momap import MOMAP_KEYS, TAU_MOVE, MoMap, moving_mask
from momaplib.sim import FAMILIES, SimConfig, generate_clip
from momaplib.viz import XYZ_PERCENTILES, time_controls, xyz_color_range, xyz_to_rgb

#: Names of freshly simulated scenes -> their MoMap-Sim family.
SIMULATED = {f"simulated {family}": family for family in FAMILIES}
#: Bundled example scenes are named ``EXAMPLE_PREFIX + folder name`` (or ``+ file stem``).
EXAMPLE_PREFIX = "example: "
#: Simulated scenes kept in memory (a 128x128, T = 32 MoMap is about 6 MB).
SCENE_CACHE_SIZE = 8
#: Marks the sample the paper reports (lowest ``ate_dtw``) in titles and table columns.
BEST_MARK = "★"


# ----------------------------------------------------------------------------- scenes
def find_example_scenes(folder: str | os.PathLike = EXAMPLES_DIR) -> dict[str, Path]:
    """Returns ``{scene name: path}`` of the example scenes in ``folder``.

    Those are the example folders (``momaplib.examples.find_examples``), then the ``*.npz``
    files that hold a MoMap record: only each file's table of contents is read here (a MoMap or
    MoMap-Sim clip file has every array of ``MOMAP_KEYS``); the arrays load when the scene is
    used. A missing folder gives {}.
    """
    folder = Path(folder)
    scenes = {EXAMPLE_PREFIX + name: path for name, path in find_examples(folder).items()}
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(path, allow_pickle=False) as npz:
                names = set(npz.files)
        except (OSError, ValueError, zipfile.BadZipFile):
            continue  # not an npz file: not offered
        if set(MOMAP_KEYS) <= names:
            scenes[EXAMPLE_PREFIX + path.stem] = path
    return scenes


# ----------------------------------------------------------------------------- results
@dataclass
class SamplingResult:
    """The samples of one ``SamplingPanel.generate`` call and, with a GT, their metrics."""

    scene: MoMap  # the input scene: reference image, xyz[0], instances, K; all of xyz is the GT
    samples: list[MoMap]  # N generated MoMaps (metres, reference camera frame)
    xyz: np.ndarray  # (N, T, H, W, 3) float32: the samples' trajectories
    prompt: str  # text the samples were conditioned on ("" = none)
    settings: dict[str, Any]  # num_samples, num_inference_steps, guidance_scale, seed
    metrics: pd.DataFrame | None = None  # one row per sample (index "sample"), one column per metric
    best: int | None = None  # the sample the paper reports: lowest ate_dtw (best of N)
    seconds: float = 0.0  # wall-clock time of the call (sampling and metrics)
    meta: dict[str, Any] = field(default_factory=dict)  # scene name and seed when known

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    @property
    def has_ground_truth(self) -> bool:
        """True when the scene's MoMap has the samples' shape (T, H, W, 3), so it can be scored."""
        return self.scene.num_frames > 1 and self.scene.xyz.shape == self.xyz.shape[1:]

    def describe(self) -> str:
        """Returns one line: what was sampled, how, how long it took and the best of N."""
        s = self.settings
        text = (
            f"{self.num_samples} samples for {self.prompt or '(no text)'!r} "
            f"({s['num_inference_steps']} steps, guidance {s['guidance_scale']}, seed {s['seed']}) "
            f"in {self.seconds:.1f} s"
        )
        if self.metrics is None:
            return text + "; no ground truth of the samples' shape, so no metrics"
        row = self.metrics.loc[self.best]
        return (
            f"{text}; best of {self.num_samples} (lowest ate_dtw): sample {self.best}, "
            f"ate_dtw {row['ate_dtw']:.3f}, fg_mask_iou {row['fg_mask_iou']:.3f}"
        )


def _sample_title(result: SamplingResult, index: int) -> str:
    title = f"sample {index}"
    if result.metrics is not None:
        title += f" · ate_dtw {result.metrics.loc[index, 'ate_dtw']:.3f}"
    return f"{title} {BEST_MARK}" if index == result.best else title


def _shown(result: SamplingResult, samples: Sequence[int] | None, max_samples: int) -> list[tuple]:
    """Returns ``[(title, xyz (T, H, W, 3))]``: the GT (when there is one), then the chosen samples."""
    if samples is None:
        samples = range(min(result.num_samples, max_samples))
    shown = [("ground truth", result.scene.xyz)] if result.has_ground_truth else []
    for index in samples:
        if not 0 <= index < result.num_samples:
            raise IndexError(f"samples: expected indices in [0, {result.num_samples}), got {index}")
        shown.append((_sample_title(result, index), result.xyz[index]))
    return shown


# ----------------------------------------------------------------------------- the panel
class SamplingPanel:
    """Samples MoMaps of one scene with a pipeline: ``generate`` in code, ``panel()`` as widgets.

    Args:
        pipeline: a ``MoMapPipeline`` (or ``MoMapVAEPipeline``), or what ``load_pipeline``
            accepts: a bundled checkpoint name, a folder or a hub id.
        sim_config: config of simulated scenes (its ``family`` is replaced per scene); default
            MoMap-Sim's 128x128 with the pipeline's T, the size the bundled model was trained at.
        examples_dir: folder of bundled example clips (``find_example_scenes``).
        metric_config: thresholds of the per-sample metrics.
        device: moves the pipeline there (None: leave it where it is).
    """

    def __init__(
        self,
        pipeline: Any = "momap-diffusion",
        *,
        sim_config: SimConfig | None = None,
        examples_dir: str | os.PathLike = EXAMPLES_DIR,
        metric_config: MetricConfig | None = None,
        device: str | torch.device | None = None,
    ):
        if isinstance(pipeline, (str, os.PathLike)):
            # the baseline's model class must be imported before diffusers can load its folder
            import momaplib.baselines.momap_vae  # noqa: F401
            from momaplib.diffusion.pipeline import load_pipeline

            pipeline = load_pipeline(pipeline)
        self.pipeline = pipeline if device is None else pipeline.to(device)
        self.sim_config = sim_config or SimConfig(num_frames=self.pipeline.num_frames)
        self.examples = find_example_scenes(examples_dir)
        self.metric_config = metric_config or MetricConfig()
        self.widgets: dict[str, Any] = {}  # filled by panel(), by name
        self.last_result: SamplingResult | None = None  # of the last Generate click
        self._scenes: dict[tuple[str, int], MoMap] = {}
        self._num_points = 300  # pixels of the panel's 3D views, set by panel()

    @property
    def scene_names(self) -> list[str]:
        """Returns the scenes on offer: one simulated scene per family, then the bundled examples."""
        return [*SIMULATED, *self.examples]

    def load_scene(self, name: str, seed: int = 0) -> MoMap:
        """Returns the MoMap of scene ``name`` (one of ``scene_names``).

        ``seed`` picks the simulated scene (``generate_clip(seed, ...)``) and is ignored for
        examples. An example folder gives its GT MoMap, or without one a one-frame MoMap of its
        inputs (``Example.momap``), which is not scored. Recent scenes are cached.
        """
        key = (name, int(seed) if name in SIMULATED else 0)
        if key not in self._scenes:
            if name in SIMULATED:
                config = replace(self.sim_config, family=SIMULATED[name])
                momap = generate_clip(int(seed), config).momap
            elif name in self.examples:
                path = self.examples[name]
                momap = load_example(path).momap() if path.is_dir() else MoMap.load(path)
            else:
                raise KeyError(f"scene {name!r}: expected one of {self.scene_names}")
            if len(self._scenes) >= SCENE_CACHE_SIZE:
                self._scenes.pop(next(iter(self._scenes)))
            self._scenes[key] = momap
        return self._scenes[key]

    def generate(
        self,
        scene: str | MoMap | Any,
        *,
        prompt: str | None = None,
        num_samples: int = 10,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        seed: int = 0,
        scene_seed: int = 0,
        progress: bool = False,
    ) -> SamplingResult:
        """Returns ``num_samples`` MoMaps sampled for ``scene`` and, with a GT, their metrics.

        Args:
            scene: a name of ``scene_names``, a MoMap or a MoMap-Sim ``Clip``. Its reference
                image, XYZ map (``xyz[0]`` at valid pixels), instances and K condition the
                pipeline; its whole ``xyz`` is the GT the samples are scored against.
            prompt: the text condition; None: the scene's own prompt; "": no text.
            num_samples: N futures; the paper draws 10 and reports the best.
            num_inference_steps, guidance_scale: as in ``MoMapPipeline.__call__``.
            seed: seeds the generator of the noise (and instance colours): same seed, same samples.
            scene_seed: which simulated scene (ignored for other scenes).
            progress: show the pipeline's tqdm.auto bar of denoising steps.
        """
        meta = {}
        if isinstance(scene, str):
            meta = {"scene": scene, "scene_seed": int(scene_seed) if scene in SIMULATED else None}
            scene = self.load_scene(scene, scene_seed)
        scene = getattr(scene, "momap", scene)  # a Clip carries its GT MoMap
        if not isinstance(scene, MoMap):
            raise TypeError(f"scene: expected a scene name, a MoMap or a Clip, got {type(scene).__name__}")
        prompt = scene.prompt if prompt is None else prompt
        started = time.perf_counter()
        # pixels without a trajectory carry no point: NaN tells the pipeline they are invalid
        xyz0 = np.where(scene.valid[..., None], scene.xyz[0], np.nan).astype(np.float32)
        output = self.pipeline(
            scene.rgb,
            xyz=xyz0,
            instance_map=scene.instance,
            K=scene.K,
            prompt=prompt or None,
            num_samples=num_samples,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(int(seed)),
            progress=progress,
        )
        settings = {
            "num_samples": num_samples,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "seed": int(seed),
        }
        result = SamplingResult(scene, output.momaps, output.xyz, prompt, settings, meta=meta)
        if result.has_ground_truth:
            device = getattr(self.pipeline, "device", None)
            per_sample = sample_metrics(scene, output.xyz, config=self.metric_config, device=device)
            index = pd.RangeIndex(num_samples, name="sample")
            result.metrics = pd.DataFrame(
                {name: values.numpy() for name, values in per_sample.items()}, index
            )
            result.best = select_best(per_sample)[1]
        result.seconds = time.perf_counter() - started
        return result

    # ------------------------------------------------------------------------------- widgets
    def panel(
        self,
        *,
        scene: str | None = None,
        scene_seed: int = 0,
        num_samples: int = 10,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        seed: int = 0,
        num_points: int = 300,
    ):
        """Returns the ipywidgets UI (a ``VBox``) with these starting values; see ``generate``.

        Controls: scene, scene seed (simulated scenes; "new scene" draws a fresh one), prompt
        (filled with the scene's own), samples, steps, guidance, seed and Generate. Generate
        shows a tqdm.auto progress bar and a summary line in ``widgets["log"]``, then fills
        ``widgets["results"]`` with the metrics table (with a GT), the 3D trajectories
        (``figure_3d`` with ``num_points``) and the trajectory images. Every widget is in
        ``self.widgets`` by name; the last result is ``self.last_result``.
        """
        import ipywidgets as W

        row = {"description_width": "80px"}
        w = self.widgets
        w["scene"] = W.Dropdown(
            options=self.scene_names, value=scene or self.scene_names[0], description="scene", style=row
        )
        w["scene_seed"] = W.IntText(value=scene_seed, description="scene seed", style=row)
        w["new_scene"] = W.Button(description="new scene", icon="random", tooltip="a fresh random scene")
        w["preview"] = W.Image(format="png", width=192, height=192)
        w["prompt"] = W.Textarea(
            description="prompt", placeholder="empty: no text condition", rows=2, style=row
        )
        w["num_samples"] = W.IntSlider(
            value=num_samples, min=1, max=max(16, num_samples), description="samples", style=row
        )
        w["num_inference_steps"] = W.IntSlider(
            value=num_inference_steps,
            min=1,
            max=max(100, num_inference_steps),
            description="steps",
            style=row,
        )
        w["guidance_scale"] = W.FloatSlider(
            value=guidance_scale,
            min=1.0,
            max=max(10.0, guidance_scale),
            step=0.5,
            description="guidance",
            style=row,
        )
        w["seed"] = W.IntText(value=seed, description="seed", style=row)
        w["generate"] = W.Button(description="Generate", button_style="primary", icon="play")
        w["log"] = W.Output()
        w["results"] = W.Output()
        self._num_points = num_points

        w["scene"].observe(self._on_scene, names="value")
        w["scene_seed"].observe(self._on_scene, names="value")
        w["new_scene"].on_click(self._on_new_scene)
        w["generate"].on_click(self._on_generate)
        self._on_scene()

        controls = W.VBox(
            [
                w["scene"],
                W.HBox([w["scene_seed"], w["new_scene"]]),
                w["prompt"],
                w["num_samples"],
                w["num_inference_steps"],
                w["guidance_scale"],
                w["seed"],
                w["generate"],
            ]
        )
        return W.VBox([W.HBox([w["preview"], controls]), w["log"], w["results"]])

    def _on_scene(self, _change: Any = None) -> None:
        """Loads the chosen scene: shows its reference image and puts its prompt in the text box."""
        w = self.widgets
        simulated = w["scene"].value in SIMULATED
        w["scene_seed"].disabled = w["new_scene"].disabled = not simulated
        w["log"].clear_output()
        with w["log"]:  # a scene that fails to load says why here, under the controls
            momap = self.load_scene(w["scene"].value, w["scene_seed"].value)
            w["preview"].value = _png(momap.rgb)
            w["prompt"].value = momap.prompt

    def _on_new_scene(self, _button: Any = None) -> None:
        self.widgets["scene_seed"].value = int(np.random.default_rng().integers(1_000_000))

    def _on_generate(self, _button: Any = None) -> None:
        """Samples with the widgets' values; progress and summary go to the log, figures to results."""
        w = self.widgets
        w["generate"].disabled = True
        w["log"].clear_output()
        w["results"].outputs = ()  # filled below by _append_display only, so the trait is the truth
        try:
            with w["log"]:  # tqdm.auto draws its bar here; an error shows here too
                result = self.generate(
                    w["scene"].value,
                    prompt=w["prompt"].value,
                    num_samples=w["num_samples"].value,
                    num_inference_steps=w["num_inference_steps"].value,
                    guidance_scale=w["guidance_scale"].value,
                    seed=w["seed"].value,
                    scene_seed=w["scene_seed"].value,
                    progress=True,
                )
                self.last_result = result
                print(result.describe())
                if result.metrics is not None:
                    _append_display(w["results"], metrics_table(result))
                _append_display(w["results"], figure_3d(result, num_points=self._num_points))
                grid = sample_image_grid(result)
                _append_display(w["results"], _png_display(grid))
                plt.close(grid)
        finally:
            w["generate"].disabled = False


def _png(rgb: np.ndarray) -> bytes:
    """Returns the PNG bytes of an (H, W, 3) uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="png")
    return buffer.getvalue()


def _png_display(fig: Figure):
    """Returns an IPython PNG image of a matplotlib figure (displays without a plotting backend)."""
    from IPython.display import Image as PngImage

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return PngImage(data=buffer.getvalue(), format="png")


def _append_display(output: Any, obj: Any) -> None:
    """Appends ``obj``'s rich display (HTML, PNG, plotly JSON, ...) to an ipywidgets ``Output``.

    Unlike ``with output: display(obj)``, which relies on a frontend to route the message into
    the widget, this writes the widget's ``outputs`` itself, so it also works where no frontend
    listens (tests, headless runs).
    """
    if isinstance(obj, go.Figure):
        # plotly figures display themselves (``_ipython_display_``) wherever the kernel's current
        # output is, so their bundle is built here: the plotly mime type that JupyterLab and
        # VS Code draw, and HTML (plotly.js from its CDN) for other frontends
        fig_dict = obj.to_dict()
        data = {
            **pio.renderers["plotly_mimetype"].to_mimebundle(fig_dict),
            "text/html": pio.to_html(fig_dict, include_plotlyjs="cdn", full_html=False),
            "text/plain": f"<plotly figure: {obj.layout.title.text}>",
        }
        metadata = {}
    else:
        from IPython import get_ipython
        from IPython.core.formatters import DisplayFormatter

        shell = get_ipython()
        formatter = shell.display_formatter if shell is not None else DisplayFormatter()
        data, metadata = formatter.format(obj)
    output.outputs += ({"output_type": "display_data", "data": data, "metadata": metadata},)


# ----------------------------------------------------------------------------- tables
def best_of_n_table(runs: Mapping[str, SamplingResult]) -> pd.DataFrame:
    """Returns metric rows x one column per run: the values of each run's reported sample.

    Every run needs a GT (``metrics``). Display it with ``momaplib.evaluation.style_table``.
    """
    missing = [name for name, run in runs.items() if run.metrics is None]
    if missing:
        raise ValueError(f"runs {missing} have no metrics (their scene has no ground truth)")
    table = format_table({name: run.metrics.loc[run.best].to_dict() for name, run in runs.items()})
    table = table.drop(index=CLIPS_ROW)  # one input per run: no clip count to show
    table.columns.name = "run"
    return table


def metrics_table(result: SamplingResult, decimals: int = 3):
    """Returns a pandas Styler: metric rows x sample columns, the best value of each row in bold.

    The column of the sample the paper reports (lowest ``ate_dtw``) is marked with ★.
    """
    if result.metrics is None:
        raise ValueError("metrics_table: the scene has no ground truth of the samples' shape, so no metrics")
    columns = {
        f"{i} {BEST_MARK}" if i == result.best else str(i): row.to_dict()
        for i, row in result.metrics.iterrows()
    }
    table = format_table(columns).drop(index=CLIPS_ROW)
    table.columns.name = "sample"
    return style_table(table, decimals=decimals)


# ----------------------------------------------------------------------------- 3D trajectories
def _pick_pixels(
    valid: np.ndarray, moving: np.ndarray, num_points: int, moving_fraction: float, seed: int
) -> tuple[np.ndarray, int]:
    """Returns ``(pixels (P, 2) int (v, u), M)``: up to ``num_points`` valid pixels, moving first.

    Moving pixels would be a few percent of a uniform draw, so up to ``moving_fraction`` of the
    budget goes to them (the first ``M`` rows); the rest is drawn from static pixels.
    """
    rng = np.random.default_rng(seed)
    moving_pixels, static_pixels = np.argwhere(moving), np.argwhere(valid & ~moving)
    num_moving = min(len(moving_pixels), round(moving_fraction * num_points))
    num_static = min(len(static_pixels), num_points - num_moving)
    picks = [
        moving_pixels[rng.choice(len(moving_pixels), num_moving, replace=False)],
        static_pixels[rng.choice(len(static_pixels), num_static, replace=False)],
    ]
    return np.concatenate(picks).reshape(-1, 2).astype(np.int64), num_moving


def _polylines(curves: np.ndarray) -> tuple[np.ndarray, ...]:
    """Returns x, y, z (M * (T + 1),) of curves (M, T, 3), NaN between curves (one trace for all)."""
    padded = np.concatenate([curves, np.full((len(curves), 1, 3), np.nan)], axis=1).reshape(-1, 3)
    return padded[:, 0], padded[:, 1], padded[:, 2]


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
    ``max_samples``; ★ marks the best of N). Every view draws the same pixels, picked from those
    that move (``|x_t - x_0| > tau_move * s``) in any view, plus static ones for context. Traces
    of view ``k``: ``3k`` "trajectories" (the moving pixels' curves, coloured by their reference
    RGB), ``3k + 1`` "scene at t0" (static pixels), ``3k + 2`` "points at t". One animation
    frame per time step t = 0 .. T-1 moves the points at t of every view; all views share axis
    ranges (metres, reference camera frame, seen from behind the camera with y down).
    """
    shown = _shown(result, samples, max_samples)
    scene = result.scene
    scale = scene.scene_scale
    moving = np.zeros_like(scene.valid)
    for _, xyz in shown:
        moving |= moving_mask(xyz, scene.valid, tau_move, scale=scale)
    pixels, num_moving = _pick_pixels(scene.valid, moving, num_points, moving_fraction, seed)
    v, u = pixels[:, 0], pixels[:, 1]
    colors = [f"rgb({r},{g},{b})" for r, g, b in scene.rgb[v, u]]
    curves = [xyz[:, v, u].transpose(1, 0, 2).astype(np.float64) for _, xyz in shown]  # (P, T, 3) each
    T = curves[0].shape[1]

    # One colour per curve through a colour scale with one stop per curve: plotly checks colour
    # strings one by one, which is slow for M * (T + 1) per-vertex strings.
    stops = np.linspace(0.0, 1.0, max(num_moving, 2))
    line_colors = np.repeat(stops[:num_moving], T + 1)
    colorscale = [[float(stop), colors[min(i, num_moving - 1)]] for i, stop in enumerate(stops)]
    colorscale = colorscale if num_moving else None
    fig = make_subplots(
        rows=1,
        cols=len(shown),
        specs=[[{"type": "scene"}] * len(shown)],
        subplot_titles=[title for title, _ in shown],
        horizontal_spacing=0.01,
    )
    for k, curve in enumerate(curves):
        moving_curves, static_points = curve[:num_moving], curve[num_moving:, 0]
        x, y, z = _polylines(moving_curves)
        line = {"width": 3.0, "color": "grey"}
        if colorscale:
            line.update(color=line_colors, colorscale=colorscale, cmin=0.0, cmax=1.0)
        legend = {"showlegend": k == 0}
        fig.add_trace(
            go.Scatter3d(
                x=x, y=y, z=z, mode="lines", name="trajectories", legendgroup="lines", line=line, **legend
            ),
            row=1,
            col=k + 1,
        )
        fig.add_trace(
            go.Scatter3d(
                x=static_points[:, 0],
                y=static_points[:, 1],
                z=static_points[:, 2],
                mode="markers",
                name="scene at t0",
                legendgroup="scene",
                marker={"size": 2.0, "color": colors[num_moving:], "opacity": 0.7},
                **legend,
            ),
            row=1,
            col=k + 1,
        )
        fig.add_trace(
            go.Scatter3d(
                x=moving_curves[:, 0, 0],
                y=moving_curves[:, 0, 1],
                z=moving_curves[:, 0, 2],
                mode="markers",
                name="points at t",
                legendgroup="points",
                marker={"size": 4.0, "color": colors[:num_moving], "line": {"color": "black", "width": 1}},
                **legend,
            ),
            row=1,
            col=k + 1,
        )

    # Frames carry positions only; plotly keeps the other properties of the traces they update.
    frames = []
    for t in range(T):
        data = [
            {
                "type": "scatter3d",
                "x": c[:num_moving, t, 0],
                "y": c[:num_moving, t, 1],
                "z": c[:num_moving, t, 2],
            }
            for c in curves
        ]
        frames.append(go.Frame(data=data, traces=[3 * k + 2 for k in range(len(curves))], name=str(t)))
    fig.frames = frames

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
        # behind and above the reference camera, image "up" (-y) on screen up (as momaplib.viz)
        "camera": {"up": {"x": 0, "y": -1, "z": 0}, "eye": {"x": 0.25, "y": -0.9, "z": -1.7}},
    }
    fig.update_layout({f"scene{k + 1 if k else ''}": view for k in range(len(curves))})
    fig.update_layout(
        title=f"{result.prompt or '(no text)'!r}: {len(shown)} MoMaps of the same input",
        height=view_height,
        margin={"l": 0, "r": 0, "t": 60, "b": 0},
        legend={"orientation": "h", "x": 0.0, "y": -0.02},
        **time_controls([str(t) for t in range(T)]),
    )
    return fig


# ----------------------------------------------------------------------------- trajectory images
def sample_image_grid(
    result: SamplingResult,
    num_frames: int = 6,
    max_samples: int = 4,
    samples: Sequence[int] | None = None,
    tau_move: float = TAU_MOVE,
    panel_size: float = 1.45,
) -> Figure:
    """Returns a matplotlib figure: one row per MoMap (GT first, then samples) as trajectory images.

    Column 0 is the MoMap's moving mask (``|x_t - x_0| > tau_move * s``, s from the scene), the
    others ``xyz[t]`` as colour (R, G, B = x, y, z; paper Fig. 2-A) at ``num_frames`` evenly
    spaced t, in ONE colour range for every row (that of the first row), so rows compare and a
    pixel that keeps its colour did not move. Samples as in ``figure_3d`` (default the first
    ``max_samples``).
    """
    shown = _shown(result, samples, max_samples)
    scene = result.scene
    T = shown[0][1].shape[0]
    frames = np.unique(np.linspace(0, T - 1, min(num_frames, T)).round().astype(int))
    color_range = xyz_color_range(shown[0][1], scene.valid)
    rows, cols = len(shown), 1 + len(frames)
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel_size * cols + 0.6, panel_size * rows + 0.8), squeeze=False
    )
    for r, (title, xyz) in enumerate(shown):
        mask = moving_mask(xyz, scene.valid, tau_move, scale=scene.scene_scale)
        axes[r, 0].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_ylabel(title.replace(" · ", "\n"), fontsize=8)
        for c, image in enumerate(xyz_to_rgb(xyz[frames], scene.valid, color_range), start=1):
            axes[r, c].imshow(image, interpolation="nearest")
    for c, t in enumerate(["moving mask", *(f"t = {t}" for t in frames)]):
        axes[0, c].set_title(t, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{result.prompt or '(no text)'!r}; XYZ as RGB in one range for all rows", fontsize=9)
    return fig
