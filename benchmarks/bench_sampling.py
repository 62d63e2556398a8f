"""Seconds for ``MoMapPipeline`` to turn one scene into 10 MoMaps, eager float32 vs the fast path.

End to end: the timing covers the whole call, conditions -> MoMaps in metres (input checks,
condition encoding by the image VAE, text, grounding, the denoising loop with classifier-free
guidance, batched MoMap-VAE decoding, de-normalisation), on a MoMap-Sim scene. Two models:

- ``bundled``: the bundled pipeline (``checkpoints/momap-diffusion``: 128 x 128, T = 32) with its
  weights; ``--text-encoder`` swaps its text encoder (e.g. ``none:384`` on a host without MiniLM);
- ``paper-sized``: a randomly initialised UNet of Stable Diffusion 1.5's size (widths
  320/640/1280/1280, ~860 M parameters) at 256 x 256, T = 50 (32 x 32 x 32 latents), with a random
  MoMap VAE for 50 frames, the bundled image VAE's architecture and a 768-wide text condition
  (``none:768``); the weights do not change the timing.

Settings: ``eager fp32`` (``pipe.disable_fast_sampling()``) and ``fast`` (``pipe.enable_fast_sampling()``:
bf16, channels-last, compiled step with CUDA graphs on CUDA; float32 and uncompiled on a CPU). Each
row reports the first call (compilation), the best and median of ``repeats`` warm calls, and the
fast rows the max |fast - eager| of the MoMaps from the same seed (metres, and / scene scale).
With ``--unet-loop``, rows that time the UNet alone (FLOPs by ``torch.utils.flop_counter`` and
the utilisation of ``--peak-tflops``) are added.

On a CPU (``--device cpu``) the bundled row also runs with the CPU defaults of notebook 04
(``momaplib.diffusion.fast.CPU_SCHEDULER`` / ``CPU_STEPS``); the 1-minute load average is recorded.

    .venv/bin/python benchmarks/bench_sampling.py --device cuda --quick   # one device run < 10 min
    .venv/bin/python benchmarks/bench_sampling.py --device cpu --no-paper-sized --threads 2

Prints a table and writes JSON (default ``benchmarks/results/sampling_<device>.json``) after every
row, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

#: Targets of issue 25 on an H100/H200 (seconds for 10 samples, 25 guided steps, end to end).
TARGETS = {"bundled": 0.10, "paper-sized": 0.35}
MIN_SPEEDUP = 4.0


@dataclass
class BenchConfig:
    """What to measure."""

    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Torch device."""
    num_samples: int = 10
    """MoMaps per call (2N UNet rows with guidance)."""
    steps: int = 25
    """Denoising steps of the eager/fast comparison."""
    guidance: float = 2.0
    """Classifier-free guidance scale (the bundled pipeline's default)."""
    pipeline: str = "momap-diffusion"
    """The bundled model (folder or bundled name); skipped when missing."""
    text_encoder: str | None = None
    """Text encoder spec of the bundled rows (None: the pipeline's own)."""
    paper_sized: bool = True
    """Also time the paper-sized random model (256 x 256, T = 50)."""
    unet_loop: bool = False
    """Also time the UNet alone (``steps`` calls on 2N rows) with FLOPs and utilisation."""
    quick: bool = False
    """One warm repeat and no UNet-only rows: fits one 10-minute device run."""
    tiny: bool = False
    """Tiny random models (16 x 16 latents) instead of both models: checks the script on a CPU."""
    threads: int | None = None
    """torch intra-op threads on a CPU (None: torch's default)."""
    repeats: int = 3
    """Warm calls per row (after the first); the best and the median are reported."""
    peak_tflops: float = 989.0
    """Dense bf16 peak of the GPU for the utilisation of the UNet-only rows (H100 SXM: 989)."""
    out: Path | None = None
    """JSON report (None: ``benchmarks/results/sampling_<device>.json``)."""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def bundled_pipeline(config: BenchConfig):
    """Returns the bundled pipeline with its weights (text encoder per ``--text-encoder``)."""
    from momaplib.diffusion.pipeline import load_pipeline

    kwargs = {"text_encoder": config.text_encoder} if config.text_encoder else {}
    return load_pipeline(config.pipeline, **kwargs)


def random_pipeline(size: int, num_frames: int, unet_kwargs: dict, vae_kwargs: dict, text_dim: int):
    """Returns a ``MoMapPipeline`` of random weights: UNet ``unet_kwargs``, MoMap VAE ``vae_kwargs``."""
    from diffusers import DDIMScheduler

    from momaplib.checkpoints import resolve_checkpoint
    from momaplib.diffusion.pipeline import MoMapPipeline
    from momaplib.diffusion.unet import build_unet
    from momaplib.vae import MoMapVAE, build_image_vae

    torch.manual_seed(0)
    unet = build_unet(latent_channels=32, cross_attention_dim=text_dim, sample_size=size // 8, **unet_kwargs)
    vae = MoMapVAE.build(num_frames=num_frames, latent_channels=32, sample_size=size, **vae_kwargs)
    image_vae = build_image_vae(sample_size=size, **vae_kwargs)  # the MoMap VAE's widths (the bundled ones')
    try:
        scheduler = DDIMScheduler.from_pretrained(resolve_checkpoint("momap-diffusion") / "scheduler")
    except (FileNotFoundError, OSError, ValueError):
        scheduler = DDIMScheduler(
            prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True,
            clip_sample=False,
        )  # fmt: skip
    return MoMapPipeline(unet, vae, image_vae, scheduler, text_encoder=f"none:{text_dim}")


def make_scene(size: int, num_frames: int) -> dict:
    """Returns a MoMap-Sim tabletop scene (reference frame) at ``size`` x ``size`` pixels.

    Sizes above 128 repeat the pixels of the 128 x 128 scene (and scale K), which times the
    same as a scene simulated at that size."""
    from momaplib.sim import SimConfig, simulate

    base = min(size, 128)
    momap = simulate(0, SimConfig(height=base, width=base, num_frames=min(num_frames, 32))).clip.momap
    factor = size // base

    def up(array):
        return np.repeat(np.repeat(array, factor, 0), factor, 1)

    K = momap.K.copy()
    K[:2] *= factor
    return {"image": up(momap.rgb), "xyz": up(momap.xyz[0]), "instance_map": up(momap.instance), "K": K,
            "prompt": momap.prompt or "push the block"}  # fmt: skip


def time_calls(call, repeats: int) -> dict:
    """Returns first-call, best and median seconds of ``call`` (``repeats`` warm calls)."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"first_call_s": first, "seconds": min(times), "median_s": statistics.median(times)}


def end_to_end_rows(name: str, pipe, scene: dict, config: BenchConfig, report: dict, save) -> None:
    """Times eager fp32 and the fast path on ``scene``; appends rows to ``report["rows"]``."""
    from momaplib.diffusion.fast import CPU_SCHEDULER, CPU_STEPS

    device = torch.device(config.device)
    pipe.to(device, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    repeats = 1 if config.quick else config.repeats
    scale = float(np.median(scene["xyz"][..., 2]))
    settings = [("eager fp32", False, config.steps, None), ("fast", True, config.steps, None)]
    if device.type == "cpu" and name == "bundled":
        settings.append((f"eager fp32, CPU default ({CPU_SCHEDULER} {CPU_STEPS} steps)", False, CPU_STEPS,
                         CPU_SCHEDULER))  # fmt: skip
    outputs = {}
    for label, fast, steps, scheduler in settings:
        row = {"model": name, "setting": label, "steps": steps, "scheduler": scheduler or "pipeline's"}
        if fast:
            pipe.enable_fast_sampling()
            row["fast_config"] = {k: str(v) for k, v in asdict(pipe._fast_sampler.config).items()}
        else:
            pipe.disable_fast_sampling()

        def call(steps=steps, scheduler=scheduler):
            generator = torch.Generator().manual_seed(0)
            output = pipe(**scene, num_samples=config.num_samples, num_inference_steps=steps,
                          guidance_scale=config.guidance, scheduler=scheduler, generator=generator,
                          progress=False)  # fmt: skip
            return output.xyz  # numpy: the call has finished on the device

        try:
            if fast and device.type == "cuda":
                call()  # CUDA graphs are recorded on the second call of a shape: warm up twice
            row.update(time_calls(call, repeats))
            outputs[label] = call()
            row["seconds_per_sample"] = row["seconds"] / config.num_samples
            if fast:
                difference = float(np.abs(outputs[label] - outputs["eager fp32"]).max())
                row.update(max_abs_difference_m=difference, max_abs_difference_over_scale=difference / scale)
                row["speedup"] = report_row(report, name, "eager fp32")["seconds"] / row["seconds"]
        except Exception as error:  # one failing row (a compile error on the device) must not lose the rest
            row["error"] = f"{type(error).__name__}: {error}"[:2000]
        finally:
            pipe.disable_fast_sampling()
            torch._dynamo.reset()
        report["rows"].append(row)
        print_row(row)
        save()


def report_row(report: dict, model: str, setting: str) -> dict:
    return next(r for r in report["rows"] if r["model"] == model and r["setting"] == setting)


def unet_loop_rows(name: str, unet, config: BenchConfig, report: dict, save) -> None:
    """Times ``steps`` calls of the UNet alone on 2N rows (fp32 eager, bf16 compiled + CUDA graphs)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(config.device)
    settings = [("UNet loop fp32 eager", torch.float32, None)]
    if device.type == "cuda":
        settings.append(("UNet loop bf16 compile + CUDA graphs", torch.bfloat16, "reduce-overhead"))
    size = unet.config.sample_size
    for label, dtype, mode in settings:
        row = {"model": name, "setting": label}
        try:
            model = unet.to(device, dtype).eval()
            sample = torch.randn(
                2 * config.num_samples, unet.config.in_channels, size, size, device=device, dtype=dtype
            )
            text = torch.randn(
                2 * config.num_samples, 77, unet.config.cross_attention_dim, device=device, dtype=dtype
            )
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(sample, torch.tensor([500], device=device), encoder_hidden_states=text)
            flops = float(counter.get_total_flops())
            runner = torch.compile(model, mode=mode) if mode else model
            timesteps = torch.linspace(999, 0, config.steps, device=device).long()

            def loop(runner=runner, sample=sample, text=text, timesteps=timesteps):
                with torch.no_grad():
                    for t in timesteps:
                        runner(sample, t, encoder_hidden_states=text)
                if device.type == "cuda":
                    torch.cuda.synchronize()

            if mode:
                loop()
            row.update(time_calls(loop, config.repeats))
            tflops = flops * config.steps / row["seconds"] / 1e12
            row.update(unet_gflops_per_call=flops / 1e9, tflops=tflops,
                       mfu=tflops / config.peak_tflops if device.type == "cuda" else None)  # fmt: skip
        except Exception as error:
            row["error"] = f"{type(error).__name__}: {error}"[:2000]
        finally:
            torch._dynamo.reset()
        unet.to("cpu", torch.float32)
        report["rows"].append(row)
        print_row(row)
        save()


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['model']:12s} {row['setting']:48s} ERROR {row['error'][:200]}", flush=True)
        return
    extra = f"  x{row['speedup']:.1f}" if "speedup" in row else ""
    extra += f"  |fast-eager| {row['max_abs_difference_m']:.2e} m" if "max_abs_difference_m" in row else ""
    seconds = f"{row['seconds']:8.3f} s (first {row['first_call_s']:6.1f} s)"
    print(f"{row['model']:12s} {row['setting']:48s} {seconds}{extra}", flush=True)


def models(config: BenchConfig):
    """Yields (name, pipeline factory, size, num_frames) of the models to time."""
    if config.tiny:
        small = {
            "block_out_channels": (32, 32),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "attention_head_dim": 4,
        }
        vae = {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4}
        yield "tiny", lambda: random_pipeline(32, 4, small, vae, 16), 32, 4
        return
    yield "bundled", lambda: bundled_pipeline(config), None, None
    if config.paper_sized:
        sd15 = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2}
        vae = {"block_out_channels": (32, 64, 64, 64), "layers_per_block": 2}
        yield "paper-sized", lambda: random_pipeline(256, 50, sd15, vae, 768), 256, 50


def main(config: BenchConfig) -> dict:
    """Runs every row, prints the table and writes the JSON report; returns the report."""
    import diffusers

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    tag = re.sub(r"[^a-z0-9]+", "_", "cpu" if device.type == "cpu" else device_name(device).lower()).strip(
        "_"
    )
    out = config.out or Path(__file__).parent / "results" / f"sampling_{tag}.json"
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "device": device_name(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_start": os.getloadavg()[0],
        "targets_s": TARGETS,
        "rows": [],
    }

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))

    settings = f"{config.num_samples} samples, {config.steps} steps, guidance {config.guidance}"
    print(f"{settings}, on {report['device']}")
    for name, factory, size, num_frames in models(config):
        try:
            pipe = factory()
        except (FileNotFoundError, OSError, ValueError, ImportError) as error:
            print(f"{name}: skipped ({type(error).__name__}: {error})")
            report.setdefault("skipped", {})[name] = str(error)
            continue
        size = size or pipe.unet.config.sample_size * 8
        num_frames = num_frames or pipe.num_frames
        row_params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
        report.setdefault("models", {})[name] = {
            "size": size,
            "num_frames": num_frames,
            "unet_params_m": row_params,
        }
        print(f"{name}: {size} x {size}, T = {num_frames}, UNet {row_params:.0f} M parameters")
        end_to_end_rows(name, pipe, make_scene(size, num_frames), config, report, save)
        if config.unet_loop and not config.quick:
            unet_loop_rows(name, pipe.unet, config, report, save)
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    summarise(report)
    report["load_average_1min_end"] = os.getloadavg()[0]
    save()
    print(f"wrote {out}")
    return report


def summarise(report: dict) -> None:
    """Adds the fast/eager verdict per model (and against the targets on CUDA) and prints it."""
    verdicts = {}
    for name in report.get("models", {}):
        rows = {r["setting"]: r for r in report["rows"] if r["model"] == name and "error" not in r}
        if "fast" not in rows or "eager fp32" not in rows:
            continue
        fast, eager = rows["fast"]["seconds"], rows["eager fp32"]["seconds"]
        verdict = {"fast_s": fast, "eager_s": eager, "speedup": eager / fast, "fast_is_faster": fast < eager}
        if name in TARGETS and report["device"] != "cpu":
            verdict["target_s"] = TARGETS[name]
            verdict["target_met"] = fast <= TARGETS[name] and eager / fast >= MIN_SPEEDUP
        verdicts[name] = verdict
        print(f"{name}: fast {fast:.3f} s vs eager fp32 {eager:.3f} s: x{eager / fast:.2f}")
    report["summary"] = verdicts
    if verdicts:
        report["fast_sampling_on_cuda_recommended"] = all(v["fast_is_faster"] for v in verdicts.values())


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
