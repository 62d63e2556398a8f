"""Motion DSL against text (paper §3.4.2): best of N on MoMap-Sim test clips, in trained and held-out wording.

    python benchmarks/eval_dsl.py --clips 300                     # one GPU: minutes
    python benchmarks/eval_dsl.py --clips 2 --num-samples 2 --steps 2 --device cpu   # smoke

Rows (column ``method``) per prompt set (column ``prompt_set``: ``sim``, the clip's own prompt in
the simulator's wording that the models trained on; ``paraphrase``, the held-out rewrite of
``momaplib.control.paraphrase_prompt``):

- ``text``: the text model (``--text-model``) with the prompt;
- ``dsl-oracle``: the DSL model (``--dsl-model``) with the GT DSL (``OraclePlanner``; it reads no
  prompt, so it is sampled once, as ``sim``, and the tables count it in both prompt sets): the
  upper bound of any planner;
- ``dsl-rule``: the DSL model with ``RulePlanner``'s DSL of the prompt. Where the planner refuses a
  prompt (``PlannerError``), the DSL model samples without a DSL (``planner_ok`` False): the
  row measures the planner and the model together, as a user would meet them.

Every method samples a clip with the same seeds (``momaplib.metrics.clip_generator``), so rows
are paired. Extra columns: ``dsl_acc_given`` (flag agreement, ``momaplib.control.dsl_accuracy``,
of the reported sample's DSL with the DSL it was given; NaN for ``text`` and for refused
plans), ``dsl_acc_gt`` and ``dsl_moving_acc_gt`` (with the GT DSL, every method), ``planner_ok``.
Writes ``per_clip.csv.gz``, ``table.md``, ``intervals.md`` and ``eval_dsl.json`` to ``--out``.
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
from tqdm.auto import tqdm

from momaplib.control import (
    PlannerError,
    RulePlanner,
    dsl_accuracy,
    dsl_from_momap,
    instance_labels,
)
from momaplib.control.paraphrase import paraphrase_prompt
from momaplib.data import clip_id as make_clip_id
from momaplib.data import simulate_split_clips, split_indices
from momaplib.data.shards import parse_shard
from momaplib.diffusion.pipeline import load_pipeline
from momaplib.eval import dsl_intervals, dsl_table
from momaplib.eval.parts import shard_threads
from momaplib.metrics import clip_generator, evaluate_predictor
from momaplib.storage import atomic_write_csv, atomic_write_text

METHODS = ("text", "dsl-oracle", "dsl-rule")
PROMPT_SETS = ("sim", "paraphrase")
TABLE_METRICS = (
    "fg_mask_iou",
    "quantize_acc_16",
    "ate_dtw",
    "epe",
    "dsl_acc_gt",
    "dsl_acc_given",
    "planner_ok",
)
INTERVAL_METRICS = ("quantize_acc_16", "fg_mask_iou", "ate_dtw", "dsl_acc_gt")


#: metrics are written with 5 significant digits (the tables show 3-4 decimals)
FLOAT_FORMAT = "%.5g"


def split_ids(family: str, count: int) -> list[str]:
    """Returns the ids of the first ``count`` test clips of a family (``simulate_split_clips``'s)."""
    return [make_clip_id(family, index) for index in split_indices(family, count, "test")]


def markdown(frame: pd.DataFrame, fmt: str = ".4f") -> str:
    """Returns ``frame`` as a Markdown table (numbers with ``fmt``; no optional dependency)."""
    cells = [
        [format(v, fmt) if isinstance(v, float) else str(v) for v in row]
        for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def scene_of(gt, prompt: str | None, dsl=None) -> dict:
    xyz0 = np.where(gt.valid[..., None], gt.xyz[0], np.nan)
    return {
        "image": gt.rgb,
        "xyz": xyz0,
        "instance_map": gt.instance,
        "K": gt.K,
        "prompt": prompt,
        "dsl": dsl,
    }


def jobs_of(clips, num_frames: int, paraphrase=lambda clip_id: True) -> list[dict]:
    """Returns one job per (method, prompt set, clip): the scene to sample and what it was given
    (the paraphrase set for the clips where ``paraphrase(clip_id)``)."""
    rule = RulePlanner(num_frames=num_frames)
    jobs = []
    for clip_id, gt in clips:
        prompts = {"sim": gt.prompt}
        if paraphrase(clip_id):
            prompts["paraphrase"] = paraphrase_prompt(gt, clip_id) or gt.prompt
        gt_dsl = dsl_from_momap(gt)
        jobs.append(
            dict(method="dsl-oracle", prompt_set="sim", clip_id=clip_id, gt=gt, given=gt_dsl, ok=True)
        )
        for prompt_set, prompt in prompts.items():
            jobs.append(
                dict(method="text", prompt_set=prompt_set, clip_id=clip_id, gt=gt, prompt=prompt, ok=True)
            )
            try:
                planned = rule.plan(gt.rgb, gt.instance, prompt, labels=instance_labels(gt), momap=gt)
            except PlannerError:
                planned = None
            jobs.append(
                dict(method="dsl-rule", prompt_set=prompt_set, clip_id=clip_id, gt=gt, prompt=prompt,
                     given=planned, ok=planned is not None)
            )  # fmt: skip
    gt_dsl = {job["clip_id"]: job["given"] for job in jobs if job["method"] == "dsl-oracle"}
    for job in jobs:
        job["gt_dsl"] = gt_dsl[job["clip_id"]]
    return jobs


def run_jobs(jobs: list[dict], pipelines: dict, args: argparse.Namespace, flush=None) -> pd.DataFrame:
    """Samples the jobs in blocks of clips (every method of a clip in the same block, so partial
    results hold whole clips), ``--batch-scenes`` scenes per UNet batch, and scores them;
    ``flush(rows)`` gets the rows so far after every block (partial results of a long run)."""
    rows = []
    clip_ids = list(dict.fromkeys(job["clip_id"] for job in jobs))
    per_block = max(1, args.batch_scenes // 3)
    for start in tqdm(range(0, len(clip_ids), per_block), desc="sample", disable=args.quiet):
        block = set(clip_ids[start : start + per_block])
        for model in ("text", "dsl"):
            chunk = [
                job
                for job in jobs
                if job["clip_id"] in block and (job["method"] == "text") == (model == "text")
            ]
            if not chunk:
                continue
            scenes = [
                scene_of(job["gt"], job.get("prompt") if model == "text" else None, job.get("given"))
                for job in chunk
            ]
            outputs = pipelines[model].sample_scenes(
                scenes, args.num_samples, num_inference_steps=args.steps, guidance_scale=args.guidance,
                generator=[clip_generator(args.seed, job["clip_id"]) for job in chunk], progress=False,
            )  # fmt: skip
            for job, output in zip(chunk, outputs, strict=True):
                samples = torch.from_numpy(output.xyz)
                metrics = (
                    evaluate_predictor(
                        [(job["clip_id"], job["gt"])],
                        lambda gt, n, g, s=samples: s,
                        num_samples=args.num_samples,
                        device=args.device,
                        progress=False,
                    )
                    .iloc[0]
                    .to_dict()
                )
                best = replace(job["gt"], xyz=output.xyz[max(int(metrics["selected"]), 0)])
                best_dsl = dsl_from_momap(best, job["gt"].instance)
                vs_gt = dsl_accuracy(best_dsl, job["gt_dsl"])
                given = job.get("given")
                metrics.update(
                    method=job["method"], prompt_set=job["prompt_set"],
                    planner_ok=float(job["ok"]), dsl_acc_gt=vs_gt["accuracy"],
                    dsl_moving_acc_gt=vs_gt["moving_accuracy"],
                    dsl_acc_given=dsl_accuracy(best_dsl, given)["accuracy"] if given is not None else np.nan,
                )  # fmt: skip
                rows.append(metrics)
        if flush is not None:
            flush(rows)
    return pd.DataFrame(rows)


def planner_table(args: argparse.Namespace) -> None:
    """Prints and writes (``planners.md``) how often the rule planner plans and how its DSL agrees
    with the GT DSL, per family and prompt set (no model is sampled)."""
    rows = []
    for family in args.families:
        clips = simulate_split_clips(family, args.clips, workers=args.workers, progress=not args.quiet)
        for job in jobs_of(clips, 32):
            if job["method"] == "dsl-rule":
                given = job["given"]
                accuracy = dsl_accuracy(given, job["gt_dsl"]) if given is not None else {}
                rows.append(
                    dict(dataset=family, prompt_set=job["prompt_set"], planned=float(given is not None),
                         planner_acc_gt=accuracy.get("accuracy", np.nan),
                         planner_moving_acc_gt=accuracy.get("moving_accuracy", np.nan))
                )  # fmt: skip
    frame = pd.DataFrame(rows).groupby(["dataset", "prompt_set"], sort=False).agg(
        clips=("planned", "size"), planned=("planned", "mean"), planner_acc_gt=("planner_acc_gt", "mean"),
        planner_moving_acc_gt=("planner_moving_acc_gt", "mean"),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    print(markdown(frame.reset_index()))
    atomic_write_text(args.out / "planners.md", markdown(frame.reset_index()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=50, help="test clips per family")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument(
        "--guidance", type=float, help="default: each pipeline's own (2.0 for both bundled models)"
    )
    parser.add_argument("--text-model", default="momap-diffusion")
    parser.add_argument("--dsl-model", default="momap-diffusion-dsl")
    parser.add_argument(
        "--text-encoder",
        help="text encoder spec of the text model, e.g. table:prompts.safetensors (default: its own)",
    )
    parser.add_argument("--families", nargs="+", default=["tabletop", "egocentric"])
    parser.add_argument("--batch-scenes", type=int, default=24, help="scenes per UNet batch")
    parser.add_argument("--workers", type=int, default=0, help="simulation processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--paraphrase-clips",
        type=int,
        help="the paraphrase set on the first K clips per family (default: all)",
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default="0/1",
        metavar="K/N",
        help="only every N-th clip from the K-th on (merge with --merge)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_dsl"))
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="no sampling: tables from these --out folders or per-clip CSVs"
    )
    parser.add_argument(
        "--planners-only", action="store_true", help="no sampling: the rule planner's DSL against the GT DSL"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    shard_threads(args.shard)  # shards side by side: a share of the cores each
    started = time.perf_counter()
    if args.planners_only:
        return planner_table(args)
    if args.merge:
        frames = []  # a shard stopped by its time limit left only its partial files
        for folder in args.merge:
            if folder.is_file():  # a per-clip CSV itself, e.g. checkpoints/logs/dsl_per_clip.csv.gz
                frames.append(pd.read_csv(folder))
                continue
            files = [folder / "per_clip.csv.gz"] if (folder / "per_clip.csv.gz").is_file() else []
            files = files or sorted(folder.glob("per_clip.partial.*.csv.gz"))
            frames += [pd.read_csv(file) for file in files]
        per_clip = pd.concat(frames, ignore_index=True)
    else:
        encoder = {"text_encoder": args.text_encoder} if args.text_encoder else {}
        pipelines = {"text": load_pipeline(args.text_model, **encoder), "dsl": load_pipeline(args.dsl_model)}
        for pipeline in pipelines.values():
            pipeline.to(args.device).set_progress_bar_config(disable=True)
        frames = []
        for family in args.families:
            clips = simulate_split_clips(
                family, args.clips, shard=args.shard, workers=args.workers, progress=not args.quiet
            )
            keep = set(split_ids(family, args.paraphrase_clips or args.clips))
            jobs = jobs_of(clips, pipelines["dsl"].num_frames, lambda clip_id, keep=keep: clip_id in keep)
            partial = args.out / f"per_clip.partial.{family}.csv.gz"

            def flush(rows, partial=partial, family=family):
                atomic_write_csv(partial, pd.DataFrame(rows).assign(dataset=family), FLOAT_FORMAT)

            args.out.mkdir(parents=True, exist_ok=True)
            frames.append(run_jobs(jobs, pipelines, args, flush).assign(dataset=family))
        per_clip = pd.concat(frames, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(args.out / "per_clip.csv.gz", per_clip, FLOAT_FORMAT)
    table, intervals = dsl_table(per_clip).reset_index(), dsl_intervals(per_clip)
    print(markdown(table))
    print(markdown(intervals, "+.4f"))
    atomic_write_text(args.out / "table.md", markdown(table))
    atomic_write_text(args.out / "intervals.md", markdown(intervals, "+.4f"))
    device = torch.cuda.get_device_name() if str(args.device).startswith("cuda") else "cpu"
    summary = {
        "clips_per_family": args.clips, "num_samples": args.num_samples, "steps": args.steps,
        "guidance": args.guidance, "device": device, "torch": torch.__version__,
        "seconds": time.perf_counter() - started, "table": json.loads(table.to_json(orient="records")),
    }  # fmt: skip
    atomic_write_text(args.out / "eval_dsl.json", json.dumps(summary, indent=2))
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
