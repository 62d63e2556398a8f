"""Regenerates the bundled example scenes ``data/examples/`` from MoMap-Sim seeds.

    .venv/bin/python scripts/make_examples.py                 # writes data/examples/<name>/
    .venv/bin/python scripts/make_examples.py --out /tmp/ex   # somewhere else

Each example is the reference frame of one MoMap-Sim clip at the default size (128x128,
T = 32) in the layout of ``momaplib.data.examples``, with its GT MoMap; ``scene.json`` records the
clip's family, seed and every ``SimConfig`` field under ``meta``, so
``generate_clip(meta["seed"], SimConfig(**meta["sim"]))`` gives the clip back (the tests check
it). A clip is a function of its config and seed, so the files come out the same on every run.
The seeds were picked for prompts that name a small object (a block, a cup). The script prints
each example's size and how far the stored float16 GT is from the simulator's float32 one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import tyro

from momaplib.data.examples import load_example, save_example
from momaplib.metrics import sample_metrics
from momaplib.sim import SimConfig, generate_clip

#: example name -> (MoMap-Sim family, seed); prompts in the comments
EXAMPLES = {
    "tabletop_blue_block": ("tabletop", 14),  # "push the blue block to the back"
    "tabletop_red_block_cup": ("tabletop", 5),  # "place the red block next to the white cup"
    "egocentric_pink_block": ("egocentric", 8),  # "nudge the pink block right"
}


@dataclass
class MakeExamplesConfig:
    """Where the examples go and at what size."""

    out: Path = Path("data/examples")
    """Folder of the example folders (one per entry of EXAMPLES; other sub-folders are left alone)."""
    height: int = 128
    """Image height in pixels (the bundled model's size)."""
    width: int = 128
    """Image width in pixels."""
    num_frames: int = 32
    """Frames T of the GT MoMaps (the bundled model's T)."""


def main(config: MakeExamplesConfig) -> None:
    print(f"{'example':<24} {'prompt':<46} {'kB':>6} {'max err mm':>10} {'ate_dtw':>8} {'fg_iou':>6}")
    for name, (family, seed) in EXAMPLES.items():
        sim = SimConfig(family=family, height=config.height, width=config.width, num_frames=config.num_frames)
        momap = generate_clip(seed, sim).momap
        momap = replace(momap, meta={**momap.meta, "source": "MoMap-Sim", "sim": asdict(sim)})
        folder = save_example(config.out / name, momap)
        # how far the stored float16 GT is from the exact float32 one, and what that does to metrics
        stored = load_example(folder).gt
        error_mm = 1000 * np.abs(stored.xyz - momap.xyz)[:, momap.valid].max()
        metrics = {key: float(value[0]) for key, value in sample_metrics(momap, stored.xyz[None]).items()}
        size_kb = sum(path.stat().st_size for path in folder.iterdir()) / 1000
        print(
            f"{name:<24} {momap.prompt!r:<46} {size_kb:>6.0f} {error_mm:>10.3f} "
            f"{metrics['ate_dtw']:>8.1e} {metrics['fg_mask_iou']:>6.3f}"
        )
    total_kb = sum(path.stat().st_size for path in config.out.rglob("*") if path.is_file()) / 1000
    print(f"{config.out}: {total_kb:.0f} kB in all")


if __name__ == "__main__":
    main(tyro.cli(MakeExamplesConfig))
