"""Best-of-N selection, dataset evaluation, the Table-1 formatter and the `momap eval` job."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import tyro

from momaplib.baselines import get_predictor
from momaplib.cli import main
from momaplib.data import write_dataset
from momaplib.eval import (
    CLIPS_ROW,
    EvalJob,
    SamplingResult,
    best_mask,
    best_of_n,
    evaluate_methods,
    evaluate_predictions,
    evaluate_predictor,
    format_table,
    load_predictions,
    load_split,
    metric_label,
    paired_differences,
    per_scene_table,
    save_predictions,
    select_best,
    style_table,
    summarize,
    table_to_markdown,
    write_table,
)
from momaplib.metrics import METRIC_NAMES, sample_metrics
from momaplib.momap import MoMap
from momaplib.sim import SimConfig
from momaplib.storage import DataFormatError
from tests.scripts import load_benchmark
from tests.test_metrics import toy_momap


def test_select_best_reports_the_lowest_ate_dtw_sample_for_every_metric():
    per_sample = {
        "fg_mask_iou": torch.tensor([0.2, 0.9, 0.5], dtype=torch.float64),
        "ate_dtw": torch.tensor([0.3, math.nan, 0.1], dtype=torch.float64),
        "ate": torch.tensor([0.05, 0.01, 0.2], dtype=torch.float64),
    }
    values, index = select_best(per_sample)
    assert index == 2 and values == {"fg_mask_iou": 0.5, "ate_dtw": 0.1, "ate": 0.2}
    oracle, index = select_best(per_sample, mode="oracle")
    assert index == -1 and oracle == {"fg_mask_iou": 0.9, "ate_dtw": 0.1, "ate": 0.01}
    # nothing moves in the GT: ate_dtw is NaN everywhere, the best mask decides
    per_sample["ate_dtw"] = torch.full((3,), math.nan, dtype=torch.float64)
    values, index = select_best(per_sample)
    assert index == 1 and math.isnan(values["ate_dtw"])
    with pytest.raises(ValueError, match="mode"):
        select_best(per_sample, mode="mean")


def test_best_of_n_finds_the_gt_among_worse_samples():
    momap = toy_momap(T=8)
    samples = torch.cat(
        [get_predictor(name)(momap, 1, 0) for name in ("static", "gt+noise", "gt", "gt_time_shift")]
    )
    values = best_of_n(momap, samples)
    assert values["ate_dtw"] == 0.0 and values["fg_mask_iou"] == 1.0
    oracle = best_of_n(momap, samples[[0, 1, 3]], mode="oracle")
    chosen = best_of_n(momap, samples[[0, 1, 3]])
    for name in ("ate", "D_sig", "epe"):
        assert oracle[name] <= chosen[name]


def test_evaluate_predictor_rows_are_seeded_per_clip_not_per_position():
    clips = {f"clip{i}": toy_momap(T=6, seed=i) for i in range(3)}
    noisy = get_predictor("gt+noise", noise_scale=0.02)
    table = evaluate_predictor(clips, noisy, num_samples=3, progress=False)
    assert list(table.columns) == ["clip_id", "num_fg", "num_samples", "selected", *METRIC_NAMES]
    assert table["clip_id"].tolist() == ["clip0", "clip1", "clip2"] and (table["num_samples"] == 3).all()
    assert (table["num_fg"] > 0).all() and table["selected"].between(0, 2).all()
    reversed_order = evaluate_predictor(list(clips.items())[::-1], noisy, num_samples=3, progress=False)
    pd.testing.assert_frame_equal(table, reversed_order.iloc[::-1].reset_index(drop=True))
    other_seed = evaluate_predictor(clips, noisy, num_samples=3, seed=1, progress=False)
    assert not np.allclose(other_seed["ate"], table["ate"])


def test_summary_skips_nan_clips_and_counts_clips():
    per_clip = pd.DataFrame(
        {"clip_id": ["a", "b", "c"], "ate_dtw": [0.1, math.nan, 0.3], "fg_mask_iou": [1.0, 0.0, 0.5]}
    )
    summary = summarize(per_clip)
    assert summary["ate_dtw"] == pytest.approx(0.2) and summary["fg_mask_iou"] == pytest.approx(0.5)
    assert summary[CLIPS_ROW] == 3


def test_table_lists_metrics_with_arrows_and_marks_the_best_per_dataset():
    results = {
        "tabletop": {
            "static": {"fg_mask_iou": 0.0, "ate_dtw": 0.08, "quantize_acc_16": math.nan},
            "gt": {"fg_mask_iou": 1.0, "ate_dtw": 0.0, "quantize_acc_16": math.nan},
            "model": {"fg_mask_iou": 0.6, "ate_dtw": 0.08, "quantize_acc_16": math.nan},
        },
        "egocentric": {
            "static": {"fg_mask_iou": 0.0, "ate_dtw": 0.02, "quantize_acc_16": 0.5},
            "gt": {"fg_mask_iou": 1.0, "ate_dtw": 0.0, "quantize_acc_16": 1.0},
            "model": {"fg_mask_iou": 0.7, "ate_dtw": 0.05, "quantize_acc_16": 0.25},
        },
    }
    table = format_table(results)
    assert list(table.index) == ["fg_mask_iou ↑", "ate_dtw ↓", "quantize_acc_16 ↑", CLIPS_ROW]
    assert table.columns.names == ["dataset", "method"] and table.shape == (4, 6)
    assert table.loc["ate_dtw ↓", ("egocentric", "model")] == 0.05
    bold = best_mask(table)
    # gt is excluded from "best"; ties are all marked; an all-NaN row marks nothing
    assert bold.loc["fg_mask_iou ↑"].tolist() == [False, False, True, False, False, True]
    assert bold.loc["ate_dtw ↓", ("tabletop", "static")] and bold.loc["ate_dtw ↓", ("tabletop", "model")]
    assert (
        bold.loc["ate_dtw ↓", ("egocentric", "static")] and not bold.loc["ate_dtw ↓", ("egocentric", "model")]
    )
    assert not bold.loc["quantize_acc_16 ↑", ["tabletop"]].any().any()
    assert not bold.loc[CLIPS_ROW].any()
    markdown = table_to_markdown(table)
    assert "| fg_mask_iou ↑ | 0.0000 | 1.0000 | **0.6000** | 0.0000 | 1.0000 | **0.7000** |" in markdown
    assert "| quantize_acc_16 ↑ | – | – | – | **0.5000** | 1.0000 | 0.2500 |" in markdown
    styles = style_table(table)._compute().ctx
    assert ("font-weight", "bold") in styles[(0, 2)]
    assert ("font-weight", "bold") not in styles.get((0, 1), [])


def test_write_table_round_trips_through_csv(tmp_path):
    clips = [toy_momap(T=6, seed=i) for i in range(2)]
    per_method = evaluate_methods(
        clips, {"static": get_predictor("static"), "gt": get_predictor("gt")}, num_samples=2, progress=False
    )
    table = format_table(per_method)
    assert table.loc["fg_mask_iou ↑", "gt"] == 1.0 and table.loc["fg_mask_iou ↑", "static"] == 0.0
    assert table.loc[CLIPS_ROW].tolist() == [2.0, 2.0]
    csv_path, md_path = write_table(table, tmp_path / "tables" / "toy")
    again = pd.read_csv(csv_path, index_col=0)
    np.testing.assert_allclose(again.to_numpy(), table.to_numpy(), equal_nan=True)
    assert md_path.read_text() == table_to_markdown(table)


def test_prediction_files_round_trip_and_match_in_memory_evaluation(tmp_path):
    clips = {f"c{i}": toy_momap(T=6, seed=i) for i in range(2)}
    noisy = get_predictor("gt+noise", noise_scale=0.01)
    for clip_id, momap in clips.items():
        save_predictions(tmp_path / "noisy", clip_id, noisy(momap, 3, 5))
    from_files = evaluate_predictions(clips, tmp_path / "noisy", progress=False)
    in_memory = evaluate_predictor(clips, lambda gt, n, g: noisy(gt, n, 5), num_samples=3, progress=False)
    pd.testing.assert_frame_equal(from_files, in_memory)
    assert load_predictions(tmp_path / "noisy" / "c0.npz").shape == (3, 6, 24, 24, 3)
    with pytest.raises(DataFormatError, match=r"expected \(N, 5, 24, 24, 3\)"):
        load_predictions(tmp_path / "noisy" / "c0.npz", (5, 24, 24, 3))
    with pytest.raises(DataFormatError, match=r"no predictions for 1 of 3 clips \(e.g. c9\)"):
        evaluate_predictions({**clips, "c9": clips["c0"]}, tmp_path / "noisy", progress=False)
    save_predictions(tmp_path / "bad", "c0", np.full((2, 6, 24, 24, 3), np.nan))
    with pytest.raises(ValueError, match=r"clip c0: pred\[0\] \(sample 0\)"):
        evaluate_predictions({"c0": clips["c0"]}, tmp_path / "bad", progress=False)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two tiny test-only MoMap-Sim datasets (2 smoke clips each), written by momaplib.data."""
    root = tmp_path_factory.mktemp("data")
    for family in ("tabletop", "egocentric"):
        config = SimConfig(family=family).smoke()
        write_dataset(
            root / f"sim_{family}", config, num_clips=2, splits=(0, 0, 1), workers=0, progress=False
        )
    return [root / "sim_tabletop", root / "sim_egocentric"]


def test_eval_job_puts_datasets_side_by_side(datasets, tmp_path, capsys):
    for dataset in datasets:
        for clip_id, momap in load_split(dataset, "test"):
            save_predictions(tmp_path / "mymodel", clip_id, get_predictor("gt_time_shift")(momap, 2, 0))
    job = tyro.cli(
        EvalJob,
        args=[
            "--datasets", *map(str, datasets),
            "--predictions", str(tmp_path / "mymodel"),
            "--baselines", "static", "gt",
            "--num-samples", "2",
            "--tau-move", "0.03",
            "--verify",
            "--out", str(tmp_path / "out"),
            "--no-progress",
        ],
        config=(tyro.conf.OmitArgPrefixes,),
    )  # fmt: skip
    assert job.metrics.tau_move == 0.03
    table = job.run()
    printed = capsys.readouterr().out
    assert list(table.columns) == [(d.name, m) for d in datasets for m in ("static", "gt", "mymodel")]
    assert (table.xs("gt", axis=1, level="method").loc["fg_mask_iou ↑"] == 1).all()
    assert (table.xs("static", axis=1, level="method").loc["fg_mask_iou ↑"] == 0).all()
    assert (table.loc[CLIPS_ROW] == 2).all()
    assert (
        "| metric | sim_tabletop: static | sim_tabletop: gt | sim_tabletop: mymodel | sim_egocentric: static"
        in printed
    )
    per_clip = pd.read_csv(tmp_path / "out" / "per_clip.csv")
    assert len(per_clip) == 12 and set(per_clip["method"]) == {"static", "gt", "mymodel"}
    assert set(per_clip["clip_id"]) == {
        "tabletop_000000",
        "tabletop_000001",
        "egocentric_000000",
        "egocentric_000001",
    }
    assert (tmp_path / "out" / "table.md").read_text() == table_to_markdown(table)


def test_momap_eval_command_prints_the_table(datasets, capsys):
    main(
        [
            "eval",
            "--datasets",
            str(datasets[0]),
            "--baselines",
            "gt",
            "static",
            "--num-samples",
            "1",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert "| fg_mask_iou ↑ | 1.0000 | **0.0000** |" in printed


def test_eval_job_errors_name_what_is_missing(datasets, tmp_path):
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvalJob(datasets=(datasets[0],)).run()
    with pytest.raises(DataFormatError, match="no clips in split 'val'"):
        EvalJob(datasets=(datasets[0],), split="val", baselines=("gt",)).run()
    with pytest.raises(DataFormatError, match=r"no manifest\.jsonl"):
        EvalJob(datasets=(tmp_path,), baselines=("gt",)).run()
    with pytest.raises(DataFormatError, match="predictions folder not found"):
        EvalJob(datasets=(datasets[0],), predictions=(tmp_path / "nowhere",)).run()
    with pytest.raises(DataFormatError, match=r"no predictions for 2 of 2 clips"):
        (tmp_path / "empty").mkdir()
        EvalJob(datasets=(datasets[0],), predictions=(tmp_path / "empty",), progress=False).run()


def test_load_split_verifies_hashes(datasets, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(datasets[0], copy)
    clip_file = sorted((copy / "clips").glob("*.npz"))[0]
    momap = MoMap.load(clip_file)
    momap.prompt = "something else"
    momap.save(clip_file)  # a valid file, but not the one the manifest hashed
    assert len(load_split(copy, "test")) == 2
    with pytest.raises(DataFormatError, match="sha256"):
        load_split(copy, "test", verify=True)


def _per_clip(values: dict[str, np.ndarray], ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"clip_id": ids, **values})


def test_paired_differences_known_answers_and_the_normal_interval():
    rng = np.random.default_rng(0)
    ids = [f"clip_{i:03d}" for i in range(400)]
    base = rng.normal(0.5, 0.2, size=400)
    noise = rng.normal(0.3, 1.0, size=400)
    a = _per_clip({"fg_mask_iou": base + 0.05, "ate_dtw": base + 0.05, "epe": base + noise}, ids)
    b = _per_clip({"fg_mask_iou": base, "ate_dtw": base, "epe": base}, ids)
    # b in another order: the pairing is by clip id, not by row
    result = paired_differences(a, b.iloc[::-1].reset_index(drop=True), seed=1)
    # a constant per-clip shift: every resample has the same mean, the interval is one point
    for metric in ("fg_mask_iou", "ate_dtw"):
        assert result.loc[metric, "diff"] == pytest.approx(0.05)
        assert result.loc[metric, "low"] == pytest.approx(0.05)
        assert result.loc[metric, "high"] == pytest.approx(0.05)
        assert result.loc[metric, "clips"] == 400
    assert result.loc["fg_mask_iou", "verdict"] == "a better"  # higher is better
    assert result.loc["ate_dtw", "verdict"] == "b better"  # lower is better
    # N(0.3, 1) differences: the bootstrap interval matches mean +- 1.96 s / sqrt(n)
    mean, half = noise.mean(), 1.96 * noise.std(ddof=1) / math.sqrt(len(noise))
    assert result.loc["epe", "diff"] == pytest.approx(mean)
    assert result.loc["epe", "low"] == pytest.approx(mean - half, abs=0.015)
    assert result.loc["epe", "high"] == pytest.approx(mean + half, abs=0.015)
    assert result.loc["epe", "verdict"] == "b better"  # a's epe is higher by 0.3 +- 0.1
    # same data, same seed: the same interval
    again = paired_differences(a, b, seed=1)
    assert again.loc["epe", "low"] == result.loc["epe", "low"]


def test_paired_differences_skips_missing_values_and_rejects_bad_input():
    ids = ["a", "b", "c", "d"]
    a = _per_clip({"fg_mask_iou": np.array([0.5, np.nan, 0.7, 0.2])}, ids)
    b = _per_clip({"fg_mask_iou": np.array([0.4, 0.9, 0.8, 0.2])}, ids)
    result = paired_differences(a, b.iloc[:3])
    assert result.loc["fg_mask_iou", "clips"] == 2  # clip b has NaN, clip d only in a
    assert result.loc["fg_mask_iou", "diff"] == pytest.approx(0.0)
    assert result.loc["fg_mask_iou", "verdict"] == "no difference"
    with pytest.raises(ValueError, match="no clip_id column"):
        paired_differences(a.drop(columns="clip_id"), b)
    with pytest.raises(ValueError, match="share no clip_id"):
        paired_differences(a, b.assign(clip_id=["w", "x", "y", "z"]))
    with pytest.raises(ValueError, match="repeated clip ids"):
        paired_differences(pd.concat([a, a]), b)
    with pytest.raises(ValueError, match="confidence"):
        paired_differences(a, b, confidence=95)


def test_eval_models_shards_merge_into_one_table(tmp_path):
    import json

    script = load_benchmark("eval_models")
    assert script.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(Exception, match="K"):
            script.parse_shard(bad)
    rng = np.random.default_rng(0)
    ids = [f"tabletop_{i:06d}" for i in range(10)]
    settings = {"split": "test", "num_samples": 10, "steps": 25, "guidance": 2.0}
    rows = []
    for method, shift in (("Ours (text)", 0.1), ("Ours (no text)", 0.0)):
        values = np.linspace(0.2, 0.8, len(ids)) + shift
        columns = {"clip_id": ids, "fg_mask_iou": values, "ate_dtw": rng.random(len(ids))}
        rows.append(pd.DataFrame({**columns, "dataset": "tabletop", "method": method}))
    full = pd.concat(rows, ignore_index=True)
    folders = []
    for k in range(2):  # shard k holds every 2nd clip, as --shard k/2 does
        folder = tmp_path / f"s{k}"
        folder.mkdir()
        full[full.clip_id.isin(ids[k::2])].to_csv(folder / "per_clip.csv", index=False)
        (folder / "eval_models.json").write_text(json.dumps(settings))
        folders.append(folder)
    merged, summary = script.merge_runs(folders)
    assert summary["merged"] == [str(f) for f in folders]
    assert list(dict.fromkeys(merged.method)) == ["Ours (text)", "Ours (no text)"]
    assert len(merged) == 20 and merged.groupby("method").clip_id.apply(list).map(sorted).eq([ids, ids]).all()
    differences = script.text_differences(merged)
    assert differences.loc[differences.metric == "fg_mask_iou", "diff"].item() == pytest.approx(0.1)
    assert "text better" in script.differences_markdown(differences)
    assert script.text_differences(merged[merged.method == "Ours (text)"]) is None
    with pytest.raises(SystemExit, match="more than one folder"):
        script.merge_runs([folders[0], folders[0]])
    (folders[1] / "eval_models.json").write_text(json.dumps({**settings, "steps": 50}))
    with pytest.raises(SystemExit, match="different settings"):
        script.merge_runs(folders)
    with pytest.raises(SystemExit, match=r"no per_clip\.csv"):
        script.merge_runs([tmp_path])


def test_simulate_split_clips_skip_leaves_out_the_clips_of_an_earlier_run():
    from momaplib.data import clip_id, simulate_split_clips, split_indices
    from momaplib.sim import clip_seed, generate_clip

    config = SimConfig(family="tabletop", height=24, width=24, num_frames=4)
    clips = simulate_split_clips("tabletop", 5, config=config, skip=3)
    later = split_indices("tabletop", 5, "test")[3:]
    assert [cid for cid, _ in clips] == [clip_id("tabletop", i) for i in later]
    assert simulate_split_clips("tabletop", 5, config=config, skip=5) == []
    with pytest.raises(ValueError, match="skip"):
        simulate_split_clips("tabletop", 5, config=config, skip=6)
    # the clips are those `momap sim --seed 7` writes, and a shard takes every n-th of them
    (cid, momap), *_ = simulate_split_clips("tabletop", 5, seed=7, config=config, shard=(1, 2))
    index = split_indices("tabletop", 5, "test")[1]
    assert cid == clip_id("tabletop", index)
    np.testing.assert_array_equal(momap.xyz, generate_clip(clip_seed(7, index), config).momap.xyz)


def test_text_grounding_probe_features_and_head_shapes():
    probe = load_benchmark("probe_text_grounding")
    examples = probe.make_examples("tabletop", 4, 0, 0)
    assert examples
    for family, prompt, features, target in examples:
        assert family == "tabletop" and prompt
        assert features.shape == (len(features), probe.NUM_FEATURES) and len(features) >= 2
        assert 0 <= target < len(features)
        assert ((features[:, :3] >= 0) & (features[:, :3] <= 1)).all()  # mean colours
    head = probe.GroundingHead(text_dim=8)
    features = torch.from_numpy(examples[0][2])
    assert head(features, torch.randn(5, 8)).shape == (len(features),)
    assert head(features, torch.zeros(3, 8)).shape == (len(features),)  # an empty prompt reads nothing


def _result(seed: int, noises: tuple[float, float]) -> SamplingResult:
    """A scored SamplingResult on a simulated scene: sample i is the GT plus Gaussian noise ``noises[i]``."""
    from momaplib.sim import generate_clip

    scene = generate_clip(seed, SimConfig(family="tabletop").smoke()).momap
    generator = np.random.default_rng(seed)
    xyz = np.stack([scene.xyz + n * generator.standard_normal(scene.xyz.shape) for n in noises])
    metrics = pd.DataFrame({k: v.numpy() for k, v in sample_metrics(scene, xyz.astype(np.float32)).items()})
    metrics.index.name = "sample"
    best = select_best({k: torch.tensor(v.to_numpy()) for k, v in metrics.items()})[1]
    settings = {"num_samples": 2, "num_inference_steps": 1, "guidance_scale": 1.0, "seed": seed}
    return SamplingResult(scene, [scene, scene], xyz, scene.prompt, settings, metrics=metrics, best=best)


def test_per_scene_table_marks_the_best_method_within_each_scene_only():
    # scene a: both samples noisy; scene b: one sample is the exact GT (a perfect row no other scene has)
    runs = {"scene a": _result(1, (0.05, 0.01)), "scene b": _result(2, (0.05, 0.0))}
    table = per_scene_table(runs)
    ours = "ours (best of 2)"
    assert list(table.columns) == [(name, method) for name in runs for method in (ours, "static")]
    assert CLIPS_ROW not in table.index
    for name, run in runs.items():
        assert run.best == 1  # the less noisy sample
        for metric in ("ate_dtw", "fg_mask_iou"):
            assert table.loc[metric_label(metric), (name, ours)] == run.metrics.loc[1, metric]
        static = select_best(sample_metrics(run.scene, get_predictor("static")(run.scene, 1, 0)))[0]
        assert table.loc[metric_label("ate_dtw"), (name, "static")] == pytest.approx(static["ate_dtw"])
    assert table.loc[metric_label("ate_dtw"), ("scene b", ours)] == pytest.approx(0.0, abs=1e-6)
    assert table.loc[metric_label("ate_dtw"), ("scene a", ours)] > 1e-3
    bold = best_mask(table)
    # within each scene the model's near-GT sample beats static on ate_dtw; static is never bold there
    for name in runs:
        assert bold.loc[metric_label("ate_dtw"), (name, ours)]
        assert not bold.loc[metric_label("ate_dtw"), (name, "static")]
    # one bold cell per scene, although scene b's 0.0 is better than anything in scene a: a table-wide
    # "best" would bold scene b alone
    assert bold.loc[metric_label("ate_dtw")].groupby(level="scene").sum().tolist() == [1, 1]
    with pytest.raises(ValueError, match="have no metrics"):
        per_scene_table({"x": replace(runs["scene a"], metrics=None)})


# ----------------------------------------------------------------------------- evaluation cannot silently lie
def _toy_dataset(root):
    from tests.faults_data_eval import tiny_dataset

    root.mkdir(parents=True)
    return tiny_dataset(root)


def _save_scaled(dataset, folder, factor: float) -> None:
    for clip_id, momap in load_split(dataset, "test"):
        save_predictions(folder, clip_id, momap.xyz[None] * np.float32(factor))


def test_eval_columns_never_overwrite_each_other(tmp_path, capsys):
    first, second = _toy_dataset(tmp_path / "a" / "toy"), _toy_dataset(tmp_path / "b" / "toy")
    _save_scaled(first, tmp_path / "run1" / "preds", 1.0)  # a perfect model
    _save_scaled(first, tmp_path / "run2" / "preds", 1.05)  # a worse one, same folder name
    _save_scaled(first, tmp_path / "mine" / "gt", 1.1)  # a model folder named like the gt oracle
    job = EvalJob(
        datasets=(first, second),
        predictions=(tmp_path / "run1" / "preds", tmp_path / "run2" / "preds", tmp_path / "mine" / "gt"),
        baselines=("gt",),
        progress=False,
    )
    table = job.run()
    methods = ["gt", "run1/preds", "run2/preds", "mine/gt"]
    assert list(table.columns) == [(d, m) for d in ("a/toy", "b/toy") for m in methods]
    assert "column 'mine/gt' (the name 'gt' is taken)" in capsys.readouterr().out
    ate = table.loc[metric_label("ate")]
    assert ate[("a/toy", "run1/preds")] == 0 < ate[("a/toy", "run2/preds")] < ate[("a/toy", "mine/gt")]
    # the model folder named gt competes for bold like any model (the gt oracle never does)
    assert best_mask(table).loc[metric_label("ate"), ("a/toy", "run1/preds")]

    with pytest.raises(ValueError, match=r"predictions: .*preds is given twice"):
        replace(
            job, predictions=(tmp_path / "run1" / "preds", tmp_path / "run1" / ".." / "run1" / "preds")
        ).run()
    with pytest.raises(ValueError, match=r"datasets: .* is given twice"):
        replace(job, datasets=(first, first)).run()
    with pytest.raises(ValueError, match=r"method names \['ours'\] are given twice"):
        replace(job, pipelines=("ours=momap-diffusion", "ours=momap-diffusion:no-text")).run()
    with pytest.raises(ValueError, match=r"pipelines: labels \['gt'\] are names of reference predictors"):
        replace(job, baselines=(), pipelines=("gt=momap-diffusion",)).run()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_clips": -1}, r"max_clips: expected >= 1 or None \(all clips\), got -1"),
        ({"max_clips": 0}, r"max_clips: expected >= 1"),
        ({"num_samples": 0}, r"num_samples: expected 1\.\.1000, got 0"),
        ({"num_inference_steps": 0}, r"num_inference_steps: expected 1\.\.1000"),
        ({"guidance_scale": -1.0}, r"guidance_scale: expected 0\.\.100"),
        ({"baselines": ("gt", "oracle")}, r"baselines: unknown \['oracle'\]"),
        ({"device": "gpu"}, r"device: expected 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"),
        ({"mode": "best"}, r"mode: expected 'ate_dtw' or 'oracle'"),
    ],
)
def test_eval_settings_out_of_range_are_errors_before_any_clip_is_read(tmp_path, fields, message):
    settings = {"datasets": (tmp_path / "nowhere",), "baselines": ("gt",), "progress": False} | fields
    with pytest.raises(ValueError, match=message):
        EvalJob(**settings).run()


def test_max_clips_minus_one_no_longer_drops_a_clip(tmp_path, capsys):
    dataset = _toy_dataset(tmp_path / "toy")
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--datasets", str(dataset), "--baselines", "gt", "--max-clips", "-1", "--no-progress"])
    assert exited.value.code == 2 and "max_clips: expected >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_clips"):
        load_split(dataset, "test", max_clips=-1)
    assert len(load_split(dataset, "test", max_clips=1)) == 1


def test_predictions_scaled_by_1e20_fail_naming_the_clip_and_the_file(tmp_path, capsys):
    dataset = _toy_dataset(tmp_path / "toy")
    _save_scaled(dataset, tmp_path / "preds", 1e20)
    args = ["eval", "--datasets", str(dataset), "--predictions", str(tmp_path / "preds"), "--no-progress"]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exited.value.code == 2
    assert "clip toy_000000: pred[0] (sample 0): coordinates up to" in error
    assert str(tmp_path / "preds" / "toy_000000.npz") in error
    assert not (tmp_path / "out").exists()


def test_non_finite_metric_values_are_reported_and_fail_the_job(tmp_path, monkeypatch, capsys):
    import momaplib.eval.job as job_module

    dataset = _toy_dataset(tmp_path / "toy")
    real = job_module.evaluate_methods

    def with_an_overflow(*args, **kwargs):
        results = real(*args, **kwargs)
        results["gt"].loc[1, "ate_dtw"] = math.inf
        return results

    monkeypatch.setattr(job_module, "evaluate_methods", with_an_overflow)
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--datasets", str(dataset), "--baselines", "gt", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert "| ate_dtw ↓ | inf |" in captured.out  # the table is shown, then the job fails
    assert (
        "1 metric value(s) are not finite" in captured.err
        and "toy: gt: clip toy_000001: ate_dtw = inf" in (captured.err)
    )
    assert not (tmp_path / "out").exists()


def test_non_finite_values_tells_undefined_from_broken():
    from momaplib.metrics import non_finite_values

    rows = pd.DataFrame(
        {
            "clip_id": ["still", "moving", "broken"],
            "num_fg": [0, 5, 5],
            "fg_mask_iou": [1.0, 0.5, 0.5],
            "ate_dtw": [math.nan, 0.1, math.nan],  # NaN is "undefined" only where nothing moves
            "patch_nearest_acc": [math.nan, math.nan, 1.0],  # may be NaN anywhere (< 2 patches)
            "epe": [math.nan, 0.2, -math.inf],
        }
    )
    assert non_finite_values(rows, "m") == ["m: clip broken: ate_dtw = nan", "m: clip broken: epe = -inf"]


def test_clip_ids_cannot_lead_prediction_files_out_of_their_folder(tmp_path):
    clips = {"../escape": toy_momap(T=4)}
    with pytest.raises(DataFormatError, match=r"id: expected a clip name"):
        save_predictions(tmp_path / "preds", "../escape", clips["../escape"].xyz[None])
    assert not (tmp_path / "escape.npz").exists()
    (tmp_path / "preds").mkdir()
    toy_momap(T=4).save(tmp_path / "elsewhere.npz")
    (tmp_path / "preds" / "c0.npz").symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(DataFormatError, match=r"clip c0: predictions file: .* leads outside"):
        evaluate_predictions({"c0": toy_momap(T=4)}, tmp_path / "preds", progress=False)
    with pytest.raises(DataFormatError, match=r"id: expected a clip name"):
        evaluate_predictions(clips, tmp_path / "preds", progress=False)
