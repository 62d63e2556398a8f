"""Quality vs steps vs time of the samplers of one pipeline (and of a distilled student).

``compare_samplers`` scores every (scheduler, steps) row on the same clips, prompts and seeds
(paired rows) through ``evaluate_methods`` (best of N by ``ate_dtw``) and times every pipeline
call end to end (encoding, denoising, decoding; per sample); a ``momap distill`` student adds rows
``lcm-student N`` sampled with its own LCM scheduler and no guidance. ``steps_table`` gives each
row's key metric means relative to DDIM at 25 steps. ``benchmarks/eval_schedulers.py`` runs it on
hundreds of clips; notebook 04 draws it (``momaplib.viz.plot_steps_tradeoff``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch

from momaplib.diffusion.objectives import pipeline_predictor
from momaplib.eval.job import evaluate_methods

#: the reference row of ``steps_table``
REFERENCE = "ddim 25"
#: metrics of ``steps_table`` (higher is better for all but ate_dtw)
KEY_METRICS = ("ate_dtw", "fg_mask_iou", "quantize_acc_16", "patch_nearest_acc")


def timed_predictor(predict: Callable, seconds: list[float]) -> Callable:
    """Returns ``predict`` that appends the wall time per sample of every call to ``seconds``."""

    def wrapped(gt, num_samples, generator):
        start = time.perf_counter()
        out = predict(gt, num_samples, generator)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append((time.perf_counter() - start) / num_samples)
        return out

    return wrapped


def sampler_methods(
    pipe,
    schedulers: Sequence[str] = ("ddim", "dpm", "unipc"),
    steps: Sequence[int] = (4, 8, 12, 25),
    guidance_scale: float | None = None,
    student=None,
    student_steps: Sequence[int] = (1, 2, 4, 8),
) -> tuple[dict[str, Callable], dict[str, list[float]]]:
    """Returns ``({"<scheduler> <steps>": predictor}, {name: seconds per sample of each call})``;
    with a ``student`` pipeline also ``"lcm-student <steps>"``."""
    methods, times = {}, {}
    for scheduler in schedulers:
        for count in steps:
            name = f"{scheduler} {count}"
            options = {"scheduler": scheduler, "num_inference_steps": count, "guidance_scale": guidance_scale}
            times[name] = []
            methods[name] = timed_predictor(pipeline_predictor(pipe, use_text=True, **options), times[name])
    for count in student_steps if student is not None else ():
        name = f"lcm-student {count}"
        times[name] = []
        methods[name] = timed_predictor(pipeline_predictor(student, num_inference_steps=count), times[name])
    return methods, times


def compare_samplers(
    clips: Mapping[str, list], methods: Mapping[str, Callable], times: Mapping[str, list[float]],
    num_samples: int = 10, device: str = "cpu", progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, float]]:  # fmt: skip
    """Returns the per-clip rows (columns ``dataset`` = family and ``method``) of ``methods`` on
    ``clips`` ({family: [(clip_id, MoMap)]}) and the mean ms per sample of each method. Each
    family's first clip is sampled once by every method first, untimed (warm-up: text encoder,
    compilation)."""
    rows, timed = [], {name: [] for name in times}
    for family, family_clips in clips.items():
        first = family_clips[0][1]
        for method in methods.values():
            method(first, num_samples, 0)
        for values in times.values():
            values.clear()
        results = evaluate_methods(
            family_clips, methods, num_samples=num_samples, device=device, progress=progress
        )
        rows += [frame.assign(dataset=family, method=name) for name, frame in results.items()]
        for name, values in times.items():  # this family's timed calls (its warm-up left out)
            timed[name] += values
    for name, values in timed.items():  # every family's calls, for the caller's counts
        times[name][:] = values
    ms = {name: 1000 * sum(values) / max(len(values), 1) for name, values in timed.items()}
    return pd.concat(rows, ignore_index=True), ms


def steps_table(per_clip: pd.DataFrame, ms: Mapping[str, float], intervals: bool = True) -> pd.DataFrame:
    """Returns per (family, method): key metric means, each relative to ``REFERENCE`` (%), and ms/sample.

    With ``intervals`` (and ``clip_id`` in ``per_clip``) each relative column gets ``... low`` and
    ``... high``: the 95 % paired bootstrap interval of the mean per-clip difference from the
    reference (``momaplib.eval.tables.paired_differences``), in % of the reference's mean.
    """
    from momaplib.eval.tables import paired_differences

    means = per_clip.groupby(["dataset", "method"], sort=False)[list(KEY_METRICS)].mean()
    intervals = intervals and "clip_id" in per_clip.columns
    rows = []
    for (family, method), values in means.iterrows():
        row = {"family": family, "method": method, "ms_per_sample": ms.get(method, float("nan"))}
        reference = means.loc[(family, REFERENCE)] if (family, REFERENCE) in means.index else None
        paired = None
        if reference is not None and intervals and method != REFERENCE:
            rows_of = per_clip[per_clip["dataset"] == family]
            mine, reference_rows = (rows_of[rows_of["method"] == name] for name in (method, REFERENCE))
            paired = paired_differences(mine, reference_rows, list(KEY_METRICS))
        for metric in KEY_METRICS:
            row[metric] = values[metric]
            if reference is not None:
                column = f"{metric} vs {REFERENCE} %"
                row[column] = 100 * (values[metric] / reference[metric] - 1)
                if intervals:
                    low, high = (0.0, 0.0) if paired is None else paired.loc[metric, ["low", "high"]]
                    row[f"{column} low"] = 100 * low / reference[metric]
                    row[f"{column} high"] = 100 * high / reference[metric]
        rows.append(row)
    return pd.DataFrame(rows)


def steps_markdown(steps: pd.DataFrame, families: Sequence[str] = ("tabletop", "egocentric")) -> str:
    """Returns the model card's sampler table of a ``steps_table``: one row per method, ms per sample
    (the first family's), then ``ate_dtw`` and ``fg_mask_iou`` relative to ``REFERENCE`` per family,
    each with its paired 95 % interval where the table has one."""
    table = steps.set_index(["family", "method"])
    header = ["sampler, steps", "ms per sample"] + [
        f"`{metric}` {family}" for metric in ("ate_dtw", "fg_mask_iou") for family in families
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method in dict.fromkeys(steps["method"]):
        cells = [method, f"{table.loc[(families[0], method), 'ms_per_sample']:.0f}"]
        for metric in ("ate_dtw", "fg_mask_iou"):
            for family in families:
                row, column = table.loc[(family, method)], f"{metric} vs {REFERENCE} %"
                cell = f"{row[column]:+.2f} %"
                if f"{column} low" in row.index and method != REFERENCE:
                    cell += f" [{row[f'{column} low']:+.2f}, {row[f'{column} high']:+.2f}]"
                cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "KEY_METRICS",
    "REFERENCE",
    "compare_samplers",
    "sampler_methods",
    "steps_markdown",
    "steps_table",
    "timed_predictor",
]
