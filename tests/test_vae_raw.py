"""The "no VAE" ablation's codec (``momaplib.vae.raw``) and a diffusion model trained on raw MoMaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momaplib.vae import RawMoMapCodec, load_momap_codec


def test_the_raw_codec_is_an_exact_rearrangement_with_fitted_statistics(tmp_path):
    generator = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 3.0, 12)[None, :, None, None]
    momaps = torch.randn(3, 12, 16, 24, generator=generator) * scale + 2.0
    momaps[:, :, :2] = 0.0  # invalid pixels are exactly 0 and stay out of the statistics
    codec = RawMoMapCodec(in_channels=12, factor=8).fit(momaps)
    valid = momaps[:, :, 2:]
    expected_std = valid.permute(1, 0, 2, 3).reshape(12, -1).std(dim=1)
    torch.testing.assert_close(codec.channel_std, expected_std)
    torch.testing.assert_close(codec.channel_mean, torch.full((12,), 2.0), atol=0.1, rtol=0)

    latents = codec.encode_channels(momaps)
    assert latents.shape == (3, 12 * 64, 2, 3) and codec.latent_channels == 12 * 64
    # each latent cell holds its 8x8 pixel block: channel c * 64 + 8 i + j is pixel (8 h + i, 8 w + j)
    c, i, j, h, w = 5, 3, 6, 1, 2
    standardised = (momaps[0, c, 8 * h + i, 8 * w + j] - codec.channel_mean[c]) / codec.channel_std[c]
    torch.testing.assert_close(latents[0, c * 64 + 8 * i + j, h, w], standardised)
    torch.testing.assert_close(codec.decode_channels(latents), momaps, atol=1e-5, rtol=0)
    on_valid = latents.reshape(3, 12, 64, 2, 3)[:, :, :, 1:]  # the latent row below the zero rows
    assert abs(on_valid.std().item() - 1.0) < 0.1  # standardised: about unit variance

    codec.save_pretrained(tmp_path / "raw")
    loaded = load_momap_codec(tmp_path / "raw")
    assert isinstance(loaded, RawMoMapCodec) and loaded.num_frames == 4
    torch.testing.assert_close(loaded.encode_channels(momaps), latents)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"in_channels": 10}, "in_channels: expected 3T"), ({"factor": 0}, "factor: expected a positive")],
)
def test_the_raw_codec_refuses_bad_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        RawMoMapCodec(**fields)


def test_the_raw_codec_refuses_bad_inputs():
    codec = RawMoMapCodec(in_channels=6, factor=4)
    with pytest.raises(ValueError, match=r"x: expected \(B, 6, H, W\)"):
        codec.encode_channels(torch.zeros(1, 9, 8, 8))
    with pytest.raises(ValueError, match="multiples of 4"):
        codec.encode_channels(torch.zeros(1, 6, 10, 8))
    with pytest.raises(ValueError, match=r"latents: expected \(B, 96"):
        codec.decode_channels(torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match="every pixel is invalid"):
        codec.fit(torch.zeros(1, 6, 8, 8))


def test_a_diffusion_model_trains_and_samples_on_raw_momaps(tmp_path):
    from momaplib.data import MoMapDataset, collate, write_dataset
    from momaplib.diffusion.latents import load_latent_set
    from momaplib.diffusion.pipeline import MoMapPipeline
    from momaplib.diffusion.train import TrainDiffusionJob
    from momaplib.sim import SimConfig, simulate
    from momaplib.training import TrainConfig
    from tests.test_diffusion import _tiny_frozen_models

    sim = SimConfig().smoke()
    write_dataset(tmp_path / "data", sim, num_clips=6, workers=0, progress=False)
    _, image_vae = _tiny_frozen_models(tmp_path, sim.num_frames)
    folder = TrainDiffusionJob(
        datasets=(tmp_path / "data",), train=TrainConfig(tmp_path / "run", progress=False, num_workers=0),
        vae="raw", image_vae=image_vae, text_encoder="none:16", num_val_clips=0, smoke=True,
        bundle_dir=tmp_path / "bundle",
    ).run()  # fmt: skip
    pipeline = MoMapPipeline.from_pretrained(folder)
    assert isinstance(pipeline.vae, RawMoMapCodec)
    # the fp16 bundle holds the codec's statistics (buffers: it has no parameters)
    from safetensors.torch import load_file

    stored = load_file(tmp_path / "bundle" / "vae" / "diffusion_pytorch_model.safetensors")
    assert {value.dtype for value in stored.values()} == {torch.float16}
    bundled = MoMapPipeline.from_pretrained(tmp_path / "bundle").vae
    assert isinstance(bundled, RawMoMapCodec)
    torch.testing.assert_close(bundled.channel_std.float(), pipeline.vae.channel_std, rtol=1e-3, atol=0)
    T = sim.num_frames
    assert pipeline.unet.config.out_channels == 3 * T * 64  # the MoMap's 8x8 blocks, no compression
    cache = load_latent_set(tmp_path / "run" / "latents_train.safetensors")
    assert cache.latents.dtype == torch.float16
    # the cache holds the clips themselves: decoding a cached latent gives the clip's MoMap back
    fitted = load_momap_codec(tmp_path / "run" / "raw_vae")
    torch.testing.assert_close(fitted.channel_std, pipeline.vae.channel_std)
    train = MoMapDataset(tmp_path / "data", "train")
    first = collate([next(item for item in train if item["id"] == cache.ids[0])])["momap"]
    decoded = fitted.decode_channels(cache.latents[:1].float())
    assert first.abs().max() > 0.05
    torch.testing.assert_close(decoded, first.float(), atol=2e-3 * float(fitted.channel_std.max()), rtol=0)

    gt = simulate(0, sim).clip.momap
    output = pipeline(
        gt.rgb, xyz=gt.xyz[0], instance_map=gt.instance, K=gt.K, num_samples=2, num_inference_steps=2,
        progress=False,
    )  # fmt: skip
    assert output.xyz.shape == (2, T, sim.height, sim.width, 3) and np.isfinite(output.xyz).all()
