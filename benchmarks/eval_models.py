"""Best-of-N table of the bundled models on MoMap-Sim test clips (paper Table 1 layout).

    python benchmarks/eval_models.py --clips 50          # 50 test clips per family, N = 10

The test clips are the ones ``momap sim`` (seed 0, default size) puts in the test split, generated
here directly (no dataset on disk needed): clip ``i`` of a family is in the table when
``momaplib.data.split_of`` assigns its id to "test", so the rows match ``momap eval`` on a dataset
written with the same settings. Rows: ``static``, ``VAE (GT)`` (the GT encoded and decoded by
the bundled MoMap VAE: the ceiling of the latent models), ``MoMap-VAE`` (the bundled baseline),
``Ours (text)`` and ``Ours (no text)`` (the same model sampled without the prompt). Prints the
Markdown table and writes ``table.csv``/``table.md``/``per_clip.csv`` and a JSON summary to ``--out``.
When both ``Ours`` rows are present it also writes ``text_vs_no_text.md``: per family and metric
the mean per-clip difference (text minus no text) with a 95 % paired bootstrap interval
(``momaplib.eval.paired_differences``), and the same as a plot, ``text_vs_no_text.png``.

Large runs split into shards that run side by side (each process loads its own pipelines, e.g.
several on one GPU) and a merge step that builds the table from their per-clip rows::

    for k in 0 1 2 3; do python benchmarks/eval_models.py --clips 117 --shard $k/4 --out runs/s$k & done; wait
    python benchmarks/eval_models.py --merge runs/s0 runs/s1 runs/s2 runs/s3 --out runs/all

``--skip K`` extends an earlier ``--clips K`` run to more clips without redoing the first K:
``--clips 600 --skip 117`` evaluates the next 483 clips of the split, and ``--merge`` of both runs
gives the 600-clip table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from momaplib.baselines.simple import get_predictor, vae_reconstruction
from momaplib.data import simulate_split_clips
from momaplib.diffusion.objectives import pipeline_predictor
from momaplib.diffusion.pipeline import load_pipeline
from momaplib.eval import (
    evaluate_methods,
    format_table,
    paired_differences,
    table_to_markdown,
    write_table,
)
from momaplib.eval.parts import shard_threads
from momaplib.storage import atomic_write_text
from momaplib.viz import plot_paired_differences, save_figure

#: rows that read the GT: never marked best
ORACLES = ("gt", "VAE (GT)")


def parse_shard(text: str) -> tuple[int, int]:
    """Parses ``--shard K/N`` (0 <= K < N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 0/4, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= K < N, got {text!r}")
    return k, n


def text_differences(per_clip: pd.DataFrame) -> pd.DataFrame | None:
    """Returns the paired text - no text differences per family and metric, or None when a
    family lacks one of the two ``Ours`` rows."""
    frames = []
    for family, group in per_clip.groupby("dataset", sort=False):
        rows = {name: rows for name, rows in group.groupby("method")}
        if not {"Ours (text)", "Ours (no text)"} <= set(rows):
            return None
        result = paired_differences(rows["Ours (text)"], rows["Ours (no text)"])
        frames.append(result.rename(columns={"mean_a": "text", "mean_b": "no_text"}).assign(dataset=family))
    return pd.concat(frames).rename_axis("metric").reset_index() if frames else None


def differences_markdown(frame: pd.DataFrame) -> str:
    """Returns the ``text_differences`` frame as a Markdown table."""
    lines = [
        "| family | metric | text | no text | text - no text | 95 % interval | clips | verdict |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for row in frame.itertuples():
        lines.append(
            f"| {row.dataset} | {row.metric} | {row.text:.4f} | {row.no_text:.4f} | {row.diff:+.4f} "
            f"| [{row.low:+.4f}, {row.high:+.4f}] | {row.clips} | "
            + row.verdict.replace("a better", "text better").replace("b better", "no text better")
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=50, help="test clips per family")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=25, help="denoising steps")
    parser.add_argument("--guidance", type=float, help="default: each pipeline's own (config.guidance_scale)")
    parser.add_argument("--diffusion", default="momap-diffusion")
    parser.add_argument("--baseline", default="momap-vae-baseline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_models"))
    parser.add_argument("--split", default="test", choices=("val", "test"), help="val: to tune settings")
    parser.add_argument("--families", nargs="+", default=["tabletop", "egocentric"])
    parser.add_argument(
        "--skip", type=int, default=0, metavar="K",
        help="leave out the first K of the --clips clips (to extend an earlier --clips K run; --merge both)",
    )  # fmt: skip
    parser.add_argument("--rows", nargs="+", help="only these rows, e.g. 'Ours (text)' (default: all)")
    parser.add_argument(
        "--shard", type=parse_shard, default=(0, 1), metavar="K/N",
        help="evaluate only every N-th clip from the K-th on (merge the shards with --merge)",
    )  # fmt: skip
    parser.add_argument(
        "--merge", type=Path, nargs="+", metavar="DIR",
        help="no sampling: build the table from the per_clip.csv of these earlier --out folders",
    )  # fmt: skip
    args = parser.parse_args()
    shard_threads(args.shard)  # shards side by side: a share of the cores each
    if not args.merge and not 0 <= args.skip <= args.clips:
        parser.error(f"--skip: expected 0 <= K <= --clips ({args.clips}), got {args.skip}")

    started = time.perf_counter()
    if args.merge:
        per_clip, summary = merge_runs(args.merge)
    else:
        per_clip = evaluate(args)
        summary = {
            "clips_per_family": args.clips,
            "shard": list(args.shard),
            "skip": args.skip,
            "split": args.split,
            "num_samples": args.num_samples,
            "steps": args.steps,
            "guidance": args.guidance,
            "device": args.device,
        }
    table = format_table(
        {
            family: {method: rows for method, rows in group.groupby("method", sort=False)}
            for family, group in per_clip.groupby("dataset", sort=False)
        }
    )
    print(table_to_markdown(table, exclude_from_best=ORACLES))
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out / "table", exclude_from_best=ORACLES)
    atomic_write_text(args.out / "per_clip.csv", per_clip.to_csv(index=False))
    differences = text_differences(per_clip)
    if differences is not None:
        markdown = differences_markdown(differences)
        print(markdown)
        atomic_write_text(args.out / "text_vs_no_text.md", markdown)
        figure = plot_paired_differences(differences, "text", "no text")
        save_figure(figure, args.out / "text_vs_no_text.png", close=True)
        summary["text_vs_no_text"] = json.loads(differences.to_json(orient="records"))
    summary.update(seconds=time.perf_counter() - started, table=json.loads(table.to_json()))
    atomic_write_text(args.out / "eval_models.json", json.dumps(summary, indent=2))
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")


def evaluate(args: argparse.Namespace) -> pd.DataFrame:
    """Samples every row on the (sharded) test clips; returns the per-clip rows with ``dataset``
    and ``method`` columns."""
    names = ["static", "VAE (GT)", "MoMap-VAE", "Ours (text)", "Ours (no text)"]
    if args.rows:
        unknown = sorted(set(args.rows) - set(names))
        if unknown:
            raise SystemExit(f"--rows: unknown {unknown}; choose from {names}")
        names = [name for name in names if name in args.rows]
    options = {"num_inference_steps": args.steps, "guidance_scale": args.guidance}
    pipelines = {}  # loaded only for the rows asked for

    def pipeline(name: str):
        if name not in pipelines:
            pipelines[name] = load_pipeline(name).to(args.device)
            pipelines[name].set_progress_bar_config(disable=True)
        return pipelines[name]

    makers = {
        "static": lambda: get_predictor("static"),
        "VAE (GT)": lambda: vae_reconstruction(pipeline(args.diffusion).vae),
        "MoMap-VAE": lambda: pipeline_predictor(pipeline(args.baseline), use_text=True),
        "Ours (text)": lambda: pipeline_predictor(pipeline(args.diffusion), use_text=True, **options),
        "Ours (no text)": lambda: pipeline_predictor(pipeline(args.diffusion), use_text=False, **options),
    }
    methods = {name: makers[name]() for name in names}
    rows = []
    for family in args.families:
        clips = simulate_split_clips(family, args.clips, split=args.split, shard=args.shard, skip=args.skip)
        results = evaluate_methods(clips, methods, num_samples=args.num_samples, device=args.device)
        rows += [df.assign(dataset=family, method=name) for name, df in results.items()]
    return pd.concat(rows, ignore_index=True)


def merge_runs(folders: list[Path]) -> tuple[pd.DataFrame, dict]:
    """Returns the per-clip rows of several ``--out`` folders (shards) and a summary naming them.

    The shards must share their settings; a clip evaluated twice for the same row is an error."""
    frames, settings = [], []
    for folder in folders:
        for name in ("per_clip.csv", "eval_models.json"):
            if not (folder / name).is_file():
                raise SystemExit(f"--merge: {folder} has no {name} (not an eval_models --out folder)")
        frames.append(pd.read_csv(folder / "per_clip.csv"))
        run = json.loads((folder / "eval_models.json").read_text())
        settings.append({k: run.get(k) for k in ("split", "num_samples", "steps", "guidance")})
    if any(entry != settings[0] for entry in settings):
        raise SystemExit(f"--merge: the folders were run with different settings: {settings}")
    per_clip = pd.concat(frames, ignore_index=True)
    repeated = per_clip.duplicated(["dataset", "method", "clip_id"])
    if repeated.any():
        first = per_clip[repeated].iloc[0]
        raise SystemExit(f"--merge: clip {first.clip_id} ({first.method}) appears in more than one folder")
    # families, then rows, in the order they first appear in the folders; clips by id within them
    families, methods = dict.fromkeys(per_clip.dataset), dict.fromkeys(per_clip.method)
    order = {key: i for i, key in enumerate((f, m) for f in families for m in methods)}
    per_clip["_order"] = [order[key] for key in zip(per_clip.dataset, per_clip.method, strict=True)]
    per_clip = per_clip.sort_values(["_order", "clip_id"], kind="stable", ignore_index=True).drop(
        columns="_order"
    )
    return per_clip, {**settings[0], "merged": [str(folder) for folder in folders]}


if __name__ == "__main__":
    main()
