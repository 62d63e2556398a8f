"""MoMap VAE: inflation is function-preserving, training overfits and resumes exactly, checkpoints resolve;
the analyses of notebook 02 (``momaplib.vae.analysis``) give known answers."""

from __future__ import annotations

import dataclasses
import gzip
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from momaplib.checkpoints import CheckpointNotFoundError, resolve_checkpoint
from momaplib.data import split_of, write_dataset
from momaplib.momap import channels_to_xyz, normalization_stats
from momaplib.sim import SimConfig, clip_seed
from momaplib.training import (
    InMemoryDataset,
    TrainConfig,
    build_accelerator,
    build_optimizer,
    build_scheduler,
    checkpoint_dir,
    fit,
)
from momaplib.vae import MoMapVAE, build_image_vae, inflate_from_image_vae
from momaplib.vae.analysis import (
    INFLATED_LAYERS,
    compare_inits,
    held_out_clips,
    inflation_checks,
    inflation_table,
    init_summary,
    load_runs,
    motion_errors,
    reconstruction_table,
    round_trip,
)  # fmt: skip
from momaplib.vae.train import momap_vae_loss, reconstruction_epe
from tests.conftest import tiny_simulation

TINY = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (diffusers zero-initialises some layers, which would hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


@pytest.fixture(scope="module")
def image_vae():
    torch.manual_seed(0)
    vae = build_image_vae(**TINY, sample_size=16).eval()
    randomize_(vae, seed=1)
    return vae


@pytest.mark.parametrize("T", [1, 4, 8])
def test_inflation_is_function_preserving_on_time_constant_momaps(image_vae, T):
    vae = inflate_from_image_vae(image_vae, num_frames=T, latent_channels=12).eval()
    X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        image_moments = image_vae.encode(X).latent_dist
        image_out = image_vae.decode(image_moments.mean).sample
        moments = vae.encode(X.repeat(1, T, 1, 1)).latent_dist
        out = vae.decode(moments.mean).sample
    assert moments.mean.shape == (2, 12, 2, 2)  # H/8 x W/8 x latent_channels
    # the image VAE's posterior sits in the first 4 latent channels, the rest is the prior
    torch.testing.assert_close(moments.mean[:, :4], image_moments.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(moments.logvar[:, :4], image_moments.logvar, rtol=1e-4, atol=1e-5)
    assert moments.mean[:, 4:].abs().max() == 0 and moments.logvar[:, 4:].abs().max() == 0
    relative = (out - image_out.repeat(1, T, 1, 1)).abs().max() / image_out.abs().max()
    assert relative < 1e-4, f"T={T}: relative error {relative:.2e}"


def test_inflated_encoder_sees_the_time_average(image_vae):
    vae = inflate_from_image_vae(image_vae, num_frames=4, latent_channels=8).eval()
    frames = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean_moving = vae.encode(frames.flatten(1, 2)).latent_dist.mean
        mean_average = image_vae.encode(frames.mean(1)).latent_dist.mean
    torch.testing.assert_close(mean_moving[:, :4], mean_average, rtol=1e-4, atol=1e-5)


def test_inflation_rejects_non_rgb_and_too_few_latent_channels(image_vae):
    with pytest.raises(ValueError, match="latent_channels: expected >= the image VAE's 4"):
        inflate_from_image_vae(image_vae, num_frames=2, latent_channels=2)
    momap_vae = MoMapVAE.build(2, latent_channels=4, **TINY)
    with pytest.raises(ValueError, match="expected an RGB AutoencoderKL"):
        inflate_from_image_vae(momap_vae, num_frames=2)


def test_encode_decode_momap_in_metres_and_shape_errors():
    torch.manual_seed(0)
    vae = MoMapVAE.build(3, latent_channels=8, **TINY).eval()
    xyz = torch.randn(2, 3, 16, 16, 3) * 0.1 + torch.tensor([0.0, 0.0, 2.0])
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    with torch.no_grad():
        latents = vae.encode_momap(xyz, valid)
        decoded = vae.decode_momap(latents.latents, latents.center, latents.scale)
    assert latents.latents.shape == (2, 8, 2, 2) and decoded.shape == xyz.shape
    # the latents carry the reference frame's normalisation ...
    center, scale = normalization_stats(xyz[:, 0], valid)
    assert torch.equal(latents.center, center) and torch.equal(latents.scale, scale)
    # ... and decoding de-normalises the decoder's model-range output with the given centre and scale
    d = torch.tensor([[0.5, -1.0, 3.0], [-2.0, 0.25, 1.0]])
    with torch.no_grad():
        model_range = channels_to_xyz(vae.decode_channels(latents.latents))
        moved = vae.decode_momap(latents.latents, center + d, scale)
        doubled = vae.decode_momap(latents.latents, center, 2 * scale)
    assert model_range.abs().amax() > 0.1  # random weights: a non-trivial output, so the checks bite
    expected = model_range * scale[:, None, None, None, None] + center[:, None, None, None, :]
    torch.testing.assert_close(decoded, expected)
    torch.testing.assert_close(moved - decoded, d[:, None, None, None, :].expand_as(decoded))
    center_b = center[:, None, None, None, :]
    torch.testing.assert_close(doubled - center_b, 2 * (decoded - center_b))
    with pytest.raises(ValueError, match=r"xyz: expected \(B, T, H, W, 3\) with T = 3"):
        vae.encode_momap(xyz[:, :2], valid)
    with pytest.raises(ValueError, match=r"valid: expected \(B, H, W\)"):
        vae.encode_momap(xyz, valid[0])
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode_channels(torch.zeros(1, 9, 12, 12))
    with pytest.raises(ValueError, match="in_channels/out_channels"):
        MoMapVAE(in_channels=10, out_channels=10)


def _batch(seed: int = 0, B: int = 4, T: int = 4, H: int = 16):
    """Smooth rigid-ish motions in model range: a learnable, non-trivial batch."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(B, 3, H // 4, H // 4, generator=g)
    base = torch.nn.functional.interpolate(base, size=(H, H), mode="bilinear", align_corners=False)
    velocity = torch.randn(B, 3, 1, 1, generator=g) * 0.1
    t = torch.arange(T).view(1, T, 1, 1, 1)
    momap = (base[:, None] + velocity[:, None] * t).flatten(1, 2)  # (B, 3T, H, W)
    return {
        "momap": momap,
        "valid": torch.ones(B, H, H, dtype=torch.bool),
        "visible": torch.ones(B, T, H, H, dtype=torch.bool),
    }


def _fit(tmp_path, steps: int, stop_after=None, lr: float = 3e-3, validate=None, **overrides):
    settings = {"lr_warmup_steps": 0, "lr_schedule": "constant", "checkpoint_every": 5, "validate_every": 0}
    config = TrainConfig(
        output_dir=tmp_path, max_steps=steps, batch_size=4, learning_rate=lr, num_workers=0, progress=False,
        **{**settings, **overrides},
    )  # fmt: skip
    accelerator = build_accelerator(config)
    torch.manual_seed(0)
    model = MoMapVAE.build(4, latent_channels=8, **TINY)
    optimizer = build_optimizer(model.parameters(), config)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = build_scheduler(optimizer, config)
    data = InMemoryDataset(_batch())
    fit(
        accelerator, config, model, optimizer, scheduler, data, momap_vae_loss(), stop_after=stop_after,
        validate=validate,
    )  # fmt: skip
    return accelerator.unwrap_model(model), [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]


def test_overfitting_one_batch_reduces_reconstruction_error_tenfold(tmp_path):
    previous = torch.set_flush_denormal(True)  # tiny gradients late in the run are slow on CPU as denormals
    try:
        model, records = _fit(tmp_path, steps=300)
    finally:
        torch.set_flush_denormal(previous and False)
    batch = _batch()
    untrained = MoMapVAE.build(4, latent_channels=8, **TINY)
    with torch.no_grad():
        before = reconstruction_epe(untrained.eval(), batch)["epe_mean"].mean()
        after = reconstruction_epe(model.eval(), batch)["epe_mean"].mean()
    assert after < before / 10, f"EPE {before:.4f} -> {after:.4f}"
    assert records[-1]["l1"] < records[0]["l1"] / 10


def test_resume_after_interruption_reproduces_the_loss_curve_exactly(tmp_path):
    _, straight = _fit(tmp_path / "straight", steps=12)
    _fit(tmp_path / "resumed", steps=12, stop_after=7)  # "killed" after step 7; last checkpoint: step 5
    (tmp_path / "resumed" / "metrics.jsonl").open("a").write('{"step": 7, "loss": 1e9}\n{"torn')  # junk
    _, resumed = _fit(tmp_path / "resumed", steps=12)
    assert [r["step"] for r in resumed] == list(range(1, 13))
    np.testing.assert_array_equal([r["loss"] for r in resumed], [r["loss"] for r in straight])


def test_resume_continues_the_warm_up_and_cosine_schedule_where_it_stopped(tmp_path):
    schedule = {"lr_warmup_steps": 3, "lr_schedule": "cosine"}
    _, straight = _fit(tmp_path / "straight", steps=12, **schedule)
    _fit(tmp_path / "resumed", steps=12, stop_after=7, **schedule)  # resumes from step 5
    _, resumed = _fit(tmp_path / "resumed", steps=12, **schedule)
    lrs = [r["lr"] for r in straight]
    assert lrs[0] < lrs[3] == pytest.approx(3e-3) and lrs[-1] < lrs[6] < lrs[3]  # warm-up, then cosine
    np.testing.assert_array_equal([r["lr"] for r in resumed], lrs)
    np.testing.assert_array_equal([r["loss"] for r in resumed], [r["loss"] for r in straight])


def test_time_limit_stop_validates_and_checkpoints_the_last_step(tmp_path):
    calls = []

    def validate(model, step):
        calls.append(step)
        return {"val/steps_seen": step}

    # a limit far below one step's time: the run stops after its first step, before max_steps
    _, records = _fit(tmp_path, steps=50, validate=validate, time_limit_minutes=1e-9, validate_every=20)
    assert calls == [1]
    assert [r["step"] for r in records] == [1] and records[0]["val/steps_seen"] == 1
    assert checkpoint_dir(tmp_path, 1).is_dir()


def test_checkpoint_resolver_bundled_names_env_override_and_errors(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts" / "momap-diffusion" / "vae"
    vae = MoMapVAE.build(2, latent_channels=4, **TINY)
    vae.save_pretrained(folder)
    monkeypatch.setenv("MOMAP_CHECKPOINTS", str(tmp_path / "ckpts"))
    assert resolve_checkpoint("momap-vae") == folder.resolve()  # a part of momap-diffusion
    loaded = MoMapVAE.from_pretrained("momap-vae")
    assert loaded.num_frames == 2
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError, match="no-such-model"):
        resolve_checkpoint("no-such-model")
    with pytest.raises(CheckpointNotFoundError, match="is a file"):
        (tmp_path / "file.txt").write_text("x")
        resolve_checkpoint(tmp_path / "file.txt")


def test_vae_jobs_smoke_end_to_end(tmp_path):
    from diffusers import AutoencoderKL

    from momaplib.vae.train import TrainImageVAEJob, TrainVAEJob

    write_dataset(tmp_path / "data", SimConfig().smoke(), num_clips=6, workers=0, progress=False)
    sets = (tmp_path / "data",)
    image = TrainImageVAEJob(sets, TrainConfig(tmp_path / "img", progress=False), smoke=True).run()
    folder = TrainVAEJob(
        sets, TrainConfig(tmp_path / "vae", progress=False), image_vae=str(image), smoke=True
    ).run()
    vae = MoMapVAE.from_pretrained(folder)
    assert vae.num_frames == SimConfig().smoke().num_frames
    assert vae.config.scaling_factor != 1.0  # re-estimated from training latents
    assert (tmp_path / "vae" / "checkpoints").is_dir() and (tmp_path / "vae" / "metrics.jsonl").is_file()

    # decoder-only fine-tuning from that VAE keeps its latent space: encoder, quant_conv and scaling
    # factor unchanged bit for bit, the decoder trained (with the displacement term on)
    tuned_folder = TrainVAEJob(
        sets, TrainConfig(tmp_path / "dec", progress=False), init="pretrained", pretrained=str(folder),
        trainable="decoder", displacement_weight=1.0, smoke=True,
    ).run()  # fmt: skip
    tuned = MoMapVAE.from_pretrained(tuned_folder)
    assert tuned.config.scaling_factor == vae.config.scaling_factor
    before, after = vae.state_dict(), tuned.state_dict()
    encoder_keys = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder_keys = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder_keys and decoder_keys and len(encoder_keys) + len(decoder_keys) == len(before)
    for key in encoder_keys:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(after[key], before[key]) for key in decoder_keys)
    records = [json.loads(line) for line in open(tmp_path / "dec" / "metrics.jsonl")]
    assert all(r["displacement"] > 0 for r in records if "displacement" in r) and "displacement" in records[0]

    # an image VAE continued from the first: its weights to start with, then trained; a MoMap VAE
    # is no RGB autoencoder to start from
    start = TrainImageVAEJob(sets, TrainConfig(tmp_path / "img2"), pretrained=str(image)).build_model(16)
    first = AutoencoderKL.from_pretrained(image).state_dict()
    assert all(torch.equal(v, first[k]) for k, v in start.state_dict().items())
    again = TrainImageVAEJob(
        sets, TrainConfig(tmp_path / "img2", progress=False), pretrained=str(image), smoke=True
    )
    continued = AutoencoderKL.from_pretrained(again.run()).state_dict()
    assert any(not torch.equal(v, first[k]) for k, v in continued.items())
    with pytest.raises(ValueError, match=r"pretrained: .*not an RGB autoencoder"):
        TrainImageVAEJob(sets, TrainConfig(tmp_path / "img3"), pretrained=str(folder)).build_model(16)


def test_vae_job_rejects_decoder_only_without_a_pretrained_vae():
    from momaplib.vae.train import TrainVAEJob

    with pytest.raises(ValueError, match="needs --init pretrained"):
        TrainVAEJob(trainable="decoder")
    with pytest.raises(ValueError, match="needs --pretrained"):
        TrainVAEJob(init="pretrained")


class _OffsetVAE(torch.nn.Module):
    """Stand-in VAE whose decoder returns the input plus a fixed offset (B, 3T, H, W)."""

    def __init__(self, offset):
        super().__init__()
        self.offset, self.x = offset, None

    def encode(self, x):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        self.x = x
        return type("Out", (), {"latent_dist": DiagonalGaussianDistribution(torch.zeros(len(x), 2, 2, 2))})

    def decode(self, z):
        return type("Out", (), {"sample": self.x + self.offset})


def test_displacement_term_counts_motion_relative_to_the_first_frame_only():
    B, T, H = 2, 3, 4
    x = _batch(B=B, T=T, H=H)
    loss_fn = momap_vae_loss(visible_weight=0.0, kl_weight=0.0, displacement_weight=1.0)
    with_velocity = momap_vae_loss(visible_weight=0.0, kl_weight=0.0, velocity_weight=1.0)
    # the same error in every frame: a shifted trajectory that does not move more or less
    constant = torch.zeros(B, T, 3, H, H)
    constant[:, :, 0] = 0.3
    _, logs = loss_fn(_OffsetVAE(constant.flatten(1, 2)), x, step=1)
    torch.testing.assert_close(logs["l1"], torch.tensor(0.3))
    torch.testing.assert_close(logs["displacement"], torch.tensor(0.0))
    torch.testing.assert_close(
        with_velocity(_OffsetVAE(constant.flatten(1, 2)), x, 1)[1]["velocity"], torch.tensor(0.0)
    )
    # a static error that grows with time: 0.1 t on x -> |x_t - x_0| errors 0.1 and 0.2 at t = 1, 2
    drift = torch.zeros(B, T, 3, H, H)
    drift[:, :, 0] = 0.1 * torch.arange(T).view(1, T, 1, 1)
    valid = x["valid"].clone()
    valid[0, :2] = False  # invalid points do not count, however wrong they are
    drift[0, :, 0, :2] = 5.0 * torch.arange(T).view(T, 1, 1)
    x["valid"] = valid
    loss, logs = loss_fn(_OffsetVAE(drift.flatten(1, 2)), x, step=1)
    torch.testing.assert_close(logs["displacement"], torch.tensor(0.15))
    torch.testing.assert_close(logs["l1"], torch.tensor(0.1))
    torch.testing.assert_close(loss, logs["l1"] + logs["displacement"])
    # frame to frame the same drift is off by 0.1 at every step
    velocity = with_velocity(_OffsetVAE(drift.flatten(1, 2)), x, 1)[1]["velocity"]
    torch.testing.assert_close(velocity, torch.tensor(0.1))


def test_object_color_error_known_answers():
    from momaplib.vae.train import object_color_error

    rgb = torch.zeros(2, 3, 8, 8)
    instance = torch.zeros(2, 8, 8, dtype=torch.long)
    instance[0, :2, :2] = 1  # object 1: 4 pixels
    instance[0, 4:, 4:] = 2  # object 2: 16 pixels
    decoded = rgb.clone()
    decoded[0, 1, :2, :2] = 0.3  # object 1: green off by 0.3 -> L1 over channels 0.1
    decoded[0, :, 4:6, 4:] = 0.2  # half of object 2 off by 0.2 in every channel -> 0.1
    decoded[0, :, 2:4, :] = 5.0  # background errors do not count
    decoded[1] = 1.0  # clip without objects -> 0
    error = object_color_error(decoded, rgb, instance)
    torch.testing.assert_close(error, torch.tensor([0.1, 0.0]))
    # a colour shift inside an object that averages out leaves its mean colour (the metric) unchanged
    balanced = rgb.clone()
    balanced[0, 0, 4:6, 4:] = 0.5
    balanced[0, 0, 6:, 4:] = -0.5
    torch.testing.assert_close(object_color_error(balanced, rgb, instance), torch.zeros(2))


def test_bundles_are_planned_below_the_file_limit_and_oversized_shards_are_named(tmp_path):
    from momaplib.training import SHARD_HEADER_ROOM, check_shard_sizes, save_bundle

    model = build_image_vae(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    limit = SHARD_HEADER_ROOM + 2**16  # tensors planned at 64 KiB per shard: several shards
    files = save_bundle(model, tmp_path / "bundle", max_shard_size=limit)
    shards = [p for p in files if p.suffix == ".safetensors"]
    assert len(shards) > 1 and max(p.stat().st_size for p in shards) <= limit
    check_shard_sizes(tmp_path / "bundle", limit)
    with pytest.raises(ValueError, match=r"shards \['diffusion_pytorch_model-00001-of-"):
        check_shard_sizes(tmp_path / "bundle", 1000)


# ----------------------------------------------------------------------------- momaplib.vae.analysis
def test_inflation_table_re_shapes_exactly_the_inflated_layers(image_vae):
    table = inflation_table(image_vae, inflate_from_image_vae(image_vae, num_frames=4, latent_channels=12))
    reshaped = table[table["status"] == "re-shaped"]
    assert set(reshaped["layer"]) == set(INFLATED_LAYERS)
    assert (table.loc[table["status"] != "re-shaped", "status"] == "copied").all()
    assert reshaped.loc["encoder.conv_in.weight", "MoMap VAE"] == (8, 12, 3, 3)  # 3 -> 3T input channels
    assert reshaped.loc["decoder.conv_out.bias", "image VAE"] == (3,)
    # one frame and the image VAE's own latent width: the inflation is the image VAE, tensor for tensor
    same = inflate_from_image_vae(image_vae, num_frames=1, latent_channels=4)
    assert (inflation_table(image_vae, same)["status"] == "copied").all()
    with torch.no_grad():
        same.decoder.mid_block.resnets[0].conv1.bias.add_(1.0)
    changed = inflation_table(image_vae, same)
    assert changed.index[changed["status"] != "copied"].tolist() == ["decoder.mid_block.resnets.0.conv1.bias"]
    assert changed.loc["decoder.mid_block.resnets.0.conv1.bias", "status"] == "re-initialised"
    other = build_image_vae((8, 16, 16, 16), layers_per_block=2, norm_num_groups=4)
    with pytest.raises(ValueError, match="has no tensors"):
        inflation_table(image_vae, inflate_from_image_vae(other, num_frames=2, latent_channels=4))


def test_inflation_checks_pass_for_an_inflation_and_name_what_breaks(image_vae):
    momap = _batch(B=1, T=4, H=16)["momap"]  # (1, 12, 16, 16): moves linearly in time
    vae = inflate_from_image_vae(image_vae, num_frames=4, latent_channels=8).eval()
    checks = inflation_checks(image_vae, vae, momap)
    assert checks["ok"].all(), checks
    assert len(checks) == 5 and checks.iloc[1]["value"] == 0  # the extra channels are exactly the prior
    # frame 2 of the decoder gets its own weights: the decoded frames differ, the encoder is untouched
    with torch.no_grad():
        vae.decoder.conv_out.bias[6:9] += 0.5
    broken = inflation_checks(image_vae, vae, momap)["ok"]
    assert broken.tolist() == [True, True, False, False, True]
    with torch.no_grad():
        vae.quant_conv.bias[4] = 0.1  # the mean of extra latent channel 4 leaves the prior
    assert not inflation_checks(image_vae, vae, momap)["ok"].iloc[1]
    with pytest.raises(ValueError, match=r"momap: expected \(1, 3T, H, W\) = \(1, 12, H, W\)"):
        inflation_checks(image_vae, vae, momap[:, :9])


def test_load_runs_and_init_summary_known_answers(tmp_path):
    records = [
        {"step": 1, "loss": 4.0},
        {"step": 2, "loss": 2.0, "val/epe_median": 0.5},
        {"step": 3, "loss": 1.0},
        {"step": 3, "loss": 0.5, "val/epe_median": 0.25},  # a repeated step: the last record counts
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + '\n{"step": 4, "lo')
    (tmp_path / "b.jsonl").write_text(json.dumps({"step": 1, "loss": 8.0}) + "\n")
    runs = load_runs({"inflate": tmp_path / "a.jsonl", "scratch": tmp_path / "b.jsonl"})
    assert runs.columns[0] == "init" and runs["init"].tolist() == ["inflate"] * 3 + ["scratch"]
    assert runs["step"].tolist() == [1, 2, 3, 1] and runs["loss"].tolist() == [4.0, 2.0, 0.5, 8.0]
    summary = init_summary(runs, first_records=2)
    assert summary.index.tolist() == ["inflate", "scratch"]
    assert summary.loc["inflate"].tolist() == [3.0, 0.5, 0.25]
    assert summary.loc["scratch", "start loss"] == 8.0 and np.isnan(summary.loc["scratch", "final val EPE"])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no records"):
        load_runs({"x": tmp_path / "empty.jsonl"})
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress((tmp_path / "a.jsonl").read_bytes()))
    compressed = load_runs({"inflate": tmp_path / "a.jsonl.gz"})
    assert compressed.equals(load_runs({"inflate": tmp_path / "a.jsonl"}))


@pytest.fixture
def one_thread():
    """Tiny models on a shared CPU: a second thread per op costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_compare_inits_trains_both_inits_alike_and_the_inflated_one_starts_lower(tmp_path, one_thread):
    # 19 clips: tabletop clips 16 and 18 fall in the val split, so validation runs
    write_dataset(tmp_path / "data", SimConfig().smoke(), num_clips=19, workers=0, progress=False)
    settings = dict(
        steps=12, image_vae_steps=20, batch_size=4, learning_rate=3e-3, latent_channels=8,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, progress=False,
        vae_options={"velocity_weight": 0.5},
    )  # fmt: skip
    runs = compare_inits([tmp_path / "data"], tmp_path / "runs", **settings)
    steps = runs.groupby("init")["step"].apply(list).to_dict()  # every step of both runs, alike
    assert steps == {"inflate": list(range(1, 13)), "scratch": list(range(1, 13))}
    validated = runs.dropna(subset=["val/epe_median"]).groupby("init")["step"].apply(list).to_dict()
    assert validated == {"inflate": [3, 6, 9, 12], "scratch": [3, 6, 9, 12]}  # every quarter
    for init in ("inflate", "scratch"):  # both learn
        loss = runs.loc[runs["init"] == init, "loss"].to_numpy()
        assert loss[-3:].mean() < loss[:3].mean(), (init, loss)
    assert runs["velocity"].notna().all()  # vae_options reach both jobs: their loss logs the velocity term
    summary = init_summary(runs, first_records=3)
    assert summary.loc["inflate", "start loss"] < summary.loc["scratch", "start loss"]
    assert (tmp_path / "runs" / "image-vae" / "model").is_dir()
    # a second call resumes the finished runs: the same records, nothing trained again
    again = compare_inits([tmp_path / "data"], tmp_path / "runs", **settings)
    pd.testing.assert_frame_equal(again, runs)
    with pytest.raises(ValueError, match="inits: expected some of"):
        compare_inits([tmp_path / "data"], tmp_path / "x", steps=1, inits=("pretrained",))


def test_motion_errors_known_answers():
    gt = tiny_simulation("tabletop", 3).clip.momap
    s, moving = gt.scene_scale, gt.moving_mask()
    assert moving.any() and (~moving).any()
    exact = motion_errors(gt, gt)
    assert exact["EPE all"] == exact["EPE still"] == exact["EPE moving"] == 0
    assert exact["GT travel"] == exact["decoded travel"] > 0.02  # moving pixels travel past tau_move
    assert exact["moving pixels"] == pytest.approx(moving.mean())
    # every point held at its reference position: a reconstruction that loses all motion
    frozen = motion_errors(gt, dataclasses.replace(gt, xyz=np.repeat(gt.xyz[:1], gt.num_frames, axis=0)))
    distance = np.linalg.norm(gt.xyz - gt.xyz[:1], axis=-1) / s  # (T, H, W): exactly the frozen error
    assert frozen["decoded travel"] == 0 and frozen["GT travel"] == exact["GT travel"]
    assert frozen["EPE moving"] == pytest.approx(np.median(distance[:, moving]))
    assert frozen["EPE still"] == pytest.approx(np.median(distance[:, gt.valid & ~moving]))
    assert frozen["EPE still"] < 0.02 < frozen["EPE moving"]
    with pytest.raises(ValueError, match="decoded: expected xyz of shape"):
        motion_errors(gt, SimpleNamespace(xyz=gt.xyz[:4]))


def test_round_trip_decodes_in_metres_and_the_table_has_a_row_per_clip():
    gt = tiny_simulation("egocentric", 1).clip.momap  # 32x32, T = 8
    torch.manual_seed(0)
    vae = MoMapVAE.build(8, latent_channels=8, **TINY).eval()
    decoded = round_trip(vae, gt)
    with torch.no_grad():
        encoded = vae.encode_momap(torch.from_numpy(gt.xyz)[None], torch.from_numpy(gt.valid)[None])
        expected = vae.decode_momap(encoded.latents, encoded.center, encoded.scale)[0].numpy()
    np.testing.assert_allclose(decoded.xyz[:, gt.valid], expected[:, gt.valid], rtol=1e-5, atol=1e-6)
    assert decoded.xyz.dtype == np.float32 and decoded.prompt == gt.prompt and decoded.rgb is gt.rgb
    table = reconstruction_table(
        vae, {"a": gt, "b": tiny_simulation("tabletop", 3).clip.momap}, progress=False
    )
    assert table.index.tolist() == ["a", "b"]
    assert table.columns.tolist() == [
        "moving pixels", "EPE all", "EPE still", "EPE moving", "GT travel", "decoded travel",
    ]  # fmt: skip
    assert (table["EPE all"] > 0).all()  # a random VAE does not reconstruct
    with pytest.raises(ValueError, match="xyz: expected"):
        round_trip(MoMapVAE.build(4, latent_channels=8, **TINY), gt)


def test_held_out_clips_are_the_test_split_of_momap_sim():
    clips = held_out_clips(2, families=("tabletop",), progress=False)
    assert list(clips) == ["tabletop_000021", "tabletop_000031"]
    assert all(split_of(name) == "test" for name in clips)
    assert clips["tabletop_000031"].seed == clip_seed(0, 31) and clips["tabletop_000031"].family == "tabletop"
    assert clips["tabletop_000021"].momap.xyz.shape == (32, 128, 128, 3)


# ----------------------------------------------------------------------------- rerun with other settings
def test_train_vae_refuses_to_continue_with_other_settings_unless_allowed(tmp_path):
    """An interrupted run rerun with another learning rate is refused before anything is read or
    written; with allow_config_change it continues and the old settings are kept."""
    from momaplib.data import write_dataset
    from momaplib.sim import SimConfig
    from momaplib.training import ResumeError
    from momaplib.vae.train import TrainVAEJob

    write_dataset(tmp_path / "data", SimConfig().smoke(), num_clips=4, workers=0, progress=False)

    def job(**train) -> TrainVAEJob:
        config = TrainConfig(tmp_path / "run", max_steps=4, checkpoint_every=2, progress=False, **train)
        return TrainVAEJob((tmp_path / "data",), config, init="scratch", smoke=True)

    job(time_limit_minutes=1e-9).run()  # stops after step 1, with a checkpoint
    folder = tmp_path / "run"
    files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(ResumeError, match=r"(?s)step_0000001.*train\.learning_rate: 0\.0002 -> 0\.001"):
        job(learning_rate=1e-3).run()
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    job(learning_rate=1e-3, allow_config_change=True).run()
    assert (folder / "train_config.0000001.json").read_bytes() == files[folder / "train_config.json"]
    assert json.loads((folder / "train_config.json").read_text())["train"]["learning_rate"] == 1e-3
    assert [json.loads(line)["step"] for line in open(folder / "metrics.jsonl")] == [1, 2, 3, 4]


def test_moving_weight_counts_moving_points_more_in_the_reconstruction_terms():
    B, T, H = 1, 3, 4
    x = _batch(B=B, T=T, H=H)
    momap = torch.zeros(B, T, 3, H, H)
    momap[:, :, 0, 0, 0] = torch.tensor([0.0, 0.5, 1.0])  # one pixel moves 1.0 >> TAU_MOVE; the rest stay
    x["momap"], x["valid"] = momap.flatten(1, 2), torch.ones(B, H, H, dtype=torch.bool)
    error = torch.zeros(B, T, 3, H, H)
    error[:, :, 0, 0, 0] = 0.4  # wrong only where it moves
    plain = momap_vae_loss(visible_weight=0.0, kl_weight=0.0)
    weighted = momap_vae_loss(visible_weight=0.0, kl_weight=0.0, moving_weight=9.0)
    n = H * H
    torch.testing.assert_close(plain(_OffsetVAE(error.flatten(1, 2)), x, 1)[1]["l1"], torch.tensor(0.4 / n))
    # the moving pixel weighs 10: 10 * 0.4 / (10 + n - 1)
    expected = torch.tensor(10 * 0.4 / (10 + n - 1))
    torch.testing.assert_close(weighted(_OffsetVAE(error.flatten(1, 2)), x, 1)[1]["l1"], expected)
