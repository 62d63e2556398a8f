"""GeneralFlow-style baselines: the point-cloud operations against brute force, the CVAE's shapes,
each variant training a few steps and sampling whole MoMaps through the best-of-N harness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momaplib.baselines.gflow import VARIANTS, ball_query, build_gflow, farthest_point_sample, interpolate
from momaplib.baselines.gflow_train import TrainGFlowJob, gflow_batch, gflow_predictor, load_gflow
from momaplib.data import model_inputs, simulate_split_clips
from momaplib.metrics import evaluate_predictor
from momaplib.sim import SimConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_farthest_point_sampling_picks_the_farthest_point_each_time():
    points = torch.rand(2, 200, 3, generator=torch.Generator().manual_seed(0))
    index = farthest_point_sample(points, 10)
    for b in range(2):
        chosen = [0]
        for _ in range(9):  # brute force: the point farthest from everything chosen so far
            distance = torch.cdist(points[b], points[b, chosen]).min(1).values
            chosen.append(int(distance.argmax()))
        assert index[b].tolist() == chosen
    assert len(set(index[0].tolist())) == 10


def test_ball_query_keeps_points_in_the_ball_and_pads_with_the_nearest():
    points = torch.tensor([[[0.0, 0, 0], [0.05, 0, 0], [0.5, 0, 0], [2.0, 0, 0]]])
    index = ball_query(torch.tensor([[[0.0, 0, 0]]]), points, radius=0.1, k=3)
    assert index[0, 0].tolist() == [0, 1, 0]  # two in the ball, the third slot repeats the nearest


def test_interpolation_gives_back_a_feature_at_its_own_centre():
    centres = torch.rand(1, 20, 3, generator=torch.Generator().manual_seed(1))
    features = torch.randn(1, 20, 5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(interpolate(centres, centres, features), features, atol=1e-5, rtol=1e-5)


def test_variants_have_the_papers_shapes():
    assert build_gflow("gflow-original", 32).config.horizon == 31
    assert build_gflow("gflow-rollout", 32).config.horizon == 4
    extend = build_gflow("gflow-extend", 32).config
    assert (extend.latent_dim, extend.semantic_colours, extend.levels) == (32, True, 3)
    assert extend.query_chunk > VARIANTS["gflow-original"].query_chunk
    with pytest.raises(ValueError, match="variant: expected one of"):
        build_gflow("gflow-giant", 32)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_trains_and_samples_whole_momaps(variant, tmp_path):
    sim = SimConfig().smoke()
    clips = simulate_split_clips("tabletop", 3, config=sim, split="train", progress=False)
    items = [model_inputs(gt) for _, gt in clips]
    columns = {
        key: torch.stack([item[key] for item in items]) for key in ("momap", "rgb", "instance", "valid")
    }
    from momaplib.training import InMemoryDataset, TrainConfig

    folder = TrainGFlowJob(
        train=TrainConfig(tmp_path / variant, progress=False, num_workers=0), variant=variant, smoke=True
    ).run(InMemoryDataset(columns))
    model = load_gflow(folder)
    batch = gflow_batch({k: v[:2] for k, v in columns.items()}, model, torch.Generator().manual_seed(0))
    horizon = model.config.horizon
    assert batch["target"].shape == (2, model.config.query_chunk, horizon, 3)
    assert batch["scene"].shape == (2, model.config.scene_points, 3)
    # sampling: every valid pixel gets a trajectory that starts at its t = 0 point
    (_, gt), *_ = simulate_split_clips("tabletop", 1, config=sim, split="test", progress=False)
    samples = gflow_predictor(model, chunk=64)(gt, 2, torch.Generator().manual_seed(0))
    assert samples.shape == (2, *gt.xyz.shape) and torch.isfinite(samples).all()
    np.testing.assert_allclose(
        samples[:, 0][:, gt.valid].numpy(),
        np.broadcast_to(gt.xyz[0][gt.valid], (2, gt.valid.sum(), 3)),
        atol=1e-4,
    )
    assert not samples[:, :, ~gt.valid].any()
    assert not torch.equal(samples[0], samples[1])  # two draws of z
    rows = evaluate_predictor([("c", gt)], gflow_predictor(model, chunk=64), num_samples=2, progress=False)
    assert np.isfinite(rows["ate_dtw"]).all()


def test_one_batch_overfitting_drives_the_cvae_loss_down():
    from momaplib.baselines.gflow import GFlowModel, gflow_loss

    sim = SimConfig().smoke()
    items = [model_inputs(gt) for _, gt in simulate_split_clips("egocentric", 2, config=sim, progress=False)]
    columns = {
        key: torch.stack([item[key] for item in items]) for key in ("momap", "rgb", "instance", "valid")
    }
    torch.manual_seed(0)
    model = GFlowModel(horizon=sim.num_frames - 1, width=32, scene_points=64, query_chunk=64)
    batch = gflow_batch(columns, model, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, logs = gflow_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(logs["l1"]))
    assert losses[-1] < 0.5 * losses[0]


def test_train_gflow_on_clips_in_memory_and_the_tables_source_loads_it(tmp_path):
    from momaplib.baselines.gflow_train import train_gflow_on_clips
    from momaplib.eval.paper import method_predictor

    sim = SimConfig().smoke()
    clips = simulate_split_clips("tabletop", 2, config=sim, split="train", progress=False)
    folder = train_gflow_on_clips(clips, "gflow-rollout", tmp_path / "g", smoke=True)
    assert load_gflow(folder).config.horizon == 4  # the rollout variant's step
    (_, gt), *_ = simulate_split_clips("tabletop", 1, config=sim, split="test", progress=False)
    samples = method_predictor(f"gflow:{folder}")(gt, 2, 0)
    assert samples.shape == (2, *gt.xyz.shape) and torch.isfinite(samples).all()
    with pytest.raises(ValueError, match="clips: expected at least one"):
        train_gflow_on_clips([], "gflow-original", tmp_path / "none")


def test_reported_samples_are_each_methods_best_of_n_by_ate_dtw():
    from momaplib.eval.paper import method_predictor, reported_samples

    (_, gt), *_ = simulate_split_clips(
        "tabletop", 1, config=SimConfig().smoke(), split="test", progress=False
    )
    static = torch.from_numpy(np.broadcast_to(gt.xyz[:1], gt.xyz.shape).copy())

    def mixed(clip, num_samples, seed):  # the GT hidden among static copies
        return torch.stack([static, torch.from_numpy(gt.xyz), static])

    reported = reported_samples(gt, {"mixed": mixed, "static": method_predictor("static")}, num_samples=3)
    np.testing.assert_array_equal(reported["mixed"], gt.xyz)
    np.testing.assert_array_equal(reported["static"], static.numpy())
