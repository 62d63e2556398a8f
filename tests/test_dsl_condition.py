"""Conditions as configuration and the motion DSL as a UNet condition: channel bookkeeping, what
reaches the UNet, batched sampling of several scenes, the batched GT DSL, and the training job."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler

from momaplib.control import DSLValidationError, MotionDSL, OraclePlanner, PlannerError, dsl_from_momap
from momaplib.control.batch import dsl_pixels_from_channels
from momaplib.data import model_inputs, simulate_split_clips
from momaplib.diffusion.conditions import (
    check_conditions,
    condition_channels,
    dsl_latent,
    select_image_latents,
)
from momaplib.diffusion.unet import build_unet
from momaplib.sim import SimConfig
from tests.test_diffusion import TINY_UNET, randomize_, scene, tiny_image_vae, tiny_momap_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 9  # one DSL window of 8 frames
SIZE = 16
K = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]], dtype=np.float32)


def tiny_pipeline(conditions, text_encoder: str = "none:16", window: int = 4, seed: int = 3):
    from momaplib.diffusion.dsl import num_dsl_windows
    from momaplib.diffusion.pipeline import MoMapPipeline

    torch.manual_seed(0)
    vae = tiny_momap_vae(T)
    windows = num_dsl_windows(T, window) if "dsl" in conditions else 0
    unet = build_unet(
        latent_channels=8, condition_channels=condition_channels(conditions, windows), cross_attention_dim=16,
        **TINY_UNET,
    )  # fmt: skip
    randomize_(unet, seed=seed)
    scheduler = DDIMScheduler(
        num_train_timesteps=100, prediction_type="v_prediction", timestep_spacing="trailing"
    )
    return MoMapPipeline(
        unet=unet, vae=vae, image_vae=tiny_image_vae(), scheduler=scheduler, text_encoder=text_encoder,
        conditions=list(conditions), dsl_window=window,
    )  # fmt: skip


def two_patch_dsl(window: int = 4) -> MotionDSL:
    """The DSL of ``scene()``'s two instances (ids 0 = left half is background, 1 = right half)."""
    return MotionDSL.from_flags([1], ["block"], np.array([[[1, 0, 0], [0, -1, 0]]]), window)


# ----------------------------------------------------------------------------- conditions
def test_conditions_are_checked_and_put_in_channel_order():
    assert check_conditions("text, dsl,rgb") == ("rgb", "dsl", "text")
    assert condition_channels(("rgb", "instance", "xyz", "text")) == 12
    assert condition_channels(("rgb", "instance", "xyz", "dsl"), dsl_windows=4) == 24
    assert condition_channels(("rgb", "xyz", "grounding", "text")) == 9
    for bad, message in [
        (("rgb", "depth"), r"unknown \['depth'\]"),
        (("rgb", "rgb"), r"\['rgb'\] named more than once"),
        ((), "at least one"),
        (("rgb", "grounding"), "needs 'text'"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_conditions(bad)
    with pytest.raises(ValueError, match="dsl_windows"):
        condition_channels(("rgb", "dsl"))


def test_select_image_latents_keeps_the_named_blocks():
    latents = torch.arange(12.0)[None, :, None, None].expand(2, -1, 3, 3)
    assert select_image_latents(latents, ("rgb", "instance", "xyz", "text")) is latents
    kept = select_image_latents(latents, ("rgb", "xyz", "text"))
    assert kept[0, :, 0, 0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert select_image_latents(latents, ("instance", "dsl"))[0, :, 0, 0].tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match=r"expected \(B, 12, h, w\)"):
        select_image_latents(latents[:, :8], ("rgb",))


def test_dsl_latent_is_the_cell_mean_of_the_pixels():
    pixels = torch.zeros(1, 3, 16, 16)
    pixels[0, 0, :, 4:12] = 1.0  # a patch over half of each of the two middle 8x8 columns of cells
    cells = dsl_latent(pixels, (2, 2))
    np.testing.assert_allclose(cells[0, 0].numpy(), [[0.5, 0.5], [0.5, 0.5]])
    assert not cells[0, 1:].any()


def test_batched_dsl_equals_the_per_clip_dsl_on_simulated_clips():
    for family in ("tabletop", "egocentric"):
        clips = simulate_split_clips(family, 3, config=SimConfig().smoke(), split="test", progress=False)
        inputs = [model_inputs(gt) for _, gt in clips]
        got = dsl_pixels_from_channels(
            torch.stack([item["momap"] for item in inputs]),
            torch.stack([item["instance"] for item in inputs]),
            torch.stack([item["valid"] for item in inputs]),
        )
        for (_, gt), pixels in zip(clips, got, strict=True):
            expected = dsl_from_momap(gt).to_pixels(gt.instance)
            np.testing.assert_array_equal(pixels.numpy(), expected)
        assert got.abs().sum() > 0  # something moves, so the comparison is not all zeros


# ----------------------------------------------------------------------------- the DSL pipeline
def _unet_inputs(pipeline, monkeypatch) -> list[torch.Tensor]:
    seen = []
    forward = pipeline.unet.forward

    def spy(sample, *args, **kwargs):
        seen.append(sample.detach().clone())
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(pipeline.unet, "forward", spy)
    return seen


def test_the_dsl_reaches_the_unet_with_guidance_against_no_dsl(monkeypatch):
    pipeline = tiny_pipeline(("rgb", "instance", "xyz", "dsl"))
    image, xyz, instance = scene(size=SIZE)
    seen = _unet_inputs(pipeline, monkeypatch)
    dsl = two_patch_dsl()
    args = dict(xyz=xyz, instance_map=instance, num_samples=2, num_inference_steps=2, progress=False)
    out = pipeline(image, dsl=dsl, generator=torch.Generator().manual_seed(0), **args)
    assert out.dsl == dsl and out.xyz.shape == (2, T, SIZE, SIZE, 3)
    expected = dsl_latent(torch.from_numpy(dsl.to_pixels(instance))[None], (2, 2))[0]
    first = seen[0]  # (2 uncond + 2 cond, 8 + 12 + 6, 2, 2)
    assert first.shape == (4, 8 + 12 + 6, 2, 2)
    assert not first[:2, -6:].any()
    for row in first[2:]:
        torch.testing.assert_close(row[-6:], expected)
    # the same DSL as JSON, as a dict and as pixels gives the same samples
    for form in (dsl.to_json(), json.loads(dsl.to_json()), dsl.to_pixels(instance)):
        again = pipeline(image, dsl=form, generator=torch.Generator().manual_seed(0), **args)
        np.testing.assert_array_equal(again.xyz, out.xyz)
    # no DSL: one unguided row per sample, zeros in the DSL channels
    seen.clear()
    pipeline(image, generator=torch.Generator().manual_seed(0), **args)
    assert seen[0].shape[0] == 2 and not seen[0][:, -6:].any()


def test_the_pipeline_keeps_its_conditions_through_save_and_load(tmp_path):
    from momaplib.diffusion.pipeline import MoMapPipeline

    pipeline = tiny_pipeline(("rgb", "xyz", "dsl"), window=8)
    pipeline.save_pretrained(tmp_path / "p")
    loaded = MoMapPipeline.from_pretrained(tmp_path / "p")
    assert loaded.conditions == ("rgb", "xyz", "dsl") and loaded.config.dsl_window == 8
    assert loaded.dsl_windows == 1 and loaded.unet.config.in_channels == 8 + 8 + 3
    image, xyz, instance = scene(size=SIZE)
    dsl = MotionDSL.from_flags([1], ["block"], np.array([[[0, 0, 1]]]), 8)
    out = loaded(
        image, xyz=xyz, instance_map=instance, dsl=dsl, num_samples=1, num_inference_steps=2, progress=False
    )
    assert np.isfinite(out.xyz).all()


@pytest.mark.parametrize(
    "conditions", [("rgb", "instance", "text"), ("rgb", "xyz", "text"), ("instance", "xyz", "dsl", "text")]
)
def test_ablation_conditions_build_and_sample(conditions):
    pipeline = tiny_pipeline(conditions)
    image, xyz, instance = scene(size=SIZE)
    dsl = two_patch_dsl() if "dsl" in conditions else None
    out = pipeline(
        image, xyz=xyz, instance_map=instance, prompt="push", dsl=dsl, num_samples=2, num_inference_steps=2,
        progress=False,
    )  # fmt: skip
    assert out.xyz.shape == (2, T, SIZE, SIZE, 3) and np.isfinite(out.xyz).all()


def test_bad_dsl_arguments_fail_before_anything_is_encoded(monkeypatch):
    from momaplib.diffusion import pipeline as module

    dsl_pipeline = tiny_pipeline(("rgb", "instance", "xyz", "dsl"))
    text_pipeline = tiny_pipeline(("rgb", "instance", "xyz", "text"))
    encoded = []
    monkeypatch.setattr(module, "condition_latents", lambda *a, **k: encoded.append(1))
    image, xyz, instance = scene(size=SIZE)
    good = two_patch_dsl()
    wrong_window = MotionDSL.from_flags([1], ["block"], np.array([[[1, 0, 0], [0, 0, 0]]]), 8)
    three_windows = MotionDSL.from_flags([1], ["block"], np.zeros((1, 3, 3), np.int8), 4)
    unknown_id = MotionDSL.from_flags([7], ["ghost"], np.zeros((1, 2, 3), np.int8), 4)

    class Failing:
        def plan(self, image, instance_map, prompt, labels=None):
            raise PlannerError("no valid DSL after the repair prompt", answers=["{"])

    class Garbage:
        def plan(self, image, instance_map, prompt, labels=None):
            motion = [["lft", "stay", "stay"], ["stay", "stay", "stay"]]
            return json.dumps(
                {"fps": 10, "window": 4, "patches": [{"id": 1, "label": "x", "motion": motion}]}
            )

    cases = [
        (text_pipeline, dict(dsl=good), ValueError, "dsl: this pipeline's UNet does not read a motion DSL"),
        (text_pipeline, dict(planner=Failing(), prompt="p"), ValueError, "planner: this pipeline"),
        (dsl_pipeline, dict(dsl=good, planner=Failing(), prompt="p"), ValueError, "give one of them"),
        (
            dsl_pipeline,
            dict(dsl=wrong_window),
            DSLValidationError,
            "window: the pipeline's DSL windows are 4",
        ),
        (dsl_pipeline, dict(dsl=three_windows), DSLValidationError, "expected 2 windows, got 3"),
        (dsl_pipeline, dict(dsl=unknown_id), DSLValidationError, r"patches\[0\]\.id: unknown patch id 7"),
        (dsl_pipeline, dict(dsl="{not json"), DSLValidationError, "DSL JSON: not valid JSON"),
        (
            dsl_pipeline,
            dict(dsl=np.zeros((5, SIZE, SIZE))),
            DSLValidationError,
            r"dsl: pixels must be \(3 \* 2",
        ),
        (dsl_pipeline, dict(dsl=3.0), TypeError, "dsl: expected a MotionDSL"),
        (
            dsl_pipeline,
            dict(planner=object(), prompt="p"),
            TypeError,
            "planner: expected an object with plan",
        ),
        (dsl_pipeline, dict(planner=Failing()), ValueError, "a planner needs one non-empty prompt"),
        (dsl_pipeline, dict(planner=Failing(), prompt="p"), PlannerError, "no valid DSL"),
        (dsl_pipeline, dict(planner=Garbage(), prompt="p"), DSLValidationError, "lft"),
    ]
    for pipeline, kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            pipeline(image, xyz=xyz, instance_map=instance, num_samples=1, progress=False, **kwargs)
    assert not encoded


def test_sampling_scenes_together_equals_sampling_each():
    pipeline = tiny_pipeline(("rgb", "instance", "xyz", "dsl"))
    scenes, singles = [], []
    for seed, dsl in ((0, two_patch_dsl()), (1, None), (2, two_patch_dsl())):
        image, xyz, instance = scene(seed, size=SIZE)
        scenes.append(dict(image=image, xyz=xyz, instance_map=instance, dsl=dsl, K=K))
        single = pipeline(
            image, xyz=xyz, instance_map=instance, dsl=dsl, K=K, num_samples=3, num_inference_steps=3,
            generator=torch.Generator().manual_seed(seed), progress=False,
        )  # fmt: skip
        singles.append(single.xyz)
    generators = [torch.Generator().manual_seed(seed) for seed in range(3)]
    together = pipeline.sample_scenes(scenes, 3, num_inference_steps=3, generator=generators, progress=False)
    for output, single in zip(together, singles, strict=True):
        np.testing.assert_allclose(output.xyz, single, atol=1e-4, rtol=1e-4)
    # the rows really ran in one batch: 3 scenes x 3 samples x (cond + uncond)
    assert not np.allclose(together[0].xyz, together[2].xyz)
    with pytest.raises(ValueError, match="generator: expected one per scene"):
        pipeline.sample_scenes(scenes, 3, generator=generators[:2])
    with pytest.raises(ValueError, match=r"scenes: unknown key\(s\) \['depht'\]"):
        pipeline.sample_scenes([dict(scenes[0], depht=None)], 1)


def test_oracle_planner_drives_the_dsl_pipeline_on_a_simulated_clip():
    from momaplib.diffusion.objectives import pipeline_predictor

    (_, gt), *_ = simulate_split_clips(
        "tabletop", 1, config=SimConfig().smoke(), split="test", progress=False
    )
    pipeline = tiny_pipeline(("rgb", "instance", "xyz", "dsl"), window=8)
    pipeline.vae = tiny_momap_vae(gt.num_frames)
    predict = pipeline_predictor(pipeline, planner=OraclePlanner(), num_inference_steps=2)
    samples = predict(gt, 2, 0)
    assert samples.shape == (2, *gt.xyz.shape) and torch.isfinite(samples).all()


# ----------------------------------------------------------------------------- training
def test_the_training_job_trains_a_dsl_unet_without_text(tmp_path):
    from momaplib.data import write_dataset
    from momaplib.diffusion.latents import load_latent_set
    from momaplib.diffusion.pipeline import MoMapPipeline
    from momaplib.diffusion.train import TrainDiffusionJob
    from momaplib.training import TrainConfig
    from tests.test_diffusion import _tiny_frozen_models

    sim = SimConfig().smoke()
    write_dataset(tmp_path / "data", sim, num_clips=6, workers=0, progress=False)
    vae, image_vae = _tiny_frozen_models(tmp_path, sim.num_frames)
    folder = TrainDiffusionJob(
        datasets=(tmp_path / "data",), train=TrainConfig(tmp_path / "run", progress=False, num_workers=0),
        vae=vae, image_vae=image_vae, text_encoder="none:16", conditions=("rgb", "instance", "xyz", "dsl"),
        num_val_clips=0, smoke=True,
    ).run()  # fmt: skip
    pipeline = MoMapPipeline.from_pretrained(folder)
    assert pipeline.conditions == ("rgb", "instance", "xyz", "dsl")
    assert pipeline.unet.config.in_channels == 8 + 12 + 3  # T = 8 frames: one window
    cache = load_latent_set(tmp_path / "run" / "latents_train.safetensors")
    assert cache.dsl.shape == (len(cache), 3, sim.height // 8, sim.width // 8) and cache.dsl.abs().sum() > 0
    with pytest.raises(ValueError, match="conditions: only --model diffusion"):
        TrainDiffusionJob(model="momap-vae", conditions=("rgb", "dsl"))
    with pytest.raises(ValueError, match="dsl_dropout"):
        TrainDiffusionJob(dsl_dropout=1.0)


# ----------------------------------------------------------------------------- the widgets' DSL editor
def test_dsl_editor_round_trips_and_drives_the_panel(monkeypatch):
    pytest.importorskip("ipywidgets")
    from momaplib.ui import SamplingPanel
    from momaplib.ui.dsl_editor import CHOICES, DSLEditor

    assert len(CHOICES) == 27 and CHOICES[0] == "stay / stay / stay"
    rng = np.random.default_rng(0)
    dsl = MotionDSL.from_flags([2, 5], ["red block", "cup"], rng.integers(-1, 2, (2, 3, 3)), 8)
    editor = DSLEditor([2, 5], dsl.labels, 3, 8)
    assert not editor.dsl().flags().any()  # starts with every patch staying
    editor.set(dsl)
    assert editor.dsl() == dsl

    pipeline = tiny_pipeline(("rgb", "instance", "xyz", "dsl"), window=8)
    pipeline.vae = tiny_momap_vae(32)
    unet = build_unet(latent_channels=8, condition_channels=24, cross_attention_dim=16, **TINY_UNET)
    pipeline.unet = unet
    panel = SamplingPanel(pipeline)
    panel.panel(num_samples=2, num_inference_steps=2)
    scene = panel.load_scene(panel.widgets["scene"].value)
    assert panel.dsl_editor.dsl() == dsl_from_momap(scene)  # filled with the scene's GT DSL
    header = panel.dsl_editor.widget.children[0].children
    assert [label.value for label in header[1:]][-1] == "frames 24-31 (x / y / z)"  # the clip's last window
    first = panel.dsl_editor.ids[0]
    panel.dsl_editor.dropdowns[first][1].value = "left / up / forward"
    wanted = panel.dsl_editor.dsl()
    assert wanted.patch(first).motion[1] == ("left", "up", "forward")
    panel._on_generate()
    assert MotionDSL.from_json(panel.last_result.meta["dsl"]) == wanted


def test_the_demo_samples_the_bundled_dsl_model_under_a_dsl_file(tmp_path):
    from momaplib.data.examples import EXAMPLES_DIR, load_example
    from momaplib.demo import main

    gt = load_example(EXAMPLES_DIR / "tabletop_blue_block").momap()
    (tmp_path / "dsl.json").write_text(dsl_from_momap(gt).to_json(indent=1))
    flags = ["--scenes", "tabletop_blue_block", "--dsl", str(tmp_path / "dsl.json"), "--num-samples", "2"]
    written = main(["--out", str(tmp_path / "out"), *flags, "--num-inference-steps", "2"])
    readme = (tmp_path / "out" / "README.txt").read_text()
    assert f"DSL {tmp_path / 'dsl.json'}" in readme
    assert (tmp_path / "out" / "tabletop_blue_block_generated_grid.png") in written


# ----------------------------------------------------------------------------- the image-diffusion prior
def test_image_prior_trains_samples_and_is_inflated_into_a_momap_unet(tmp_path):
    from momaplib.data import write_dataset
    from momaplib.diffusion.image_prior import ImageDiffusionPipeline, TrainImageDiffusionJob, scene_caption
    from momaplib.diffusion.train import TrainDiffusionJob, _build_model
    from momaplib.training import TrainConfig

    sim = SimConfig().smoke()
    write_dataset(tmp_path / "sim_tabletop", sim, num_clips=24, workers=0, progress=False)  # val clips too
    tiny_image_vae().save_pretrained(tmp_path / "image_vae")
    loop = TrainConfig(tmp_path / "prior", progress=False, num_workers=0)
    job = TrainImageDiffusionJob(
        datasets=(tmp_path / "sim_tabletop",), train=loop, image_vae=str(tmp_path / "image_vae"),
        text_encoder="none:16", smoke=True,
    )  # fmt: skip
    folder = job.run()
    metrics = [json.loads(line) for line in (tmp_path / "prior" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(np.isfinite(m["loss"]) for m in metrics)
    assert 0 <= metrics[-1]["val/l1"] <= 2  # validation sampled the val frames
    pipeline = ImageDiffusionPipeline.from_pretrained(folder)
    captions = [scene_caption("push the red block left", "tabletop"), ""]
    images = pipeline(
        captions, sim.height, sim.width, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
        progress=False,
    )  # fmt: skip
    assert images.shape == (2, sim.height, sim.width, 3) and images.dtype == np.uint8
    # the MoMap UNet starts from the prior's unet/ folder (the Stable Diffusion layout)
    inflated = _build_model(TrainDiffusionJob(init="inflate", image_unet=str(folder)), 8, 16, sim.height // 8)
    kept = {k: v for k, v in inflated.state_dict().items() if not k.startswith(("conv_in", "conv_out"))}
    prior = pipeline.unet.state_dict()
    assert kept and all(torch.equal(v, prior[k]) for k, v in kept.items())
    # a bundle without its own vae/ shares the bundled image VAE (as momap-diffusion's parts do)
    import shutil

    from momaplib.checkpoints import resolve_checkpoint, write_weight_manifest

    shutil.copytree(folder, tmp_path / "no_vae")
    shutil.rmtree(tmp_path / "no_vae" / "vae")
    write_weight_manifest(tmp_path / "no_vae")
    shared = ImageDiffusionPipeline.from_pretrained(tmp_path / "no_vae")
    bundled = AutoencoderKL.from_pretrained(resolve_checkpoint("image-vae")).state_dict()
    assert all(torch.equal(v, bundled[k]) for k, v in shared.vae.state_dict().items())
    with pytest.raises(ValueError, match="caption_dropout"):
        TrainImageDiffusionJob(caption_dropout=1.0)


def test_an_image_prior_continues_from_a_pretrained_unet(tmp_path):
    from momaplib.data import write_dataset
    from momaplib.diffusion.image_prior import ImageDiffusionPipeline, TrainImageDiffusionJob, pretrained_unet
    from momaplib.training import TrainConfig

    write_dataset(tmp_path / "sim_tabletop", SimConfig().smoke(), num_clips=24, workers=0, progress=False)
    tiny_image_vae().save_pretrained(tmp_path / "image_vae")

    def job(name: str, **extra) -> TrainImageDiffusionJob:
        loop = TrainConfig(tmp_path / name, max_steps=2, batch_size=2, progress=False, num_workers=0)
        return TrainImageDiffusionJob(
            datasets=(tmp_path / "sim_tabletop",), train=loop, image_vae=str(tmp_path / "image_vae"),
            text_encoder="none:16", num_val_images=1, **{"smoke": True, **extra},
        )  # fmt: skip

    first = ImageDiffusionPipeline.from_pretrained(job("first").run()).unet
    channels = first.config.in_channels
    # the pipeline folder and its unet/ subfolder both give the same float32 weights
    for source in (tmp_path / "first/pipeline", tmp_path / "first/pipeline/unet"):
        loaded = pretrained_unet(str(source), channels, 16)
        assert all(torch.equal(v, first.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match=r"pretrained: .*cross-attention"):
        pretrained_unet(str(tmp_path / "first/pipeline"), channels, 32)  # another text encoder
    with pytest.raises(ValueError, match=r"pretrained: .*not a UNet2DConditionModel folder"):
        pretrained_unet(str(tmp_path / "sim_tabletop"), channels, 16)
    # a continued run keeps the architecture of its start (not the smoke widths) and trains it
    wide = ImageDiffusionPipeline.from_pretrained(
        job("wide", block_out_channels=(32, 64), layers_per_block=1, smoke=False).run()
    ).unet  # fmt: skip
    continued = ImageDiffusionPipeline.from_pretrained(
        job("next", pretrained=str(tmp_path / "wide/pipeline")).run()
    )
    assert (
        continued.unet.config.block_out_channels
        == wide.config.block_out_channels
        != first.config.block_out_channels
    )
    changed = [not torch.equal(v, wide.state_dict()[k]) for k, v in continued.unet.state_dict().items()]
    assert any(changed)


def test_the_pipelines_guidance_is_the_default_of_every_call(monkeypatch, tmp_path):
    from momaplib.diffusion.pipeline import DEFAULT_GUIDANCE, MoMapPipeline

    pipeline = tiny_pipeline(("rgb", "instance", "xyz", "dsl"))
    assert pipeline.config.guidance_scale == DEFAULT_GUIDANCE == 2.0
    pipeline.register_to_config(guidance_scale=1.0)  # unguided: one UNet row per sample
    pipeline.save_pretrained(tmp_path / "p")
    loaded = MoMapPipeline.from_pretrained(tmp_path / "p")
    assert loaded.config.guidance_scale == 1.0
    seen = _unet_inputs(loaded, monkeypatch)
    image, xyz, instance = scene(size=SIZE)
    args = dict(xyz=xyz, instance_map=instance, dsl=two_patch_dsl(), num_samples=2, num_inference_steps=2)
    loaded(image, progress=False, **args)
    assert seen[0].shape[0] == 2  # no unconditional rows: the stored 1.0 was used
    seen.clear()
    loaded(image, guidance_scale=3.0, progress=False, **args)
    assert seen[0].shape[0] == 4  # an explicit guidance still wins


def test_dsl_tables_count_the_oracle_in_both_prompt_sets():
    from momaplib.eval.dsl import DSL_TABLE_METRICS, dsl_table, with_oracle_paraphrase

    def row(clip, method, prompt_set, value):
        return {"clip_id": clip, "dataset": "tabletop", "method": method, "prompt_set": prompt_set,
                **dict.fromkeys(DSL_TABLE_METRICS, value)}  # fmt: skip

    rows = [row("a", "text", "sim", 0.1), row("b", "text", "sim", 0.2), row("a", "text", "paraphrase", 0.3)]
    rows += [row("a", "dsl-oracle", "sim", 0.6), row("b", "dsl-oracle", "sim", 0.8)]
    per_clip = pd.DataFrame(rows)
    table = dsl_table(per_clip)
    # the oracle's paraphrase row is its sim row of clip a (the only clip with a paraphrase)
    assert table.loc[("tabletop", "paraphrase", "dsl-oracle"), "clips"] == 1
    assert table.loc[("tabletop", "paraphrase", "dsl-oracle"), "fg_mask_iou"] == pytest.approx(0.6)
    assert table.loc[("tabletop", "sim", "dsl-oracle"), "fg_mask_iou"] == pytest.approx(0.7)
    once = with_oracle_paraphrase(per_clip)
    assert len(once) == 6 and with_oracle_paraphrase(once) is once  # added once, never twice
