"""``MoMapPipeline``: one image (+ XYZ, instances, optional prompt) -> N sampled MoMaps (paper §3.3.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from diffusers.utils import BaseOutput
from torch import Tensor

import momaplib.diffusion.cvae
import momaplib.vae  # noqa: F401
from momaplib.diffusion.conditioning import condition_latents
from momaplib.diffusion.grounding import PromptGrounder, instance_features, paint_scores
from momaplib.diffusion.text import load_text_encoder
from momaplib.diffusion.unet import CONDITION_CHANNELS, GROUNDING_CHANNELS
from momaplib.geometry import depth_to_xyz
from momaplib.momap import MoMap, channels_to_xyz, denormalize_xyz, normalization_stats, normalize_xyz

#: scheduler names accepted by ``MoMapPipeline.__call__(scheduler=...)``
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "ddpm": DDPMScheduler,
}


@dataclass
class MoMapPipelineOutput(BaseOutput):
    """Samples of one call: ``momaps`` (N MoMap records, metres) and ``xyz`` (N, T, H, W, 3).

    ``grounding`` (pipelines with a ``grounder``): ``ids`` (K,) the scene's instance ids and
    ``probabilities`` (N, K), per sample, that its prompt names each instance (zeros without a
    prompt).
    """

    momaps: list[MoMap]
    xyz: np.ndarray
    grounding: dict | None = None


def estimate_intrinsics(xyz: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Returns the pinhole K (3, 3) that best maps camera points ``xyz`` (H, W, 3) to their pixels.

    Least squares on ``u = fx x/z + cx`` and ``v = fy y/z + cy`` over valid pixels; used when a
    caller gives an XYZ map without K.
    """
    v, u = np.nonzero(valid)
    x, y, z = (xyz[v, u, i].astype(np.float64) for i in range(3))
    ones = np.ones_like(z)
    fx, cx = np.linalg.lstsq(np.stack([x / z, ones], 1), u.astype(np.float64), rcond=None)[0]
    fy, cy = np.linalg.lstsq(np.stack([y / z, ones], 1), v.astype(np.float64), rcond=None)[0]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)


class MoMapPipeline(DiffusionPipeline):
    """Samples Motion Maps for one reference image with a conditioned latent diffusion model.

    Components: ``unet`` (``UNet2DConditionModel``, noisy MoMap latent + 12 condition channels,
    + 1 with a ``grounder``),
    ``vae`` (``momaplib.vae.MoMapVAE``), ``image_vae`` (the frozen RGB ``AutoencoderKL`` that
    encodes the conditions) and ``scheduler``. The text encoder is named by ``text_encoder``
    (a spec of ``momaplib.diffusion.text``, stored in ``model_index.json``) and loaded from its
    own package, so a pipeline folder stays small.

    Optional ``grounder`` (``momaplib.diffusion.grounding.PromptGrounder``): scores the scene's
    instances against each prompt, and the scores painted over the instance map enter the UNet
    as one more condition channel (zeros for the empty prompt and for the unconditional branch
    of classifier-free guidance). Its UNet then takes 12 + 1 condition channels.
    """

    model_cpu_offload_seq = "unet->vae"
    _optional_components: ClassVar[list[str]] = ["grounder"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        image_vae: AutoencoderKL,
        scheduler: DDPMScheduler,
        text_encoder: str = "minilm",
        grounder: PromptGrounder | None = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, image_vae=image_vae, scheduler=scheduler, grounder=grounder)
        self.register_to_config(text_encoder=text_encoder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads a pipeline folder, a bundled checkpoint name (``"momap-diffusion"``) or a hub id.

        A folder without ``vae/`` or ``image_vae/`` (the bundled baseline shares them with
        ``momap-diffusion``) gets the bundled ``momap-vae`` / ``image-vae`` unless passed here.
        ``text_encoder="minilm:/path"`` overrides the spec stored in ``model_index.json``.
        """
        from momaplib.checkpoints import resolve_checkpoint
        from momaplib.vae import MoMapVAE

        path = resolve_checkpoint(pretrained_model_name_or_path, revision=kwargs.get("revision"))
        shared = {"vae": (MoMapVAE, "momap-vae"), "image_vae": (AutoencoderKL, "image-vae")}
        for component, (model_class, bundled) in shared.items():
            if component not in kwargs and not (path / component).is_dir():
                kwargs[component] = model_class.from_pretrained(resolve_checkpoint(bundled))
        return super().from_pretrained(path, **kwargs)

    # ------------------------------------------------------------------------------------ inputs
    @property
    def num_frames(self) -> int:
        return self.vae.config.in_channels // 3

    def encode_prompt(self, prompts: list[str]) -> Tensor:
        """Returns (B, L, D) text embeddings on the pipeline's device and UNet dtype."""
        encoder = load_text_encoder(self.config.text_encoder)
        return encoder(prompts).to(self.device)

    def _prepare(self, image, xyz, instance_map, depth, K) -> dict:
        image = np.asarray(image.cpu() if isinstance(image, Tensor) else image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        H, W = image.shape[:2]
        if H % 8 or W % 8:
            raise ValueError(f"image: H and W must be multiples of 8 (latents are 1/8 size), got {H}x{W}")
        if K is not None:
            K = np.asarray(K, dtype=np.float32)
            if K.shape != (3, 3):
                raise ValueError(f"K: expected (3, 3) intrinsics in pixels, got {K.shape}")
        if xyz is None:
            if depth is None or K is None:
                raise ValueError("xyz: give the (H, W, 3) XYZ map, or depth (H, W) together with K (3, 3)")
            depth = np.asarray(depth, dtype=np.float32)
            if depth.shape != (H, W):
                raise ValueError(f"depth: expected ({H}, {W}) like the image, got {depth.shape}")
            xyz = depth_to_xyz(depth, K)
        xyz = np.asarray(xyz.cpu() if isinstance(xyz, Tensor) else xyz, dtype=np.float32)
        if xyz.shape != (H, W, 3):
            raise ValueError(f"xyz: expected ({H}, {W}, 3) like the image, got {xyz.shape}")
        valid = np.isfinite(xyz).all(-1) & (np.nan_to_num(xyz[..., 2]) > 0)
        if valid.sum() < 4:
            raise ValueError("xyz: fewer than 4 pixels have finite points with z > 0")
        if instance_map is None:
            raise ValueError("instance_map: expected an (H, W) integer instance id map (0 = background)")
        instance = np.asarray(instance_map.cpu() if isinstance(instance_map, Tensor) else instance_map)
        if instance.shape != (H, W):
            raise ValueError(f"instance_map: expected ({H}, {W}) like the image, got {instance.shape}")
        if not np.issubdtype(instance.dtype, np.integer):
            raise TypeError(f"instance_map: expected an integer dtype (instance ids), got {instance.dtype}")
        if K is None:
            K = estimate_intrinsics(xyz, valid)
        xyz = np.where(valid[..., None], xyz, 0.0).astype(np.float32)
        return {"rgb": image, "xyz": xyz, "valid": valid, "instance": instance.astype(np.int32), "K": K}

    @staticmethod
    def _prompts(prompt, num_samples: int) -> tuple[list[str], bool]:
        if num_samples < 1:
            raise ValueError(f"num_samples: expected >= 1, got {num_samples}")
        if prompt is None:
            return [""] * num_samples, False
        if isinstance(prompt, str):
            return [prompt] * num_samples, bool(prompt)
        prompts = list(prompt)
        if len(prompts) != num_samples:
            raise ValueError(
                f"prompt: a list of prompts needs one per sample; got {len(prompts)} prompts "
                f"for num_samples={num_samples}"
            )
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompt: expected strings")
        return prompts, any(prompts)

    # ------------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        image,
        xyz=None,
        instance_map=None,
        prompt: str | list[str] | None = None,
        num_samples: int = 10,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
        scheduler: str | None = None,
        depth=None,
        K=None,
        batch_size: int | None = None,
        progress: bool = True,
    ) -> MoMapPipelineOutput:
        """Returns ``num_samples`` MoMaps (metres, reference camera frame) for one scene.

        Args:
            image: (H, W, 3) uint8 reference frame; H, W multiples of 8.
            xyz: (H, W, 3) float XYZ map in metres (camera frame); or give ``depth`` (H, W) + ``K``.
            instance_map: (H, W) integer instance ids, 0 = background.
            prompt: one prompt for all samples, a list of ``num_samples`` prompts, or None (no text).
            num_samples: N futures to sample (batched ``batch_size`` at a time, default all).
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance on the text; 1.0 (or no prompt) = unguided.
            generator: torch generator for the noise and the instance colours (reproducible calls).
            scheduler: ``"ddim"``, ``"dpm"``, ``"euler"`` or ``"ddpm"``; None keeps the pipeline's.
        """
        self._check_unet_inputs()
        scene = self.encode_scene(image, xyz, instance_map, depth, K, generator)
        prompts, has_text = self._prompts(prompt, num_samples)
        use_cfg = has_text and guidance_scale != 1.0
        if scheduler is not None:
            if scheduler not in SCHEDULERS:
                raise ValueError(f"scheduler: expected one of {sorted(SCHEDULERS)}, got {scheduler!r}")
            sampler = SCHEDULERS[scheduler].from_config(self.scheduler.config)
        else:
            sampler = self.scheduler
        text = self.encode_prompt(prompts)
        uncond = self.encode_prompt([""] * num_samples) if use_cfg else None
        grounding, scores = self.ground_prompts(scene, prompts, text)
        H, W = scene["valid"].shape
        latent_shape = (num_samples, self.unet.config.out_channels, H // 8, W // 8)
        noise_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(latent_shape, generator=generator, device=noise_device, dtype=torch.float32)
        batch_size = batch_size or num_samples
        latents = torch.cat(
            [
                self._denoise(
                    noise[start : start + batch_size].to(self.device),
                    scene["condition"],
                    text[start : start + batch_size],
                    None if uncond is None else uncond[start : start + batch_size],
                    guidance_scale,
                    sampler,
                    num_inference_steps,
                    progress,
                    None if grounding is None else grounding[start : start + batch_size],
                )
                for start in range(0, num_samples, batch_size)
            ]
        )
        output = self.decode_samples(latents, scene, prompts, {"guidance_scale": guidance_scale})
        if scores is not None:
            keep = scene["instance_ids"][0] > 0
            output.grounding = {
                "ids": scene["instance_ids"][0][keep].cpu().numpy(),
                "probabilities": scores[:, keep].cpu().numpy(),
            }
        return output

    def _check_unet_inputs(self) -> None:
        extra = GROUNDING_CHANNELS if self.grounder is not None else 0
        expected = self.unet.config.out_channels + CONDITION_CHANNELS + extra
        if self.unet.config.in_channels != expected:
            raise ValueError(
                f"unet: in_channels {self.unet.config.in_channels} does not match "
                f"{self.unet.config.out_channels} MoMap latent + {CONDITION_CHANNELS} condition"
                + (f" + {extra} grounding" if extra else "")
                + f" = {expected} channels"
                + ("" if extra else "; a UNet trained with grounding needs its grounder")
            )

    @torch.no_grad()
    def ground_prompts(
        self, scene: dict, prompts: list[str], text: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        """Returns the (N, 1, h, w) grounding maps and (N, K) instance probabilities of N prompts
        (``text`` their embeddings); zeros for empty prompts; ``(None, None)`` without a grounder."""
        if self.grounder is None:
            return None, None
        n = len(prompts)
        features = scene["instance_features"].expand(n, -1, -1)
        ids = scene["instance_ids"].expand(n, -1)
        scores = self.grounder.probabilities(
            features.to(self.grounder.device), ids, text.to(self.grounder.device)
        )
        has_prompt = torch.tensor([bool(p) for p in prompts], device=scores.device)
        scores = scores.to(self.device) * has_prompt[:, None].to(self.device)
        instance = scene["instance_tensor"].expand(n, -1, -1)
        size = tuple(scene["condition"].shape[-2:])
        return paint_scores(scores, ids, instance, size), scores

    def encode_scene(self, image, xyz, instance_map, depth, K, generator) -> dict:
        """Returns the checked inputs plus ``center``/``scale`` and the (1, 12, h, w) condition latents."""
        scene = self._prepare(image, xyz, instance_map, depth, K)
        xyz0, valid = torch.from_numpy(scene["xyz"]), torch.from_numpy(scene["valid"])
        center, scale = normalization_stats(xyz0, valid)
        xyz0_norm = torch.where(valid[..., None], normalize_xyz(xyz0[None], center, scale)[0], 0.0)
        rgb = torch.from_numpy(scene["rgb"]).permute(2, 0, 1).float() / 127.5 - 1.0
        dtype = self.image_vae.dtype
        scene["condition"] = condition_latents(
            self.image_vae,
            rgb[None].to(self.device, dtype),
            torch.from_numpy(scene["instance"]).long()[None].to(self.device),
            xyz0_norm.permute(2, 0, 1)[None].to(self.device, dtype),
            generator=generator,
        )
        instance = torch.from_numpy(scene["instance"]).long()[None].to(self.device)
        features, ids = instance_features(
            rgb[None].to(self.device),
            instance,
            xyz0_norm.permute(2, 0, 1)[None].to(self.device),
            valid[None].to(self.device),
        )
        scene.update(
            center=center, scale=scale, instance_tensor=instance, instance_features=features, instance_ids=ids
        )
        return scene

    def decode_samples(
        self, latents: Tensor, scene: dict, prompts: list[str], meta: dict
    ) -> MoMapPipelineOutput:
        """Returns the output of (N, C, h, w) MoMap latents: decoded, de-normalised MoMap records."""
        (H, W), T = scene["valid"].shape, self.num_frames
        channels = self.vae.decode_channels(latents.to(self.vae.dtype)).float()  # (N, 3T, H, W)
        xyz_out = denormalize_xyz(channels_to_xyz(channels), scene["center"], scene["scale"])
        valid = torch.from_numpy(scene["valid"]).to(xyz_out.device)
        xyz_out = torch.where(valid[None, None, ..., None], xyz_out, 0.0).cpu().numpy()  # (N, T, H, W, 3)
        momaps = [
            MoMap(
                xyz=xyz_out[i],
                valid=scene["valid"],
                visible=np.ones((T, H, W), dtype=bool),
                rgb=scene["rgb"],
                instance=scene["instance"],
                K=scene["K"],
                ref_from_cam=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                prompt=prompts[i],
                meta={"source": type(self).__name__, **meta},
            )
            for i in range(len(prompts))
        ]
        return MoMapPipelineOutput(momaps=momaps, xyz=xyz_out)

    def _denoise(
        self, latents, condition, text, uncond, guidance_scale, sampler, steps, progress, grounding=None
    ):
        """Runs the sampler; ``grounding`` (B, 1, h, w) goes with the prompt, zeros with ``uncond``."""
        sampler.set_timesteps(steps, device=latents.device)
        latents = latents * sampler.init_noise_sigma
        batch, dtype = latents.shape[0], self.unet.dtype
        cond = condition.expand(batch, -1, -1, -1).to(dtype)
        cond_uncond = cond
        if grounding is not None:
            cond_uncond = torch.cat([cond, torch.zeros_like(grounding).to(dtype)], dim=1)
            cond = torch.cat([cond, grounding.to(dtype)], dim=1)
        text = text.to(dtype)
        uncond = None if uncond is None else uncond.to(dtype)
        for t in self.progress_bar(sampler.timesteps) if progress else sampler.timesteps:
            scaled = sampler.scale_model_input(latents, t).to(dtype)
            model_in = torch.cat([scaled, cond], dim=1)
            if uncond is not None:
                model_uncond = torch.cat([scaled, cond_uncond], dim=1)
                both = self.unet(
                    torch.cat([model_uncond, model_in]), t, encoder_hidden_states=torch.cat([uncond, text])
                ).sample
                noise_uncond, noise_text = both.float().chunk(2)
                noise = noise_uncond + guidance_scale * (noise_text - noise_uncond)
            else:
                noise = self.unet(model_in, t, encoder_hidden_states=text).sample.float()
            latents = sampler.step(noise, t, latents).prev_sample
        return latents


class MoMapVAEPipeline(MoMapPipeline):
    """The MoMap-VAE baseline (paper §4.1) behind the same interface as ``MoMapPipeline``.

    Same conditions, text encoder and MoMap VAE decoder; the generator is a conditional VAE
    (``momaplib.diffusion.cvae.ConditionalMoMapVAE``) that maps z ~ N(0, I) straight to
    a MoMap latent. ``num_inference_steps``, ``guidance_scale`` and ``scheduler`` are ignored.
    """

    model_cpu_offload_seq = "cvae->vae"
    _optional_components: ClassVar[list[str]] = []

    def __init__(self, cvae, vae: AutoencoderKL, image_vae: AutoencoderKL, text_encoder: str = "minilm"):
        DiffusionPipeline.__init__(self)
        self.register_modules(cvae=cvae, vae=vae, image_vae=image_vae)
        self.register_to_config(text_encoder=text_encoder)

    @torch.no_grad()
    def __call__(
        self,
        image,
        xyz=None,
        instance_map=None,
        prompt: str | list[str] | None = None,
        num_samples: int = 10,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        scheduler: str | None = None,
        depth=None,
        K=None,
        batch_size: int | None = None,
        progress: bool = True,
    ) -> MoMapPipelineOutput:
        """Returns ``num_samples`` MoMaps; the arguments mean what they mean for ``MoMapPipeline``."""
        scene = self.encode_scene(image, xyz, instance_map, depth, K, generator)
        prompts, _ = self._prompts(prompt, num_samples)
        text = self.encode_prompt(prompts).to(self.cvae.dtype)
        latents = self.cvae.sample(scene["condition"].to(self.cvae.dtype), text, generator=generator)
        return self.decode_samples(latents.float(), scene, prompts, {})


def load_pipeline(name_or_path, **kwargs) -> MoMapPipeline:
    """Returns the ``MoMapPipeline`` or ``MoMapVAEPipeline`` saved in a folder, bundled name or hub id.

    The class is read from ``model_index.json``; ``kwargs`` go to ``from_pretrained``.
    """
    import json

    from momaplib.checkpoints import resolve_checkpoint

    path = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"))
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"pipeline {name_or_path!r}: {index} is missing; not a pipeline folder")
    classes = {cls.__name__: cls for cls in (MoMapPipeline, MoMapVAEPipeline)}
    name = json.loads(index.read_text()).get("_class_name")
    if name not in classes:
        raise ValueError(f"pipeline {name_or_path!r}: _class_name {name!r} is not one of {sorted(classes)}")
    return classes[name].from_pretrained(path, **kwargs)
