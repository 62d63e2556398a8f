"""How far apart are MoMap-Sim's motion variants? The spread of the true futures of one start frame.

    python benchmarks/eval_motion_variants.py                       # 20 scenes x 5 variants per family
    python benchmarks/eval_motion_variants.py --size 128 --num-frames 32 --device cuda

For every scene (seed) the clips ``SimConfig(motion_variant=k)``, k = 0..variants-1, share the
reference frame. Per scene: the moving pixels are the union over k of the GT moving masks
(``tau_move`` = 2 % of the scene scale ``s``, the median reference depth); the spread is the
mean over pairs (i, j) of the mean distance ``|xyz_i[T-1] - xyz_j[T-1]| / s`` over those pixels,
also on the target's and the agent's pixels alone; ``motion`` is the mean final displacement
``|xyz_k[T-1] - xyz_k[0]| / s`` over the same pixels, for comparison. Prints a table (mean and
5-95 % range over scenes) and writes JSON with the device and torch version.
"""

from __future__ import annotations

import itertools
import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

from momaplib.momap import moving_mask
from momaplib.sim import FAMILIES, SimConfig, generate_clip


@dataclass
class EvalMotionVariants:
    """Settings of the motion-variant spread measurement."""

    scenes: int = 20
    """Scenes (seeds 0..scenes-1) per family."""
    variants: int = 5
    """Motion variants per scene, k = 0..variants-1 (0: the planned motion)."""
    size: int = 64
    """Image height and width in pixels."""
    num_frames: int = 16
    """Frames per clip."""
    device: str = "cpu"
    """Torch device of the simulator."""
    out: Path = Path("benchmarks/results/motion_variants.json")
    """Where the JSON results go."""


def scene_spread(clips: list) -> dict[str, float]:
    """Returns the spread of the final positions of ``clips`` (variants of one scene) over its scale."""
    momaps = [c.momap for c in clips]
    valid = momaps[0].valid
    scale = float(np.median(momaps[0].xyz[0][valid][:, 2]))
    union = np.zeros_like(valid)
    for m in momaps:
        union |= moving_mask(m.xyz, m.valid)
    info = clips[0].instance_info
    target = momaps[0].instance == clips[0].task.target_id
    agent = np.isin(momaps[0].instance, [i for i, v in info.items() if v["role"] == "agent"])
    finals = np.stack([m.xyz[-1].astype(np.float64) for m in momaps])  # [K, H, W, 3]
    row = {}
    for name, mask in (("moving", union), ("target", union & target), ("agent", union & agent)):
        if not mask.any():
            row[f"spread_{name}"] = float("nan")
            continue
        pairs = [
            np.linalg.norm(finals[i][mask] - finals[j][mask], axis=-1).mean()
            for i, j in itertools.combinations(range(len(clips)), 2)
        ]
        row[f"spread_{name}"] = float(np.mean(pairs)) / scale
    row["motion"] = float(
        np.mean([np.linalg.norm(m.xyz[-1][union] - m.xyz[0][union], axis=-1).mean() for m in momaps]) / scale
        if union.any()
        else float("nan")
    )
    return row


def main(job: EvalMotionVariants) -> dict:
    """Measures every family, prints the table and writes JSON; returns the results."""
    results = {
        "device": torch.cuda.get_device_name()
        if job.device.startswith("cuda")
        else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "settings": {k: str(v) for k, v in vars(job).items()},
        "families": {},
    }
    print(f"{'family':<11} {'metric':<15} {'mean':>7} {'p5':>7} {'p95':>7}")
    for family in FAMILIES:
        config = SimConfig(family=family, height=job.size, width=job.size, num_frames=job.num_frames)
        config = replace(config, device=job.device)
        rows, started = [], time.perf_counter()
        for seed in tqdm(range(job.scenes), desc=family):
            clips = [generate_clip(seed, replace(config, motion_variant=k)) for k in range(job.variants)]
            rows.append({"seed": seed, "action": clips[0].task.action, **scene_spread(clips)})
        summary = {}
        for metric in ("spread_moving", "spread_target", "spread_agent", "motion"):
            values = np.array([r[metric] for r in rows])
            values = values[np.isfinite(values)]
            summary[metric] = {
                "mean": float(values.mean()),
                "p5": float(np.percentile(values, 5)),
                "p95": float(np.percentile(values, 95)),
            }
            s = summary[metric]
            print(f"{family:<11} {metric:<15} {s['mean']:7.3f} {s['p5']:7.3f} {s['p95']:7.3f}")
        results["families"][family] = {
            "summary": summary,
            "per_scene": rows,
            "seconds": time.perf_counter() - started,
        }
    job.out.parent.mkdir(parents=True, exist_ok=True)
    job.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(tyro.cli(EvalMotionVariants))
