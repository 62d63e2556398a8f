"""The paper's Table 1 (baselines, §4.3) and Table 2 (ablations, §4.4) from per-clip rows.

The rows come from ``benchmarks/eval_tables.py`` (``checkpoints/logs/table1_per_clip.csv.gz`` and
``table2_per_clip.csv.gz``, the schema of ``test600_per_clip.csv.gz``: one row per clip and method,
columns ``dataset`` (the family) and ``method``). ``paper_table`` gives the means per family and
method in the layout of ``format_table``; ``paper_intervals`` the paired 95 % bootstrap intervals
of every method against the table's reference row (``ours`` in Table 1, ``full`` in Table 2).
``method_predictor`` turns a row's source (``static``, ``gflow:<folder>`` or a pipeline) into a
best-of-N predictor, and ``reported_samples`` gives each method's reported sample of one clip (the
paper's Fig. 5 side by side, ``momaplib.viz.method_comparison_grid``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from momaplib.eval.tables import format_table, paired_differences

#: the rows of each table, named as in the paper, in table order
PAPER_ROWS = {
    1: ("static", "gflow-original", "gflow-rollout", "gflow-extend", "momap-vae", "ours"),
    2: ("full", "no-xyz", "no-sem", "no-vae", "no-unet-init", "no-unet-vae-init"),
}
#: each table's reference row: the paired intervals are ``reference - method``
REFERENCE_ROW = {1: "ours", 2: "full"}
#: the metrics of the paired intervals
INTERVAL_METRICS = ("fg_mask_iou", "ate_dtw", "quantize_acc_16", "epe")


def _rows(per_clip: pd.DataFrame, table: int) -> list[str]:
    """Returns the table's methods present in ``per_clip``, in table order; unknown ones are refused."""
    if table not in PAPER_ROWS:
        raise ValueError(f"table: expected 1 or 2, got {table!r}")
    missing = {"dataset", "method", "clip_id"} - set(per_clip.columns)
    if missing:
        raise ValueError(f"per_clip: missing columns {sorted(missing)} (rows of benchmarks/eval_tables.py)")
    names = PAPER_ROWS[table]
    unknown = sorted(set(per_clip["method"]) - set(names))
    if unknown:
        raise ValueError(
            f"method: {unknown} are not rows of Table {table}; expected names from {list(names)}"
        )
    return [name for name in names if name in set(per_clip["method"])]


def paper_table(per_clip: pd.DataFrame, table: int) -> pd.DataFrame:
    """Returns the means of every metric per family and method (``format_table`` layout)."""
    order = _rows(per_clip, table)
    return format_table(
        {
            family: {method: group[group["method"] == method] for method in order}
            for family, group in per_clip.groupby("dataset", sort=False)
        }
    )


def paper_intervals(per_clip: pd.DataFrame, table: int) -> pd.DataFrame:
    """Returns one row per family, method and metric of ``INTERVAL_METRICS``: the paired difference
    ``reference - method`` over the clips both scored, its 95 % bootstrap interval, the number of
    clips and a verdict naming the better row (or "no difference")."""
    order = _rows(per_clip, table)
    reference = REFERENCE_ROW[table]
    rows = []
    for family, group in per_clip.groupby("dataset", sort=False):
        ours = group[group["method"] == reference]
        for method in order:
            if method == reference or ours.empty:
                continue
            diff = paired_differences(ours, group[group["method"] == method], list(INTERVAL_METRICS))
            verdict = diff["verdict"].map({"a better": reference, "b better": method}).fillna("no difference")
            rows.append(
                diff.assign(verdict=verdict)
                .rename_axis("metric")
                .reset_index()
                .assign(dataset=family, method=method)
            )
    columns = ["dataset", "method", "metric", "diff", "low", "high", "clips", "verdict"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def method_predictor(
    source: str, device: str = "cpu", steps: int = 25, guidance: float | None = None,
    text_encoder: str | None = None,
) -> Callable:  # fmt: skip
    """Returns the predictor ``(gt, num_samples, seed) -> (N, T, H, W, 3)`` of a table row's source:
    ``"static"`` (a reference predictor of ``momaplib.baselines``), ``"gflow:<folder>"`` (a
    ``TrainGFlowJob`` model) or a pipeline (folder, bundled name or hub id: ``MoMapPipeline`` or
    ``MoMapVAEPipeline``), sampled with ``steps`` denoising steps and ``guidance`` (None: the
    pipeline's default); ``text_encoder`` overrides a pipeline's stored spec (e.g. ``minilm:/path``
    on a host without the MiniLM package)."""
    if source == "static":
        from momaplib.baselines import get_predictor

        return get_predictor("static")
    if source.startswith("gflow:"):
        from momaplib.baselines.gflow_train import gflow_predictor, load_gflow

        return gflow_predictor(load_gflow(source.removeprefix("gflow:")).to(device))
    from momaplib.diffusion.objectives import pipeline_predictor
    from momaplib.diffusion.pipeline import load_pipeline

    pipeline = load_pipeline(source, **({"text_encoder": text_encoder} if text_encoder else {})).to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline_predictor(pipeline, use_text=True, num_inference_steps=steps, guidance_scale=guidance)


def reported_samples(
    gt, predictors: Mapping[str, Callable], num_samples: int = 10, seed: int = 0, device: str | None = None
) -> dict[str, np.ndarray]:
    """Returns ``{method: xyz (T, H, W, 3)}``: the sample each predictor reports on ``gt`` under the
    tables' rule (best of ``num_samples`` by ``ate_dtw``, the same ``seed`` for every method)."""
    from momaplib.metrics import sample_metrics, select_best

    reported = {}
    for name, predict in predictors.items():
        samples = predict(gt, num_samples, seed)
        _, index = select_best(sample_metrics(gt, samples, device=device))
        reported[name] = np.asarray(samples[index])
    return reported


__all__ = [
    "INTERVAL_METRICS",
    "PAPER_ROWS",
    "REFERENCE_ROW",
    "method_predictor",
    "paper_intervals",
    "paper_table",
    "reported_samples",
]
