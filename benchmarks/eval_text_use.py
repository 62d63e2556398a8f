"""Does a pipeline use its prompt? Target-object accuracy with the right, no, or another clip's prompt.

MoMap-Sim clips record which instance the task moves (``meta["task"]["target_id"]``) and each
instance's role (``target``, ``destination``, ``static``, ``agent``). For each test clip this
samples ``--num-samples`` MoMaps three times with the same seeds: with the clip's prompt
(``right``), with no prompt (``none``) and with the prompt of the next clip of the list whose
prompt differs (``wrong``, which usually names another object and task). Per sample it reads the moving mask
(``momaplib.momap.moving_mask``, with the GT's scene scale as in the metrics), takes the
non-agent instance with the largest moving fraction as the object the sample moves, and scores

- ``target_acc``: the fraction of samples that move the GT target (a sample moving no object
  counts as wrong; ``chance`` is 1 / the number of non-agent instances in view, averaged);
- ``fg_mask_iou``, ``quantize_acc_16``: the mean over samples (not best-of-N) of the metrics;
- ``grounder_acc`` (pipelines with a ``grounder``, ``momaplib.diffusion.grounding``): whether
  the grounder ranks the GT target first for that prompt (NaN without a prompt). High on
  ``right`` with a low ``target_acc`` means the grounding map names the object and the UNet
  does not follow it yet.

A model that reads the prompt scores ``right`` > ``none`` > ``wrong`` on ``target_acc``; equal rows
mean the prompt is ignored and the object is picked from the image alone.

    python benchmarks/eval_text_use.py --clips 20      # 20 test clips per family, 4 samples each
    python benchmarks/eval_text_use.py --clips 117 --grounder-only   # only grounder_acc: no sampling

Prints a Markdown table and writes ``text_use.md`` and ``text_use.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from momaplib.data import simulate_split_clips
from momaplib.diffusion.pipeline import load_pipeline
from momaplib.metrics import sample_metrics
from momaplib.momap import MoMap, moving_mask, scene_scale
from momaplib.storage import atomic_write_text

CONDITIONS = ("right", "none", "wrong")


def moved_object(gt: MoMap, samples: np.ndarray) -> tuple[list[int], list[int]]:
    """Returns, per sample (N, T, H, W, 3), the non-agent instance it moves most (0: none), and
    the candidate ids (non-agent instances in view)."""
    valid = torch.from_numpy(gt.valid)
    scale = scene_scale(torch.from_numpy(gt.xyz[0]), valid)
    moving = moving_mask(torch.from_numpy(samples), valid, scale=scale).numpy()  # (N, H, W)
    roles = gt.meta["instances"]
    candidates = [
        int(i) for i, info in roles.items() if info["role"] != "agent" and (gt.instance == int(i)).any()
    ]
    picked = []
    for mask in moving:
        fractions = {i: float(mask[gt.instance == i].mean()) for i in candidates}
        best = max(fractions, key=fractions.get, default=0)
        picked.append(best if fractions.get(best, 0.0) > 0 else 0)
    return picked, candidates


def grounder_picks(pipeline, gt: MoMap, xyz0: np.ndarray, prompts: dict[str, str | None]) -> dict[str, int]:
    """Returns, per named prompt, the instance id the pipeline's grounder ranks first (0: no
    prompt). The scene is encoded once and the prompts are grounded in one batch."""
    named = [name for name, prompt in prompts.items() if prompt]
    if not named:
        return dict.fromkeys(prompts, 0)
    scene = pipeline.encode_scene(gt.rgb, xyz0, gt.instance, None, gt.K, None)
    texts = [prompts[name] for name in named]
    _, scores = pipeline.ground_prompts(scene, texts, pipeline.encode_prompt(texts))
    picked = dict(zip(named, scene["instance_ids"][0, scores.argmax(1)].tolist(), strict=True))
    return {name: picked.get(name, 0) for name in prompts}


def other_prompt(clips: list, index: int) -> str:
    """Returns the prompt of the first clip after ``index`` (cyclically) whose prompt differs."""
    for step in range(1, len(clips)):
        prompt = clips[(index + step) % len(clips)][1].prompt
        if prompt != clips[index][1].prompt:
            return prompt
    raise ValueError("--clips: the clips need at least two different prompts for the 'wrong' row")


def to_markdown(table: pd.DataFrame) -> str:
    """Returns a (family, prompt)-indexed table of floats as a Markdown table."""
    lines = ["| family | prompt | " + " | ".join(table.columns) + " |"]
    lines.append("|---|---|" + "---:|" * len(table.columns))
    for (family, prompt), values in table.iterrows():
        lines.append(f"| {family} | {prompt} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20, help="test clips per family")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, help="default: the pipeline's own (config.guidance_scale)")
    parser.add_argument("--pipeline", default="momap-diffusion")
    parser.add_argument("--families", nargs="+", default=["tabletop", "egocentric"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_text_use"))
    parser.add_argument(
        "--grounder-only", action="store_true", help="only grounder_acc (no sampling; fast on a CPU)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    pipeline = load_pipeline(args.pipeline).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    grounded = getattr(pipeline, "grounder", None) is not None
    if args.grounder_only and not grounded:
        raise ValueError(f"--grounder-only: the pipeline {args.pipeline!r} has no grounder")
    conditions = ("right", "wrong") if args.grounder_only else CONDITIONS
    columns = [] if args.grounder_only else ["target_acc", "chance", "fg_mask_iou", "quantize_acc_16"]
    columns += ["grounder_acc"] if grounded else []
    rows = []
    for family in args.families:
        clips = simulate_split_clips(family, args.clips)
        for index, (clip_id, gt) in enumerate(tqdm(clips, desc=f"{family} clips")):
            xyz0 = np.where(gt.valid[..., None], gt.xyz[0], np.nan)
            prompts = {"right": gt.prompt, "none": None, "wrong": other_prompt(clips, index)}
            target = int(gt.meta["task"]["target_id"])
            picks = (
                grounder_picks(pipeline, gt, xyz0, {c: prompts[c] for c in conditions}) if grounded else {}
            )
            for condition in conditions:
                row = {"family": family, "clip_id": clip_id, "prompt": condition}
                if grounded:
                    row["grounder_acc"] = (
                        float(picks[condition] == target) if prompts[condition] else float("nan")
                    )
                if args.grounder_only:
                    rows.append(row)
                    continue
                output = pipeline(
                    gt.rgb, xyz=xyz0, instance_map=gt.instance, K=gt.K, prompt=prompts[condition],
                    num_samples=args.num_samples, num_inference_steps=args.steps,
                    guidance_scale=args.guidance, generator=torch.Generator().manual_seed(index),
                    progress=False,
                )  # fmt: skip
                picked, candidates = moved_object(gt, output.xyz)
                metrics = sample_metrics(gt, torch.from_numpy(output.xyz), device=args.device)
                rows.append(
                    {
                        **row,
                        "target_acc": float(np.mean([p == target for p in picked])),
                        "chance": 1.0 / max(len(candidates), 1),
                        "fg_mask_iou": float(metrics["fg_mask_iou"].mean()),
                        "quantize_acc_16": float(np.nanmean(metrics["quantize_acc_16"].numpy())),
                    }
                )
    frame = pd.DataFrame(rows)
    table = frame.groupby(["family", "prompt"], sort=False)[columns].mean()
    markdown = to_markdown(table)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "text_use.md", markdown + "\n")
    summary = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - started,
        "table": json.loads(table.reset_index().to_json(orient="records")),
        "per_clip": rows,
    }
    atomic_write_text(args.out / "text_use.json", json.dumps(summary, indent=2))
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
