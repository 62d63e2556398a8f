"""Best-of-N evaluation over datasets and the paper's metric table (paper §4.2, Table 1).

For every input the evaluator draws (or reads) N generated MoMaps, computes every metric of
``momaplib.metrics`` for each sample and reports the sample closest to the GT: the one with the
lowest ``ate_dtw``, whose values are used for *every* metric (the paper, after GeneralFlow,
with N = 10). ``mode="oracle"`` instead takes each metric's best sample separately (an upper
bound). Per-clip rows are pandas DataFrames; ``format_table`` puts several methods side by side
like Table 1 (one row per metric with its ↑/↓ arrow), ``style_table`` bolds the best value of
each row for notebooks and ``write_table`` writes CSV and Markdown.

Predictions folder layout (what ``momap eval --predictions DIR`` reads)::

    DIR/<clip_id>.npz    one file per clip of the split, ``clip_id`` as in the dataset's
                         manifest.jsonl; array ``xyz`` of shape (N, T, H, W, 3), float16 or
                         float32, metres, in the clip's reference camera frame (the layout of
                         the GT MoMap's ``xyz``), N >= 1 samples (the paper uses N = 10)

``save_predictions`` writes such a file atomically. The table column of a folder is its name.
data/README.md ("Predictions") describes the layout for users of the command line.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.baselines.simple import Predictor, get_predictor
from momaplib.data import load_manifest
from momaplib.metrics import MetricConfig, foreground_mask, higher_is_better, sample_metrics
from momaplib.momap import MoMap
from momaplib.storage import DataFormatError, atomic_write_text, load_npz, save_npz, sha256_file

SelectMode = Literal["ate_dtw", "oracle"]
#: Label of the row that counts the clips of each column (not a metric, never bold).
CLIPS_ROW = "clips"


# ----------------------------------------------------------------------------- best of N
def select_best(
    per_sample: Mapping[str, Tensor], mode: SelectMode = "ate_dtw"
) -> tuple[dict[str, float], int]:
    """Returns ``(values, index)``: the reported value of each metric and the chosen sample.

    ``per_sample`` maps metric names to [N] tensors (``metrics.sample_metrics``). In
    ``"ate_dtw"`` mode the sample with the lowest ``ate_dtw`` is reported for every metric (NaN
    counts as worst; when all are NaN, i.e. nothing moves in the GT, the sample with the best
    ``fg_mask_iou`` is taken, the first on ties). In ``"oracle"`` mode each metric takes its
    own best sample (NaN-aware) and ``index`` is -1.
    """
    if mode == "oracle":
        values = {}
        for name, column in per_sample.items():
            column = column.double()
            defined = column[~column.isnan()]
            if defined.numel() == 0:
                values[name] = math.nan
            else:
                values[name] = float(defined.max() if higher_is_better(name) else defined.min())
        return values, -1
    if mode != "ate_dtw":
        raise ValueError(f"mode: expected 'ate_dtw' or 'oracle', got {mode!r}")
    ate_dtw = per_sample["ate_dtw"].double()
    if bool(ate_dtw.isnan().all()):
        index = int(per_sample["fg_mask_iou"].double().nan_to_num(-1.0).argmax())
    else:
        index = int(ate_dtw.nan_to_num(math.inf).argmin())
    return {name: float(column[index]) for name, column in per_sample.items()}, index


def best_of_n(
    gt: MoMap,
    samples: Tensor | np.ndarray,
    *,
    mode: SelectMode = "ate_dtw",
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Returns ``{metric: float}`` of the best of N samples [N, T, H, W, 3] (see ``select_best``)."""
    values, _ = select_best(sample_metrics(gt, samples, config=config, device=device), mode)
    return values


# ----------------------------------------------------------------------------- datasets
def _as_clips(clips: Any) -> list[tuple[str, MoMap]]:
    """Returns ``[(clip_id, MoMap)]`` from a mapping, (id, record) pairs or a sequence of records."""
    items = clips.items() if isinstance(clips, Mapping) else clips
    result = []
    for position, item in enumerate(items):
        clip_id, record = item if isinstance(item, tuple) else (str(position), item)
        record = getattr(record, "momap", record)  # a MoMap-Sim Clip carries its GT MoMap
        if not isinstance(record, MoMap):
            raise TypeError(f"clip {clip_id}: expected a MoMap (or a Clip), got {type(record).__name__}")
        result.append((str(clip_id), record))
    return result


def _clip_generator(seed: int, clip_id: str) -> torch.Generator:
    """Returns a generator seeded from (seed, clip id), so results do not depend on clip order."""
    digest = hashlib.sha256(f"momap-eval:{seed}:{clip_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _evaluate(
    clips: list[tuple[str, MoMap]],
    samples_of: Callable[[str, MoMap], Tensor | np.ndarray],
    mode: SelectMode,
    config: MetricConfig | None,
    device: torch.device | str | None,
    progress: bool,
    description: str,
) -> pd.DataFrame:
    config = config or MetricConfig()
    rows = []
    for clip_id, gt in tqdm(clips, desc=description, disable=not progress, leave=False):
        samples = samples_of(clip_id, gt)
        try:
            per_sample = sample_metrics(gt, samples, config=config, device=device)
        except ValueError as exc:
            raise ValueError(f"clip {clip_id}: {exc}") from exc
        values, index = select_best(per_sample, mode)
        num_fg = int(foreground_mask(gt, tau_move=config.tau_move).sum())
        rows.append(
            {"clip_id": clip_id, "num_fg": num_fg, "num_samples": len(samples), "selected": index, **values}
        )
    columns = ["clip_id", "num_fg", "num_samples", "selected", *config.metric_names]
    return pd.DataFrame(rows, columns=columns)


def evaluate_predictor(
    clips: Mapping[str, MoMap] | Iterable[tuple[str, MoMap]] | Sequence[MoMap],
    predictor: Predictor,
    *,
    num_samples: int = 10,
    seed: int = 0,
    mode: SelectMode = "ate_dtw",
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    description: str = "evaluate",
) -> pd.DataFrame:
    """Returns one row per clip (``clip_id, num_fg, num_samples, selected``, metrics) of a predictor.

    ``predictor(gt, num_samples, generator)`` returns [N, T, H, W, 3] (``momaplib.baselines``);
    its generator is seeded from ``(seed, clip_id)``. ``selected`` is the reported sample
    (-1 in oracle mode); ``num_fg`` the size of F (clips with 0 have NaN F-metrics).
    """
    clips = _as_clips(clips)
    return _evaluate(
        clips,
        lambda clip_id, gt: predictor(gt, num_samples, _clip_generator(seed, clip_id)),
        mode,
        config,
        device,
        progress,
        description,
    )


def evaluate_predictions(
    clips: Mapping[str, MoMap] | Iterable[tuple[str, MoMap]] | Sequence[MoMap],
    pred_dir: str | os.PathLike,
    *,
    mode: SelectMode = "ate_dtw",
    config: MetricConfig | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Returns one row per clip, like ``evaluate_predictor``, for a predictions folder (module doc)."""
    clips = _as_clips(clips)
    pred_dir = Path(pred_dir)
    missing = [clip_id for clip_id, _ in clips if not (pred_dir / f"{clip_id}.npz").is_file()]
    if missing:
        raise DataFormatError(
            f"{pred_dir}: no predictions for {len(missing)} of {len(clips)} clips "
            f"(e.g. {', '.join(missing[:5])}); expected <clip_id>.npz files with xyz (N, T, H, W, 3)"
        )
    return _evaluate(
        clips,
        lambda clip_id, gt: load_predictions(pred_dir / f"{clip_id}.npz", gt.xyz.shape),
        mode,
        config,
        device,
        progress,
        pred_dir.name,
    )


def save_predictions(pred_dir: str | os.PathLike, clip_id: str, samples: Tensor | np.ndarray) -> Path:
    """Returns the path ``pred_dir/<clip_id>.npz`` after writing samples [N, T, H, W, 3] there atomically.

    ``samples`` are in metres in the clip's reference frame; they are stored as float32 ``xyz``.
    """
    samples = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
    if samples.ndim != 5 or samples.shape[-1] != 3:
        raise ValueError(f"samples: expected shape (N, T, H, W, 3), got {samples.shape}")
    path = Path(pred_dir) / f"{clip_id}.npz"
    save_npz(path, {"xyz": samples.astype(np.float32, copy=False)})
    return path


def load_predictions(path: str | os.PathLike, shape: Sequence[int] | None = None) -> Tensor:
    """Returns the samples [N, T, H, W, 3] float32 of a predictions file; checks ``(T, H, W, 3)`` if given."""
    xyz = load_npz(path, required=("xyz",))["xyz"]
    if xyz.ndim != 5 or xyz.shape[-1] != 3 or xyz.shape[0] < 1 or not np.issubdtype(xyz.dtype, np.floating):
        raise DataFormatError(
            f"{path}: xyz has shape {xyz.shape} {xyz.dtype}; expected (N, T, H, W, 3) float"
        )
    if shape is not None and tuple(xyz.shape[1:]) != tuple(shape):
        raise DataFormatError(
            f"{path}: xyz has shape {xyz.shape}; expected (N, {', '.join(map(str, shape))})"
        )
    return torch.from_numpy(xyz.astype(np.float32, copy=False))


def load_split(
    dataset: str | os.PathLike, split: str = "test", max_clips: int | None = None, verify: bool = False
) -> list[tuple[str, MoMap]]:
    """Returns ``[(clip_id, MoMap)]`` of one split of a dataset folder written by ``momap sim``.

    The manifest is read with ``momaplib.data.load_manifest``; ``verify`` also checks each
    file's sha256 against it. An empty split raises ``DataFormatError``.
    """
    dataset = Path(dataset)
    entries = load_manifest(dataset, split)
    if not entries:
        raise DataFormatError(f"{dataset}: no clips in split {split!r}")
    clips = []
    for entry in entries[:max_clips]:
        path = dataset / entry["file"]
        if verify and path.is_file() and sha256_file(path) != entry["sha256"]:
            raise DataFormatError(f"clip {entry['id']}: {path} does not match the sha256 in the manifest")
        momap = MoMap.load(path)
        if list(momap.xyz.shape[:3]) != list(entry["shape"]):
            raise DataFormatError(
                f"clip {entry['id']}: {path} has (T, H, W) = {momap.xyz.shape[:3]}, "
                f"the manifest says {tuple(entry['shape'])}"
            )
        clips.append((str(entry["id"]), momap))
    return clips


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
    clips = _as_clips(clips)
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
            verdict = "a better" if a_higher == higher_is_better(metric) else "b better"
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
