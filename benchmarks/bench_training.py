"""Training throughput of the MoMap diffusion UNet: samples per second against batch size.

One training step as ``momap train-diffusion`` runs it: the denoising loss on pre-encoded
16 x 16 latents (``momaplib.diffusion.objectives.diffusion_loss``), backward, gradient clipping,
AdamW and the EMA update, with bf16 autocast on CUDA (fp32 on CPU). The UNet is the job's
default (``TrainDiffusionJob``: widths 64/128/192, 13 M parameters, MiniLM-sized text tokens).
Rows: batch sizes, EMA with the per-tensor loop and with ``foreach`` kernels, and optionally
``torch.compile`` of the UNet. Small UNets on 16 x 16 latents are bound by kernel launches at
small batches, so the step time barely grows with the batch until the GPU fills up; the table
shows where that happens.

Model FLOP utilisation = 3 x (forward FLOPs counted by ``torch.utils.flop_counter``) x steps
/ seconds / the GPU's dense bf16 peak (H100 SXM: 989 TFLOP/s; ``--peak-tflops``).

    .venv/bin/python benchmarks/bench_training.py [--device cuda] [--batch-sizes 128 512] [--out PATH]

Prints a table and writes JSON (default ``outputs/benchmarks/bench_training.json``).
"""

from __future__ import annotations

import json
import platform
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import tyro
from diffusers.training_utils import EMAModel
from torch.utils.flop_counter import FlopCounterMode

from momaplib.diffusion.objectives import diffusion_loss
from momaplib.diffusion.train import TrainDiffusionJob, noise_scheduler_for
from momaplib.diffusion.unet import build_unet


@dataclass
class BenchConfig:
    """What to measure."""

    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Torch device."""
    batch_sizes: tuple[int, ...] = (128, 256, 512, 1024)
    """Batch sizes to time (CPU runs use the smallest two unless given)."""
    steps: int = 20
    """Timed steps per row (after 3 warm-up steps)."""
    compile: bool = True
    """Also time torch.compile of the UNet (CUDA only, largest batch size)."""
    latent_channels: int = 32
    """MoMap latent channels (the bundled VAE's)."""
    latent_size: int = 16
    """Latent height and width (128 px MoMaps)."""
    peak_tflops: float = 989.0
    """Dense bf16 peak of the GPU for the utilisation column."""
    out: Path = Path("outputs/benchmarks/bench_training.json")
    """Where the JSON report goes."""


def forward_flops(unet, batch: dict) -> float:
    """Returns the FLOPs of one UNet forward pass on ``batch``."""
    sample = torch.cat([batch["latents"], batch["condition"]], 1)
    timesteps = torch.full((sample.shape[0],), 500, device=sample.device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(sample, timesteps, encoder_hidden_states=batch["text"])
    return float(counter.get_total_flops())


def time_steps(unet, batch: dict, config: BenchConfig, foreach: bool, compiled: bool) -> float:
    """Returns seconds per optimizer step (loss, backward, clipping, AdamW, EMA)."""
    device = torch.device(config.device)
    job = TrainDiffusionJob()
    scheduler = noise_scheduler_for(job)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-2, fused=device.type == "cuda")
    ema = EMAModel(unet.parameters(), decay=0.999, foreach=foreach)
    ema.to(device)
    model = torch.compile(unet) if compiled else unet
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
    generator = torch.Generator(device).manual_seed(0)

    def step() -> None:
        with autocast:
            loss = diffusion_loss(
                model, scheduler, batch["latents"], batch["condition"], batch["text"], generator
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(config.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / config.steps


def main(config: BenchConfig) -> list[dict]:
    device = torch.device(config.device)
    job = TrainDiffusionJob()
    sizes = config.batch_sizes if device.type == "cuda" else config.batch_sizes[:2]
    settings = [(False, False), (True, False)]
    rows = []
    print(
        f"{'batch':>6} {'EMA':>8} {'compile':>8} {'ms/step':>9} {'samples/s':>10} {'TFLOP/s':>8} {'MFU':>7}"
    )
    for batch_size in sizes:
        plans = settings + (
            [(True, True)] if config.compile and device.type == "cuda" and batch_size == sizes[-1] else []
        )
        for foreach, compiled in plans:
            torch.manual_seed(0)
            unet = build_unet(
                latent_channels=config.latent_channels, cross_attention_dim=384,
                block_out_channels=job.block_out_channels, layers_per_block=job.layers_per_block,
                sample_size=config.latent_size,
            ).to(device).train()  # fmt: skip
            h = w = config.latent_size
            batch = {
                "latents": torch.randn(batch_size, config.latent_channels, h, w, device=device),
                "condition": torch.randn(batch_size, 12, h, w, device=device),
                "text": torch.randn(batch_size, 32, 384, device=device),
            }
            flops = 3 * forward_flops(unet, batch)
            seconds = time_steps(unet, batch, config, foreach, compiled)
            tflops = flops / seconds / 1e12
            row = {
                "batch_size": batch_size,
                "ema": "foreach" if foreach else "loop",
                "compile": compiled,
                "ms_per_step": 1e3 * seconds,
                "samples_per_s": batch_size / seconds,
                "tflops": tflops,
                "mfu": tflops / config.peak_tflops if device.type == "cuda" else None,
            }
            rows.append(row)
            mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
            print(
                f"{batch_size:6d} {row['ema']:>8} {compiled!s:>8} {row['ms_per_step']:9.1f} "
                f"{row['samples_per_s']:10.0f} {tflops:8.1f} {mfu:>7}",
                flush=True,
            )
            del unet, batch
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "rows": rows,
    }
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {config.out}")
    return rows


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
