"""Train the video completion models and compare them on unseen test clips (paper §3.4.1).

    python benchmarks/eval_video.py train --clips 500 --minutes 2.5 --out runs/video
    python benchmarks/eval_video.py eval --models runs/video --clips 50 --out runs/video
    python benchmarks/eval_video.py bundle --model runs/video/flattened --out checkpoints/momap-video

``train`` simulates the first ``--clips`` train-split clips of each family (the clips ``momap sim``
writes with seed 0), renders their GT MoMaps into their own cameras, and trains two
``CompletionUNet`` with the same data, seed and number of steps: ``flattened`` (self-attention
across the frames of a window, the paper's model) and ``per-frame`` (the ablation). The step count
fits ``--minutes`` per model, measured on the first steps. Each model is written as fp16 shards
under ``--out/<variant>``.

``bundle`` writes ``checkpoints/momap-video`` from the ``flattened`` model.

``eval`` renders the GT MoMaps of the first ``--clips`` test-split clips of each family (never
trained on) into their own cameras and completes the holes four ways: ``partial`` (holes left
mid-grey), ``cv2-inpaint`` (OpenCV Telea per frame), ``per-frame`` and ``flattened`` (10 DDIM
steps, windows of 8 frames, the same noise seed). It writes the per-clip metrics
(``momaplib.video.video_metrics``) to ``video_per_clip.csv.gz`` and the table with paired
bootstrap intervals (flattened against each other method) to ``video_table.md``/``.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKL

from momaplib.checkpoints import resolve_checkpoint
from momaplib.data import simulate_split_videos
from momaplib.eval import VIDEO_METRICS, video_intervals, video_table
from momaplib.render import render_momap
from momaplib.sim import FAMILIES
from momaplib.storage import atomic_write_csv
from momaplib.training import TrainConfig
from momaplib.video import CompletionUNet, complete_render, cv2_inpaint, video_dataset, video_metrics
from momaplib.video.frames import composite
from momaplib.video.train import TrainVideoJob, latent_scale

VARIANTS = ("flattened", "per-frame")


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _steps_for(job: TrainVideoJob, dataset, minutes: float, device) -> int:
    """Returns the number of steps that fit ``minutes``: the difference of two throwaway runs of 10
    and 30 steps gives the time per step without the set-up both share."""
    import tempfile

    def timed(steps: int) -> float:
        with tempfile.TemporaryDirectory() as folder:
            probe = TrainVideoJob(
                train=TrainConfig(Path(folder), max_steps=steps, batch_size=job.train.batch_size,
                                  lr_warmup_steps=0, validate_every=0, checkpoint_every=1000, progress=False,
                                  in_memory=True, mixed_precision=job.train.mixed_precision),
                frame_attention="flattened", block_out_channels=job.block_out_channels,
            )  # fmt: skip
            start = time.perf_counter()
            probe.run(dataset=dataset)
            return time.perf_counter() - start

    seconds = (timed(30) - timed(10)) / 20
    return max(10, int(minutes * 60 / max(seconds, 1e-3)))


def train(args) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    image_vae = AutoencoderKL.from_pretrained(resolve_checkpoint(args.image_vae)).to(device).eval()
    scale = latent_scale(image_vae)
    clips = [
        c
        for f in FAMILIES
        for _, c in simulate_split_videos(f, args.clips, split="train", workers=args.workers)
    ]
    val = [c for f in FAMILIES for _, c in simulate_split_videos(f, 2, split="val", workers=0)]
    dataset = video_dataset(clips, image_vae, scale, backend="torch", device=device)
    del clips
    base = TrainConfig(
        args.out / "runs" / "probe", max_steps=10, batch_size=args.batch_size, learning_rate=3e-4,
        lr_warmup_steps=100, validate_every=0, checkpoint_every=100_000, in_memory=True,
        mixed_precision="bf16" if device == "cuda" else "no", progress=False,
    )  # fmt: skip
    probe = TrainVideoJob(train=base, block_out_channels=tuple(args.channels))
    steps = args.steps or _steps_for(probe, dataset, args.minutes, device)
    summary = {"device": device_name(), "torch": torch.__version__, "steps": steps, "latent_scale": scale,
               "train_clips": len(dataset), "batch_size": args.batch_size}  # fmt: skip
    for variant in VARIANTS:
        config = replace(
            base, output_dir=args.out / "runs" / variant, max_steps=steps, validate_every=steps, progress=True
        )
        job = TrainVideoJob(
            train=config, frame_attention=variant, bundle_dir=args.out / variant, render_backend="torch",
            block_out_channels=tuple(args.channels),
        )  # fmt: skip
        start = time.perf_counter()
        job.run(dataset=dataset, val_clips=val)
        summary[f"{variant}_seconds"] = time.perf_counter() - start
        log = (args.out / "runs" / variant / "metrics.jsonl").read_text().splitlines()
        summary[f"{variant}_last"] = [json.loads(line) for line in log if "val/psnr_hole" in line][-1:]
    print(json.dumps(summary, indent=2))
    (args.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def evaluate(args) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    image_vae = AutoencoderKL.from_pretrained(resolve_checkpoint(args.image_vae)).to(device).eval()
    models = {v: CompletionUNet.from_pretrained(args.models / v).to(device).eval() for v in VARIANTS}
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for family in FAMILIES:
        for clip_id, clip in simulate_split_videos(family, args.clips, split="test", workers=args.workers):
            render = render_momap(clip.momap, backend="torch", device=device)
            truth = clip.frames.astype(np.float32) / 255.0
            holes = render.holes
            grey = composite(render.rgb, render.alpha, np.full_like(render.rgb, 0.5))
            outputs = {"partial": grey, "cv2-inpaint": cv2_inpaint(grey, holes)}
            for variant, model in models.items():
                generator = torch.Generator().manual_seed(args.seed)
                outputs[variant], _ = complete_render(
                    model, image_vae, render, clip.frames[0], args.steps, generator, 8
                )
            for method, frames in outputs.items():
                rows.append({"clip_id": clip_id, "dataset": family, "method": method,
                             **video_metrics(frames, truth, holes)})  # fmt: skip
            done = len(rows) // len(outputs)
            if done % 10 == 0:  # a run cut short keeps what it measured
                atomic_write_csv(args.out / "video_per_clip.csv.gz", pd.DataFrame(rows), "%.7g")
                print(f"{done} clips in {time.perf_counter() - started:.0f} s", flush=True)
    per_clip = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(args.out / "video_per_clip.csv.gz", per_clip, "%.7g")
    print(video_report(per_clip, args.out))


def video_report(per_clip: pd.DataFrame, out: Path | None = None) -> str:
    """Returns the Markdown table (``video_table``) and the paired intervals of ``flattened``
    against every other method (``video_intervals``); writes ``video_table.md``/``.json`` to ``out``."""
    table = video_table(per_clip)
    intervals = video_intervals(per_clip)
    lines = [
        "| family | method | " + " | ".join(VIDEO_METRICS) + " | clips |",
        "|---|---|" + "---|" * (len(VIDEO_METRICS) + 1),
    ]
    for (family, method), row in table.iterrows():
        cells = " | ".join(f"{row[m]:.4f}" for m in VIDEO_METRICS)
        lines.append(f"| {family} | {method} | {cells} | {int(row['clips'])} |")
    lines += [
        "",
        "| family | flattened − | metric | diff | 95 % interval | clips | better |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in intervals.itertuples():
        lines.append(
            f"| {r.dataset} | {r.versus} | {r.metric} | {r.diff:+.4f} | "
            f"[{r.low:+.4f}, {r.high:+.4f}] | {r.clips} | {r.verdict} |"
        )
    text = "\n".join(lines)
    if out is not None:
        (out / "video_table.md").write_text(text + "\n")
        summary = {"device": device_name(), "intervals": intervals.to_dict(orient="records")}
        (out / "video_table.json").write_text(json.dumps(summary, indent=2) + "\n")
    return text


def bundle(args) -> None:
    """Writes the ``MoMapVideoPipeline`` of a trained completion model (fp16 shards; the image VAE
    is not copied: the pipeline loads the bundled ``image-vae``, so train with the one that is bundled)."""
    from momaplib.training import save_pipeline
    from momaplib.video import MoMapVideoPipeline, build_scheduler

    image_vae = AutoencoderKL.from_pretrained(resolve_checkpoint(args.image_vae))
    completion = CompletionUNet.from_pretrained(args.model)
    pipe = MoMapVideoPipeline(completion, image_vae, build_scheduler())
    save_pipeline(pipe, args.out, bundle=True)
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--clips", type=int, default=500, help="train clips per family")
    t.add_argument("--minutes", type=float, default=2.5, help="training time per model")
    t.add_argument("--steps", type=int, default=0, help="steps per model (0: fit --minutes)")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--channels", type=int, nargs="+", default=[64, 96, 96], help="UNet widths per level")
    t.add_argument("--workers", type=int, default=8, help="simulation processes")
    t.add_argument("--out", type=Path, default=Path("outputs/video"))
    e = sub.add_parser("eval")
    e.add_argument("--models", type=Path, default=Path("outputs/video"))
    e.add_argument("--clips", type=int, default=50, help="test clips per family")
    e.add_argument("--steps", type=int, default=10, help="DDIM steps of the completion")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--workers", type=int, default=8, help="simulation processes")
    e.add_argument("--out", type=Path, default=Path("outputs/video"))
    b = sub.add_parser("bundle")
    b.add_argument(
        "--model", type=Path, default=Path("outputs/video/flattened"), help="trained CompletionUNet"
    )
    b.add_argument("--out", type=Path, default=Path("checkpoints/momap-video"))
    for command in (t, e, b):
        command.add_argument(
            "--image-vae", default="image-vae",
            help="the image VAE whose latent space the completion works in (folder, bundled name or hub id)",
        )  # fmt: skip
    args = parser.parse_args()
    {"train": train, "eval": evaluate, "bundle": bundle}[args.command](args)


if __name__ == "__main__":
    main()
