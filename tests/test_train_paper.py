"""The paper driver (scripts/train_paper.py) end to end at smoke sizes, continuing a run (--warm,
--continue-from) and using final codecs as they are (--frozen)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from momaplib.checkpoints import resolve_checkpoint, write_weight_manifest
from momaplib.diffusion.pipeline import load_pipeline
from momaplib.vae import MoMapVAE

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_paper.py"


def driver(runs: Path, *args: str) -> str:
    command = [
        sys.executable,
        str(SCRIPT),
        "--smoke",
        "--runs",
        str(runs),
        "--text-encoder",
        "none:16",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_second_run_continues_every_codec_and_the_prior_from_the_first(tmp_path):
    first = tmp_path / "first"
    stages = ("data", "image-vae", "image-vae-decoder", "momap-vae", "momap-vae-scratch", "image-prior")
    out = driver(first, "--stages", *stages)  # the codecs' bundles are written after their decoder stage
    # the image VAE's adversarial decoder: its own folder and bundle, the encoder (latent space) kept
    assert "image VAE decoder, adversarial weight 0.5" in out
    gan = AutoencoderKL.from_pretrained(first / "bundles/image-vae-gan-0.5", torch_dtype=torch.float32)
    image = AutoencoderKL.from_pretrained(first / "bundles/image-vae", torch_dtype=torch.float32).state_dict()
    assert all(torch.equal(v, image[k]) for k, v in gan.state_dict().items() if k.startswith("encoder."))
    second = tmp_path / "second"
    codecs = ("data", "image-vae", "momap-vae", "momap-vae-scratch", "--decoder-steps", "0")
    out = driver(second, "--warm", str(first / "bundles"), "--stages", *codecs)
    assert f"image VAE from {first / 'bundles/image-vae'}" in out
    assert f"MoMap VAE (inflate) from {first / 'bundles/momap-vae'}" in out
    # a continued model keeps its start's architecture (not the smoke widths) and is trained further
    for folder, cls in (("image-vae", AutoencoderKL), ("momap-vae", MoMapVAE)):
        start = cls.from_pretrained(first / "bundles" / folder, torch_dtype=torch.float32)
        continued = cls.from_pretrained(second / folder / "model")
        assert continued.config.block_out_channels == start.config.block_out_channels
        before = start.state_dict()
        assert any(not torch.allclose(v, before[k]) for k, v in continued.state_dict().items()), folder

    # latents while the decoder still trains read the first stage's encoder; the generators, once
    # it is done, the decoder stage's model (the same encoder and scaling factor)
    out = driver(second, "--stages", "latents", "--decoder-steps", "1", "--stream-first-index", "500")
    assert (second / "latents/vae.safetensors").is_file() and not (second / "momap-vae-decoder").exists()
    ids = json.loads((second / "latents/vae.json").read_text())["ids"]  # new scenes: past index 500
    assert ids and all(int(i.split("_")[1]) >= 500 for i in ids), ids[:4]
    driver(second, "--stages", "momap-vae", "--decoder-steps", "2")
    encoder = MoMapVAE.from_pretrained(second / "momap-vae/model")
    decoder = MoMapVAE.from_pretrained(second / "momap-vae-decoder/model")
    assert encoder.config.scaling_factor == decoder.config.scaling_factor
    kept = decoder.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in encoder.state_dict().items() if k.startswith("encoder."))

    # the missing part of a --warm folder is named before anything trains
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--runs", str(tmp_path / "third"), "--text-encoder",
         "none:16", "--warm", str(tmp_path), "--stages", "data", "momap-vae-scratch"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0 and "has no momap-vae-scratch/" in done.stderr
    assert not (tmp_path / "third/data").exists()
    assert json.loads((first / "bundles/image-diffusion/model_index.json").read_text())["_class_name"]

    # --frozen: final codecs and prior used as they are (the prior stored without its vae/)
    frozen = tmp_path / "frozen"
    for name in ("image-vae", "momap-vae", "momap-vae-scratch", "image-diffusion"):
        shutil.copytree(first / "bundles" / name, frozen / name)
    shutil.rmtree(frozen / "image-diffusion/vae")
    write_weight_manifest(frozen / "image-diffusion")
    fourth = tmp_path / "fourth"
    out = driver(fourth, "--frozen", str(frozen), "--stages", *stages[1:])
    assert "image VAE" not in out and "MoMap VAE" not in out and "image prior" not in out
    for part in ("image-vae", "momap-vae", "momap-vae-scratch", "image-prior"):
        assert not (fourth / part / "checkpoints").exists(), part  # nothing trained
    kept = MoMapVAE.from_pretrained(frozen / "momap-vae", torch_dtype=torch.float32).state_dict()
    used = MoMapVAE.from_pretrained(fourth / "momap-vae/model", torch_dtype=torch.float32).state_dict()
    assert all(torch.equal(v, used[k]) for k, v in kept.items())
    prior = resolve_checkpoint(fourth / "image-prior/pipeline")  # its manifest covers the added vae/
    vae = AutoencoderKL.from_pretrained(prior / "vae", torch_dtype=torch.float32).state_dict()
    assert all(torch.equal(v, vae[k]) for k, v in image.items())
    assert not (fourth / "momap-vae-decoder").exists()
    done = subprocess.run(  # a run folder with codecs of its own is not silently kept
        [sys.executable, str(SCRIPT), "--smoke", "--runs", str(first), "--frozen", str(frozen),
         "--stages", "image-vae"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0 and f"{first / 'image-vae/model'} is not" in done.stderr
    # without a prior in the folder, its stage trains one over the frozen image VAE
    shutil.rmtree(frozen / "image-diffusion")
    (tmp_path / "sixth").mkdir()
    (tmp_path / "sixth/data").symlink_to(first / "data")
    out = driver(tmp_path / "sixth", "--frozen", str(frozen), "--stages", "image-vae", "image-prior")
    assert "image prior" in out and "image VAE" not in out
    config = json.loads((tmp_path / "sixth/image-prior/train_config.json").read_text())
    assert config["image_vae"] == str(tmp_path / "sixth/image-vae/model")
    shutil.rmtree(frozen / "momap-vae-scratch")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--runs", str(tmp_path / "fifth"), "--frozen", str(frozen),
         "--stages", "momap-vae"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0 and "has no momap-vae-scratch/" in done.stderr


def test_the_bundle_is_inflated_from_the_prior_then_continued_from_itself(tmp_path):
    runs = tmp_path / "runs"
    stages = ("data", "image-vae", "momap-vae", "image-prior", "latents", "bundle")
    driver(runs, "--stages", *stages, "--latent-codecs", "vae")
    assert (runs / "latents/vae.safetensors").is_file()
    assert (
        not (runs / "latents/raw.safetensors").exists()
        and not (runs / "latents/scratch.safetensors").exists()
    )
    earlier = tmp_path / "earlier"  # the first run's bundles, as a later run would find them
    (runs / "bundles").rename(earlier)
    shutil.rmtree(runs / "bundle")
    prior = runs / "image-prior/pipeline"
    assert (
        json.loads((earlier / "momap-diffusion/model_index.json").read_text())["init_source"]
        == f"inflate:{prior}"
    )

    # a stage whose start is missing is named before anything trains
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--runs", str(runs), "--text-encoder", "none:16",
         "--continue-from", str(earlier), "--stages", "bundle", "baseline"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0 and "has no momap-vae-baseline/" in done.stderr
    assert not (runs / "bundle").exists()

    out = driver(runs, "--stages", "bundle", "--continue-from", str(earlier))
    start = earlier / "momap-diffusion"
    assert f"from {start}" in out
    index = json.loads((runs / "bundles/momap-diffusion/model_index.json").read_text())
    assert index["init_source"] == f"pretrained:{start} <- inflate:{prior}"
    before = UNet2DConditionModel.from_pretrained(start / "unet", torch_dtype=torch.float32).state_dict()
    after = UNet2DConditionModel.from_pretrained(
        runs / "bundles/momap-diffusion/unet", torch_dtype=torch.float32
    )
    assert after.config.in_channels == json.loads((start / "unet/config.json").read_text())["in_channels"]
    assert any(not torch.allclose(v, before[k]) for k, v in after.state_dict().items())

    # the few-step student of the bundle: LoRA adapters only, loaded onto the bundle's pipeline
    driver(runs, "--stages", "distill", "--distill-lora-rank", "2")
    student = runs / "bundles/momap-diffusion-lcm"
    assert sorted(p.name for p in student.iterdir()) == [
        "lcm_lora.json",
        "lcm_lora.safetensors",
        "weights.sha256.json",
    ]
    assert json.loads((student / "lcm_lora.json").read_text())["teacher"] == str(runs / "bundle/pipeline")
    assert load_pipeline(student).config.init_source == f"distill-lora:{runs / 'bundle/pipeline'}"
