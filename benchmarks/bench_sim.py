"""MoMap-Sim throughput: clips per second by family and resolution, on CPU (one core) and CUDA.

    python benchmarks/bench_sim.py                      # CPU (one thread) and CUDA when present
    python benchmarks/bench_sim.py --device cuda        # only CUDA (64x64 T16 and 128x128 T32)

Prints a table and writes JSON with the device name and torch version (default
``benchmarks/results/sim_<device>.json``). Target (issue 25): at least 25 clips/s per CPU core
at 64x64, T = 16, for both families; the GPU rate is reported at 128x128, T = 32.
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
    device: str | None = None
    """One device to measure (overrides --devices), e.g. cuda."""
    sizes: tuple[tuple[int, int], ...] = ((64, 16), (128, 32))
    """(resolution, T) settings to measure."""
    clips: int = 20
    """Clips timed per setting (after one warm-up clip)."""
    cpu_threads: int = 1
    """Torch threads on CPU (the target is stated for one core)."""
    out: Path | None = None
    """Where the JSON results go (None: benchmarks/results/sim_<cpu or the GPU's name>.json)."""
    cpu_target: float = 25.0
    """Clips/s per core that the CPU rows at 64x64, T = 16 should reach (reported as met or not)."""


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
    for device in (bench.device,) if bench.device else bench.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            continue
        for size, frames in bench.sizes:
            for family in FAMILIES:
                config = SimConfig(family=family, height=size, width=size, num_frames=frames, device=device)
                clips = bench.clips if size <= 64 or device != "cpu" else max(3, bench.clips // 4)
                rows.append(
                    {
                        "device": device,
                        "device_name": _device_name(device),
                        "family": family,
                        "size": size,
                        "T": frames,
                        "clips": clips,
                        **measure(config, clips),
                    }
                )
                r = rows[-1]
                if device == "cpu" and (size, frames) == (64, 16):
                    r["target_clips_per_second_per_core"] = bench.cpu_target
                    r["target_met"] = r["clips_per_second"] / bench.cpu_threads >= bench.cpu_target
                setting = f"{device:5s} {family:11s} {size:4d}x{size:<4d} T={frames:<3d}"
                speed = f"{r['clips_per_second']:7.2f} clips/s  ({r['mean_seconds'] * 1000:7.1f} ms/clip)"
                print(f"{setting} {speed}")
    cuda = torch.cuda.is_available() and any(r["device"].startswith("cuda") for r in rows)
    out = (
        bench.out or Path("benchmarks/results") / f"sim_{_slug(_device_name('cuda')) if cuda else 'cpu'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "cpu_threads": bench.cpu_threads,
        "machine": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return rows


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


if __name__ == "__main__":
    main(tyro.cli(BenchSim))
