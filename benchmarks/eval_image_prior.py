"""The image prior (the kit's stand-in for Stable Diffusion) against MoMap-Sim frames it never saw.

    python benchmarks/eval_image_prior.py --prior checkpoints/image-diffusion   # or a pipeline folder
    python benchmarks/eval_image_prior.py --prior outputs/paper/bundles/image-diffusion --wide \\
        --figure checkpoints/image-diffusion/samples.png

Simulates the reference frames of ``--train-clips`` train clips and ``--test-clips`` test clips per
family (``--wide``: each also with the retrain's ``wide`` config: camera randomisation, a room,
clutter, appearance and a structured-light sensor), samples the prior once per test caption, and
reports family accuracy, the nearest-train distance and sharpness of real test frames, of samples
and of the test frames through the image VAE alone (``momaplib.eval.image_prior``); ``--vae``
decodes with another image VAE (a fine-tuned decoder of the same latent space). Prints a markdown
table, writes JSON (settings, device name, torch version) and a figure of samples beside real frames.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from momaplib.eval.generalisation import environment
from momaplib.eval.image_prior import (
    evaluate_image_prior,
    prior_markdown,
    prior_samples_figure,
    reference_frames,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prior", default="image-diffusion", help="ImageDiffusionPipeline folder, bundled name or hub id"
    )
    parser.add_argument("--train-clips", type=int, default=150, help="train clips per family (and config)")
    parser.add_argument("--test-clips", type=int, default=24, help="test clips per family (and config)")
    parser.add_argument("--wide", action="store_true", help="mix in the retrain's wide config")
    parser.add_argument(
        "--vae", help="decode with this AutoencoderKL instead of the pipeline's (e.g. a fine-tuned decoder)"
    )
    parser.add_argument(
        "--split", choices=("test", "val"), default="test",
        help="frames to score: test for reports, val to choose between models (e.g. decoders)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=25, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/image_prior.json"))
    parser.add_argument("--figure", type=Path, default=Path("outputs/benchmarks/image_prior_samples.png"))
    args = parser.parse_args(argv)
    for name in ("train_clips", "test_clips", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")

    from momaplib.diffusion.image_prior import ImageDiffusionPipeline
    from momaplib.sim import SimConfig

    started = time.perf_counter()
    configs = [SimConfig(), SimConfig().wide()] if args.wide else [SimConfig()]
    train = reference_frames(args.train_clips, "train", args.seed, configs, progress=True)
    test = reference_frames(args.test_clips, args.split, args.seed, configs, progress=True)
    extra = {}
    if args.vae:
        from diffusers import AutoencoderKL

        from momaplib.checkpoints import resolve_checkpoint

        extra["vae"] = AutoencoderKL.from_pretrained(resolve_checkpoint(args.vae), torch_dtype=torch.float32)
    pipe = ImageDiffusionPipeline.from_pretrained(args.prior, torch_dtype=torch.float32, **extra).to(
        args.device
    )
    rows, samples = evaluate_image_prior(pipe, train, test, args.steps, args.guidance, args.seed)
    print(prior_markdown(rows))
    record = {
        "rows": rows, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": time.perf_counter() - started, **environment(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure = prior_samples_figure(test, samples)
    figure.savefig(args.figure, dpi=110)
    plt.close(figure)
    print(f"wrote {args.out} and {args.figure} in {record['seconds']:.0f} s")
    return record


if __name__ == "__main__":
    main()
