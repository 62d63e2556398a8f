"""Seconds to sample 10 MoMaps (25 steps, classifier-free guidance) and the UNet's FLOP utilisation.

Two models: the bundled pipeline's UNet (``checkpoints/momap-diffusion``, 128 x 128, T = 32) and a
Stable-Diffusion-sized UNet (SD 1.x widths 320/640/1280/1280) at 256 x 256, T = 50 (32 x 32
latents, 32 + 12 input channels), both with random weights (the weights do not change the
timing). Settings: fp32 eager, bf16 weights with PyTorch SDPA attention, bf16 +
``torch.compile``, and bf16 + ``torch.compile(mode="reduce-overhead")`` (CUDA graphs; the
last two on CUDA only). These rows time the denoising loop on the UNet alone: 25 calls on a
batch of 2N (conditional and unconditional halves of classifier-free guidance).

End-to-end rows time the whole ``MoMapPipeline.__call__`` of the bundled architecture on a
simulated scene (condition encoding, text, 25 guided steps, MoMap decoding, de-normalisation;
``--text-encoder`` names the text encoder, default the pipeline's), in fp32 and in the fastest
UNet setting.

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
    """Pipeline whose UNet architecture is timed (folder or bundled name; only the configs are
    read, the weights do not change the timing); skipped when missing."""
    sd_size: bool = True
    """Also time the SD-sized UNet at 256 x 256, T = 50."""
    compile: bool = True
    """Also time torch.compile, with and without CUDA graphs (CUDA only)."""
    end_to_end: bool = True
    """Also time the whole pipeline call of the bundled architecture."""
    text_encoder: str | None = None
    """Text encoder spec of the end-to-end rows (None: the pipeline's)."""
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
    settings = [("fp32 eager", torch.float32, None)]
    if device.type == "cuda":
        settings.append(("bf16 SDPA", torch.bfloat16, None))
        if config.compile:
            settings.append(("bf16 SDPA + compile", torch.bfloat16, "default"))
            settings.append(("bf16 SDPA + compile + CUDA graphs", torch.bfloat16, "reduce-overhead"))
    flops = None
    for label, dtype, compiled in settings:
        model = unet.to(device, dtype).eval()
        sample = torch.randn(batch, *latent, device=device, dtype=dtype)
        text = torch.randn(batch, *text_shape, device=device, dtype=dtype)
        if flops is None:
            flops = unet_flops(model, sample, text)
        runner = torch.compile(model, mode=compiled) if compiled else model
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
        print(f"{name:28s} {label:34s} {seconds:8.3f} s  {achieved:7.1f} TFLOP/s", flush=True)
        torch._dynamo.reset()
    unet.to("cpu", torch.float32)
    return rows


def measure_pipeline(folder: Path, config: BenchConfig) -> list[dict]:
    """Returns end-to-end rows: seconds of one ``MoMapPipeline`` call (N samples, guided)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from momaplib.diffusion.pipeline import MoMapPipeline
    from momaplib.sim import SimConfig, simulate
    from momaplib.vae import MoMapVAE

    torch.manual_seed(0)
    index = json.loads((folder / "model_index.json").read_text())
    pipe = MoMapPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
        vae=MoMapVAE.from_config(MoMapVAE.load_config(folder / "vae")),
        image_vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "image_vae")),
        scheduler=DDIMScheduler.from_pretrained(folder / "scheduler"),
        text_encoder=config.text_encoder or index["text_encoder"],
    )
    size = pipe.unet.config.sample_size * 8
    gt = simulate(0, SimConfig(height=size, width=size, num_frames=pipe.num_frames)).clip.momap
    device = torch.device(config.device)
    settings = [("fp32", torch.float32, None)]
    if device.type == "cuda":
        settings.append(("bf16 + compile + CUDA graphs", torch.bfloat16, "reduce-overhead"))
    rows, unet = [], pipe.unet
    for label, dtype, mode in settings:
        pipe.to(device, dtype)
        pipe.unet = torch.compile(unet, mode=mode) if mode else unet

        def run():
            generator = torch.Generator(device).manual_seed(0)
            pipe(
                gt.rgb, xyz=gt.xyz[0], instance_map=gt.instance, K=gt.K, prompt=gt.prompt,
                num_samples=config.num_samples, num_inference_steps=config.steps, guidance_scale=3.0,
                generator=generator, progress=False,
            )  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize()

        run()  # warm-up (text encoder loading, compilation)
        times = []
        for _ in range(config.repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        rows.append({"model": f"pipeline {size}px T={pipe.num_frames}", "setting": f"end-to-end {label}",
                     "seconds": min(times)})  # fmt: skip
        print(f"{rows[-1]['model']:28s} {rows[-1]['setting']:34s} {min(times):8.3f} s", flush=True)
        torch._dynamo.reset()
    pipe.unet = unet
    return rows


def main(config: BenchConfig) -> list[dict]:
    rows = []
    try:
        from diffusers import UNet2DConditionModel

        from momaplib.checkpoints import resolve_checkpoint

        # the architecture is what matters for timing: build it from the config, random weights
        folder = resolve_checkpoint(config.pipeline)
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        num_frames = json.loads((folder / "vae" / "config.json").read_text())["in_channels"] // 3
        size = unet.config.sample_size * 8  # the training resolution
        latent = (unet.config.in_channels, size // 8, size // 8)
        text_shape = (32, unet.config.cross_attention_dim)
        rows += measure(f"bundled {size}px T={num_frames}", unet, latent, text_shape, config)
        if config.end_to_end:
            rows += measure_pipeline(folder, config)
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
