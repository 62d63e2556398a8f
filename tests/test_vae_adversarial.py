"""The image VAE's patch-adversarial term (momaplib.vae.adversarial) and its decoder-only fine-tune."""

from __future__ import annotations

import json

import pytest
import torch

from momaplib.data import write_dataset
from momaplib.sim import SimConfig
from momaplib.training import TrainConfig
from momaplib.vae.adversarial import PatchDiscriminator, adversarial_losses, balance_weight

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_each_hinge_loss_reaches_only_its_own_side():
    torch.manual_seed(0)
    critic = PatchDiscriminator(channels=8, num_layers=2)
    maker = torch.nn.Conv2d(3, 3, 3, padding=1)  # stands in for the decoder
    real, latent = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 3, 32, 32)
    generator, critic_loss = adversarial_losses(critic, real, maker(latent))
    assert critic(real).shape == (2, 1, 6, 6)  # one logit per overlapping patch
    # the generator term moves the decoder, never the critic; the critic term the reverse
    generator.backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in critic.parameters())
    assert any(p.grad is not None and p.grad.any() for p in maker.parameters())
    maker.zero_grad()
    critic_loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in maker.parameters())
    assert all(p.grad is not None for p in critic.parameters())
    # known answers of the hinge: a critic that scores everything 0 costs 1 + 1, the generator 0
    for p in critic.parameters():
        torch.nn.init.zeros_(p)
    generator, critic_loss = adversarial_losses(critic, real, maker(latent))
    assert float(generator.detach()) == 0.0 and float(critic_loss.detach()) == pytest.approx(2.0)


def test_the_balance_weight_is_the_ratio_of_the_two_gradients_at_the_last_layer():
    last = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    reconstruction = (3 * last).sum()  # gradient (3, 3): norm 3 sqrt 2
    generator = (last**2).sum()  # gradient 2 W = (2, 4): norm 2 sqrt 5
    weight = balance_weight(reconstruction, generator, last)
    assert float(weight) == pytest.approx(3 * 2**0.5 / (2 * 5**0.5 + 1e-4)) and not weight.requires_grad
    assert float(balance_weight(1e6 * last.sum(), 0 * last.sum(), last)) == 1e4  # a silent critic: capped


def test_decoder_only_adversarial_fine_tune_keeps_the_latent_space(tmp_path):
    from diffusers import AutoencoderKL

    from momaplib.vae.train import TrainImageVAEJob

    write_dataset(tmp_path / "data", SimConfig().smoke(), num_clips=4, workers=0, progress=False)
    sets = (tmp_path / "data",)
    first = TrainImageVAEJob(sets, TrainConfig(tmp_path / "img", progress=False), smoke=True).run()
    tuned = TrainImageVAEJob(
        sets, TrainConfig(tmp_path / "gan", progress=False), pretrained=str(first), trainable="decoder",
        adversarial_weight=0.1, adversarial_start=2, smoke=True,
    ).run()  # fmt: skip
    before = AutoencoderKL.from_pretrained(first).state_dict()
    after = AutoencoderKL.from_pretrained(tuned).state_dict()  # the VAE alone: no critic weights
    assert after.keys() == before.keys()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder
    for key in encoder:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(after[key], before[key]) for key in decoder)
    records = [json.loads(line) for line in open(tmp_path / "gan" / "metrics.jsonl")]
    assert all("adversarial" in r and "critic" in r for r in records)
    assert (
        "balance" not in records[0] and records[-1]["balance"] > 0
    )  # the decoder hears the critic from step 2
    with pytest.raises(ValueError, match="needs pretrained"):
        TrainImageVAEJob(trainable="decoder")
    with pytest.raises(ValueError, match="adversarial_weight"):
        TrainImageVAEJob(adversarial_weight=-1.0)
