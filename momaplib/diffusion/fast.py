"""The fast sampling path of ``MoMapPipeline`` (``pipe.enable_fast_sampling()``).

The eager denoising loop is launch-bound on a GPU: a small UNet on a batch of 2N rows runs far
below the GPU's speed because every one of its hundreds of kernels is launched from Python, at
every step. The fast path removes what it can of that overhead while computing the same samples:

- the UNet runs from its own copy in ``dtype`` (on CUDA: bfloat16, channels-last memory format);
- the conditions are encoded once per call (as on the eager path) and cast, stacked for the two
  branches of classifier-free guidance and written into the UNet's input buffer once; each step
  only writes the noisy latent into it, so the N samples x 2 guidance branches are one UNet call;
- the DDIM update (the bundled pipelines' scheduler) is a few multiply-adds with per-step
  coefficients computed once on the device (``DeviceDDIM``), so a step makes no host round trip;
- on CUDA the whole step (input, UNet, guidance mix, DDIM update) is one ``torch.compile``d
  function (default mode ``"reduce-overhead"``: CUDA graphs), traced once per input shape and
  replayed at every later step and call with that shape (the first call of a shape is slow).

Decoding is batched on both paths (one MoMap-VAE call for all N samples). The fast path is off on
CPUs (no CUDA graphs there, and bfloat16 is slow on most CPUs) unless enabled; on CUDA it is on
when ``FAST_SAMPLING_ON_CUDA`` is True. ``pipe.disable_fast_sampling()`` turns it off.

Agreement with the eager path: in float32 without compilation the fast path differs only by the
order of floating-point operations (channels-last kernels): ``tests/test_fast_sampling.py`` bounds
the decoded MoMaps by ``FP32_TOLERANCE`` (metres, at a 1 m scene scale). In bfloat16 the UNet
rounds to 8 significant bits; ``benchmarks/bench_sampling.py`` records the max abs difference of
the decoded MoMaps from the same seed on the device.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from momaplib.diffusion.batching import module_dtype, sampler_step_options

#: Whether pipelines on CUDA sample through the fast path when neither ``enable_fast_sampling`` nor
#: ``disable_fast_sampling`` was called. Set from ``benchmarks/bench_sampling.py --device cuda``
#: (``benchmarks/results/sampling_h100.json``: 10 samples of the bundled model end to end in 0.19 s
#: against 0.89 s eager float32 on one H100). In bfloat16 a sample drifts from the float32 one of
#: the same seed by up to 3.4 % of the scene scale at its worst pixel (another sample of the same
#: distribution, not an error); ``pipe.disable_fast_sampling()`` gives the float32 samples.
FAST_SAMPLING_ON_CUDA = True
#: Few-step sampling (notebook 04's default on every device): DPM-Solver++ in 8 steps, 10 samples of the
#: bundled model in ~2 s on 2 CPU cores (``benchmarks/bench_sampling.py --device cpu``); on 300 paired
#: test clips per family its best-of-10 ``ate_dtw`` is within 0.11 % of DDIM in 25 steps
#: (``benchmarks/eval_schedulers.py``, ``benchmarks/results/sampler_steps_h100.json``).
CPU_SCHEDULER = "dpm"
CPU_STEPS = 8
#: Largest |fast - eager| (metres) of decoded MoMaps of a scene at 1 m scale, float32, no compilation.
FP32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class FastSamplingConfig:
    """Settings of the fast sampling path (``MoMapPipeline.enable_fast_sampling``)."""

    dtype: str | None = None
    """UNet weights and activations: "bfloat16", "float16" or "float32"; None: bfloat16 on CUDA,
    float32 elsewhere. The guidance mix and the scheduler always run in float32."""
    channels_last: bool | None = None
    """Store the UNet's weights and input in channels-last memory format (faster convolutions on
    tensor cores); None: on CUDA only (on CPUs its group norms are slower than the convolutions gain)."""
    compile: bool | None = None
    """``torch.compile`` the denoising step; None: on CUDA only (compiling on a CPU takes minutes)."""
    compile_mode: str | None = "reduce-overhead"
    """``torch.compile`` mode: "reduce-overhead" records CUDA graphs; "max-autotune" also tunes
    kernels (slower first call); None: the default mode."""
    device_scheduler: bool = True
    """Run DDIM's update as precomputed per-step coefficients on the device (other schedulers,
    and DDIM with clipping or thresholding, use their own ``step``)."""
    fallback: bool = True
    """If compilation fails, warn and run the step uncompiled instead of raising."""


def resolve_dtype(config: FastSamplingConfig, device: torch.device) -> torch.dtype:
    """Returns the UNet dtype of the fast path on ``device``."""
    names = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if config.dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if config.dtype not in names:
        raise ValueError(
            f"FastSamplingConfig.dtype: expected one of {sorted(names)} or None, got {config.dtype!r}"
        )
    return names[config.dtype]


class DeviceDDIM:
    """DDIM's deterministic update (eta = 0) with its per-step scalars computed once, on the device.

    ``step(index, model_output, sample)`` returns what ``DDIMScheduler.step(model_output,
    timesteps[index], sample).prev_sample`` returns, with the same float32 operations in the same
    order, so the two agree bit for bit on a CPU. Supports the three prediction types; a scheduler
    with ``clip_sample`` or ``thresholding`` is refused by ``supports``.
    """

    def __init__(self, scheduler: DDIMScheduler, device: torch.device):
        config = scheduler.config
        ratio = config.num_train_timesteps // scheduler.num_inference_steps
        alphas = scheduler.alphas_cumprod
        rows = []
        for t in scheduler.timesteps.tolist():
            prev = t - ratio
            alpha_t = alphas[t]
            alpha_prev = alphas[prev] if prev >= 0 else scheduler.final_alpha_cumprod
            # the scalars DDIMScheduler.step computes, as float32 tensors like its own
            rows.append(
                torch.stack([alpha_t**0.5, (1 - alpha_t) ** 0.5, alpha_prev**0.5, (1 - alpha_prev) ** 0.5])
            )
        self.coefficients = torch.stack(rows).to(device, torch.float32)  # (steps, 4)
        self.prediction_type = config.prediction_type

    @staticmethod
    def supports(scheduler) -> bool:
        """Returns whether ``scheduler`` is a DDIM scheduler whose update this class reproduces."""
        config = scheduler.config
        return isinstance(scheduler, DDIMScheduler) and not config.clip_sample and not config.thresholding

    def step(self, coefficients: Tensor, model_output: Tensor, sample: Tensor) -> Tensor:
        """Returns the previous sample; ``coefficients`` (4,) is row ``index`` of ``self.coefficients``."""
        return ddim_update(coefficients, model_output, sample, self.prediction_type)


def ddim_update(coefficients: Tensor, model_output: Tensor, sample: Tensor, prediction_type: str) -> Tensor:
    """Returns DDIM's previous sample (eta = 0) from (4,) ``coefficients`` sqrt(a_t), sqrt(1 - a_t),
    sqrt(a_prev), sqrt(1 - a_prev), in ``DDIMScheduler.step``'s order of operations."""
    root_alpha, root_beta, root_alpha_prev, root_beta_prev = coefficients.unbind()
    if prediction_type == "v_prediction":
        original = root_alpha * sample - root_beta * model_output
        epsilon = root_alpha * model_output + root_beta * sample
    elif prediction_type == "epsilon":
        original = (sample - root_beta * model_output) / root_alpha
        epsilon = model_output
    elif prediction_type == "sample":
        original = model_output
        epsilon = (sample - root_alpha * original) / root_beta
    else:
        raise ValueError(f"scheduler: prediction_type {prediction_type!r} is not supported by DeviceDDIM")
    return root_alpha_prev * original + root_beta_prev * epsilon


class FastSampler:
    """Denoises with a UNet copy in the fast path's dtype and memory format, one step function per
    input shape (compiled on CUDA); built by ``MoMapPipeline.enable_fast_sampling``."""

    def __init__(self, config: FastSamplingConfig):
        self.config = config
        self._unet = None  # (source UNet, device, dtype) -> the copy the fast path runs
        self._key = None
        self._step = None

    def unet_for(self, unet: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """Returns the fast path's copy of ``unet`` on ``device`` (made again when either changes)."""
        dtype = resolve_dtype(self.config, device)
        key = (id(unet), device, dtype)
        if self._key != key:
            # nn.Module.to: diffusers' own .to warns about fp32-kept modules, which these UNets lack
            fast = torch.nn.Module.to(copy.deepcopy(unet), device, dtype).eval().requires_grad_(False)
            if self.config.channels_last or (self.config.channels_last is None and device.type == "cuda"):
                fast = fast.to(memory_format=torch.channels_last)
            self._unet, self._key, self._step = fast, key, None
        return self._unet

    def step_function(self, device: torch.device):
        """Returns the step function, compiled when the config (or, by default, CUDA) asks for it."""
        if self._step is None:
            compile_step = self.config.compile if self.config.compile is not None else device.type == "cuda"
            self._step = guided_step
            if compile_step:
                self._step = torch.compile(guided_step, mode=self.config.compile_mode, dynamic=False)
        return self._step

    def denoise(
        self, pipe, latents, cond, cond_uncond, text, uncond, guidance_scale, sampler, steps, progress
    ):
        """Returns the denoised (B, C, h, w) latents; the arguments mean what they mean for the
        eager ``MoMapPipeline._denoise``."""
        device = latents.device
        unet = self.unet_for(pipe.unet, device)
        dtype = module_dtype(unet)
        sampler.set_timesteps(steps, device=device)
        latents = latents.float() * sampler.init_noise_sigma
        guided = cond_uncond is not None
        # the conditions and text of both guidance branches, cast and laid out once per call
        cond_in = torch.cat([cond_uncond, cond]) if guided else cond
        cond_in = cond_in.to(dtype)
        text_in = (torch.cat([uncond, text]) if guided else text).to(dtype)
        scale = torch.tensor(float(guidance_scale), device=device)
        ddim = (
            DeviceDDIM(sampler, device)
            if self.config.device_scheduler and DeviceDDIM.supports(sampler)
            else None
        )
        prediction = ddim.prediction_type if ddim is not None else None
        step = self.step_function(device)
        timesteps, options = sampler.timesteps, sampler_step_options(sampler)
        for index in pipe.progress_bar(range(len(timesteps))) if progress else range(len(timesteps)):
            t = timesteps[index]
            scaled = latents if ddim is not None else sampler.scale_model_input(latents, t)
            coefficients = ddim.coefficients[index] if ddim is not None else None
            out = self._call(step, unet, scaled, cond_in, text_in, t, scale, guided, coefficients, prediction)
            latents = out if ddim is not None else sampler.step(out, t, latents, **options).prev_sample
        return latents

    def _call(self, step, unet, *args):
        if step is guided_step:
            return step(unet, *args)
        if torch.cuda.is_available() and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        try:
            # a CUDA graph's output buffer is overwritten by its next replay: keep a copy
            return step(unet, *args).clone()
        except Exception as error:  # compilation errors come in many types (inductor, triton, dynamo)
            if not self.config.fallback:
                raise
            warnings.warn(f"fast sampling: torch.compile failed ({type(error).__name__}: {error}); "
                          "sampling uncompiled", stacklevel=2)  # fmt: skip
            self._step = guided_step
            self.config = replace(self.config, compile=False)
            return guided_step(unet, *args)


def guided_step(unet, scaled, cond_in, text_in, t, scale, guided, coefficients, prediction_type):
    """Returns the guided noise prediction of one step, or the next latents when ``coefficients``
    (a DDIM step's, ``DeviceDDIM``) are given.

    ``scaled`` (N, C, h, w) float32 latents; ``cond_in`` (B, C_cond, h, w) and ``text_in`` (B, L, D)
    in the UNet's dtype, B = 2N with guidance (unconditional rows first); ``t`` the timestep and
    ``scale`` the guidance scale as 0-d tensors (so one compiled graph serves every step).
    """
    sample = scaled.to(cond_in.dtype)
    if guided:
        sample = torch.cat([sample, sample])
    model_in = torch.cat([sample, cond_in], dim=1)
    noise = unet(model_in, t, encoder_hidden_states=text_in).sample.float()
    if guided:
        noise_uncond, noise_cond = noise.chunk(2)
        noise = noise_uncond + scale * (noise_cond - noise_uncond)
    if coefficients is None:
        return noise
    return ddim_update(coefficients, noise, scaled, prediction_type)


def eager_denoise(pipe, latents, cond, cond_uncond, text, uncond, guidance_scale, sampler, steps, progress):
    """Runs the sampler on (B, C, h, w) noise; with ``cond_uncond`` and ``uncond`` (the unguided
    conditions and text), classifier-free guidance mixes both predictions by ``guidance_scale``."""
    sampler.set_timesteps(steps, device=latents.device)
    latents = latents * sampler.init_noise_sigma
    dtype = module_dtype(pipe.unet)
    cond, text = cond.to(dtype), text.to(dtype)
    guided = cond_uncond is not None
    if guided:
        cond_both = torch.cat([cond_uncond.to(dtype), cond])
        text_both = torch.cat([uncond.to(dtype), text])
    for t in pipe.progress_bar(sampler.timesteps) if progress else sampler.timesteps:
        scaled = sampler.scale_model_input(latents, t).to(dtype)
        if guided:
            model_in = torch.cat([torch.cat([scaled, scaled]), cond_both], dim=1)
            both = pipe.unet(model_in, t, encoder_hidden_states=text_both).sample
            noise_uncond, noise_cond = both.float().chunk(2)
            noise = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
        else:
            noise = pipe.unet(torch.cat([scaled, cond], dim=1), t, encoder_hidden_states=text).sample
            noise = noise.float()
        latents = sampler.step(noise, t, latents, **sampler_step_options(sampler)).prev_sample
    return latents


class FastSamplingMixin:
    """``enable_fast_sampling`` / ``disable_fast_sampling`` and the denoising loop that honours them."""

    _fast_sampler: FastSampler | None = None
    _fast_sampling_choice: bool | None = None  # None: the device's default

    def enable_fast_sampling(self, config: FastSamplingConfig | None = None, **overrides) -> None:
        """Samples through the fast path from now on (module ``momaplib.diffusion.fast``).

        ``config`` (default ``FastSamplingConfig()``) and keyword ``overrides`` of its fields, e.g.
        ``pipe.enable_fast_sampling(compile=False)`` or ``dtype="float32"``. The fast path keeps
        its own copy of the UNet, taken at its first call on a device: call this again after
        changing the UNet's weights.
        """
        config = replace(config or FastSamplingConfig(), **overrides)
        resolve_dtype(config, torch.device("cpu"))  # checks the dtype name now, not at the first call
        self._fast_sampler, self._fast_sampling_choice = FastSampler(config), True

    def disable_fast_sampling(self) -> None:
        """Samples with the eager float32 loop from now on, on every device (frees the UNet copy)."""
        self._fast_sampler, self._fast_sampling_choice = None, False

    def fast_sampling_active(self, device: torch.device | str | None = None) -> bool:
        """Returns whether a call on ``device`` (default the pipeline's) uses the fast path."""
        device = torch.device(device if device is not None else self.device)
        if self._fast_sampling_choice is not None:
            return self._fast_sampling_choice
        return device.type == "cuda" and FAST_SAMPLING_ON_CUDA

    def _denoise(self, latents, cond, cond_uncond, text, uncond, guidance_scale, sampler, steps, progress):
        """Denoises (B, C, h, w) noise through the fast path when active, else the eager loop."""
        args = (latents, cond, cond_uncond, text, uncond, guidance_scale, sampler, steps, progress)
        if not self.fast_sampling_active(latents.device):
            return eager_denoise(self, *args)
        if self._fast_sampler is None:
            self._fast_sampler = FastSampler(FastSamplingConfig())
        return self._fast_sampler.denoise(self, *args)
