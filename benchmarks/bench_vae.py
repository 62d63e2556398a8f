"""Encode/decode throughput of the MoMap VAE (MoMaps per second) and its reconstruction of moving points.

    python benchmarks/bench_vae.py                       # bundled momap-vae, 128x128, T = 32
    python benchmarks/bench_vae.py --batch 8 --repeats 5 --out outputs/benchmarks/bench_vae.json
    python benchmarks/bench_vae.py --quality-clips 8     # + median EPE of all / still / moving points
    python benchmarks/bench_vae.py --futures-scenes 24   # + the spread of true futures the VAE keeps

``--quality-clips N`` round-trips the first N test clips per family (unseen by any kit model;
posterior mean, ``momaplib.vae.analysis``) and reports the median end-point error over all, still
and moving points, relative to the scene scale, per family: the moving points are the part of a
MoMap that matters most and the part a plain L1 keeps worst. ``--futures-scenes N`` round-trips
the 10 true futures (``SimConfig.motion_variant``) of N test scenes per family and reports how much
of their spread the VAE keeps (diversity ratio, precision and recall against the futures;
``momaplib.metrics.distribution``): samples that are true futures spread no further through it.

Inputs are random MoMaps in model range of the VAE's size (throughput does not depend on the
values). Times are medians over ``--repeats`` after one warm-up call; CUDA times are synchronised.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from momaplib.vae import MoMapVAE


def _time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reconstruction_quality(name: str, clips: int):
    """Returns the median EPE (all / still / moving, over the scene scale) per family of ``clips``
    test clips per family, round-tripped by the VAE ``name``."""
    import pandas as pd

    from momaplib.data import clip_family
    from momaplib.vae.analysis import held_out_clips, motion_errors, round_trip

    vae = MoMapVAE.from_pretrained(name).eval()
    rows = []
    for clip_id, clip in held_out_clips(clips, progress=False).items():
        errors = motion_errors(clip.momap, round_trip(vae, clip.momap))
        rows.append({"family": clip_family(clip_id), **errors})
    columns = ["EPE all", "EPE still", "EPE moving", "moving pixels"]
    return pd.DataFrame(rows).groupby("family")[columns].median()


def futures_spread(name: str, scenes: int, futures: int = 10):
    """Returns, per family, the mean diversity ratio, precision and recall of ``scenes`` test scenes'
    ``futures`` GT futures (motion variants), each encoded and decoded by the VAE ``name``, against
    the futures themselves (``momaplib.eval.futures_oracle``): how much of the spread of true
    futures the latent space keeps (1 = all)."""
    import pandas as pd

    from momaplib.baselines.simple import vae_reconstruction
    from momaplib.eval import evaluate_distribution, futures_oracle, simulate_future_sets

    vae = MoMapVAE.from_pretrained(name).eval()
    oracle = {"vae-futures": futures_oracle(vae_reconstruction(vae))}
    frames = []
    for family in ("tabletop", "egocentric"):
        sets = simulate_future_sets(family, scenes, futures, progress=False)
        frames.append(
            evaluate_distribution(sets, oracle, num_samples=futures, progress=False).assign(family=family)
        )
    return pd.concat(frames).groupby("family")[["diversity_ratio", "precision", "recall"]].mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default="momap-vae", help="folder, bundled name or hub id")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/bench_vae.json"))
    parser.add_argument(
        "--quality-clips", type=int, default=0, help="test clips per family for the EPE table"
    )
    parser.add_argument(
        "--futures-scenes", type=int, default=0,
        help="test scenes per family for the spread of 10 true futures the VAE keeps",
    )  # fmt: skip
    args = parser.parse_args()
    quality = reconstruction_quality(args.vae, args.quality_clips) if args.quality_clips else None
    spread = futures_spread(args.vae, args.futures_scenes) if args.futures_scenes else None

    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
        for dtype in dtypes:
            vae = MoMapVAE.from_pretrained(args.vae).to(device, dtype).eval()
            batch = args.batch * (8 if device == "cuda" else 1)
            x = torch.randn(batch, vae.config.in_channels, args.size, args.size, device=device, dtype=dtype)
            with torch.no_grad():
                latents = vae.encode_channels(x)
                encode = _time(lambda: vae.encode_channels(x), device, args.repeats)  # noqa: B023
                decode = _time(lambda: vae.decode_channels(latents), device, args.repeats)  # noqa: B023
            rows.append(
                {
                    "device": device,
                    "dtype": str(dtype).removeprefix("torch."),
                    "batch": batch,
                    "encode_momaps_per_s": batch / encode,
                    "decode_momaps_per_s": batch / decode,
                    "threads": torch.get_num_threads(),
                }
            )
    print(f"MoMap VAE {args.vae}: {args.size}x{args.size}, T = {vae.num_frames}")
    print(f"{'device':8} {'dtype':9} {'batch':>5} {'encode/s':>10} {'decode/s':>10}")
    for r in rows:
        print(
            f"{r['device']:8} {r['dtype']:9} {r['batch']:5d} "
            f"{r['encode_momaps_per_s']:10.1f} {r['decode_momaps_per_s']:10.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    if quality is not None:
        print(quality.round(4).to_string())
    report = {"info": info, "rows": rows}
    if quality is not None:
        report["quality"] = json.loads(quality.reset_index().to_json(orient="records"))
    if spread is not None:
        print(spread.round(3).to_string())
        report["futures_spread"] = json.loads(spread.reset_index().to_json(orient="records"))
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
