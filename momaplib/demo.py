"""``python -m momaplib.demo`` (what ``make demo`` runs): generate MoMaps for example scenes.

The scenes are the example folders of ``--examples`` (default ``data/examples/``, three bundled
MoMap-Sim scenes, two tabletop and one egocentric, 128x128, T = 32): each holds what a user gives
for their own image (reference image, depth, instance map, K, prompt; layout in
``momaplib.data.examples`` and ``data/README.md``) and, optionally, the ground-truth (GT) MoMap. For
each scene the demo draws the reference image with its instances and the GT MoMap's
``momaplib.viz`` figures, samples ``--num-samples`` futures from the bundled ``momap-diffusion``
pipeline with the scene's prompt, draws them (trajectory images, a GIF, a 3D plot) and writes the
best-of-N metrics table of the scenes with a GT, all under ``--out`` (default ``outputs/demo/``)
with a ``README.txt`` that lists every file.

With ``--smoke``, ``--pipeline None`` or ``--examples None``, the scenes are MoMap-Sim clips
simulated from ``--seed`` instead (one per family of ``--families``; a clip is a function of its
config and seed, so they need no files), drawn with the video figures too (frames, depth, camera
motion). A ``--examples`` folder that does not exist or holds no example folder is an error (a
mistyped folder never turns into simulated scenes). Every setting and every example scene is checked
before anything is written: an example whose depth has holes (0, NaN, inf) runs, its holes marked
invalid; one in millimetres, or a setting out of range, stops the demo with the fix.

    python -m momaplib.demo                 # the bundled examples (about 80 s on a 2-core CPU)
    python -m momaplib.demo --examples my_scenes --scenes kitchen   # your own example folder
    python -m momaplib.demo --examples None --seed 3 --out outputs/demo_seed3   # simulated scenes
    python -m momaplib.demo --smoke         # simulated, 32x32, T = 8, no model: a few seconds
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib
import tyro
from tqdm.auto import tqdm

from momaplib import viz
from momaplib.data.examples import EXAMPLES_DIR, SCENE_FILE, Example, find_examples, load_example
from momaplib.momap import MoMap
from momaplib.sim import Clip, SimConfig, generate_clip


@dataclass
class DemoConfig:
    """What the demo runs and draws; every field is also a command-line flag."""

    out: Path = Path("outputs/demo")
    """Folder the figures, animations and README.txt are written to (created if missing)."""
    smoke: bool = False
    """Tiny simulated clips (32x32, T = 8, ``SimConfig.smoke``) and no model, for a quick check."""
    examples: Path | None = EXAMPLES_DIR
    """Folder of example scenes (``momaplib.data.examples``: one sub-folder per scene; default: the
    bundled ``data/examples``). A folder that does not exist or holds no example is an error. None,
    --smoke or --pipeline None: simulated scenes instead."""
    scenes: tuple[str, ...] = ()
    """Example folders to run, by name (default: every one in --examples)."""
    families: tuple[Literal["tabletop", "egocentric"], ...] = ("tabletop", "egocentric")
    """Scene families to simulate, one clip each (when no examples are used)."""
    seed: int = 0
    """Seed of the simulated clips (a clip is a function of its config and seed) and of the
    sampling noise."""
    height: int = 128
    """Image height in pixels of simulated scenes (ignored with --smoke)."""
    width: int = 128
    """Image width in pixels of simulated scenes (ignored with --smoke)."""
    num_frames: int = 32
    """Frames T per simulated clip and MoMap (ignored with --smoke)."""
    num_points: int = 800
    """Trajectories drawn in the 3D view (half of them on moving pixels when enough move)."""
    fps: float = 10.0
    """Frame rate of the clip animations."""
    upscale: int = 2
    """Pixel repetition of the animations, so small frames stay visible."""
    pipeline: str | None = "momap-diffusion"
    """Generative model sampled on each scene (bundled name, folder or hub id); None: simulator
    figures only. Skipped with --smoke (the bundled model is for 128x128, T = 32)."""
    num_samples: int = 10
    """Futures sampled per scene (best of N by ate_dtw is reported, as in the paper)."""
    num_inference_steps: int = 25
    """Denoising steps."""
    guidance_scale: float | None = None
    """Classifier-free guidance on the prompt (or the DSL); None: the pipeline's own default
    (``config.guidance_scale``, 2.0 for the bundled models)."""
    dsl: Path | None = None
    """A motion-DSL JSON file (``momaplib.control.MotionDSL.to_json``; docs/motion_dsl.md) that
    conditions every scene instead of its prompt, sampled with a DSL pipeline (the default
    --pipeline becomes ``momap-diffusion-dsl``). It is checked against each scene's instance map
    before anything is written."""

    def sim_config(self, family: str) -> SimConfig:
        """Returns the simulator config of ``family`` for this demo."""
        config = SimConfig(family=family, height=self.height, width=self.width, num_frames=self.num_frames)
        return config.smoke() if self.smoke else config

    def check(self) -> None:
        """Raises ``ValueError`` naming the first flag out of its range (nothing is written before)."""
        for name in ("num_samples", "num_inference_steps", "num_points", "upscale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value!r}")
        for name, low in (("fps", 0.0), ("guidance_scale", None)):
            value = getattr(self, name)
            if value is None:
                continue
            if not math.isfinite(value) or (value <= low if low is not None else value < 0):
                expected = "a finite number > 0" if low is not None else "a finite number >= 0"
                raise ValueError(f"--{name.replace('_', '-')}: expected {expected}, got {value!r}")

    @property
    def pipeline_name(self) -> str | None:
        """The pipeline sampled: --pipeline, or the bundled DSL model for --dsl with the default."""
        if self.dsl is not None and self.pipeline == "momap-diffusion":
            return "momap-diffusion-dsl"
        return self.pipeline

    def load_dsl(self, scenes: dict[str, MoMap]):
        """Returns the --dsl file's ``MotionDSL`` (None without one) after checking it against every
        scene's instance map; raises ``ValueError`` naming --dsl and the scene."""
        if self.dsl is None:
            return None
        from momaplib.control import DSLValidationError, MotionDSL

        if self.smoke or self.pipeline is None:
            raise ValueError(
                "--dsl: conditions a model's samples; it needs a pipeline (not --smoke, --pipeline None)"
            )
        path = Path(self.dsl)
        if not path.is_file():
            raise FileNotFoundError(f"--dsl {path}: no such file (a MotionDSL JSON, see docs/motion_dsl.md)")
        try:
            dsl = MotionDSL.from_json(path.read_bytes())
            for name, momap in scenes.items():
                try:
                    dsl.validate_against(momap.instance)
                except DSLValidationError as exc:
                    raise DSLValidationError(f"scene {name}: {exc}") from exc
        except DSLValidationError as exc:
            raise ValueError(f"--dsl {path}: {exc}") from exc
        return dsl

    def example_folders(self) -> dict[str, Path]:
        """Returns ``{name: folder}`` of the example scenes the demo runs ({}: it simulates).

        Raises ``FileNotFoundError`` naming ``--examples`` when that folder is missing or holds no
        example folder (the bundled default, when missing, simulates with a note instead).
        """
        if self.examples is None or self.smoke or self.pipeline is None:
            return {}
        folder = Path(self.examples)
        folders = find_examples(folder)
        if not folders:
            if folder == EXAMPLES_DIR and not folder.exists():
                print(f"demo: the bundled examples ({folder}) are not installed; simulating scenes instead")
                return {}
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"--examples {folder}: no such folder (from {Path.cwd()}); pass a folder of example "
                    "scenes (layout in data/README.md), or --examples None to simulate scenes"
                )
            if (folder / SCENE_FILE).is_file():
                raise FileNotFoundError(
                    f"--examples {folder}: is one example folder, not a folder of them; pass "
                    f"--examples {folder.parent} --scenes {folder.name}"
                )
            raise FileNotFoundError(
                f"--examples {folder}: holds no example folder (a sub-folder with {SCENE_FILE}; layout in "
                f"data/README.md); found {sorted(p.name for p in folder.iterdir())[:10]}"
            )
        unknown = [name for name in self.scenes if name not in folders]
        if unknown:
            raise ValueError(
                f"--scenes {unknown}: not example folders of {self.examples}; found {sorted(folders)}"
            )
        return {name: folders[name] for name in self.scenes} if self.scenes else folders

    def run(self) -> list[Path]:
        """Runs the example scenes (or simulates one clip per family); returns the written paths.

        Writes each scene's figures, its generated samples when the model is sampled, the
        best-of-N metrics table of the scenes with a GT and a README.txt listing every file.
        """
        self.check()
        listing: list[tuple[Path, str]] = []
        generate = self.pipeline is not None and not self.smoke
        examples = {name: _load_checked(folder) for name, folder in self.example_folders().items()}
        names = list(examples) if examples else list(self.families)
        if examples:
            scenes = {name: example.momap() for name, example in examples.items()}
        else:
            scenes = {name: generate_clip(self.seed, self.sim_config(name)) for name in names}
        dsl = self.load_dsl({name: getattr(scene, "momap", scene) for name, scene in scenes.items()})
        per_scene = 1 + (_FIGURES_PER_EXAMPLE if examples else _FIGURES_PER_CLIP)
        per_scene += _GENERATED_PER_CLIP if generate else 0
        panel, runs = None, {}
        if generate:
            from momaplib.ui import SamplingPanel

            panel = SamplingPanel(self.pipeline_name)  # a missing or corrupted model fails before any write
        self.out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(names) * per_scene, desc="demo", unit="step") as progress:
            for name in names:
                if examples:
                    progress.set_postfix_str(f"{name}: load")
                    example = examples[name]
                    scene: MoMap | Clip = scenes[name]
                    stem = self.out / name
                    progress.update()
                    listing += _write_example_figures(example, stem, self, progress)
                else:
                    progress.set_postfix_str(f"{name}: simulate")
                    scene = scenes[name]
                    progress.update()
                    stem = self.out / f"{name}_seed{self.seed}"
                    listing += _write_figures(scene, stem, self, progress)
                if generate:
                    progress.set_postfix_str(f"{name}: sample {self.num_samples} futures")
                    runs[name], written = _write_samples(panel, scene, name, stem, self, progress, dsl)
                    listing += written
        scored = {name: run for name, run in runs.items() if run.metrics is not None}
        if scored:
            from momaplib.eval import per_scene_table, write_table

            table = per_scene_table(scored)
            _, md_path = write_table(table, self.out / "metrics")
            what = f"per scene: best-of-{self.num_samples} metrics vs GT next to the static baseline"
            listing.append((md_path, f"{what}, the better method of each scene in bold (also .csv)"))
            print(md_path.read_text())
        if any(path.suffix == ".html" for path, _ in listing):
            listing.append((self.out / "plotly.min.js", "plotly.js for the .html files (they work offline)"))
        readme = self.out / "README.txt"
        readme.write_text(_readme(self, listing, bool(examples)))
        return [readme, *(path for path, _ in listing)]


_FIGURES_PER_CLIP = 6


def _load_checked(folder: Path) -> Example:
    """Returns the example of ``folder`` after the pipeline's input checks (shapes, units, ids), so a
    bad scene stops the demo before anything is written or sampled; depth holes pass (invalid)."""
    from momaplib.diffusion.inputs import prepare_scene

    example = load_example(folder)
    try:
        prepare_scene(example.image, None, example.instance, example.depth, example.K)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"example {folder}: {exc}") from exc
    return example


_FIGURES_PER_EXAMPLE = 1
_GENERATED_PER_CLIP = 3


def _write_samples(panel, scene, name: str, stem: Path, config: DemoConfig, progress: tqdm, dsl=None):
    """Samples futures of ``scene`` with the panel's pipeline (under ``dsl`` if given); writes figures;
    returns (result, listing)."""
    from momaplib.ui import figure_3d, sample_image_grid

    result = panel.generate(
        scene, num_samples=config.num_samples, num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale, seed=config.seed, dsl=dsl,
    )  # fmt: skip
    progress.update()
    condition = f"DSL {config.dsl}" if dsl is not None else repr(result.prompt)
    context = f"{name}: {condition}; {result.describe()}"
    written = []
    paths = viz.save_figure(sample_image_grid(result), f"{stem}_generated_grid.png", close=True)
    written += [(path, f"GT and generated MoMaps as trajectory images ({context})") for path in paths]
    progress.update()
    paths = viz.save_figure(figure_3d(result), f"{stem}_generated_3d.html", include_plotlyjs="directory")
    written += [(path, f"GT and generated 3D trajectories, time slider ({context})") for path in paths]
    gif = _samples_gif(result, Path(f"{stem}_generated.gif"), config)
    panels = "GT | best sample | other samples" if result.has_ground_truth else "three samples"
    written.append((gif, f"animation: {panels}, XYZ as colour ({context})"))
    progress.update()
    return result, written


def _samples_gif(result, path: Path, config: DemoConfig) -> Path:
    """Writes an animated GIF of GT and samples side by side, XYZ in the reference frame as colour.

    With a GT: GT | best sample | two others; without: the first three samples.
    """
    import numpy as np
    from PIL import Image

    valid = result.scene.valid
    if result.has_ground_truth:
        order = [result.best, *[i for i in range(result.num_samples) if i != result.best][:2]]
        panels = [result.scene.xyz, *(result.xyz[i] for i in order)]  # each (T, H, W, 3)
    else:
        panels = list(result.xyz[:3])
    color_range = viz.xyz_color_range(result.scene.xyz, valid)  # one range: colours compare across panels
    frames = []
    for t in range(panels[0].shape[0]):
        row = [viz.xyz_to_rgb(p[t], valid, color_range) for p in panels]
        image = (np.concatenate(row, axis=1) * 255).astype(np.uint8)
        image = image.repeat(config.upscale, 0).repeat(config.upscale, 1)
        frames.append(Image.fromarray(image))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / config.fps), loop=0)
    return path


def _write_example_figures(
    example: Example, stem: Path, config: DemoConfig, progress: tqdm
) -> list[tuple[Path, str]]:
    """Writes the figures of one example scene as ``{stem}_*``; returns (path, description) pairs.

    The reference image with its instances, and with a GT the GT MoMap's trajectory image and
    3D trajectories (an example has no video, so no frame, depth or camera figures).
    """
    context = f"{example.name}: {example.prompt!r}"
    overlay = viz.instance_overlay(
        example.image, example.instance, example.instance_names, title=example.prompt
    )
    paths = viz.save_figure(overlay, f"{stem}_instances.png", close=True)
    written = [(path, f"reference image with instance masks and names ({context})") for path in paths]
    if example.gt is not None:
        paths = viz.save_figure(
            viz.trajectory_image_grid(example.gt), f"{stem}_trajectory_grid.png", close=True
        )
        written += [
            (path, f"GT MoMap as a trajectory image: XYZ as colour over time (paper Fig. 2-A) ({context})")
            for path in paths
        ]
        fig_3d = viz.plot_trajectories_3d(example.gt, num_points=config.num_points)
        paths = viz.save_figure(fig_3d, f"{stem}_trajectories_3d.html", include_plotlyjs="directory")
        written += [
            (
                path,
                f"interactive 3D trajectories of the GT with a time slider (open in a browser) ({context})",
            )
            for path in paths
        ]
    progress.update()
    return written


def _write_figures(clip: Clip, stem: Path, config: DemoConfig, progress: tqdm) -> list[tuple[Path, str]]:
    """Writes the figures of one clip as ``{stem}_*``; returns (path, description) pairs."""
    context = f"{clip.family}: {clip.prompt!r}"
    written: list[tuple[Path, str]] = []

    def add(paths: list[Path], description: str) -> None:
        written.extend((path, f"{description} ({context})") for path in paths)
        progress.update()

    def png(fig, name: str) -> list[Path]:
        return viz.save_figure(fig, f"{stem}_{name}.png", close=True)

    gif = viz.save_clip_animation(
        clip, f"{stem}_clip.gif", fps=config.fps, panels=("rgb", "depth", "instance"), upscale=config.upscale
    )
    add([gif], "animation: frames | depth | instances")
    add(png(viz.plot_clip_strip(clip), "strip"), "frames, depth and instances at a few times")
    overlay = viz.instance_overlay(clip.momap.rgb, clip.momap.instance, clip.instance_info, title=clip.prompt)
    add(png(overlay, "instances"), "reference image with instance masks, names and roles")
    add(
        png(viz.trajectory_image_grid(clip), "trajectory_grid"),
        "GT MoMap as a trajectory image: XYZ as colour over time (paper Fig. 2-A)",
    )
    fig_3d = viz.plot_trajectories_3d(clip, num_points=config.num_points)
    add(
        viz.save_figure(fig_3d, f"{stem}_trajectories_3d.html", include_plotlyjs="directory"),
        "interactive 3D trajectories with a time slider (open in a browser)",
    )
    add(
        png(viz.plot_camera_disentanglement(clip), "camera_disentanglement"),
        "background motion in the MoMap (zero) vs seen from the moving camera",
    )
    return written


def _readme(config: DemoConfig, listing: list[tuple[Path, str]], examples: bool) -> str:
    if examples:
        header = [
            f"momaplib demo: the example scenes of {config.examples}/, their ground-truth MoMaps "
            "(where given) and generated MoMaps",
            f"written by `python -m momaplib.demo`; sampling seed {config.seed}",
        ]
    else:
        size = (
            "32x32, T = 8 (smoke)"
            if config.smoke
            else f"{config.height}x{config.width}, T = {config.num_frames}"
        )
        header = [
            "momaplib demo: MoMap-Sim scenes, their ground-truth MoMaps and generated MoMaps",
            f"written by `python -m momaplib.demo`; seed {config.seed}, {size}",
        ]
    lines = [*header, ""]
    lines += [f"{path.name:<48} {description}" for path, description in listing]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Parses ``argv`` (default: the process arguments), runs the demo, prints and returns the paths."""
    matplotlib.use("Agg")  # files only: never needs a display
    config = tyro.cli(DemoConfig, args=argv)
    paths = config.run()
    print(f"wrote {len(paths)} files to {config.out}/:")
    for path in paths:
        print(f"  {path}")
    return paths


if __name__ == "__main__":
    main()
