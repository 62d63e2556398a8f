"""The samples of one scene and their per-sample metrics: ``SamplingResult`` and its tables.

A ``SamplingResult`` holds N generated MoMaps of one input and, when the scene's MoMap has the
samples' shape (so it is a ground truth, GT), one row of metrics per sample
(``momaplib.metrics``) and the sample the paper reports (best of N: lowest ``ate_dtw``), and
how far the samples are from each other (``sample_diversity``).
``momaplib.ui.SamplingPanel`` makes them; ``momaplib.viz`` draws them (``figure_3d``,
``sample_image_grid``); the tables here put the samples (``metrics_table``), the objects they
move (``instance_motion_table``) or several runs' reported samples (``best_of_n_table``) side by
side.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from momaplib.baselines.simple import get_predictor
from momaplib.eval.tables import CLIPS_ROW, format_table, style_table
from momaplib.metrics import MetricConfig, sample_metrics, select_best
from momaplib.momap import TAU_MOVE, MoMap, moving_mask

#: Marks the sample the paper reports (lowest ``ate_dtw``) in titles and table columns.
BEST_MARK = "★"


@dataclass
class SamplingResult:
    """The samples of one ``SamplingPanel.generate`` call and, with a GT, their metrics."""

    scene: MoMap  # the input scene: reference image, xyz[0], instances, K; all of xyz is the GT
    samples: list[MoMap]  # N generated MoMaps (metres, reference camera frame)
    xyz: np.ndarray  # (N, T, H, W, 3) float32: the samples' trajectories
    prompt: str  # text the samples were conditioned on ("" = none)
    settings: dict[str, Any]  # num_samples, num_inference_steps, guidance_scale, seed
    metrics: pd.DataFrame | None = None  # one row per sample (index "sample"), one column per metric
    best: int | None = None  # the sample the paper reports: lowest ate_dtw (best of N)
    diversity: dict[str, float] | None = None  # sample_diversity of the samples (N >= 2), GT included
    seconds: float = 0.0  # wall-clock time of the call (sampling and metrics)
    meta: dict[str, Any] = field(default_factory=dict)  # scene name and seed when known

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    @property
    def has_ground_truth(self) -> bool:
        """True when the scene's MoMap has the samples' shape (T, H, W, 3), so it can be scored."""
        return self.scene.num_frames > 1 and self.scene.xyz.shape == self.xyz.shape[1:]

    def views(
        self, samples: Sequence[int] | None = None, max_samples: int = 3
    ) -> list[tuple[str, np.ndarray]]:
        """Returns ``[(title, xyz (T, H, W, 3))]``: the GT (when there is one), then ``samples``
        (default the first ``max_samples``), titled with their ``ate_dtw`` and ★ for the best of N."""
        if samples is None:
            samples = range(min(self.num_samples, max_samples))
        shown = [("ground truth", self.scene.xyz)] if self.has_ground_truth else []
        for index in samples:
            if not 0 <= index < self.num_samples:
                raise IndexError(f"samples: expected indices in [0, {self.num_samples}), got {index}")
            shown.append((self.sample_title(index), self.xyz[index]))
        return shown

    def sample_title(self, index: int) -> str:
        """Returns ``"sample i · ate_dtw 0.123 ★"`` (metrics and mark when known)."""
        title = f"sample {index}"
        if self.metrics is not None:
            title += f" · ate_dtw {self.metrics.loc[index, 'ate_dtw']:.3f}"
        return f"{title} {BEST_MARK}" if index == self.best else title

    def describe(self) -> str:
        """Returns one line: what was sampled, how, how long it took, the best of N and how far
        apart the samples are (``diversity``; moving pixels, distances / scene scale)."""
        s = self.settings
        text = (
            f"{self.num_samples} samples for {self.prompt or '(no text)'!r} "
            f"({s['num_inference_steps']} steps, guidance {s['guidance_scale']}, seed {s['seed']}) "
            f"in {self.seconds:.1f} s"
        )
        if self.metrics is None:
            text += "; no ground truth of the samples' shape, so no metrics"
        else:
            row = self.metrics.loc[self.best]
            text += (
                f"; best of {self.num_samples} (lowest ate_dtw): sample {self.best}, "
                f"ate_dtw {row['ate_dtw']:.3f}, fg_mask_iou {row['fg_mask_iou']:.3f}"
            )
        if self.diversity is not None:
            d = self.diversity
            text += f"; samples {d['pairwise_distance_moving']:.3f} apart on moving pixels"
            if "distance_to_gt_moving" in d:
                text += f", {d['distance_to_gt_moving']:.3f} from the GT"
        return text


def _trajectory_distances(a: np.ndarray, b: np.ndarray, subset: np.ndarray) -> tuple[float, float]:
    """Returns the mean over frames and pixels of ``|a - b|`` for trajectories (3, T, P): over all
    P pixels and over the pixels of ``subset`` (P,) bool (NaN when it is empty)."""
    distance = np.sqrt(((a - b) ** 2).sum(0))  # (T, P); axis-first is several times faster
    return float(distance.mean()), float(distance[:, subset].mean()) if subset.any() else math.nan


def sample_diversity(
    xyz: np.ndarray,
    valid: np.ndarray,
    scale: float,
    gt: np.ndarray | None = None,
    tau_move: float = TAU_MOVE,
) -> dict[str, float]:
    """Returns how far N samples of one input are from each other (and from the GT).

    ``xyz`` (N, T, H, W, 3) are the samples, ``valid`` (H, W) the pixels with a trajectory,
    ``scale`` the scene scale ``s`` (metres), ``gt`` (T, H, W, 3) an optional ground truth. With
    ``d(a, b, P)`` = the mean over frames t and pixels p in P of ``|a[t, p] - b[t, p]| / s``:

    - ``pairwise_distance``: mean over pairs i < j of ``d(x_i, x_j, valid pixels)``;
    - ``pairwise_distance_moving``: the same over the *moving pixels*, those that move more than
      ``tau_move * s`` from t = 0 in some sample or in the GT (static pixels agree in every
      sample and would drown the motion; NaN when nothing moves);
    - ``label_disagreement``: mean over pairs of the fraction of valid pixels that move in one
      sample and stay static in the other (``momaplib.momap.moving_mask``);
    - with ``gt``, ``distance_to_gt`` and ``distance_to_gt_moving``: the mean over samples of
      ``d(x_i, gt, ...)`` on the same pixels: the yardstick. Samples much closer to each other
      than to the GT are nearly one future, and best of N has little to choose from.

    Identical samples give 0 everywhere; samples that differ by a constant offset ``c`` give
    ``|c| / s`` for both distances.
    """
    xyz = np.asarray(xyz)
    valid = np.asarray(valid, dtype=bool)
    if xyz.ndim != 5 or xyz.shape[-1] != 3 or xyz.shape[2:4] != valid.shape:
        raise ValueError(f"xyz: expected (N, T, H, W, 3) with (H, W) = {valid.shape}, got {xyz.shape}")
    if len(xyz) < 2:
        raise ValueError(f"sample_diversity: needs at least 2 samples to compare, got {len(xyz)}")
    if not scale > 0:
        raise ValueError(f"scale: expected a positive scene scale, got {scale}")
    masks = np.stack([moving_mask(sample, valid, tau_move, scale=scale) for sample in xyz])  # (N, H, W)
    moving = masks.any(0)
    if gt is not None:
        gt = np.asarray(gt)
        if gt.shape != xyz.shape[1:]:
            raise ValueError(f"gt: expected the samples' (T, H, W, 3) = {xyz.shape[1:]}, got {gt.shape}")
        moving |= moving_mask(gt, valid, tau_move, scale=scale)
    # (N, 3, T, P) float64 in scene scales: pixels gathered first, coordinate axis first (faster)
    points = np.ascontiguousarray(np.moveaxis(xyz[:, :, valid], -1, 1), dtype=np.float64) / scale
    in_moving = moving[valid]  # (P,)
    pairs = list(itertools.combinations(range(len(xyz)), 2))
    between = np.array([_trajectory_distances(points[i], points[j], in_moving) for i, j in pairs])
    result = {
        "pairwise_distance": between[:, 0].mean(),
        "pairwise_distance_moving": between[:, 1].mean(),
        "label_disagreement": np.mean([(masks[i] != masks[j])[valid].mean() for i, j in pairs]),
    }
    if gt is not None:
        truth = np.ascontiguousarray(np.moveaxis(gt[:, valid], -1, 0), dtype=np.float64) / scale
        to_gt = np.array([_trajectory_distances(sample, truth, in_moving) for sample in points])
        result["distance_to_gt"], result["distance_to_gt_moving"] = to_gt.mean(0)
    return {name: float(value) for name, value in result.items()}


def instance_motion_table(result: SamplingResult, tau_move: float = TAU_MOVE) -> pd.DataFrame:
    """Returns instance rows x MoMap columns: the share of each instance's valid pixels that move.

    A pixel moves when ``max_t |x_t - x_0| > tau_move * s`` (``momaplib.momap.moving_mask``, s the
    scene scale). Rows are the instances of the reference frame with valid pixels, background (0)
    included, labelled ``"<id>: <name> (<role>)"`` from ``scene.meta["instances"]`` where it names
    them; columns ``"GT"`` (with a GT), then ``"sample i"`` for every sample (★ on the best of N).
    Which rows light up tells which objects a sample moves, whatever its metrics say.
    """
    scene = result.scene
    scale = scene.scene_scale
    momaps = {"GT": scene.xyz} if result.has_ground_truth else {}
    for index in range(result.num_samples):
        momaps[f"sample {index}" + (f" {BEST_MARK}" if index == result.best else "")] = result.xyz[index]
    ids = [int(i) for i in np.unique(scene.instance[scene.valid])]
    info = {int(k): v for k, v in scene.meta.get("instances", {}).items()}
    labels = []
    for i in ids:
        entry = info.get(i, {}) if isinstance(info.get(i), Mapping) else {"name": info.get(i)}
        name = entry.get("name") or ("background" if i == 0 else "instance")
        labels.append(f"{i}: {name}" + (f" ({entry['role']})" if entry.get("role") else ""))
    columns = {}
    for title, xyz in momaps.items():
        moving = moving_mask(xyz, scene.valid, tau_move, scale=scale)
        columns[title] = [moving[scene.valid & (scene.instance == i)].mean() for i in ids]
    table = pd.DataFrame(columns, index=pd.Index(labels, name="instance"))
    table.columns.name = "share of pixels that move"
    return table


def best_of_n_table(runs: Mapping[str, SamplingResult], with_mean: bool = False) -> pd.DataFrame:
    """Returns metric rows x one column per run: the values of each run's reported sample.

    With ``with_mean``, (samples, run) columns: ``"best of N"`` (the reported sample) and
    ``"mean of N"`` (the mean over the run's samples) for every run; ``style_table`` then marks
    the best run within each group. Every run needs a GT (``metrics``). Display it with
    ``momaplib.eval.style_table``.
    """
    missing = [name for name, run in runs.items() if run.metrics is None]
    if missing:
        raise ValueError(f"runs {missing} have no metrics (their scene has no ground truth)")
    best = {name: run.metrics.loc[run.best].to_dict() for name, run in runs.items()}
    if with_mean:
        mean = {name: run.metrics.mean().to_dict() for name, run in runs.items()}
        table = format_table({"best of N": best, "mean of N": mean})
        table.columns = table.columns.set_names(["samples", "run"])
    else:
        table = format_table(best)
        table.columns.name = "run"
    return table.drop(index=CLIPS_ROW)  # one input per run: no clip count to show


def metrics_table(result: SamplingResult, decimals: int = 3):
    """Returns a pandas Styler: metric rows x sample columns, the best value of each row in bold.

    The column of the sample the paper reports (lowest ``ate_dtw``) is marked with ★.
    """
    if result.metrics is None:
        raise ValueError("metrics_table: the scene has no ground truth of the samples' shape, so no metrics")
    columns = {
        f"{i} {BEST_MARK}" if i == result.best else str(i): row.to_dict()
        for i, row in result.metrics.iterrows()
    }
    table = format_table(columns).drop(index=CLIPS_ROW)
    table.columns.name = "sample"
    return style_table(table, decimals=decimals)


def per_scene_table(
    runs: Mapping[str, SamplingResult],
    baselines: Sequence[str] = ("static",),
    config: MetricConfig | None = None,
) -> pd.DataFrame:
    """Returns metric rows x (scene, method) columns: per scene, the run's reported sample
    (``"ours (best of N)"``) next to reference predictors (``momaplib.baselines``) scored on the
    same scene. ``style_table`` / ``write_table`` mark the best *method* within each scene, never
    a "best" across unrelated scenes. Every run needs a GT (``metrics``).
    """
    missing = [name for name, run in runs.items() if run.metrics is None]
    if missing:
        raise ValueError(f"runs {missing} have no metrics (their scene has no ground truth)")
    results = {}
    for name, run in runs.items():
        methods = {f"ours (best of {run.num_samples})": run.metrics.loc[run.best].to_dict()}
        for baseline in baselines:
            xyz = get_predictor(baseline)(run.scene, 1, 0)
            values, _ = select_best(sample_metrics(run.scene, xyz, config=config))
            methods[baseline] = values
        results[name] = methods
    table = format_table(results).drop(index=CLIPS_ROW)  # one input per column: no clip count
    table.columns = table.columns.set_names(["scene", "method"])
    return table
