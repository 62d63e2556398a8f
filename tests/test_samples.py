"""Sample sets of one input: their diversity, describe() and the best-of-N tables (no model needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from momaplib.eval import best_mask, metric_label
from momaplib.eval.samples import SamplingResult, best_of_n_table, instance_motion_table, sample_diversity
from momaplib.metrics import METRIC_NAMES

T, H, W = 5, 4, 6
SCALE = 2.0  # scene scale s (metres)


def moving_block(shift: float = 0.5) -> np.ndarray:
    """Returns xyz (T, H, W, 3): a static grid at depth 2 m whose top-left 2 x 3 block moves along
    x by ``shift * t / (T - 1)`` metres (far more than 2 % of s)."""
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    grid = np.stack([u * 0.1, v * 0.1, np.full((H, W), SCALE)], -1)
    xyz = np.repeat(grid[None], T, axis=0).astype(np.float64)
    xyz[:, :2, :3, 0] += shift * np.linspace(0.0, 1.0, T)[:, None, None]
    return xyz


VALID = np.ones((H, W), dtype=bool)


def test_identical_samples_have_zero_diversity():
    xyz = np.stack([moving_block()] * 3)
    diversity = sample_diversity(xyz, VALID, SCALE, gt=xyz[0])
    assert diversity == {
        "pairwise_distance": 0.0,
        "pairwise_distance_moving": 0.0,
        "label_disagreement": 0.0,
        "distance_to_gt": 0.0,
        "distance_to_gt_moving": 0.0,
    }


def test_a_constant_offset_gives_its_length_over_the_scene_scale():
    offset = np.array([0.03, 0.0, 0.04])  # |offset| = 0.05 m
    first = moving_block()
    xyz = np.stack([first, first + offset])
    diversity = sample_diversity(xyz, VALID, SCALE, gt=first)
    # the offset moves every point of every frame alike: no point starts or stops moving
    assert diversity["pairwise_distance"] == pytest.approx(0.05 / SCALE)
    assert diversity["pairwise_distance_moving"] == pytest.approx(0.05 / SCALE)
    assert diversity["label_disagreement"] == 0.0
    # one sample is the GT, the other 0.05 m away from it: the mean over samples is half of that
    assert diversity["distance_to_gt"] == pytest.approx(0.5 * 0.05 / SCALE)
    assert diversity["distance_to_gt_moving"] == pytest.approx(0.5 * 0.05 / SCALE)


def test_moving_pixels_carry_the_difference_and_labels_count_disagreeing_pixels():
    # sample 1 moves the block further: its points differ by 0.2 m * t / (T - 1) from sample 0's
    xyz = np.stack([moving_block(0.5), moving_block(0.7)])
    diversity = sample_diversity(xyz, VALID, SCALE)
    mean_gap = 0.2 * np.linspace(0.0, 1.0, T).mean() / SCALE
    assert diversity["pairwise_distance_moving"] == pytest.approx(mean_gap)
    assert diversity["pairwise_distance"] == pytest.approx(mean_gap * 6 / (H * W))  # 6 moving pixels
    assert diversity["label_disagreement"] == 0.0 and "distance_to_gt" not in diversity
    # a static sample disagrees with a moving one on the 6 moving pixels only; invalid pixels
    # count nowhere
    static = moving_block(0.0)
    valid = VALID.copy()
    valid[-1] = False
    diversity = sample_diversity(np.stack([moving_block(), static]), valid, SCALE)
    assert diversity["label_disagreement"] == pytest.approx(6 / valid.sum())
    # nothing moves anywhere: the moving-pixel distance is undefined, not 0
    assert np.isnan(sample_diversity(np.stack([static, static]), VALID, SCALE)["pairwise_distance_moving"])


def test_diversity_rejects_what_it_cannot_compare():
    xyz = np.stack([moving_block()] * 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        sample_diversity(xyz[:1], VALID, SCALE)
    with pytest.raises(ValueError, match=r"expected \(N, T, H, W, 3\)"):
        sample_diversity(xyz[0], VALID, SCALE)
    with pytest.raises(ValueError, match="gt: expected the samples'"):
        sample_diversity(xyz, VALID, SCALE, gt=xyz[0, :2])
    with pytest.raises(ValueError, match="positive scene scale"):
        sample_diversity(xyz, VALID, 0.0)


def known_result(values: list[float], ate_dtw: list[float], diversity: dict | None = None) -> SamplingResult:
    """Returns a result of len(values) samples with metrics ``values[i] + j / 100`` for metric j
    (and the given ``ate_dtw``); the arrays are not needed by the tables."""
    metrics = pd.DataFrame(
        {name: [v + j / 100 for v in values] for j, name in enumerate(METRIC_NAMES)},
        index=pd.Index(range(len(values)), name="sample"),
    )
    metrics["ate_dtw"] = ate_dtw
    settings = {"num_samples": len(values), "num_inference_steps": 2, "guidance_scale": 2.0, "seed": 0}
    best = int(np.argmin(ate_dtw))
    xyz = np.zeros((len(values), T, H, W, 3), np.float32)
    return SamplingResult(None, [None] * len(values), xyz, "push it", settings, metrics, best, diversity)


def test_best_of_n_table_with_means_puts_best_and_mean_side_by_side():
    a = known_result([0.9, 0.5, 0.1], [0.3, 0.1, 0.2])  # best: sample 1
    b = known_result([0.6, 0.0], [0.5, 0.6])  # best: sample 0
    table = best_of_n_table({"a": a, "b": b}, with_mean=True)
    groups = ["best of N", "mean of N"]
    assert list(table.columns) == [(group, run) for group in groups for run in ("a", "b")]
    assert list(table.columns.names) == ["samples", "run"]
    assert list(table.index) == [metric_label(name) for name in METRIC_NAMES]
    iou = metric_label("fg_mask_iou")  # metric 0: the values themselves
    assert table.loc[iou].tolist() == pytest.approx([0.5, 0.6, 0.5, 0.3])
    assert table.loc[metric_label("ate_dtw"), ("mean of N", "a")] == pytest.approx(0.2)
    # bold marks the better run within each group: b's reported sample, a's mean
    assert best_mask(table).loc[iou].tolist() == [False, True, True, False]
    plain = best_of_n_table({"a": a, "b": b})
    assert list(plain.columns) == ["a", "b"] and plain.columns.name == "run"
    assert plain.loc[iou].tolist() == pytest.approx([0.5, 0.6])


def test_describe_reports_the_best_of_n_and_the_diversity():
    diversity = {"pairwise_distance_moving": 0.0374, "distance_to_gt_moving": 0.2291}
    text = known_result([0.9, 0.5, 0.1], [0.3, 0.1, 0.2], diversity).describe()
    assert "best of 3 (lowest ate_dtw): sample 1" in text
    assert text.endswith("samples 0.037 apart on moving pixels, 0.229 from the GT")
    assert "\n" not in text
    assert "apart" not in known_result([0.9, 0.5], [0.3, 0.1]).describe()


def test_instance_motion_table_gives_the_share_of_each_instance_that_moves():
    from momaplib.momap import MoMap

    # instance 1 = the moving top-left 2 x 3 block, instance 2 = a static pixel pair, 0 = the rest
    instance = np.zeros((H, W), np.int32)
    instance[:2, :3] = 1
    instance[3, 4:] = 2
    gt = moving_block()
    scene = MoMap(
        xyz=gt.astype(np.float32), valid=VALID, visible=np.ones((T, H, W), bool),
        rgb=np.zeros((H, W, 3), np.uint8), instance=instance, K=np.diag([5.0, 5.0, 1.0]),
        ref_from_cam=np.repeat(np.eye(4)[None], T, 0), prompt="push it",
        meta={"instances": {"1": {"name": "red block", "role": "target"}, "2": "cup"}},
    )  # fmt: skip
    half = gt.copy()
    half[:, :2, :3] = gt[0, :2, :3]  # the block stays still ...
    half[:, 0, :3, 0] += 0.5 * np.linspace(0.0, 1.0, T)[:, None]  # ... but its top row moves
    half[:, 3, 5, 1] += 0.3 * np.linspace(0.0, 1.0, T)  # and one pixel of the cup
    xyz = np.stack([gt, half]).astype(np.float32)
    result = known_result([0.5, 0.6], [0.2, 0.1])
    result = SamplingResult(scene, [None, None], xyz, "push it", result.settings, result.metrics, 1)
    table = instance_motion_table(result)
    assert list(table.index) == ["0: background", "1: red block (target)", "2: cup"]
    assert list(table.columns) == ["GT", "sample 0", "sample 1 ★"]
    assert table["GT"].tolist() == [0.0, 1.0, 0.0]
    assert table["sample 0"].tolist() == [0.0, 1.0, 0.0]
    assert table["sample 1 ★"].tolist() == [0.0, 0.5, 0.5]
