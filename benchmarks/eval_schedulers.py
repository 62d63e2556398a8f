"""Quality vs steps vs time of the samplers: DDIM, DPM-Solver++ and UniPC at 4/8/12/25 steps.

Every (scheduler, steps) row samples the bundled diffusion model on the same MoMap-Sim clips of
the split (paired clips: the same clips, prompts and seeds for every row) through the evaluation
harness of ``benchmarks/eval_models.py`` (``momaplib.eval.evaluate_methods``: best of N by
``ate_dtw``), and times every pipeline call (ms per sample, end to end: encoding, denoising and
decoding). Writes ``table.md``/``table.csv`` (paper Table 1 layout, one column per row),
``per_clip.csv``, ``steps.md`` and ``sampler_steps.csv`` (per family: each metric's mean relative
to DDIM at 25 steps with its paired 95 % interval, and ms per sample; ``momaplib.eval.samplers``),
``card.md`` (the model card's table) and ``eval_schedulers.json`` to ``--out``.
``checkpoints/logs/sampler_steps.csv`` is what notebook 04 plots.

    python benchmarks/eval_schedulers.py --clips 300 --device cuda            # one process
    for k in 0 1 2 3; do python benchmarks/eval_schedulers.py --clips 300 --shard $k/4 --out runs/s$k & done
    python benchmarks/eval_schedulers.py --merge runs/s0 runs/s1 runs/s2 runs/s3 --out runs/all
    python benchmarks/eval_schedulers.py --clips 1 --num-samples 2 --steps 2 --families tabletop  # CPU check
    python benchmarks/eval_schedulers.py --clips 300 --student outputs/distill/pipeline   # + the LCM student

``--student`` adds the rows ``lcm-student N`` (``--student-steps``) of a ``momap distill`` student,
sampled with its own LCM scheduler and no guidance, on the same clips and seeds; with ``--steps``
and no count the run has the student's rows alone, and ``--merge`` joins its folders to a sampler
run's (the same clips: the table's reference row comes from there).

``--chunks C`` evaluates each family in C parts and saves each part's rows under ``--out/parts``
when it is done (``momaplib.eval.parts``): a stopped run keeps them, the same command resumes, and
``--merge`` takes the finished parts of a folder whose run did not end (its timings too).

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
from momaplib.diffusion.pipeline import load_pipeline
from momaplib.eval import format_table, table_to_markdown, write_table
from momaplib.eval.parts import evaluate_families, read_parts, shard_threads
from momaplib.eval.samplers import REFERENCE, compare_samplers, sampler_methods, steps_markdown, steps_table
from momaplib.storage import atomic_write_text

#: settings that shard folders must share to be merged
SHARED_SETTINGS = ("split", "num_samples", "guidance", "device")


def evaluate(args: argparse.Namespace, settings: dict) -> tuple[pd.DataFrame, dict]:
    """Returns the per-clip rows (``dataset``, ``method`` columns) and ms per sample per method,
    computed in ``--chunks`` parts per family saved under ``--out`` as they finish (a rerun resumes)."""
    pipe = load_pipeline(args.diffusion).to(args.device)
    student = load_pipeline(args.student).to(args.device) if args.student else None
    for pipeline in (pipe, student) if student is not None else (pipe,):
        pipeline.set_progress_bar_config(disable=True)
        if args.fast:
            pipeline.enable_fast_sampling()
    methods, times = sampler_methods(
        pipe, args.schedulers, args.steps, args.guidance, student=student, student_steps=args.student_steps
    )

    def compute(family: str, shard: tuple[int, int]) -> tuple[pd.DataFrame, dict]:
        clips = simulate_split_clips(family, args.clips, split=args.split, shard=shard)
        if not clips:
            return pd.DataFrame(), {"ms_per_sample": {}, "timed_calls": {}}
        per_clip, ms = compare_samplers({family: clips}, methods, times, args.num_samples, args.device)
        return per_clip, {"ms_per_sample": ms, "timed_calls": {name: len(v) for name, v in times.items()}}

    per_clip, extras = evaluate_families(args.out, args.families, args.shard, args.chunks, compute, settings)
    return per_clip, pool_timings(extras)


def pool_timings(timings: list[dict]) -> dict:
    """Returns the call-weighted ms per sample and the total calls of several runs' or parts'
    ``{"ms_per_sample": ..., "timed_calls": ...}``."""
    ms, calls = {}, {}
    for timing in timings:
        for name, value in timing["ms_per_sample"].items():
            n = timing["timed_calls"][name]
            ms[name] = ms.get(name, 0.0) + value * n
            calls[name] = calls.get(name, 0) + n
    return {"ms_per_sample": {k: v / max(calls[k], 1) for k, v in ms.items()}, "timed_calls": calls}


def merge(folders: list[Path]) -> tuple[pd.DataFrame, dict]:
    """Returns the per-clip rows of shard folders and their call-weighted ms per sample; a folder
    whose run stopped before its end gives the parts it finished (``read_parts``)."""
    frames, runs, settings = [], [], []
    for folder in folders:
        saved = None if (folder / "eval_schedulers.json").is_file() else read_parts(folder)
        if saved is not None:  # a run stopped before its end: the parts it finished
            rows, extras, saved_settings = saved
            frames += rows
            runs.append(pool_timings([extra for extra in extras if extra]))
            settings.append({k: saved_settings.get(k) for k in SHARED_SETTINGS})
            continue
        if not (folder / "per_clip.csv").is_file():
            raise SystemExit(f"--merge: {folder} has neither per_clip.csv nor parts (not an --out folder)")
        run = json.loads((folder / "eval_schedulers.json").read_text())
        frames.append(pd.read_csv(folder / "per_clip.csv"))
        settings.append({k: run["settings"].get(k) for k in SHARED_SETTINGS})
        runs.append(run)
    if any(entry != settings[0] for entry in settings):
        raise SystemExit(f"--merge: the folders were run with different settings: {settings}")
    per_clip = pd.concat(frames, ignore_index=True)
    if per_clip.duplicated(["dataset", "method", "clip_id"]).any():
        raise SystemExit("--merge: a clip appears in more than one folder")
    return per_clip, {**pool_timings(runs), "settings": {**settings[0], "merged": [str(f) for f in folders]}}


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
    parser.add_argument(
        "--steps", type=int, nargs="*", default=[4, 8, 12, 25],
        help="step counts of every scheduler; none (with --student): the student's rows alone",
    )  # fmt: skip
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
    parser.add_argument("--chunks", type=int, default=1,
                        help="parts per family, saved in --out/parts when done; a rerun resumes")  # fmt: skip
    parser.add_argument(
        "--merge", type=Path, nargs="+", metavar="DIR", help="build the table from shard folders"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_schedulers"))
    args = parser.parse_args()
    shard_threads(args.shard)  # shards side by side: a share of the cores each
    if not args.merge and not args.steps and not args.student:
        parser.error("--steps: give at least one step count, or --student")

    started = time.perf_counter()
    if args.merge:
        per_clip, summary = merge(args.merge)
    else:
        names = ("clips", "split", "num_samples", "guidance", "device", "fast", "schedulers", "steps")
        settings = {k: getattr(args, k) for k in names}
        settings.update(shard=list(args.shard), torch=torch.__version__)
        parts = {
            **settings,
            "student": args.student,
            "student_steps": args.student_steps,
            "chunks": args.chunks,
        }
        per_clip, summary = evaluate(args, {**parts, "families": args.families, "diffusion": args.diffusion})
        summary["settings"] = settings
    table = format_table(
        {
            family: {method: rows for method, rows in group.groupby("method", sort=False)}
            for family, group in per_clip.groupby("dataset", sort=False)
        }
    )
    print(table_to_markdown(table))
    steps = steps_table(per_clip, summary["ms_per_sample"])
    steps_md = markdown(steps)
    print(steps_md)
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out / "table")
    atomic_write_text(args.out / "per_clip.csv", per_clip.to_csv(index=False))
    atomic_write_text(args.out / "steps.md", steps_md + "\n")
    atomic_write_text(args.out / "sampler_steps.csv", steps.to_csv(index=False))  # notebook 04's table
    if set(steps["family"]) >= {"tabletop", "egocentric"} and (steps["method"] == REFERENCE).any():
        atomic_write_text(args.out / "card.md", steps_markdown(steps) + "\n")  # the model card's table
    summary.update(seconds=time.perf_counter() - started, steps=json.loads(steps.to_json(orient="records")))
    atomic_write_text(args.out / "eval_schedulers.json", json.dumps(summary, indent=2))
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
