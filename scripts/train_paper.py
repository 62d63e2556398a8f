"""Trains what the paper's Tables 1 and 2 compare, and the bundle that ships the full method.

    python scripts/train_paper.py --runs outputs/paper                      # every stage, in order
    python scripts/train_paper.py --runs outputs/paper --stages data image-vae momap-vae
    python scripts/train_paper.py --runs outputs/paper2 --warm outputs/paper/bundles  # continue codecs, prior
    python scripts/train_paper.py --runs outputs/paper3 --stages latents bundle --latent-codecs vae \
        --continue-from outputs/paper2/bundles   # continue the bundle (the codecs: outputs/paper3's)
    python scripts/train_paper.py --runs outputs/final --frozen retrain --stages data latents bundle
    python scripts/train_paper.py --smoke                                   # toy sizes on a CPU

Stages (each skipped when its output exists, so a rerun continues; ``--stages`` picks some):

- ``data``: MoMap-Sim datasets of both families, ``base_<family>`` as simulated (``SimConfig``
  defaults, what the test tables are scored on) and ``wide_<family>`` (camera randomisation, a
  room, clutter, appearance randomisation and a structured-light sensor: geometry, cameras and
  sensors the default never draws).
- ``image-vae``: the condition encoder on the frames and XYZ maps of all four, plus procedural
  geometry (``momaplib.data.procedural``) and geometric augmentation.
- ``image-vae-decoder``: that image VAE's decoder alone, with a patch-adversarial term
  (``--adversarial-weight``, ``momaplib.vae.adversarial``) so decodes (and the prior's samples)
  are not blurred; the latent space stays, so it may run at any time after ``image-vae``. Writes
  ``image-vae-decoder-<weight>/`` and ``bundles/image-vae-gan-<weight>``.
- ``momap-vae`` / ``momap-vae-scratch``: the MoMap VAE inflated from that image VAE (kept) and
  from scratch (Table 2's "no unet&vae init"), the same steps, both with the moving-point weight,
  procedural geometry and augmentation (a quarter of the items with a region without data,
  ``--holes``) and the displacement term ``x_t - x_0`` (``--displacement-weight``); then each one's
  decoder alone, with the displacement term (``--decoder-steps 0``: none; the first stage is the bundle).
- ``image-prior``: the text-to-image UNet over the image VAE (the stand-in for Stable Diffusion), on
  the data folders' reference frames and, once the ``latents`` stage has run, its scenes' frames.
- ``latents``: streamed clips (both families, ``base`` and ``wide`` configs, ``--motion-variants``
  futures per scene) encoded once per codec: the VAE, the scratch VAE and the raw MoMap.
- ``ablations``: Table 2's six rows with one budget (steps, batch, learning rate, seed):
  ``full`` (UNet inflated from the image prior, VAE), ``no-xyz``, ``no-sem``, ``no-vae`` (raw MoMap),
  ``no-unet-init`` (UNet from scratch), ``no-unet-vae-init`` (both from scratch).
- ``bundle``: the shipped ``momap-diffusion``: the ``full`` row's recipe (UNet inflated from the image
  prior, the VAE's latents, every condition) trained for ``--bundle-steps``; it does not need the
  ablations, so it can be trained first.
- ``distill``: ``momap-diffusion-lcm``, the bundle's latent-consistency student (few steps, no
  guidance; ``momaplib.diffusion.distill``), on the bundle's latent cache, ``--distill-steps`` long:
  LoRA adapters on the bundle's UNet (``--distill-lora-rank``), a few MiB to bundle.
- ``baseline``: Table 1's MoMap-VAE baseline (a conditional VAE in the same latent space).
- ``dsl``: ``momap-diffusion-dsl``, the UNet conditioned on the motion DSL instead of text.
- ``gflow``: Table 1's GeneralFlow-style baselines (``gflow-original``, ``-rollout``, ``-extend``).

``--frozen FOLDER`` uses the image VAE, both MoMap VAEs and the prior of a folder of final ones
(``image-vae``, ``momap-vae``, ``momap-vae-scratch`` and, if there, ``image-diffusion``; ``retrain/``)
as they are: their stages (decoder stages too) are skipped (``--warm`` continues what still trains).
``--warm`` continues the codecs and the prior from an earlier run's bundles with a fresh schedule at
half the peak learning rate (a budget cut into short runs, each annealed to its own step count);
``--continue-from`` does the same for the generators (the bundle, baseline and DSL model, at
``--lr``), ``--latent-codecs vae`` streams only the latents those need, and ``--stream-first-index``
starts the stream past an earlier run's scenes, so a continued generator meets new ones.

fp16 bundles go to ``<runs>/bundles``. The evaluation is ``benchmarks/eval_tables.py``. Independent
stages can run side by side on one GPU as separate processes (e.g. ``--stages momap-vae`` and
``--stages image-prior`` after ``image-vae``): outputs are written atomically by the jobs.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from train_paper_parts import FAMILIES, stream_latents, use_frozen

STAGES = ("data", "image-vae", "image-vae-decoder", "momap-vae", "momap-vae-scratch", "image-prior")
STAGES += ("latents", "ablations", "bundle", "distill", "baseline", "dsl", "gflow")
#: Table 2's rows: (conditions, codec, init) — codec "vae" / "scratch" / "raw", init "prior" / "scratch"
ABLATIONS = {
    "full": (("rgb", "instance", "xyz", "text"), "vae", "prior"),
    "no-xyz": (("rgb", "instance", "text"), "vae", "prior"),
    "no-sem": (("rgb", "xyz", "text"), "vae", "prior"),
    "no-vae": (("rgb", "instance", "xyz", "text"), "raw", "prior"),
    "no-unet-init": (("rgb", "instance", "xyz", "text"), "vae", "scratch"),
    "no-unet-vae-init": (("rgb", "instance", "xyz", "text"), "scratch", "scratch"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("outputs/paper"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=STAGES)
    parser.add_argument("--only", nargs="+", help="ablations/gflow: train only these rows")
    parser.add_argument("--text-encoder", default="minilm", help="spec used in training, e.g. table:<file>")
    parser.add_argument("--clips", type=int, default=1000, help="clips per dataset folder")
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument(
        "--sim-device", default="cpu", help="ray-casting device of the simulator (data, streamed latents)"
    )
    parser.add_argument(
        "--widths", type=int, nargs="+", default=[64, 96, 128],
        help="UNet widths of the image prior and of every UNet trained from scratch (the same architecture)",
    )  # fmt: skip
    parser.add_argument("--minutes", type=float, default=1.0, help="scale of every stage's time limit")
    parser.add_argument("--procedural-fraction", type=float, default=0.25)
    parser.add_argument("--moving-weight", type=float, default=4.0, help="TrainVAEJob.moving_weight")
    parser.add_argument(
        "--displacement-weight", type=float, default=1.0,
        help="TrainVAEJob.displacement_weight of the MoMap VAEs' first stage (their decoder stage: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--camera-turns", type=float, default=0.3,
        help="TrainVAEJob/TrainImageVAEJob.camera_turns: items seen by a turned camera (roll, pitch, yaw)",
    )  # fmt: skip
    parser.add_argument("--holes", type=float, default=0.25, help="TrainVAEJob.holes (regions without data)")
    parser.add_argument("--vae-steps", type=int, default=3000)
    parser.add_argument("--decoder-steps", type=int, default=1000)
    parser.add_argument("--image-vae-steps", type=int, default=3000)
    parser.add_argument("--image-vae-decoder-steps", type=int, default=1500)
    parser.add_argument(
        "--adversarial-weight", type=float, default=0.5, help="TrainImageVAEJob.adversarial_weight (SD: 0.5)"
    )  # fmt: skip
    parser.add_argument("--prior-steps", type=int, default=4000)
    parser.add_argument("--stream-clips", type=int, default=2000, help="scenes per family and config")
    parser.add_argument(
        "--stream-first-index", type=int, default=0,
        help="first clip index streamed (a continued run's new scenes: past the earlier runs' ones)",
    )  # fmt: skip
    parser.add_argument("--motion-variants", type=int, default=2, help="futures per streamed scene")
    parser.add_argument("--stream-minutes", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=2000, help="steps of every Table 2 row")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--bundle-steps", type=int, default=4000)
    parser.add_argument(
        "--inflate-input", choices=("zero", "duplicate"), default="zero",
        help="prior-initialised UNets: their noisy latent's first-layer weights (TrainDiffusionJob)",
    )  # fmt: skip
    parser.add_argument(
        "--continue-from", type=Path, metavar="BUNDLES",
        help="bundles folder of an earlier run: the bundle, baseline and dsl stages continue its "
        "momap-diffusion, momap-vae-baseline and momap-diffusion-dsl (fresh schedule) instead of starting "
        "anew, so a budget cut into short runs trains them in several",
    )  # fmt: skip
    parser.add_argument(
        "--latent-codecs", nargs="+", choices=("vae", "scratch", "raw"), default=["vae", "scratch", "raw"],
        help="codecs the latents stage encodes with (the bundle, baseline and DSL model need only vae)",
    )  # fmt: skip
    parser.add_argument("--gflow-steps", type=int, default=1500)
    parser.add_argument("--distill-steps", type=int, default=2000)
    parser.add_argument(
        "--distill-lora-rank", type=int, default=16,
        help="LoRA rank of the few-step student (a few MiB of adapters); 0: a full copy of the UNet",
    )  # fmt: skip
    parser.add_argument("--compile", default="", help="TrainDiffusionJob.compile, e.g. inductor")
    parser.add_argument(
        "--warm", type=Path,
        help="bundles folder of an earlier run: the image VAE, both MoMap VAEs and the prior continue "
        "from its image-vae, momap-vae, momap-vae-scratch and image-diffusion (fresh schedule, half the lr)",
    )  # fmt: skip
    parser.add_argument(
        "--frozen", type=Path,
        help="folder of final codecs (image-vae, momap-vae, momap-vae-scratch; image-diffusion if there) "
        "used as they are: their stages are skipped",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()

    from momaplib.diffusion.prepare import link_latent_cache
    from momaplib.sim import SimConfig
    from momaplib.training import TrainConfig

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    runs, bundles = args.runs, args.runs / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    base = tuple(runs / f"data/base_{family}" for family in FAMILIES)
    wide = tuple(runs / f"data/wide_{family}" for family in FAMILIES)
    started = time.perf_counter()

    def stamp(message: str) -> None:
        print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)

    def config(name: str, steps: int, batch: int, lr: float, limit: float, **extra) -> TrainConfig:
        if args.smoke:
            steps, batch, extra = 3, 2, {**extra, "validate_every": 0}
        # the clips once in (GPU) memory, loaded by worker processes: reading npz files every step
        # would cost seconds per batch
        defaults = dict(
            lr_warmup_steps=100, checkpoint_every=1000, validate_every=1000, in_memory=True,
            in_memory_device=device, num_workers=0 if args.smoke else args.workers,
        )  # fmt: skip
        return TrainConfig(
            runs / name, max_steps=steps, batch_size=batch, learning_rate=lr, seed=0,
            mixed_precision="bf16" if cuda else "no", progress=False,
            time_limit_minutes=0.0 if args.smoke else limit * args.minutes, **{**defaults, **extra},
        )  # fmt: skip

    def done(name: str, part: str) -> bool:
        return (runs / name / part).is_dir()

    def warm(name: str) -> str | None:
        """The earlier run's bundle ``name`` to continue from (None: no --warm)."""
        if args.warm is None:
            return None
        if not (args.warm / name).is_dir():
            raise SystemExit(f"--warm: {args.warm} has no {name}/ to continue from")
        return str(args.warm / name)

    def continued(name: str) -> dict:
        """The bundle, baseline or DSL stage's start: ``name`` of --continue-from, or ``{}``."""
        if args.continue_from is None:
            return {}
        if not (args.continue_from / name).is_dir():
            raise SystemExit(f"--continue-from: {args.continue_from} has no {name}/ to continue from")
        return dict(init="pretrained", pretrained=str(args.continue_from / name))

    lr_scale = 0.5 if args.warm else 1.0
    if args.frozen is not None:
        use_frozen(args.frozen, runs)
        args.decoder_steps = 0  # and the image VAE's decoder is final too
        args.stages = [stage for stage in args.stages if stage != "image-vae-decoder"]

    widths = tuple(args.widths)
    small = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4) if args.smoke else {}
    datasets = base + wide
    stages = set(args.stages)
    codec_stages = ("image-vae", "momap-vae", "momap-vae-scratch", "image-prior")
    for stage, name in zip(codec_stages, (*codec_stages[:3], "image-diffusion"), strict=True):
        if stage in stages and not done(stage, "pipeline" if stage == "image-prior" else "model"):
            warm(name)  # a missing part of --warm is named before anything trains
    generators = {"bundle": "momap-diffusion", "baseline": "momap-vae-baseline", "dsl": "momap-diffusion-dsl"}
    for stage, name in generators.items():
        if stage in stages and not done(stage, "pipeline"):
            continued(name)  # likewise for --continue-from

    if "data" in stages:
        from momaplib.data import SimJob

        for path in datasets:
            family = path.name.split("_", 1)[1]
            sim = SimConfig(family=family)
            sim = sim.wide() if path.name.startswith("wide") else sim
            sim = replace(sim, device=args.sim_device)
            stamp(f"sim {path.name}")
            SimJob(
                out=path, num_clips=24 if args.smoke else args.clips, smoke=args.smoke, sim=sim,
                workers=0 if args.smoke else args.workers, progress=False,
            ).run()  # fmt: skip

    if "image-vae" in stages and not done("image-vae", "model"):
        from momaplib.vae.train import TrainImageVAEJob

        stamp("image VAE" + (f" from {warm('image-vae')}" if args.warm else ""))
        TrainImageVAEJob(
            datasets, config("image-vae", args.image_vae_steps, 64, 4e-4 * lr_scale, 3.5),
            procedural_fraction=args.procedural_fraction, augment=True, camera_turns=args.camera_turns,
            bundle_dir=bundles / "image-vae",
            pretrained=warm("image-vae"), **small,
        ).run()  # fmt: skip
    image_vae = str(runs / "image-vae/model")
    gan = f"image-vae-decoder-{args.adversarial_weight:g}"
    if "image-vae-decoder" in stages and not done(gan, "model"):
        from momaplib.vae.train import TrainImageVAEJob

        stamp(f"image VAE decoder, adversarial weight {args.adversarial_weight:g}")
        TrainImageVAEJob(
            datasets, config(gan, args.image_vae_decoder_steps, 64, 1e-4, 2.5),
            procedural_fraction=args.procedural_fraction, augment=True, camera_turns=args.camera_turns,
            pretrained=image_vae, trainable="decoder", adversarial_weight=args.adversarial_weight,
            adversarial_start=0 if args.smoke else 200,
            bundle_dir=bundles / f"image-vae-gan-{args.adversarial_weight:g}",
        ).run()  # fmt: skip

    for name, init in (("momap-vae", "inflate"), ("momap-vae-scratch", "scratch")):
        if name not in stages:
            continue
        from momaplib.vae.train import TrainVAEJob

        common = dict(
            procedural_fraction=args.procedural_fraction, augment=True, moving_weight=args.moving_weight,
            holes=args.holes, camera_turns=args.camera_turns,
        )  # fmt: skip
        if not done(name, "model"):
            stamp(f"MoMap VAE ({init})" + (f" from {warm(name)}" if args.warm else ""))
            TrainVAEJob(
                datasets, config(name, args.vae_steps, 32, 4e-4 * lr_scale, 4.0, validate_every=1000),
                init="pretrained" if args.warm else init, pretrained=warm(name), image_vae=image_vae,
                displacement_weight=args.displacement_weight, **common, **small,
                bundle_dir=None if args.decoder_steps else bundles / name,  # the bundle: this stage's
            ).run()  # fmt: skip
        if args.decoder_steps and not done(f"{name}-decoder", "model"):
            stamp(f"MoMap VAE ({init}): decoder")
            TrainVAEJob(
                datasets, config(f"{name}-decoder", args.decoder_steps, 64, 1e-4, 1.5), init="pretrained",
                pretrained=str(runs / name / "model"), trainable="decoder", displacement_weight=1.0,
                bundle_dir=bundles / name, **common,
            ).run()  # fmt: skip

    if "image-prior" in stages and not done("image-prior", "pipeline"):
        from momaplib.diffusion.image_prior import TrainImageDiffusionJob

        cached = tuple(p for p in [runs / "latents/vae.safetensors"] if p.is_file())  # more frames
        stamp(f"image prior (start: {warm('image-diffusion') or 'random'}; latent caches: {len(cached)})")
        TrainImageDiffusionJob(
            datasets, config("image-prior", args.prior_steps, 256, 3e-4 * lr_scale, 4.0, validate_every=2000),
            image_vae=image_vae, text_encoder=args.text_encoder, pipeline_text_encoder="minilm",
            bundle_dir=bundles / "image-diffusion", pretrained=warm("image-diffusion"), latent_sets=cached,
            block_out_channels=(16, 16) if args.smoke else widths, layers_per_block=1 if args.smoke else 2,
        ).run()  # fmt: skip

    def codec(name: str) -> str:
        """The MoMap VAE ``name`` the generators use: its decoder stage's model, or (while that
        trains) the first stage's, whose encoder, latent space and scaling factor are the same."""
        decoder = runs / f"{name}-decoder/model"
        return str(
            decoder
            if args.decoder_steps and (decoder.is_dir() or not done(name, "model"))
            else runs / name / "model"
        )

    codecs = {"vae": codec("momap-vae"), "scratch": codec("momap-vae-scratch"), "raw": "raw"}
    if "latents" in stages:
        encoders = {name: spec for name, spec in codecs.items() if name in args.latent_codecs}
        stream_latents(args, runs, encoders, image_vae, datasets, device, stamp)

    if "ablations" in stages or "bundle" in stages:
        from momaplib.diffusion.train import TrainDiffusionJob

        prior = str(runs / "image-prior/pipeline")
        rows = (
            [row for row in ABLATIONS if not args.only or row in args.only] if "ablations" in stages else []
        )
        for row in rows:
            conditions, codec, init = ABLATIONS[row]
            if done(f"table2/{row}", "pipeline"):
                continue
            stamp(f"Table 2: {row}")
            batch = (
                args.batch_size // 2 if codec == "raw" else args.batch_size
            )  # same examples seen: 2x steps
            steps = args.steps * (args.batch_size // batch)
            run = runs / f"table2/{row}"
            link_latent_cache(runs / f"latents/{codec}.safetensors", run)
            if codec == "raw" and not (run / "raw_vae").exists():
                os.symlink((runs / "latents/raw_vae").resolve(), run / "raw_vae")
            TrainDiffusionJob(
                base,
                config(f"table2/{row}", steps, batch, args.lr, 60.0, lr_warmup_steps=200, validate_every=0),
                vae=codecs[codec], image_vae=image_vae, text_encoder=args.text_encoder,
                pipeline_text_encoder="minilm", conditions=conditions, grounding=True, num_val_clips=0,
                init="inflate" if init == "prior" else "scratch", inflate_input=args.inflate_input,
                image_unet=prior if init == "prior" else None, block_out_channels=widths,
                compile=args.compile, smoke=args.smoke, bundle_dir=bundles / f"table2-{row}",
            ).run()  # fmt: skip
        if "bundle" in stages and not done("bundle", "pipeline"):
            inflated = dict(init="inflate", image_unet=prior, inflate_input=args.inflate_input)
            start = continued(generators["bundle"]) or inflated
            stamp(
                f"bundle: the full row's recipe, --bundle-steps long, from {start.get('pretrained', prior)}"
            )
            link_latent_cache(runs / "latents/vae.safetensors", runs / "bundle")
            TrainDiffusionJob(
                base,
                config("bundle", args.bundle_steps, args.batch_size, args.lr, 60.0, lr_warmup_steps=200),
                vae=codecs["vae"], image_vae=image_vae, text_encoder=args.text_encoder,
                pipeline_text_encoder="minilm", conditions=ABLATIONS["full"][0], grounding=True,
                num_val_clips=4, block_out_channels=widths, compile=args.compile,
                bundle_dir=bundles / "momap-diffusion", smoke=args.smoke, **start,
            ).run()  # fmt: skip

    if "distill" in stages and not done("distill", "pipeline"):
        from momaplib.diffusion.distill import DistillJob

        rank = args.distill_lora_rank
        stamp(f"distill: the bundle's few-step student (LoRA rank {rank}; 0: a full UNet)")
        DistillJob(
            str(runs / "bundle/pipeline"), runs / "bundle/latents_train.safetensors",
            # LoRA at 1e-5: at 1e-4 (LCM-LoRA's rate for SD) the student drifted from this teacher
            config("distill", args.distill_steps, args.batch_size // 4, 1e-5 if rank else 2e-5, 60.0,
                   lr_warmup_steps=100),
            num_ddim_timesteps=10 if args.smoke else 50, bundle_dir=bundles / "momap-diffusion-lcm",
            lora_rank=rank,
        ).run()  # fmt: skip

    extras = {
        "baseline": dict(model="momap-vae", block_out_channels=(32, 64, 96)),
        "dsl": dict(
            conditions=("rgb", "instance", "xyz", "dsl"), block_out_channels=(32, 64, 96), layers_per_block=1
        ),
    }
    for name, extra in extras.items():
        if name not in stages or done(name, "pipeline"):
            continue
        from momaplib.diffusion.train import TrainDiffusionJob

        start = continued(generators[name])
        stamp(name + (f" from {start['pretrained']}" if start else ""))
        link_latent_cache(runs / "latents/vae.safetensors", runs / name)
        TrainDiffusionJob(
            base, config(name, args.steps, args.batch_size, args.lr, 60.0, lr_warmup_steps=200),
            vae=codecs["vae"], image_vae=image_vae, text_encoder=args.text_encoder,
            pipeline_text_encoder="minilm", num_val_clips=2, compile=args.compile, smoke=args.smoke,
            bundle_dir=bundles / generators[name], **extra, **start,
        ).run()  # fmt: skip

    if "gflow" in stages:
        from momaplib.baselines.gflow import VARIANTS
        from momaplib.baselines.gflow_train import TrainGFlowJob

        for variant in VARIANTS:
            if (args.only and variant not in args.only) or done(f"table1/{variant}", "model"):
                continue
            stamp(f"Table 1: {variant}")
            TrainGFlowJob(
                base, config(f"table1/{variant}", args.gflow_steps, 32, 3e-4, 3.0), variant=variant,
                smoke=args.smoke,
            ).run()  # fmt: skip
    stamp("done")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
