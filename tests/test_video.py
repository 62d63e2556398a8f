"""Video completion (momaplib.video): flattened cross-frame attention, trainer, pipeline, metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from momaplib.checkpoints import resolve_checkpoint
from momaplib.render import HOLE_ID, render_momap
from momaplib.sim import SimConfig, generate_clip
from momaplib.training import TrainConfig, read_metrics
from momaplib.video import (
    CompletionUNet,
    MoMapVideoPipeline,
    build_scheduler,
    complete_latents,
    complete_render,
    cv2_inpaint,
    fill_instance_holes,
    temporal_error,
    video_dataset,
    video_metrics,
)
from momaplib.video.frames import frame_windows
from momaplib.video.train import TrainVideoJob


def tiny_model(mode: str = "flattened") -> CompletionUNet:
    torch.manual_seed(0)
    return CompletionUNet(
        frame_attention=mode, block_out_channels=(8, 16), layers_per_block=1, attention_head_dim=8,
        cross_attention_dim=16, norm_num_groups=4, sample_size=4,
    ).eval()  # fmt: skip


def inputs(B: int = 1, F: int = 3, h: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, F, 4, h, h, generator=g),
        torch.randn(B, F, 4, h, h, generator=g),
        torch.rand(B, F, 1, h, h, generator=g),
        torch.randn(B, 4, h, h, generator=g),
        torch.full((B,), 500),
    ]


@pytest.fixture(scope="module")
def image_vae() -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(resolve_checkpoint("image-vae")).eval()


@pytest.fixture(scope="module")
def clips():
    families = ((1, "tabletop"), (2, "egocentric"))
    return [generate_clip(seed, SimConfig(family=family).smoke()) for seed, family in families]


@torch.no_grad()
def test_flattened_attention_lets_frames_see_each_other():
    x = inputs(F=3)
    changed = [t.clone() for t in x]
    changed[1][:, 2] += 1.0  # change only frame 2's partial render
    for mode, couples in (("flattened", True), ("per-frame", False)):
        model = tiny_model(mode)
        out, out_changed = model(*x), model(*changed)
        frame0_moved = (out[:, 0] - out_changed[:, 0]).abs().max().item()
        assert (frame0_moved > 1e-4) == couples, (mode, frame0_moved)
        assert (out[:, 2] - out_changed[:, 2]).abs().max() > 1e-4


@torch.no_grad()
def test_flattened_attention_is_equivariant_to_frame_order():
    model = tiny_model("flattened")
    x = inputs(F=3)
    order = torch.tensor([2, 0, 1])
    permuted = [x[0][:, order], x[1][:, order], x[2][:, order], x[3], x[4]]
    torch.testing.assert_close(model(*permuted), model(*x)[:, order], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_one_frame_items_make_both_variants_the_same_function():
    flat, per_frame = tiny_model("flattened"), tiny_model("per-frame")
    per_frame.load_state_dict(flat.state_dict())
    x = inputs(B=2, F=1)
    torch.testing.assert_close(flat(*x), per_frame(*x))


def test_completion_model_round_trip(tmp_path: Path):
    model = tiny_model("per-frame")
    model.save_pretrained(tmp_path)
    loaded = CompletionUNet.from_pretrained(tmp_path).eval()
    assert loaded.frame_attention == "per-frame"
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs()), model(*inputs()))


def test_frame_windows_stay_inside_the_clip():
    index = frame_windows(50, num_frames=8, window=4, generator=torch.Generator().manual_seed(0))
    assert index.shape == (50, 4)
    assert index.min() >= 0 and index.max() < 8
    strides = (index[:, 1:] - index[:, :-1]).unique().tolist()
    assert set(strides) <= {1, 2} and (index[:, 1:] > index[:, :-1]).all()
    with pytest.raises(ValueError, match="frames_per_item"):
        frame_windows(1, num_frames=4, window=5, generator=torch.Generator())


def test_completion_keeps_the_render_where_it_covers(image_vae, clips):
    clip = clips[1]
    render = render_momap(clip.momap, backend="torch")
    frames, completion = complete_render(
        tiny_model(), image_vae, render, clip.frames[0], 2, torch.Generator().manual_seed(0), 4
    )
    assert frames.shape == completion.shape == clip.frames.shape
    opaque = render.alpha >= 0.75
    np.testing.assert_allclose(frames[opaque], render.rgb[opaque], atol=1e-6)
    assert frames.min() >= 0 and frames.max() <= 1


def test_train_video_job_trains_resumes_and_saves(tmp_path: Path, image_vae, clips):
    dataset = video_dataset(clips, image_vae, 0.45, backend="torch", progress=False)
    assert dataset.tensors["partial"].shape == (2, 8, 4, 4, 4)
    config = TrainConfig(tmp_path / "run", max_steps=2, batch_size=2, lr_warmup_steps=0, validate_every=0,
                         checkpoint_every=1, progress=False, in_memory=True)  # fmt: skip
    job = TrainVideoJob(train=config, smoke=True, bundle_dir=tmp_path / "bundle")
    job.run(dataset=dataset, val_clips=clips[:1])
    resumed = TrainVideoJob(train=replace(config, max_steps=4), smoke=True)
    folder = resumed.run(dataset=dataset, val_clips=clips[:1])
    steps = [row["step"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in row]
    assert steps == [1, 2, 3, 4]
    model = CompletionUNet.from_pretrained(folder)
    assert model.frame_attention == "flattened" and model.config.latent_scale == pytest.approx(0.45)
    assert next(CompletionUNet.from_pretrained(tmp_path / "bundle").parameters()).dtype == torch.float32
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "bundle").iterdir())


def test_video_pipeline_renders_and_completes_given_momaps(tmp_path: Path, image_vae, clips):
    pipe = MoMapVideoPipeline(tiny_model(), image_vae, build_scheduler(), frames_per_chunk=4)
    pipe.save_pretrained(tmp_path)
    assert not (tmp_path / "image_vae").exists()  # the bundled image-vae is shared, not copied
    pipe = MoMapVideoPipeline.from_pretrained(tmp_path)
    clip = clips[0]
    generator = torch.Generator().manual_seed(0)
    out = pipe(momaps=[clip.momap], num_inference_steps=2, generator=generator, progress=False)
    T, H, W = clip.frames.shape[:3]
    assert out.frames.shape == out.partial.shape == (1, T, H, W, 3) and out.frames.dtype == np.uint8
    assert out.instance.shape == (1, T, H, W) and (out.instance >= 0).all()  # holes filled
    orbit = pipe(momaps=[clip.momap], cameras="orbit", num_inference_steps=1, progress=False)
    assert orbit.frames.shape == out.frames.shape
    with pytest.raises(ValueError, match="cameras"):
        pipe(momaps=[clip.momap], cameras="spiral", progress=False)
    with pytest.raises(ValueError, match="image"):
        pipe(progress=False)


def test_video_metrics_known_answers():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
    holes = np.zeros((4, 16, 16), bool)
    holes[:, 4:8, 4:8] = True
    same = video_metrics(truth, truth, holes)
    assert same["psnr_hole"] == np.inf and same["ssim_all"] == pytest.approx(1.0)
    assert same["temporal_error"] == 0.0 and same["hole_fraction"] == pytest.approx(16 / 256)
    worse = truth.copy()
    worse[holes] = 0.5
    scores = video_metrics(worse, truth, holes)
    assert scores["psnr_hole"] < scores["psnr_all"] < np.inf and scores["ssim_hole"] < scores["ssim_all"]
    # a constant fill does not flicker: its change is 0 where the truth changes
    expected = np.abs(np.diff(truth, axis=0)).mean(-1)[holes[1:] | holes[:-1]].mean()
    assert temporal_error(worse, truth, holes) == pytest.approx(expected, rel=1e-5)


def test_cv2_inpaint_fills_only_the_holes():
    frames = np.full((2, 16, 16, 3), 0.25, np.float32)
    holes = np.zeros((2, 16, 16), bool)
    holes[:, 6:9, 6:9] = True
    frames[holes] = 1.0
    filled = cv2_inpaint(frames, holes)
    np.testing.assert_allclose(filled[~holes], 0.25, atol=1 / 255)
    np.testing.assert_allclose(filled[holes], 0.25, atol=2 / 255)  # a flat image inpaints flat


def test_fill_instance_holes_takes_the_nearest_id():
    instance = np.array([[[1, 1, HOLE_ID, 2, 2]], [[HOLE_ID] * 5]], dtype=np.int32)
    filled = fill_instance_holes(instance)
    assert filled[0, 0, 2] in (1, 2) and (filled[0, 0, [0, 1, 3, 4]] == [1, 1, 2, 2]).all()
    assert (filled[1] == 0).all()


def test_bundled_video_pipeline_goes_from_an_image_to_a_video():
    from momaplib.data import load_example
    from momaplib.data.examples import EXAMPLES_DIR

    pipe = MoMapVideoPipeline.from_pretrained("momap-video")
    assert pipe.completion.frame_attention == "flattened"
    example = load_example(EXAMPLES_DIR / "tabletop_blue_block")
    out = pipe(
        example.image, depth=example.depth, K=example.K, instance_map=example.instance, prompt=example.prompt,
        num_samples=1, num_inference_steps=1, momap_inference_steps=2,
        generator=torch.Generator().manual_seed(0), progress=False,
    )  # fmt: skip
    assert out.frames.shape == (1, 32, *example.image.shape) and len(out.momaps) == 1
    # frame 0 is the reference view of the sampled MoMap: the render covers it and equals the image
    covered = out.alpha[0, 0] >= 0.75
    assert covered.mean() > 0.9
    error = np.abs(out.frames[0, 0].astype(int) - example.image.astype(int))[covered].mean()
    assert error < 8


@torch.no_grad()
def test_shared_noise_gives_identical_frames_for_identical_conditions():
    model = tiny_model("flattened")
    x = inputs(B=1, F=3)
    partial, coverage = x[1][:, :1].expand(1, 3, 4, 4, 4), x[2][:, :1].expand(1, 3, 1, 4, 4)
    args = (model, build_scheduler(), partial, coverage, x[3], 2)
    shared = complete_latents(*args, generator=torch.Generator().manual_seed(0), shared_noise=True)
    torch.testing.assert_close(shared[:, 1], shared[:, 0])
    own = complete_latents(*args, generator=torch.Generator().manual_seed(0))
    assert (own[:, 1] - own[:, 0]).abs().max() > 1e-3
