"""Prompt grounding: instance features, the grounder, the grounding map, and their path through
the UNet, the pipeline, the latent set and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from momaplib.diffusion.grounding import (
    PromptGrounder,
    instance_features,
    paint_scores,
    target_map,
    target_slots,
    train_grounder,
)
from momaplib.diffusion.unet import add_input_channels, build_unet
from tests.test_diffusion import TINY_UNET, randomize_, scene, tiny_image_vae


def test_instance_features_known_answers():
    H = W = 8
    instance = torch.zeros(2, H, W, dtype=torch.long)
    rgb = -torch.ones(2, 3, H, W)
    xyz = torch.zeros(2, 3, H, W)
    instance[0, :, :2] = 3  # two full columns on the left: pure red, x = 1
    rgb[0, 0, :, :2] = 1.0
    xyz[0, 0, :, :2] = 1.0
    instance[0, 4:6, 4:8] = 7  # a 2 x 4 block, green 0 / 1 half and half, z = 2 on one half only
    rgb[0, 1, 4:6, 4:6] = 1.0
    xyz[0, 2, 4:6, 4:6] = 2.0
    valid = torch.ones(2, H, W, dtype=torch.bool)
    valid[0, 4:6, 6:8] = False  # the block's half without a point does not count for its position
    instance[1, 0, 0] = 5  # the second map has one instance: its second slot is empty
    features, ids = instance_features(rgb, instance, xyz, valid)
    assert features.shape == (2, 2, 12) and ids.tolist() == [[3, 7], [5, 0]]
    red, block = features[0]
    torch.testing.assert_close(red, torch.tensor([1, 0, 0, 10 * 16 / 64, 1, 0, 0, 1, 2 / 8, 0, 0, 0.0]))
    torch.testing.assert_close(
        block, torch.tensor([0, 0.5, 0, 10 * 8 / 64, 0, 0, 2, 2 / 8, 4 / 8, 0, 0.5, 0.0])
    )
    assert torch.equal(features[1, 1], torch.zeros(12))
    with pytest.raises(ValueError, match=r"xyz0: expected \(2, 3, 8, 8\)"):
        instance_features(rgb, instance, xyz[:, :2])
    with pytest.raises(TypeError, match="instance: expected"):
        instance_features(rgb, instance.float(), xyz)


def test_paint_scores_target_map_and_slots():
    instance = torch.tensor([[[0, 4], [9, 9]]]).repeat_interleave(2, 1).repeat_interleave(2, 2)  # (1, 4, 4)
    ids = torch.tensor([[4, 9, 0]])
    painted = paint_scores(torch.tensor([[0.25, 0.75, 0.0]]), ids, instance, (2, 2))
    torch.testing.assert_close(painted, torch.tensor([[[[0.0, 0.25], [0.75, 0.75]]]]))
    torch.testing.assert_close(
        paint_scores(torch.tensor([[0.25, 0.75, 0.0]]), ids, instance, (1, 1)).flatten(),
        torch.tensor([0.4375]),
    )
    target = target_map(instance.repeat(3, 1, 1), torch.tensor([9, -1, 2]), (1, 2))
    torch.testing.assert_close(target, torch.tensor([[[[0.5, 0.5]]], [[[0.0, 0.0]]], [[[0.0, 0.0]]]]))
    assert target_slots(torch.tensor([[4, 9, 0], [4, 9, 0]]), torch.tensor([9, 0])).tolist() == [1, -1]


def _colour_task(n: int, seed: int):
    """Scenes of 3 instances, each a distinct one of 3 colours plus noise; prompt p (1..3) names
    colour p - 1 and the target is the instance of that colour."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.stack([torch.randperm(3, generator=g) for _ in range(n)])  # (n, 3) instance -> colour
    features = torch.randn(n, 4, 12, generator=g) * 0.3
    features[:, :3, :3] += torch.nn.functional.one_hot(colours, 3).float()
    features[:, 3] = 0  # an empty fourth slot
    ids = torch.tensor([[1, 2, 3, 0]]).repeat(n, 1)
    prompt_index = torch.randint(1, 4, (n,), generator=g)
    targets = (colours == (prompt_index - 1)[:, None]).float().argmax(1)
    return features, ids, targets, prompt_index


def test_grounder_learns_which_instance_the_prompt_names():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    table = torch.randn(4, 3, 16, generator=g)
    table[:, 2] = 0  # one padding token per prompt
    table[0] = 0  # row 0: the empty prompt, no token to read
    grounder = PromptGrounder(text_dim=16, width=32)
    features, ids, targets, prompt_index = _colour_task(600, 0)
    metrics = train_grounder(
        grounder, features, ids, targets, table, prompt_index, steps=300, batch_size=64, progress=False
    )
    assert metrics["train_accuracy"] > 0.95 and metrics["heldout_accuracy"] > 0.9, metrics
    features, ids, targets, prompt_index = _colour_task(300, 7)  # unseen scenes
    with torch.no_grad():
        probabilities = grounder.probabilities(features, ids, table[prompt_index])
        accuracy = float((probabilities.argmax(1) == targets).float().mean())
        blind = grounder.probabilities(features, ids, table[torch.zeros_like(prompt_index)])
    assert accuracy > 0.9
    assert float((blind.argmax(1) == targets).float().mean()) < 0.55  # without the prompt: near 1/3
    assert torch.equal(probabilities[:, 3], torch.zeros(300))  # empty slots get nothing
    torch.testing.assert_close(probabilities.sum(1), torch.ones(300))
    with pytest.raises(ValueError, match="train_grounder: 0 clips"):
        train_grounder(grounder, features, ids, torch.full_like(targets, -1), table, prompt_index, steps=1)
    with pytest.raises(ValueError, match=r"tokens: expected \(300, L, 16\)"):
        grounder(features, ids, table[prompt_index][..., :8])


def test_add_input_channels_keeps_the_function():
    torch.manual_seed(0)
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    randomize_(unet, seed=2)
    wider = add_input_channels(unet, 1)
    assert wider.config.in_channels == 21
    state = unet.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in wider.state_dict().items() if k != "conv_in.weight")
    g = torch.Generator().manual_seed(3)
    x, text = torch.randn(2, 20, 2, 2, generator=g), torch.randn(2, 3, 16, generator=g)
    extra = torch.randn(2, 1, 2, 2, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(
            wider(torch.cat([x, extra], 1), 5, encoder_hidden_states=text).sample,
            unet(x, 5, encoder_hidden_states=text).sample,
        )
    with pytest.raises(ValueError, match="count"):
        add_input_channels(unet, 0)


@pytest.fixture(scope="module")
def grounded_pipelines():
    """A tiny pipeline and the same one with a grounder and a UNet whose grounding input is live."""
    from momaplib.diffusion.pipeline import MoMapPipeline
    from momaplib.vae import MoMapVAE

    torch.manual_seed(0)
    vae = MoMapVAE.build(
        num_frames=2, latent_channels=8, block_out_channels=(8,) * 4, layers_per_block=1, norm_num_groups=4
    )
    image_vae = tiny_image_vae()
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    randomize_(unet, seed=3)
    wider = add_input_channels(unet, 1)
    with torch.no_grad():
        wider.conv_in.weight[:, -1] = torch.randn(wider.conv_in.weight[:, -1].shape)
    scheduler = DDIMScheduler(
        num_train_timesteps=100, prediction_type="v_prediction", timestep_spacing="trailing"
    )
    common = dict(vae=vae, image_vae=image_vae, scheduler=scheduler, text_encoder="none:16")
    plain = MoMapPipeline(unet=unet, **common)
    grounded = MoMapPipeline(unet=wider, grounder=PromptGrounder(text_dim=16, width=8), **common)
    return plain, grounded


def test_the_grounding_map_goes_with_the_prompt_only(grounded_pipelines, tmp_path):
    from momaplib.diffusion.pipeline import MoMapPipeline, load_pipeline

    plain, grounded = grounded_pipelines
    image, xyz, instance = scene()
    instance[:4] = 0  # background, instance 1 and instance 2
    instance[4:, :8] = 2

    def run(pipeline, prompt, **kw):
        return pipeline(
            image, xyz=xyz, instance_map=instance, prompt=prompt, num_samples=2, num_inference_steps=2,
            generator=torch.Generator().manual_seed(0), progress=False, **kw,
        )  # fmt: skip

    # no prompt: the grounding channel is zero, so the live extra weights change nothing
    np.testing.assert_allclose(run(grounded, None).xyz, run(plain, None).xyz, rtol=1e-5, atol=1e-6)
    assert run(plain, "push").grounding is None
    with_prompt = run(grounded, ["push", ""])
    assert with_prompt.grounding["ids"].tolist() == [1, 2]
    np.testing.assert_allclose(with_prompt.grounding["probabilities"].sum(1), [1.0, 0.0], atol=1e-6)
    # guided, the prompt's branch gets the map and the unconditional one zeros: a call at g = 1
    # (the text branch alone) differs from the plain UNet's only through the map
    assert not np.allclose(
        run(grounded, "push", guidance_scale=1.0).xyz, run(plain, "push", guidance_scale=1.0).xyz
    )

    grounded.save_pretrained(tmp_path / "pipe")
    loaded = load_pipeline(tmp_path / "pipe")
    assert isinstance(loaded.grounder, PromptGrounder)
    np.testing.assert_allclose(run(loaded, "push").xyz, run(grounded, "push").xyz, rtol=1e-5, atol=1e-6)
    # a grounded UNet without its grounder (or the reverse) is refused with the channel count
    broken = MoMapPipeline(
        unet=grounded.unet, vae=plain.vae, image_vae=plain.image_vae, scheduler=plain.scheduler
    )
    with pytest.raises(
        ValueError, match=r"in_channels 21 does not match 8 MoMap latent \+ 12 condition channels .* = 20"
    ):
        run(broken, "push")


def test_guidance_gives_the_map_to_the_prompt_branch_and_zeros_to_the_other(grounded_pipelines):
    _, grounded = grounded_pipelines
    image, xyz, instance = scene()
    seen = []
    forward = grounded.unet.forward

    def recording(sample, *args, **kwargs):
        seen.append(sample[:, -1].clone())  # the grounding channel of each call
        return forward(sample, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grounded.unet, "forward", recording)
        grounded(
            image, xyz=xyz, instance_map=instance, prompt="push", num_samples=2, num_inference_steps=2,
            guidance_scale=2.0, generator=torch.Generator().manual_seed(0), progress=False,
        )  # fmt: skip
    assert len(seen) == 2  # one batched call per step: [unconditional | prompt]
    for channel in seen:
        assert not channel[:2].any() and channel[2:].sum() > 0
