"""scripts/assemble_bundle.py: checkpoints/ from the retrain's bundles, loadable by name, in budget."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from momaplib.checkpoints import verify_weights

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("assemble_bundle", ROOT / "scripts" / "assemble_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bundle_is_assembled_loadable_by_name_and_within_budget(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    from momaplib.diffusion.image_prior import ImageDiffusionPipeline
    from momaplib.diffusion.pipeline import load_pipeline
    from momaplib.video import CompletionUNet, MoMapVideoPipeline

    runs = tmp_path / "runs"
    stages = ("data", "image-vae", "image-vae-decoder", "momap-vae", "image-prior", "latents", "bundle")
    script = str(ROOT / "scripts/train_paper.py")
    command = [sys.executable, script, "--smoke", "--runs", str(runs), "--text-encoder", "none:16"]
    command += ["--latent-codecs", "vae", "--stages", *stages, "baseline", "dsl"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    bundles = runs / "bundles"
    CompletionUNet(block_out_channels=(32, 32), norm_num_groups=8, sample_size=4).save_pretrained(
        tmp_path / "video"
    )
    out = tmp_path / "checkpoints"
    gan = bundles / "image-vae-gan-0.5"
    video = str(tmp_path / "video")
    sizes = _script().main(
        ["--bundles", str(bundles), "--image-vae", str(gan), "--video", video, "--out", str(out)]
    )
    assert set(sizes) == {"momap-diffusion", "image-diffusion", "momap-vae-baseline", "momap-diffusion-dsl",
                          "momap-video", "total"}  # fmt: skip
    assert sizes["total"] >= sum(v for k, v in sizes.items() if k != "total") and sizes["total"] % 4096 == 0
    for folder in out.iterdir():
        assert verify_weights(folder) > 0 and not list(out.glob("*.partial"))
    assert not (out / "image-diffusion/vae").exists() and not (out / "momap-vae-baseline/vae").exists()

    monkeypatch.setenv("MOMAP_CHECKPOINTS", str(out))
    pipe = load_pipeline("momap-diffusion")
    assert pipe.config.init_source == "inflate:image-diffusion"
    decoder = AutoencoderKL.from_pretrained(gan, torch_dtype=torch.float32).state_dict()
    for key, value in pipe.image_vae.state_dict().items():  # the fine-tuned decoder is the bundled one
        torch.testing.assert_close(value.float(), decoder[key], rtol=0, atol=0)
    prior = ImageDiffusionPipeline.from_pretrained("image-diffusion")
    assert all(torch.equal(v, pipe.image_vae.state_dict()[k]) for k, v in prior.vae.state_dict().items())
    for name in ("momap-vae-baseline", "momap-diffusion-dsl"):
        shared = load_pipeline(name)
        assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in shared.vae.state_dict().items())
    video_pipe = MoMapVideoPipeline.from_pretrained("momap-video")
    assert json.loads((out / "momap-video/model_index.json").read_text())["image_vae"] == [None, None]
    assert all(
        torch.equal(v, pipe.image_vae.state_dict()[k]) for k, v in video_pipe.image_vae.state_dict().items()
    )

    # an image VAE with another encoder would change every condition the UNet learnt: refused
    other = AutoencoderKL.from_pretrained(bundles / "image-vae", torch_dtype=torch.float32)
    torch.nn.init.normal_(other.encoder.conv_in.weight)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match=r"--image-vae: .* does not share the latent space"):
        _script().main(["--bundles", str(bundles), "--image-vae", str(tmp_path / "other"), "--out", str(out)])
