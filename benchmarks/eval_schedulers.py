"""Quality vs steps vs time of the samplers: DDIM, DPM-Solver++ and UniPC at 4/8/12/25 steps.

Every (scheduler, steps) row samples the bundled diffusion model on the same MoMap-Sim clips of
the split (paired clips: the same clips, prompts and seeds for every row) through the evaluation
harness of ``benchmarks/eval_models.py`` (``momaplib.eval.evaluate_methods``: best of N by
``ate_dtw``), and times every pipeline call (ms per sample, end to end: encoding, denoising and
decoding). Writes ``table.md``/``table.csv`` (paper Table 1 layout, one column per row),
``per_clip.csv``, ``steps.md`` (per family: each metric's mean relative to DDIM at 25 steps, and ms
per sample) and ``eval_schedulers.json`` to ``--out``.

    python benchmarks/eval_schedulers.py --clips 300 --device cuda            # one process
    for k in 0 1 2 3; do python benchmarks/eval_schedulers.py --clips 300 --shard $k/4 --out runs/s$k & done
    python benchmarks/eval_schedulers.py --merge runs/s0 runs/s1 runs/s2 runs/s3 --out runs/all
    python benchmarks/eval_schedulers.py --clips 1 --num-samples 2 --steps 2 --families tabletop  # CPU check
    python benchmarks/eval_schedulers.py --clips 300 --student outputs/distill/pipeline   # + the LCM student

``--student`` adds the rows ``lcm-student N`` (``--student-steps``) of a ``momap distill`` student,
sampled with its own LCM scheduler and no guidance, on the same clips and seeds.

Use ``--split val`` to choose a default from the table; ``--split test`` for the table of record.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from eval_models import parse_shard  # benchmarks/ is on sys.path when this script runs

from momaplib.data import simulate_split_clips
from momaplib.diffusion.objectives import pipeline_predictor
from momaplib.diffusion.pipeline import load_pipeline
from momaplib.eval import evaluate_methods, format_table, table_to_markdown, write_table
from momaplib.storage import atomic_write_text

#: the reference row of ``steps.md``
REFERENCE = "ddim 25"
#: metrics of ``steps.md`` (higher is better for all but ate_dtw)
KEY_METRICS = ("ate_dtw", "fg_mask_iou", "quantize_acc_16", "patch_nearest_acc")


def timed_predictor(predict, seconds: list[float]):
    """Returns ``predict`` that appends the wall time of every call to ``seconds``."""

    def wrapped(gt, num_samples, generator):
        start = time.perf_counter()
        out = predict(gt, num_samples, generator)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append((time.perf_counter() - start) / num_samples)
        return out

    return wrapped


def evaluate(args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    """Returns the per-clip rows (``dataset``, ``method`` columns) and ms per sample per method."""
    pipe = load_pipeline(args.diffusion).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    if args.fast:
        pipe.enable_fast_sampling()
    times: dict[str, list[float]] = {}
    methods = {}
    for scheduler in args.schedulers:
        for steps in args.steps:
            name = f"{scheduler} {steps}"
            options = {"scheduler": scheduler, "num_inference_steps": steps, "guidance_scale": args.guidance}
            times[name] = []
            methods[name] = timed_predictor(pipeline_predictor(pipe, use_text=True, **options), times[name])
    if args.student:  # a distilled student (momap distill): its own LCM sampler, no guidance
        student = load_pipeline(args.student).to(args.device)
        student.set_progress_bar_config(disable=True)
        if args.fast:
            student.enable_fast_sampling()
        for steps in args.student_steps:
            name = f"lcm-student {steps}"
            times[name] = []
            predict = pipeline_predictor(student, use_text=True, num_inference_steps=steps)
            methods[name] = timed_predictor(predict, times[name])
    rows = []
    for family in args.families:
        clips = simulate_split_clips(family, args.clips, split=args.split, shard=args.shard)
        first = clips[0][1]  # [(clip_id, MoMap)]
        for method in methods.values():  # warm-up (text encoder, compilation): not timed
            method(first, args.num_samples, 0)
        for values in times.values():
            values.clear()
        results = evaluate_methods(clips, methods, num_samples=args.num_samples, device=args.device)
        rows += [df.assign(dataset=family, method=name) for name, df in results.items()]
    ms = {name: 1000 * sum(values) / max(len(values), 1) for name, values in times.items()}
    counts = {name: len(values) for name, values in times.items()}
    return pd.concat(rows, ignore_index=True), {"ms_per_sample": ms, "timed_calls": counts}


def merge(folders: list[Path]) -> tuple[pd.DataFrame, dict]:
    """Returns the per-clip rows of shard folders and their call-weighted ms per sample."""
    frames, ms, calls, settings = [], {}, {}, []
    for folder in folders:
        run = json.loads((folder / "eval_schedulers.json").read_text())
        frames.append(pd.read_csv(folder / "per_clip.csv"))
        settings.append({k: run["settings"].get(k) for k in ("split", "num_samples", "guidance", "device")})
        for name, value in run["ms_per_sample"].items():
            n = run["timed_calls"][name]
            ms[name] = ms.get(name, 0.0) + value * n
            calls[name] = calls.get(name, 0) + n
    if any(entry != settings[0] for entry in settings):
        raise SystemExit(f"--merge: the folders were run with different settings: {settings}")
    per_clip = pd.concat(frames, ignore_index=True)
    if per_clip.duplicated(["dataset", "method", "clip_id"]).any():
        raise SystemExit("--merge: a clip appears in more than one folder")
    timing = {"ms_per_sample": {k: v / max(calls[k], 1) for k, v in ms.items()}, "timed_calls": calls}
    return per_clip, {**timing, "settings": {**settings[0], "merged": [str(f) for f in folders]}}


def steps_table(per_clip: pd.DataFrame, ms: dict) -> pd.DataFrame:
    """Returns per (family, method): key metric means, each relative to ``REFERENCE`` (%), and ms/sample."""
    means = per_clip.groupby(["dataset", "method"], sort=False)[list(KEY_METRICS)].mean()
    rows = []
    for (family, method), values in means.iterrows():
        row = {"family": family, "method": method, "ms_per_sample": ms.get(method, float("nan"))}
        reference = means.loc[(family, REFERENCE)] if (family, REFERENCE) in means.index else None
        for metric in KEY_METRICS:
            row[metric] = values[metric]
            if reference is not None:
                row[f"{metric} vs {REFERENCE} %"] = 100 * (values[metric] / reference[metric] - 1)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """Returns ``frame`` as a Markdown table, numbers to 4 significant digits."""
    cells = [
        [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=50, help="clips per family (before sharding)")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--schedulers", nargs="+", default=["ddim", "dpm", "unipc"])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12, 25])
    parser.add_argument("--guidance", type=float, help="default: the pipeline's own (config.guidance_scale)")
    parser.add_argument("--diffusion", default="momap-diffusion")
    parser.add_argument(
        "--student", help="a distilled student pipeline (momap distill): rows 'lcm-student N'"
    )
    parser.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fast", action="store_true", help="sample through pipe.enable_fast_sampling()")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--families", nargs="+", default=["tabletop", "egocentric"])
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="K/N")
    parser.add_argument(
        "--merge", type=Path, nargs="+", metavar="DIR", help="build the table from shard folders"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_schedulers"))
    args = parser.parse_args()

    started = time.perf_counter()
    if args.merge:
        per_clip, summary = merge(args.merge)
    else:
        per_clip, summary = evaluate(args)
        settings = {
            k: getattr(args, k) for k in ("clips", "split", "num_samples", "guidance", "device", "fast")
        }
        summary["settings"] = {**settings, "shard": list(args.shard), "torch": torch.__version__}
    table = format_table(
        {
            family: {method: rows for method, rows in group.groupby("method", sort=False)}
            for family, group in per_clip.groupby("dataset", sort=False)
        }
    )
    print(table_to_markdown(table))
    steps = steps_table(per_clip, summary["ms_per_sample"])
    steps_markdown = markdown(steps)
    print(steps_markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out / "table")
    atomic_write_text(args.out / "per_clip.csv", per_clip.to_csv(index=False))
    atomic_write_text(args.out / "steps.md", steps_markdown + "\n")
    summary.update(seconds=time.perf_counter() - started, steps=json.loads(steps.to_json(orient="records")))
    atomic_write_text(args.out / "eval_schedulers.json", json.dumps(summary, indent=2))
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
