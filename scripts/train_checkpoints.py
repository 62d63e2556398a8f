"""Reproduces the bundled checkpoints and the model table on one GPU, in one process.

    python scripts/train_checkpoints.py                  # full run (about 45 min on one H100)
    python scripts/train_checkpoints.py --vae momap-vae  # keep the bundled VAEs: data + generators
    python scripts/train_checkpoints.py --vae momap-vae --new-image-vae  # new condition encoder too
    python scripts/train_checkpoints.py --smoke          # every stage at toy size on a CPU

    # the last stage of the bundled UNet (and the 23k-clip baseline of the model card): ~11.7k
    # fresh clips per family simulated straight into latents, no dataset files
    python scripts/train_checkpoints.py --vae momap-vae --clips 160 --init-diffusion momap-diffusion \
        --stream-clips 25000 --stream-minutes 6.5 --sim-device cuda --compile inductor \
        --diffusion-steps 6500 --diffusion-minutes 10.5 --baseline-steps 1400 --baseline-minutes 3.5

Stages: MoMap-Sim data of both families -> the training clips loaded once into (GPU) memory ->
image VAE -> MoMap VAE inflated from it (kept) and from scratch (the ablation, same steps) ->
the kept one's decoder fine-tuned with the displacement term (encoder and latents unchanged) ->
diffusion UNet and the MoMap-VAE baseline on pre-encoded latents -> VAE reconstruction error
and the best-of-10 table on the test split. The same jobs run one by one through ``momap sim``,
``momap train-image-vae``, ``momap train-vae``, ``momap train-diffusion`` and ``momap eval``
(see checkpoints/README.md); this driver only shares one in-memory copy of the data between
them. Rerunning resumes: finished stages are skipped, training continues from checkpoints.
fp16 bundles for ``checkpoints/`` are written to ``<runs>/bundles`` as stages finish.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--runs", type=Path, default=Path("outputs/checkpoint-runs"))
    parser.add_argument("--text-encoder", default="minilm", help="spec used in training, e.g. minilm:/path")
    parser.add_argument("--clips", type=int, default=2500, help="clips per family")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=1.0, help="scale of the per-stage time limits")
    parser.add_argument("--eval-clips", type=int, default=100, help="test clips per family in the table")
    parser.add_argument(
        "--vae", help="use this MoMap VAE (folder or bundled name, e.g. momap-vae) and skip the VAE stages"
    )
    parser.add_argument("--image-vae", default="image-vae", help="image VAE that goes with --vae")
    parser.add_argument(
        "--new-image-vae",
        action="store_true",
        help="with --vae: train a new image VAE for the condition latents instead of taking --image-vae",
    )
    parser.add_argument("--image-vae-steps", type=int, default=6000)
    parser.add_argument("--image-vae-batch", type=int, default=64)
    parser.add_argument("--image-vae-minutes", type=float, help="time limit (default 5 x --minutes)")
    parser.add_argument(
        "--decoder-steps", type=int, default=4500,
        help="then fine-tune the MoMap VAE's decoder this long with the displacement term (0: skip)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1024, help="batch of the generator runs")
    parser.add_argument("--lr", type=float, default=4e-4, help="peak learning rate of those runs")
    parser.add_argument("--diffusion-steps", type=int, default=6500)
    parser.add_argument("--baseline-steps", type=int, default=2000)
    parser.add_argument("--diffusion-minutes", type=float, help="time limit (default 16.5 x --minutes)")
    parser.add_argument("--baseline-minutes", type=float, help="time limit (default 4 x --minutes)")
    parser.add_argument("--init-diffusion", help="continue from this MoMapPipeline (folder or bundled name)")
    parser.add_argument("--init-baseline", help="continue from this MoMapVAEPipeline instead of scratch")
    parser.add_argument(
        "--stream-clips", type=int, default=0,
        help="train the generators on this many freshly simulated clips per family, encoded as they "
        "come (no files; momaplib.diffusion.latents.simulate_latents) instead of the --clips datasets",
    )  # fmt: skip
    parser.add_argument("--stream-first-index", type=int, default=0, help="first clip index streamed")
    parser.add_argument("--stream-minutes", type=float, default=0.0, help="time limit of streaming (0: none)")
    parser.add_argument(
        "--stream-variants", type=int, default=1,
        help="task variants per streamed scene (SimConfig.task_variant 0..N-1: same scene, other targets)",
    )  # fmt: skip
    parser.add_argument(
        "--sim-device", default="cpu", help="ray-casting device of streamed clips (cuda: ~2x)"
    )
    parser.add_argument("--motion-weight", type=float, default=0.0, help="TrainDiffusionJob.motion_weight")
    parser.add_argument(
        "--grounding",
        action="store_true",
        help="TrainDiffusionJob.grounding: grounder + grounding-map channel",
    )
    parser.add_argument("--compile", default="", help="TrainDiffusionJob.compile of the UNet, e.g. inductor")
    parser.add_argument("--skip-eval", action="store_true", help="stop before the table")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()

    from diffusers import AutoencoderKL

    from momaplib.data import SimJob
    from momaplib.diffusion.train import TrainDiffusionJob
    from momaplib.eval import EvalJob
    from momaplib.sim import SimConfig
    from momaplib.training import InMemoryDataset, TrainConfig, open_datasets
    from momaplib.vae import MoMapVAE
    from momaplib.vae.train import TrainImageVAEJob, TrainVAEJob, evaluate_reconstruction

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    runs, bundles = args.runs, args.runs / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    sets = (args.data / "sim_tabletop", args.data / "sim_egocentric")
    started = time.perf_counter()

    def stamp(message: str) -> None:
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)

    def minutes(value: float) -> float:
        return value * args.minutes

    def train_config(name: str, steps: int, batch: int, lr: float, limit: float, **extra) -> TrainConfig:
        if args.smoke:
            steps, batch, extra = 4, 2, {**extra, "validate_every": 0}
        defaults = dict(lr_warmup_steps=100, checkpoint_every=500, validate_every=1000, num_workers=0)
        return TrainConfig(
            runs / name, max_steps=steps, batch_size=batch, learning_rate=lr, seed=0,
            mixed_precision="bf16" if cuda else "no", progress=False,
            time_limit_minutes=0.0 if args.smoke else limit, **{**defaults, **extra},
        )  # fmt: skip

    small = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4) if args.smoke else {}

    # 1. data
    for path, family in zip(sets, ("tabletop", "egocentric"), strict=True):
        stamp(f"sim {family}")
        sim = SimConfig(family=family)
        SimJob(
            out=path, num_clips=40 if args.smoke else args.clips, smoke=args.smoke, sim=sim,
            workers=0 if args.smoke else args.workers, progress=False,
        ).run()  # fmt: skip

    # 2. the training clips, once, in memory (on the GPU when there is one)
    stamp("load training clips")
    memory = InMemoryDataset.load(
        open_datasets(sets, "train"), device=device, num_workers=0 if args.smoke else args.workers,
        batch_size=32, progress=False,
    )  # fmt: skip
    stamp(f"{len(memory)} clips in memory ({memory.nbytes / 2**30:.1f} GiB)")

    # 3. image VAE (skipped with --vae unless --new-image-vae) and 4. MoMap VAEs (skipped with --vae)
    vae_folder, image_vae_folder = str(runs / "momap-vae/model"), str(runs / "image-vae/model")
    if args.vae:
        vae_folder = args.vae
        image_vae_folder = image_vae_folder if args.new_image_vae else args.image_vae
    if (not args.vae or args.new_image_vae) and not (runs / "image-vae/model").is_dir():
        stamp("image VAE")
        limit = args.image_vae_minutes or minutes(5.0)
        config = train_config("image-vae", args.image_vae_steps, args.image_vae_batch, 4e-4, limit)
        TrainImageVAEJob(sets, config, **small).run(memory)
    # 4. MoMap VAE: inflated (kept) and scratch (ablation), the same step budget
    for name, init in (("momap-vae", "inflate"), ("momap-vae-scratch", "scratch")):
        if not args.vae and not (runs / name / "model").is_dir():
            stamp(f"MoMap VAE ({init})")
            config = train_config(name, 2000, 32, 4e-4, minutes(2.6), validate_every=500)
            TrainVAEJob(sets, config, init=init, image_vae=str(runs / "image-vae/model"), **small).run(memory)
    # 4b. the inflated VAE's decoder alone, with the displacement term: same encoder and latents
    if not args.vae and args.decoder_steps:
        if not (runs / "momap-vae-decoder" / "model").is_dir():
            stamp("MoMap VAE decoder fine-tune")
            config = train_config(
                "momap-vae-decoder", args.decoder_steps, 64, 1e-4, minutes(4.7), validate_every=1500
            )
            TrainVAEJob(
                sets,
                config,
                init="pretrained",
                pretrained=vae_folder,
                trainable="decoder",
                displacement_weight=1.0,
            ).run(memory)
        vae_folder = str(runs / "momap-vae-decoder/model")
    if not args.vae and not (runs / "vae_eval.json").is_file():
        stamp("VAE reconstruction on the test split")
        test = open_datasets(sets, "test")
        scores = {}
        for name in ("momap-vae", "momap-vae-scratch", "momap-vae-decoder"):
            if not (runs / name / "model").is_dir():
                continue
            vae = MoMapVAE.from_pretrained(runs / name / "model").to(device).eval()
            scores[name] = {
                **evaluate_reconstruction(vae, test),
                "steps": max(json.loads(line)["step"] for line in open(runs / name / "metrics.jsonl")),
            }
            print(name, scores[name], flush=True)
        (runs / "vae_eval.json").write_text(json.dumps(scores, indent=2))

    # 5. diffusion UNet and the MoMap-VAE baseline, sharing the pre-encoded latents
    frozen = dict(
        vae=vae_folder, image_vae=image_vae_folder,
        text_encoder=args.text_encoder, pipeline_text_encoder="minilm",
    )  # fmt: skip
    unet_small = (
        dict(block_out_channels=(16, 16), layers_per_block=1, val_samples=2, val_steps=2)
        if args.smoke
        else {}
    )
    jobs = {
        "diffusion": dict(model="diffusion", steps=args.diffusion_steps, bundle="momap-diffusion",
                          limit=args.diffusion_minutes or 16.5 * args.minutes, init=args.init_diffusion),
        "baseline": dict(model="momap-vae", steps=args.baseline_steps, bundle="momap-vae-baseline",
                         limit=args.baseline_minutes or 4.0 * args.minutes, block_out_channels=(64, 128, 128),
                         init=args.init_baseline),
    }  # fmt: skip
    if args.stream_clips and not (runs / "diffusion/latents_train.safetensors").is_file():
        stamp(f"simulate and encode {args.stream_clips} clips per family")
        from dataclasses import replace

        from momaplib.checkpoints import resolve_checkpoint
        from momaplib.diffusion.latents import save_latent_set, simulate_latents
        from momaplib.diffusion.text import load_text_encoder

        configs = [replace(SimConfig(family=f), device=args.sim_device) for f in ("tabletop", "egocentric")]
        configs = [config.smoke() for config in configs] if args.smoke else configs
        streamed = simulate_latents(
            configs, args.stream_clips, MoMapVAE.from_pretrained(vae_folder).to(device).eval(),
            AutoencoderKL.from_pretrained(resolve_checkpoint(image_vae_folder)).to(device).eval(),
            load_text_encoder(args.text_encoder, device), device=device,
            first_index=args.stream_first_index, workers=0 if args.smoke else args.workers,
            time_limit_minutes=args.stream_minutes, progress=False, task_variants=args.stream_variants,
        )  # fmt: skip
        stamp(f"{len(streamed)} streamed clips")
        (runs / "diffusion").mkdir(parents=True, exist_ok=True)
        save_latent_set(streamed, runs / "diffusion/latents_train.safetensors")
    for name, spec in jobs.items():
        if (runs / name / "pipeline").is_dir():
            continue
        if name == "baseline" and (runs / "diffusion/latents_train.safetensors").is_file():
            (runs / name).mkdir(parents=True, exist_ok=True)
            for file in (runs / "diffusion").glob("latents_train.*"):
                shutil.copy(file, runs / name / file.name)
        stamp(f"train {name}")
        config = train_config(
            name, spec["steps"], args.batch_size, args.lr, spec["limit"], validate_every=2000,
            lr_warmup_steps=300,
        )  # fmt: skip
        extra = {"block_out_channels": spec["block_out_channels"]} if "block_out_channels" in spec else {}
        if spec["init"]:
            extra.update(init="pretrained", pretrained=spec["init"])
        if name == "diffusion":
            extra.update(motion_weight=args.motion_weight, compile=args.compile, grounding=args.grounding)
        job = TrainDiffusionJob(
            sets, config, model=spec["model"], bundle_dir=bundles / spec["bundle"], num_val_clips=4,
            **frozen, **{**extra, **unet_small},
        )  # fmt: skip
        job.run(memory)
    shutil.rmtree(bundles / "momap-vae-baseline/vae", ignore_errors=True)  # shared with momap-diffusion
    shutil.rmtree(bundles / "momap-vae-baseline/image_vae", ignore_errors=True)
    del memory
    torch.cuda.empty_cache() if cuda else None

    # 6. the table: best of 10 on the test split
    if not args.skip_eval and not (runs / "table/table.md").is_file():
        stamp("eval")
        EvalJob(
            datasets=sets, split="test", max_clips=2 if args.smoke else args.eval_clips, num_samples=10,
            baselines=("static",),
            pipelines=(
                f"MoMap-VAE={runs / 'baseline/pipeline'}",
                f"Ours (text)={runs / 'diffusion/pipeline'}",
                f"Ours (no text)={runs / 'diffusion/pipeline'}:no-text",
            ),
            text_encoder=args.text_encoder, device=device, out=runs / "table", progress=False,
        ).run()  # fmt: skip
    stamp("done")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
