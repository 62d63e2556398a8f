"""Distribution metrics (samples against many GT futures): known answers, independent references,
the evaluation over motion-variant scenes and its figures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from momaplib.baselines import get_predictor
from momaplib.eval import (
    coverage_curve,
    distribution_intervals,
    distribution_table,
    evaluate_distribution,
    futures_oracle,
    guidance_curve,
    paired_differences,
    simulate_future_sets,
)
from momaplib.eval.distribution import table_markdown
from momaplib.metrics import (
    DISTRIBUTION_METRICS,
    TAU_MATCH,
    distribution_metrics,
    precision_recall_curve,
    sample_metrics,
    set_distances,
)
from momaplib.momap import MoMap
from momaplib.sim import SimConfig
from tests.scripts import load_benchmark

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
T, H, W = 8, 16, 16


def scene(vectors, seed: int = 0) -> tuple[MoMap, np.ndarray]:
    """Returns (reference MoMap, futures (M, T, H, W, 3)): a plane at ~2 m (s ~ 2) with one box that
    slides by ``vectors[m]`` (metres) in future m; the reference's own future is future 0."""
    rng = np.random.default_rng(seed)
    focal = 20.0
    K = np.array([[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = 2.0 + 0.01 * rng.standard_normal((H, W)).astype(np.float32)
    instance = np.zeros((H, W), np.int32)
    instance[4:10, 4:10] = 1
    xyz0 = np.stack([(u - K[0, 2]) / focal * depth, (v - K[1, 2]) / focal * depth, depth], -1)
    ease = np.linspace(0, 1, T, dtype=np.float32)
    futures = np.repeat(xyz0[None, None], len(vectors), 0).repeat(T, 1)
    for m, vector in enumerate(vectors):
        futures[m][:, instance == 1] += ease[:, None, None] * np.asarray(vector, np.float32)
    reference = MoMap(
        xyz=futures[0].copy(),
        valid=np.ones((H, W), bool),
        visible=np.ones((T, H, W), bool),
        rgb=rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
        instance=instance,
        K=K,
        ref_from_cam=np.repeat(np.eye(4, dtype=np.float32)[None], T, 0),
        prompt="push the block",
    )
    return reference, futures.astype(np.float32)


def fan(count: int = 6, length: float = 0.5) -> list[np.ndarray]:
    """Returns ``count`` push vectors of ``length`` metres, evenly spread over headings in the x-y plane."""
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return [length * np.array([np.cos(a), np.sin(a), 0.0]) for a in angles]


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("device", DEVICES)
def test_identical_sets_match_perfectly(device):
    reference, futures = scene(fan())
    values = distribution_metrics(futures, futures, reference, device=device)
    assert values["precision"] == values["recall"] == 1.0
    assert values["energy_distance"] == 0.0  # V-statistic of identical sets: exactly 0
    assert values["sample_to_gt"] == values["gt_to_sample"] == 0.0
    assert values["diversity_ratio"] == pytest.approx(1.0) and values["diversity_ratio_dtw"] == pytest.approx(
        1.0
    )
    assert values["gt_spread"] > 0.05 and values["num_fg"] == 36


def test_one_collapsed_sample_repeated_has_precision_but_not_recall():
    reference, futures = scene(fan(6))
    collapsed = np.repeat(futures[:1], 6, 0)
    values = distribution_metrics(collapsed, futures, reference, tau=0.05)
    assert values["precision"] == 1.0  # every sample is a future...
    assert values["recall"] == pytest.approx(1 / 6)  # ...but only one future is ever found
    assert values["diversity_ratio"] == 0.0 and values["sample_spread"] == 0.0
    assert values["energy_distance"] > 0.05
    # the same sample repeated has the same recall at any N; diverse samples raise it to 1
    assert distribution_metrics(futures, futures, reference, tau=0.05)["recall"] == 1.0


def test_distances_grow_with_a_shift_of_the_whole_set():
    reference, futures = scene(fan(5))
    shifts = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)  # metres along z, across every push (x-y plane)
    rows = [
        distribution_metrics(futures + np.float32(c) * np.float32([0, 0, 1]), futures, reference)
        for c in shifts
    ]
    energy = [row["energy_distance"] for row in rows]
    nearest = [row["sample_to_gt"] for row in rows]
    assert energy[0] == 0.0 and all(a < b for a, b in itertools.pairwise(energy))
    assert all(a < b for a, b in itertools.pairwise(nearest))
    # a rigid shift keeps the spread: diversity stays that of the GT
    assert all(row["diversity_ratio"] == pytest.approx(1.0, abs=1e-5) for row in rows)
    assert rows[0]["precision"] == 1.0 and rows[-1]["precision"] == rows[-1]["recall"] == 0.0


# ----------------------------------------------------------------------------- independent references
def test_energy_distance_matches_scipy_in_one_dimension():
    """Futures and samples that differ by offsets a_m, b_n along x, ramped in over time: the
    time-aligned distance of two members is ``|a - b| * mean_t(ramp) / s``, a 1-D set whose energy
    distance scipy computes (scipy returns its square root)."""
    reference, base = scene([[0.3, 0.0, 0.0]])
    ramp = np.linspace(0, 1, T, dtype=np.float32)[:, None, None, None]
    a = np.array([0.0, 0.1, 0.25, -0.2])
    b = np.array([0.05, 0.3, -0.1])
    futures = np.stack([base[0] + ramp * np.float32([x, 0, 0]) for x in a])
    samples = np.stack([base[0] + ramp * np.float32([x, 0, 0]) for x in b])
    unit = ramp.mean() / reference.scene_scale
    values = distribution_metrics(samples, futures, reference)
    expected = scipy.stats.energy_distance(a * unit, b * unit) ** 2
    assert values["energy_distance"] == pytest.approx(expected, rel=1e-4)
    pairs = [abs(x - y) for i, x in enumerate(b) for y in b[i + 1 :]]
    assert values["sample_spread"] == pytest.approx(np.mean(pairs) * unit, rel=1e-4)


def test_spreads_and_energy_match_a_direct_numpy_formula():
    rng = np.random.default_rng(3)
    reference, _ = scene([[0.0, 0.0, 0.0]])
    box = reference.instance == 1

    def random_walks(count: int) -> np.ndarray:
        steps = rng.normal(0, 0.03, (count, T - 1, H, W, 3)) * box[..., None]
        return (
            reference.xyz[0] + np.concatenate([np.zeros((count, 1, H, W, 3)), steps.cumsum(1)], 1)
        ).astype(np.float32)

    futures, samples = random_walks(5), random_walks(4)
    s = reference.scene_scale
    moving = (np.linalg.norm(futures - futures[:, :1], axis=-1).max(1) > 0.02 * s).any(0)  # F: any future

    def dist(x, y):
        return np.linalg.norm(x[:, moving] - y[:, moving], axis=-1).mean() / s

    def matrix(xs, ys):
        return np.array([[dist(x, y) for y in ys] for x in xs])

    within_x, within_y, cross = matrix(samples, samples), matrix(futures, futures), matrix(samples, futures)
    values = distribution_metrics(samples, futures, reference)
    assert values["num_fg"] == moving.sum()
    assert values["energy_distance"] == pytest.approx(
        2 * cross.mean() - within_x.mean() - within_y.mean(), rel=1e-4
    )
    assert values["sample_spread"] == pytest.approx(within_x[np.triu_indices(4, 1)].mean(), rel=1e-5)
    assert values["gt_spread"] == pytest.approx(within_y[np.triu_indices(5, 1)].mean(), rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_matching_distance_is_the_ate_dtw_of_table_1(device):
    reference, futures = scene(fan(4))
    samples = futures[[1, 3]] + np.random.default_rng(0).normal(0, 0.01, futures[[1, 3]].shape).astype(
        np.float32
    )
    distances = set_distances(samples, futures, reference, device=device)
    for m in range(len(futures)):
        gt = MoMap(**{**reference.to_arrays(), "xyz": futures[m]})
        expected = sample_metrics(gt, samples)["ate_dtw"]
        torch.testing.assert_close(distances.cross_dtw[:, m], expected, rtol=1e-5, atol=1e-7)
    nearest = distances.cross_dtw.min(0).values  # per future, the best of the samples
    values = distribution_metrics(samples, futures, reference, tau=float(nearest.sort().values[1]))
    assert values["recall"] == 0.5 and values["gt_to_sample"] == pytest.approx(float(nearest.mean()))


def test_precision_recall_curve_rises_from_0_to_1():
    reference, futures = scene(fan(6))
    samples = futures[:3] + np.float32(0.02)
    distances = set_distances(samples, futures, reference)
    curve = precision_recall_curve(distances, (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0))
    for kind in ("precision", "recall"):
        assert curve[kind].iloc[0] == 0.0 and curve[kind].iloc[-1] == 1.0
        assert curve[kind].is_monotonic_increasing
    assert (curve["recall"] <= curve["precision"]).all()  # 3 samples near 3 of the 6 futures


def test_reused_gt_distances_give_the_same_metrics():
    reference, futures = scene(fan(5))
    first = set_distances(futures[:2], futures, reference)
    again = set_distances(futures[2:], futures, reference, reuse=first)
    fresh = set_distances(futures[2:], futures, reference)
    for name in ("cross_dtw", "cross", "samples", "gt", "samples_dtw", "gt_dtw"):
        torch.testing.assert_close(getattr(again, name), getattr(fresh, name))
    with pytest.raises(ValueError, match="reuse"):
        set_distances(futures[:2], futures[:3], reference, reuse=first)


def test_nothing_moving_gives_nan_and_bad_inputs_name_the_field():
    reference, futures = scene([[0.0, 0.0, 0.0]] * 3)
    values = distribution_metrics(futures, futures, reference)
    assert values["num_fg"] == 0 and all(math.isnan(values[name]) for name in DISTRIBUTION_METRICS)
    reference, futures = scene(fan(3))
    with pytest.raises(ValueError, match=r"samples: expected .*\(K, T, H, W, 3\)"):
        distribution_metrics(futures[0], futures, reference)
    with pytest.raises(ValueError, match=r"samples: expected T = 8"):
        distribution_metrics(futures[:, :4], futures, reference)
    broken = futures.copy()
    broken[1, 3, 5, 5, 0] = np.nan
    with pytest.raises(ValueError, match=r"samples\[1\]: 1 non-finite"):
        distribution_metrics(broken, futures, reference)
    elsewhere = futures.copy()
    elsewhere[2] += 0.3  # another scene: its start is not the reference's
    with pytest.raises(ValueError, match=r"gt_futures\[2\]: starts .* away from reference.xyz\[0\]"):
        distribution_metrics(futures, elsewhere, reference)
    with pytest.raises(ValueError, match="tau"):
        distribution_metrics(futures, futures, reference, tau=-0.1)
    with pytest.raises(TypeError, match="reference"):
        distribution_metrics(futures, futures, futures[0])


def test_paired_differences_without_a_better_side_says_which_is_higher():
    a = pd.DataFrame({"clip_id": list("abcdef"), "diversity_ratio": [1.2, 1.1, 1.3, 1.25, 1.15, 1.2]})
    b = a.assign(diversity_ratio=a["diversity_ratio"] - 0.5)
    frame = paired_differences(
        a, b, ["diversity_ratio"], directions={"diversity_ratio": None}, n_resamples=200
    )
    assert frame.loc["diversity_ratio", "verdict"] == "a higher"


# ----------------------------------------------------------------------------- evaluation and figures
@pytest.fixture(scope="module")
def evaluated(one_torch_thread):
    scenes = simulate_future_sets("tabletop", 2, 3, config=SimConfig().smoke(), progress=False)
    methods = {
        "static": get_predictor("static"),
        ("noisy", 1.0): get_predictor("gt+noise", noise_scale=0.005),
        ("noisy", 2.0): get_predictor("gt+noise", noise_scale=0.02),
    }
    per_scene = evaluate_distribution(scenes, methods, num_samples=3, progress=False)
    return scenes, per_scene.assign(dataset="tabletop")


def test_motion_variant_scenes_share_frame_0_and_differ_after(evaluated):
    scenes, _ = evaluated
    for scene_id, futures in scenes:
        assert scene_id.startswith("tabletop_") and len(futures) == 3
        assert len({f.prompt for f in futures}) == 1
        assert all((f.xyz[0] == futures[0].xyz[0]).all() for f in futures)
        assert max(np.abs(f.xyz[-1] - futures[0].xyz[-1]).max() for f in futures[1:]) > 1e-3


def test_evaluation_rows_tables_and_intervals(evaluated):
    scenes, per_scene = evaluated
    assert len(per_scene) == 2 * 3 and set(per_scene["scene_id"]) == {s for s, _ in scenes}
    assert {"precision@0.2", "recall@0.05"} <= set(per_scene.columns)
    static = per_scene[per_scene["method"] == "static"]
    assert (static["diversity_ratio"] == 0).all() and static["guidance_scale"].isna().all()
    at_tau = per_scene[f"precision@{TAU_MATCH:g}"]
    assert (at_tau == per_scene["precision"]).all()
    table = distribution_table(per_scene)
    assert list(table["scenes"]) == [2, 2, 2] and "| static | – | 2 |" in table_markdown(table)
    curve = guidance_curve(per_scene, "noisy")
    assert list(curve["guidance_scale"]) == [1.0, 2.0]
    assert curve["sample_to_gt"].iloc[0] < curve["sample_to_gt"].iloc[1]  # more noise, farther off
    intervals = distribution_intervals(per_scene, ("noisy", 1.0), n_resamples=100)
    assert set(intervals["method"]) == {"static", "noisy"} and (intervals["clips"] == 2).all()
    coverage = coverage_curve(per_scene)
    assert len(coverage) == 3 * 7 and coverage["recall"].between(0, 1).all()


def test_the_futures_oracle_scores_the_futures_against_themselves(evaluated):
    scenes, _ = evaluated
    seen = []

    def recorded(gt, num_samples, generator):
        seen.append(gt)
        return get_predictor("gt")(gt, num_samples, generator)

    oracle = futures_oracle(recorded)
    row = evaluate_distribution(scenes[:1], {"oracle": oracle}, num_samples=5, progress=False)
    row = row.iloc[0]
    assert row["num_samples"] == 5 and [id(f) for f in seen] == [id(scenes[0][1][i % 3]) for i in range(5)]
    assert row["precision"] == row["recall"] == 1.0  # 5 draws of 3 futures: repeats, so no exact spread
    oracle = futures_oracle(get_predictor("gt"))
    exact = evaluate_distribution(scenes[:1], {"oracle": oracle}, num_samples=3, progress=False).iloc[0]
    assert exact["diversity_ratio"] == pytest.approx(1.0)
    assert exact["energy_distance"] == pytest.approx(0, abs=1e-6)
    assert exact["precision"] == exact["recall"] == 1.0


def test_distribution_figures_draw(evaluated):
    from momaplib import viz

    scenes, per_scene = evaluated
    _, futures = scenes[0]
    samples = get_predictor("gt+noise", noise_scale=0.01)(futures[0], 2, 0)
    fig = viz.plot_futures_3d(futures[0], futures, samples, num_points=20, context_points=30)
    names = [trace.name for trace in fig.data]
    assert names == [
        "scene at t0",
        *["GT futures"] * 3,
        *["samples"] * 2,
        "GT end points",
        "sample end points",
    ]
    assert viz.plot_guidance_curve(per_scene, "noisy").axes[0].get_xlabel().startswith("diversity ratio")
    # a row run on one scene more (far off): the curve is drawn on the scenes every row scored
    extra = per_scene[per_scene["guidance_scale"] == 2.0].iloc[:1].assign(scene_id="extra", sample_to_gt=9.0)
    left = viz.plot_guidance_curve(pd.concat([per_scene, extra]), "noisy").axes[0]
    drawn = left.lines[0].get_ydata()
    assert list(drawn) == list(guidance_curve(per_scene, "noisy")["sample_to_gt"])
    assert left.get_title().endswith("(2 scenes)")
    assert len(viz.plot_coverage_curve(per_scene).axes[0].lines) == 2 * 3 + 1
    with pytest.raises(ValueError, match="gt_futures"):
        viz.plot_futures_3d(futures[0], np.zeros((2, 3, 4, 4, 3)), samples)


def test_eval_distribution_gives_a_method_its_own_sampler(monkeypatch):
    import argparse

    import momaplib.diffusion.objectives as objectives
    import momaplib.diffusion.pipeline as pipeline

    script = load_benchmark("eval_distribution")

    class Pipe:  # stands in for a loaded MoMapPipeline: only what make_methods touches
        config = type("Config", (), {"guidance_scale": 2.0})()

        def to(self, device):
            return self

        def set_progress_bar_config(self, **options):
            pass

    calls = []
    monkeypatch.setattr(pipeline, "load_pipeline", lambda source: Pipe())
    monkeypatch.setattr(objectives, "pipeline_predictor", lambda pipe, **options: calls.append(options))
    args = argparse.Namespace(
        method=["ours=p", "ours-ddpm=p"], scheduler=["ours-ddpm=ddpm"], sweep=["ours"], fast=False,
        guidance_scales=[1.0, 3.0], steps=7, device="cpu",
    )  # fmt: skip
    methods = script.make_methods(args)
    assert sorted(methods) == [("ours", 1.0), ("ours", 3.0), ("ours-ddpm", 2.0)]
    # the swept method keeps the pipeline's sampler, the other gets ancestral DDPM at its own guidance
    assert [call.get("scheduler") for call in calls] == [None, None, "ddpm"]
    assert calls[-1]["guidance_scale"] == 2.0 and calls[-1]["num_inference_steps"] == 7
    for bad in (["nobody=ddpm"], ["ours-ddpm=heun"]):
        with pytest.raises(SystemExit, match="--scheduler: expected NAME=SAMPLER"):
            script.make_methods(argparse.Namespace(**{**vars(args), "scheduler": bad}))


def test_eval_distribution_oracles_see_every_future_through_the_pipelines_vae(monkeypatch, evaluated):
    import argparse

    import momaplib.diffusion.pipeline as pipeline
    from momaplib.baselines.simple import vae_reconstruction
    from tests.test_diffusion import tiny_momap_vae

    scenes, _ = evaluated
    torch.manual_seed(0)
    vae = tiny_momap_vae(scenes[0][1][0].num_frames).eval()
    monkeypatch.setattr(pipeline, "load_pipeline", lambda source: type("Pipe", (), {"vae": vae})())
    args = argparse.Namespace(
        method=["futures=futures", "vae-futures=vae-futures:p"], scheduler=[], sweep=[], fast=False,
        guidance_scales=[2.0], steps=7, device="cpu",
    )  # fmt: skip
    methods = load_benchmark("eval_distribution").make_methods(args)
    assert sorted(methods) == [("futures", None), ("vae-futures", None)]
    futures = scenes[0][1]
    samples = methods["vae-futures", None](futures, 3, 0)
    for i, future in enumerate(futures):  # sample i is future i encoded and decoded
        assert torch.equal(samples[i], vae_reconstruction(vae)(future, 1, 0)[0])
    assert torch.equal(methods["futures", None](futures, 3, 0)[2], torch.from_numpy(futures[2].xyz).float())


def test_the_cards_coverage_table_is_the_committed_per_scene_csv():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    per_scene = pd.read_csv(root / "checkpoints/logs/distribution_per_scene.csv.gz")
    means = distribution_table(per_scene)
    card = (root / "checkpoints/README.md").read_text()
    section = card.split("### Coverage of the true futures")[1].split("\n#")[0]
    # family, label, scenes, then 4 metrics
    row = r"^\| (tabletop|egocentric) \| ([^|]+) \| (\d+) \|((?: [0-9.]+ \|){4})$"
    rows = re.findall(row, section, re.M)
    assert len(rows) == len(means) == 14
    for family, label, scenes, numbers in rows:
        method = "ours-ddpm" if "DDPM" in label else label.split(",")[0].strip()
        guidance = re.search(r"guidance (\d+)", label)
        match = means[(means["dataset"] == family) & (means["method"] == method)]
        if guidance:
            match = match[match["guidance_scale"] == float(guidance.group(1))]
        assert len(match) == 1, (family, label)
        assert int(scenes) == match["scenes"].iloc[0], (family, label, scenes)
        shown = [float(x) for x in numbers.split("|") if x.strip()]
        expected = match[["diversity_ratio", "precision", "recall", "energy_distance"]].iloc[0].to_numpy()
        assert np.allclose(shown, expected, atol=5e-4), (family, label, shown, expected)


def test_common_scenes_keeps_the_scenes_every_row_scored():
    from momaplib.eval.distribution import common_scenes

    rows = [("tabletop", "ours", 2.0, s) for s in "abcd"] + [("tabletop", "ours", 1.0, s) for s in "ab"]
    rows += [("tabletop", "static", None, s) for s in "abc"] + [("egocentric", "ours", 2.0, s) for s in "xy"]
    per_scene = pd.DataFrame(rows, columns=["dataset", "method", "guidance_scale", "scene_id"])
    kept = common_scenes(per_scene)
    assert sorted(set(kept["scene_id"])) == ["a", "b", "x", "y"]  # c lacks guidance 1, d lacks two rows
    assert len(kept) == 2 * 3 + 2  # every row of a kept scene stays
    assert len(common_scenes(kept)) == len(kept)  # already common: unchanged
    # a scene id in two families is two scenes: "c" complete on egocentric keeps tabletop's "c" out
    both = pd.concat([per_scene, per_scene.iloc[-1:].assign(scene_id="c")])
    kept = common_scenes(both)
    assert sorted(kept[kept["dataset"] == "tabletop"]["scene_id"].unique()) == ["a", "b"]
    assert sorted(kept[kept["dataset"] == "egocentric"]["scene_id"].unique()) == ["c", "x", "y"]
