"""Does a MoMap UNet inflated from the image prior learn as fast as one from scratch? Training loss only.

    python benchmarks/probe_inflation.py --clips 40 --steps 500        # CPU, about 10 minutes per init
    python benchmarks/probe_inflation.py --inits scratch zero shrink --steps 350 --lr 1e-4

Simulates ``--clips`` train clips per family once (``--data``), encodes them once with the MoMap
VAE (the first run's latent cache, hard-linked into the others), then trains one small
``TrainDiffusionJob`` per initialisation (on the GPU when there is one) on exactly those latents,
the same seed, steps, batch and schedule, and prints the mean training loss per ``--bin`` steps
(markdown) and writes JSON with the device name. The initialisations:

- ``scratch``: random weights (Table 2's ``no-unet-init``);
- ``zero``: inflated from ``--prior``, the noisy latent's first-layer weights at zero (the default);
- ``duplicate``: inflated, Marigold's first layer (``inflate_unet(noisy_input="duplicate")``);
- ``shrink``: ``zero``, then every weight scaled by ``--shrink`` and Gaussian noise of std
  ``--perturb`` added ("shrink and perturb", the remedy known for warm-started networks).

It measures how fast each fits the training set, not how well it generalises: that is Table 2's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

INITS = ("scratch", "zero", "duplicate", "shrink")


def shrink_perturb(module: torch.nn.Module, shrink: float, perturb: float, seed: int = 0) -> torch.nn.Module:
    """Scales every parameter of ``module`` by ``shrink`` and adds N(0, ``perturb``²) noise, in place."""
    if not 0 < shrink <= 1 or perturb < 0:
        raise ValueError(
            f"shrink / perturb: expected 0 < shrink <= 1 and perturb >= 0, got {shrink}, {perturb}"
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator) * perturb
            parameter.mul_(shrink).add_(noise.to(parameter.device, parameter.dtype))
    return module


def binned(losses: list[float], size: int) -> list[float]:
    """Means of consecutive groups of ``size`` losses (the last group may be shorter)."""
    return [sum(losses[i : i + size]) / len(losses[i : i + size]) for i in range(0, len(losses), size)]


def main(argv: list[str] | None = None) -> dict:
    from momaplib.data import write_dataset
    from momaplib.diffusion import train as diffusion_train
    from momaplib.diffusion.prepare import link_latent_cache
    from momaplib.eval.generalisation import environment
    from momaplib.sim import SimConfig
    from momaplib.training import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inits", nargs="+", default=["scratch", "zero", "duplicate"], choices=INITS)
    parser.add_argument(
        "--prior", default="image-diffusion", help="image prior (folder, bundled name, hub id)"
    )
    parser.add_argument("--vae", default="momap-vae")
    parser.add_argument("--image-vae", default="image-vae")
    parser.add_argument("--clips", type=int, default=40, help="train clips per family")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 96, 128], help="the prior's widths")
    parser.add_argument("--shrink", type=float, default=0.5)
    parser.add_argument("--perturb", type=float, default=0.01)
    parser.add_argument("--bin", type=int, default=50)
    parser.add_argument("--data", type=Path, default=Path("outputs/probe_inflation/data"))
    parser.add_argument("--out", type=Path, default=Path("outputs/probe_inflation"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a quick check that the script runs")
    args = parser.parse_args(argv)

    datasets = []
    for family in ("tabletop", "egocentric"):
        sim = SimConfig(family=family)
        write_dataset(args.data / family, sim.smoke() if args.smoke else sim, args.clips, progress=False)
        datasets.append(args.data / family)
    inflate = diffusion_train.inflate_unet
    results, first = {}, None
    for name in args.inits:
        run = args.out / name
        if first is not None:  # the same latents: the first run's cache
            link_latent_cache(first / "latents_train.safetensors", run)
        if name == "shrink":
            diffusion_train.inflate_unet = lambda *a, **k: shrink_perturb(
                inflate(*a, **k), args.shrink, args.perturb
            )
        started = time.perf_counter()
        try:
            diffusion_train.TrainDiffusionJob(
                tuple(datasets),
                TrainConfig(
                    run, max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, seed=0,
                    lr_warmup_steps=args.warmup, validate_every=0, checkpoint_every=10**9, progress=False,
                    num_workers=0,
                ),
                vae=args.vae, image_vae=args.image_vae, grounding=True, num_val_clips=0,
                block_out_channels=tuple(args.widths), init="scratch" if name == "scratch" else "inflate",
                image_unet=None if name == "scratch" else args.prior,
                inflate_input="duplicate" if name == "duplicate" else "zero", smoke=args.smoke,
            ).run()  # fmt: skip
        finally:
            diffusion_train.inflate_unet = inflate
        losses = [json.loads(line)["loss"] for line in open(run / "metrics.jsonl") if '"loss"' in line]
        results[name] = {"seconds": time.perf_counter() - started, "loss": binned(losses, args.bin)}
        first = first or run
    bins = max(len(r["loss"]) for r in results.values())
    lines = ["| init | " + " | ".join(f"{i * args.bin}-{(i + 1) * args.bin}" for i in range(bins)) + " |"]
    lines.append("|---|" + "---:|" * bins)
    lines += [f"| {n} | " + " | ".join(f"{v:.3f}" for v in r["loss"]) + " |" for n, r in results.items()]
    print("\n".join(lines))
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, **environment(), "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe_inflation.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
