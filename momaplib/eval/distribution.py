"""Is the model a distribution? Samples against many GT futures per scene, over scenes and methods.

MoMap-Sim draws several futures of one start frame (``SimConfig.motion_variant``: variant 0 is the
test clip, ``k`` > 0 re-draws only its motion). ``simulate_future_sets`` gives the M futures of
each test scene; ``evaluate_distribution`` samples every method N times on the scene's start
frame (variant 0; no method sees a future) and scores the samples against all M futures with
``momaplib.metrics.distribution`` (diversity ratio, precision and recall at ``tau``, energy
distance, ...), one row per (scene, method, guidance scale). ``distribution_table`` averages the
rows, ``distribution_intervals`` pairs every method with a reference row scene by scene
(bootstrap intervals, ``paired_differences``), and ``guidance_curve`` / ``coverage_curve`` give
the diversity-fidelity curve over guidance scales and precision / recall over ``tau``
(``momaplib.viz.plot_guidance_curve``, ``plot_coverage_curve``). ``benchmarks/eval_distribution.py``
runs it on 200+ test scenes per family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from momaplib.checks import is_integer
from momaplib.data.splits import simulate_split_clips
from momaplib.eval.tables import paired_differences
from momaplib.metrics.best_of_n import MAX_SAMPLES, Predictor, clip_generator
from momaplib.metrics.distribution import (
    DISTRIBUTION_DIRECTIONS,
    DISTRIBUTION_METRICS,
    TAU_GRID,
    TAU_MATCH,
    metrics_from_distances,
    precision_recall_curve,
    set_distances,
)
from momaplib.metrics.scores import MetricConfig
from momaplib.momap import MoMap
from momaplib.sim import SimConfig

#: A scene: its id and its M GT futures (variant 0 first: the clip the methods are conditioned on).
FutureSet = tuple[str, Sequence[MoMap]]
#: The metrics of the paired intervals and of the summary's Markdown (in this order).
SUMMARY_METRICS = (
    "diversity_ratio",
    "precision",
    "recall",
    "energy_distance",
    "sample_to_gt",
    "gt_to_sample",
)


def curve_column(kind: str, tau: float) -> str:
    """Returns the per-scene column of ``kind`` ("precision" or "recall") at ``tau``, e.g. ``recall@0.1``."""
    return f"{kind}@{tau:g}"


def simulate_future_sets(
    family: str,
    count: int,
    num_futures: int = 10,
    *,
    seed: int = 0,
    config: SimConfig | None = None,
    split: str = "test",
    shard: tuple[int, int] = (0, 1),
    workers: int = 0,
    progress: bool = True,
) -> list[FutureSet]:
    """Returns ``[(scene_id, [M MoMaps])]``: the first ``count`` ``split`` clips of a family (as
    ``momaplib.data.simulate_split_clips``, every n-th with ``shard=(k, n)``), each with its motion
    variants 0 .. ``num_futures`` - 1. The scene id is the clip id of variant 0; all variants share
    frame 0 bit for bit (checked here)."""
    if not is_integer(num_futures) or num_futures < 1:
        raise ValueError(f"num_futures: expected >= 1 motion variants per scene, got {num_futures!r}")
    config = config or SimConfig()
    variants = [
        simulate_split_clips(
            family,
            count,
            seed=seed,
            config=replace(config, motion_variant=k),
            split=split,
            shard=shard,
            workers=workers,
            progress=progress,
        )
        for k in range(num_futures)
    ]
    scenes = []
    for position, (scene_id, reference) in enumerate(variants[0]):
        futures = [reference]
        for k in range(1, num_futures):
            other_id, future = variants[k][position]
            if other_id != scene_id or not np.array_equal(future.xyz[0], reference.xyz[0], equal_nan=True):
                raise ValueError(
                    f"scene {scene_id}: motion variant {k} ({other_id}) does not share frame 0 with variant 0"
                )
            futures.append(future)
        scenes.append((scene_id, futures))
    return scenes


def futures_oracle(per_future: Predictor) -> Predictor:
    """Returns an oracle of ``evaluate_distribution`` whose N samples are the scene's own GT futures
    (cycled when N exceeds them), each passed through ``per_future`` (a predictor of one clip, e.g.
    ``momaplib.baselines.vae_reconstruction(vae)``: the futures as a MoMap VAE keeps them).

    It is the one kind of method that sees every future, not only the start frame: with
    ``ground_truth`` it scores the futures against themselves (diversity ratio 1, precision and
    recall 1); with a VAE round trip it is the spread a generator shows whose samples are the
    futures' own latents (more spread through that decoder means samples away from the futures),
    so it tells an autoencoder that merges futures from a generator that collapses.
    """

    def predict(futures: Sequence[MoMap], num_samples: int, generator) -> torch.Tensor:
        picks = [futures[i % len(futures)] for i in range(num_samples)]
        return torch.stack([torch.as_tensor(per_future(future, 1, generator)[0]) for future in picks])

    predict.sees_futures = True
    return predict


def evaluate_distribution(
    scenes: Sequence[FutureSet],
    methods: Mapping[str | tuple[str, float | None], Predictor],
    *,
    num_samples: int = 10,
    seed: int = 0,
    tau: float = TAU_MATCH,
    taus: Sequence[float] = TAU_GRID,
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Returns one row per (scene, method): ``scene_id, method, guidance_scale, num_samples,
    num_futures, num_fg`` (``|F|``), ``DISTRIBUTION_METRICS`` at ``tau``
    and the curve columns ``precision@tau`` / ``recall@tau`` for every ``taus``.

    ``methods`` maps a name, or a (name, guidance scale) pair for one method at several scales, to
    a predictor ``(reference MoMap, N, generator) -> (N, T, H, W, 3)`` (``momaplib.baselines``,
    ``momaplib.diffusion.objectives.pipeline_predictor``); it sees only variant 0 of a scene and is
    seeded from ``(seed, scene_id)``, so methods are paired on the same draws (a ``futures_oracle``
    is given all the scene's futures instead). The GT futures'
    distances are computed once per scene and reused for every method.
    """
    if not is_integer(num_samples) or not 1 <= num_samples <= MAX_SAMPLES:
        raise ValueError(f"num_samples: expected 1..{MAX_SAMPLES} samples per scene, got {num_samples!r}")
    keys = {key: (key, math.nan) if isinstance(key, str) else key for key in methods}
    rows = []
    for scene_id, futures in tqdm(scenes, desc="distribution", disable=not progress, leave=False):
        if len(futures) < 1:
            raise ValueError(f"scene {scene_id}: expected at least one GT future, got none")
        reference = futures[0]
        gt_cache = None
        for key, predictor in methods.items():
            name, guidance = keys[key]
            seen = futures if getattr(predictor, "sees_futures", False) else reference
            samples = predictor(seen, num_samples, clip_generator(seed, scene_id))
            try:
                distances = set_distances(
                    samples, futures, reference, config=config, device=device, reuse=gt_cache
                )
            except ValueError as exc:
                raise ValueError(f"scene {scene_id}, method {name}: {exc}") from exc
            gt_cache = distances
            values = metrics_from_distances(distances, tau)
            curve = precision_recall_curve(distances, taus)
            row = {
                "scene_id": scene_id,
                "method": name,
                "guidance_scale": float("nan" if guidance is None else guidance),
                "num_samples": len(samples),
                "num_futures": len(futures),
                "num_fg": distances.num_fg,
                **{metric: values[metric] for metric in DISTRIBUTION_METRICS},
            }
            for kind in ("precision", "recall"):
                row.update({curve_column(kind, t): v for t, v in zip(curve["tau"], curve[kind], strict=True)})
            rows.append(row)
    return pd.DataFrame(rows)


def _groups(per_scene: pd.DataFrame) -> list[str]:
    return [c for c in ("dataset", "method", "guidance_scale") if c in per_scene.columns]


def common_scenes(per_scene: pd.DataFrame) -> pd.DataFrame:
    """Returns the rows of the scenes that every (method, guidance scale) row of their family
    scored: a curve or comparison across rows run on different numbers of scenes (e.g. the default
    on 200, other guidance scales on 24) is then made on the same scenes."""
    keys = [c for c in ("method", "guidance_scale") if c in per_scene.columns]
    family = per_scene["dataset"] if "dataset" in per_scene.columns else pd.Series("", index=per_scene.index)
    columns = [per_scene[k] for k in keys]
    rows = pd.Series([str(key) for key in zip(*columns, strict=True)], index=per_scene.index)
    needed = rows.groupby(family).nunique()
    has = rows.groupby([family, per_scene["scene_id"]]).nunique()
    keep = {(fam, scene) for (fam, scene), count in has.items() if count == needed[fam]}
    kept = [pair in keep for pair in zip(family, per_scene["scene_id"], strict=True)]
    return per_scene[kept].reset_index(drop=True)


def distribution_table(
    per_scene: pd.DataFrame, metrics: Sequence[str] = DISTRIBUTION_METRICS
) -> pd.DataFrame:
    """Returns the mean of each metric per (dataset, method, guidance scale), NaN scenes skipped,
    with the number of scenes (``scenes``) and of those with a moving GT (``scored``)."""
    keys = _groups(per_scene)
    grouped = per_scene.groupby(keys, sort=False, dropna=False)
    table = grouped[list(metrics)].mean()
    table.insert(0, "scored", grouped["num_fg"].apply(lambda fg: int((fg > 0).sum())))
    table.insert(0, "scenes", grouped.size())
    return table.reset_index()


def table_markdown(table: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS, decimals: int = 3) -> str:
    """Returns ``distribution_table`` as a Markdown pipe table (guidance "–" where a method has none)."""
    keys = [c for c in ("dataset", "method", "guidance_scale") if c in table.columns]
    arrows = {True: " ↑", False: " ↓", None: ""}
    headers = [*keys, "scenes", *(f"{m}{arrows[DISTRIBUTION_DIRECTIONS[m]]}" for m in metrics)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(keys) + "---:|" * (1 + len(metrics))]
    for row in table.itertuples(index=False):
        row = row._asdict()
        cells = [str(row[k]) if k != "guidance_scale" else _guidance_text(row[k]) for k in keys]
        cells.append(str(int(row["scenes"])))
        cells += ["–" if pd.isna(row[m]) else f"{row[m]:.{decimals}f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _guidance_text(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:g}"


def distribution_intervals(
    per_scene: pd.DataFrame,
    reference: tuple[str, float | None],
    metrics: Sequence[str] = SUMMARY_METRICS,
    **bootstrap_options,
) -> pd.DataFrame:
    """Returns per dataset, compared row and metric: the mean per-scene difference reference − row
    with its bootstrap interval (``momaplib.eval.paired_differences``; ``bootstrap_options`` go
    there). ``reference`` is (method, guidance scale), guidance None for a method without one.
    Rows are paired on ``scene_id``; the verdict names the better side (for the diversity ratio,
    whose ideal is 1, the higher one)."""
    name, guidance = reference
    frame = per_scene if "dataset" in per_scene.columns else per_scene.assign(dataset="all")
    frames = []
    for dataset, group in frame.groupby("dataset", sort=False):
        is_reference = (group["method"] == name) & _same_guidance(group["guidance_scale"], guidance)
        ours = group[is_reference].rename(columns={"scene_id": "clip_id"})
        if ours.empty:
            continue
        for (method, scale), other in group[~is_reference].groupby(
            ["method", "guidance_scale"], sort=False, dropna=False
        ):
            diff = paired_differences(
                ours, other.rename(columns={"scene_id": "clip_id"}), list(metrics),
                directions=DISTRIBUTION_DIRECTIONS, **bootstrap_options,
            )  # fmt: skip
            verdicts = {"a better": "reference better", "b better": f"{method} better"}
            verdicts.update({"a higher": "reference higher", "b higher": f"{method} higher"})
            diff["verdict"] = [verdicts.get(v, v) for v in diff["verdict"]]
            frames.append(
                diff.rename_axis("metric")
                .reset_index()
                .assign(dataset=dataset, method=method, guidance_scale=scale)
            )
    columns = ["dataset", "method", "guidance_scale", "metric", "diff", "low", "high", "clips", "verdict"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _same_guidance(column: pd.Series, guidance: float | None) -> pd.Series:
    if guidance is None or (isinstance(guidance, float) and math.isnan(guidance)):
        return column.isna()
    return (column - guidance).abs() < 1e-9


def intervals_markdown(intervals: pd.DataFrame, reference: str) -> str:
    """Returns ``distribution_intervals`` as a Markdown table."""
    lines = [
        f"| family | method | guidance | metric | {reference} − method | 95 % interval | scenes | verdict |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    for row in intervals.itertuples(index=False):
        lines.append(
            f"| {row.dataset} | {row.method} | {_guidance_text(row.guidance_scale)} | {row.metric} | "
            f"{row.diff:+.4f} | [{row.low:+.4f}, {row.high:+.4f}] | {int(row.clips)} | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"


def guidance_curve(per_scene: pd.DataFrame, method: str = "ours") -> pd.DataFrame:
    """Returns the diversity-fidelity curve of ``method``: per dataset and guidance scale the mean
    of every metric, sorted by guidance (``momaplib.viz.plot_guidance_curve`` draws it)."""
    rows = per_scene[(per_scene["method"] == method) & per_scene["guidance_scale"].notna()]
    if rows.empty:
        raise ValueError(f"method: no rows of {method!r} with a guidance scale in the per-scene frame")
    table = distribution_table(rows)
    return table.sort_values(
        [c for c in ("dataset", "guidance_scale") if c in table.columns], ignore_index=True
    )


def coverage_curve(per_scene: pd.DataFrame) -> pd.DataFrame:
    """Returns long rows (dataset, method, guidance_scale, tau, precision, recall): the mean over
    scenes of the per-scene curve columns (``curve_column``), for ``plot_coverage_curve``."""
    columns = [c for c in per_scene.columns if c.startswith("precision@")]
    taus = [float(c.split("@", 1)[1]) for c in columns]
    if not taus:
        raise ValueError("per_scene: no precision@tau columns (not an evaluate_distribution frame)")
    keys = _groups(per_scene)
    means = per_scene.groupby(keys, sort=False, dropna=False)[
        [*columns, *(curve_column("recall", t) for t in taus)]
    ].mean()
    rows = []
    for key, values in means.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        for tau in taus:
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "tau": tau,
                    "precision": values[curve_column("precision", tau)],
                    "recall": values[curve_column("recall", tau)],
                }
            )
    return pd.DataFrame(rows)
