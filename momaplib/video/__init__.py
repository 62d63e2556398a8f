"""MoMaps to video (paper §3.4.1): a completion model that fills the holes of Gaussian-splat renders.

- ``CompletionUNet``: image-diffusion UNet over image-VAE latents, self-attention flattened across
  the frames of a clip (``FlattenedFramesAttnProcessor``) or per frame (the ablation);
- ``TrainVideoJob`` (``momap train-video``): trains it on GT-MoMap renders of MoMap-Sim clips;
- ``MoMapVideoPipeline``: image → MoMaps → renders into target cameras → completed RGB and
  semantic videos; ``VideoJob`` (``momap video``) writes them as MP4/GIF;
- ``video_metrics`` / ``cv2_inpaint``: PSNR and SSIM on holes and on all pixels, temporal
  error, and the classical inpainting baseline.
"""

from diffusers import ModelMixin  # noqa: F401  (diffusers resolves custom components through it)

from momaplib.video.frames import clip_tensors, render_own_cameras, video_dataset
from momaplib.video.metrics import cv2_inpaint, ssim_map, temporal_error, video_metrics
from momaplib.video.model import FRAME_ATTENTION, CompletionUNet, FlattenedFramesAttnProcessor
from momaplib.video.pipeline import MoMapVideoOutput, MoMapVideoPipeline, fill_instance_holes
from momaplib.video.sampling import build_scheduler, complete_latents, complete_render

__all__ = [
    "FRAME_ATTENTION",
    "CompletionUNet",
    "FlattenedFramesAttnProcessor",
    "MoMapVideoOutput",
    "MoMapVideoPipeline",
    "build_scheduler",
    "clip_tensors",
    "complete_latents",
    "complete_render",
    "cv2_inpaint",
    "fill_instance_holes",
    "render_own_cameras",
    "ssim_map",
    "temporal_error",
    "video_dataset",
    "video_metrics",
]
