"""Fault table of the sampling path: ``MoMapPipeline`` inputs (depth holes, units, sizes, sampling
arguments), ``fill_depth_holes``, example folders, ``python -m momaplib.demo`` and ``TransformersDepth``.

Pipeline cases run a tiny random pipeline whose ``_denoise`` raises: every check must fire before
the first denoising step (a check that fired after sampling would surface as that AssertionError).
Demo cases fail before the pipeline is loaded or anything is written.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from momaplib.data.examples import EXAMPLES_DIR, load_example, save_example
from momaplib.geometry import depth_to_xyz, fill_depth_holes
from momaplib.storage import DataFormatError
from tests.faults import Fault

SIZE = 16
K_GOOD = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]], dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _pipeline():
    """A tiny random ``MoMapPipeline`` (T = 2, 16x16 inputs) that refuses to sample."""
    from diffusers import DDIMScheduler

    from momaplib.diffusion.pipeline import MoMapPipeline
    from momaplib.diffusion.unet import build_unet
    from tests.test_diffusion import TINY_UNET, tiny_image_vae, tiny_momap_vae

    torch.manual_seed(0)
    vae = tiny_momap_vae(2)
    unet = build_unet(latent_channels=8, condition_channels=12, cross_attention_dim=16, **TINY_UNET)
    scheduler = DDIMScheduler(num_train_timesteps=100, prediction_type="v_prediction")
    pipe = MoMapPipeline(
        unet=unet, vae=vae, image_vae=tiny_image_vae(), scheduler=scheduler, text_encoder="none:16"
    )

    def refuse(*args, **kwargs):
        raise AssertionError("sampling started before the inputs were checked")

    pipe._denoise = refuse
    return pipe


def _inputs(size: int = SIZE) -> dict:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.8, 1.2, (size, size)).astype(np.float32)
    return {
        "image": rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
        "depth": depth,
        "K": K_GOOD,
        "instance_map": (np.arange(size)[None] >= size // 2).repeat(size, 0).astype(np.int32),
    }


def _call(size: int = SIZE, **changes):
    """Returns a ``call(tmp_path)`` that samples the tiny pipeline with ``changes`` to good inputs."""

    def call(tmp_path: Path):
        kwargs = {**_inputs(size), "num_samples": 2, "num_inference_steps": 2, "progress": False}
        kwargs.update({k: v(kwargs) if callable(v) else v for k, v in changes.items()})
        return _pipeline()(**kwargs)

    return call


def _xyz(scale: float = 1.0, mirror: bool = False):
    def make(kwargs):
        xyz = depth_to_xyz(kwargs["depth"], K_GOOD) * scale
        if mirror:
            xyz[..., 0] *= -1  # x left: no pinhole camera with fx > 0 sees these points at these pixels
        return xyz

    return make


def _with_depth(change):
    return lambda kwargs: change(kwargs["depth"].copy())


def _set(array, index, value):
    array[index] = value
    return array


# ----------------------------------------------------------------------------- demo and files
def _example_folder(tmp_path: Path, depth_change=None) -> Path:
    example = load_example(EXAMPLES_DIR / "tabletop_blue_block")
    if depth_change is not None:
        example.depth = depth_change(example.depth.copy())
    folder = tmp_path / "examples" / "scene"
    save_example(folder, example, with_gt=False)
    return folder


def _demo(*args: str, examples=None):
    def call(tmp_path: Path):
        from momaplib.demo import main

        folder = examples(tmp_path) if examples is not None else None
        flags = ["--examples", str(folder)] if folder is not None else []
        return main(["--out", str(tmp_path / "out"), *flags, *args])

    return call


def _load_mm(tmp_path: Path):
    folder = tmp_path / "scene"
    save_example(folder, load_example(EXAMPLES_DIR / "tabletop_blue_block"), with_gt=False)
    np.save(folder / "depth.npy", np.load(folder / "depth.npy") * 1000)
    return load_example(folder)


def _transformers_depth(model: str, offline: bool = True):
    def call(tmp_path: Path):
        from momaplib.recon.depth import TransformersDepth, TransformersDepthConfig

        env = {"HF_HUB_OFFLINE": "1"} if offline else {}
        with mock.patch.dict(os.environ, env):
            return TransformersDepth(TransformersDepthConfig(model=model))._load()

    return call


PIPE = "MoMapPipeline.__call__"
CASES: list[Fault] = [
    # --- units and holes
    Fault(
        PIPE,
        "depth in millimetres as float",
        _call(depth=_with_depth(lambda d: d * 1000)),
        ValueError,
        "divide by 1000",
    ),
    Fault(
        PIPE,
        "depth in millimetres as uint16",
        _call(depth=_with_depth(lambda d: (d * 1000).astype(np.uint16))),
        TypeError,
        "divide by 1000",
    ),
    Fault(PIPE, "xyz in millimetres", _call(depth=None, xyz=_xyz(1000.0)), ValueError, "divide by 1000"),
    # already refused, as "fewer than 4 pixels" without the cause:
    Fault(
        PIPE, "OpenGL depth (negative z)", _call(depth=_with_depth(lambda d: -d)), ValueError, "pass -depth"
    ),
    # already handled:
    Fault(
        PIPE,
        "depth that is all holes",
        _call(depth=_with_depth(lambda d: d * np.nan)),
        ValueError,
        "fewer than 4",
    ),
    Fault(
        PIPE,
        "depth with a far outlier (1e30 m)",
        _call(depth=_with_depth(lambda d: _set(d, (3, 3), 1e30))),
        ValueError,
        "condition latents are not finite",
    ),
    Fault(
        PIPE,
        "xyz that fits no pinhole camera, no K",
        _call(depth=None, K=None, xyz=_xyz(mirror=True)),
        ValueError,
        "does not fit a pinhole camera",
    ),
    Fault(
        PIPE,
        "depth of another shape",
        _call(depth=_with_depth(lambda d: d[:8])),
        ValueError,
        "depth: expected (16, 16) like the image",
    ),  # already handled
    Fault(
        PIPE,
        "depth as strings",
        _call(depth=np.full((SIZE, SIZE), "1.0")),
        TypeError,
        "depth: expected a numeric array",
    ),
    # --- image size
    Fault(
        PIPE,
        "2048x2048 image",
        _call(size=2048),
        ValueError,
        "pass max_image_size=",
    ),
    Fault(PIPE, "0x0 image", _call(size=0), ValueError, "in [8, 1024]"),
    Fault(
        PIPE, "max_image_size 0", _call(max_image_size=0), ValueError, "max_image_size: expected an integer"
    ),
    Fault(
        PIPE,
        "12x12 image (not multiples of 8)",
        _call(image=np.zeros((12, 12, 3), np.uint8)),
        ValueError,
        "multiples of 8",
    ),  # already handled
    Fault(
        PIPE,
        "float image in [0, 1]",
        _call(image=lambda kw: kw["image"] / 255.0),
        ValueError,
        "(image * 255).astype(np.uint8)",
    ),  # already handled (the hint is new)
    # --- intrinsics
    Fault(
        PIPE,
        "K with a negative focal length",
        _call(K=K_GOOD * [[-1], [1], [1]]),
        ValueError,
        "focal lengths > 0",
    ),
    # already refused, as "xyz: fewer than 4 pixels" (naming xyz, not K):
    Fault(PIPE, "K with NaN", _call(K=np.full((3, 3), np.nan)), ValueError, "K: expected finite (3, 3)"),
    Fault(PIPE, "K whose last row is not [0, 0, 1]", _call(K=K_GOOD * 2), ValueError, "last row [0, 0, 1]"),
    Fault(
        PIPE, "K of shape (2, 3)", _call(K=K_GOOD[:2]), ValueError, "K: expected (3, 3)"
    ),  # already handled
    # --- instances
    Fault(
        PIPE,
        "negative instance ids",
        _call(instance_map=lambda kw: kw["instance_map"] - 1),
        ValueError,
        "instance_map: ids must be in [0, 2^31)",
    ),  # already handled (as "instance:", after encoding)
    Fault(
        PIPE,
        "a grey image passed as the instance map (1023 ids)",
        _call(size=32, instance_map=np.arange(32 * 32).reshape(32, 32)),
        ValueError,
        "more than 512",
    ),
    Fault(
        PIPE,
        "float instance map",
        _call(instance_map=lambda kw: kw["instance_map"].astype(np.float32)),
        TypeError,
        "instance_map: expected an integer dtype",
    ),  # already handled
    # --- sampling arguments
    Fault(PIPE, "prompt that is a number", _call(prompt=5), TypeError, "prompt: expected a str"),
    Fault(
        PIPE, "num_samples 2.5", _call(num_samples=2.5), ValueError, "num_samples: expected an integer >= 1"
    ),
    # already handled (as "expected >= 1"):
    Fault(PIPE, "num_samples 0", _call(num_samples=0), ValueError, "num_samples: expected an integer >= 1"),
    Fault(
        PIPE,
        "num_inference_steps 0",
        _call(num_inference_steps=0),
        ValueError,
        "num_inference_steps: expected an integer >= 1",
    ),
    Fault(
        PIPE,
        "more steps than training timesteps",
        _call(num_inference_steps=1000),
        ValueError,
        "at most the scheduler's 100 training timesteps",
    ),  # already handled by diffusers, in the sampler
    Fault(
        PIPE,
        "guidance_scale NaN",
        _call(prompt="push", guidance_scale=float("nan")),
        ValueError,
        "guidance_scale: expected a finite number >= 0",
    ),
    Fault(PIPE, "negative guidance_scale", _call(guidance_scale=-2.0), ValueError, "guidance_scale"),
    Fault(PIPE, "batch_size -1", _call(batch_size=-1), ValueError, "batch_size: expected an integer >= 1"),
    Fault(
        PIPE,
        "an int seed as the generator",
        _call(generator=0),
        TypeError,
        "generator: expected a torch.Generator",
    ),
    # already handled:
    Fault(PIPE, "unknown scheduler", _call(scheduler="heun"), ValueError, "scheduler: expected one of"),
    # --- dense depth for users who want it
    Fault(
        "fill_depth_holes",
        "unknown method",
        lambda p: fill_depth_holes(np.ones((4, 4)), method="bilinear"),
        ValueError,
        "method: expected 'nearest' or 'inpaint'",
    ),
    Fault(
        "fill_depth_holes",
        "a depth map that is all holes",
        lambda p: fill_depth_holes(np.zeros((4, 4))),
        ValueError,
        "nothing to fill the holes from",
    ),
    Fault(
        "fill_depth_holes",
        "an XYZ map instead of depth",
        lambda p: fill_depth_holes(np.ones((4, 4, 3))),
        ValueError,
        "depth: expected (H, W) float",
    ),
    # --- example folders and the demo
    Fault("load_example", "depth.npy in millimetres", _load_mm, DataFormatError, "divide by 1000"),
    Fault(
        "python -m momaplib.demo",
        "--examples a mistyped folder",
        _demo(examples=lambda tmp: tmp / "my_scnes"),
        FileNotFoundError,
        "my_scnes: no such folder",
    ),
    Fault(
        "python -m momaplib.demo",
        "--examples an empty folder",
        _demo(examples=lambda tmp: (tmp / "empty").mkdir() or tmp / "empty"),
        FileNotFoundError,
        "holds no example folder",
    ),
    Fault(
        "python -m momaplib.demo",
        "--examples one example folder",
        _demo(examples=_example_folder),
        FileNotFoundError,
        "--scenes scene",
    ),
    Fault(
        "python -m momaplib.demo",
        "an example with depth in millimetres",
        _demo(examples=lambda tmp: _example_folder(tmp, lambda d: d * 1000).parent),
        ValueError,
        "divide by 1000",
    ),
    Fault(
        "python -m momaplib.demo",
        "--num-samples 0",
        _demo("--num-samples", "0"),
        ValueError,
        "--num-samples: expected an integer >= 1",
    ),
    Fault("python -m momaplib.demo", "--fps 0", _demo("--fps", "0"), ValueError, "--fps: expected a finite"),
    Fault(
        "python -m momaplib.demo",
        "--guidance-scale nan",
        _demo("--guidance-scale", "nan"),
        ValueError,
        "--guidance-scale",
    ),
    # --- the depth model
    Fault(
        "TransformersDepth",
        "HF_HUB_OFFLINE=1 and a model not in the cache",
        _transformers_depth("nobody/not-a-depth-model"),
        FileNotFoundError,
        "HF_HUB_OFFLINE is set",
    ),
    Fault(
        "TransformersDepth",
        "a relative folder that does not exist",
        _transformers_depth("./my_depth_model"),
        FileNotFoundError,
        "is not a folder",
    ),  # already refused (with the hub's repo-id validation message)
]
