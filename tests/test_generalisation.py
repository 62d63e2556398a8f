"""The generalisation suite (momaplib.eval.generalisation) and its figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from momaplib.data.procedural import TRAIN_SEED_START
from momaplib.eval.generalisation import (
    CASES,
    VAL_SEED_START,
    build_case,
    pipeline_errors,
    run_suite,
    suite_markdown,
    summarize_suite,
    target_failures,
)
from tests.test_diffusion import tiny_momap_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_case_builds_a_valid_momap_of_the_requested_size():
    sim = build_case("sim", 0, 32, 32, 8)
    for name in CASES:
        momap = build_case(name, 0, 32, 32, 8)
        assert momap.xyz.shape == (8, 32, 32, 3) and momap.valid.mean() > 0.5, name
        assert momap.meta["case"] == name and momap.meta["suite_seed"] == 0
        exact_views = ("sim_roll90", "sim_roll180", "sim_mirror", "sim_upside_down", "sim_depth_x2")
        if name in exact_views:  # the same clip's pixels, seen otherwise: its depths are the clip's
            scale = 2.0 if name == "sim_depth_x2" else 1.0
            assert abs(momap.scene_scale - scale * sim.scene_scale) < 0.05 * sim.scene_scale, name
        assert momap.moving_mask().any() == (name.startswith("sim") or name.endswith("_moving")), name
    flipped = build_case("sim_roll180", 0, 32, 32, 8)
    np.testing.assert_array_equal(flipped.xyz, sim.xyz[:, ::-1, ::-1] * np.float32([-1, -1, 1]))
    for seed in (VAL_SEED_START, TRAIN_SEED_START):
        with pytest.raises(ValueError, match="seed: expected 0 <= seed < "):
            build_case("room", seed)
    with pytest.raises(ValueError, match="case: expected one of"):
        build_case("beach", 0)


def test_pipeline_errors_known_answers():
    momap = build_case("primitives", 1, 32, 32, 4)
    s = momap.scene_scale
    exact = np.repeat(momap.xyz[:1], 4, axis=0)[None]
    assert pipeline_errors(exact, momap) == {"pipe_t0": 0.0, "pipe_bg_moved": 0.0}
    shifted = exact.copy()
    shifted[0, 0] += np.float32([0.0, 0.0, 0.1 * s])  # the reference frame 10 % off, then back
    background = momap.valid & (momap.instance == 0)
    errors = pipeline_errors(shifted, momap)
    assert errors["pipe_t0"] == pytest.approx(0.1, rel=1e-4) and errors["pipe_bg_moved"] == 1.0
    half = exact.copy()  # a second sample that moves the left half of the image by 3 % of s
    half[0, 1:, :, :16, 0] += 0.03 * s
    errors = pipeline_errors(np.concatenate([exact, half]), momap)
    assert errors["pipe_bg_moved"] == pytest.approx(0.5 * background[:, :16].sum() / background.sum())


def test_suite_rows_summary_targets_and_tables():
    vae = tiny_momap_vae(4).eval()
    rows = run_suite(vae, None, ["sim", "fronto_plane"], seeds=(0, 1), size=(32, 32, 4), progress=False)
    assert [(r["case"], r["seed"]) for r in rows] == [
        ("sim", 0),
        ("sim", 1),
        ("fronto_plane", 0),
        ("fronto_plane", 1),
    ]
    assert all(math.isfinite(r["vae_all"]) and math.isnan(r["pipe_t0"]) for r in rows)
    assert math.isnan(rows[2]["vae_moving"])  # nothing moves on a static plane
    summary = summarize_suite(rows)
    assert summary["sim"]["num_seeds"] == 2
    assert summary["sim"]["vae_all"] == pytest.approx((rows[0]["vae_all"] + rows[1]["vae_all"]) / 2)
    failures = target_failures({"sim": {"vae_all": 0.007}, "room": {"vae_all": 0.007, "pipe_t0": math.nan}})
    assert failures == ["sim: vae_all 0.7 % > 0.6 %"]
    old = {"label": "old", "summary": {"sim": {"vae_all": 0.44, "pipe_t0": 0.22}}}
    new = {"label": "new", "summary": {"sim": {"vae_all": 0.01, "pipe_t0": math.nan}}}
    table = suite_markdown(old, new)
    assert "| sim | 44 % → 1 % | 22 % → — |" in table and "left: old, right: new" in table


def test_the_figure_draws_a_bar_per_case_metric_and_run():
    from momaplib.viz import plot_generalisation

    old = {"label": "old", "summary": {"sim": {"vae_all": 0.004, "pipe_t0": 0.01}, "room": {"vae_all": 0.5}}}
    new = {"label": "new", "summary": {"sim": {"vae_all": 0.003, "pipe_t0": 0.01}, "room": {"vae_all": 0.01}}}
    fig = plot_generalisation(old, new, metrics=("vae_all", "pipe_t0"))
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 4
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["sim", "room"]
    with pytest.raises(ValueError, match="metrics: unknown"):
        plot_generalisation(old, metrics=("speed",))


def test_the_suite_scores_the_models_own_t0_and_leaves_the_pipeline_as_it_was():
    from tests.test_eval_sensors import _pipeline

    pipeline = _pipeline(4)
    rows = run_suite(None, pipeline, ["fronto_plane"], seeds=(0,), num_samples=2, num_inference_steps=2,
                     size=(16, 16, 4), progress=False)  # fmt: skip
    assert (
        rows[0]["pipe_t0"] > 0.01
    )  # a random model's own t = 0, not the anchored output (0 by construction)
    assert pipeline.config.anchor_t0 is True


def test_the_val_suite_is_disjoint_from_the_test_suite_and_from_training_seeds():
    from momaplib.data.procedural import procedural_momap
    from momaplib.data.splits import split_indices
    from momaplib.sim import SimConfig, clip_seed, generate_clip

    for seed in (0, 1):
        test, val = build_case("sim", seed, 32, 32, 4), build_case("sim", seed, 32, 32, 4, split="val")
        assert val.meta["suite_split"] == "val" and test.meta["suite_split"] == "test"
        index = split_indices("tabletop", seed + 1, "val")[seed]
        assert index not in split_indices("tabletop", 50, "test")
        expected = generate_clip(clip_seed(0, index), SimConfig(height=32, width=32, num_frames=4)).momap
        np.testing.assert_array_equal(val.xyz, expected.xyz)
        assert not np.array_equal(val.xyz, test.xyz)
        turned = build_case("sim_roll180", seed, 32, 32, 4, split="val")  # views turn the val clip
        np.testing.assert_array_equal(turned.xyz, val.xyz[:, ::-1, ::-1] * np.float32([-1, -1, 1]))
    room = build_case("room", 3, 32, 32, 4, split="val")
    np.testing.assert_array_equal(room.xyz, procedural_momap("room", VAL_SEED_START + 3, 32, 32, 4,
                                                             depth_range=(1.2, 3.0)).xyz)  # fmt: skip
    assert not np.array_equal(room.xyz, build_case("room", 3, 32, 32, 4).xyz)
    assert VAL_SEED_START + VAL_SEED_START <= TRAIN_SEED_START  # val seeds end before training seeds
    with pytest.raises(ValueError, match="split: expected one of"):
        build_case("room", 0, split="train")


def test_bench_generalisation_writes_the_val_suite_apart(tmp_path):
    from tests.scripts import load_benchmark

    bench = load_benchmark("bench_generalisation")
    folder = tmp_path / "vae"
    tiny_momap_vae(4).save_pretrained(folder)
    argv = ["--vae", str(folder), "--pipeline", "", "--cases", "sim", "room", "--seeds", "0", "--size", "32",
            "32", "4", "--label", "x"]  # fmt: skip
    val = bench.main([*argv, "--split", "val", "--out", str(tmp_path / "val.json")])
    test = bench.main([*argv, "--out", str(tmp_path / "test.json")])
    assert val["settings"]["split"] == "val" and test["settings"]["split"] == "test"
    assert [r["case"] for r in val["rows"]] == ["sim", "room"]
    assert val["rows"][0]["vae_all"] != test["rows"][0]["vae_all"]  # other clips, other errors
    assert json.loads((tmp_path / "val.json").read_text())["summary"].keys() == {"sim", "room"}
