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

from momaplib.baselines.simple import PREDICTORS, get_predictor
from momaplib.checks import check_device
from momaplib.data.splits import SPLITS
from momaplib.eval.tables import format_table, table_to_markdown, write_table
from momaplib.metrics.best_of_n import (
    MAX_SAMPLES,
    Predictor,
    SelectMode,
    as_clips,
    evaluate_predictions,
    evaluate_predictor,
    load_split,
    non_finite_values,
)
from momaplib.metrics.scores import MetricConfig
from momaplib.momap import MoMap
from momaplib.storage import DataFormatError, atomic_write_text

#: Most denoising steps of --pipelines (DDPM's full chain is 1000).
MAX_INFERENCE_STEPS = 1000
#: Largest classifier-free guidance scale of --pipelines.
MAX_GUIDANCE = 100.0


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


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def unique_labels(paths: Sequence[str | os.PathLike], taken: set[str], field_name: str) -> dict[str, Path]:
    """Returns ``{label: path}``: each path's name, lengthened by its parent folders where needed.

    A label is the shortest tail of the path (``preds``, ``run2/preds``, ...) that no other
    path's label and no name in ``taken`` shares. The same folder given twice raises
    ``ValueError`` naming ``field_name``.
    """
    absolute = [Path(os.path.abspath(path)) for path in paths]
    resolved = [path.resolve() for path in absolute]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ValueError(f"{field_name}: {paths[i]} is given twice (as {paths[resolved.index(path)]})")
    depth = [1] * len(paths)
    while True:
        labels = [
            "/".join(path.parts[-d:]).lstrip("/") or str(path)
            for path, d in zip(absolute, depth, strict=True)
        ]
        clashing = [i for i, label in enumerate(labels) if label in taken or labels.count(label) > 1]
        growing = [i for i in clashing if depth[i] < len(absolute[i].parts)]
        if not growing:
            break
        for i in growing:
            depth[i] += 1
    if clashing:  # a full path that is still taken (e.g. a folder "/gt")
        raise ValueError(
            f"{field_name}: cannot name {paths[clashing[0]]} apart from {sorted(taken)} and the other folders"
        )
    return {label: Path(path) for label, path in zip(labels, paths, strict=True)}


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
    """Dataset folders (written by `momap sim`); each gets its own group of columns, named like
    the predictions folders."""
    predictions: tuple[Path, ...] = ()
    """Predictions folders, one per method: <clip_id>.npz holding xyz (N, T, H, W, 3) in metres. A
    folder's column is its name, or its last path components where that name is taken (another
    folder's, a baseline's such as gt, a pipeline label): e.g. run1/preds and run2/preds."""
    baselines: tuple[str, ...] = ()
    """Reference predictors to evaluate too (static, gt, gt+noise, gt_wrong_object, gt_time_shift,
    constant_velocity)."""
    pipelines: tuple[str, ...] = ()
    """Generative models to sample, as LABEL=PIPELINE (folder, bundled name or hub id of a
    MoMapPipeline / MoMapVAEPipeline); append :no-text to sample without the prompt, e.g.
    "Ours (text)=momap-diffusion" "Ours (no text)=momap-diffusion:no-text"."""
    num_inference_steps: int = 25
    """Denoising steps of --pipelines, 1..1000."""
    guidance_scale: float | None = None
    """Classifier-free guidance of --pipelines, 0..100; None: each pipeline's own default
    (``config.guidance_scale``)."""
    text_encoder: str | None = None
    """Override the text encoder spec stored in the pipelines (e.g. minilm:/path/to/folder)."""
    split: str = "test"
    """Dataset split to evaluate (train, val or test)."""
    num_samples: int = 10
    """Samples per clip drawn from each baseline and pipeline, 1..1000 (prediction files bring their
    own N)."""
    mode: Literal["ate_dtw", "oracle"] = "ate_dtw"
    """Best-of-N rule: the sample with the lowest ate_dtw for every metric (paper), or each
    metric's own best sample (oracle)."""
    metrics: MetricConfig = field(default_factory=MetricConfig)
    """Metric thresholds and sizes (defaults from DESIGN.md)."""
    seed: int = 0
    """Seed of the baselines' samples (combined with each clip id)."""
    max_clips: int | None = None
    """Evaluate only the first clips of the split in each dataset, >= 1 (None: all)."""
    verify: bool = False
    """Check every clip file's sha256 against the manifest before use."""
    device: str = "cpu"
    """Torch device for the metrics ("cpu", "cuda" or "cuda:<index>")."""
    out: Path | None = None
    """Folder for per_clip.csv, table.csv and table.md (nothing is written when unset)."""
    progress: bool = True
    """Show progress bars."""

    def _check(self) -> None:
        """Raises ``ValueError`` naming the first field outside its range (before anything is loaded)."""
        if not self.predictions and not self.baselines and not self.pipelines:
            raise ValueError(
                "EvalJob: nothing to evaluate; pass --predictions DIR ... and/or --baselines NAME ..."
            )
        if not self.datasets:
            raise ValueError("EvalJob: no dataset; pass --datasets DIR ...")
        unknown = [name for name in self.baselines if name not in PREDICTORS]
        if unknown:
            raise ValueError(f"baselines: unknown {unknown}; expected names from {sorted(PREDICTORS)}")
        if self.split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {self.split!r}")
        if self.mode not in ("ate_dtw", "oracle"):
            raise ValueError(f"mode: expected 'ate_dtw' or 'oracle', got {self.mode!r}")
        for name, value, high in (
            ("num_samples", self.num_samples, MAX_SAMPLES),
            ("num_inference_steps", self.num_inference_steps, MAX_INFERENCE_STEPS),
        ):
            if not _is_count(value) or not 1 <= value <= high:
                raise ValueError(f"{name}: expected 1..{high}, got {value!r}")
        if self.max_clips is not None and (not _is_count(self.max_clips) or self.max_clips < 1):
            raise ValueError(f"max_clips: expected >= 1 or None (all clips), got {self.max_clips!r}")
        guidance = self.guidance_scale
        if guidance is not None and not (
            isinstance(guidance, (int, float)) and 0 <= guidance <= MAX_GUIDANCE
        ):
            raise ValueError(f"guidance_scale: expected 0..{MAX_GUIDANCE:g}, got {self.guidance_scale!r}")
        check_device("device", self.device)

    def _pipeline_predictors(self) -> dict[str, Predictor]:
        if not self.pipelines:
            return {}
        from momaplib.diffusion.objectives import pipeline_predictor
        from momaplib.diffusion.pipeline import load_pipeline

        predictors, loaded = {}, {}
        for label, target in self._pipeline_targets():
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

    def _pipeline_targets(self) -> list[tuple[str, str]]:
        """Returns ``[(label, target[:no-text])]`` of --pipelines; raises on a malformed entry."""
        targets = []
        for entry in self.pipelines:
            label, sep, target = entry.partition("=")
            if not sep or not label or not target:
                raise ValueError(f"pipelines: expected LABEL=PIPELINE[:no-text], got {entry!r}")
            targets.append((label, target))
        return targets

    def _method_names(self) -> dict[str, Path]:
        """Returns ``{column: folder}`` of --predictions after checking that every column name is unique.

        Baselines and pipeline labels keep their names (a repeated one is an error). A predictions
        folder is named after itself, or, when that name is taken (by another folder of the same
        name, a pipeline label or any reference predictor's name such as ``gt``, which the
        tables treat specially), by its last path components, e.g. ``run2/preds``.
        """
        labels = [label for label, _ in self._pipeline_targets()]
        reserved = sorted(set(labels) & set(PREDICTORS))
        if reserved:
            raise ValueError(
                f"pipelines: labels {reserved} are names of reference predictors (the tables treat gt "
                "specially); choose other labels"
            )
        names = [*self.baselines, *labels]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"baselines/pipelines: method names {repeated} are given twice; use unique labels"
            )
        for folder in self.predictions:
            if not Path(folder).is_dir():
                raise DataFormatError(f"{folder}: predictions folder not found")
        taken = {*names, *PREDICTORS}
        labels = unique_labels(self.predictions, taken, "predictions")
        for label, folder in labels.items():
            if label != Path(folder).name:
                print(f"predictions {folder}: column {label!r} (the name {Path(folder).name!r} is taken)")
        return labels

    def run(self) -> pd.DataFrame:
        """Evaluates every method on every dataset, prints the Markdown table and returns the table.

        Raises ``ValueError`` (exit status 2 from ``momap eval``) on settings out of range, method
        or dataset names that would share a column, predictions that are not finite or not in
        metres (naming the clip and the file), and metric values that are not numbers where the
        metric is defined (``momaplib.metrics.non_finite_values``; the table is printed first and
        nothing is written to ``out``).
        """
        self._check()
        folders = self._method_names()
        dataset_names = unique_labels(self.datasets, set(), "datasets")
        methods: dict[str, Any] = {name: get_predictor(name) for name in self.baselines}
        methods.update(self._pipeline_predictors())
        methods.update(folders)
        results, rows = {}, []
        for name, dataset in dataset_names.items():
            clips = load_split(dataset, self.split, self.max_clips, self.verify)
            print(f"{dataset} [{self.split}]: {len(clips)} clips")
            results[name] = evaluate_methods(
                clips,
                methods,
                num_samples=self.num_samples,
                seed=self.seed,
                mode=self.mode,
                config=self.metrics,
                device=self.device,
                progress=self.progress,
            )
            rows += [df.assign(dataset=name, method=method) for method, df in results[name].items()]
        table = format_table(results if len(results) > 1 else next(iter(results.values())))
        print(f"\nbest of N by {self.mode}\n")
        print(table_to_markdown(table))
        problems = [
            line
            for dataset, group in results.items()
            for method, per_clip in group.items()
            for line in non_finite_values(per_clip, f"{dataset}: {method}")
        ]
        if problems:
            shown = "\n  - ".join(problems[:20]) + (
                f"\n  ... and {len(problems) - 20} more" * (len(problems) > 20)
            )
            raise ValueError(
                f"{len(problems)} metric value(s) are not finite where the metric is defined; the table "
                f"above is not trustworthy and nothing was written:\n  - {shown}"
            )
        if self.out is not None:
            Path(self.out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                Path(self.out) / "per_clip.csv", pd.concat(rows, ignore_index=True).to_csv(index=False)
            )
            for path in write_table(table, Path(self.out) / "table"):
                print(f"wrote {path}")
        return table
