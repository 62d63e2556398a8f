"""MoMap diffusion: UNet inflation, conditioning, text encoders, the pipeline, training."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler

from momaplib.diffusion.conditioning import condition_latents, instance_colors
from momaplib.diffusion.text import load_text_encoder
from momaplib.diffusion.unet import build_unet, inflate_unet
from momaplib.vae import build_image_vae

TINY_UNET = {
    "block_out_channels": (32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": 4,
}


def tiny_image_vae():
    """A random 3 -> 4 channel image VAE that downsamples by 8."""
    return build_image_vae(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)


def tiny_momap_vae(num_frames: int):
    """A random MoMap VAE for T frames: 3T -> 8 latent channels, downsampling by 8."""
    from momaplib.vae import MoMapVAE

    return MoMapVAE.build(
        num_frames=num_frames, latent_channels=8, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4,
    )  # fmt: skip


def tiny_image_unet(cross_attention_dim: int = 16):
    torch.manual_seed(0)
    return build_unet(
        latent_channels=4, condition_channels=0, cross_attention_dim=cross_attention_dim, **TINY_UNET
    )


def randomize_(module: torch.nn.Module, seed: int = 1) -> None:
    """Gives every parameter random values (diffusers zero-inits some output layers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


# ----------------------------------------------------------------------------- UNet inflation
def test_inflate_unet_keeps_every_other_weight():
    image_unet = tiny_image_unet()
    randomize_(image_unet)
    unet = inflate_unet(image_unet, in_channels=32 + 12, out_channels=32)
    assert unet.config.in_channels == 44 and unet.config.out_channels == 32
    old, new = image_unet.state_dict(), unet.state_dict()
    assert old.keys() == new.keys()
    resized = {"conv_in.weight", "conv_out.weight", "conv_out.bias"}
    for name in old.keys() - resized:
        assert torch.equal(old[name], new[name]), name
    assert new["conv_in.weight"].shape == (32, 44, 3, 3)
    # the report notebook 03 shows: every weight kept but the two re-mapped convolutions
    from momaplib.diffusion.unet import inflation_report

    rows = {row["name"]: row for row in inflation_report(image_unet, unet)}
    assert {name for name, row in rows.items() if row["status"] != "kept"} == resized
    assert {rows[name]["status"] for name in resized} == {"re-mapped"}
    assert sum(row["parameters"] for row in rows.values()) == unet.num_parameters()
    with torch.no_grad():
        unet.mid_block.resnets[0].conv1.weight.add_(1.0)  # as training would
    assert (
        inflation_report(image_unet, unet)[list(rows).index("mid_block.resnets.0.conv1.weight")]["status"]
        == "changed"
    )


def test_inflated_unet_computes_the_image_unet_on_the_rgb_latent():
    image_unet = tiny_image_unet()
    randomize_(image_unet)
    unet = inflate_unet(image_unet, in_channels=32 + 12, out_channels=32)
    generator = torch.Generator().manual_seed(2)
    rgb_latent = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 3, 16, generator=generator)
    # any noisy MoMap latent and other conditions: their conv_in weights start at zero
    others = torch.randn(2, 44, 8, 8, generator=generator)
    others[:, 32:36] = rgb_latent
    with torch.no_grad():
        expected = image_unet(rgb_latent, 10, encoder_hidden_states=text).sample
        got = unet(others, 10, encoder_hidden_states=text).sample
    for group in range(8):
        torch.testing.assert_close(got[:, 4 * group : 4 * group + 4], expected, rtol=1e-4, atol=1e-5)


def test_duplicated_input_reads_the_noisy_latent_as_the_image_unet_reads_rgb():
    """Marigold's recipe: the kernel on the noisy latent too, every copy divided by their number."""
    image_unet = tiny_image_unet()
    randomize_(image_unet)
    unet = inflate_unet(image_unet, in_channels=32 + 12, out_channels=32, noisy_input="duplicate")
    kernel = image_unet.conv_in.weight
    torch.testing.assert_close(unet.conv_in.weight[:, 32:36], kernel / 9)
    torch.testing.assert_close(unet.conv_in.weight[:, 4:8], kernel / 9)
    assert not unet.conv_in.weight[:, 36:].any()  # instance, XYZ: still zero
    generator = torch.Generator().manual_seed(3)
    rgb_latent = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 3, 16, generator=generator)
    inputs = torch.randn(2, 44, 8, 8, generator=generator)
    inputs[:, :32] = rgb_latent.repeat(1, 8, 1, 1)  # the noisy latent: the RGB latent, repeated
    inputs[:, 32:36] = rgb_latent
    with torch.no_grad():
        expected = image_unet(rgb_latent, 10, encoder_hidden_states=text).sample
        got = unet(inputs, 10, encoder_hidden_states=text).sample
    torch.testing.assert_close(got[:, 8:12], expected, rtol=1e-4, atol=1e-5)
    # zero: the noisy latent does not change the output at initialisation; duplicate: it does
    zero = inflate_unet(image_unet, in_channels=32 + 12, out_channels=32)
    other = inputs.clone()
    other[:, :32] = torch.randn(2, 32, 8, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(zero(other, 10, encoder_hidden_states=text).sample,
                                   zero(inputs, 10, encoder_hidden_states=text).sample)  # fmt: skip
        assert not torch.allclose(unet(other, 10, encoder_hidden_states=text).sample, got, atol=1e-3)
    with pytest.raises(ValueError, match="noisy_input"):
        inflate_unet(image_unet, in_channels=44, out_channels=32, noisy_input="copy")


def test_a_linked_latent_cache_is_the_one_a_job_reads_and_is_shared(tmp_path):
    from momaplib.diffusion.prepare import latent_cache_path, link_latent_cache
    from momaplib.diffusion.train import TrainDiffusionJob
    from momaplib.training import TrainConfig

    cache = tmp_path / "latents/vae.safetensors"
    cache.parent.mkdir()
    cache.write_bytes(b"weights")
    cache.with_suffix(".json").write_text("{}")
    job = TrainDiffusionJob(train=TrainConfig(tmp_path / "run"))
    link_latent_cache(cache, tmp_path / "run")
    path = latent_cache_path(job)
    assert path.read_bytes() == b"weights" and path.stat().st_ino == cache.stat().st_ino  # no copy
    assert path.with_suffix(".json").stat().st_ino == cache.with_suffix(".json").stat().st_ino
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"other")
    other.with_suffix(".json").write_text("{}")
    link_latent_cache(other, tmp_path / "run")  # a cache already there is kept
    assert path.read_bytes() == b"weights"


def test_inflation_probe_shrinks_and_perturbs_and_bins():
    from tests.scripts import load_benchmark

    probe = load_benchmark("probe_inflation")
    unet = tiny_image_unet()
    randomize_(unet)
    before = {name: value.clone() for name, value in unet.state_dict().items()}
    probe.shrink_perturb(unet, shrink=0.5, perturb=0.0)
    for name, value in unet.state_dict().items():
        torch.testing.assert_close(value, before[name] * 0.5)
    probe.shrink_perturb(unet, shrink=1.0, perturb=0.1, seed=1)
    moved = torch.cat([(unet.state_dict()[n] - before[n] * 0.5).flatten() for n in before])
    assert 0.08 < float(moved.std()) < 0.12  # the noise, nothing else
    with pytest.raises(ValueError, match="shrink"):
        probe.shrink_perturb(unet, shrink=0.0, perturb=0.1)
    assert probe.binned([1.0, 3.0, 2.0, 4.0, 6.0], 2) == [2.0, 3.0, 6.0]


def _save_sd_style_pipeline(folder, cross_attention_dim: int = 16):
    """Saves a tiny randomly initialised Stable-Diffusion-style folder (model_index.json, unet/, vae/)."""
    image_unet = tiny_image_unet(cross_attention_dim)
    randomize_(image_unet)
    image_unet.save_pretrained(folder / "unet")
    tiny_image_vae().save_pretrained(folder / "vae")
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}  # fmt: skip
    (folder / "model_index.json").write_text(json.dumps(index))
    return image_unet


def test_train_job_inflates_a_saved_sd_style_pipeline_and_records_it(tmp_path):
    from momaplib.diffusion.train import TrainDiffusionJob, _build_model, init_source

    image_unet = _save_sd_style_pipeline(tmp_path / "sd")
    job = TrainDiffusionJob(init="inflate", image_unet=str(tmp_path / "sd"))
    unet = _build_model(job, 8, 16, 8)  # read back through from_pretrained of the 'unet' subfolder
    assert unet.config.in_channels == 8 + 12 and unet.config.out_channels == 8
    generator = torch.Generator().manual_seed(4)
    rgb_latent, text = (
        torch.randn(2, 4, 8, 8, generator=generator),
        torch.randn(2, 3, 16, generator=generator),
    )
    inputs = torch.randn(2, 20, 8, 8, generator=generator)  # any noisy latent, instance and xyz latents
    inputs[:, 8:12] = rgb_latent
    with torch.no_grad():
        expected = image_unet(rgb_latent, 10, encoder_hidden_states=text).sample
        got = unet(inputs, 10, encoder_hidden_states=text).sample
    torch.testing.assert_close(got[:, :4], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[:, 4:], expected, rtol=1e-4, atol=1e-5)
    assert init_source(job) == f"inflate:{tmp_path / 'sd'}"

    # another text width (MiniLM's 384 against CLIP's 768 in SD): a learnt projection, the rest kept
    wider = _build_model(job, 8, 12, 8)
    assert wider.encoder_hid_proj.weight.shape == (16, 12)
    kept = {
        k: v
        for k, v in wider.state_dict().items()
        if not k.startswith(("conv_in", "conv_out", "encoder_hid"))
    }
    assert kept and all(torch.equal(v, image_unet.state_dict()[k]) for k, v in kept.items())
    with torch.no_grad():
        assert wider(inputs, 10, encoder_hidden_states=torch.randn(2, 3, 12)).sample.shape == (2, 8, 8, 8)


def test_inflate_unet_rejects_a_slot_outside_the_input():
    with pytest.raises(ValueError, match="in_channels"):
        inflate_unet(tiny_image_unet(), in_channels=34, out_channels=32)


# ----------------------------------------------------------------------------- conditioning
def test_instance_colors_paint_each_id_one_colour_and_check_dtype():
    instance = torch.tensor([[[0, 1], [2, 1]]])
    colours = instance_colors(instance, torch.Generator().manual_seed(0))
    assert colours.shape == (1, 3, 2, 2)
    assert torch.equal(colours[0, :, 0, 1], colours[0, :, 1, 1])
    assert not torch.equal(colours[0, :, 0, 0], colours[0, :, 1, 0])
    assert colours.abs().max() <= 1
    with pytest.raises(TypeError, match="instance"):
        instance_colors(instance.float())


def test_condition_latents_stack_three_image_latents():
    torch.manual_seed(0)
    image_vae = tiny_image_vae()
    rgb, xyz = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 3, 16, 16)
    instance = torch.randint(0, 3, (2, 16, 16))
    latents = condition_latents(image_vae, rgb, instance, xyz, torch.Generator().manual_seed(0))
    assert latents.shape == (2, 12, 2, 2)
    expected_rgb = image_vae.encode(rgb).latent_dist.mean * image_vae.config.scaling_factor
    torch.testing.assert_close(latents[:, :4], expected_rgb)
    with pytest.raises(ValueError, match="share"):
        condition_latents(image_vae, rgb, instance[:, :8], xyz)


# ----------------------------------------------------------------------------- text
def test_minilm_text_encoder_is_fixed_length_and_separates_prompts():
    encoder = load_text_encoder("minilm")
    embeddings = encoder(["push the red block to the left", "push the red block to the right", ""])
    assert embeddings.shape == (3, encoder.max_length, 384)
    assert not torch.allclose(embeddings[0], embeddings[1])
    again = encoder(["push the red block to the left"])
    torch.testing.assert_close(again[0], embeddings[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="list"):
        encoder("one string")


def test_none_text_encoder_gives_one_zero_token():
    encoder = load_text_encoder("none:16")
    assert torch.equal(encoder(["a", "b"]), torch.zeros(2, 1, 16))
    with pytest.raises(ValueError, match="text encoder"):
        load_text_encoder("bert")


def test_table_text_encoder_gives_back_the_encoders_embeddings(tmp_path):
    from momaplib.diffusion.text import save_text_table

    minilm = load_text_encoder("minilm")
    prompts = ["", "push the red block left", "into the blue box, put the red cube"]
    save_text_table(minilm, [*prompts, prompts[1]], tmp_path / "t.safetensors", dtype=torch.float32)
    table = load_text_encoder(f"table:{tmp_path / 't.safetensors'}")
    expected = minilm(prompts)
    assert table.dim == 384 and table.max_length == 32
    torch.testing.assert_close(table(prompts[::-1]), expected.flip(0), rtol=0, atol=0)  # exact, any order
    assert (tmp_path / "t.safetensors").stat().st_size < 0.5 * expected.numel() * 4  # padding not stored
    with pytest.raises(KeyError, match="prompt 'lift the ball' is not in the table"):
        table(["lift the ball"])


# ----------------------------------------------------------------------------- pipeline
T_TINY = 2


@pytest.fixture(scope="module")
def tiny_pipeline():
    from momaplib.diffusion.pipeline import MoMapPipeline

    torch.manual_seed(0)
    vae = tiny_momap_vae(T_TINY)
    image_vae = tiny_image_vae()
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    randomize_(unet, seed=3)
    scheduler = DDIMScheduler(
        num_train_timesteps=100, prediction_type="v_prediction", timestep_spacing="trailing"
    )
    return MoMapPipeline(unet=unet, vae=vae, image_vae=image_vae, scheduler=scheduler, text_encoder="none:16")


def scene(seed: int = 0, size: int = 16):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    xyz = np.concatenate([rng.normal(0, 0.2, (size, size, 2)), rng.uniform(0.8, 1.2, (size, size, 1))], -1)
    instance = (np.arange(size)[None, :] >= size // 2).repeat(size, 0).astype(np.int32)
    return image, xyz.astype(np.float32), instance


def test_pipeline_output_shapes_and_metric_units(tiny_pipeline):
    from momaplib.geometry import depth_to_xyz, pixel_grid, project

    image, _, instance = scene()
    # a pinhole XYZ map: every point lies on the ray of its pixel centre under K_true
    K_true = np.array([[20.0, 0.0, 7.5], [0.0, 18.0, 8.25], [0.0, 0.0, 1.0]], dtype=np.float32)
    depth = np.random.default_rng(1).uniform(0.8, 1.2, (16, 16)).astype(np.float32)
    xyz = depth_to_xyz(depth, K_true)

    def sample(xyz):
        return tiny_pipeline(
            image,
            xyz=xyz,
            instance_map=instance,
            num_samples=3,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )

    output = sample(xyz)
    assert output.xyz.shape == (3, T_TINY, 16, 16, 3)
    assert len(output.momaps) == 3 and output.momaps[0].xyz.shape == (T_TINY, 16, 16, 3)
    assert np.isfinite(output.xyz).all()
    # samples are de-normalised with the scene's centre and scale: a scene scaled by s and moved
    # by d sideways (the median z, so the scale, scales by s) has the same model-range input, so
    # the same generator gives the samples scaled by s and moved by d
    s, d = 2.0, np.array([0.5, -0.3, 0.0], dtype=np.float32)
    moved = sample(xyz * s + d)
    np.testing.assert_allclose(moved.xyz, output.xyz * s + d, rtol=0, atol=1e-4)
    # K estimated from the XYZ map when not given maps the points back to their pixel centres
    K = output.momaps[0].K
    np.testing.assert_allclose(K, K_true, rtol=0, atol=1e-3)
    uv, _ = project(xyz, K)
    np.testing.assert_allclose(uv, pixel_grid(16, 16).numpy(), rtol=0, atol=1e-3)


def test_pipeline_is_deterministic_under_a_generator(tiny_pipeline):
    image, xyz, instance = scene()

    def run(seed):
        return tiny_pipeline(
            image,
            xyz=xyz,
            instance_map=instance,
            prompt="push the block",
            num_samples=2,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(seed),
            progress=False,
        ).xyz

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_guidance_one_equals_the_unguided_call(tiny_pipeline):
    image, xyz, instance = scene()
    common = dict(
        xyz=xyz,
        instance_map=instance,
        prompt="lift the cup",
        num_samples=2,
        num_inference_steps=3,
        progress=False,
    )
    guided_at_one = tiny_pipeline(
        image, guidance_scale=1.0, generator=torch.Generator().manual_seed(1), **common
    )
    # the classifier-free combination u + g (c - u) at g = 1 is c: compute it the long way
    from momaplib.diffusion import pipeline as module

    with pytest.MonkeyPatch.context() as patch:  # force the two-branch path at g = 1 + 1e-12
        patch.setattr(module.MoMapPipeline, "_prompts", staticmethod(lambda prompt, n: ([prompt] * n, True)))
        long_way = tiny_pipeline(
            image, guidance_scale=1.0 + 1e-12, generator=torch.Generator().manual_seed(1), **common
        )
    np.testing.assert_allclose(guided_at_one.xyz, long_way.xyz, rtol=1e-4, atol=1e-5)


def test_pipeline_save_load_round_trip(tiny_pipeline, tmp_path):
    from momaplib.diffusion.pipeline import MoMapPipeline

    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = MoMapPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.config.text_encoder == "none:16"
    image, xyz, instance = scene()
    args = dict(xyz=xyz, instance_map=instance, num_samples=2, num_inference_steps=2, progress=False)
    a = tiny_pipeline(image, generator=torch.Generator().manual_seed(0), **args).xyz
    b = loaded(image, generator=torch.Generator().manual_seed(0), **args).xyz
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pipeline_bad_inputs_give_clear_errors(tiny_pipeline):
    image, xyz, instance = scene()

    def call(**kw):
        return tiny_pipeline(
            **{
                "image": image,
                "xyz": xyz,
                "instance_map": instance,
                "num_samples": 2,
                "num_inference_steps": 1,
                "progress": False,
                **kw,
            }
        )

    with pytest.raises(ValueError, match=r"xyz: expected \(16, 16, 3\)"):
        call(xyz=xyz[:8])
    with pytest.raises(TypeError, match="instance_map: expected an integer"):
        call(instance_map=instance.astype(np.float32))
    with pytest.raises(ValueError, match="prompt: a list of prompts needs one per sample"):
        call(prompt=[])
    with pytest.raises(ValueError, match="image: expected"):
        call(image=image[..., :2])
    with pytest.raises(ValueError, match="multiples of 8"):
        call(image=image[:12, :12], xyz=xyz[:12, :12], instance_map=instance[:12, :12])
    with pytest.raises(ValueError, match="scheduler"):
        call(scheduler="heun")


# ----------------------------------------------------------------------------- training
def test_motion_fraction_counts_moving_pixels_per_latent_cell():
    from momaplib.diffusion.latents import motion_fraction
    from momaplib.momap import TAU_MOVE

    T, H, W = 4, 16, 16
    xyz = torch.zeros(2, T, 3, H, W)
    xyz[0, 2:, 0, 0:4, 0:2] = 2 * TAU_MOVE  # 8 pixels of the top-left 8x8 cell move along x
    xyz[0, 1:, 2, 8:16, 8:16] = 0.5 * TAU_MOVE  # a whole cell moves less than the threshold
    xyz[1] = 1.0  # moved away from the origin at t0 already: a constant offset is no motion
    fraction = motion_fraction(xyz.flatten(1, 2), (2, 2))
    expected = torch.zeros(2, 1, 2, 2)
    expected[0, 0, 0, 0] = 8 / 64
    torch.testing.assert_close(fraction, expected)
    with pytest.raises(ValueError, match=r"momap: expected \(B, 3T, H, W\)"):
        motion_fraction(torch.zeros(1, 4, 8, 8), (1, 1))


def test_weighted_mse_is_the_weighted_mean_of_squared_errors():
    from momaplib.diffusion.objectives import motion_weight_map, weighted_mse

    g = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    error = (prediction - target) ** 2
    torch.testing.assert_close(weighted_mse(prediction, target), error.mean())
    torch.testing.assert_close(weighted_mse(prediction, target, torch.ones(2, 1, 4, 4)), error.mean())
    only = torch.zeros(2, 1, 4, 4)
    only[1, 0, 2, 3] = 5.0  # all weight on one cell: the mean over its 3 channels
    torch.testing.assert_close(weighted_mse(prediction, target, only), error[1, :, 2, 3].mean())
    motion = torch.zeros(2, 1, 4, 4)
    motion[0, 0, 0, 0] = 0.5
    weights = motion_weight_map(motion, 4.0)
    assert weights[0, 0, 0, 0] == 3.0 and weights.sum() == 2 * 16 + 2.0
    with pytest.raises(ValueError, match="motion_weight: expected >= 0"):
        motion_weight_map(motion, -1.0)


def test_one_batch_overfitting_drives_the_denoising_loss_down():
    from diffusers import DDPMScheduler

    from momaplib.diffusion.objectives import diffusion_loss

    torch.manual_seed(0)
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(1)
    latents, condition = torch.randn(4, 8, 8, 8, generator=g), torch.randn(4, 12, 8, 8, generator=g)
    text = torch.randn(4, 3, 16, generator=g)

    def loss(seed: int) -> torch.Tensor:  # the batch with the noise and timesteps of ``seed``
        return diffusion_loss(unet, scheduler, latents, condition, text, torch.Generator().manual_seed(seed))

    with torch.no_grad():
        before = torch.stack([loss(seed) for seed in range(4)]).mean()
    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-3)
    for step in range(150):
        optimizer.zero_grad()
        loss(step % 4).backward()
        optimizer.step()
    with torch.no_grad():
        after = torch.stack([loss(seed) for seed in range(4)]).mean()
    assert after < before / 5, f"denoising loss {before:.4f} -> {after:.4f}"


def test_training_teaches_the_unet_to_tell_futures_apart_by_the_prompt_alone():
    """One scene (the same condition latents), two futures, two prompts: only cross-attention can
    tell which future to denoise towards, so after training the right prompt must fit clearly better
    than the swapped one (the path text -> cross-attention -> motion carries information)."""
    from diffusers import DDPMScheduler

    from momaplib.diffusion.objectives import diffusion_loss

    torch.manual_seed(0)
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 8, 8, 8, generator=g)
    condition = torch.randn(1, 12, 8, 8, generator=g).expand(2, -1, -1, -1)
    text = torch.randn(2, 3, 16, generator=g)

    def loss(prompts: torch.Tensor, seed: int) -> torch.Tensor:
        return diffusion_loss(
            unet, scheduler, latents, condition, prompts, torch.Generator().manual_seed(seed)
        )

    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-3)
    for step in range(200):
        optimizer.zero_grad()
        loss(text, step % 8).backward()
        optimizer.step()
    with torch.no_grad():
        right = torch.stack([loss(text, seed) for seed in range(8)]).mean()
        swapped = torch.stack([loss(text.flip(0), seed) for seed in range(8)]).mean()
    # A UNet that ignored the prompt would score both pairings alike; at low noise the noisy input
    # shows the future anyway, so the gap comes from the noisier half of the timesteps.
    assert right < swapped / 1.5, f"loss with the right prompts {right:.4f}, swapped {swapped:.4f}"


def _tiny_frozen_models(tmp_path, num_frames: int):

    torch.manual_seed(0)
    vae = tiny_momap_vae(num_frames)
    vae.save_pretrained(tmp_path / "vae")
    tiny_image_vae().save_pretrained(tmp_path / "image_vae")
    return str(tmp_path / "vae"), str(tmp_path / "image_vae")


def test_train_diffusion_job_runs_and_continues_from_its_pipeline(tmp_path):
    from momaplib.data import MoMapDataset, write_dataset
    from momaplib.diffusion.grounding import PromptGrounder
    from momaplib.diffusion.latents import load_latent_set
    from momaplib.diffusion.pipeline import MoMapPipeline
    from momaplib.diffusion.train import TrainDiffusionJob, _build_model, select_trainable
    from momaplib.sim import SimConfig, simulate
    from momaplib.training import TrainConfig

    sim = SimConfig().smoke()
    write_dataset(tmp_path / "data", sim, num_clips=6, workers=0, progress=False)
    vae, image_vae = _tiny_frozen_models(tmp_path, sim.num_frames)
    common = dict(
        datasets=(tmp_path / "data",), vae=vae, image_vae=image_vae, text_encoder="none:16", smoke=True
    )
    folder = TrainDiffusionJob(
        train=TrainConfig(tmp_path / "first", progress=False, num_workers=0), **common
    ).run()
    pipeline = MoMapPipeline.from_pretrained(folder)
    gt = simulate(0, sim).clip.momap
    output = pipeline(
        gt.rgb, xyz=gt.xyz[0], instance_map=gt.instance, K=gt.K, num_samples=2, num_inference_steps=2,
        progress=False,
    )  # fmt: skip
    assert output.xyz.shape == (2, sim.num_frames, sim.height, sim.width, 3) and np.isfinite(output.xyz).all()

    # --init pretrained starts from exactly the saved (EMA) weights, whatever the width settings say
    second = TrainDiffusionJob(
        train=TrainConfig(tmp_path / "second", progress=False, num_workers=0), init="pretrained",
        pretrained=str(folder), block_out_channels=(64, 64), bundle_dir=tmp_path / "bundle",
        motion_weight=4.0, **common,
    ).resolved()  # fmt: skip
    model = _build_model(second, 8, 16, sim.height // 8)
    saved = pipeline.unet.state_dict()
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())
    continued = MoMapPipeline.from_pretrained(second.run())
    assert continued.unet.config.block_out_channels == pipeline.unet.config.block_out_channels
    assert pipeline.config.init_source == "scratch"  # what each saved pipeline started from
    assert continued.config.init_source == f"pretrained:{folder} <- scratch"
    # the bundle's configs do not name the folder the weights were loaded from
    assert not [p for p in (tmp_path / "bundle").glob("*/config.json") if "_name_or_path" in p.read_text()]
    assert MoMapPipeline.from_pretrained(tmp_path / "bundle").unet.config.block_out_channels == [32, 32]

    # a compiled generator trains and saves under the same weight names (eager backend: no compiler)
    third = TrainDiffusionJob(
        train=TrainConfig(tmp_path / "third", progress=False, num_workers=0), compile="eager", **common
    ).run()  # fmt: skip
    assert MoMapPipeline.from_pretrained(third).unet.state_dict().keys() == saved.keys()

    # --trainable attn2: only the cross-attention moves, every other weight stays as it started
    fourth = TrainDiffusionJob(
        train=TrainConfig(tmp_path / "fourth", progress=False, num_workers=0), init="pretrained",
        pretrained=str(folder), trainable="attn2", **common,
    ).run()  # fmt: skip
    tuned = MoMapPipeline.from_pretrained(fourth).unet.state_dict()
    changed = {key for key, value in tuned.items() if not torch.equal(value, saved[key])}
    assert changed and all(".attn2." in key for key in changed)
    with pytest.raises(ValueError, match=r"trainable: no parameter name contains any of \['nothing'\]"):
        select_trainable(torch.nn.Linear(2, 2), "nothing")

    # --grounding from a UNet without the channel: a zero-weight input is added, the rest kept;
    # the saved pipeline has the trained grounder and samples with a prompt
    fifth = replace(second.train, output_dir=tmp_path / "fifth")
    grounded_job = replace(second, train=fifth, grounding=True, bundle_dir=None)
    model = _build_model(grounded_job, 8, 16, sim.height // 8)
    assert model.config.in_channels == saved["conv_in.weight"].shape[1] + 1
    assert torch.equal(model.conv_in.weight[:, :-1], saved["conv_in.weight"])
    assert not model.conv_in.weight[:, -1].any()
    grounded = MoMapPipeline.from_pretrained(grounded_job.run())
    assert grounded.grounder is not None and grounded.unet.conv_in.weight[:, -1].any()
    # the pipeline's grounder is the one the job trained and saved with its metrics
    trained = PromptGrounder.from_pretrained(tmp_path / "fifth" / "grounder").state_dict()
    saved_grounder = grounded.grounder.state_dict()
    assert saved_grounder.keys() == trained.keys()
    assert not [key for key, value in saved_grounder.items() if not torch.equal(value, trained[key])]
    metrics = json.loads((tmp_path / "fifth" / "grounder" / "grounder_metrics.json").read_text())
    # it trained on the job's train clips with a target in view and a prompt, less 5 % (>= 1) held out
    cache = load_latent_set(tmp_path / "fifth" / "latents_train.safetensors")
    assert len(cache) == len(MoMapDataset(tmp_path / "data", "train"))
    usable = ((cache.target_slot >= 0) & (cache.prompt_index > 0)).nonzero().squeeze(1)
    assert len(usable) >= 2 and (metrics["train_clips"], metrics["heldout_clips"]) == (len(usable) - 1, 1)
    # its accuracies count the clips whose target the saved grounder scores highest
    tokens = cache.text[cache.prompt_index[usable]]
    with torch.no_grad():
        logits = grounded.grounder(cache.instance_features[usable], cache.instance_ids[usable], tokens)
    hits = int((logits.argmax(1) == cache.target_slot[usable]).sum())
    counted = sum(metrics[f"{part}_accuracy"] * metrics[f"{part}_clips"] for part in ("train", "heldout"))
    assert counted == pytest.approx(hits, abs=1e-6), (metrics, hits)
    assert metrics["train_accuracy"] == 1.0, metrics  # its steps fit the few train clips
    sampled = grounded(
        gt.rgb, xyz=gt.xyz[0], instance_map=gt.instance, K=gt.K, prompt=gt.prompt, num_samples=2,
        num_inference_steps=2, progress=False,
    )  # fmt: skip
    assert np.isfinite(sampled.xyz).all() and sampled.grounding["probabilities"].shape[0] == 2
    with pytest.raises(
        ValueError, match=r"pretrained: its UNet takes 13 condition channels, but --grounding"
    ):
        _build_model(
            replace(grounded_job, grounding=False, pretrained=str(tmp_path / "fifth" / "pipeline")), 8, 16, 4
        )
    with pytest.raises(ValueError, match="grounding: only --model diffusion"):
        _build_model(replace(grounded_job, model="momap-vae"), 8, 16, 4)

    with pytest.raises(ValueError, match=r"pretrained: .* has no 'cvae' folder"):
        _build_model(replace(second, model="momap-vae"), 8, 16, 4)
    with pytest.raises(ValueError, match=r"pretrained: .* 16-d text, but .* 32-d tokens"):
        _build_model(second, 8, 32, 4)


def test_simulated_latents_match_the_encoded_dataset_and_round_trip(tmp_path):
    from momaplib.data import MoMapDataset, clip_id, split_of, write_dataset
    from momaplib.diffusion.latents import (
        LATENT_TENSORS,
        encode_datasets,
        load_latent_set,
        save_latent_set,
        simulate_latents,
    )
    from momaplib.diffusion.text import load_text_encoder
    from momaplib.sim import SimConfig
    from momaplib.vae import MoMapVAE

    sim = SimConfig().smoke()
    write_dataset(tmp_path / "data", sim, num_clips=12, workers=0, progress=False)
    vae_folder, image_vae_folder = _tiny_frozen_models(tmp_path, sim.num_frames)
    vae = MoMapVAE.from_pretrained(vae_folder).eval()
    image_vae = AutoencoderKL.from_pretrained(image_vae_folder).eval()
    text = load_text_encoder("none:16")
    files = encode_datasets([tmp_path / "data"], "train", vae, image_vae, text, progress=False)
    streamed = simulate_latents([sim], len(files), vae, image_vae, text, batch_size=4, progress=False)
    assert streamed.ids == files.ids and all(split_of(i) == "train" for i in streamed.ids)
    assert streamed.prompts == files.prompts and torch.equal(streamed.prompt_index, files.prompt_index)
    # the streamed MoMaps (and so XYZ) travel as float16 (1e-3 of the scene scale); the rest is exact
    torch.testing.assert_close(streamed.latents, files.latents, atol=2e-3, rtol=0)
    torch.testing.assert_close(streamed.condition[:, :8], files.condition[:, :8])  # rgb, instances
    torch.testing.assert_close(streamed.condition[:, 8:], files.condition[:, 8:], atol=2e-3, rtol=0)
    torch.testing.assert_close(streamed.motion, files.motion, atol=1 / 64, rtol=0)
    assert streamed.motion.shape == (len(files), 1, *files.latents.shape[-2:])

    # what prompt grounding trains on: the target's slot among the instances and its map
    for name in ("target", "instance_ids", "target_slot"):
        assert torch.equal(getattr(streamed, name), getattr(files, name)), name
    torch.testing.assert_close(streamed.instance_features, files.instance_features, atol=2e-3, rtol=0)
    dataset = MoMapDataset(tmp_path / "data", "train")
    targets = torch.tensor([dataset[i]["target_id"] for i in range(len(dataset))])
    assert files.has_grounding and (targets > 0).all() and (files.target_slot >= 0).any()
    for n, slot in enumerate(files.target_slot.tolist()):
        if slot >= 0:
            assert files.instance_ids[n, slot] == targets[n]
            expected = (dataset[n]["instance"] == targets[n]).float().mean()
            torch.testing.assert_close(files.target[n].mean(), expected)
        else:  # out of view
            assert not (dataset[n]["instance"] == targets[n]).any() and not files.target[n].any()

    save_latent_set(streamed, tmp_path / "new" / "cache.safetensors")  # makes its folder
    loaded = load_latent_set(tmp_path / "new" / "cache.safetensors")
    assert loaded.ids == streamed.ids and loaded.prompts == streamed.prompts
    for name in LATENT_TENSORS:
        assert torch.equal(getattr(loaded, name), getattr(streamed, name)), name
    assert not list(tmp_path.glob("**/*.partial"))

    # later indices skip the first clips; families alternate
    both = [sim, SimConfig(family="egocentric").smoke()]
    later = simulate_latents(both, 2, vae, image_vae, text, first_index=100, progress=False)
    assert [i.split("_")[0] for i in later.ids] == ["tabletop", "egocentric"] * 2
    assert all(int(i.split("_")[1]) >= 100 for i in later.ids)
    # worker processes give the same clips, in the order they finish
    pooled = simulate_latents(both, 2, vae, image_vae, text, first_index=100, workers=2, progress=False)
    order = [pooled.ids.index(i) for i in later.ids]
    assert sorted(pooled.ids) == sorted(later.ids) and pooled.prompts == later.prompts
    torch.testing.assert_close(pooled.latents[order], later.latents)
    # task variants follow their scene; variant 0 is the plain clip
    varied = simulate_latents(
        [sim], 2, vae, image_vae, text, first_index=100, task_variants=2, progress=False
    )
    plain = [i for i in later.ids if i.startswith("tabletop")]
    assert varied.ids == [plain[0], plain[0] + "_v1", plain[1], plain[1] + "_v1"]
    assert clip_id("tabletop", 100, task_variant=1) == "tabletop_000100_v1"
    torch.testing.assert_close(varied.latents[[0, 2]], later.latents[[0, 2]])
    prompts = [varied.prompts[int(i)] for i in varied.prompt_index]
    assert prompts[0] != prompts[1] or prompts[2] != prompts[3]
    # several codecs, one simulation pass: the same clips and conditions, each codec's latents
    from momaplib.vae import RawMoMapCodec

    raw = RawMoMapCodec(in_channels=3 * sim.num_frames)
    codecs = {"vae": vae, "raw": raw}
    sets = simulate_latents([sim], 2, codecs, image_vae, text, first_index=100, progress=False)
    assert sets["vae"].ids == sets["raw"].ids == plain
    torch.testing.assert_close(sets["vae"].latents, later.latents[[0, 2]])
    torch.testing.assert_close(sets["vae"].condition, sets["raw"].condition)
    momaps = raw.decode_channels(sets["raw"].latents.float())  # the clips' MoMaps themselves (fp16)
    assert momaps.shape == (2, 3 * sim.num_frames, sim.height, sim.width) and momaps.abs().max() > 0.05
    # motion variants: the same start frame and conditions, another future
    futures = simulate_latents(
        [sim], 1, vae, image_vae, text, first_index=100, motion_variants=2, progress=False
    )
    assert futures.ids == [plain[0], plain[0] + "_m1"]
    rgb_and_xyz = [0, 1, 2, 3, 8, 9, 10, 11]  # the instance channels get a random palette per clip
    torch.testing.assert_close(futures.condition[0, rgb_and_xyz], futures.condition[1, rgb_and_xyz])
    assert (futures.latents[0] - futures.latents[1]).abs().max() > 1e-3
    # a noisy sensor: the XYZ condition is the observed one, the rest of the clip the same
    noisy = replace(sim, sensor="structured-light")
    seen = simulate_latents([noisy], 1, vae, image_vae, text, first_index=100, progress=False)
    assert seen.ids == [plain[0]] and (seen.condition[0, 8:] - later.condition[0, 8:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="clips_per_config"):
        simulate_latents([sim], 0, vae, image_vae, text)
    with pytest.raises(ValueError, match="task_variants"):
        simulate_latents([sim], 1, vae, image_vae, text, task_variants=0)


# ----------------------------------------------------------------------------- resume: exact, same settings
def test_train_diffusion_resumes_bit_for_bit_and_refuses_other_settings(tmp_path):
    """An interrupted train-diffusion run continued with the same command ends with the losses and
    weights of the uninterrupted run, bit for bit (it drifted by 1e-7 per step while the fresh
    latents were channels-last and the cached ones contiguous); other settings are refused."""
    from safetensors.torch import load_file

    from momaplib.data import write_dataset
    from momaplib.diffusion.train import TrainDiffusionJob
    from momaplib.sim import SimConfig
    from momaplib.training import ResumeError, TrainConfig, read_metrics

    sim = SimConfig().smoke()
    write_dataset(tmp_path / "data", sim, num_clips=6, workers=0, progress=False)
    vae, image_vae = _tiny_frozen_models(tmp_path, sim.num_frames)
    common = dict(
        datasets=(tmp_path / "data",), vae=vae, image_vae=image_vae, text_encoder="none:16",
        block_out_channels=(32, 32), layers_per_block=1, num_val_clips=1, val_samples=1, val_steps=2,
    )  # fmt: skip
    loop = dict(
        max_steps=6, batch_size=4, lr_warmup_steps=2, checkpoint_every=3, progress=False, num_workers=0
    )

    def job(folder: str, **settings) -> TrainDiffusionJob:
        return TrainDiffusionJob(train=TrainConfig(tmp_path / folder, **{**loop, **settings}), **common)

    straight = job("straight").run()
    job("resumed", time_limit_minutes=1e-9).run()  # stops after step 1, validated and checkpointed
    assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == [1]
    resumed = job("resumed").run()  # the same command (a new time limit may always change)
    losses = [[r["loss"] for r in read_metrics(tmp_path / run)] for run in ("straight", "resumed")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    name = "unet/diffusion_pytorch_model.safetensors"  # the EMA weights the pipeline saves
    a, b = load_file(straight / name), load_file(resumed / name)
    assert [key for key in a if not torch.equal(a[key], b[key])] == []

    folder = tmp_path / "resumed"
    files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(ResumeError, match=r"train\.learning_rate: 0\.0002 -> 0\.001"):
        job("resumed", learning_rate=1e-3).run()
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files  # nothing written
    job("resumed", learning_rate=1e-3, allow_config_change=True).run()  # continues (nothing left to do)
    assert json.loads((folder / "train_config.0000006.json").read_bytes()) == json.loads(
        files[folder / "train_config.json"]
    )
    assert json.loads((folder / "train_config.json").read_text())["train"]["learning_rate"] == 1e-3


# ----------------------------------------------------------------------------- holes, checks before sampling
def _holey(depth: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``depth`` with ``fraction`` of its pixels made holes (0, NaN, inf in turn) and the holes."""
    rng = np.random.default_rng(seed)
    holes = np.zeros(depth.size, bool)
    holes[rng.choice(depth.size, round(fraction * depth.size), replace=False)] = True
    holes = holes.reshape(depth.shape)
    holey = depth.astype(np.float32)
    holey[holes] = np.resize(np.array([0.0, np.nan, np.inf], np.float32), holes.sum())
    return holey, holes


def _check_holes_marked(output, holes: np.ndarray) -> None:
    for momap in output.momaps:
        np.testing.assert_array_equal(momap.valid, ~holes)
        assert not momap.visible[:, holes].any()  # no trajectory, never seen
        assert (momap.xyz[:, holes] == 0).all() and np.isfinite(momap.xyz).all()
        assert momap.meta["num_invalid"] == holes.sum()
    assert output.num_invalid == holes.sum()


def test_pipeline_takes_depth_holes_as_invalid_pixels(tiny_pipeline):
    image, _, instance = scene()
    K = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]], dtype=np.float32)
    depth = np.random.default_rng(1).uniform(0.8, 1.2, (16, 16)).astype(np.float32)
    holey, holes = _holey(depth, 0.1)
    common = dict(
        image=image, instance_map=instance, K=K, num_samples=2, num_inference_steps=2, progress=False
    )
    with pytest.warns(
        UserWarning, match=r"depth: 26 of 256 pixels \(10\.2%\) have no geometry.*fill_depth_holes"
    ):
        output = tiny_pipeline(depth=holey, generator=torch.Generator().manual_seed(0), **common)
    _check_holes_marked(output, holes)
    # the holes enter the condition as their nearest valid pixel, exactly like an XYZ map with NaN there
    from momaplib.geometry import depth_to_xyz

    xyz = np.where(holes[..., None], np.nan, depth_to_xyz(depth, K))
    with pytest.warns(UserWarning, match="xyz: 26 of 256"):
        same = tiny_pipeline(xyz=xyz, generator=torch.Generator().manual_seed(0), **common)
    np.testing.assert_allclose(same.xyz, output.xyz, rtol=0, atol=1e-5)
    # a dense map gives no warning and no invalid pixel
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dense = tiny_pipeline(depth=depth, generator=torch.Generator().manual_seed(0), **common)
    assert dense.num_invalid == 0 and dense.momaps[0].valid.all()


def test_holes_enter_the_xyz_condition_as_their_nearest_valid_pixel(tiny_pipeline, monkeypatch):
    import momaplib.diffusion.pipeline as pipeline_module

    image, _, instance = scene()
    K = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]], dtype=np.float32)
    depth = np.random.default_rng(4).uniform(0.8, 1.2, (16, 16)).astype(np.float32)
    holey, holes = _holey(depth, 0.2, seed=5)
    seen = []
    original = pipeline_module.condition_latents

    def spy(image_vae, rgb, instance, xyz, **kwargs):
        seen.append(xyz[0].permute(1, 2, 0).float().numpy())  # (H, W, 3) in model range
        return original(image_vae, rgb, instance, xyz, **kwargs)

    monkeypatch.setattr(pipeline_module, "condition_latents", spy)
    common = dict(
        image=image, instance_map=instance, K=K, num_samples=1, num_inference_steps=1, progress=False
    )
    with pytest.warns(UserWarning, match="no geometry"):
        tiny_pipeline(depth=holey, **common)
    try:
        tiny_pipeline.register_to_config(fill_condition_holes=False)
        with pytest.warns(UserWarning, match="no geometry"):
            tiny_pipeline(depth=holey, **common)
    finally:
        tiny_pipeline.register_to_config(fill_condition_holes=True)
    filled, centre = seen
    np.testing.assert_array_equal(filled[~holes], centre[~holes])  # valid pixels as given
    assert (centre[holes] == 0).all()  # without the fill: the scene centre
    rows, cols = np.nonzero(~holes)
    for r, c in zip(*np.nonzero(holes), strict=True):  # brute force: some nearest valid pixel's value
        distance = (rows - r) ** 2 + (cols - c) ** 2
        nearest = distance == distance.min()
        assert any(
            np.array_equal(filled[r, c], filled[i, j])
            for i, j in zip(rows[nearest], cols[nearest], strict=True)
        )


def test_trajectories_start_at_the_given_xyz_and_move_as_sampled(tiny_pipeline):
    image, _, instance = scene()
    K = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]], dtype=np.float32)
    depth = np.random.default_rng(2).uniform(0.8, 1.2, (16, 16)).astype(np.float32)
    holey, holes = _holey(depth, 0.1, seed=3)
    common = dict(
        image=image, instance_map=instance, K=K, num_samples=2, num_inference_steps=2, progress=False
    )

    def sample():
        with pytest.warns(UserWarning, match="no geometry"):
            return tiny_pipeline(depth=holey, generator=torch.Generator().manual_seed(0), **common).xyz

    assert tiny_pipeline.config.anchor_t0 is True  # the default
    anchored = sample()
    try:
        tiny_pipeline.register_to_config(anchor_t0=False)
        own = sample()
    finally:
        tiny_pipeline.register_to_config(anchor_t0=True)
    from momaplib.geometry import depth_to_xyz

    given = depth_to_xyz(np.where(holes, 1.0, holey), K)[~holes]
    np.testing.assert_allclose(
        anchored[:, 0][:, ~holes], np.broadcast_to(given, (2, *given.shape)), atol=1e-5
    )
    assert np.abs(own[:, 0][:, ~holes] - given).max() > 1e-2  # a random model's own t = 0 is elsewhere
    np.testing.assert_allclose(anchored - anchored[:, :1], own - own[:, :1], atol=1e-5)  # the same motion
    assert (anchored[:, :, holes] == 0).all()  # holes stay without a trajectory


def test_pipeline_checks_every_input_before_it_samples(tiny_pipeline, monkeypatch):
    from momaplib.diffusion import pipeline as module

    image, xyz, instance = scene()
    sampled = []
    monkeypatch.setattr(module.MoMapPipeline, "_denoise", lambda self, *a, **k: sampled.append(1))
    monkeypatch.setattr(module, "condition_latents", lambda *a, **k: sampled.append(1))
    bad = {
        "depth in millimetres": (
            dict(xyz=xyz * 1000),
            ValueError,
            r"xyz: the median depth .* divide by 1000",
        ),
        "2048x2048 image": (
            dict(image=np.zeros((2048, 2048, 3), np.uint8)),
            ValueError,
            r"image: H and W must be in \[8, 1024\] pixels, got 2048x2048",
        ),
        "K with fx < 0": (dict(K=np.diag([-20.0, 20.0, 1.0])), ValueError, "K: expected finite"),
        "prompt of another type": (dict(prompt=3), TypeError, "prompt: expected a str"),
        "zero steps": (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
        "NaN guidance": (dict(guidance_scale=float("nan")), ValueError, "guidance_scale"),
        "fractional num_samples": (dict(num_samples=1.5), ValueError, "num_samples"),
        "negative instance ids": (dict(instance_map=instance - 1), ValueError, "instance_map: ids must be"),
    }
    for name, (change, error, message) in bad.items():
        kwargs = dict(image=image, xyz=xyz, instance_map=instance, num_samples=2, progress=False)
        with pytest.raises(error, match=message):
            tiny_pipeline(**{**kwargs, **change})
        assert not sampled, f"{name}: the condition was encoded or sampled before the check"


def test_pipeline_image_size_limit_is_an_argument(tiny_pipeline):
    image, xyz, instance = scene()
    kwargs = dict(xyz=xyz, instance_map=instance, num_samples=1, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"must be in \[8, 8\] pixels, got 16x16.*max_image_size="):
        tiny_pipeline(image, max_image_size=8, **kwargs)
    assert tiny_pipeline(image, max_image_size=16, **kwargs).xyz.shape[2:4] == (16, 16)


def test_instance_colors_of_32_bit_ids_need_no_giant_palette():
    instance = torch.tensor([[[0, 2**31 - 1], [7, 2**31 - 1]]])
    colours = instance_colors(instance, torch.Generator().manual_seed(0))
    assert colours.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(colours[0, :, 0, 1], colours[0, :, 1, 1])  # one id, one colour
    assert len({tuple(colours[0, :, v, u].tolist()) for v in range(2) for u in range(2)}) == 3
    # small ids keep the palette they always had (one slot per id value): samples stay reproducible
    small = torch.tensor([[[0, 3], [7, 3]]])
    palette = torch.rand(1, 8, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    np.testing.assert_array_equal(
        instance_colors(small, torch.Generator().manual_seed(0))[0, :, 0, 1], palette[0, 3]
    )


@pytest.mark.slow
def test_bundled_pipeline_samples_an_example_whose_depth_has_5_percent_holes():
    from momaplib.data.examples import EXAMPLES_DIR, load_example
    from momaplib.diffusion.pipeline import MoMapPipeline

    pipe = MoMapPipeline.from_pretrained("momap-diffusion")
    example = load_example(EXAMPLES_DIR / "tabletop_blue_block")
    inputs = example.pipeline_inputs()
    inputs["depth"], holes = _holey(example.depth, 0.05)
    with pytest.warns(UserWarning, match=r"819 of 16384 pixels \(5\.0%\)"):
        output = pipe(
            **inputs,
            num_samples=2,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )
    assert output.xyz.shape == (2, 32, 128, 128, 3)
    _check_holes_marked(output, holes)
    moving = np.abs(output.xyz - output.xyz[:, :1]).max(-1).max(1)  # (N, H, W)
    assert moving[:, ~holes].max() > 0  # the valid pixels got trajectories


def test_records_are_built_when_read_and_match_the_arrays(tiny_pipeline):
    import pickle

    from momaplib.diffusion.output import LazyMoMaps

    image, xyz, instance = scene()
    output = tiny_pipeline(image, xyz, instance, None, num_samples=3, num_inference_steps=2, progress=False)
    assert isinstance(output.momaps, LazyMoMaps) and len(output.momaps) == 3
    assert not output.momaps._cache  # nothing built until read
    last = output.momaps[-1]
    np.testing.assert_array_equal(last.xyz, output.xyz[2])
    assert last is output.momaps[2] and list(output.momaps._cache) == [2]  # built once, cached
    assert [m.prompt for m in output.momaps[:2]] == ["", ""] and len(list(output.momaps)) == 3
    again = pickle.loads(pickle.dumps(output.momaps))
    np.testing.assert_array_equal(again[0].xyz, output.xyz[0])
    with pytest.raises(IndexError):
        output.momaps[3]
    assert tiny_pipeline.__dict__.get("_call_device") is None  # the call's device lookup is cleared


def test_a_decoded_sample_that_is_not_finite_is_an_error(tiny_pipeline, monkeypatch):
    image, xyz, instance = scene()
    monkeypatch.setattr(
        tiny_pipeline.vae,
        "decode_channels",
        lambda z: torch.full_like(z, float("nan")).repeat(1, 1, 8, 8)[:, : 3 * T_TINY],
    )
    with pytest.raises(FloatingPointError, match="not finite"):
        tiny_pipeline(image, xyz, instance, None, num_samples=1, num_inference_steps=1, progress=False)


def test_fill_holes_nearest_known_answers():
    from momaplib.diffusion.conditioning import fill_holes_nearest

    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    known = torch.ones(2, 3, 4, dtype=torch.bool)
    known[0, :, 2:] = False  # the right half of item 0: each row takes its column-1 value
    filled = fill_holes_nearest(x, known)
    expected = x[0, 0].clone()
    expected[:, 2:] = expected[:, 1:2]
    torch.testing.assert_close(filled[0, 0], expected, rtol=0, atol=0)
    torch.testing.assert_close(filled[1], x[1], rtol=0, atol=0)  # every pixel known: as it was
    assert torch.equal(fill_holes_nearest(x, torch.zeros_like(known)), x)  # nothing known: as it was
    with pytest.raises(ValueError, match="fill_holes_nearest: expected"):
        fill_holes_nearest(x[0], known)


def test_training_and_the_pipeline_give_a_sensors_holes_the_same_xyz_condition(tiny_pipeline):
    """The latent caches (training) and ``MoMapPipeline.encode_scene`` (inference) turn one clip seen
    by a structured-light sensor, holes and all, into the same XYZ condition latents."""
    from momaplib.data import model_inputs, simulate_split_videos
    from momaplib.diffusion.latents import _BatchEncoder
    from momaplib.sim import SimConfig
    from momaplib.sim.sensor import observed_xyz

    config = replace(SimConfig(sensor="structured-light").smoke(), height=16, width=16)
    (_, clip), *_ = simulate_split_videos("tabletop", 1, config=config, progress=False)
    depth = clip.depth[0]
    seen, observed = observed_xyz(depth, clip.momap.K)
    assert 0 < (~observed).sum() and observed.sum() > 2  # the sensor left holes
    inputs = model_inputs(clip.momap, observed_depth=depth)
    encoder = _BatchEncoder(
        tiny_pipeline.vae, tiny_pipeline.image_vae, "cpu", torch.Generator().manual_seed(0)
    )
    momap = torch.zeros(1, 3 * T_TINY, 16, 16)  # only the condition is compared
    encoder.add(
        momap,
        inputs["rgb"][None],
        inputs["instance"][None],
        ["p"],
        ["id"],
        torch.tensor([-1]),
        inputs["xyz0"][None],
    )
    with pytest.warns(UserWarning, match="no geometry"):
        scene = tiny_pipeline.encode_scene(
            clip.momap.rgb, np.where(observed[..., None], seen, np.nan), clip.momap.instance, None, None,
            torch.Generator().manual_seed(0),
        )  # fmt: skip
    xyz_channels = slice(8, 12)  # rgb | instance colours (a random palette) | xyz
    trained, sampled = encoder.conditions[0][:, xyz_channels], scene["condition"][:, xyz_channels].float()
    torch.testing.assert_close(trained, sampled, rtol=0, atol=1e-5)


def _latent_set(prompts: list[str], per_clip: list[int], K: int, first_id: int, seed: int):
    from momaplib.diffusion.latents import LatentSet

    g = torch.Generator().manual_seed(seed)
    n = len(per_clip)
    text = torch.stack([torch.full((2, 3), float(sum(map(ord, p)))) for p in prompts])  # one per prompt
    return LatentSet(
        latents=torch.randn(n, 4, 2, 2, generator=g), condition=torch.randn(n, 12, 2, 2, generator=g),
        prompt_index=torch.tensor(per_clip), prompts=prompts, text=text,
        ids=[f"tabletop_{first_id + i:06d}" for i in range(n)], motion=torch.rand(n, 1, 2, 2, generator=g),
        target=torch.rand(n, 1, 2, 2, generator=g), instance_features=torch.randn(n, K, 12, generator=g),
        instance_ids=torch.randint(1, 9, (n, K), generator=g), target_slot=torch.zeros(n, dtype=torch.long),
        dsl=torch.randn(n, 12, 2, 2, generator=g),
    )  # fmt: skip


def test_concatenated_latent_sets_keep_every_clip_with_its_prompt_and_instances(tmp_path):
    from momaplib.diffusion.latents import (
        LATENT_TENSORS,
        concat_latent_sets,
        load_latent_set,
        save_latent_set,
    )

    a = _latent_set(["", "push the cup", "lift the red box"], [1, 2, 0], K=3, first_id=0, seed=0)
    b = _latent_set(["", "open the drawer", "push the cup"], [2, 1, 1, 0], K=5, first_id=10, seed=1)
    both = concat_latent_sets([a, b])
    assert len(both) == 7 and both.ids == a.ids + b.ids
    assert both.prompts == ["", "lift the red box", "open the drawer", "push the cup"]
    for part, rows in ((a, range(0, 3)), (b, range(3, 7))):
        for k, n in enumerate(rows):
            assert both.prompts[both.prompt_index[n]] == part.prompts[part.prompt_index[k]]
            assert torch.equal(both.text[both.prompt_index[n]], part.text[part.prompt_index[k]])
            for name in ("latents", "condition", "motion", "target", "dsl", "target_slot"):
                assert torch.equal(getattr(both, name)[n], getattr(part, name)[k]), name
            K = part.instance_ids.shape[1]  # padded with empty slots (id 0) to the widest set
            assert (
                torch.equal(both.instance_ids[n, :K], part.instance_ids[k])
                and not both.instance_ids[n, K:].any()
            )
            assert torch.equal(both.instance_features[n, :K], part.instance_features[k])
    save_latent_set(both, tmp_path / "cache.safetensors")  # a training cache like any other
    loaded = load_latent_set(tmp_path / "cache.safetensors")
    assert all(torch.equal(getattr(loaded, n), getattr(both, n)) for n in LATENT_TENSORS)

    older = replace(b, dsl=None)  # a cache from before a field existed: the field is dropped
    assert concat_latent_sets([a, older]).dsl is None
    with pytest.raises(ValueError, match="latents shapes differ"):
        concat_latent_sets([a, replace(b, latents=torch.zeros(4, 8, 2, 2))])
    with pytest.raises(ValueError, match="at least one"):
        concat_latent_sets([])
