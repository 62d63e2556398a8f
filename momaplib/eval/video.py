"""Tables of the video completion comparison (paper §3.4.1): per-clip rows → means and paired
intervals. The rows come from ``benchmarks/eval_video.py`` (``checkpoints/logs/video_per_clip.csv.gz``):
one per clip and method, columns ``clip_id``, ``dataset``, ``method`` and the metrics of
``momaplib.video.video_metrics``."""

from __future__ import annotations

import pandas as pd

from momaplib.eval.tables import paired_differences

#: Completion methods in table order (the last one is the paper's model).
VIDEO_METHODS = ("partial", "cv2-inpaint", "per-frame", "flattened")
#: Metrics of the table (↑ PSNR/SSIM, ↓ temporal error).
VIDEO_METRICS = ("psnr_hole", "ssim_hole", "psnr_all", "ssim_all", "temporal_error")


def _check(per_clip: pd.DataFrame) -> None:
    missing = {"clip_id", "dataset", "method", *VIDEO_METRICS} - set(per_clip.columns)
    if missing:
        raise ValueError(f"per_clip: missing columns {sorted(missing)} (rows of benchmarks/eval_video.py)")


def video_table(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Returns the mean of every metric per family and method (methods in ``VIDEO_METHODS`` order),
    with the number of clips."""
    _check(per_clip)
    order = {m: i for i, m in enumerate(VIDEO_METHODS)}
    table = per_clip.groupby(["dataset", "method"])[list(VIDEO_METRICS)].mean()
    table["clips"] = per_clip.groupby(["dataset", "method"]).size()
    return table.sort_index(
        key=lambda index: index.map(lambda v: order.get(v, len(order))) if index.name == "method" else index
    )


def video_intervals(per_clip: pd.DataFrame, ours: str = "flattened") -> pd.DataFrame:
    """Returns, per family, every other method and metric, the paired difference ``ours - other``
    with its 95 % bootstrap interval over clips and a verdict naming the better method."""
    _check(per_clip)
    rows = []
    for family in sorted(per_clip["dataset"].unique()):
        clips = per_clip[per_clip["dataset"] == family]
        mine = clips[clips["method"] == ours]
        for other in [m for m in clips["method"].unique() if m != ours]:
            diff = paired_differences(mine, clips[clips["method"] == other], list(VIDEO_METRICS))
            diff["verdict"] = (
                diff["verdict"].map({"a better": ours, "b better": other}).fillna("no difference")
            )
            rows.append(diff.rename_axis("metric").reset_index().assign(dataset=family, versus=other))
    columns = ["dataset", "versus", "metric", "diff", "low", "high", "clips", "verdict"]
    return pd.concat(rows, ignore_index=True)[columns]
