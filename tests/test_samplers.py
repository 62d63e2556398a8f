"""Quality vs steps vs time of samplers (momaplib.eval.samplers) and its figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from momaplib import viz
from momaplib.baselines import get_predictor
from momaplib.data import simulate_split_clips
from momaplib.eval.samplers import REFERENCE, compare_samplers, steps_table, timed_predictor
from momaplib.sim import SimConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_steps_table_is_relative_to_ddim_25_per_family():
    per_clip = pd.DataFrame(
        {
            "dataset": ["tabletop"] * 4, "method": ["ddim 25", "ddim 25", "dpm 4", "dpm 4"],
            "ate_dtw": [0.2, 0.4, 0.3, 0.3], "fg_mask_iou": [0.5, 0.5, 0.25, 0.25],
            "quantize_acc_16": [1.0] * 4, "patch_nearest_acc": [0.5] * 4,
        }
    )  # fmt: skip
    table = steps_table(per_clip, {"ddim 25": 100.0, "dpm 4": 20.0}).set_index("method")
    assert REFERENCE == "ddim 25" and table.loc["dpm 4", "ms_per_sample"] == 20.0
    assert table.loc["dpm 4", "ate_dtw vs ddim 25 %"] == pytest.approx(0.0)  # 0.3 against a mean of 0.3
    assert table.loc["dpm 4", "fg_mask_iou vs ddim 25 %"] == pytest.approx(-50.0)
    figure = viz.plot_steps_tradeoff(table.reset_index())
    assert len(figure.axes) == 1 and len(figure.axes[0].lines) == 2  # one line per sampler
    with pytest.raises(ValueError, match="steps: expected the columns"):
        viz.plot_steps_tradeoff(table.reset_index().drop(columns="family"))


def test_steps_table_gives_paired_intervals_in_percent_of_the_reference():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.1, 0.3, 40)
    rows = []
    for method, shift in (("ddim 25", 0.0), ("dpm 4", 0.02), ("unipc 4", 0.0)):
        ate = reference + shift + (rng.normal(0, 0.01, 40) if method == "unipc 4" else 0)
        other = {"fg_mask_iou": 0.5, "quantize_acc_16": 0.5, "patch_nearest_acc": 0.5}
        rows.append(
            pd.DataFrame(
                {"dataset": "tabletop", "method": method, "clip_id": range(40), "ate_dtw": ate, **other}
            )
        )
    table = steps_table(pd.concat(rows), {}).set_index("method")
    column = "ate_dtw vs ddim 25 %"
    exact = 100 * 0.02 / reference.mean()  # a constant shift: the interval is the shift itself
    columns = [column + " low", column, column + " high"]
    assert table.loc["dpm 4", columns].tolist() == pytest.approx([exact] * 3)
    low, mid, high = table.loc["unipc 4", columns]
    assert low < mid < high and low < 0 < high  # noise around the reference: the interval spans 0
    assert table.loc["ddim 25", [column + " low", column + " high"]].tolist() == [0.0, 0.0]
    assert column + " low" not in steps_table(pd.concat(rows).drop(columns="clip_id"), {}).columns


def test_compare_samplers_scores_paired_clips_and_times_every_call_but_the_warm_up():
    config = SimConfig(height=16, width=16, num_frames=4)
    clips = {f: simulate_split_clips(f, 2, config=config) for f in ("tabletop", "egocentric")}
    times = {"static 1": [], "gt 1": []}
    methods = {name: timed_predictor(get_predictor(name.split()[0]), times[name]) for name in times}
    per_clip, ms = compare_samplers(clips, methods, times, num_samples=2, progress=False)
    assert len(per_clip) == 2 * 2 * 2 and set(per_clip["dataset"]) == {"tabletop", "egocentric"}
    assert all(len(values) == 4 for values in times.values())  # 2 clips x 2 families, no warm-up
    assert set(ms) == set(times) and all(value >= 0 for value in ms.values())
    gt = per_clip[per_clip["method"] == "gt 1"]
    assert (gt["ate_dtw"] == 0).all()  # the same clips for every method: gt is exact on each


def test_the_cards_step_table_is_the_committed_sampler_csv():
    from pathlib import Path

    from momaplib.eval.samplers import steps_markdown

    root = Path(__file__).resolve().parents[1]
    steps = pd.read_csv(root / "checkpoints/logs/sampler_steps.csv")
    card = (root / "checkpoints/README.md").read_text()
    section = card.split("### Fewer denoising steps")[1].split("\n#")[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith(("| ", "|---")))
    assert table == steps_markdown(steps)
    assert len(steps) == 2 * len(table.splitlines()[2:]) >= 24  # both families, every row shown


def test_eval_schedulers_merges_finished_shards_with_the_parts_of_a_stopped_one(tmp_path, monkeypatch):
    import json

    from momaplib.eval.parts import evaluate_in_parts
    from tests.scripts import BENCHMARKS, load_benchmark

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_benchmark("eval_schedulers")
    settings = {"split": "test", "num_samples": 10, "guidance": None, "device": "cuda"}

    def rows(clips):
        return pd.DataFrame({"dataset": "tabletop", "method": "ddim 25", "clip_id": clips, "ate_dtw": 0.2})

    done = tmp_path / "s0"
    done.mkdir()
    rows([0, 2]).to_csv(done / "per_clip.csv", index=False)
    run = {"ms_per_sample": {"ddim 25": 10.0}, "timed_calls": {"ddim 25": 2}, "settings": settings}
    (done / "eval_schedulers.json").write_text(json.dumps(run))
    stopped = tmp_path / "s1"  # one part of two finished, then the run was stopped
    evaluate_in_parts(stopped, ["tabletop-000"], lambda name: (rows([1]), {
        "ms_per_sample": {"ddim 25": 40.0}, "timed_calls": {"ddim 25": 1}}), settings)  # fmt: skip
    per_clip, summary = script.merge([done, stopped])
    assert sorted(per_clip["clip_id"]) == [0, 1, 2]
    assert summary["ms_per_sample"]["ddim 25"] == pytest.approx((2 * 10 + 40) / 3)  # call-weighted
    assert summary["timed_calls"]["ddim 25"] == 3
    with pytest.raises(SystemExit, match="different settings"):
        other = tmp_path / "s2"
        evaluate_in_parts(
            other, ["tabletop-000"], lambda name: (rows([3]), None), {**settings, "device": "cpu"}
        )
        script.merge([done, other])
    with pytest.raises(SystemExit, match="more than one folder"):
        script.merge([done, done])
