"""Tables of the motion-DSL comparison (paper §3.4.2): per-clip rows -> means and paired intervals.

The rows come from ``benchmarks/eval_dsl.py`` (``checkpoints/logs/dsl_per_clip.csv.gz``): one per
clip, method (``DSL_METHODS``) and prompt set (``sim``: the simulator's wording, ``paraphrase``:
held out), with the best-of-N metrics of ``momaplib.metrics`` and the DSL columns
``dsl_acc_given``, ``dsl_acc_gt``, ``dsl_moving_acc_gt`` and ``planner_ok``. ``dsl-oracle`` reads no
prompt, so its rows are stored once (``sim``); the tables count them in the paraphrase set too, on
the clips that have a paraphrase (``with_oracle_paraphrase``).
"""

from __future__ import annotations

import pandas as pd

from momaplib.eval.tables import paired_differences

#: methods in table order: the text model, the DSL model with the GT DSL and with the rule planner's
DSL_METHODS = ("text", "dsl-oracle", "dsl-rule")
#: prompt sets in table order
PROMPT_SETS = ("sim", "paraphrase")
#: columns of the table
DSL_TABLE_METRICS = (
    "fg_mask_iou", "quantize_acc_16", "ate_dtw", "epe", "dsl_acc_gt", "dsl_acc_given", "planner_ok",
)  # fmt: skip
#: metrics of the paired intervals against ``text``
DSL_INTERVAL_METRICS = ("quantize_acc_16", "fg_mask_iou", "ate_dtw", "dsl_acc_gt")


def _check(per_clip: pd.DataFrame) -> None:
    missing = {"clip_id", "dataset", "method", "prompt_set", *DSL_TABLE_METRICS} - set(per_clip.columns)
    if missing:
        raise ValueError(f"per_clip: missing columns {sorted(missing)} (rows of benchmarks/eval_dsl.py)")


def with_oracle_paraphrase(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Returns the rows with the oracle's ``sim`` rows repeated in the paraphrase set, on the clips
    that have paraphrase rows (the oracle reads no prompt, so its samples are the same); rows that
    already hold them are returned unchanged."""
    oracle = per_clip["method"] == "dsl-oracle"
    if (oracle & (per_clip["prompt_set"] == "paraphrase")).any():
        return per_clip
    keys = ["clip_id", "dataset"]
    paraphrased = per_clip.loc[per_clip["prompt_set"] == "paraphrase", keys].drop_duplicates()
    copies = per_clip[oracle & (per_clip["prompt_set"] == "sim")].merge(paraphrased, on=keys)
    return pd.concat([per_clip, copies.assign(prompt_set="paraphrase")], ignore_index=True)


def dsl_table(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Returns the mean of every metric per family, prompt set and method, with the number of clips."""
    _check(per_clip)
    per_clip = with_oracle_paraphrase(per_clip)
    keys = ["dataset", "prompt_set", "method"]
    table = per_clip.groupby(keys)[list(DSL_TABLE_METRICS)].mean()
    table["clips"] = per_clip.groupby(keys).size()
    order = {"method": DSL_METHODS, "prompt_set": PROMPT_SETS}
    return table.sort_index(
        key=lambda index: (
            index.map(lambda v: order[index.name].index(v) if v in order[index.name] else 99)
            if index.name in order
            else index
        )
    )


def dsl_intervals(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Returns, per family and prompt set, the paired difference ``DSL method - text`` of each metric
    with its 95 % bootstrap interval over clips and a verdict naming the better method."""
    _check(per_clip)
    per_clip = with_oracle_paraphrase(per_clip)
    rows = []
    for (family, prompt_set), group in per_clip.groupby(["dataset", "prompt_set"], sort=False):
        text = group[group["method"] == "text"]
        for method in DSL_METHODS[1:]:
            ours = group[group["method"] == method]
            if ours.empty or text.empty:
                continue
            diff = paired_differences(ours, text, list(DSL_INTERVAL_METRICS))
            diff["verdict"] = (
                diff["verdict"].map({"a better": method, "b better": "text"}).fillna("no difference")
            )
            rows.append(
                diff.rename_axis("metric")
                .reset_index()
                .assign(dataset=family, prompt_set=prompt_set, method=method)
            )
    columns = ["dataset", "prompt_set", "method", "metric", "diff", "low", "high", "clips", "verdict"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)
