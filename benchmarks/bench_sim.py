"""MoMap-Sim throughput: clips per second by family and resolution, on CPU (one core) and CUDA.

    python benchmarks/bench_sim.py                      # CPU, one thread, both families
    python benchmarks/bench_sim.py --devices cpu cuda   # also CUDA when present

Prints a table and writes JSON (default ``outputs/benchmarks/bench_sim.json``). Target from the
foundation issue: at least 10 clips/s at 64x64, T = 16 on one CPU core.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from momaplib.sim import FAMILIES, SimConfig, generate_clip


@dataclass
class BenchSim:
    """Settings of the simulator benchmark."""

    devices: tuple[str, ...] = ("cpu", "cuda")
    """Devices to measure; unavailable ones are skipped."""
    sizes: tuple[tuple[int, int], ...] = ((64, 16), (128, 32))
    """(resolution, T) settings to measure."""
    clips: int = 20
    """Clips timed per setting (after one warm-up clip)."""
    cpu_threads: int = 1
    """Torch threads on CPU (the target is stated for one core)."""
    out: Path = Path("outputs/benchmarks/bench_sim.json")
    """Where the JSON results go."""


def measure(config: SimConfig, clips: int) -> dict:
    """Returns timing statistics of generating ``clips`` clips (seeds 1..clips) under ``config``."""
    generate_clip(0, config)  # warm-up: lazy initialisation, allocator
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = []
    for seed in range(1, clips + 1):
        start = time.perf_counter()
        generate_clip(seed, config)
        if config.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    total = sum(seconds)
    return {"clips_per_second": clips / total, "mean_seconds": total / clips, "max_seconds": max(seconds)}


def main(bench: BenchSim) -> list[dict]:
    """Runs the benchmark, prints a table and writes JSON; returns the rows."""
    torch.set_num_threads(bench.cpu_threads)
    rows = []
    for device in bench.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            continue
        for size, frames in bench.sizes:
            for family in FAMILIES:
                config = SimConfig(family=family, height=size, width=size, num_frames=frames, device=device)
                clips = bench.clips if size <= 64 or device != "cpu" else max(3, bench.clips // 4)
                rows.append(
                    {
                        "device": device,
                        "family": family,
                        "size": size,
                        "T": frames,
                        "clips": clips,
                        **measure(config, clips),
                    }
                )
                r = rows[-1]
                setting = f"{device:5s} {family:11s} {size:4d}x{size:<4d} T={frames:<3d}"
                speed = f"{r['clips_per_second']:7.2f} clips/s  ({r['mean_seconds'] * 1000:7.1f} ms/clip)"
                print(f"{setting} {speed}")
    bench.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "cpu_threads": bench.cpu_threads,
        "machine": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    bench.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {bench.out}")
    return rows


if __name__ == "__main__":
    main(tyro.cli(BenchSim))
