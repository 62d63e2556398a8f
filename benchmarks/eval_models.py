"""Best-of-N table of the bundled models on MoMap-Sim test clips (paper Table 1 layout).

    python benchmarks/eval_models.py --clips 50          # 50 test clips per family, N = 10

The test clips are the ones ``momap sim`` (seed 0, default size) puts in the test split, generated
here directly (no dataset on disk needed): clip ``i`` of a family is in the table when
``momaplib.data.split_of`` assigns its id to "test", so the rows match ``momap eval`` on a dataset
written with the same settings. Rows: ``static``, ``MoMap-VAE`` (the bundled baseline),
``Ours (text)`` and ``Ours (no text)`` (the same model sampled without the prompt). Prints the
Markdown table and writes ``table.csv``/``table.md``/``per_clip.csv`` and a JSON summary to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from momaplib.baselines.simple import get_predictor
from momaplib.data import clip_id, split_of
from momaplib.diffusion.objectives import pipeline_predictor
from momaplib.diffusion.pipeline import load_pipeline
from momaplib.evaluation import evaluate_methods, format_table, table_to_markdown, write_table
from momaplib.sim import SimConfig, clip_seed, generate_clip
from momaplib.storage import atomic_write_text


def test_clips(
    family: str, count: int, seed: int = 0, config: SimConfig | None = None, split: str = "test"
) -> list:
    """Returns ``[(clip_id, MoMap)]`` of the first ``count`` clips of a family in ``split``."""
    config = config or SimConfig(family=family)
    clips, index = [], 0
    with tqdm(total=count, desc=f"simulate {family} {split} clips", leave=False) as bar:
        while len(clips) < count:
            name = clip_id(family, index)
            if split_of(name) == split:
                clips.append((name, generate_clip(clip_seed(seed, index), config).momap))
                bar.update()
            index += 1
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=50, help="test clips per family")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=25, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--diffusion", default="momap-diffusion")
    parser.add_argument("--baseline", default="momap-vae-baseline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_models"))
    parser.add_argument("--split", default="test", choices=("val", "test"), help="val: to tune settings")
    parser.add_argument("--families", nargs="+", default=["tabletop", "egocentric"])
    parser.add_argument("--rows", nargs="+", help="only these rows, e.g. 'Ours (text)' (default: all)")
    args = parser.parse_args()

    started = time.perf_counter()
    ours = load_pipeline(args.diffusion).to(args.device)
    baseline = load_pipeline(args.baseline).to(args.device)
    for pipeline in (ours, baseline):
        pipeline.set_progress_bar_config(disable=True)
    options = {"num_inference_steps": args.steps, "guidance_scale": args.guidance}
    methods = {
        "static": get_predictor("static"),
        "MoMap-VAE": pipeline_predictor(baseline, use_text=True),
        "Ours (text)": pipeline_predictor(ours, use_text=True, **options),
        "Ours (no text)": pipeline_predictor(ours, use_text=False, **options),
    }
    if args.rows:
        unknown = sorted(set(args.rows) - set(methods))
        if unknown:
            parser.error(f"--rows: unknown {unknown}; choose from {list(methods)}")
        methods = {name: methods[name] for name in args.rows}
    results, rows = {}, []
    for family in args.families:
        clips = test_clips(family, args.clips, split=args.split)
        results[family] = evaluate_methods(clips, methods, num_samples=args.num_samples, device=args.device)
        rows += [df.assign(dataset=family, method=name) for name, df in results[family].items()]
    table = format_table(results)
    print(table_to_markdown(table))
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out / "table")
    atomic_write_text(args.out / "per_clip.csv", pd.concat(rows, ignore_index=True).to_csv(index=False))
    summary = {
        "clips_per_family": args.clips,
        "split": args.split,
        "num_samples": args.num_samples,
        "steps": args.steps,
        "guidance": args.guidance,
        "device": args.device,
        "seconds": time.perf_counter() - started,
        "table": json.loads(table.to_json()),
    }
    atomic_write_text(args.out / "eval_models.json", json.dumps(summary, indent=2))
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
