"""The final codecs of the next bundle (``retrain/``): stored as the bundle stores weights, and
trained: the MoMap VAEs round-trip geometry and views the bundled, MoMap-Sim-only VAE cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors import safe_open

from momaplib.checkpoints import resolve_checkpoint, verify_weights
from momaplib.eval.generalisation import build_case, vae_errors
from momaplib.vae import MoMapVAE

ROOT = Path(__file__).resolve().parents[1] / "retrain"
FOLDERS = ("image-vae", "momap-vae", "momap-vae-scratch")


@pytest.mark.parametrize("name", FOLDERS)
def test_weights_are_fp16_with_a_manifest_and_no_machine_paths(name):
    folder = ROOT / name
    assert verify_weights(folder) >= 1  # every weight file listed and matching its sha256
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as weights:
            assert {str(weights.get_slice(key).get_dtype()) for key in weights.keys()} == {"F16"}
    config = json.loads((folder / "config.json").read_text())
    assert "_name_or_path" not in config
    if name != "image-vae":  # a MoMap VAE's latents are scaled to unit variance
        assert 0.1 < config["scaling_factor"] < 10 and config["latent_channels"] == 32


@pytest.mark.parametrize("case", ["room", "sim_roll180"])
def test_the_momap_vaes_represent_what_the_bundled_one_cannot(case):
    momap = build_case(case, seed=0)
    bundled = MoMapVAE.from_pretrained(resolve_checkpoint("momap-vae"), torch_dtype=torch.float32).eval()
    old = vae_errors(bundled, momap)["vae_all"]
    for name in ("momap-vae", "momap-vae-scratch"):
        vae = MoMapVAE.from_pretrained(ROOT / name, torch_dtype=torch.float32).eval()
        new = vae_errors(vae, momap)["vae_all"]  # median error over the scene scale, every frame
        assert new < 0.03 and old > 5 * new, (name, case, new, old)


def test_the_image_vae_round_trips_a_frame():
    momap = build_case("sim", seed=0)
    vae = AutoencoderKL.from_pretrained(ROOT / "image-vae", torch_dtype=torch.float32).eval()
    rgb = torch.as_tensor(momap.rgb, dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        decoded = vae.decode(vae.encode(rgb).latent_dist.mean).sample
    assert (decoded - rgb).abs().mean() < 0.15  # RGB in [-1, 1]; a random decoder is ~0.5 off


def test_the_image_prior_is_stored_as_the_bundle_stores_it():
    folder = ROOT / "image-diffusion"
    assert verify_weights(folder) == 1 and not (folder / "vae").exists()  # it loads the image VAE beside it
    with safe_open(folder / "unet/diffusion_pytorch_model.safetensors", "pt") as weights:
        assert {str(weights.get_slice(key).get_dtype()) for key in weights.keys()} == {"F16"}
    config = json.loads((folder / "unet/config.json").read_text())
    image_vae = json.loads((ROOT / "image-vae/config.json").read_text())
    assert "_name_or_path" not in config and config["in_channels"] == image_vae["latent_channels"]


def test_the_image_prior_denoises_unseen_frames():
    """Trained, not random: on frames it never saw, noised half-way, its v-prediction error is a
    fraction of the trivial predictor's (zero), with the frame's caption."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from momaplib.diffusion.image_prior import scene_caption
    from momaplib.diffusion.text import load_text_encoder
    from momaplib.sim import SimConfig, simulate

    vae = AutoencoderKL.from_pretrained(ROOT / "image-vae", torch_dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(
        ROOT / "image-diffusion/unet", torch_dtype=torch.float32
    ).eval()
    scheduler = DDIMScheduler.from_pretrained(ROOT / "image-diffusion/scheduler")
    frames, captions = [], []
    for family in ("tabletop", "egocentric"):
        for seed in (9_000_001, 9_000_002):  # far from every training index
            sample = simulate(seed, SimConfig(family=family))
            frames.append(torch.as_tensor(sample.clip.momap.rgb, dtype=torch.float32).permute(2, 0, 1))
            captions.append(scene_caption(sample.clip.momap.prompt, family))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = vae.encode(torch.stack(frames) / 127.5 - 1).latent_dist.mean * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.full((len(frames),), 400)
        target = scheduler.get_velocity(latents, noise, t)
        text = load_text_encoder(
            json.loads((ROOT / "image-diffusion/model_index.json").read_text())["text_encoder"]
        )
        predicted = unet(
            scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=text(captions)
        ).sample
    ratio = float(((predicted - target) ** 2).mean() / (target**2).mean())
    assert ratio < 0.5, ratio
