"""Encode/decode throughput of the MoMap VAE (MoMaps per second) on CPU and, when present, CUDA.

    python benchmarks/bench_vae.py                       # bundled momap-vae, 128x128, T = 32
    python benchmarks/bench_vae.py --batch 8 --repeats 5 --out outputs/benchmarks/bench_vae.json

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default="momap-vae", help="folder, bundled name or hub id")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/bench_vae.json"))
    args = parser.parse_args()

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
    args.out.write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
