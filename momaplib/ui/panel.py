"""An interactive sampling panel for MoMap diffusion (paper §3.3.3) and figures of its samples.

``SamplingPanel`` holds a ``MoMapPipeline`` and samples MoMaps for one scene at a time: a
freshly simulated MoMap-Sim scene or a bundled example (``data/examples/``: an example folder of
``momaplib.data.examples``, or any ``*.npz`` file ``MoMap.load`` reads). ``SamplingPanel.generate``
is plain Python (notebooks, scripts, tests) and returns a ``SamplingResult``: the N samples and,
when the scene's MoMap has the samples' shape (so it is a ground truth, GT), one row of metrics
per sample (``momaplib.metrics``) and the sample the paper reports (best of N: lowest
``ate_dtw``), and, for N >= 2, how far apart the samples are (``sample_diversity``).
``SamplingPanel.panel()`` wraps the same call in an ipywidgets UI: pick a scene,
edit the prompt, set samples / steps / guidance / seed, press Generate.

The panel shows a result with ``momaplib.viz.figure_3d`` (plotly 3D trajectories, GT first, then
the samples side by side, like the paper's Fig. 5-C), ``momaplib.viz.sample_image_grid``
(trajectory images) and ``momaplib.eval.metrics_table`` (metric rows x sample columns).

All positions are metres in the reference camera frame (x right, y down, z forward).
ipywidgets and IPython are imported only by ``panel()``, so the rest works without them.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from dataclasses import replace
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

from momaplib.data.examples import EXAMPLES_DIR, find_examples, load_example
from momaplib.eval.samples import SamplingResult, metrics_table, sample_diversity
from momaplib.metrics import MetricConfig, sample_metrics, select_best
from momaplib.momap import MOMAP_KEYS, MoMap
from momaplib.sim import FAMILIES, SimConfig, generate_clip
from momaplib.viz import figure_3d, sample_image_grid

#: Names of freshly simulated scenes -> their MoMap-Sim family.
SIMULATED = {f"simulated {family}": family for family in FAMILIES}
#: Bundled example scenes are named ``EXAMPLE_PREFIX + folder name`` (or ``+ file stem``).
EXAMPLE_PREFIX = "example: "
#: Simulated scenes kept in memory (a 128x128, T = 32 MoMap is about 6 MB).
SCENE_CACHE_SIZE = 8


# ----------------------------------------------------------------------------- scenes
def find_example_scenes(folder: str | os.PathLike = EXAMPLES_DIR) -> dict[str, Path]:
    """Returns ``{scene name: path}`` of the example scenes in ``folder``.

    Those are the example folders (``momaplib.data.examples.find_examples``), then the ``*.npz``
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
            from momaplib.diffusion.pipeline import load_pipeline

            pipeline = load_pipeline(pipeline)
        self.pipeline = pipeline if device is None else pipeline.to(device)
        self.sim_config = sim_config or SimConfig(num_frames=self.pipeline.num_frames)
        self.examples = find_example_scenes(examples_dir)
        self.metric_config = metric_config or MetricConfig()
        self.widgets: dict[str, Any] = {}  # filled by panel(), by name
        self.last_result: SamplingResult | None = None  # of the last Generate click
        self.dsl_editor = None  # the DSL editor of the current scene (DSL pipelines)
        self._scenes: dict[tuple[str, int], MoMap] = {}
        self._num_points = 300  # pixels of the panel's 3D views, set by panel()

    @property
    def default_guidance(self) -> float:
        """The pipeline's own guidance (``config.guidance_scale``; ``DEFAULT_GUIDANCE`` if it names none)."""
        from momaplib.diffusion.pipeline import DEFAULT_GUIDANCE

        return float(getattr(self.pipeline.config, "guidance_scale", None) or DEFAULT_GUIDANCE)

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
        guidance_scale: float | None = None,
        seed: int = 0,
        scene_seed: int = 0,
        progress: bool = False,
        dsl: Any = None,
    ) -> SamplingResult:
        """Returns ``num_samples`` MoMaps sampled for ``scene`` and, with a GT, their metrics.

        The result's ``diversity`` (N >= 2) is ``sample_diversity`` of the samples, with the GT
        as yardstick when there is one.

        Args:
            scene: a name of ``scene_names``, a MoMap or a MoMap-Sim ``Clip``. Its reference
                image, XYZ map (``xyz[0]`` at valid pixels), instances and K condition the
                pipeline; its whole ``xyz`` is the GT the samples are scored against.
            prompt: the text condition; None: the scene's own prompt; "": no text.
            num_samples: N futures; the paper draws 10 and reports the best.
            num_inference_steps, guidance_scale: as in ``MoMapPipeline.__call__`` (None: the
                pipeline's own default guidance).
            seed: seeds the generator of the noise (and instance colours): same seed, same samples.
            scene_seed: which simulated scene (ignored for other scenes).
            progress: show the pipeline's tqdm.auto bar of denoising steps.
            dsl: pipelines with the DSL condition: the motion DSL (``MotionDSL``, JSON text or
                pixels; see ``MoMapPipeline.__call__``); None: no DSL.
        """
        meta = {}
        if isinstance(scene, str):
            meta = {"scene": scene, "scene_seed": int(scene_seed) if scene in SIMULATED else None}
            scene = self.load_scene(scene, scene_seed)
        scene = getattr(scene, "momap", scene)  # a Clip carries its GT MoMap
        if not isinstance(scene, MoMap):
            raise TypeError(f"scene: expected a scene name, a MoMap or a Clip, got {type(scene).__name__}")
        prompt = scene.prompt if prompt is None else prompt
        guidance_scale = self.default_guidance if guidance_scale is None else guidance_scale
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
            **({"dsl": dsl} if dsl is not None else {}),
        )
        if getattr(output, "dsl", None) is not None:
            meta["dsl"] = output.dsl.to_json()
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
        if num_samples >= 2:
            gt = scene.xyz if result.has_ground_truth else None
            result.diversity = sample_diversity(
                output.xyz, scene.valid, scene.scene_scale, gt=gt, tau_move=self.metric_config.tau_move
            )
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
        guidance_scale: float | None = None,
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
        guidance_scale = self.default_guidance if guidance_scale is None else guidance_scale
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
        w["dsl"] = W.VBox([])  # the DSL editor of DSL pipelines, rebuilt per scene
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
        return W.VBox([W.HBox([w["preview"], controls]), w["dsl"], w["log"], w["results"]])

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
            self.dsl_editor = None
            if "dsl" in getattr(self.pipeline, "conditions", ()):
                self.dsl_editor = _scene_dsl_editor(self.pipeline, momap)
                w["dsl"].children = (self.dsl_editor.widget,)

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
                    dsl=self.dsl_editor.dsl() if self.dsl_editor is not None else None,
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


def _scene_dsl_editor(pipeline, momap: MoMap):
    """Returns the DSL editor of a scene, filled with its GT DSL when it has a GT (else all stay)."""
    from momaplib.control import dsl_from_momap, instance_labels
    from momaplib.ui.dsl_editor import DSLEditor

    window = pipeline.config.dsl_window
    initial = dsl_from_momap(momap, window=window) if momap.num_frames == pipeline.num_frames else None
    return DSLEditor.for_scene(
        momap.instance, instance_labels(momap), pipeline.dsl_windows, window, initial, pipeline.num_frames
    )


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
