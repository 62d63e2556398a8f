"""Metrics for generated MoMaps (paper §4.2), exactly as DESIGN.md defines them.

Every metric compares a generated MoMap with the ground truth (GT) of the same input; both share
``valid``, ``instance`` and the reference frame. All distances are divided by the scene scale
``s`` (median reference depth of valid GT pixels, ``momaplib.momap.scene_scale``), so thresholds
and errors are fractions of the scene's size. ``F`` is the GT moving mask.

============================  =====  =====================================================
name                          best   definition (per clip, for one generated sample)
============================  =====  =====================================================
``fg_mask_iou``               ↑      IoU of GT and generated moving masks (1 when both empty)
``ate_dtw``                   ↓      DTW cost / warping-path length per pixel, mean over F
``D_sig``                     ↓      mean ``|S_gt - S_gen|`` of T x T matrices ``|x_i - x_j|``
``local_dist_diff``           ↓      change of distances to the K nearest GT neighbours
``patch_nearest_acc``         ↑      agreement of each moving patch's nearest patch over t
``quantize_acc_{1,4,16}``     ↑      agreement of per-axis directions {-1, 0, +1} over dT
``ate``                       ↓      plain absolute trajectory error (no warping)
``epe``                       ↓      end-point error ``|x_{T-1} - y_{T-1}|``
============================  =====  =====================================================

Undefined values are NaN, never a silent 0 or 1 (the policy every function here follows):

- metrics over F (``ate_dtw``, ``D_sig``, ``local_dist_diff``, ``quantize_acc_*``, ``ate``,
  ``epe``) are NaN when nothing moves in the GT (F empty); ``fg_mask_iou`` is always defined;
- ``patch_nearest_acc`` is NaN when no patch moves or there are fewer than two patches;
- ``quantize_acc_dT`` is NaN when no window of ``dT`` frames fits (``T <= dT``);
- ``local_dist_diff`` is NaN when the MoMap has a single valid pixel (no neighbours).

Aggregation over clips (``momaplib.metrics.best_of_n``, ``momaplib.eval``) skips NaN and counts the clips that
contribute; since F comes from the GT, every method is averaged over the same clips.

Inputs never produce inf: a non-finite value at a valid pixel, or a coordinate beyond
``MAX_SCALED_COORDINATE`` (1e6) scene scales (a unit error that would overflow float32), raises
``ValueError`` naming the sample; ``best_of_n.non_finite_values`` lists any value that is still
not a number where the metric is defined, and ``momap eval`` fails on them.

The code is batched torch over samples and pixels (CPU or CUDA). Heavy loops keep the pair
axis (sample x pixel) last and contiguous, so each elementwise op covers every pair at once
(``benchmarks/bench_metrics.py`` times the whole set). It runs many mid-sized ops: on a CPU that
other busy processes share, torch's intra-op threads wait for each other at every op, and
``torch.set_num_threads(1)`` can then be many times faster.

Modules: ``scores`` (``MetricConfig``, ``sample_metrics``), ``curves`` (batched DTW and the other
curve-level pieces), ``best_of_n`` (a predictor's best-of-N rows over clips), ``distribution`` (N
samples against M GT futures of one scene: diversity ratio, precision / recall, energy distance).
The metrics sit below the stages so that trainers can validate with them; tables and the
``momap eval`` job are in ``momaplib.eval``.
"""

from momaplib.metrics.best_of_n import (
    Predictor,
    SelectMode,
    best_of_n,
    clip_generator,
    evaluate_predictions,
    evaluate_predictor,
    load_predictions,
    load_split,
    non_finite_values,
    prediction_path,
    save_predictions,
    select_best,
)
from momaplib.metrics.curves import (
    default_chunk_size,
    distance_signature,
    dtw,
    dtw_path,
    quantize_displacements,
)
from momaplib.metrics.distribution import (
    DISTRIBUTION_METRICS,
    TAU_GRID,
    TAU_MATCH,
    SetDistances,
    distribution_metrics,
    metrics_from_distances,
    precision_recall_curve,
    set_distances,
)
from momaplib.metrics.scores import (
    METRIC_NAMES,
    NUM_NEIGHBOURS,
    QUANTIZE_DTS,
    TAU_DIR,
    MetricConfig,
    compute_metrics,
    foreground_mask,
    higher_is_better,
    neighbour_pixels,
    sample_metrics,
)

__all__ = [
    "DISTRIBUTION_METRICS",
    "METRIC_NAMES",
    "NUM_NEIGHBOURS",
    "QUANTIZE_DTS",
    "TAU_DIR",
    "TAU_GRID",
    "TAU_MATCH",
    "MetricConfig",
    "Predictor",
    "SelectMode",
    "SetDistances",
    "best_of_n",
    "clip_generator",
    "compute_metrics",
    "default_chunk_size",
    "distance_signature",
    "distribution_metrics",
    "dtw",
    "dtw_path",
    "evaluate_predictions",
    "evaluate_predictor",
    "foreground_mask",
    "higher_is_better",
    "load_predictions",
    "load_split",
    "metrics_from_distances",
    "neighbour_pixels",
    "non_finite_values",
    "precision_recall_curve",
    "prediction_path",
    "quantize_displacements",
    "sample_metrics",
    "save_predictions",
    "select_best",
    "set_distances",
]
