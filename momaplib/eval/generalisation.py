"""The generalisation suite: how the MoMap VAE and the pipeline do on scenes unlike their training data.

Every case (``CASES``) builds one MoMap per seed: unseen MoMap-Sim tabletop clips as simulated and
seen through rolled, mirrored, pitched or depth-scaled cameras (``momaplib.data.views``), and
procedural geometry (``momaplib.data.procedural``: planes, rooms, primitives, smooth surfaces,
static and with one rigid part moving). For each case:

- the MoMap VAE round trip (``momaplib.vae.analysis.round_trip``, posterior mean), as the
  median point error over the scene scale ``s``: ``vae_all`` (every valid point and frame),
  ``vae_static`` and ``vae_moving`` (GT still / moving points, all frames; NaN without any) and
  ``vae_t0`` (the reference frame);
- the pipeline's samples (``MoMapPipeline``, given the case's image, XYZ, instances and prompt):
  ``pipe_t0`` the median error of the samples' own reference frame over ``s`` (mean over samples;
  sampled with ``anchor_t0`` off: anchored output starts at the given XYZ by construction), and
  ``pipe_bg_moved`` the fraction of valid background pixels (instance 0) that a sample moves by
  more than ``TAU_MOVE`` x ``s`` (mean over samples). No case's prompt asks the background to move.

Inputs are normalised by the scene scale (``momaplib.momap.normalize_xyz``), so scaling a whole
scene changes nothing (``sim_depth_x2`` shows it): the procedural cases differ in layout, not in
their depth range. Seeds are unseen by construction: suite seed ``k`` of a ``sim*`` case is the
``k``-th test-split tabletop clip of ``momap sim --seed 0`` (the split no bundled model trains
on), and procedural cases use seeds ``0 .. VAL_SEED_START - 1`` while procedural training data starts at
``TRAIN_SEED_START`` (``momaplib.data.procedural``).

``split="val"`` builds a second suite for choosing between models (checkpoints, training rounds,
settings) without looking at the test cases: the ``sim*`` cases take the val-split clips and the
procedural cases the seeds from ``VAL_SEED_START`` on, disjoint from the test suite's and from the
training data's.

Targets (issue: generalisation): ``vae_all`` <= 1.5 % on every case and <= 0.6 % on ``sim``;
``pipe_t0`` <= 3 % and ``pipe_bg_moved`` <= 5 % on every case (``TARGETS``, ``target_failures``).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from momaplib.data.procedural import TRAIN_SEED_START, procedural_momap
from momaplib.data.splits import split_indices
from momaplib.data.views import mirror, roll_quarter_turns, rotate_camera
from momaplib.momap import TAU_MOVE, MoMap
from momaplib.sim import SimConfig, clip_seed, generate_clip
from momaplib.vae.analysis import round_trip

#: The suites: ``test`` (reported) and ``val`` (for choosing between models; see the module).
SPLITS = ("test", "val")
#: Procedural seeds of the ``val`` suite start here (``test``: 0 .. VAL_SEED_START - 1).
VAL_SEED_START = TRAIN_SEED_START // 2

#: Metrics of one case, as fractions of the scene scale (``pipe_bg_moved``: of background pixels).
METRICS = ("vae_all", "vae_static", "vae_moving", "vae_t0", "pipe_t0", "pipe_bg_moved")
#: Targets: metric -> (largest value on every case, largest on ``sim``).
TARGETS = {"vae_all": (0.015, 0.006), "pipe_t0": (0.03, 0.03), "pipe_bg_moved": (0.05, 0.05)}


def _sim(seed: int, height: int, width: int, num_frames: int, split: str = "test") -> MoMap:
    index = split_indices("tabletop", seed + 1, split)[seed]
    config = SimConfig(family="tabletop", height=height, width=width, num_frames=num_frames)
    return generate_clip(clip_seed(0, index), config).momap


def _scaled(momap: MoMap, factor: float) -> MoMap:
    ref_from_cam = momap.ref_from_cam.copy()
    ref_from_cam[:, :3, 3] *= factor
    meta = {**momap.meta, "view": [*momap.meta.get("view", []), f"depth x{factor:g}"]}
    return dataclasses.replace(
        momap, xyz=momap.xyz * np.float32(factor), ref_from_cam=ref_from_cam, meta=meta
    )


def _procedural(kind: str, moving: bool = False, depth_range: tuple[float, float] | None = None):
    def build(seed: int, height: int, width: int, num_frames: int, split: str = "test") -> MoMap:
        seed = seed + (VAL_SEED_START if split == "val" else 0)
        return procedural_momap(kind, seed, height, width, num_frames, moving=moving, depth_range=depth_range)

    return build


@dataclasses.dataclass(frozen=True)
class Case:
    """One case of the suite."""

    name: str  # row name of the tables
    description: str  # what it shows, for the table's reader
    build: Callable[..., MoMap]  # (seed, height, width, num_frames, split) -> MoMap


def _seen(transform: Callable[[MoMap], MoMap]):
    def build(seed: int, height: int, width: int, num_frames: int, split: str = "test") -> MoMap:
        return transform(_sim(seed, height, width, num_frames, split))

    return build


_proc = _procedural

#: The suite, in table order.
CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case("sim", "MoMap-Sim tabletop clip, as simulated", _sim),
        Case("sim_roll90", "the same, camera rolled 90 deg", _seen(lambda m: roll_quarter_turns(m, 1))),
        Case("sim_roll180", "the same, camera rolled 180 deg", _seen(lambda m: roll_quarter_turns(m, 2))),
        Case("sim_mirror", "the same, mirrored left-right", _seen(lambda m: mirror(m, "horizontal"))),
        Case("sim_upside_down", "the same, mirrored top-bottom", _seen(lambda m: mirror(m, "vertical"))),
        Case("sim_pitch20", "the same, pitched up 20 deg", _seen(lambda m: rotate_camera(m, pitch_deg=20))),
        Case("sim_roll30", "the same, camera rolled 30 deg", _seen(lambda m: rotate_camera(m, roll_deg=30))),
        Case("sim_depth_x2", "the same, scene scaled x2", _seen(lambda m: _scaled(m, 2.0))),
        Case("fronto_plane", "fronto-parallel plane, 0.7-1 m", _proc("fronto_plane", depth_range=(0.7, 1))),
        Case("tilted_plane", "tilted plane, 1.2-3 m", _proc("tilted_plane", depth_range=(1.2, 3.0))),
        Case("room", "room corner (floor, walls, ceiling), 1.2-3 m", _proc("room", depth_range=(1.2, 3.0))),
        Case("primitives", "boxes, cylinders, spheres before a plane", _proc("primitives")),
        Case("surface", "smooth random surface around 1.5 m", _proc("surface", depth_range=(1.2, 1.9))),
        Case("tilted_plane_moving", "tilted plane, one part moving", _proc("tilted_plane", True, (1.2, 3.0))),
        Case("room_moving", "room corner, one part moving", _proc("room", True, (1.2, 3.0))),
        Case("primitives_moving", "primitives, one moving", _proc("primitives", True)),
        Case("surface_moving", "smooth surface, one part moving", _proc("surface", True, (1.2, 1.9))),
    )
}  # fmt: skip


def build_case(
    name: str, seed: int, height: int = 128, width: int = 128, num_frames: int = 32, split: str = "test"
) -> MoMap:
    """Returns the MoMap of case ``name`` (``CASES``) and suite seed ``seed`` (0 <= seed <
    ``VAL_SEED_START``) of the ``test`` or ``val`` suite (``split``, see the module)."""
    if name not in CASES:
        raise ValueError(f"case: expected one of {list(CASES)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if not 0 <= seed < VAL_SEED_START:
        raise ValueError(
            f"seed: expected 0 <= seed < {VAL_SEED_START} (the val suite's seeds, then the training seeds, "
            f"start there), got {seed}"
        )
    momap = CASES[name].build(seed, height, width, num_frames, split)
    meta = {**momap.meta, "case": name, "suite_seed": seed, "suite_split": split}
    return dataclasses.replace(momap, meta=meta)


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else math.nan


def vae_errors(vae, momap: MoMap, tau_move: float = TAU_MOVE) -> dict[str, float]:
    """Returns ``vae_all``, ``vae_static``, ``vae_moving`` and ``vae_t0`` of one MoMap (see the module)."""
    decoded = round_trip(vae, momap)
    error = np.linalg.norm(decoded.xyz - momap.xyz, axis=-1) / momap.scene_scale  # (T, H, W)
    moving = momap.moving_mask(tau_move)
    return {
        "vae_all": _median(error[:, momap.valid]),
        "vae_static": _median(error[:, momap.valid & ~moving]),
        "vae_moving": _median(error[:, moving]),
        "vae_t0": _median(error[0, momap.valid]),
    }


def pipeline_errors(samples: np.ndarray, momap: MoMap, tau_move: float = TAU_MOVE) -> dict[str, float]:
    """Returns ``pipe_t0`` and ``pipe_bg_moved`` of samples (N, T, H, W, 3) of one MoMap (see the module)."""
    s = momap.scene_scale
    valid = momap.valid
    t0 = [_median(np.linalg.norm(x[0] - momap.xyz[0], axis=-1)[valid] / s) for x in samples]
    background = valid & (momap.instance == 0)
    moved = [
        float((np.linalg.norm(x - x[:1], axis=-1).max(0) > tau_move * s)[background].mean())
        if background.any()
        else math.nan
        for x in samples
    ]
    return {"pipe_t0": float(np.mean(t0)), "pipe_bg_moved": float(np.mean(moved))}


def run_suite(
    vae=None,
    pipeline=None,
    cases: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    num_samples: int = 4,
    num_inference_steps: int = 25,
    size: tuple[int, int, int] = (128, 128, 32),
    progress: bool = True,
    split: str = "test",
) -> list[dict[str, Any]]:
    """Returns one row per (case, seed): ``case``, ``seed`` and the ``METRICS`` (pipeline metrics
    NaN without a ``pipeline``; VAE metrics NaN without a ``vae``). ``size`` is (H, W, T); ``split``
    picks the ``test`` suite or the ``val`` one (for choosing between models).

    ``pipeline`` samples ``num_samples`` futures per case with a generator seeded by the suite seed.
    """
    names = list(CASES) if cases is None else list(cases)
    height, width, num_frames = size
    anchor = getattr(getattr(pipeline, "config", None), "anchor_t0", None)
    if anchor is not None:
        pipeline.register_to_config(anchor_t0=False)  # the model's own t = 0 (restored at the end)
    try:
        rows = []
        jobs = [(name, seed) for name in names for seed in seeds]
        for name, seed in tqdm(jobs, desc="generalisation suite", unit="case", disable=not progress):
            momap = build_case(name, seed, height, width, num_frames, split)
            row: dict[str, Any] = {"case": name, "seed": int(seed), **dict.fromkeys(METRICS, math.nan)}
            if vae is not None:
                row.update(vae_errors(vae, momap))
            if pipeline is not None:
                with warnings.catch_warnings():  # turned views have invalid pixels by design
                    warnings.filterwarnings("ignore", message="xyz: .* have no geometry")
                    output = pipeline(
                        momap.rgb, xyz=np.where(momap.valid[..., None], momap.xyz[0], 0),
                        instance_map=momap.instance, prompt=momap.prompt or None, num_samples=num_samples,
                        num_inference_steps=num_inference_steps,
                        generator=torch.Generator().manual_seed(int(seed)), progress=False,
                    )  # fmt: skip
                row.update(pipeline_errors(output.xyz, momap))
            rows.append(row)
    finally:
        if anchor is not None:
            pipeline.register_to_config(anchor_t0=anchor)
    return rows


def summarize_suite(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Returns ``{case: {metric: mean over seeds (NaN seeds left out), "num_seeds": n}}`` in case order."""
    summary: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(row["case"] for row in rows):
        chosen = [row for row in rows if row["case"] == name]
        entry = {}
        for metric in METRICS:
            values = np.array([row[metric] for row in chosen], dtype=np.float64)
            values = values[np.isfinite(values)]
            entry[metric] = float(values.mean()) if values.size else math.nan
        entry["num_seeds"] = len(chosen)
        summary[name] = entry
    return summary


def target_failures(summary: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Returns ``"case: metric value > target"`` for every target a case misses (``TARGETS``)."""
    failures = []
    for name, entry in summary.items():
        for metric, (every, sim) in TARGETS.items():
            target = sim if name == "sim" else every
            value = entry.get(metric, math.nan)
            if math.isfinite(value) and value > target:
                failures.append(f"{name}: {metric} {100 * value:.3g} % > {100 * target:.3g} %")
    return failures


def _cell(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:.3g} %"


def suite_markdown(results: Mapping[str, Any], other: Mapping[str, Any] | None = None) -> str:
    """Returns the markdown table of one result file's summary, or of two side by side (``old → new``)."""
    summary = results["summary"]
    names = list(summary) + [n for n in (other or {}).get("summary", {}) if n not in summary]
    metrics = [m for m in METRICS if any(math.isfinite(summary.get(n, {}).get(m, math.nan)) for n in names)]
    if other is not None:
        both = (results["summary"], other["summary"])
        metrics = [
            m
            for m in METRICS
            if any(math.isfinite(r.get(n, {}).get(m, math.nan)) for r in both for n in names)
        ]
    head = "| case | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 1)]
    for name in names:
        cells = []
        for metric in metrics:
            old = summary.get(name, {}).get(metric, math.nan)
            if other is None:
                cells.append(_cell(old))
            else:
                cells.append(f"{_cell(old)} → {_cell(other['summary'].get(name, {}).get(metric, math.nan))}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if other is not None:
        lines.append("")
        lines.append(f"left: {results.get('label', '?')}, right: {other.get('label', '?')}")
    return "\n".join(lines)


def environment() -> dict[str, str]:
    """Returns the device name, torch version and platform of this run (recorded in the result file)."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"device_name": device, "torch": torch.__version__, "platform": platform.platform()}


__all__ = [
    "CASES",
    "METRICS",
    "SPLITS",
    "TARGETS",
    "VAL_SEED_START",
    "Case",
    "build_case",
    "environment",
    "pipeline_errors",
    "run_suite",
    "suite_markdown",
    "summarize_suite",
    "target_failures",
    "vae_errors",
]
