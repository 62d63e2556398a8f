"""The image prior's evaluation (momaplib.eval.image_prior): the classifier, the distances, the table."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from momaplib.eval.image_prior import (
    Frames,
    evaluate_image_prior,
    nearest_train_distance,
    prior_markdown,
    prior_samples_figure,
    reference_frames,
    train_family_classifier,
    vae_round_trip,
)


def _synthetic(count: int, seed: int) -> Frames:
    """Two families a CNN can tell apart: a dark upper half (family 0) or a dark left half (1), noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(100, 200, (2 * count, 32, 32, 3)).astype(np.uint8)
    images[:count, :16] //= 4
    images[count:, :, :16] //= 4
    return Frames(images, [f"caption {i}" for i in range(2 * count)], np.repeat([0, 1], count))


def test_the_classifier_learns_two_separable_families_and_fails_on_swapped_labels():
    train, test = _synthetic(40, 0), _synthetic(20, 1)
    model = train_family_classifier(train, steps=150)
    assert model.accuracy(test) >= 0.95
    swapped = Frames(test.images, test.captions, 1 - test.labels)
    assert model.accuracy(swapped) <= 0.05


def test_sharpness_falls_with_blur_and_is_zero_on_a_flat_or_linear_image():
    import cv2

    from momaplib.eval.image_prior import sharpness

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    blurred = cv2.GaussianBlur(image, (5, 5), 1.5)
    ramp = np.repeat(np.repeat(np.arange(32, dtype=np.uint8)[None, :, None] * 8, 32, 0), 3, 2)
    s = sharpness(np.stack([image, blurred, np.full_like(image, 77), ramp]))
    assert s[1] < 0.3 * s[0]
    assert s[2] == pytest.approx(0.0) and s[3] == pytest.approx(0.0, abs=1e-6)


def test_nearest_train_distance_is_zero_for_a_training_frame_and_the_rms_otherwise():
    train = np.zeros((3, 8, 8, 3), np.uint8)
    train[1] = 255
    images = np.stack([train[1], np.full((8, 8, 3), 51, np.uint8)])
    d = nearest_train_distance(images, train, size=8)
    assert d[0] == pytest.approx(0.0, abs=1e-7)
    assert d[1] == pytest.approx(0.2, rel=1e-5)  # 51/255 from the black frames in every pixel


class _CopyPipe:
    """A 'prior' that returns the test frame of each caption (a perfect model) or noise."""

    def __init__(self, frames: Frames, noise: bool):
        self.lookup, self.noise = dict(zip(frames.captions, frames.images, strict=True)), noise

    def __call__(self, prompts, height, width, steps, guidance, generator=None, progress=False):
        if self.noise:
            g = np.random.default_rng(int(torch.randint(1 << 30, (1,), generator=generator)))
            return g.integers(0, 256, (len(prompts), height, width, 3)).astype(np.uint8)
        return np.stack([self.lookup[p] for p in prompts])


def test_a_perfect_prior_matches_the_real_row_and_noise_does_not():
    train, test = _synthetic(40, 0), _synthetic(10, 1)
    rows, samples = evaluate_image_prior(_CopyPipe(test, False), train, test, classifier_steps=150)
    real, prior = rows["real test frames"], rows["prior samples"]
    assert prior["family_accuracy"] == real["family_accuracy"] >= 0.95
    assert prior["distance_ratio"] == pytest.approx(1.0)
    assert samples.captions == test.captions
    assert prior["sharpness_ratio"] == pytest.approx(1.0)
    rows, _ = evaluate_image_prior(_CopyPipe(test, True), train, test, classifier_steps=150)
    assert rows["prior samples"]["distance_ratio"] > 1.5
    assert rows["prior samples"]["sharpness_ratio"] > 2  # noise is sharper than any frame
    assert "| prior samples | 20 |" in prior_markdown(rows)
    fig = prior_samples_figure(test, samples, columns=3)
    assert len(fig.axes) == 4 * 3


class _Identity:
    """An 'autoencoder' whose latents are the images: its round trip returns every frame."""

    device, dtype = torch.device("cpu"), torch.float32

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=x))

    def decode(self, z):
        return SimpleNamespace(sample=z)


def test_the_vae_round_trip_row_of_a_lossless_decoder_equals_the_real_frames():
    train, test = _synthetic(40, 0), _synthetic(10, 1)
    pipe = _CopyPipe(test, True)
    pipe.vae = _Identity()
    assert np.array_equal(vae_round_trip(pipe.vae, test, batch_size=3).images, test.images)
    rows, _ = evaluate_image_prior(pipe, train, test, classifier_steps=150)
    real, trip = rows["real test frames"], rows["image VAE round trip"]
    assert trip["sharpness_ratio"] == pytest.approx(1.0) and trip["distance_ratio"] == pytest.approx(1.0)
    assert trip["family_accuracy"] == real["family_accuracy"]
    assert "| image VAE round trip | 20 |" in prior_markdown(rows)


def test_reference_frames_of_both_families_and_disjoint_splits():
    from momaplib.sim import SimConfig

    small = SimConfig().smoke()
    train = reference_frames(2, "train", configs=[small])
    test = reference_frames(2, "test", configs=[small])
    assert train.images.shape == (4, 32, 32, 3) and train.labels.tolist() == [0, 0, 1, 1]
    assert train.captions[0].startswith("a tabletop scene") and train.captions[2].startswith("an egocentric")
    assert not any((a == b).all() for a in train.images for b in test.images)


def test_frames_name_the_field_that_is_wrong():
    with pytest.raises(ValueError, match="images: expected"):
        Frames(np.zeros((2, 4, 4), np.uint8), ["a", "b"], np.zeros(2))
    with pytest.raises(ValueError, match="captions / labels"):
        Frames(np.zeros((2, 4, 4, 3), np.uint8), ["a"], np.zeros(2))


def test_eval_image_prior_scores_a_saved_pipeline_and_writes_json_and_figure(tmp_path):
    import json

    from diffusers import DDIMScheduler

    from momaplib.diffusion.image_prior import ImageDiffusionPipeline
    from tests.scripts import load_benchmark
    from tests.test_diffusion import tiny_image_unet, tiny_image_vae

    pipe = ImageDiffusionPipeline(
        unet=tiny_image_unet(), vae=tiny_image_vae(), scheduler=DDIMScheduler(), text_encoder="none:16"
    )
    pipe.save_pretrained(tmp_path / "prior")
    out, figure = tmp_path / "prior.json", tmp_path / "prior.png"
    record = load_benchmark("eval_image_prior").main([
        "--prior", str(tmp_path / "prior"), "--train-clips", "3", "--test-clips", "1", "--steps", "2",
        "--out", str(out), "--figure", str(figure),
    ])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(record["rows"]))
    assert (
        saved["rows"]["real test frames"]["images"] == 2
        and saved["rows"]["real test frames"]["distance_ratio"] == 1
    )
    assert figure.stat().st_size > 0 and saved["device_name"] and saved["settings"]["train_clips"] == 3
