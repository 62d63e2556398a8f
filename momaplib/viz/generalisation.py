"""Figures of the generalisation suite (``momaplib.eval.generalisation``): error per case, old vs new."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from momaplib.eval.generalisation import TARGETS

#: Axis titles of the suite's metrics.
METRIC_TITLES = {
    "vae_all": "VAE round trip, all points",
    "vae_static": "VAE round trip, still points",
    "vae_moving": "VAE round trip, moving points",
    "vae_t0": "VAE round trip, t = 0",
    "pipe_t0": "pipeline samples, t = 0",
    "pipe_bg_moved": "background pixels moved",
}


def load_suite_results(path: str | os.PathLike) -> dict[str, Any]:
    """Returns a result file of ``benchmarks/bench_generalisation.py`` (JSON)."""
    results = json.loads(Path(path).read_text())
    if "summary" not in results:
        raise ValueError(
            f"{path}: expected a generalisation result file with a 'summary', got keys {list(results)}"
        )
    return results


def plot_generalisation(
    results: Mapping[str, Any],
    new: Mapping[str, Any] | None = None,
    metrics: Sequence[str] = ("vae_all", "pipe_t0", "pipe_bg_moved"),
) -> Figure:
    """Returns horizontal bars of each metric per case (log scale, per cent of the scene scale), for
    one result file or two side by side (``results`` as "old", ``new``), with the targets as dashed lines.

    ``results`` / ``new``: dicts of ``bench_generalisation.py`` (``load_suite_results``).
    """
    runs = [results] if new is None else [results, new]
    cases = list(results["summary"])
    cases += [name for run in runs[1:] for name in run["summary"] if name not in cases]
    unknown = [m for m in metrics if m not in METRIC_TITLES]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; expected some of {list(METRIC_TITLES)}")
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.2 * len(metrics) + 1.5, 0.28 * len(cases) + 1.2), sharey=True
    )
    axes = np.atleast_1d(axes)
    height = 0.8 / len(runs)
    rows = np.arange(len(cases))
    for ax, metric in zip(axes, metrics, strict=True):
        for i, run in enumerate(runs):
            values = [100 * run["summary"].get(name, {}).get(metric, math.nan) for name in cases]
            ax.barh(
                rows + (i - (len(runs) - 1) / 2) * height, values, height, label=run.get("label", f"run {i}")
            )
        if metric in TARGETS:
            ax.axvline(100 * TARGETS[metric][0], color="k", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(METRIC_TITLES[metric], fontsize=9)
        ax.set_xlabel("% of background pixels" if metric == "pipe_bg_moved" else "% of scene scale")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, cases, fontsize=8)
    axes[0].invert_yaxis()
    if len(runs) > 1:
        axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


__all__ = ["METRIC_TITLES", "load_suite_results", "plot_generalisation"]
