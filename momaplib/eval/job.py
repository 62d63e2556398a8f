"""Evaluating methods (predictors, prediction folders, pipelines) on datasets: ``evaluate_methods``
and the ``momap eval`` job."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from momaplib.baselines.simple import get_predictor
from momaplib.eval.tables import format_table, table_to_markdown, write_table
from momaplib.metrics.best_of_n import (
    Predictor,
    SelectMode,
    as_clips,
    evaluate_predictions,
    evaluate_predictor,
    load_split,
)
from momaplib.metrics.scores import MetricConfig
from momaplib.momap import MoMap
from momaplib.storage import DataFormatError, atomic_write_text


def evaluate_methods(
    clips: Mapping[str, MoMap] | Iterable[tuple[str, MoMap]] | Sequence[MoMap],
    methods: Mapping[str, Predictor | str | os.PathLike],
    *,
    num_samples: int = 10,
    seed: int = 0,
    mode: SelectMode = "ate_dtw",
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Returns ``{method: per-clip DataFrame}``; a method is a predictor or a predictions folder."""
    clips = as_clips(clips)
    results = {}
    for name, method in methods.items():
        if isinstance(method, (str, os.PathLike)):
            results[name] = evaluate_predictions(
                clips, method, mode=mode, config=config, device=device, progress=progress
            )
        else:
            results[name] = evaluate_predictor(
                clips,
                method,
                num_samples=num_samples,
                seed=seed,
                mode=mode,
                config=config,
                device=device,
                progress=progress,
                description=name,
            )
    return results


# ----------------------------------------------------------------------------- command line
@dataclass
class EvalJob:
    """Evaluates predictions and reference predictors on dataset splits; prints the metric table.

    Reads the clips of ``split`` from each dataset folder (``manifest.jsonl`` and clip files, as
    written by ``momap sim``). Each predictions folder holds ``<clip_id>.npz`` per clip with
    ``xyz`` of shape (N, T, H, W, 3) float in metres, in the clip's reference camera frame (see
    data/README.md, "Predictions"); clip ids are unique across families, so one folder can
    serve several datasets. Every folder and every baseline becomes a column; several datasets
    put their tables side by side, like the two datasets of the paper's Table 1.
    """

    datasets: tuple[Path, ...] = (Path("data/sim_tabletop"),)
    """Dataset folders (written by `momap sim`); each gets its own group of columns."""
    predictions: tuple[Path, ...] = ()
    """Predictions folders, one per method: <clip_id>.npz holding xyz (N, T, H, W, 3) in metres."""
    baselines: tuple[str, ...] = ()
    """Reference predictors to evaluate too (static, gt, gt+noise, gt_wrong_object, gt_time_shift,
    constant_velocity)."""
    pipelines: tuple[str, ...] = ()
    """Generative models to sample, as LABEL=PIPELINE (folder, bundled name or hub id of a
    MoMapPipeline / MoMapVAEPipeline); append :no-text to sample without the prompt, e.g.
    "Ours (text)=momap-diffusion" "Ours (no text)=momap-diffusion:no-text"."""
    num_inference_steps: int = 25
    """Denoising steps of --pipelines."""
    guidance_scale: float = 2.0
    """Classifier-free guidance of --pipelines."""
    text_encoder: str | None = None
    """Override the text encoder spec stored in the pipelines (e.g. minilm:/path/to/folder)."""
    split: str = "test"
    """Dataset split to evaluate (train, val or test)."""
    num_samples: int = 10
    """Samples per clip drawn from each baseline (prediction files bring their own N)."""
    mode: Literal["ate_dtw", "oracle"] = "ate_dtw"
    """Best-of-N rule: the sample with the lowest ate_dtw for every metric (paper), or each
    metric's own best sample (oracle)."""
    metrics: MetricConfig = field(default_factory=MetricConfig)
    """Metric thresholds and sizes (defaults from DESIGN.md)."""
    seed: int = 0
    """Seed of the baselines' samples (combined with each clip id)."""
    max_clips: int | None = None
    """Evaluate only the first clips of the split in each dataset (None: all)."""
    verify: bool = False
    """Check every clip file's sha256 against the manifest before use."""
    device: str = "cpu"
    """Torch device for the metrics ("cpu" or "cuda")."""
    out: Path | None = None
    """Folder for per_clip.csv, table.csv and table.md (nothing is written when unset)."""
    progress: bool = True
    """Show progress bars."""

    def _pipeline_predictors(self) -> dict[str, Predictor]:
        if not self.pipelines:
            return {}
        from momaplib.diffusion.objectives import pipeline_predictor
        from momaplib.diffusion.pipeline import load_pipeline

        predictors, loaded = {}, {}
        for entry in self.pipelines:
            label, sep, target = entry.partition("=")
            if not sep or not label or not target:
                raise ValueError(f"pipelines: expected LABEL=PIPELINE[:no-text], got {entry!r}")
            use_text = not target.endswith(":no-text")
            target = target.removesuffix(":no-text")
            if target not in loaded:
                kwargs = {"text_encoder": self.text_encoder} if self.text_encoder else {}
                pipeline = load_pipeline(target, **kwargs).to(self.device)
                pipeline.set_progress_bar_config(disable=True)
                loaded[target] = pipeline
            options = {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale}
            predictors[label] = pipeline_predictor(loaded[target], use_text=use_text, **options)
        return predictors

    def run(self) -> pd.DataFrame:
        """Evaluates every method on every dataset, prints the Markdown table and returns the table."""
        if not self.predictions and not self.baselines and not self.pipelines:
            raise ValueError(
                "EvalJob: nothing to evaluate; pass --predictions DIR ... and/or --baselines NAME ..."
            )
        if not self.datasets:
            raise ValueError("EvalJob: no dataset; pass --datasets DIR ...")
        methods: dict[str, Any] = {name: get_predictor(name) for name in self.baselines}
        methods.update(self._pipeline_predictors())
        for folder in self.predictions:
            if not Path(folder).is_dir():
                raise DataFormatError(f"{folder}: predictions folder not found")
            methods[Path(folder).name] = Path(folder)
        results, rows = {}, []
        for dataset in self.datasets:
            clips = load_split(dataset, self.split, self.max_clips, self.verify)
            print(f"{dataset} [{self.split}]: {len(clips)} clips")
            results[Path(dataset).name] = evaluate_methods(
                clips,
                methods,
                num_samples=self.num_samples,
                seed=self.seed,
                mode=self.mode,
                config=self.metrics,
                device=self.device,
                progress=self.progress,
            )
            rows += [
                df.assign(dataset=Path(dataset).name, method=name)
                for name, df in results[Path(dataset).name].items()
            ]
        table = format_table(results if len(results) > 1 else next(iter(results.values())))
        print(f"\nbest of N by {self.mode}\n")
        print(table_to_markdown(table))
        if self.out is not None:
            Path(self.out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                Path(self.out) / "per_clip.csv", pd.concat(rows, ignore_index=True).to_csv(index=False)
            )
            for path in write_table(table, Path(self.out) / "table"):
                print(f"wrote {path}")
        return table
