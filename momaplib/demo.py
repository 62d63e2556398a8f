"""``python -m momaplib.demo`` (what ``make demo`` runs): generate MoMaps for example scenes.

The example scenes are MoMap-Sim clips fixed by their seed (one per scene family; a clip is a
function of its config and seed, so the examples need no files). For each, the demo draws the
``momaplib.viz`` figures of the ground-truth MoMap, samples ``--num-samples`` futures from the
bundled ``momap-diffusion`` pipeline with the clip's prompt, draws them (trajectory images, a GIF,
a 3D plot) and writes the best-of-N metrics table, all under ``--out`` (default
``outputs/demo/``) with a ``README.txt`` that lists every file.

    python -m momaplib.demo                 # 128x128, T = 32, both families (about a minute on CPU)
    python -m momaplib.demo --smoke         # 32x32, T = 8, a few seconds
    python -m momaplib.demo --seed 3 --out outputs/demo_seed3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib
import tyro
from tqdm.auto import tqdm

from momaplib import viz
from momaplib.sim import Clip, SimConfig, generate_clip


@dataclass
class DemoConfig:
    """What the demo simulates and draws; every field is also a command-line flag."""

    out: Path = Path("outputs/demo")
    """Folder the figures, animations and README.txt are written to (created if missing)."""
    smoke: bool = False
    """Tiny clips (32x32, T = 8, ``SimConfig.smoke``) for a quick check."""
    families: tuple[Literal["tabletop", "egocentric"], ...] = ("tabletop", "egocentric")
    """Scene families to simulate, one clip each."""
    seed: int = 0
    """Seed of every clip (a clip is a function of its config and seed)."""
    height: int = 128
    """Image height in pixels (ignored with --smoke)."""
    width: int = 128
    """Image width in pixels (ignored with --smoke)."""
    num_frames: int = 32
    """Frames T per clip and MoMap (ignored with --smoke)."""
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
    guidance_scale: float = 2.0
    """Classifier-free guidance on the prompt."""

    def sim_config(self, family: str) -> SimConfig:
        """Returns the simulator config of ``family`` for this demo."""
        config = SimConfig(family=family, height=self.height, width=self.width, num_frames=self.num_frames)
        return config.smoke() if self.smoke else config

    def run(self) -> list[Path]:
        """Simulates one clip per family, writes its figures and a README.txt; returns the paths."""
        self.out.mkdir(parents=True, exist_ok=True)
        listing: list[tuple[Path, str]] = []
        generate = self.pipeline is not None and not self.smoke
        per_clip = 1 + _FIGURES_PER_CLIP + (_GENERATED_PER_CLIP if generate else 0)
        panel, runs = None, {}
        with tqdm(total=len(self.families) * per_clip, desc="demo", unit="step") as progress:
            for family in self.families:
                progress.set_postfix_str(f"{family}: simulate")
                clip = generate_clip(self.seed, self.sim_config(family))
                progress.update()
                stem = self.out / f"{family}_seed{self.seed}"
                listing += _write_figures(clip, stem, self, progress)
                if generate:
                    if panel is None:
                        from momaplib.widgets import SamplingPanel

                        panel = SamplingPanel(self.pipeline)
                    progress.set_postfix_str(f"{family}: sample {self.num_samples} futures")
                    runs[family], written = _write_samples(panel, clip, stem, self, progress)
                    listing += written
        if runs:
            from momaplib.evaluation import write_table
            from momaplib.widgets import best_of_n_table

            table = best_of_n_table(runs)
            _, md_path = write_table(table, self.out / "metrics")
            listing.append(
                (md_path, f"best-of-{self.num_samples} metrics of the generated MoMaps vs GT (also .csv)")
            )
            print(md_path.read_text())
        if any(path.suffix == ".html" for path, _ in listing):
            listing.append((self.out / "plotly.min.js", "plotly.js for the .html files (they work offline)"))
        readme = self.out / "README.txt"
        readme.write_text(_readme(self, listing))
        return [readme, *(path for path, _ in listing)]


_FIGURES_PER_CLIP = 6
_GENERATED_PER_CLIP = 3


def _write_samples(panel, clip: Clip, stem: Path, config: DemoConfig, progress: tqdm):
    """Samples futures of ``clip`` with the panel's pipeline; writes figures; returns (result, listing)."""
    from momaplib.widgets import figure_3d, sample_image_grid

    result = panel.generate(
        clip, num_samples=config.num_samples, num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale, seed=config.seed,
    )  # fmt: skip
    progress.update()
    context = f"{clip.family}: {clip.prompt!r}; {result.describe()}"
    written = []
    paths = viz.save_figure(sample_image_grid(result), f"{stem}_generated_grid.png", close=True)
    written += [(path, f"GT and generated MoMaps as trajectory images ({context})") for path in paths]
    progress.update()
    paths = viz.save_figure(figure_3d(result), f"{stem}_generated_3d.html", include_plotlyjs="directory")
    written += [(path, f"GT and generated 3D trajectories, time slider ({context})") for path in paths]
    gif = _samples_gif(result, Path(f"{stem}_generated.gif"), config)
    written.append((gif, f"animation: GT | best sample | other samples, XYZ as colour ({context})"))
    progress.update()
    return result, written


def _samples_gif(result, path: Path, config: DemoConfig) -> Path:
    """Writes an animated GIF of GT and samples side by side, XYZ in the reference frame as colour."""
    import numpy as np
    from PIL import Image

    gt, valid = result.scene.xyz, result.scene.valid
    order = [result.best, *[i for i in range(result.num_samples) if i != result.best][:2]]
    panels = [gt, *(result.xyz[i] for i in order)]  # each (T, H, W, 3)
    color_range = viz.xyz_color_range(gt, valid)  # one range: colours are comparable across panels
    frames = []
    for t in range(gt.shape[0]):
        row = [viz.xyz_to_rgb(p[t], valid, color_range) for p in panels]
        image = (np.concatenate(row, axis=1) * 255).astype(np.uint8)
        image = image.repeat(config.upscale, 0).repeat(config.upscale, 1)
        frames.append(Image.fromarray(image))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / config.fps), loop=0)
    return path


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


def _readme(config: DemoConfig, listing: list[tuple[Path, str]]) -> str:
    size = (
        "32x32, T = 8 (smoke)" if config.smoke else f"{config.height}x{config.width}, T = {config.num_frames}"
    )
    lines = [
        "momaplib demo: MoMap-Sim scenes, their ground-truth MoMaps and generated MoMaps",
        f"written by `python -m momaplib.demo`; seed {config.seed}, {size}",
        "",
    ]
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
