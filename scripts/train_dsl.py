"""Trains the bundled ``momap-diffusion-dsl``: a MoMap UNet conditioned on the motion DSL, without text.

    python scripts/train_dsl.py --sim-device cuda      # the bundled run (one GPU, about 8 minutes)
    python scripts/train_dsl.py --smoke                # toy sizes on a CPU

Paper §3.4.2: the global text condition is replaced by the motion DSL painted on the pixels. The
training clips are simulated and encoded as they come (``momaplib.diffusion.latents
.simulate_latents``, train split only), each with its GT DSL (``momaplib.control.batch``); the UNet
reads rgb, instance, xyz and the DSL (``conditions``), the DSL dropped to zeros with probability
``--dsl-dropout`` for classifier-free guidance. The text encoder is ``none:8`` (one zero token of
width 8: the UNet's cross-attention has nothing to read, so it stays small). The pipeline shares
``vae`` and ``image_vae`` with ``momap-diffusion``; its fp16 bundle is written to
``<runs>/bundles/momap-diffusion-dsl``. Validation (best of N with the GT DSL) runs on small
``momap sim`` datasets written first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("outputs/dsl-runs"))
    parser.add_argument("--stream-clips", type=int, default=8000, help="scenes per family to simulate")
    parser.add_argument("--stream-variants", type=int, default=2, help="task variants per scene")
    parser.add_argument("--stream-minutes", type=float, default=3.0, help="time limit of the simulation")
    parser.add_argument("--sim-device", default="cpu", help="ray-casting device (cuda: ~2x)")
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=4.0, help="time limit of the training")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dsl-dropout", type=float, default=0.1)
    parser.add_argument("--val-clips", type=int, default=4, help="validation clips per family")
    parser.add_argument("--compile", default="", help='torch.compile backend of the UNet ("inductor")')
    parser.add_argument("--smoke", action="store_true", help="toy sizes on a CPU")
    args = parser.parse_args()

    from diffusers import AutoencoderKL

    from momaplib.checkpoints import resolve_checkpoint, write_weight_manifest
    from momaplib.data import SimJob
    from momaplib.diffusion.latents import save_latent_set, simulate_latents
    from momaplib.diffusion.text import load_text_encoder
    from momaplib.diffusion.train import TrainDiffusionJob
    from momaplib.sim import SimConfig
    from momaplib.training import TrainConfig
    from momaplib.vae import MoMapVAE

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    runs, text_encoder = args.runs, "none:8"
    started = time.perf_counter()

    def stamp(message: str) -> None:
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)

    sets = tuple(runs / f"val_{family}" for family in ("tabletop", "egocentric"))
    for path, family in zip(sets, ("tabletop", "egocentric"), strict=True):
        if not (path / "manifest.json").is_file():
            stamp(f"sim {family} (validation clips)")
            num = 20 if args.smoke else max(40, 20 * args.val_clips)  # ~5 % of them land in val
            workers = 0 if args.smoke else args.workers
            SimJob(
                out=path, num_clips=num, sim=SimConfig(family=family), workers=workers, progress=False
            ).run()
    cache = runs / "dsl/latents_train.safetensors"
    if not cache.is_file():
        stamp(f"simulate and encode {args.stream_clips} scenes per family")
        configs = [replace(SimConfig(family=f), device=args.sim_device) for f in ("tabletop", "egocentric")]
        streamed = simulate_latents(
            configs,
            4 if args.smoke else args.stream_clips,
            MoMapVAE.from_pretrained(resolve_checkpoint("momap-vae")).to(device).eval(),
            AutoencoderKL.from_pretrained(resolve_checkpoint("image-vae")).to(device).eval(),
            load_text_encoder(text_encoder, device),
            device=device,
            workers=0 if args.smoke else args.workers,
            time_limit_minutes=0 if args.smoke else args.stream_minutes,
            progress=False,
            task_variants=args.stream_variants,
        )
        stamp(f"{len(streamed)} streamed clips")
        save_latent_set(streamed, cache)
    stamp("train")
    config = TrainConfig(
        runs / "dsl",
        max_steps=4 if args.smoke else args.steps,
        batch_size=2 if args.smoke else args.batch_size,
        learning_rate=args.lr,
        lr_warmup_steps=0 if args.smoke else 300,
        checkpoint_every=1000,
        validate_every=0 if args.smoke else 2000,
        mixed_precision="bf16" if cuda else "no",
        seed=0,
        num_workers=0,
        progress=False,
        time_limit_minutes=0.0 if args.smoke else args.minutes,
        weight_decay=1e-2,
    )
    bundle = runs / "bundles/momap-diffusion-dsl"
    TrainDiffusionJob(
        sets,
        config,
        conditions=("rgb", "instance", "xyz", "dsl"),
        text_encoder=text_encoder,
        block_out_channels=(16, 16) if args.smoke else tuple(args.widths),
        layers_per_block=args.layers,
        dsl_dropout=args.dsl_dropout,
        num_val_clips=1 if args.smoke else args.val_clips,
        val_samples=4,
        compile=args.compile,
        bundle_dir=bundle,
    ).run()
    for shared in ("vae", "image_vae"):  # the bundled momap-diffusion's; from_pretrained fills them in
        shutil.rmtree(bundle / shared, ignore_errors=True)
    write_weight_manifest(bundle)
    stamp(f"done: {bundle}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
