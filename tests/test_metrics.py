"""Metrics of paper §4.2: known answers, invariances, an independent reference, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from momaplib.geometry import axis_angle_to_matrix
from momaplib.metrics import (
    METRIC_NAMES,
    MetricConfig,
    compute_metrics,
    distance_signature,
    dtw,
    dtw_path,
    foreground_mask,
    higher_is_better,
    neighbour_pixels,
    quantize_displacements,
    sample_metrics,
)
from momaplib.momap import MoMap

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
F_METRICS = [name for name in METRIC_NAMES if name not in ("fg_mask_iou", "patch_nearest_acc")]


def toy_momap(
    T: int = 20, H: int = 24, W: int = 24, seed: int = 0, moving: tuple[int, ...] = (1, 2)
) -> MoMap:
    """Returns a textured plane (z ~ 2 m) with three boxes; box 1 slides, box 2 turns and rises.

    ``moving`` picks which of boxes 1 and 2 move; box 3 always stays. Static camera.
    """
    rng = np.random.default_rng(seed)
    focal = 30.0
    K = np.array([[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = 2.0 + 0.01 * rng.standard_normal((H, W)).astype(np.float32)
    instance = np.zeros((H, W), np.int32)
    for box_id, (r0, r1, c0, c1) in enumerate(
        [(0.15, 0.45, 0.1, 0.4), (0.55, 0.85, 0.55, 0.9), (0.1, 0.35, 0.6, 0.9)], 1
    ):
        instance[int(r0 * H) : int(r1 * H), int(c0 * W) : int(c1 * W)] = box_id
    depth[instance > 0] -= 0.2
    xyz0 = np.stack([(u - K[0, 2]) / focal * depth, (v - K[1, 2]) / focal * depth, depth], -1)
    xyz = np.repeat(xyz0[None], T, 0)
    ease = (lambda s: 3 * s**2 - 2 * s**3)(np.linspace(0, 1, T, dtype=np.float32))
    if 1 in moving:
        xyz[:, instance == 1] += ease[:, None, None] * np.array([0.5, 0.0, -0.1], np.float32)
    if 2 in moving:
        mask = instance == 2
        centre = xyz0[mask].mean(0)
        for t in range(T):
            rotation = axis_angle_to_matrix(np.array([0.0, 0.6 * ease[t], 0.0]))
            xyz[t, mask] = (xyz0[mask] - centre) @ rotation.T + centre + ease[t] * np.array([0, -0.15, 0])
    return MoMap(
        xyz=xyz.astype(np.float32),
        valid=np.ones((H, W), bool),
        visible=np.ones((T, H, W), bool),
        rgb=rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
        instance=instance,
        K=K,
        ref_from_cam=np.repeat(np.eye(4, dtype=np.float32)[None], T, 0),
        meta={"instances": {"1": {"role": "target"}, "2": {"role": "agent"}, "3": {"role": "distractor"}}},
    )


# ----------------------------------------------------------------------------- independent reference
def reference_dtw(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Plain O(T U) loop: cost and length, predecessor ties to diagonal, then (i-1, j), then (i, j-1)."""
    step = np.linalg.norm(a[:, None] - b[None], axis=-1)
    T, U = step.shape
    acc, length = np.full((T, U), np.inf), np.zeros((T, U), int)
    for i in range(T):
        for j in range(U):
            if i == 0 and j == 0:
                acc[i, j], length[i, j] = step[0, 0], 1
                continue
            options = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
            options = [(p, q) for p, q in options if p >= 0 and q >= 0]
            best = options[0]
            for p, q in options[1:]:
                if acc[p, q] < acc[best]:
                    best = (p, q)
            acc[i, j], length[i, j] = acc[best] + step[i, j], length[best] + 1
    return float(acc[-1, -1]), int(length[-1, -1])


def reference_metrics(gt, pred, valid, instance, tau_move=0.02, tau_dir=0.01, k=8, dts=(1, 4, 16)):
    """Returns the metrics of one sample with loops in float64 numpy, straight from DESIGN.md."""
    depths = np.sort(gt[0][valid][:, 2].astype(np.float64))
    s = depths[(len(depths) - 1) // 2]  # torch's median: the lower middle value
    g, p = gt.astype(np.float64) / s, pred.astype(np.float64) / s
    moving_g = valid & (np.linalg.norm(g - g[:1], axis=-1).max(0) > tau_move)
    moving_p = valid & (np.linalg.norm(p - p[:1], axis=-1).max(0) > tau_move)
    union = (moving_g | moving_p).sum()
    out = {"fg_mask_iou": 1.0 if union == 0 else (moving_g & moving_p).sum() / union}
    fg = list(zip(*np.nonzero(moving_g), strict=True))
    valid_px = list(zip(*np.nonzero(valid), strict=True))
    T = g.shape[0]
    ate_dtw, dsig, local, ate, epe = [], [], [], [], []
    for v, u in fg:
        cost, length = reference_dtw(g[:, v, u], p[:, v, u])
        ate_dtw.append(cost / length)
        sig_g = np.linalg.norm(g[:, None, v, u] - g[None, :, v, u], axis=-1)
        sig_p = np.linalg.norm(p[:, None, v, u] - p[None, :, v, u], axis=-1)
        dsig.append(np.abs(sig_g - sig_p).mean())
        others = [q for q in valid_px if q != (v, u)]
        dist0 = [np.linalg.norm(g[0, v, u] - g[0][q]) for q in others]
        nearest = [others[i] for i in np.argsort(dist0, kind="stable")[:k]]
        diffs = [
            abs(np.linalg.norm(g[t, v, u] - g[t][q]) - np.linalg.norm(p[t, v, u] - p[t][q]))
            for t in range(T)
            for q in nearest
        ]
        local.append(np.mean(diffs))
        ate.append(np.linalg.norm(g[:, v, u] - p[:, v, u], axis=-1).mean())
        epe.append(np.linalg.norm(g[-1, v, u] - p[-1, v, u]))
    out.update(ate_dtw=np.mean(ate_dtw), D_sig=np.mean(dsig), local_dist_diff=np.mean(local))
    ids = sorted(set(instance[valid].tolist()) - {0})
    centroid = {
        name: np.stack([[x[t][valid & (instance == i)].mean(0) for i in ids] for t in range(T)])
        for name, x in (("g", g), ("p", p))
    }
    agree = []
    for m, i in enumerate(ids):
        patch = valid & (instance == i)
        if (moving_g & patch).sum() * 2 < patch.sum():
            continue
        for t in range(T):
            near = {}
            for name in ("g", "p"):
                d = np.linalg.norm(centroid[name][t] - centroid[name][t, m], axis=-1)
                d[m] = np.inf
                near[name] = int(np.argmin(d))
            agree.append(near["g"] == near["p"])
    out["patch_nearest_acc"] = np.mean(agree)
    for dt in dts:
        hits = []
        for v, u in fg:
            for t in range(0, T, dt):
                if t + dt >= T:
                    break
                dg, dp = g[t + dt, v, u] - g[t, v, u], p[t + dt, v, u] - p[t, v, u]
                qg = np.sign(dg) * (np.abs(dg) > tau_dir)
                qp = np.sign(dp) * (np.abs(dp) > tau_dir)
                hits.extend(qg == qp)
        out[f"quantize_acc_{dt}"] = np.mean(hits) if hits else math.nan
    out.update(ate=np.mean(ate), epe=np.mean(epe))
    return out


def random_scene(seed: int, T: int = 7, H: int = 6, W: int = 7):
    """Returns (gt [T,H,W,3], preds [N,T,H,W,3], valid, instance) with random walks on instances 1, 2."""
    rng = np.random.default_rng(seed)
    xyz0 = np.concatenate([rng.uniform(-1, 1, (H, W, 2)), rng.uniform(1.5, 2.5, (H, W, 1))], -1)
    instance = rng.integers(0, 4, (H, W)).astype(np.int32)
    valid = rng.random((H, W)) > 0.15
    steps = rng.normal(0, 0.05, (T - 1, H, W, 3)) * np.isin(instance, (1, 2))[..., None]
    gt = (xyz0 + np.concatenate([np.zeros((1, H, W, 3)), np.cumsum(steps, 0)])).astype(np.float32)
    noisy = gt + rng.normal(0, 0.04, gt.shape)
    shifted = np.concatenate([gt[:2], gt[:-2]])
    preds = np.stack([noisy, shifted, np.repeat(gt[:1], T, 0) + rng.normal(0, 0.03, gt.shape)]).astype(
        np.float32
    )
    return gt, preds, valid, instance


# ----------------------------------------------------------------------------- DTW
def test_dtw_matches_dtaidistance_on_random_curves():
    dtw_ndim = pytest.importorskip("dtaidistance.dtw_ndim")
    rng = np.random.default_rng(0)
    for _ in range(40):
        T, U = rng.integers(1, 14, size=2)
        a, b = rng.normal(size=(T, 3)), rng.normal(size=(U, 3))
        path, cost = dtw_ndim.warping_path(a, b, inner_dist="euclidean", include_distance=True)
        ours_cost, ours_length = dtw(torch.from_numpy(a), torch.from_numpy(b))
        assert int(ours_length) == len(path)
        assert abs(float(ours_cost) / float(ours_length) - cost / len(path)) < 1e-5
        assert abs(float(ours_cost) - cost) < 1e-5 * max(1.0, cost)


@pytest.mark.parametrize("device", DEVICES)
def test_dtw_batched_matches_plain_loop_including_ties(device):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(64, 9, 3))
    b = rng.normal(size=(64, 11, 3))
    a[:8] = 0.0  # all-zero costs: every path ties
    b[8:16] = a[8:16, :1]  # a constant curve at the first GT point: the static prediction's case
    b[16:24, :9] = a[16:24]  # identical prefixes: zero-cost diagonal, then ties
    cost, length = dtw(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device), chunk_size=7)
    for i in range(len(a)):
        ref_cost, ref_length = reference_dtw(a[i], b[i])
        assert int(length[i]) == ref_length, i
        assert abs(float(cost[i]) - ref_cost) < 1e-9
        path, path_cost = dtw_path(a[i], b[i])
        assert len(path) == ref_length and abs(path_cost - ref_cost) < 1e-9
        assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (8, 10)
        assert np.all(np.diff(path, axis=0) >= 0) and np.all(np.diff(path, axis=0).sum(1) >= 1)


def test_dtw_static_prediction_takes_the_diagonal():
    # every path along the zero-cost first row costs the same; the tie-break keeps the diagonal,
    # so ate_dtw of a static prediction equals its plain ATE
    curve = torch.cumsum(torch.rand(12, 3), 0)
    cost, length = dtw(curve, curve[:1].expand(12, 3))
    assert int(length) == 12
    assert math.isclose(float(cost), float((curve - curve[0]).norm(dim=-1).sum()), rel_tol=1e-6)


def test_dtw_broadcasts_and_checks_shapes():
    gt = torch.randn(5, 8, 3)
    pred = torch.randn(4, 5, 8, 3)
    cost, length = dtw(gt, pred)
    assert cost.shape == length.shape == (4, 5)
    single = dtw(gt[2], pred[1, 2])
    assert torch.allclose(single[0], cost[1, 2]) and single[1] == length[1, 2]
    with pytest.raises(ValueError, match="dtw"):
        dtw(torch.randn(8, 3), torch.randn(8, 2))
    with pytest.raises(ValueError, match="at least one point"):
        dtw(torch.randn(0, 3), torch.randn(8, 3))


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("device", DEVICES)
def test_all_metrics_match_an_independent_reference(device):
    config = MetricConfig(quantize_dts=(1, 2, 4, 8))
    for seed in range(3):
        gt, preds, valid, instance = random_scene(seed)
        ours = sample_metrics(
            torch.from_numpy(gt).to(device), preds, valid=valid, instance=instance, config=config
        )
        for n in range(len(preds)):
            reference = reference_metrics(gt, preds[n], valid, instance, dts=config.quantize_dts)
            for name in config.metric_names:
                if math.isnan(reference[name]):
                    assert math.isnan(ours[name][n]), (seed, n, name)
                else:
                    assert abs(float(ours[name][n]) - reference[name]) < 1e-5, (seed, n, name)
        assert torch.isnan(ours["quantize_acc_8"]).all()  # T = 7: no window of 8 frames fits


@pytest.mark.parametrize("device", DEVICES)
def test_ground_truth_scores_perfectly(device):
    momap = toy_momap()
    values = compute_metrics(momap, torch.from_numpy(momap.xyz).to(device))
    assert set(values) == set(METRIC_NAMES)
    for name, value in values.items():
        assert value == (1.0 if higher_is_better(name) else 0.0), name


def test_static_prediction_gets_zero_iou_and_ate_dtw_equal_to_ate():
    momap = toy_momap()
    static = np.repeat(momap.xyz[:1], momap.num_frames, 0)
    values = compute_metrics(momap, static)
    assert foreground_mask(momap).sum() > 0
    assert values["fg_mask_iou"] == 0.0
    assert values["ate_dtw"] > 0.01
    assert math.isclose(values["ate_dtw"], values["ate"], rel_tol=1e-5)


def test_time_shift_is_penalised_by_ate_much_more_than_by_ate_dtw():
    momap = toy_momap()
    shifted = np.concatenate([np.repeat(momap.xyz[:1], 3, 0), momap.xyz[:-3]])
    values = compute_metrics(momap, shifted)
    assert values["ate"] > 0.02
    assert values["ate_dtw"] < 0.3 * values["ate"]
    assert values["fg_mask_iou"] == 1.0


def test_signature_is_invariant_to_rigid_transforms_of_each_curve():
    generator = torch.Generator().manual_seed(0)
    curves = torch.randn(50, 16, 3, generator=generator)
    rotation = axis_angle_to_matrix(torch.randn(50, 3, generator=generator))
    moved = curves @ rotation.transpose(-1, -2) + 3 * torch.randn(50, 1, 3, generator=generator)
    assert (distance_signature(moved) - distance_signature(curves)).abs().max() < 1e-5

    momap = toy_momap()
    H, W = momap.valid.shape
    pred = torch.from_numpy(momap.xyz) + 0.02 * torch.randn(momap.xyz.shape, generator=generator)
    # a different rotation and translation for every pixel's generated curve
    rotation = axis_angle_to_matrix(torch.randn(H, W, 3, generator=generator))
    translation = torch.randn(H, W, 3, generator=generator)
    moved = torch.einsum("hwij,thwj->thwi", rotation, pred) + translation
    before = sample_metrics(momap, pred)["D_sig"]
    after = sample_metrics(momap, moved)["D_sig"]
    assert before.item() > 0.005
    assert abs(before.item() - after.item()) < 1e-5


def test_quantize_displacements_known_answer():
    curve = torch.tensor(
        [[0.0, 0.0, 0.0], [0.5, -0.005, 0.0], [1.0, -0.5, 0.02], [1.0, -1.0, 0.5], [0.0, 0, 0]]
    )
    assert quantize_displacements(curve, 1, 0.01).tolist() == [[1, 0, 0], [1, -1, 1], [0, -1, 1], [-1, 1, -1]]
    assert quantize_displacements(curve, 2, 0.01).tolist() == [[1, -1, 1], [-1, 1, -1]]
    assert quantize_displacements(curve, 5, 0.01).shape == (0, 3)  # t + dT < T never holds


def test_local_dist_diff_of_a_uniform_scaling_is_the_scaled_mean_distance():
    momap = toy_momap()
    # scaling every point by (1 + e) about the camera scales every distance by (1 + e)
    pred = momap.xyz * 1.1
    values = sample_metrics(momap, pred, config=MetricConfig(num_neighbours=4))
    fg = foreground_mask(momap)
    assert values["local_dist_diff"].item() > 0
    expected = reference_metrics(momap.xyz, pred, momap.valid, momap.instance, k=4)["local_dist_diff"]
    assert abs(values["local_dist_diff"].item() - expected) < 1e-6
    assert fg.sum() > 50


# ----------------------------------------------------------------------------- edge cases
def test_empty_foreground_gives_nan_for_f_metrics_and_a_defined_iou():
    still = toy_momap(moving=())
    assert foreground_mask(still).sum() == 0
    static_values = compute_metrics(still, still.xyz)
    assert static_values["fg_mask_iou"] == 1.0  # both masks empty
    for name in [*F_METRICS, "patch_nearest_acc"]:
        assert math.isnan(static_values[name]), name
    moving = toy_momap().xyz
    assert compute_metrics(still, moving)["fg_mask_iou"] == 0.0


def test_single_moving_patch_and_too_few_patches():
    one_mover = toy_momap(moving=(1,))
    values = compute_metrics(one_mover, one_mover.xyz)
    assert values["patch_nearest_acc"] == 1.0
    # sending box 1 towards box 2 instead of box 3 changes its nearest patch in later frames
    wrong_way = one_mover.xyz.copy()
    wrong_way[:, one_mover.instance == 1] = one_mover.xyz[:1, one_mover.instance == 1]
    wrong_way[:, one_mover.instance == 1] += np.linspace(0, 1, 20)[:, None, None] * np.array([0.6, 0.6, 0.0])
    assert 0.3 < compute_metrics(one_mover, wrong_way)["patch_nearest_acc"] < 0.9
    lonely = toy_momap(moving=(1,))
    lonely.instance = np.where(lonely.instance == 1, 1, 0).astype(np.int32)
    values = compute_metrics(lonely, lonely.xyz)
    assert math.isnan(values["patch_nearest_acc"])  # no other patch to be nearest
    assert values["ate_dtw"] == 0.0


def test_short_clips_give_nan_for_windows_that_do_not_fit():
    short = toy_momap(T=8)
    values = compute_metrics(short, short.xyz)
    assert math.isnan(values["quantize_acc_16"])
    assert values["quantize_acc_4"] == 1.0 and values["quantize_acc_1"] == 1.0
    single_frame = toy_momap(T=1)
    values = compute_metrics(single_frame, single_frame.xyz)
    assert values["fg_mask_iou"] == 1.0 and math.isnan(values["ate_dtw"])


def test_single_valid_pixel_has_no_neighbours():
    momap = toy_momap()
    valid = np.zeros_like(momap.valid)
    valid[8, 6] = True  # inside the sliding box
    values = sample_metrics(momap.xyz, momap.xyz, valid=valid, instance=momap.instance)
    assert values["ate_dtw"].item() == 0.0
    assert math.isnan(values["local_dist_diff"].item())


def test_non_finite_predictions_name_the_sample():
    momap = toy_momap(T=6)
    pred = np.repeat(momap.xyz[None], 4, 0)
    pred[2, 3, 5, 7, 1] = np.nan
    with pytest.raises(ValueError, match=r"pred\[2\] \(sample 2\): 1 non-finite .* t=3, v=5, u=7"):
        sample_metrics(momap, pred)
    pred[2, 3, 5, 7, 1] = momap.xyz[3, 5, 7, 1]
    pred[1, 0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"sample 1"):
        sample_metrics(momap, pred)
    # values at invalid pixels are ignored, even non-finite ones
    valid = momap.valid.copy()
    valid[0, 0] = False
    values = sample_metrics(momap.xyz, pred, valid=valid, instance=momap.instance)
    assert torch.equal(values["ate_dtw"], torch.zeros(4, dtype=torch.float64))


def test_bad_shapes_and_types_raise_clear_errors():
    momap = toy_momap(T=6)
    with pytest.raises(ValueError, match=r"pred: expected shape \(N, T, H, W, 3\) = \(N, 6, 24, 24, 3\)"):
        sample_metrics(momap, momap.xyz[:5])
    with pytest.raises(ValueError, match=r"pred: expected shape"):
        sample_metrics(momap, np.zeros((2, 6, 24, 24, 2), np.float32))
    with pytest.raises(ValueError, match=r"valid: expected \(H, W\) = \(24, 24\) bool"):
        sample_metrics(momap.xyz, momap.xyz, valid=np.ones((24, 25), bool))
    with pytest.raises(ValueError, match="instance: expected"):
        sample_metrics(momap.xyz, momap.xyz, instance=np.zeros((24, 24), np.float32))
    with pytest.raises(ValueError, match="no valid pixel"):
        sample_metrics(momap.xyz, momap.xyz, valid=np.zeros((24, 24), bool))
    with pytest.raises(ValueError, match=r"gt.xyz: expected shape \(T, H, W, 3\)"):
        sample_metrics(momap.xyz[..., :2], momap.xyz)
    with pytest.raises(ValueError, match="scene scale"):
        sample_metrics(-momap.xyz, -momap.xyz)
    with pytest.raises(ValueError, match="best_of_n"):
        compute_metrics(momap, np.repeat(momap.xyz[None], 3, 0))
    with pytest.raises(ValueError, match="num_neighbours"):
        MetricConfig(num_neighbours=0)
    with pytest.raises(KeyError, match="unknown metric"):
        higher_is_better("fid")


def test_inputs_can_be_records_sequences_or_tensors():
    momap = toy_momap(T=6)
    from_records = sample_metrics(momap, [momap, momap])
    from_array = sample_metrics(momap, np.stack([momap.xyz, momap.xyz]))
    for name in METRIC_NAMES:
        assert torch.equal(from_records[name].nan_to_num(-1), from_array[name].nan_to_num(-1))
        assert from_records[name].shape == (2,) and from_records[name].dtype == torch.float64


def test_neighbour_pixels_of_a_plane_pixel_are_its_8_neighbourhood():
    momap = toy_momap(T=4)
    neighbours = neighbour_pixels(momap, np.array([[16, 5]]), 8)[0]
    expected = {(v, u) for v in (15, 16, 17) for u in (4, 5, 6)} - {(16, 5)}
    assert {tuple(p) for p in neighbours.tolist()} == expected
    momap.valid[0, 0] = False
    with pytest.raises(ValueError, match="valid"):
        neighbour_pixels(momap, np.array([[0, 0]]), 8)


def test_metric_figures_draw_and_report_the_metric_values():
    plt = pytest.importorskip("matplotlib.pyplot")
    from momaplib import viz

    momap = toy_momap(T=8)
    late = np.concatenate([momap.xyz[:2], momap.xyz[:-2]])
    v, u = 8, 6  # on the sliding box
    s = momap.scene_scale
    cost, length = dtw(torch.from_numpy(momap.xyz[:, v, u] / s), torch.from_numpy(late[:, v, u] / s))
    figures = [
        viz.plot_moving_masks(momap, late),
        viz.plot_dtw_alignment(momap.xyz[:, v, u], late[:, v, u], scale=s),
        viz.plot_distance_signature(momap.xyz[:, v, u], late[:, v, u], scale=s),
        viz.plot_local_distances(momap, late, (v, u)),
        viz.plot_quantized_directions(momap.xyz[:, v, u], late[:, v, u], dt=2, scale=s),
    ]
    assert f"ate_dtw = {float(cost / length):.4f}" in figures[1].axes[0].get_title()
    assert "IoU = 1.000" in figures[0].axes[3].get_title()
    for figure in figures:
        assert figure.axes
        plt.close(figure)


def test_paired_difference_plot_puts_the_better_method_on_the_right():
    plt = pytest.importorskip("matplotlib.pyplot")
    import pandas as pd

    from momaplib import viz
    from momaplib.eval import paired_differences

    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(40)]
    frames = []
    for family, gain in (("tabletop", 0.1), ("egocentric", -0.05)):
        base = {"clip_id": ids, "fg_mask_iou": rng.random(40), "ate_dtw": rng.random(40)}
        a = pd.DataFrame(
            {**base, "fg_mask_iou": base["fg_mask_iou"] + gain, "ate_dtw": base["ate_dtw"] - gain}
        )
        frames.append(paired_differences(a, pd.DataFrame(base)).assign(dataset=family))
    frame = pd.concat(frames)
    figure = viz.plot_paired_differences(frame, "text", "no text")
    assert len(figure.axes) == 2  # one axis per metric
    for ax, metric in zip(figure.axes, ("fg_mask_iou", "ate_dtw"), strict=True):
        assert ax.get_ylabel() == metric
        markers = [line for line in ax.lines if line.get_marker() == "o"]
        # tabletop's a is better by 0.1 on both metrics, egocentric's worse by 0.05: right and left of 0
        assert [float(m.get_xdata()[0]) for m in markers] == pytest.approx([0.1, -0.05])
    plt.close(figure)
    with pytest.raises(ValueError, match="diff, low, high"):
        viz.plot_paired_differences(frame.drop(columns="low"))


def test_coordinates_that_would_overflow_the_metrics_are_errors():
    gt = toy_momap(T=6)
    with pytest.raises(ValueError, match=r"pred\[1\] \(sample 1\): coordinates up to 2\.\d+e\+20 m"):
        sample_metrics(gt, np.stack([gt.xyz, gt.xyz * np.float32(1e20)]))
    far = gt.xyz.copy()
    far[-1, 0, 0] = 1e20  # one GT point flies off: squares of ~1e20 overflow float32 into inf
    with pytest.raises(ValueError, match=r"gt\.xyz: coordinates up to 1e\+20 m .* scene scale s = 2 m"):
        sample_metrics(far, gt.xyz, valid=gt.valid, instance=gt.instance)
    # a wrong but plausible prediction (a unit error of x 1000) is still scored, finitely
    scores = compute_metrics(gt, gt.xyz * np.float32(1000))
    assert all(math.isfinite(scores[name]) for name in ("ate_dtw", "D_sig", "local_dist_diff", "ate", "epe"))
