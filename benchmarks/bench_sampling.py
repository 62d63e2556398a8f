"""Seconds to sample 10 MoMaps (25 steps, classifier-free guidance) and the UNet's FLOP utilisation.

Two models: the bundled pipeline (``checkpoints/momap-diffusion``, 128 x 128, T = 32) and a
Stable-Diffusion-sized UNet (SD 1.x widths 320/640/1280/1280, random weights) at 256 x 256,
T = 50 (32 x 32 latents, 32 + 12 input channels). Settings: fp32 eager, then bf16 autocast-free
weights with PyTorch SDPA attention, then bf16 + ``torch.compile`` (CUDA only). The denoising
loop is timed on the UNet alone (decoding is reported separately for the bundled model).

Model FLOP utilisation = (UNet FLOPs per call, counted by ``torch.utils.flop_counter``)
x calls / seconds / the GPU's dense bf16 peak (H100 SXM: 989 TFLOP/s; ``--peak-tflops``).

    .venv/bin/python benchmarks/bench_sampling.py [--device cuda] [--out PATH]

Prints a table and writes JSON (default ``outputs/benchmarks/bench_sampling.json``).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import tyro
from torch.utils.flop_counter import FlopCounterMode

from momaplib.diffusion.unet import build_unet


@dataclass
class BenchConfig:
    """What to measure."""

    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Torch device."""
    num_samples: int = 10
    """MoMaps per call (the batch is 2N with guidance)."""
    steps: int = 25
    """Denoising steps."""
    pipeline: str = "momap-diffusion"
    """Bundled pipeline to time (folder or bundled name); skipped when missing."""
    sd_size: bool = True
    """Also time the SD-sized UNet at 256 x 256, T = 50."""
    compile: bool = True
    """Also time torch.compile (CUDA only)."""
    peak_tflops: float = 989.0
    """Dense bf16 peak of the GPU for the utilisation column."""
    repeats: int = 3
    """Timed runs (after warm-up); the minimum is reported."""
    out: Path = Path("outputs/benchmarks/bench_sampling.json")
    """Where the JSON report goes."""


def unet_flops(unet, sample, text) -> float:
    """Returns the FLOPs of one UNet call on (sample, text)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(sample, torch.tensor([500], device=sample.device), encoder_hidden_states=text)
    return float(counter.get_total_flops())


def time_loop(unet, sample, text, steps: int, repeats: int) -> float:
    """Returns the best wall time of ``steps`` UNet calls (the denoising loop without the sampler)."""
    timesteps = torch.linspace(999, 0, steps, device=sample.device).long()

    def run():
        with torch.no_grad():
            for t in timesteps:
                unet(sample, t, encoder_hidden_states=text)
        if sample.is_cuda:
            torch.cuda.synchronize()

    run()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, unet, latent: tuple[int, int, int], text_shape: tuple[int, int], config: BenchConfig):
    device = torch.device(config.device)
    batch = 2 * config.num_samples
    rows = []
    settings = [("fp32 eager", torch.float32, False)]
    if device.type == "cuda":
        settings.append(("bf16 SDPA", torch.bfloat16, False))
        if config.compile:
            settings.append(("bf16 SDPA + compile", torch.bfloat16, True))
    flops = None
    for label, dtype, compiled in settings:
        model = unet.to(device, dtype).eval()
        sample = torch.randn(batch, *latent, device=device, dtype=dtype)
        text = torch.randn(batch, *text_shape, device=device, dtype=dtype)
        if flops is None:
            flops = unet_flops(model, sample, text)
        runner = torch.compile(model, mode="max-autotune-no-cudagraphs") if compiled else model
        seconds = time_loop(runner, sample, text, config.steps, config.repeats)
        achieved = flops * config.steps / seconds / 1e12
        rows.append(
            {
                "model": name,
                "setting": label,
                "seconds": seconds,
                "unet_gflops_per_call": flops / 1e9,
                "tflops": achieved,
                "mfu": achieved / config.peak_tflops if device.type == "cuda" else None,
                "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
            }
        )
        print(f"{name:28s} {label:22s} {seconds:8.3f} s  {achieved:7.1f} TFLOP/s", flush=True)
    unet.to("cpu", torch.float32)
    return rows


def main(config: BenchConfig) -> list[dict]:
    rows = []
    try:
        from momaplib.checkpoints import resolve_checkpoint
        from momaplib.diffusion.pipeline import MoMapPipeline

        pipe = MoMapPipeline.from_pretrained(resolve_checkpoint(config.pipeline))
        unet = pipe.unet.float()
        size = unet.config.sample_size * 8  # the training resolution
        latent = (unet.config.in_channels, size // 8, size // 8)
        text_shape = (32, unet.config.cross_attention_dim)
        rows += measure(f"bundled {size}px T={pipe.num_frames}", unet, latent, text_shape, config)
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"bundled pipeline skipped: {error}")
    if config.sd_size:
        torch.manual_seed(0)
        sd_unet = build_unet(
            latent_channels=32,
            cross_attention_dim=768,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            sample_size=32,
        )
        rows += measure("SD-sized 256px T=50", sd_unet, (44, 32, 32), (77, 768), config)
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "device": torch.cuda.get_device_name() if config.device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__,
        "rows": rows,
    }
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {config.out}")
    return rows


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
