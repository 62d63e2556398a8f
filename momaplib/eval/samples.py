"""The samples of one scene and their per-sample metrics: ``SamplingResult`` and its tables.

A ``SamplingResult`` holds N generated MoMaps of one input and, when the scene's MoMap has the
samples' shape (so it is a ground truth, GT), one row of metrics per sample
(``momaplib.metrics``) and the sample the paper reports (best of N: lowest ``ate_dtw``).
``momaplib.ui.SamplingPanel`` makes them; ``momaplib.viz`` draws them (``figure_3d``,
``sample_image_grid``); the tables here put the samples (``metrics_table``) or several runs'
reported samples (``best_of_n_table``) side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from momaplib.baselines.simple import get_predictor
from momaplib.eval.tables import CLIPS_ROW, format_table, style_table
from momaplib.metrics import MetricConfig, sample_metrics, select_best
from momaplib.momap import MoMap

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
        """Returns one line: what was sampled, how, how long it took and the best of N."""
        s = self.settings
        text = (
            f"{self.num_samples} samples for {self.prompt or '(no text)'!r} "
            f"({s['num_inference_steps']} steps, guidance {s['guidance_scale']}, seed {s['seed']}) "
            f"in {self.seconds:.1f} s"
        )
        if self.metrics is None:
            return text + "; no ground truth of the samples' shape, so no metrics"
        row = self.metrics.loc[self.best]
        return (
            f"{text}; best of {self.num_samples} (lowest ate_dtw): sample {self.best}, "
            f"ate_dtw {row['ate_dtw']:.3f}, fg_mask_iou {row['fg_mask_iou']:.3f}"
        )


def best_of_n_table(runs: Mapping[str, SamplingResult]) -> pd.DataFrame:
    """Returns metric rows x one column per run: the values of each run's reported sample.

    Every run needs a GT (``metrics``). Display it with ``momaplib.eval.style_table``.
    """
    missing = [name for name, run in runs.items() if run.metrics is None]
    if missing:
        raise ValueError(f"runs {missing} have no metrics (their scene has no ground truth)")
    table = format_table({name: run.metrics.loc[run.best].to_dict() for name, run in runs.items()})
    table = table.drop(index=CLIPS_ROW)  # one input per run: no clip count to show
    table.columns.name = "run"
    return table


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
