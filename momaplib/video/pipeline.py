"""``MoMapVideoPipeline``: image → MoMaps → Gaussian-splat renders → completed video (paper §3.4.1)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from momaplib.geometry import nearest_known_pixel
from momaplib.momap import MoMap
from momaplib.render import HOLE_ID, RenderOutput, orbit_cameras, render_momap
from momaplib.video.model import CompletionUNet
from momaplib.video.sampling import complete_render

CAMERA_PATHS = ("reference", "orbit")


@dataclass
class MoMapVideoOutput(BaseOutput):
    """Videos of one call, N samples of T frames (H, W of the target cameras).

    ``frames`` (N, T, H, W, 3) uint8: completed RGB video; ``partial`` (N, T, H, W, 3) uint8: the
    render before completion (holes black); ``alpha`` (N, T, H, W): render coverage; ``instance``
    (N, T, H, W) int32: the semantic video, holes filled with the nearest covered pixel's id;
    ``momaps``: the N sampled (or given) MoMaps.
    """

    frames: np.ndarray
    partial: np.ndarray
    alpha: np.ndarray
    instance: np.ndarray
    momaps: list[MoMap]


def fill_instance_holes(instance: np.ndarray) -> np.ndarray:
    """Returns (T, H, W) instance ids with every hole (-1) given the id of the nearest covered pixel
    of its frame (a frame with no covered pixel becomes background, 0).

    The semantic video is completed geometrically, not by the diffusion model: ids are labels, not
    colours, and the nearest covered id is what a disocclusion hole shows in MoMap-Sim's scenes
    almost always (the surface that was behind the object that moved away)."""
    out = instance.copy()
    for t in range(len(instance)):
        holes = instance[t] == HOLE_ID
        if not holes.any():
            continue
        if holes.all():
            out[t] = 0
            continue
        out[t] = instance[t][nearest_known_pixel(~holes)]
    return out


class MoMapVideoPipeline(DiffusionPipeline):
    """Turns MoMaps into videos: render every valid pixel as a Gaussian along its trajectory into
    target cameras, then complete the holes with ``completion`` (``CompletionUNet``, self-attention
    flattened across frames) in the latent space of ``image_vae``.

    ``momap_pipeline`` (config: a bundled name, folder or hub id, default ``momap-diffusion``) is
    the ``MoMapPipeline`` that samples MoMaps from an image; it is loaded on first use (or set
    ``pipeline.momap_pipeline = ...``). ``frames_per_chunk``: frames completed in one attention
    group (the training window).
    """

    model_cpu_offload_seq = "completion->image_vae"

    def __init__(
        self,
        completion: CompletionUNet,
        image_vae: AutoencoderKL,
        scheduler: DDIMScheduler,
        momap_pipeline_name: str = "momap-diffusion",
        frames_per_chunk: int = 8,
    ):
        super().__init__()
        self.register_modules(completion=completion, image_vae=image_vae, scheduler=scheduler)
        self.register_to_config(momap_pipeline_name=momap_pipeline_name, frames_per_chunk=frames_per_chunk)
        self.momap_pipeline = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads a folder, a bundled name (``"momap-video"``) or a hub id; a folder without
        ``image_vae/`` gets the bundled ``image-vae``."""
        from momaplib.checkpoints import resolve_checkpoint

        path = resolve_checkpoint(pretrained_model_name_or_path, revision=kwargs.get("revision"))
        if "image_vae" not in kwargs and not (path / "image_vae").is_dir():
            kwargs["image_vae"] = AutoencoderKL.from_pretrained(resolve_checkpoint("image-vae"))
        return super().from_pretrained(path, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Saves the completion model and scheduler; the image VAE only when ``with_image_vae``
        (the bundled video pipeline shares the bundled ``image-vae``)."""
        with_image_vae = kwargs.pop("with_image_vae", False)
        image_vae = self.image_vae
        if not with_image_vae:
            self.register_modules(image_vae=None)
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(image_vae=image_vae)

    # ------------------------------------------------------------------------------ rendering
    def cameras(self, momap: MoMap, cameras, num_frames: int) -> np.ndarray:
        """Returns ``cam_from_ref`` (T, 4, 4) for a camera path name or array."""
        if cameras is None or (isinstance(cameras, str) and cameras == "reference"):
            return np.broadcast_to(np.eye(4, dtype=np.float32), (num_frames, 4, 4)).copy()
        if isinstance(cameras, str):
            if cameras != "orbit":
                raise ValueError(
                    f"cameras: expected one of {CAMERA_PATHS} or (T, 4, 4) cam_from_ref, got {cameras!r}"
                )
            return orbit_cameras(momap, num_frames)
        return np.asarray(cameras, dtype=np.float32)

    @torch.no_grad()
    def render(
        self, momap: MoMap, cameras=None, K=None, height=None, width=None, backend: str = "auto"
    ) -> RenderOutput:
        """Returns the partial render of ``momap`` into ``cameras`` ("reference": the reference camera
        held still, "orbit": ``orbit_cameras``, or (T, 4, 4) ``cam_from_ref``)."""
        cam_from_ref = self.cameras(momap, cameras, momap.num_frames)
        return render_momap(
            momap,
            K=K,
            cam_from_ref=cam_from_ref,
            height=height,
            width=width,
            backend=backend,
            device=self.device,
        )

    @torch.no_grad()
    def complete(
        self,
        render: RenderOutput,
        reference_rgb: np.ndarray,
        num_inference_steps: int = 10,
        generator: torch.Generator | None = None,
        progress: bool = False,
        shared_noise: bool = False,
    ) -> np.ndarray:
        """Returns completed frames (T, H, W, 3) float32 in [0, 1] of a partial render
        (``shared_noise``: one noise for all frames of a window, see ``complete_latents``)."""
        frames, _ = complete_render(
            self.completion, self.image_vae, render, reference_rgb, num_inference_steps, generator,
            self.config.frames_per_chunk, self.scheduler, progress, shared_noise,
        )  # fmt: skip
        return frames

    # ------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image=None,
        xyz=None,
        instance_map=None,
        prompt: str | None = None,
        num_samples: int = 1,
        momaps: list[MoMap] | None = None,
        cameras=None,
        K=None,
        num_inference_steps: int = 10,
        momap_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        depth=None,
        backend: str = "auto",
        progress: bool = True,
    ) -> MoMapVideoOutput:
        """Returns videos of ``num_samples`` futures of one scene.

        Either give the scene (``image`` (H, W, 3) uint8, ``xyz`` or ``depth`` + ``K``,
        ``instance_map``, ``prompt``: the arguments of ``MoMapPipeline``) and MoMaps are sampled
        with ``momap_inference_steps`` / ``guidance_scale`` (None: that pipeline's defaults), or
        give ``momaps`` (e.g. a GT MoMap) to render them directly. ``cameras``: "reference"
        (default), "orbit" or (T, 4, 4) ``cam_from_ref``; the target intrinsics are the MoMap's.
        ``num_inference_steps``: DDIM steps of the completion.
        """
        if momaps is None:
            if image is None:
                raise ValueError("image: give the reference image (or momaps= to render given MoMaps)")
            scene = {"xyz": xyz, "instance_map": instance_map, "prompt": prompt, "depth": depth, "K": K}
            sampling = {"num_inference_steps": momap_inference_steps, "guidance_scale": guidance_scale}
            momaps = self.sample_momaps(image, scene, sampling, num_samples, generator, progress)
        elif not momaps or not all(isinstance(m, MoMap) for m in momaps):
            raise ValueError("momaps: expected a non-empty list of MoMap records")
        outputs = {"frames": [], "partial": [], "alpha": [], "instance": []}
        for momap in tqdm(momaps, desc="render + complete", unit="video", disable=not progress):
            render = self.render(momap, cameras, backend=backend)
            frames = self.complete(render, momap.rgb, num_inference_steps, generator)
            outputs["frames"].append(np.round(frames * 255).astype(np.uint8))
            partial = render.rgb * (~render.holes)[..., None]
            outputs["partial"].append(np.round(partial * 255).astype(np.uint8))
            outputs["alpha"].append(render.alpha)
            outputs["instance"].append(fill_instance_holes(render.instance))
        return MoMapVideoOutput(
            **{key: np.stack(value) for key, value in outputs.items()}, momaps=list(momaps)
        )

    def sample_momaps(
        self, image, scene: dict, sampling: dict, num_samples: int, generator=None, progress: bool = True
    ) -> list[MoMap]:
        """Returns ``num_samples`` MoMaps of the scene from ``momap_pipeline`` (loaded on first use);
        ``scene`` holds its ``xyz``/``depth``/``K``/``instance_map``/``prompt`` arguments, ``sampling``
        its ``num_inference_steps``/``guidance_scale`` (None: the pipeline's defaults)."""
        if self.momap_pipeline is None:
            from momaplib.diffusion.pipeline import load_pipeline

            self.momap_pipeline = load_pipeline(self.config.momap_pipeline_name).to(self.device)
        sampling = {key: value for key, value in sampling.items() if value is not None}
        out = self.momap_pipeline(
            image, num_samples=num_samples, generator=generator, progress=progress, **scene, **sampling
        )
        return out.momaps
