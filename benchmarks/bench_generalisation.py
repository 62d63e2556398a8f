"""The generalisation suite (``momaplib.eval.generalisation``): the MoMap VAE and the pipeline on
scenes unlike MoMap-Sim's table, as errors over the scene scale, one row per case.

    python benchmarks/bench_generalisation.py --label old                      # bundled checkpoints
    python benchmarks/bench_generalisation.py --label new --vae outputs/momap-vae/model \\
        --pipeline outputs/momap-diffusion/pipeline --device cuda
    python benchmarks/bench_generalisation.py --compare benchmarks/results/generalisation_old.json \\
        benchmarks/results/generalisation_new.json                          # old -> new, side by side
    python benchmarks/bench_generalisation.py --split val --label round7 --vae runs/momap-vae/model \\
        --pipeline ''                   # choosing between models: the val suite, never the test one

Cases, metrics and the seed ranges (unseen by construction) are documented in
``momaplib.eval.generalisation`` (``--split val``: the suite for choosing between models, on
val-split clips and seeds of its own). Each case is averaged over ``--seeds``; the pipeline draws
``--num-samples`` futures with ``--steps`` denoising steps per seed. Prints a markdown table (and
the targets a case misses) and writes JSON with every row, the per-case means, the settings, the
device name and the torch version.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from momaplib.eval.generalisation import (
    CASES,
    SPLITS,
    environment,
    run_suite,
    suite_markdown,
    summarize_suite,
    target_failures,
)
from momaplib.storage import atomic_write_text


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vae", default="momap-vae", help="MoMapVAE folder, bundled name or hub id ('' to skip)"
    )
    parser.add_argument(
        "--pipeline", default="momap-diffusion", help="pipeline folder, bundled name or hub id ('' to skip)"
    )
    parser.add_argument("--label", default="old", help="name of this run in tables and the output file")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="suite seeds per case")
    parser.add_argument(
        "--split", default="test", choices=SPLITS, help="test (reported) or val (for choosing between models)"
    )
    parser.add_argument("--num-samples", type=int, default=4, help="pipeline samples per case and seed")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps")
    parser.add_argument("--size", type=int, nargs=3, default=[128, 128, 32], metavar=("H", "W", "T"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default 1 on cpu: many small ops run "
        "faster on one thread of a shared CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="default benchmarks/results/generalisation_<label>.json (_<label>_val.json with --split val)",
    )  # fmt: skip
    parser.add_argument(
        "--compare", type=Path, nargs=2, metavar=("OLD", "NEW"), help="print two result files side by side"
    )
    args = parser.parse_args(argv)

    if args.compare:
        old, new = (json.loads(path.read_text()) for path in args.compare)
        print(suite_markdown(old, new))
        return None

    from momaplib.diffusion.pipeline import load_pipeline
    from momaplib.vae import MoMapVAE

    threads = args.threads or (1 if args.device == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    started = time.perf_counter()
    pipeline = load_pipeline(args.pipeline).to(args.device) if args.pipeline else None
    if args.vae:
        vae = MoMapVAE.from_pretrained(args.vae).to(args.device).eval()
    else:
        vae = None
    if pipeline is not None:
        pipeline.set_progress_bar_config(disable=True)
    rows = run_suite(
        vae, pipeline, args.cases, args.seeds, args.num_samples, args.steps, tuple(args.size), progress=True,
        split=args.split,
    )  # fmt: skip
    summary = summarize_suite(rows)
    results = {
        "label": args.label,
        "vae": args.vae,
        "pipeline": args.pipeline,
        "settings": {
            "split": args.split, "seeds": args.seeds, "num_samples": args.num_samples, "steps": args.steps,
            "size_hwt": args.size, "device": args.device, "threads": threads,
        },
        **environment(),
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "failures": target_failures(summary),
        "rows": rows,
    }  # fmt: skip
    print(suite_markdown(results))
    print("\ntargets missed:" if results["failures"] else "\nall targets met")
    for failure in results["failures"]:
        print(f"  {failure}")
    suffix = "" if args.split == "test" else f"_{args.split}"
    out = args.out or Path("benchmarks/results") / f"generalisation_{args.label}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1, allow_nan=True) + "\n")
    print(f"wrote {out} ({results['seconds']} s on {results['device_name']}, torch {torch.__version__})")
    return results


if __name__ == "__main__":
    main()
