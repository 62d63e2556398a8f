"""Reconstruction accuracy on MoMap-Sim: the video -> MoMap pipeline against the simulator's GT.

    python benchmarks/bench_recon.py                 # 20 clips per family, 64x64, T = 16
    python benchmarks/bench_recon.py --clips 4       # a quick look

Settings (issue "Data reconstruction", acceptance):
  (a) GT depth + GT tracks             checks the plumbing: errors ~ 0
  (b) GT depth + FlowChainTracker      the tracker and the camera solver
  (c) corrupted depth + FlowChainTracker   monocular-like depth: per-frame scale/shift drift + noise

Per setting and family it prints the median over clips of: 3D end-point error of visible and of
infilled trajectory points (``|x - x_gt| / s``, s = scene scale, per-clip medians), camera
rotation error (mean and max over frames, degrees) and translation error (/ s), the fraction of
(t > 0, pixel) entries tracked, and seconds per clip; for the static-camera family it also shows
the largest rotation of any estimated pose (the GT is the identity). JSON goes to ``--out``.
Targets for (b): visible EPE <= 3%, infilled EPE <= 8%, rotation error <= 1 deg, static camera
within 0.5 deg of identity.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from momaplib.recon import (
    GivenDepth,
    GivenDepthConfig,
    GivenTracks,
    Pipeline,
    Video,
    reconstruction_errors,
    tracks_from_momap,
)
from momaplib.sim import FAMILIES, SimConfig, clip_seed, generate_clip

SETTINGS = {
    "a": "GT depth + GT tracks",
    "b": "GT depth + FlowChainTracker",
    "c": "corrupted depth + FlowChainTracker",
}
TARGETS_B = {"visible_epe": 0.03, "infilled_epe": 0.08, "rotation_deg": 1.0, "static_camera_deg": 0.5}


@dataclass
class BenchRecon:
    """Settings of the reconstruction benchmark."""

    clips: int = 20
    """Clips per family (seeds clip_seed(seed, 0..clips-1))."""
    size: int = 64
    """Image height and width in pixels."""
    num_frames: int = 16
    """Frames T per clip."""
    settings: tuple[str, ...] = ("a", "b", "c")
    """Which settings to run (see the module docstring)."""
    scale_drift: float = 0.02
    """(c): std of the per-frame log-scale random walk of the depth."""
    shift_drift: float = 0.01
    """(c): std of the per-frame shift random walk, as a fraction of the median depth."""
    noise: float = 0.01
    """(c): std of the multiplicative per-pixel depth noise."""
    seed: int = 1000
    """Base seed of the clips (disjoint from the tests' seeds)."""
    cpu_threads: int = 2
    """Torch threads on CPU."""
    out: Path = Path("outputs/benchmarks/bench_recon.json")
    """Where the JSON results go."""


def pipeline_for(setting: str, clip, bench: BenchRecon) -> Pipeline:
    """Returns the pipeline of a setting; (a) needs the clip for its GT tracks."""
    if setting == "a":
        return Pipeline(tracker=GivenTracks(tracks_from_momap(clip.momap)))
    if setting == "b":
        return Pipeline()
    corruption = GivenDepthConfig(
        scale_drift=bench.scale_drift, shift_drift=bench.shift_drift, noise=bench.noise, seed=clip.seed
    )
    return Pipeline(depth=GivenDepth(corruption))


def measure(setting: str, clips: list, bench: BenchRecon) -> dict:
    """Returns the per-clip errors and their medians for one setting on clips of one family."""
    per_clip = []
    for clip in clips:
        started = time.perf_counter()
        result = pipeline_for(setting, clip, bench)(Video.from_clip(clip))
        seconds = time.perf_counter() - started
        errors = reconstruction_errors(result.momap, clip.momap)
        poses = result.momap.ref_from_cam.astype(np.float64)
        trace = np.clip((np.trace(poses[:, :3, :3], axis1=1, axis2=2) - 1) / 2, -1, 1)
        errors["pose_rotation_max_deg"] = float(np.degrees(np.arccos(trace)).max())
        per_clip.append({"seed": clip.seed, "action": clip.task.action, "seconds": seconds, **errors})
    keys = [key for key in per_clip[0] if key not in ("seed", "action")]
    medians = {key: float(np.nanmedian([row[key] for row in per_clip])) for key in keys}
    return {"median": medians, "per_clip": per_clip}


def main(bench: BenchRecon) -> list[dict]:
    """Runs the benchmark, prints a table and writes JSON; returns the rows."""
    torch.set_num_threads(bench.cpu_threads)
    unknown = set(bench.settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"settings: expected a subset of {sorted(SETTINGS)}, got {sorted(unknown)}")
    rows = []
    header = (
        f"{'setting':8s} {'family':11s} {'clips':>5s} {'vis EPE':>8s} {'fill EPE':>8s} {'rot deg':>8s} "
        f"{'rot max':>8s} {'trans':>7s} {'tracked':>8s} {'pose max':>8s} {'s/clip':>7s}"
    )
    print(
        f"{bench.size}x{bench.size}, T = {bench.num_frames}; medians over clips; EPE and trans / scene scale"
    )
    print(header)
    for family in FAMILIES:
        config = SimConfig(family=family, height=bench.size, width=bench.size, num_frames=bench.num_frames)
        clips = [generate_clip(clip_seed(bench.seed, i), config) for i in range(bench.clips)]
        for setting in bench.settings:
            result = measure(setting, clips, bench)
            m = result["median"]
            rows.append({"setting": setting, "family": family, "clips": len(clips), **result})
            print(
                f"({setting}){'':4s} {family:11s} {len(clips):5d} "
                f"{m['visible_epe']:8.4f} {m['infilled_epe']:8.4f} "
                f"{m['rotation_deg']:8.3f} {m['rotation_max_deg']:8.3f} {m['translation']:7.4f} "
                f"{m['tracked_fraction']:8.3f} {m['pose_rotation_max_deg']:8.3f} {m['seconds']:7.2f}",
                flush=True,
            )
    verdict = check_targets(rows)
    for line in verdict["lines"]:
        print(line)
    bench.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "cpu_threads": bench.cpu_threads,
        "machine": platform.processor() or platform.machine(),
        "settings": SETTINGS,
        "size": bench.size,
        "num_frames": bench.num_frames,
        "corruption": {
            "scale_drift": bench.scale_drift,
            "shift_drift": bench.shift_drift,
            "noise": bench.noise,
        },
    }
    bench.out.write_text(json.dumps({"meta": meta, "rows": rows, "targets_b": verdict["checks"]}, indent=2))
    print(f"wrote {bench.out}")
    return rows


def check_targets(rows: list[dict]) -> dict:
    """Returns the checks of the (b) targets: ``{"checks": {name: passed}, "lines": [...]}``."""
    checks, lines = {}, []
    for row in rows:
        if row["setting"] != "b":
            continue
        m, family = row["median"], row["family"]
        values = {
            "visible_epe": m["visible_epe"],
            "infilled_epe": m["infilled_epe"],
            "rotation_deg": m["rotation_deg"],
        }
        if family == "tabletop":  # static camera: every pose within 0.5 deg of identity, in every clip
            values["static_camera_deg"] = max(clip["pose_rotation_max_deg"] for clip in row["per_clip"])
        for name, value in values.items():
            passed = bool(value <= TARGETS_B[name])
            checks[f"{family}.{name}"] = passed
            lines.append(
                f"target (b) {family:11s} {name:18s} {value:8.4f} <= {TARGETS_B[name]:<6g} "
                f"{'ok' if passed else 'MISSED'}"
            )
    return {"checks": checks, "lines": lines}


if __name__ == "__main__":
    main(tyro.cli(BenchRecon))
