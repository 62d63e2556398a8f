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
