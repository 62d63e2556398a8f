"""Rendering MoMaps into videos (paper §3.4.1): every valid pixel becomes a 3D Gaussian that follows
its trajectory; depth-sorted alpha compositing on gsplat (CUDA) or an exact torch fallback.

- ``render_momap(momap, rgb, instance_map, K, cam_from_ref, height, width, backend)`` ->
  ``RenderOutput`` (``rgb``, ``instance``, ``alpha``, ``depth`` per frame);
- ``orbit_cameras`` / ``own_cameras``: camera paths to render into;
- ``render_quality``: how well a render reproduces the true frames (PSNR on covered, truly
  visible pixels).
"""

from momaplib.render.cameras import orbit_cameras
from momaplib.render.momap_render import (
    COVERED_ALPHA,
    FOOTPRINT,
    HOLE_ID,
    RenderOutput,
    check_cameras,
    own_cameras,
    render_momap,
)
from momaplib.render.quality import psnr, render_quality
from momaplib.render.splat import BACKENDS, Splats, gsplat_available, rasterize

__all__ = [
    "BACKENDS",
    "COVERED_ALPHA",
    "FOOTPRINT",
    "HOLE_ID",
    "RenderOutput",
    "Splats",
    "check_cameras",
    "gsplat_available",
    "orbit_cameras",
    "own_cameras",
    "psnr",
    "rasterize",
    "render_momap",
    "render_quality",
]
