"""Reference predictors: exact outputs, seeds, and the metric trends each one is there to show."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from momaplib.baselines import PREDICTORS, get_predictor
from momaplib.baselines.simple import constant_velocity, gt_noise, gt_time_shift, gt_wrong_object, static
from momaplib.metrics import compute_metrics, sample_metrics
from tests.test_metrics import toy_momap


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_every_predictor_returns_n_samples_of_the_gt_shape(name):
    momap = toy_momap(T=6)
    samples = get_predictor(name)(momap, 3, torch.Generator().manual_seed(0))
    assert samples.shape == (3, *momap.xyz.shape) and samples.dtype == torch.float32
    again = get_predictor(name)(momap, 3, 0)  # an int seed works like a seeded generator
    assert torch.equal(samples, again)


def test_exact_outputs_of_the_deterministic_predictors():
    momap = toy_momap(T=6)
    xyz = torch.from_numpy(momap.xyz)
    assert torch.equal(static(momap, 2)[1], xyz[:1].expand_as(xyz))
    shifted = gt_time_shift(momap, 2, shift=2)[0]
    assert torch.equal(shifted[:3], xyz[:1].expand(3, *xyz.shape[1:])) and torch.equal(shifted[3:], xyz[1:4])
    assert torch.equal(gt_time_shift(momap, 1, shift=99)[0], static(momap, 1)[0])
    line = constant_velocity(momap, 1)[0]
    torch.testing.assert_close(line[4], xyz[0] + 4 * (xyz[1] - xyz[0]))
    with pytest.raises(ValueError, match="shift"):
        gt_time_shift(momap, 1, shift=-1)
    with pytest.raises(ValueError, match="num_samples"):
        static(momap, 0)
    with pytest.raises(KeyError, match="unknown reference predictor"):
        get_predictor("oracle")


def test_noise_has_the_requested_scale_and_differs_between_samples():
    momap = toy_momap(T=6)
    samples = gt_noise(momap, 2, 0, noise_scale=0.05)
    residual = samples - torch.from_numpy(momap.xyz)
    assert abs(residual.std().item() / (0.05 * momap.scene_scale) - 1) < 0.05
    assert not torch.equal(samples[0], samples[1])
    assert torch.equal(gt_noise(momap, 2, 0, noise_scale=0.0), get_predictor("gt")(momap, 2, 0))


def test_errors_grow_monotonically_with_the_noise_scale():
    momap = toy_momap()
    scales = [0.001, 0.003, 0.01, 0.03, 0.1]
    runs = [compute_metrics(momap, gt_noise(momap, 1, 7, noise_scale=scale)[0]) for scale in scales]
    for name in ("ate_dtw", "D_sig", "local_dist_diff", "ate", "epe"):
        values = [run[name] for run in runs]
        assert all(a < b for a, b in itertools.pairwise(values)), (name, values)
    for name in ("fg_mask_iou", "quantize_acc_1", "quantize_acc_4"):
        assert runs[0][name] > runs[-1][name], name


def test_wrong_object_moves_another_instance_the_same_way():
    momap = toy_momap(moving=(1,))
    sample = gt_wrong_object(momap, 1, 0)[0].numpy()
    source, other = momap.instance == 1, momap.instance != 1
    np.testing.assert_array_equal(sample[:, source], np.repeat(momap.xyz[:1, source], momap.num_frames, 0))
    moved = [
        i
        for i in (2, 3)
        if np.abs(sample[:, momap.instance == i] - momap.xyz[:1, momap.instance == i]).max() > 0
    ]
    assert len(moved) == 1
    # a pure translation: the centroid displacement of the new object equals the source's
    gt_shift = momap.xyz[:, source].mean(1) - momap.xyz[0, source].mean(0)
    new_shift = sample[:, momap.instance == moved[0]].mean(1) - sample[0, momap.instance == moved[0]].mean(0)
    np.testing.assert_allclose(new_shift, gt_shift, atol=1e-5)
    untouched = other & (momap.instance != moved[0])
    np.testing.assert_array_equal(sample[:, untouched], momap.xyz[:, untouched])


def test_wrong_object_loses_iou_and_patch_accuracy():
    momap = toy_momap()
    perfect = compute_metrics(momap, momap.xyz)
    wrong = sample_metrics(momap, gt_wrong_object(momap, 4, 0))
    assert (wrong["fg_mask_iou"] < 0.7 * perfect["fg_mask_iou"]).all()
    assert (wrong["patch_nearest_acc"] < perfect["patch_nearest_acc"]).all()


def test_wrong_object_edge_cases():
    still = toy_momap(moving=())
    assert torch.equal(gt_wrong_object(still, 2, 0), get_predictor("gt")(still, 2))
    lonely = toy_momap(moving=(1,))
    lonely.instance = np.where(lonely.instance == 1, 1, 0).astype(np.int32)
    with pytest.raises(ValueError, match="at least two instances"):
        gt_wrong_object(lonely, 1, 0)


def test_vae_reconstruction_is_the_decoded_posterior_mean_in_metres():
    from momaplib.baselines.simple import vae_reconstruction
    from momaplib.data import model_inputs
    from momaplib.momap import channels_to_xyz, denormalize_xyz
    from momaplib.vae import MoMapVAE

    momap = toy_momap(T=4, H=16, W=16)
    momap.valid[:2] = False  # invalid pixels carry no trajectory
    torch.manual_seed(0)
    vae = MoMapVAE.build(
        4, latent_channels=4, block_out_channels=(8,) * 4, layers_per_block=1, norm_num_groups=4
    )
    vae.eval()
    samples = vae_reconstruction(vae)(momap, 3, 0)
    assert samples.shape == (3, *momap.xyz.shape) and torch.equal(samples[0], samples[2])
    # independently: the model-range channels of the dataset, through encoder mean and decoder
    inputs = model_inputs(momap)
    with torch.no_grad():
        channels = vae.decode_channels(vae.encode_channels(inputs["momap"][None]))
    expected = denormalize_xyz(channels_to_xyz(channels), inputs["center"][None], inputs["scale"][None])[0]
    valid = torch.from_numpy(momap.valid)
    torch.testing.assert_close(samples[0][:, valid], expected[:, valid], rtol=1e-4, atol=1e-5)
    assert torch.all(samples[:, :, ~valid] == 0)
    assert not torch.allclose(samples[0][:, valid], torch.from_numpy(momap.xyz)[:, valid], atol=1e-3)
