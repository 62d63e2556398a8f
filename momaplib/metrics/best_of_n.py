"""Best-of-N evaluation of a predictor over clips (paper §4.2): the per-clip rows of Table 1.

For every input the evaluator draws (or reads) N generated MoMaps, computes every metric of
``momaplib.metrics`` for each sample and reports the sample closest to the GT: the one with the
lowest ``ate_dtw``, whose values are used for *every* metric (the paper, after GeneralFlow,
with N = 10). ``mode="oracle"`` instead takes each metric's best sample separately (an upper
bound). Per-clip rows are pandas DataFrames; ``momaplib.eval`` puts several methods side by side
like Table 1.

A predictor is any callable ``(gt, num_samples, generator) -> (N, T, H, W, 3)`` tensor in metres
(``Predictor``): the reference predictors of ``momaplib.baselines`` and the pipelines of
``momaplib.diffusion`` (through ``pipeline_predictor``) both are.

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
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from momaplib.checks import is_integer
from momaplib.data import load_manifest
from momaplib.data.manifest import check_clip_id, clip_path
from momaplib.metrics.scores import MetricConfig, foreground_mask, higher_is_better, sample_metrics
from momaplib.momap import MoMap
from momaplib.storage import DataFormatError, confined_path, load_npz, save_npz, sha256_file

#: A method under evaluation: the GT MoMap of an input, N and a generator (or seed) -> N samples
#: ``(N, T, H, W, 3)`` float32 CPU tensor in metres, reference frame (``momaplib.baselines``).
Predictor = Callable[[MoMap, int, "torch.Generator | int | None"], Tensor]
#: How the reported sample is chosen: the lowest ``ate_dtw`` (paper) or each metric's best (oracle).
SelectMode = Literal["ate_dtw", "oracle"]
#: Most samples per clip a predictor is asked for (the paper uses 10).
MAX_SAMPLES = 1000
#: Metrics that have a value whenever the GT has moving pixels (``num_fg > 0``); the others may be
#: NaN by definition (no neighbours, fewer than two patches, a window longer than the clip).
DEFINED_WHEN_MOVING = ("ate_dtw", "D_sig", "ate", "epe")


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
def as_clips(clips: Any) -> list[tuple[str, MoMap]]:
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


def clip_generator(seed: int, clip_id: str) -> torch.Generator:
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
    source_of: Callable[[str], str],
) -> pd.DataFrame:
    """Returns the per-clip rows; ``source_of(clip_id)`` names where the samples came from (a file,
    a method) in errors, which always name the clip too."""
    if mode not in ("ate_dtw", "oracle"):  # before any sample is drawn
        raise ValueError(f"mode: expected 'ate_dtw' or 'oracle', got {mode!r}")
    config = config or MetricConfig()
    rows = []
    for clip_id, gt in tqdm(clips, desc=description, disable=not progress, leave=False):
        samples = samples_of(clip_id, gt)
        try:
            per_sample = sample_metrics(gt, samples, config=config, device=device)
        except ValueError as exc:
            raise ValueError(f"clip {clip_id}: {exc} ({source_of(clip_id)})") from exc
        values, index = select_best(per_sample, mode)
        num_fg = int(foreground_mask(gt, tau_move=config.tau_move).sum())
        rows.append(
            {"clip_id": clip_id, "num_fg": num_fg, "num_samples": len(samples), "selected": index, **values}
        )
    columns = ["clip_id", "num_fg", "num_samples", "selected", *config.metric_names]
    return pd.DataFrame(rows, columns=columns)


def non_finite_values(per_clip: pd.DataFrame, method: str | None = None) -> list[str]:
    """Returns one line per metric value of ``per_clip`` that is not a number it may be.

    A value is reported when it is infinite, or NaN where the metric is always defined:
    ``fg_mask_iou`` on every clip, ``DEFINED_WHEN_MOVING`` on clips whose GT moves. Other NaNs
    are the metrics' documented "undefined" (e.g. no moving pixel) and are skipped by the tables.
    Each line names the clip, the metric and the value (and ``method`` if given).
    """
    problems = []
    prefix = f"{method}: " if method is not None else ""
    for _, row in per_clip.iterrows():
        for metric in per_clip.columns:
            try:
                higher_is_better(metric)
            except KeyError:
                continue  # clip_id, num_fg, ...
            value = float(row[metric])
            required = metric == "fg_mask_iou" or (metric in DEFINED_WHEN_MOVING and row.get("num_fg", 1) > 0)
            if math.isinf(value) or (math.isnan(value) and required):
                problems.append(f"{prefix}clip {row['clip_id']}: {metric} = {value}")
    return problems


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
    if not is_integer(num_samples) or not 1 <= num_samples <= MAX_SAMPLES:
        raise ValueError(f"num_samples: expected 1..{MAX_SAMPLES} samples per clip, got {num_samples!r}")
    clips = as_clips(clips)
    return _evaluate(
        clips,
        lambda clip_id, gt: predictor(gt, num_samples, clip_generator(seed, clip_id)),
        mode,
        config,
        device,
        progress,
        description,
        lambda clip_id: f"method {description}",
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
    clips = as_clips(clips)
    pred_dir = Path(pred_dir)
    files = {clip_id: prediction_path(pred_dir, clip_id) for clip_id, _ in clips}
    missing = [clip_id for clip_id, path in files.items() if not path.is_file()]
    if missing:
        raise DataFormatError(
            f"{pred_dir}: no predictions for {len(missing)} of {len(clips)} clips "
            f"(e.g. {', '.join(missing[:5])}); expected <clip_id>.npz files with xyz (N, T, H, W, 3)"
        )
    return _evaluate(
        clips,
        lambda clip_id, gt: load_predictions(files[clip_id], gt.xyz.shape),
        mode,
        config,
        device,
        progress,
        pred_dir.name,
        lambda clip_id: f"file {files[clip_id]}",
    )


def prediction_path(pred_dir: str | os.PathLike, clip_id: str) -> Path:
    """Returns ``pred_dir/<clip_id>.npz``; raises ``DataFormatError`` if the id would lead out of the folder.

    Clip ids come from manifests, which may come from elsewhere: an id like ``../x`` or a symlink
    out of the folder must not make evaluation read (or ``save_predictions`` write) other files.
    """
    check_clip_id(clip_id)
    return confined_path(pred_dir, f"{clip_id}.npz", f"clip {clip_id}: predictions file")


def save_predictions(pred_dir: str | os.PathLike, clip_id: str, samples: Tensor | np.ndarray) -> Path:
    """Returns the path ``pred_dir/<clip_id>.npz`` after writing samples [N, T, H, W, 3] there atomically.

    ``samples`` are in metres in the clip's reference frame; they are stored as float32 ``xyz``.
    """
    samples = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
    if samples.ndim != 5 or samples.shape[-1] != 3:
        raise ValueError(f"samples: expected shape (N, T, H, W, 3), got {samples.shape}")
    path = prediction_path(pred_dir, clip_id)
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
    file's sha256 against it. ``max_clips`` (None or >= 1) keeps the first clips of the split.
    An empty split raises ``DataFormatError``; a clip file outside the dataset folder too.
    """
    if max_clips is not None and (not is_integer(max_clips) or max_clips < 1):
        raise ValueError(f"max_clips: expected None (all clips) or >= 1, got {max_clips!r}")
    dataset = Path(dataset)
    entries = load_manifest(dataset, split)
    if not entries:
        raise DataFormatError(f"{dataset}: no clips in split {split!r}")
    clips = []
    for entry in entries[:max_clips]:
        path = clip_path(dataset, entry)
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
