"""``MoMapPipeline``: one image (+ XYZ, instances, optional prompt) -> N sampled MoMaps (paper §3.3.3)."""

from __future__ import annotations

import functools
import warnings
from typing import ClassVar

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from torch import Tensor

import momaplib.diffusion.cvae
import momaplib.vae  # noqa: F401
from momaplib.diffusion.batching import (
    SCENE_KEYS,
    SCHEDULERS,
    denoise_rows,
    module_dtype,
    sampler_for,
    scene_rows,
)
from momaplib.diffusion.conditioning import condition_latents, fill_holes_nearest
from momaplib.diffusion.conditions import DEFAULT_CONDITIONS, check_conditions, condition_channels
from momaplib.diffusion.dsl import check_dsl_arguments, num_dsl_windows, plan_dsl
from momaplib.diffusion.fast import FastSamplingMixin
from momaplib.diffusion.grounding import PromptGrounder, instance_features, paint_scores
from momaplib.diffusion.inputs import (
    MAX_IMAGE_SIZE,
    check_prompts,
    check_sampling_args,
    estimate_intrinsics,
    prepare_scene,
)
from momaplib.diffusion.output import LazyMoMaps, MoMapPipelineOutput
from momaplib.diffusion.text import load_text_encoder
from momaplib.momap import channels_to_xyz, denormalize_xyz, normalization_stats, normalize_xyz

#: Guidance of pipelines whose config names none (chosen on the val split, ``docs/experiments.md``);
#: a trained pipeline stores its own ``guidance_scale``, the default of every call and tool.
DEFAULT_GUIDANCE = 2.0


__all__ = [
    "DEFAULT_GUIDANCE",
    "SCHEDULERS",
    "MoMapPipeline",
    "MoMapPipelineOutput",
    "MoMapVAEPipeline",
    "estimate_intrinsics",
]


def _device_once(method):
    """Runs a pipeline method with ``pipe.device`` looked up once: diffusers' property asks every
    submodule of every component for offloading hooks on each read (milliseconds), and one call
    reads it a dozen times."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.__dict__.get("_call_device") is not None:  # nested: the outer call looked it up
            return method(self, *args, **kwargs)
        self.__dict__["_call_device"] = DiffusionPipeline.device.fget(self)
        try:
            return method(self, *args, **kwargs)
        finally:
            self.__dict__["_call_device"] = None

    return wrapper


class MoMapPipeline(FastSamplingMixin, DiffusionPipeline):
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

    ``conditions`` names what the UNet reads (``momaplib.diffusion.conditions``; default: rgb,
    instance, xyz and text, + grounding with a grounder). A pipeline with ``"dsl"`` takes the
    motion DSL of ``momaplib.control`` (``dsl=`` or ``planner=`` at the call; windows of
    ``dsl_window`` frames); one without ``"text"`` gives the UNet the empty prompt and hands the
    prompt to the planner only. ``init_source`` records what the UNet started from
    (``momap train-diffusion``: "scratch", "inflate:<image UNet>", "pretrained:<pipeline>").

    ``anchor_t0`` (default True): every valid pixel's trajectory is shifted to start at the XYZ
    the call was given, its motion (displacements from t = 0) as sampled; the input is the
    geometry at t = 0, noise and all. ``pipe.register_to_config(anchor_t0=False)`` returns the
    model's own t = 0 (how well the model reproduces its input: ``benchmarks/eval_sensors.py``).
    ``fill_condition_holes`` (default True): pixels without geometry enter the XYZ condition as
    their nearest valid pixel (not as the scene centre, a false point in mid-air); they stay
    invalid in the output.
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
        conditions: list[str] | None = None,
        dsl_window: int = 8,
        init_source: str | None = None,
        guidance_scale: float = DEFAULT_GUIDANCE,
        anchor_t0: bool = True,
        fill_condition_holes: bool = True,
    ):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, image_vae=image_vae, scheduler=scheduler, grounder=grounder)
        if conditions is None:
            conditions = (*DEFAULT_CONDITIONS, "grounding") if grounder is not None else DEFAULT_CONDITIONS
        self.register_to_config(
            text_encoder=text_encoder,
            conditions=list(check_conditions(conditions)),
            dsl_window=dsl_window,
            init_source=init_source,  # what the UNet started from (None: not recorded)
            guidance_scale=guidance_scale,  # the default of every call
            anchor_t0=anchor_t0,  # trajectories start at the given XYZ (False: the model's own t = 0)
            fill_condition_holes=fill_condition_holes,  # holes enter the XYZ condition as their nearest pixel
        )

    @property
    def conditions(self) -> tuple[str, ...]:
        """The condition names the UNet reads, in channel order (``momaplib.diffusion.conditions``)."""
        return check_conditions(self.config.conditions)

    @property
    def dsl_windows(self) -> int:
        """Windows of the DSL condition (0 without one)."""
        return num_dsl_windows(self.num_frames, self.config.dsl_window) if "dsl" in self.conditions else 0

    @property
    def device(self) -> torch.device:
        """``DiffusionPipeline.device``; inside a call, the value the call looked up at its start."""
        cached = self.__dict__.get("_call_device")
        return cached if cached is not None else super().device

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
        """Returns (B, L, D) text embeddings on the pipeline's device (each distinct prompt encoded once)."""
        encoder = load_text_encoder(self.config.text_encoder)
        unique = list(dict.fromkeys(prompts))
        index = torch.tensor([unique.index(prompt) for prompt in prompts], dtype=torch.long)
        return encoder(unique)[index].to(self.device)

    @staticmethod
    def _prompts(prompt, num_samples: int) -> tuple[list[str], bool]:
        return check_prompts(prompt, num_samples)

    # ------------------------------------------------------------------------------------ call
    @torch.no_grad()
    @_device_once
    def __call__(
        self,
        image,
        xyz=None,
        instance_map=None,
        prompt: str | list[str] | None = None,
        num_samples: int = 10,
        num_inference_steps: int = 25,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        scheduler: str | None = None,
        depth=None,
        K=None,
        batch_size: int | None = None,
        progress: bool = True,
        max_image_size: int = MAX_IMAGE_SIZE,
        dsl=None,
        planner=None,
        labels: dict[int, str] | None = None,
    ) -> MoMapPipelineOutput:
        """Returns ``num_samples`` MoMaps (metres, reference camera frame) for one scene.

        Every argument is checked before anything heavy runs (``momaplib.diffusion.inputs``).

        Args:
            image: (H, W, 3) uint8 reference frame; H, W multiples of 8 in [8, ``max_image_size``].
            xyz: (H, W, 3) float XYZ map in metres (camera frame); or give ``depth`` (H, W) + ``K``.
                Holes (depth or z 0, NaN, inf; points behind the camera) are invalid pixels: they
                have ``valid`` False in the MoMaps (counted in ``num_invalid``, with a warning) and
                enter the condition as their nearest valid pixel (``fill_condition_holes``). To give
                them trajectories too, fill the depth with ``momaplib.geometry.fill_depth_holes``.
                A median depth over ``momaplib.geometry.MAX_MEDIAN_DEPTH`` (100 m) is refused as
                millimetres.
            instance_map: (H, W) integer instance ids, 0 = background.
            prompt: one prompt for all samples, a list of ``num_samples`` prompts, or None (no text).
            num_samples: N futures to sample (batched ``batch_size`` at a time, default all).
            num_inference_steps: denoising steps, 1 to the scheduler's training timesteps.
            guidance_scale: classifier-free guidance on the text (and the DSL), finite >= 0; 1.0 (or
                no prompt and no DSL) = unguided; None: the pipeline's ``config.guidance_scale``.
            generator: torch generator for the noise and the instance colours (reproducible calls).
            scheduler: ``"ddim"``, ``"dpm"`` (DPM-Solver++), ``"unipc"``, ``"euler"`` or ``"ddpm"``; None
                keeps the pipeline's. ``pipe.enable_fast_sampling()`` (``momaplib.diffusion.fast``) is faster.
            max_image_size: largest H and W accepted (default 1024; memory grows with H x W).
            dsl: pipelines with the ``"dsl"`` condition: a ``momaplib.control.MotionDSL``, its JSON
                text or its pixel form (3 n_windows, H, W); checked against the instance map and the
                pipeline's windows. None: no DSL (the unconditional branch), unless ``planner``.
            planner: instead of ``dsl``: a ``momaplib.control`` planner that turns (image, instance
                map, ``prompt``, ``labels``) into a DSL, e.g. ``RulePlanner()`` or a ``VLMPlanner``.
            labels: ``{instance id: name}`` for the planner ("red block", ...).
        """
        scene = {
            "image": image, "xyz": xyz, "instance_map": instance_map, "prompt": prompt, "depth": depth,
            "K": K, "dsl": dsl, "planner": planner, "labels": labels,
        }  # fmt: skip
        options = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale}
        return self.sample_scenes(
            [scene], num_samples, generator=generator, scheduler=scheduler, batch_size=batch_size,
            progress=progress, max_image_size=max_image_size, **options,
        )[0]  # fmt: skip

    @torch.no_grad()
    @_device_once
    def sample_scenes(
        self,
        scenes: list[dict],
        num_samples: int = 10,
        num_inference_steps: int = 25,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        scheduler: str | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        max_image_size: int = MAX_IMAGE_SIZE,
    ) -> list[MoMapPipelineOutput]:
        """Returns one output per scene, the scenes' samples denoised together in UNet batches.

        Each scene is a dict of ``__call__``'s scene arguments (``image``, ``xyz`` or ``depth`` + ``K``,
        ``instance_map``, and optionally ``prompt``, ``dsl``, ``planner``, ``labels``). Sampling many
        small scenes one call at a time is bound by kernel launches; here the rows of all scenes of
        one size share each UNet call (``batch_size`` rows at most, default all). ``generator``: one
        per scene (then each scene's samples equal its own ``__call__`` with that generator, up to
        batching round-off), or one for all. Every scene is checked before any is encoded.
        """
        self._check_unet_inputs()
        if guidance_scale is None:
            guidance_scale = getattr(self.config, "guidance_scale", DEFAULT_GUIDANCE)
        generators = generator if isinstance(generator, list | tuple) else [generator] * len(scenes)
        if len(generators) != len(scenes):
            raise ValueError(f"generator: expected one per scene ({len(scenes)}), got {len(generators)}")
        for gen in generators:
            check_sampling_args(
                num_samples, batch_size, gen, num_inference_steps, guidance_scale,
                self.scheduler.config.num_train_timesteps,
            )  # fmt: skip
        sampler = sampler_for(self, scheduler, generators[0])
        checked = []
        for args in scenes:
            unknown = sorted(set(args) - SCENE_KEYS)
            if unknown:
                raise ValueError(f"scenes: unknown key(s) {unknown}; expected some of {sorted(SCENE_KEYS)}")
            prompts, has_text = self._prompts(args.get("prompt"), num_samples)
            check_dsl_arguments(self.conditions, args.get("dsl"), args.get("planner"))
            prepared = prepare_scene(
                args["image"], args.get("xyz"), args.get("instance_map"), args.get("depth"), args.get("K"),
                max_image_size,
            )  # fmt: skip
            motion = plan_dsl(self, prepared, prompts, args)
            checked.append((args, prompts, has_text, prepared, motion))
        rows = []
        for (args, prompts, has_text, prepared, motion), gen in zip(checked, generators, strict=True):
            scene = self.encode_scene(
                args["image"], args.get("xyz"), args.get("instance_map"), args.get("depth"), args.get("K"),
                gen, max_image_size, prepared=prepared,
            )  # fmt: skip
            rows.append(scene_rows(self, scene, prompts, has_text, motion, guidance_scale, gen))
        latents = denoise_rows(self, rows, guidance_scale, sampler, num_inference_steps, progress, batch_size)
        outputs = []
        for (_, prompts, _, _, motion), row, sampled in zip(checked, rows, latents, strict=True):
            output = self.decode_samples(sampled, row["scene"], prompts, {"guidance_scale": guidance_scale})
            output.dsl = motion
            if row["scores"] is not None:
                keep = row["scene"]["instance_ids"][0] > 0
                output.grounding = {
                    "ids": row["scene"]["instance_ids"][0][keep].cpu().numpy(),
                    "probabilities": row["scores"][:, keep].cpu().numpy(),
                }
            outputs.append(output)
        return outputs

    def _check_unet_inputs(self) -> None:
        spec = self.conditions
        if "grounding" in spec and self.grounder is None:
            raise ValueError("grounder: the pipeline's conditions name 'grounding', but it has no grounder")
        expected = self.unet.config.out_channels + condition_channels(spec, self.dsl_windows)
        if self.unet.config.in_channels != expected:
            raise ValueError(
                f"unet: in_channels {self.unet.config.in_channels} does not match "
                f"{self.unet.config.out_channels} MoMap latent + {expected - self.unet.config.out_channels} "
                f"condition channels (conditions {list(spec)}) = {expected}"
                + ("" if "grounding" in spec else "; a UNet trained with grounding needs its grounder")
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

    def encode_scene(
        self, image, xyz, instance_map, depth, K, generator, max_image_size=MAX_IMAGE_SIZE, prepared=None
    ) -> dict:
        """Returns the checked inputs (``inputs.prepare_scene``; ``prepared`` if already checked) plus
        ``center``/``scale`` and the (1, 12, h, w) condition latents; invalid pixels enter the XYZ
        condition as their nearest valid pixel (``fill_condition_holes``; else as 0 in model range,
        the scene centre, as ``momaplib.data.model_inputs`` gives holes of observed depth)."""
        if prepared is None:
            prepared = prepare_scene(image, xyz, instance_map, depth, K, max_image_size)
        scene = dict(prepared)
        if scene["num_invalid"]:
            warnings.warn(
                f"{'xyz' if xyz is not None else 'depth'}: {scene['num_invalid']} of {scene['valid'].size} "
                f"pixels ({scene['num_invalid'] / scene['valid'].size:.1%}) have no geometry (0, NaN, inf or "
                "behind the camera); they are invalid in the output MoMaps (valid False, no trajectory). "
                "For dense input, fill them with momaplib.geometry.fill_depth_holes",
                stacklevel=6,  # the caller of __call__ (both under torch.no_grad's wrapper)
            )
        xyz0, valid = torch.from_numpy(scene["xyz"]), torch.from_numpy(scene["valid"])
        center, scale = normalization_stats(xyz0, valid)
        xyz0_norm = torch.where(valid[..., None], normalize_xyz(xyz0[None], center, scale)[0], 0.0)
        if getattr(self.config, "fill_condition_holes", True):  # holes: the surface around them
            xyz0_norm = fill_holes_nearest(xyz0_norm.permute(2, 0, 1)[None], valid[None])[0].permute(1, 2, 0)
        rgb = torch.from_numpy(scene["rgb"]).permute(2, 0, 1).float() / 127.5 - 1.0
        dtype = module_dtype(self.image_vae)
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
        if not bool(torch.isfinite(scene["condition"]).all()):
            raise ValueError(
                f"xyz: the condition latents are not finite (scene scale {float(scale):.3g} m, "
                f"largest |xyz| {float(np.abs(scene['xyz']).max()):.3g} m); remove far outliers or mark "
                "them invalid (NaN)"
            )
        scene.update(
            center=center, scale=scale, instance_tensor=instance, instance_features=features, instance_ids=ids
        )
        return scene

    def decode_samples(
        self, latents: Tensor, scene: dict, prompts: list[str], meta: dict
    ) -> MoMapPipelineOutput:
        """Returns the output of (N, C, h, w) MoMap latents: decoded, de-normalised MoMap records."""
        channels = self.vae.decode_channels(latents.to(module_dtype(self.vae))).float()  # (N, 3T, H, W)
        xyz_out = denormalize_xyz(channels_to_xyz(channels), scene["center"], scene["scale"])
        valid = torch.from_numpy(scene["valid"]).to(xyz_out.device)
        if getattr(self.config, "anchor_t0", True):  # each trajectory moved to start where the input says
            xyz_out = xyz_out - xyz_out[:, :1] + torch.from_numpy(scene["xyz"]).to(xyz_out)
        xyz_out = torch.where(valid[None, None, ..., None], xyz_out, 0.0)
        if not bool(torch.isfinite(xyz_out).all()):  # once here, so the records need not look again
            raise FloatingPointError("the decoded MoMaps are not finite (diverged samples or broken weights)")
        xyz_out = xyz_out.cpu().numpy()  # (N, T, H, W, 3)
        num_invalid = int(scene["valid"].size - scene["valid"].sum())
        meta = {"source": type(self).__name__, **meta, "num_invalid": num_invalid}
        momaps = LazyMoMaps(xyz_out, scene, prompts, meta)
        return MoMapPipelineOutput(momaps=momaps, xyz=xyz_out, num_invalid=num_invalid)


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
    @_device_once
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
        max_image_size: int = MAX_IMAGE_SIZE,
    ) -> MoMapPipelineOutput:
        """Returns ``num_samples`` MoMaps; the arguments mean what they mean for ``MoMapPipeline``."""
        check_sampling_args(num_samples, batch_size, generator)
        prompts, _ = self._prompts(prompt, num_samples)
        scene = self.encode_scene(image, xyz, instance_map, depth, K, generator, max_image_size)
        dtype = module_dtype(self.cvae)
        text = self.encode_prompt(prompts).to(dtype)
        latents = self.cvae.sample(scene["condition"].to(dtype), text, generator=generator)
        return self.decode_samples(latents.float(), scene, prompts, {})


def load_pipeline(name_or_path, **kwargs) -> MoMapPipeline:
    """Returns the ``MoMapPipeline`` or ``MoMapVAEPipeline`` saved in a folder, bundled name or hub id
    (or a LoRA student of ``momaplib.diffusion.distill``).

    The class is read from ``model_index.json``; ``kwargs`` go to ``from_pretrained``.
    """
    import json

    from momaplib.checkpoints import resolve_checkpoint

    # only to read the class: the class's from_pretrained checks the weights against their manifest
    path = resolve_checkpoint(name_or_path, revision=kwargs.get("revision"), verify=False)
    if (path / "lcm_lora.json").is_file():  # a LoRA student: its teacher with the adapters merged
        from momaplib.diffusion.distill import load_lora_student

        return load_lora_student(path, **kwargs)
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"pipeline {name_or_path!r}: {index} is missing; not a pipeline folder")
    classes = {cls.__name__: cls for cls in (MoMapPipeline, MoMapVAEPipeline)}
    name = json.loads(index.read_text()).get("_class_name")
    if name not in classes:
        raise ValueError(f"pipeline {name_or_path!r}: _class_name {name!r} is not one of {sorted(classes)}")
    return classes[name].from_pretrained(path, **kwargs)
