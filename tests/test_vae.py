"""MoMap VAE: inflation is function-preserving, training overfits and resumes exactly, checkpoints resolve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from momaplib.checkpoints import CheckpointNotFoundError, resolve_checkpoint
from momaplib.momap import channels_to_xyz, normalization_stats
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
from momaplib.vae.train import momap_vae_loss, reconstruction_epe

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
    from momaplib.data import write_dataset
    from momaplib.sim import SimConfig
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
