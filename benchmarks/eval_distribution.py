"""Is the model a distribution? Samples against 10 GT futures per unseen test scene (issue 27).

    # sample: 8 shards side by side (one per GPU), 200 test scenes per family, 10 futures each,
    # ray-cast on the GPU (on a 16-core host the CPU simulator is the bottleneck), saved in parts
    for k in 0 1 2 3 4 5 6 7; do CUDA_VISIBLE_DEVICES=$k python benchmarks/eval_distribution.py \\
        --scenes 200 --shard $k/8 --device cuda --sim-device cuda --fast --chunks 5 \\
        --out runs/distribution/s$k & done; wait
    python benchmarks/eval_distribution.py --merge runs/distribution/s* --out runs/distribution/all
    # the card's tables and curves from the per-scene CSV (no sampling)
    python benchmarks/eval_distribution.py --from-csv checkpoints/logs/distribution_per_scene.csv.gz

A scene is a test-split clip of ``momap sim`` (seed 0, as ``benchmarks/eval_models.py``) with its
motion variants 0 .. ``--futures`` - 1 (``SimConfig.motion_variant``): the same start frame and
prompt, futures re-drawn. Every method samples ``--num-samples`` MoMaps from variant 0's start
frame (seeded per scene, so rows are paired) and is scored against all futures with
``momaplib.metrics.distribution``. Methods are ``NAME=SOURCE`` as in ``eval_tables.py``: ``static``,
``gflow:<folder>`` or a pipeline (folder, bundled name or hub id); two oracles see every future
(``momaplib.eval.futures_oracle``): ``futures`` (the futures themselves) and
``vae-futures:<pipeline>`` (each future encoded and decoded by the pipeline's MoMap VAE: the spread
its latent space keeps); the methods named by ``--sweep``
(default ``ours``) run at every ``--guidance-scales`` value (the diversity-fidelity curve).
``--scheduler NAME=SAMPLER`` samples a pipeline method with another sampler, e.g. ancestral DDPM
(fresh noise at every step) beside the pipeline's deterministic DDIM; ``--fast`` samples through
``enable_fast_sampling()``.

Writes to ``--out``: ``distribution_per_scene.csv.gz`` (one row per scene, method and guidance
scale; columns ``scene_id, dataset, method, guidance_scale, diversity_ratio, precision, recall,
energy_distance`` then the other metrics and ``precision@tau`` / ``recall@tau`` over
``TAU_GRID``), ``distribution.md`` (means, paired 95 % intervals against ``ours`` at
``--reference-guidance``, the guidance curve), ``guidance_curve.png``, ``coverage_curve.png`` and
``distribution.json`` (settings, device, torch version, seconds). The shards' folders hold the
same files for their scenes; ``--merge`` concatenates them and checks they were run alike.
``--chunks C`` evaluates each family in C parts and saves each part's rows under ``--out/parts``
when it is done (``momaplib.eval.parts``): a run stopped midway keeps them, the same command run
again resumes with the parts still missing, and ``--merge`` takes the finished parts of a folder
whose run did not end.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from momaplib.diffusion.batching import SCHEDULERS
from momaplib.diffusion.pipeline import DEFAULT_GUIDANCE
from momaplib.eval.distribution import (
    distribution_intervals,
    distribution_table,
    evaluate_distribution,
    guidance_curve,
    intervals_markdown,
    simulate_future_sets,
    table_markdown,
)
from momaplib.eval.parts import evaluate_families, read_parts, shard_threads
from momaplib.metrics.distribution import DISTRIBUTION_METRICS, TAU_MATCH
from momaplib.sim import SimConfig
from momaplib.storage import atomic_write_csv, atomic_write_text
from momaplib.viz import plot_coverage_curve, plot_guidance_curve, save_figure

CSV_NAME = "distribution_per_scene.csv.gz"
#: the CSV's leading columns (issue 27), then the other metrics and the curve columns
FIRST_COLUMNS = (
    "scene_id", "dataset", "method", "guidance_scale", "diversity_ratio", "precision", "recall",
    "energy_distance",
)  # fmt: skip
DEFAULT_METHODS = ("static=static", "momap-vae=momap-vae-baseline", "ours=momap-diffusion")
#: settings that shards must share to be merged
SHARED_SETTINGS = (
    "scenes", "futures", "num_samples", "steps", "tau", "size", "frames", "methods", "sweep",
    "guidance_scales", "scheduler", "fast", "split",
)  # fmt: skip


def parse_shard(text: str) -> tuple[int, int]:
    """Parses ``--shard K/N`` (0 <= K < N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 0/8, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= K < N, got {text!r}")
    return k, n


def make_methods(args: argparse.Namespace) -> dict[tuple[str, float | None], object]:
    """Returns ``{(name, guidance scale or None): predictor}`` of the ``--method`` specs."""
    methods = {}
    schedulers = dict(spec.partition("=")[::2] for spec in args.scheduler or [])
    names = [spec.partition("=")[0] for spec in args.method or DEFAULT_METHODS]
    for name, sampler in schedulers.items():
        if name not in names or sampler not in SCHEDULERS:
            raise SystemExit(
                f"--scheduler: expected NAME=SAMPLER with NAME one of {names} and SAMPLER one of "
                f"{sorted(SCHEDULERS)}, got {name}={sampler}"
            )
    for spec in args.method or DEFAULT_METHODS:
        name, _, source = spec.partition("=")
        if not name or not source:
            raise SystemExit(f"--method: expected NAME=SOURCE, got {spec!r}")
        if source == "static":
            from momaplib.baselines import get_predictor

            methods[name, None] = get_predictor("static")
        elif source == "futures":  # the GT futures themselves (an oracle)
            from momaplib.baselines import get_predictor
            from momaplib.eval import futures_oracle

            methods[name, None] = futures_oracle(get_predictor("gt"))
        elif source.startswith("vae-futures:"):  # the GT futures as the pipeline's MoMap VAE keeps them
            from momaplib.baselines.simple import vae_reconstruction
            from momaplib.diffusion.pipeline import load_pipeline
            from momaplib.eval import futures_oracle

            vae = load_pipeline(source.removeprefix("vae-futures:")).vae.to(args.device).eval()
            methods[name, None] = futures_oracle(vae_reconstruction(vae))
        elif source.startswith("gflow:"):
            from momaplib.baselines.gflow_train import gflow_predictor, load_gflow

            model = load_gflow(source.removeprefix("gflow:")).to(args.device)
            methods[name, None] = gflow_predictor(model)
        else:
            from momaplib.diffusion.objectives import pipeline_predictor
            from momaplib.diffusion.pipeline import MoMapVAEPipeline, load_pipeline

            pipeline = load_pipeline(source).to(args.device)
            pipeline.set_progress_bar_config(disable=True)
            if args.fast:
                pipeline.enable_fast_sampling()
            options = {"scheduler": schedulers[name]} if name in schedulers else {}
            if isinstance(pipeline, MoMapVAEPipeline):  # no guidance: one row
                methods[name, None] = pipeline_predictor(pipeline, use_text=True, **options)
                continue
            own = float(getattr(pipeline.config, "guidance_scale", DEFAULT_GUIDANCE))
            for scale in args.guidance_scales if name in args.sweep else [own]:
                methods[name, float(scale)] = pipeline_predictor(
                    pipeline,
                    use_text=True,
                    num_inference_steps=args.steps,
                    guidance_scale=float(scale),
                    **options,
                )
    return methods


def evaluate(args: argparse.Namespace, settings: dict) -> pd.DataFrame:
    """Simulates the (sharded) scenes of every family and scores every method on them, in
    ``--chunks`` parts per family saved under ``--out`` as they finish (a rerun resumes)."""
    methods = make_methods(args)
    config = SimConfig(height=args.size, width=args.size, num_frames=args.frames, device=args.sim_device)

    def compute(family: str, shard: tuple[int, int]) -> tuple[pd.DataFrame, None]:
        scenes = simulate_future_sets(
            family, args.scenes, args.futures, config=config, workers=args.workers, split=args.split,
            shard=shard,
        )  # fmt: skip
        if not scenes:
            return pd.DataFrame(), None
        rows = evaluate_distribution(
            scenes, methods, num_samples=args.num_samples, tau=args.tau, device=args.device
        )
        return rows.assign(dataset=family), None

    per_scene, _ = evaluate_families(args.out, args.families, args.shard, args.chunks, compute, settings)
    return per_scene[list(FIRST_COLUMNS) + [c for c in per_scene.columns if c not in FIRST_COLUMNS]]


def merge_runs(folders: list[Path]) -> tuple[pd.DataFrame, dict]:
    """Returns the per-scene rows of several shard folders and their shared settings."""
    frames, settings = [], []
    for folder in folders:
        saved = None if (folder / CSV_NAME).is_file() else read_parts(folder)
        if saved is not None:  # a run stopped before its end: the parts it finished
            rows, _, saved_settings = saved
            frames += rows
            settings.append({key: saved_settings.get(key) for key in SHARED_SETTINGS})
            continue
        for name in (CSV_NAME, "distribution.json"):
            if not (folder / name).is_file():
                raise SystemExit(f"--merge: {folder} has no {name} (not an eval_distribution --out folder)")
        frames.append(pd.read_csv(folder / CSV_NAME))
        run = json.loads((folder / "distribution.json").read_text())
        settings.append({key: run.get(key) for key in SHARED_SETTINGS})
    if any(entry != settings[0] for entry in settings):
        raise SystemExit(f"--merge: the folders were run with different settings: {settings}")
    per_scene = pd.concat(frames, ignore_index=True)
    key = ["dataset", "method", "guidance_scale", "scene_id"]
    repeated = per_scene.duplicated(key)
    if repeated.any():
        row = per_scene[repeated].iloc[0]
        raise SystemExit(f"--merge: scene {row.scene_id} ({row.method}) appears in more than one folder")
    return per_scene.sort_values(key, kind="stable", ignore_index=True), settings[0]


def report(per_scene: pd.DataFrame, reference: tuple[str, float]) -> str:
    """Returns the Markdown report: means, paired intervals against the reference row, guidance curve."""
    table = distribution_table(per_scene)
    parts = ["## Means over scenes\n", table_markdown(table)]
    intervals = distribution_intervals(per_scene, reference)
    if not intervals.empty:
        name = f"{reference[0]} (g={reference[1]:g})"
        parts += [f"\n## Paired against {name}, per scene\n", intervals_markdown(intervals, name)]
    if (per_scene["method"] == reference[0]).any() and per_scene["guidance_scale"].notna().any():
        curve = guidance_curve(per_scene, reference[0])
        parts += [f"\n## {reference[0]} across guidance scales\n", table_markdown(curve)]
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200, help="test scenes per family")
    parser.add_argument("--futures", type=int, default=10, help="GT futures (motion variants) per scene")
    parser.add_argument("--num-samples", type=int, default=10, help="samples per scene and method")
    parser.add_argument(
        "--method", action="append", metavar="NAME=SOURCE", help=f"default: {DEFAULT_METHODS}"
    )
    parser.add_argument("--sweep", nargs="+", default=["ours"], help="methods run at every guidance scale")
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    parser.add_argument("--reference-guidance", type=float, default=DEFAULT_GUIDANCE,
                        help="the 'ours' row the intervals pair against")  # fmt: skip
    parser.add_argument("--steps", type=int, default=25, help="denoising steps")
    parser.add_argument(
        "--scheduler", action="append", metavar="NAME=SAMPLER",
        help="a method's sampler (momaplib.diffusion.batching.SCHEDULERS), e.g. ours-ddpm=ddpm beside "
        "--method ours-ddpm=momap-diffusion; default: the pipeline's",
    )  # fmt: skip
    parser.add_argument("--fast", action="store_true", help="sample through pipe.enable_fast_sampling()")
    parser.add_argument("--tau", type=float, default=TAU_MATCH, help="matching threshold (scene scales)")
    parser.add_argument("--size", type=int, default=128, help="image height and width of the scenes")
    parser.add_argument("--frames", type=int, default=32, help="frames T of the scenes")
    parser.add_argument("--families", nargs="+", default=["tabletop", "egocentric"])
    parser.add_argument("--split", default="test", choices=("val", "test"),
                        help="val to choose a sampler or a guidance scale, test for the card")  # fmt: skip
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="K/N",
                        help="every N-th scene from the K-th on (merge the shards with --merge)")  # fmt: skip
    parser.add_argument("--chunks", type=int, default=1,
                        help="parts per family, saved in --out/parts when done; a rerun resumes")  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help="simulation processes")
    parser.add_argument("--sim-device", default="cpu", help="ray casting device of the simulator")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--merge", type=Path, nargs="+", metavar="DIR", help="no sampling: merge shard folders"
    )
    parser.add_argument("--from-csv", type=Path, help="no sampling: the report of a per-scene CSV")
    parser.add_argument("--out", type=Path, default=Path("outputs/eval_distribution"))
    args = parser.parse_args()
    shard_threads(args.shard)  # shards side by side: a share of the cores each

    started = time.perf_counter()
    settings = {key: getattr(args, key) for key in SHARED_SETTINGS if key != "methods"}
    settings["methods"] = list(args.method or DEFAULT_METHODS)
    if args.from_csv:
        per_scene = pd.read_csv(args.from_csv)
        settings = {"from_csv": str(args.from_csv)}
    elif args.merge:
        per_scene, settings = merge_runs(args.merge)
        settings["merged"] = [str(folder) for folder in args.merge]
    else:
        torch.manual_seed(0)
        settings["shard"] = list(args.shard)
        per_scene = evaluate(args, {**settings, "chunks": args.chunks, "families": args.families})
    markdown = report(per_scene, ("ours", args.reference_guidance))
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.from_csv:
        # 4 significant digits: the card prints 3 decimals, and the CSV is part of the bundle
        atomic_write_csv(args.out / CSV_NAME, per_scene, "%.4g")
    atomic_write_text(args.out / "distribution.md", markdown)
    if (per_scene["method"] == "ours").any() and per_scene["guidance_scale"].notna().any():
        save_figure(plot_guidance_curve(per_scene, "ours"), args.out / "guidance_curve.png", close=True)
    save_figure(plot_coverage_curve(per_scene, args.tau), args.out / "coverage_curve.png", close=True)
    cuda = torch.cuda.is_available() and str(args.device).startswith("cuda")
    summary = {
        **settings,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds": time.perf_counter() - started,
        "means": json.loads(distribution_table(per_scene, DISTRIBUTION_METRICS).to_json(orient="records")),
    }
    atomic_write_text(args.out / "distribution.json", json.dumps(summary, indent=2))
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
