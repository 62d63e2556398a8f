"""``momap video`` (an app, like the demo): an example scene → sampled MoMaps → completed videos.

    momap video                                              # bundled example, 2 samples, GIF
    momap video --example data/examples/egocentric_pink_block --cameras orbit --format mp4
    momap video --use-gt                                     # render the example's GT MoMap

Each video shows, side by side, the partial render (holes black), the completed frames and the
semantic video (instance ids in colour). ``--smoke`` uses a randomly initialised tiny completion
model (no checkpoint) and the GT MoMap, for a quick check of the plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from momaplib import viz
from momaplib.checks import check_device
from momaplib.data.examples import EXAMPLES_DIR, load_example


@dataclass
class VideoJob:
    """Writes one video per sampled MoMap of an example scene (paper §3.4.1)."""

    example: Path = EXAMPLES_DIR / "tabletop_red_block_cup"
    """Example folder (``momaplib.data.examples`` layout) with the image, depth, instances and prompt."""
    pipeline: str = "momap-video"
    """MoMapVideoPipeline: bundled name, folder or hub id."""
    out: Path = Path("outputs/video")
    """Folder the videos are written to."""
    num_samples: int = 2
    """MoMaps to sample (each becomes one video)."""
    use_gt: bool = False
    """Render the example's ground-truth MoMap instead of sampling (needs a GT in the example)."""
    cameras: Literal["reference", "orbit"] = "reference"
    """Target cameras: the reference camera held still, or a swing about the scene centre."""
    num_inference_steps: int = 10
    """DDIM steps of the completion."""
    format: Literal["gif", "mp4"] = "gif"
    """Video container (mp4 needs imageio-ffmpeg)."""
    fps: float = 8.0
    """Frames per second of the written videos."""
    seed: int = 0
    """Seed of the sampling noise."""
    device: str = "cpu"
    """Torch device."""
    smoke: bool = False
    """A tiny random completion model and the GT MoMap: checks the plumbing in seconds."""

    def run(self) -> list[Path]:
        """Samples, renders, completes and writes the videos; returns their paths."""
        from momaplib.video.pipeline import MoMapVideoPipeline

        device = check_device("device", self.device)
        if self.num_samples < 1:
            raise ValueError(f"num_samples: expected >= 1, got {self.num_samples}")
        example = load_example(self.example)
        use_gt = self.use_gt or self.smoke
        if use_gt and example.gt is None:
            raise ValueError(f"use_gt: the example {self.example} has no ground-truth MoMap")
        pipe = _smoke_pipeline() if self.smoke else MoMapVideoPipeline.from_pretrained(self.pipeline)
        pipe = pipe.to(device)
        generator = torch.Generator().manual_seed(self.seed)
        kwargs = {
            "cameras": self.cameras,
            "num_inference_steps": self.num_inference_steps,
            "generator": generator,
        }
        if use_gt:
            result = pipe(momaps=[example.gt], **kwargs)
        else:
            result = pipe(
                example.image, depth=example.depth, K=example.K, instance_map=example.instance,
                prompt=example.prompt, num_samples=self.num_samples, **kwargs,
            )  # fmt: skip
        written = []
        for n in range(len(result.frames)):
            name = (
                f"{example.name or 'scene'}_{'gt' if use_gt else f'sample{n}'}_{self.cameras}.{self.format}"
            )
            panels = viz.video_panels(result.partial[n], result.frames[n], result.instance[n])
            written.append(viz.save_clip_animation(panels, self.out / name, fps=self.fps))
            print(f"wrote {written[-1]}")
        return written


def _smoke_pipeline():
    from diffusers import AutoencoderKL

    from momaplib.checkpoints import resolve_checkpoint
    from momaplib.video.model import CompletionUNet
    from momaplib.video.pipeline import MoMapVideoPipeline
    from momaplib.video.sampling import build_scheduler

    torch.manual_seed(0)
    model = CompletionUNet(
        block_out_channels=(8, 16), layers_per_block=1, attention_head_dim=8, cross_attention_dim=16,
        norm_num_groups=4,
    )  # fmt: skip
    image_vae = AutoencoderKL.from_pretrained(resolve_checkpoint("image-vae"))
    return MoMapVideoPipeline(model, image_vae, build_scheduler())
