"""Gaussian-splat rendering of MoMaps: speed per backend, agreement of the backends, render quality.

    python benchmarks/bench_render.py                       # torch on CPU (and CUDA/gsplat when present)
    python benchmarks/bench_render.py --clips 20 --out benchmarks/results/render_h100.json

For each resolution, test-split MoMap-Sim clips of both families (never seen in training) are
simulated at that size and their GT MoMaps rendered into the clips' own cameras by every available
backend: ``torch`` on the CPU, ``torch`` on CUDA and ``gsplat`` on CUDA. Reported per backend:
milliseconds per frame (all T frames in one call, after a warm-up call) and the PSNR of the
render against the simulator's frames on covered, truly visible pixels
(``momaplib.render.render_quality``); for gsplat also its agreement with the torch backend on the
same device (mean absolute RGB difference on pixels covered by either, max |alpha| difference,
instance agreement). Prints a table and writes JSON with the device name and torch version.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import tyro
from tqdm.auto import tqdm

from momaplib.data import split_indices
from momaplib.render import COVERED_ALPHA, gsplat_available, render_momap, render_quality
from momaplib.sim import FAMILIES, SimConfig, clip_seed, generate_clip


@dataclass
class BenchRender:
    """Settings of the render benchmark."""

    sizes: tuple[int, ...] = (128, 256)
    """Square resolutions to measure (T = 32)."""
    clips: int = 4
    """Test clips per family and resolution."""
    backends: tuple[str, ...] = ("torch-cpu", "torch-cuda", "gsplat")
    """Backends to measure; unavailable ones are skipped."""
    out: Path = Path("outputs/benchmarks/bench_render.json")
    """Where the JSON results go."""


def _timed(momap, backend: str, device: str) -> tuple[float, object]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    render = render_momap(momap, backend=backend, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / momap.num_frames, render


def main(settings: BenchRender) -> dict:
    runs = {"torch-cpu": ("torch", "cpu"), "torch-cuda": ("torch", "cuda"), "gsplat": ("gsplat", "cuda")}
    available = [
        name for name in settings.backends
        if name == "torch-cpu" or (torch.cuda.is_available() and (name != "gsplat" or gsplat_available()))
    ]  # fmt: skip
    rows, agreement = [], []
    for size in settings.sizes:
        for family in FAMILIES:
            config = SimConfig(family=family, height=size, width=size)
            ids = split_indices(family, settings.clips, "test")
            clips = [
                generate_clip(clip_seed(0, i), config) for i in tqdm(ids, desc=f"simulate {family} {size}")
            ]
            for name in available:
                backend, device = runs[name]
                _timed(clips[0].momap, backend, device)  # warm-up (gsplat compiles its kernels once)
                for clip in clips:
                    ms, render = _timed(clip.momap, backend, device)
                    quality = render_quality(render, clip.frames, clip.depth)
                    rows.append(
                        {"size": size, "family": family, "backend": name, "ms_per_frame": ms, **quality}
                    )
                    if name == "gsplat":
                        reference = render_momap(clip.momap, backend="torch", device="cuda")
                        covered = (render.alpha >= COVERED_ALPHA) | (reference.alpha >= COVERED_ALPHA)
                        rgb_diff = np.abs(render.rgb - reference.rgb)[covered].mean()
                        same_id = (render.instance == reference.instance)[covered].mean()
                        agreement.append({
                            "size": size, "family": family,
                            "rgb_mean_abs_diff_covered": float(rgb_diff),
                            "alpha_max_abs_diff": float(np.abs(render.alpha - reference.alpha).max()),
                            "instance_agreement_covered": float(same_id),
                        })  # fmt: skip
    metrics = ["ms_per_frame", "psnr_visible", "psnr_visible_t0", "coverage", "visible_fraction"]
    table = pd.DataFrame(rows).groupby(["size", "backend", "family"])[metrics].mean().round(3)
    result = {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "clips_per_family": settings.clips,
        "table": table.reset_index().to_dict(orient="records"),
        "per_clip": rows,
    }
    if agreement:
        result["gsplat_vs_torch"] = agreement
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table.to_string())
    if agreement:
        columns = ["rgb_mean_abs_diff_covered", "alpha_max_abs_diff", "instance_agreement_covered"]
        print(pd.DataFrame(agreement).groupby("size")[columns].agg(["mean", "max"]).round(4).to_string())
    print(f"wrote {settings.out}")
    return result


if __name__ == "__main__":
    main(tyro.cli(BenchRender))
