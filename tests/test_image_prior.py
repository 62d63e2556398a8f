"""The image prior's training images from the generators' latent caches (``latent_sets``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from momaplib.data import write_dataset
from momaplib.diffusion.image_prior import TrainImageDiffusionJob, _cached_frames, _encode, scene_caption
from momaplib.diffusion.latents import encode_datasets, save_latent_set
from momaplib.diffusion.text import load_text_encoder
from momaplib.sim import SimConfig
from momaplib.training import TrainConfig
from tests.test_diffusion import tiny_image_vae, tiny_momap_vae


def test_cached_frames_are_the_priors_own_encodings_one_per_scene(tmp_path, capsys):
    sim = SimConfig().smoke()
    write_dataset(tmp_path / "sim", sim, num_clips=24, workers=0, progress=False)
    image_vae = tiny_image_vae().eval()
    image_vae.save_pretrained(tmp_path / "image_vae")
    text = load_text_encoder("none:16")
    cache = encode_datasets([tmp_path / "sim"], "train", tiny_momap_vae(sim.num_frames), image_vae, text,
                            progress=False)  # fmt: skip
    # a second future of the first scene: the same frame, which the prior takes once
    variant = replace(cache, ids=[*cache.ids[:-1], cache.ids[0] + "_m1"])
    save_latent_set(variant, tmp_path / "cache.safetensors")
    job = TrainImageDiffusionJob(
        datasets=(tmp_path / "sim",), image_vae=str(tmp_path / "image_vae"), text_encoder="none:16",
        train=TrainConfig(tmp_path / "p", num_workers=0),
    )  # fmt: skip
    own = _encode(job, "train", image_vae, text, "cpu")
    latents, captions = _cached_frames([tmp_path / "cache.safetensors"], tuple(own["latents"].shape[1:]))
    n = len(cache) - 1
    assert len(latents) == len(captions) == n  # the motion variant left out
    # the same frames, encoded alike
    torch.testing.assert_close(latents, own["latents"][:n], rtol=1e-4, atol=1e-4)
    assert captions == own["captions"][:n]
    assert captions[0] == scene_caption(cache.prompts[int(cache.prompt_index[0])], "tabletop")
    with pytest.raises(ValueError, match=r"latent_sets: .* expected"):
        _cached_frames([tmp_path / "cache.safetensors"], (4, 8, 8))

    replace(job, latent_sets=(tmp_path / "cache.safetensors",), smoke=True).run()
    assert f"dataset frames and {n} of latent caches" in capsys.readouterr().out
