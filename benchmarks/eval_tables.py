"""The paper's Table 1 (baselines) and Table 2 (ablations) from per-clip best-of-N rows.

    # sample: every method on the first 300 test clips per family (shards run side by side)
    python benchmarks/eval_tables.py --table 1 --clips 300 --out runs/table1 \\
        --method static=static --method gflow-original=gflow:runs/gflow-original/model \\
        --method momap-vae=momap-vae-baseline --method ours=momap-diffusion     # + the other rows
    # the card's tables from the per-clip CSV (no sampling), written into the card between its markers
    python benchmarks/eval_tables.py --table 1 --from-csv checkpoints/logs/table1_per_clip.csv.gz \
        --card checkpoints/README.md

Rows are named as in the paper: Table 1 ``static, gflow-original, gflow-rollout, gflow-extend,
momap-vae, ours``; Table 2 ``full, no-xyz, no-sem, no-vae, no-unet-init, no-unet-vae-init``. A
method's source is ``static`` (a reference predictor of ``momaplib.baselines``), ``gflow:<folder>``
(a ``TrainGFlowJob`` model) or a pipeline (folder, bundled name or hub id; ``MoMapPipeline`` or
``MoMapVAEPipeline``). Every method sees the same clips and per-clip seeds (best of ``--num-samples``
by ``ate_dtw``), and the per-clip rows are written in the schema of
``checkpoints/logs/test600_per_clip.csv.gz`` (``dataset`` and ``method`` columns). The tables are
the means per family and method and the paired 95 % bootstrap intervals against ``ours`` / ``full``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from momaplib.data import simulate_split_clips
from momaplib.data.shards import parse_shard
from momaplib.eval import evaluate_methods, table_to_markdown
from momaplib.eval.paper import PAPER_ROWS, method_predictor, paper_intervals, paper_table
from momaplib.eval.parts import shard_threads
from momaplib.storage import atomic_write_csv

ROWS = PAPER_ROWS


def tables(per_clip: pd.DataFrame, table: int) -> tuple[str, str]:
    """Returns the Markdown of the means table and of the paired intervals against the reference row."""
    means = paper_table(per_clip, table)
    lines = [
        "| family | method | metric | reference − method | 95 % interval | clips | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in paper_intervals(per_clip, table).itertuples():
        cells = [
            row.dataset, row.method, row.metric, f"{row.diff:+.4f}", f"[{row.low:+.4f}, {row.high:+.4f}]",
            str(int(row.clips)), row.verdict,
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return table_to_markdown(means), "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=int, choices=(1, 2), required=True)
    parser.add_argument("--method", action="append", default=[], metavar="NAME=SOURCE")
    parser.add_argument(
        "--from-csv", type=Path, nargs="+", help="no sampling: the tables of these per-clip CSVs"
    )
    parser.add_argument("--clips", type=int, default=300, help="test clips per family")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, help="default: each pipeline's own (config.guidance_scale)")
    parser.add_argument("--families", nargs="+", default=["tabletop", "egocentric"])
    parser.add_argument(
        "--shard", type=parse_shard, default="0/1", metavar="K/N", help="every N-th clip from the K-th on"
    )
    parser.add_argument("--workers", type=int, default=0, help="simulation processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_tables"))
    parser.add_argument("--text-encoder", help="override the pipelines' text encoder spec, e.g. minilm:/path")
    parser.add_argument("--card", type=Path, help="also write the tables into this card (write_into)")
    args = parser.parse_args()
    shard_threads(args.shard)  # shards side by side: a share of the cores each
    if args.from_csv:
        per_clip = pd.concat([pd.read_csv(path) for path in args.from_csv], ignore_index=True)
    else:
        sources = dict(item.split("=", 1) for item in args.method)
        unknown = sorted(set(sources) - set(ROWS[args.table]))
        if unknown or not sources:
            parser.error(
                f"--method: give NAME=SOURCE with NAME from {list(ROWS[args.table])}, got {unknown or 'none'}"
            )
        methods = {
            name: method_predictor(source, args.device, args.steps, args.guidance, args.text_encoder)
            for name, source in sources.items()
        }
        rows = []
        for family in args.families:
            clips = simulate_split_clips(
                family, args.clips, shard=args.shard, workers=args.workers, progress=False
            )
            results = evaluate_methods(
                clips, methods, num_samples=args.num_samples, device=args.device, progress=False
            )
            rows += [frame.assign(dataset=family, method=name) for name, frame in results.items()]
            per_clip = pd.concat(rows, ignore_index=True)  # written after each family: a run cut
            args.out.mkdir(parents=True, exist_ok=True)  # short keeps the families it finished
            atomic_write_csv(args.out / f"table{args.table}_per_clip.csv.gz", per_clip, "%.5g")
    means, intervals = tables(per_clip, args.table)
    print(means)
    print(intervals)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"table{args.table}.md").write_text(means + "\n" + intervals)
    if args.card:
        write_into(args.card, f"table{args.table}", means + "\n" + intervals)


def write_into(path: Path, name: str, text: str) -> None:
    """Replaces what lies between the lines ``<!-- name start -->`` and ``<!-- name end -->`` of the
    Markdown file ``path`` with ``text`` (atomically: a temporary file, then a rename)."""
    start, end = f"<!-- {name} start -->", f"<!-- {name} end -->"
    content = path.read_text()
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise SystemExit(f"--card: {path} needs one line {start!r} and, after it, one line {end!r}")
    head, rest = content.split(start, 1)
    tail = rest.split(end, 1)[1]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}")
    temporary.replace(path)


if __name__ == "__main__":
    main()
