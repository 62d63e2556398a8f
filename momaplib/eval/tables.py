"""Metric tables like the paper's Table 1: per-method summaries, paired differences, formatting and files."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from momaplib.metrics.scores import higher_is_better
from momaplib.storage import atomic_write_text

#: Label of the row that counts the clips of each column (not a metric, never bold).
CLIPS_ROW = "clips"


# ----------------------------------------------------------------------------- tables
def summarize(per_clip: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.Series:
    """Returns the mean over clips of each metric (NaN clips skipped) plus the clip count ``clips``."""
    metrics = list(metrics or [c for c in per_clip.columns if _is_metric(c)])
    summary = per_clip[metrics].astype(float).mean(skipna=True)
    summary[CLIPS_ROW] = float(len(per_clip))
    return summary


def paired_differences(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    directions: Mapping[str, bool | None] | None = None,
) -> pd.DataFrame:
    """Returns, per metric, the mean per-clip difference ``a - b`` of two methods on the same
    clips, with a bootstrap confidence interval over clips.

    ``a`` and ``b`` are per-clip DataFrames (``evaluate_methods``) paired on ``clip_id``; a clip
    counts for a metric where both values are finite. The interval is the percentile bootstrap
    of the mean difference (``scipy.stats.bootstrap``, ``n_resamples`` resamples of the clips,
    fixed ``seed``). Pairing removes the between-clip spread that the two table columns share,
    so it tells a real gap from the noise of a small test split. Columns: ``mean_a``,
    ``mean_b``, ``diff``, ``low``, ``high``, ``clips`` and ``verdict`` ("a better", "b better"
    by the metric's direction when the interval excludes 0, else "no difference").
    ``directions`` maps metrics that ``momaplib.metrics.higher_is_better`` does not know to True
    (higher is better), False (lower is) or None (no better side, e.g. a ratio whose ideal is 1:
    the verdict is then "a higher" or "b higher").
    """
    from scipy.stats import bootstrap

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    for name, frame in (("a", a), ("b", b)):
        if "clip_id" not in frame.columns:
            raise ValueError(f"paired_differences: {name} has no clip_id column (a per-clip DataFrame)")
        if frame["clip_id"].duplicated().any():
            raise ValueError(f"paired_differences: {name} has repeated clip ids")
    metrics = list(metrics or [c for c in a.columns if _is_metric(c) and c in b.columns])
    joined = a.merge(b, on="clip_id", suffixes=("_a", "_b"))
    if joined.empty:
        raise ValueError("paired_differences: a and b share no clip_id")
    rows = {}
    for metric in metrics:
        left = joined[f"{metric}_a"].to_numpy(float)
        right = joined[f"{metric}_b"].to_numpy(float)
        keep = np.isfinite(left) & np.isfinite(right)
        left, right = left[keep], right[keep]
        diff = left - right
        low = high = math.nan
        if len(diff) >= 2:
            result = bootstrap(
                (diff,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method="percentile",
                random_state=np.random.default_rng(seed),
            )
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        verdict = "no difference"
        if low > 0 or high < 0:
            a_higher = low > 0
            better_high = (
                directions[metric] if directions and metric in directions else higher_is_better(metric)
            )
            if better_high is None:
                verdict = "a higher" if a_higher else "b higher"
            else:
                verdict = "a better" if a_higher == better_high else "b better"
        rows[metric] = {
            "mean_a": float(left.mean()) if len(left) else math.nan,
            "mean_b": float(right.mean()) if len(right) else math.nan,
            "diff": float(diff.mean()) if len(diff) else math.nan,
            "low": low,
            "high": high,
            "clips": len(diff),
            "verdict": verdict,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _is_metric(name: str) -> bool:
    try:
        higher_is_better(name)
    except KeyError:
        return False
    return True


def metric_label(name: str) -> str:
    """Returns the table row label of a metric: its name and ↑ (higher is better) or ↓."""
    return f"{name} {'↑' if higher_is_better(name) else '↓'}"


def format_table(
    results: Mapping[str, Any],
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Returns the metric table: rows ``"<metric> ↑/↓"`` (and ``clips``), one column per method.

    ``results`` maps method -> per-clip DataFrame, summary Series or ``{metric: value}``; or
    dataset -> such a mapping, which gives (dataset, method) columns like the paper's Table 1
    (BRIDGE and HOI4D side by side). Values stay numeric; see ``style_table`` and
    ``table_to_markdown`` for display.
    """
    nested = all(isinstance(v, Mapping) and not _is_summary_mapping(v) for v in results.values())
    if nested:
        columns = {
            (dataset, method): _summary(value)
            for dataset, group in results.items()
            for method, value in group.items()
        }
    else:
        columns = {method: _summary(value) for method, value in results.items()}
    if not columns:
        raise ValueError("format_table: no results")
    if metrics is None:
        metrics = [name for name in next(iter(columns.values())).index if _is_metric(name)]
    table = pd.DataFrame({key: summary.reindex([*metrics, CLIPS_ROW]) for key, summary in columns.items()})
    table.index = [*map(metric_label, metrics), CLIPS_ROW]
    if nested:
        table.columns = pd.MultiIndex.from_tuples(table.columns, names=["dataset", "method"])
    else:
        table.columns.name = "method"
    return table


def _is_summary_mapping(value: Mapping) -> bool:
    return bool(value) and all(isinstance(v, (int, float, np.floating)) for v in value.values())


def _summary(value: Any) -> pd.Series:
    if isinstance(value, pd.DataFrame):
        return summarize(value)
    series = pd.Series(dict(value), dtype=float) if isinstance(value, Mapping) else value.astype(float)
    if CLIPS_ROW not in series.index:
        series[CLIPS_ROW] = math.nan
    return series


def best_mask(
    table: pd.DataFrame, exclude_from_best: Sequence[str] = ("gt",), decimals: int | None = 4
) -> pd.DataFrame:
    """Returns a bool frame like ``table``: True at the best value of each metric row.

    Best is the max for ↑ rows and the min for ↓ rows, within each dataset group of a
    (dataset, method) table; methods named in ``exclude_from_best`` (e.g. the ``gt`` oracle)
    never count as best. Values are compared as displayed (rounded to ``decimals``), so every
    value that prints as the best is marked; the ``clips`` row never is.
    """
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    multi = isinstance(table.columns, pd.MultiIndex)
    datasets = table.columns.get_level_values(0).unique() if multi else [None]
    for dataset in datasets:
        group = [c for c in table.columns if not multi or c[0] == dataset]
        eligible = [c for c in group if (c[-1] if multi else c) not in exclude_from_best]
        for label in table.index:
            if not label.endswith(("↑", "↓")) or not eligible:
                continue
            values = table.loc[label, eligible].astype(float)
            values = values.round(decimals) if decimals is not None else values
            if values.notna().any():
                best = values.max() if label.endswith("↑") else values.min()
                mask.loc[label, [c for c in eligible if values[c] == best]] = True
    return mask


def _format_cell(label: str, value: Any, decimals: int) -> str:
    if value is None or pd.isna(value):
        return "–"
    return str(int(value)) if label == CLIPS_ROW else f"{value:.{decimals}f}"


def style_table(table: pd.DataFrame, decimals: int = 4, exclude_from_best: Sequence[str] = ("gt",)):
    """Returns a pandas Styler of ``table`` with the best value of each row in bold (notebooks)."""
    bold = best_mask(table, exclude_from_best, decimals)
    metric_rows = [label for label in table.index if label != CLIPS_ROW]
    styler = table.style.format(lambda v: _format_cell("", v, decimals), subset=pd.IndexSlice[metric_rows, :])
    if CLIPS_ROW in table.index:
        styler = styler.format(
            lambda v: _format_cell(CLIPS_ROW, v, decimals), subset=pd.IndexSlice[[CLIPS_ROW], :]
        )
    return styler.apply(lambda _: np.where(bold, "font-weight: bold", ""), axis=None)


def table_to_markdown(
    table: pd.DataFrame, decimals: int = 4, exclude_from_best: Sequence[str] = ("gt",)
) -> str:
    """Returns the table as a Markdown pipe table, best values in bold, NaN as "–"."""
    bold = best_mask(table, exclude_from_best, decimals)
    headers = [": ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| metric | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    for row, label in enumerate(table.index):
        cells = []
        for col in range(table.shape[1]):
            text = _format_cell(label, table.iat[row, col], decimals)
            cells.append(f"**{text}**" if bold.iat[row, col] else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    table: pd.DataFrame,
    path: str | os.PathLike,
    decimals: int = 4,
    exclude_from_best: Sequence[str] = ("gt",),
) -> tuple[Path, Path]:
    """Writes ``<path>.csv`` (full precision) and ``<path>.md`` atomically; returns both paths."""
    path = Path(path)
    csv_path, md_path = path.with_suffix(".csv"), path.with_suffix(".md")
    atomic_write_text(csv_path, table.to_csv())
    atomic_write_text(md_path, table_to_markdown(table, decimals, exclude_from_best))
    return csv_path, md_path
