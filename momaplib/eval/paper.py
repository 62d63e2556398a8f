"""The paper's Table 1 (baselines, §4.3) and Table 2 (ablations, §4.4) from per-clip rows.

The rows come from ``benchmarks/eval_tables.py`` (``checkpoints/logs/table1_per_clip.csv.gz`` and
``table2_per_clip.csv.gz``, the schema of ``test600_per_clip.csv.gz``: one row per clip and method,
columns ``dataset`` (the family) and ``method``). ``paper_table`` gives the means per family and
method in the layout of ``format_table``; ``paper_intervals`` the paired 95 % bootstrap intervals
of every method against the table's reference row (``ours`` in Table 1, ``full`` in Table 2).
"""

from __future__ import annotations

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


__all__ = ["INTERVAL_METRICS", "PAPER_ROWS", "REFERENCE_ROW", "paper_intervals", "paper_table"]
