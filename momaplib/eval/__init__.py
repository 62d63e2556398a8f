"""Evaluation (paper §4.2, Table 1): methods side by side on datasets, paired comparisons, tables.

``momaplib.metrics`` computes the metrics and a predictor's best-of-N rows; this package puts
methods (reference predictors, prediction folders, saved pipelines) side by side: ``tables``
(``format_table`` like Table 1 with one row per metric and its ↑/↓ arrow, ``style_table`` bolds
the best *method* of each row, ``paired_differences`` with bootstrap intervals, ``write_table``
to CSV and Markdown), ``job`` (``evaluate_methods`` and the ``momap eval`` job) and ``distribution``
(samples against many GT futures per scene: ``evaluate_distribution``, its tables and curves) and
``paper`` (the paper's Tables 1 and 2 from per-clip rows: ``paper_table``, ``paper_intervals``). The metric
functions and ``evaluate_predictor`` are re-exported here for convenience.
"""

from momaplib.eval.distribution import (
    coverage_curve,
    distribution_intervals,
    distribution_table,
    evaluate_distribution,
    futures_oracle,
    guidance_curve,
    simulate_future_sets,
)
from momaplib.eval.dsl import DSL_METHODS, dsl_intervals, dsl_table
from momaplib.eval.job import EvalJob, evaluate_methods
from momaplib.eval.paper import PAPER_ROWS, paper_intervals, paper_table
from momaplib.eval.samples import (
    BEST_MARK,
    SamplingResult,
    best_of_n_table,
    instance_motion_table,
    metrics_table,
    per_scene_table,
    sample_diversity,
)
from momaplib.eval.tables import (
    CLIPS_ROW,
    best_mask,
    format_table,
    metric_label,
    paired_differences,
    style_table,
    summarize,
    table_to_markdown,
    write_table,
)
from momaplib.eval.video import VIDEO_METHODS, VIDEO_METRICS, video_intervals, video_table
from momaplib.metrics import *  # noqa: F403 - the metrics are part of this package's public face
from momaplib.metrics import __all__ as _metric_names

__all__ = [
    *_metric_names,
    "BEST_MARK",
    "CLIPS_ROW",
    "DSL_METHODS",
    "PAPER_ROWS",
    "VIDEO_METHODS",
    "VIDEO_METRICS",
    "EvalJob",
    "SamplingResult",
    "best_mask",
    "best_of_n_table",
    "coverage_curve",
    "distribution_intervals",
    "distribution_table",
    "dsl_intervals",
    "dsl_table",
    "evaluate_distribution",
    "futures_oracle",
    "evaluate_methods",
    "format_table",
    "guidance_curve",
    "instance_motion_table",
    "metric_label",
    "metrics_table",
    "paper_intervals",
    "paper_table",
    "paired_differences",
    "per_scene_table",
    "sample_diversity",
    "simulate_future_sets",
    "style_table",
    "summarize",
    "table_to_markdown",
    "video_intervals",
    "video_table",
    "write_table",
]
