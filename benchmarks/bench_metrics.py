"""Speed of the metric set and of the batched DTW, against dtaidistance on the same curve pairs.

Scene: a 128 x 128 MoMap (a plane at ~2 m) with a 64 x 64 box that slides and turns, so the GT
moving mask F has exactly ``num_pixels`` = 4096 pixels; N = 10 samples are the GT plus smooth
random offsets and noise. Timings are the best of ``repeats`` runs after a warm-up (the 2-core
CPU is shared, so the minimum is the stable figure; the median is reported too).

    .venv/bin/python benchmarks/bench_metrics.py [--device cpu|cuda] [--threads 1] [--out PATH]

Prints a table and writes JSON (default ``outputs/benchmarks/bench_metrics.json``).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from torch import Tensor

from momaplib.metrics import curves, dtw, foreground_mask, sample_metrics
from momaplib.momap import MoMap


@dataclass
class BenchConfig:
    """What to measure."""

    device: str | None = None
    """Torch device of our metrics ("cpu", "cuda"; None: the CPU, and CUDA too when present). The
    peer always runs on the CPU."""
    num_samples: int = 10
    """Generated samples N per input."""
    num_pixels: int = 4096
    """Foreground pixels |F| (a square number: the moving box is sqrt x sqrt pixels)."""
    num_frames: int = 32
    """Frames T per trajectory."""
    repeats: int = 3
    """Timed runs per measurement (after one warm-up)."""
    peer_repeats: int = 2
    """Timed runs of the (slow) per-pair peer loop."""
    threads: int | None = None
    """torch intra-op threads (None: torch's default)."""
    compiled: bool = True
    """Also time the compiled DTW kernel where it is not the default (CPUs: ~40 s to compile)."""
    out: Path = Path("outputs/benchmarks/bench_metrics.json")
    """Where the JSON report goes."""


def make_scene(num_pixels: int, num_frames: int, num_samples: int, seed: int = 0) -> tuple[MoMap, Tensor]:
    """Returns (GT MoMap, samples [N, T, H, W, 3]); the moving box covers exactly ``num_pixels``."""
    side = round(num_pixels**0.5)
    if side * side != num_pixels:
        raise ValueError(f"num_pixels: expected a square number, got {num_pixels}")
    size = 2 * side
    rng = np.random.default_rng(seed)
    focal = size / 1.2
    K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    depth = 2.0 + 0.02 * rng.standard_normal((size, size)).astype(np.float32)
    box = np.zeros((size, size), bool)
    box[side // 2 : side // 2 + side, side // 2 : side // 2 + side] = True
    depth[box] -= 0.3
    xyz0 = np.stack([(u - K[0, 2]) / focal * depth, (v - K[1, 2]) / focal * depth, depth], -1)
    s = np.linspace(0, 1, num_frames, dtype=np.float32)
    angle = 0.8 * s
    centre = xyz0[box].mean(0)
    shift = np.array([0.4, -0.1, 0.1], np.float32)
    xyz = np.repeat(xyz0[None], num_frames, 0)
    for t in range(num_frames):
        c, sn = np.cos(angle[t]), np.sin(angle[t])
        rotation = np.array([[c, 0, sn], [0, 1, 0], [-sn, 0, c]], np.float32)
        xyz[t, box] = (xyz0[box] - centre) @ rotation.T + centre + s[t] * shift
    momap = MoMap(
        xyz=xyz,
        valid=np.ones((size, size), bool),
        visible=np.ones((num_frames, size, size), bool),
        rgb=np.zeros((size, size, 3), np.uint8),
        instance=box.astype(np.int32) + 1,
        K=K,
        ref_from_cam=np.repeat(np.eye(4, dtype=np.float32)[None], num_frames, 0),
    )
    generator = torch.Generator().manual_seed(seed)
    drift = torch.cumsum(0.01 * torch.randn(num_samples, num_frames, 1, 1, 3, generator=generator), 1)
    noise = 0.01 * torch.randn(num_samples, *xyz.shape, generator=generator)
    return momap, torch.from_numpy(xyz)[None] + drift + noise


def timed(fn: Callable[[], object], repeats: int, device: str) -> dict[str, float]:
    """Returns {"best_s", "median_s"} of ``repeats`` runs of ``fn`` after a warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"best_s": min(times), "median_s": statistics.median(times)}


def main(config: BenchConfig) -> dict:
    """Runs every measurement, prints the table and writes the JSON report; returns the report."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    devices = [config.device] if config.device else ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    momap, samples = make_scene(config.num_pixels, config.num_frames, config.num_samples)
    fg = foreground_mask(momap)
    assert fg.sum() == config.num_pixels, f"|F| = {fg.sum()}, expected {config.num_pixels}"
    # the DTW of ate_dtw alone, on the same pairs: F curves of the GT against each sample's
    index = torch.from_numpy(np.flatnonzero(fg))
    T, H, W = momap.xyz.shape[:3]
    gt_curves = torch.from_numpy(momap.xyz).reshape(T, H * W, 3)[:, index].transpose(0, 1)  # [F, T, 3]
    pred_curves = samples.reshape(-1, T, H * W, 3)[:, :, index].transpose(1, 2)  # [N, F, T, 3]
    gt_curves, pred_curves = gt_curves / momap.scene_scale, pred_curves / momap.scene_scale
    num_pairs = pred_curves.shape[0] * pred_curves.shape[1]
    report: dict = {
        "config": {**asdict(config), "out": str(config.out)},
        "environment": {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1min": os.getloadavg()[0],
            "cuda_device": torch.cuda.get_device_name() if "cuda" in devices else None,
        },
        "num_pairs": num_pairs,
    }
    rows = []
    for device in devices:
        samples_device, gt_device, pred_device = (x.to(device) for x in (samples, gt_curves, pred_curves))
        full = timed(functools.partial(sample_metrics, momap, samples_device), config.repeats, device)
        ours = timed(functools.partial(dtw, gt_device, pred_device), config.repeats, device)
        ours["pairs_per_s"] = num_pairs / ours["best_s"]
        ours["kernel"] = getattr(curves.wavefront_kernel(device), "__name__", "compiled dtw_wavefront")
        report[device] = {"full_metric_set": full, "dtw_ours": ours}
        rows.append((f"{device}: full metric set (10 metrics)", full, None))
        rows.append((f"{device}: DTW ours (cost + path length)", ours, ours["pairs_per_s"]))
        kind = torch.device(device).type
        if config.compiled and not curves.COMPILE_DTW.get(kind, False):
            # the compiled wavefront kernel where it is opt-in (CPUs); compilation is the warm-up run
            curves.COMPILE_DTW[kind] = True
            compiled = timed(functools.partial(dtw, gt_device, pred_device), config.repeats, device)
            compiled_cost = dtw(gt_device, pred_device)[0]
            curves.COMPILE_DTW[kind] = False
            eager_cost = dtw(gt_device, pred_device)[0]
            compiled["pairs_per_s"] = num_pairs / compiled["best_s"]
            compiled["max_rel_cost_difference_to_eager"] = float(
                ((compiled_cost - eager_cost).abs() / eager_cost.abs().clamp_min(1e-12)).max()
            )
            report[device]["dtw_ours_compiled"] = compiled
            rows.append((f"{device}: DTW ours, compiled kernel", compiled, compiled["pairs_per_s"]))
        elif curves.COMPILE_DTW.get(kind, False):
            # the default is compiled here: the eager in-place sweep for comparison
            curves.COMPILE_DTW[kind] = False
            eager = timed(functools.partial(dtw, gt_device, pred_device), config.repeats, device)
            eager_cost = dtw(gt_device, pred_device)[0]
            curves.COMPILE_DTW[kind] = True
            compiled_cost = dtw(gt_device, pred_device)[0]
            eager["pairs_per_s"] = num_pairs / eager["best_s"]
            report[device]["dtw_ours"]["max_rel_cost_difference_to_eager"] = float(
                ((compiled_cost - eager_cost).abs() / eager_cost.abs().clamp_min(1e-12)).max()
            )
            report[device]["dtw_ours_eager"] = eager
            rows.append((f"{device}: DTW ours, eager kernel", eager, eager["pairs_per_s"]))

    try:
        import dtaidistance
        from dtaidistance import dtw_ndim
    except ImportError:
        print("dtaidistance is not installed (pip install dtaidistance): no peer comparison")
        dtaidistance = None
    if dtaidistance is not None:
        gt64 = gt_curves.double().numpy()
        pred64 = pred_curves.double().reshape(num_pairs, T, 3).numpy()
        pairs = [(gt64[i % len(gt64)], pred64[i]) for i in range(num_pairs)]

        def peer_loop() -> list[float]:
            return [dtw_ndim.distance_fast(a, b, inner_dist="euclidean") for a, b in pairs]

        peer = timed(peer_loop, config.peer_repeats, "cpu")
        peer["pairs_per_s"] = num_pairs / peer["best_s"]
        peer_cost = np.array(peer_loop())
        our_cost = dtw(gt_curves.double(), pred_curves.double())[0].reshape(-1).numpy()
        peer["max_abs_cost_difference"] = float(np.abs(peer_cost - our_cost).max())
        report["peer_per_pair"] = {**peer, "library": f"dtaidistance {dtaidistance.__version__}"}
        rows.append(("cpu: DTW dtaidistance, per pair (cost only)", peer, peer["pairs_per_s"]))

        # the peer's C kernel without per-call overhead: an OpenMP all-pairs block of the same
        # size (different pairs, cost only), for context
        side = int(np.ceil(num_pairs**0.5))
        series = np.concatenate([gt64[:side], pred64[:side]])
        block = ((0, side), (side, 2 * side))
        kernel = timed(
            lambda: dtw_ndim.distance_matrix_fast(series, block=block, parallel=True, inner_dist="euclidean"),
            config.repeats,
            "cpu",
        )
        kernel["pairs_per_s"] = side * side / kernel["best_s"]
        report["peer_block_kernel"] = kernel
        rows.append(("cpu: DTW dtaidistance, C block kernel (context)", kernel, kernel["pairs_per_s"]))
        for device in devices:
            ours_rate = report[device]["dtw_ours"]["pairs_per_s"]
            report[device]["speedup_vs_peer_per_pair"] = ours_rate / peer["pairs_per_s"]
            report[device]["speedup_vs_peer_block_kernel"] = ours_rate / kernel["pairs_per_s"]
            for other in ("dtw_ours_eager", "dtw_ours_compiled"):
                if other in report[device]:
                    rate = report[device][other]["pairs_per_s"]
                    report[device][f"{other}_speedup_vs_peer_per_pair"] = rate / peer["pairs_per_s"]
                    report[device][f"{other}_speedup_vs_peer_block_kernel"] = rate / kernel["pairs_per_s"]

    sizes = f"N={config.num_samples} samples x |F|={config.num_pixels} pixels x T={config.num_frames}"
    print(
        f"\nmetrics benchmark: {sizes} ({num_pairs} curve pairs), torch threads={torch.get_num_threads()}\n"
    )
    print(f"{'measurement':52s} {'best s':>9s} {'median s':>9s} {'pairs/s':>11s}")
    for name, timing, rate in rows:
        rate_text = f"{rate:11.0f}" if rate else f"{'':11s}"
        print(f"{name:52s} {timing['best_s']:9.3f} {timing['median_s']:9.3f} {rate_text}")
    if "peer_per_pair" in report:
        print(
            f"\nmax |cost difference| to the peer: {report['peer_per_pair']['max_abs_cost_difference']:.2e}"
        )
        for device in devices:
            speedup = report[device]
            print(
                f"{device}: our DTW / peer per-pair throughput {speedup['speedup_vs_peer_per_pair']:.1f}x"
                f"   (/ the peer's block kernel: {speedup['speedup_vs_peer_block_kernel']:.2f}x)"
            )
            if "dtw_ours_compiled" in speedup:
                print(
                    f"{device}: compiled kernel / peer per-pair "
                    f"{speedup['dtw_ours_compiled_speedup_vs_peer_per_pair']:.1f}x   (/ the peer's block "
                    f"kernel: {speedup['dtw_ours_compiled_speedup_vs_peer_block_kernel']:.2f}x)"
                )
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {config.out}")
    return report


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
