"""Isotropic 3D Gaussians rasterised by depth-sorted alpha compositing (paper §3.4.1).

Two backends with one semantics, the classic 3D Gaussian splatting image formation:

- ``gsplat`` (CUDA): the field's kept rasteriser, ``gsplat.rasterization`` with
  ``rasterize_mode="classic"``; tile-based, fast.
- ``torch`` (any device): the same projection (EWA: the 3D covariance pushed through the
  Jacobian of the pinhole projection, plus ``eps2d`` pixels² of dilation), the same alpha
  (``min(0.999, opacity * exp(-½ dᵀ Σ⁻¹ d))``, contributions below 1/255 skipped) and the same
  front-to-back compositing that stops once the transmittance would fall below 1e-4. It exists so
  that every notebook and test runs without a GPU or a compiled extension (gsplat JIT-compiles
  CUDA code and has no CPU path); it is written as sorted (gaussian, pixel) pairs with a segmented
  cumulative sum, so it is exact, differentiable and vectorised, but memory grows with the number
  of pairs, so frames are processed in chunks.

Pixel centres follow the kit's convention (``geometry``: pixel ``u`` covers ``[u - ½, u + ½)``);
gsplat puts centres at ``u + ½``, so its intrinsics are shifted by half a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Added to every projected 2D covariance (pixels²; gsplat defaults to 0.3, which blurs frame 0 of
#: a MoMap render by 4 dB and bleeds object ids one pixel into the background).
EPS2D = 0.1
#: Contributions below this alpha are skipped (as in gsplat).
MIN_ALPHA = 1.0 / 255.0
#: Alpha is clamped to this value, so a single Gaussian never makes a pixel fully opaque.
MAX_ALPHA = 0.999
#: Compositing stops once the transmittance would fall below this.
MIN_TRANSMITTANCE = 1e-4
#: Radius of a Gaussian's footprint in standard deviations (gsplat's torch reference uses 3.33).
RADIUS_SIGMAS = 3.33
#: Largest footprint radius in pixels the torch backend draws (a larger one is drawn at this
#: radius; only points almost touching the camera reach it).
MAX_RADIUS = 24
#: Nearest depth (metres) a Gaussian may have to be drawn.
NEAR_PLANE = 0.01
#: Pairs (gaussian, pixel) the torch backend builds at once; bounds its memory (~100 B a pair).
CHUNK_PAIRS = 6_000_000

BACKENDS = ("auto", "torch", "gsplat")


@dataclass
class Splats:
    """Rasteriser outputs for F frames (torch tensors on the input's device)."""

    features: Tensor  # [F, H, W, D] composited features (sum of weight * feature)
    alpha: Tensor  # [F, H, W] coverage: sum of the compositing weights, in [0, 1)
    depth: Tensor  # [F, H, W] expected z-depth in the target camera (0 where alpha is 0)


def gsplat_available() -> bool:
    """True when gsplat is importable and CUDA is present (gsplat has no CPU path)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(backend: str, device: torch.device) -> str:
    """Returns the backend to use: ``auto`` picks gsplat on CUDA tensors when it is installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError("backend: 'gsplat' rasterises on CUDA only; use backend='torch' on the CPU")
        if not gsplat_available():
            raise ValueError("backend: 'gsplat' is not installed (pip install gsplat); use backend='torch'")
    return backend


def rasterize(
    means: Tensor,  # [F, N, 3] centres in the reference frame, per frame
    scales: Tensor,  # [N] isotropic standard deviations (metres)
    features: Tensor,  # [N, D] per-Gaussian features (colour, one-hot ids, ...)
    K: Tensor,  # [F, 3, 3] target intrinsics
    cam_from_ref: Tensor,  # [F, 4, 4] target cameras
    height: int,
    width: int,
    backend: str = "auto",
    opacities: Tensor | None = None,  # [N] in (0, 1]; default 1
) -> Splats:
    """Returns the composited ``features``, coverage and expected depth of F frames."""
    backend = choose_backend(backend, means.device)
    if opacities is None:
        opacities = torch.ones_like(scales)
    if backend == "gsplat":
        return _rasterize_gsplat(means, scales, features, opacities, K, cam_from_ref, height, width)
    return _rasterize_torch(means, scales, features, opacities, K, cam_from_ref, height, width)


# ----------------------------------------------------------------------------- projection
def project_gaussians(
    means_cam: Tensor,  # [F, N, 3] in the target camera
    scales: Tensor,  # [N]
    K: Tensor,  # [F, 3, 3]
    height: int,
    width: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns pixel centres ``[F, N, 2]`` (kit convention), conics ``[F, N, 3]`` (a, b, c of the
    inverse 2D covariance ``[[a, b], [b, c]]``) and footprint radii ``[F, N]`` in pixels (0 = not
    drawn: behind the near plane or off the image)."""
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    x, y, z = means_cam.unbind(-1)
    z_safe = z.clamp_min(NEAR_PLANE)
    # The Jacobian is evaluated at a point clamped to 1.3x the field of view (as gsplat does), so
    # points far off-screen do not get huge footprints.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - 0.5 - cx) / fx + 0.3 * tan_x, (cx + 0.5) / fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (height - 0.5 - cy) / fy + 0.3 * tan_y, (cy + 0.5) / fy + 0.3 * tan_y
    tx = z_safe * torch.maximum(torch.minimum(x / z_safe, lim_x_pos), -lim_x_neg)
    ty = z_safe * torch.maximum(torch.minimum(y / z_safe, lim_y_pos), -lim_y_neg)
    # cov2d = s² J Jᵀ + eps2d I with J = [[fx/z, 0, -fx tx/z²], [0, fy/z, -fy ty/z²]]
    j00, j02 = fx / z_safe, -fx * tx / z_safe**2
    j11, j12 = fy / z_safe, -fy * ty / z_safe**2
    s2 = scales[None] ** 2
    cxx = s2 * (j00**2 + j02**2) + EPS2D
    cyy = s2 * (j11**2 + j12**2) + EPS2D
    cxy = s2 * (j02 * j12)
    det = (cxx * cyy - cxy**2).clamp_min(1e-10)
    conics = torch.stack([cyy / det, -cxy / det, cxx / det], dim=-1)
    u = fx * x / z_safe + cx
    v = fy * y / z_safe + cy
    radius = torch.ceil(RADIUS_SIGMAS * torch.sqrt(torch.maximum(cxx, cyy)))
    inside = (
        (u + radius > -0.5) & (u - radius < width - 0.5) & (v + radius > -0.5) & (v - radius < height - 0.5)
    )
    radius = torch.where((z > NEAR_PLANE) & inside, radius, torch.zeros_like(radius))
    return torch.stack([u, v], dim=-1), conics, radius.clamp_max(MAX_RADIUS)


# ----------------------------------------------------------------------------- torch backend
def _rasterize_torch(means, scales, features, opacities, K, cam_from_ref, height, width) -> Splats:
    F = means.shape[0]
    D = features.shape[-1]
    means_cam = means @ cam_from_ref[:, :3, :3].transpose(1, 2) + cam_from_ref[:, None, :3, 3]
    centres, conics, radius = project_gaussians(means_cam, scales, K, height, width)
    out_features = means.new_zeros(F * height * width, D)
    out_alpha = means.new_zeros(F * height * width)
    out_depth = means.new_zeros(F * height * width)
    # Pairs are built per footprint radius (few distinct values), in chunks of frames.
    pairs_per_frame = float(((2 * radius + 1) ** 2).sum(-1).max()) if radius.numel() else 0.0
    frames_per_chunk = max(1, int(CHUNK_PAIRS // max(pairs_per_frame, 1.0)))
    for start in range(0, F, frames_per_chunk):
        chunk = slice(start, min(F, start + frames_per_chunk))
        pairs = _pairs(centres[chunk], conics[chunk], radius[chunk], opacities, height, width, start)
        if pairs is None:
            continue
        frame_pixel, gaussian, alpha, depth_index = pairs
        depth = means_cam[chunk, :, 2].reshape(-1)[depth_index]
        weight, keep = _composite(frame_pixel, alpha, depth, gaussian)
        frame_pixel, gaussian, weight, depth = frame_pixel[keep], gaussian[keep], weight[keep], depth[keep]
        out_features.index_add_(0, frame_pixel, weight[:, None] * features[gaussian])
        out_alpha.index_add_(0, frame_pixel, weight)
        out_depth.index_add_(0, frame_pixel, weight * depth)
    alpha = out_alpha.reshape(F, height, width)
    depth = (out_depth.reshape(F, height, width) / alpha.clamp_min(1e-8)) * (alpha > 0)
    return Splats(out_features.reshape(F, height, width, D), alpha, depth)


def _pairs(centres, conics, radius, opacities, height, width, first_frame):
    """Returns (global frame·pixel index, gaussian index, alpha, index into [F·N] depths) of every
    (gaussian, pixel) pair with alpha >= MIN_ALPHA, or None."""
    N = radius.shape[1]
    out = []
    for r in torch.unique(radius):
        r = int(r)
        if r == 0:
            continue
        frame, gaussian = torch.nonzero(radius == r, as_tuple=True)
        offsets = torch.arange(-r, r + 1, device=centres.device, dtype=centres.dtype)
        du, dv = torch.meshgrid(offsets, offsets, indexing="xy")
        centre = centres[frame, gaussian]  # [M, 2]
        base = torch.round(centre)
        pu = base[:, None, 0] + du.reshape(1, -1)  # [M, P]
        pv = base[:, None, 1] + dv.reshape(1, -1)
        a, b, c = conics[frame, gaussian].unbind(-1)
        dx, dy = pu - centre[:, None, 0], pv - centre[:, None, 1]
        sigma = 0.5 * (a[:, None] * dx**2 + c[:, None] * dy**2) + b[:, None] * dx * dy
        alpha = torch.clamp_max(opacities[gaussian, None] * torch.exp(-sigma), MAX_ALPHA)
        keep = (alpha >= MIN_ALPHA) & (sigma >= 0) & (pu >= 0) & (pu < width) & (pv >= 0) & (pv < height)
        m, p = torch.nonzero(keep, as_tuple=True)
        if m.numel() == 0:
            continue
        pixel = pv[m, p].long() * width + pu[m, p].long()
        global_frame = frame[m] + first_frame
        out.append(
            (global_frame * (height * width) + pixel, gaussian[m], alpha[m, p], frame[m] * N + gaussian[m])
        )
    if not out:
        return None
    return tuple(torch.cat(parts) for parts in zip(*out, strict=True))


def _composite(frame_pixel: Tensor, alpha: Tensor, depth: Tensor, gaussian: Tensor) -> tuple[Tensor, Tensor]:
    """Returns the front-to-back compositing weights ``alpha * transmittance`` of pairs (in the
    input order) and which pairs contribute (the transmittance after them stays above 1e-4).
    Pairs are ordered by pixel, then depth, then Gaussian index (so equal depths tie the same way
    wherever a surface moves)."""
    order = torch.argsort(gaussian, stable=True)
    order = order[torch.argsort(depth[order], stable=True)]
    order = order[torch.argsort(frame_pixel[order], stable=True)]
    pixel_sorted = frame_pixel[order]
    log_keep = torch.log1p(-alpha[order].double())
    inclusive = torch.cumsum(log_keep, 0)
    first = torch.ones_like(pixel_sorted, dtype=torch.bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    segment_start = torch.cummax(
        torch.where(first, torch.arange(len(order), device=order.device), 0), 0
    ).values
    offset = inclusive[segment_start] - log_keep[segment_start]  # inclusive sum before the segment
    transmittance_after = torch.exp(inclusive - offset)
    transmittance_before = torch.exp(inclusive - log_keep - offset)
    weight_sorted = (alpha[order].double() * transmittance_before).to(alpha.dtype)
    keep_sorted = transmittance_after > MIN_TRANSMITTANCE
    weight = torch.empty_like(weight_sorted)
    keep = torch.empty_like(keep_sorted)
    weight[order], keep[order] = weight_sorted, keep_sorted
    return weight, keep


# ----------------------------------------------------------------------------- gsplat backend
def _rasterize_gsplat(means, scales, features, opacities, K, cam_from_ref, height, width) -> Splats:
    from gsplat import rasterization

    F, N, _ = means.shape
    D = features.shape[-1]
    K_gsplat = K.clone()
    K_gsplat[:, 0, 2] += 0.5  # gsplat: pixel centres at u + 0.5
    K_gsplat[:, 1, 2] += 0.5
    quats = means.new_zeros(F, N, 4)
    quats[..., 0] = 1.0
    colors, alphas, _ = rasterization(
        means=means.float().contiguous(),
        quats=quats,
        scales=scales.float()[None, :, None].expand(F, N, 3).contiguous(),
        opacities=opacities.float()[None].expand(F, N).contiguous(),
        colors=features.float()[None].expand(F, N, D).contiguous(),
        viewmats=cam_from_ref.float()[:, None].contiguous(),
        Ks=K_gsplat.float()[:, None].contiguous(),
        width=width,
        height=height,
        near_plane=NEAR_PLANE,
        eps2d=EPS2D,
        render_mode="RGB+ED",
        rasterize_mode="classic",
        packed=False,
    )
    colors, alphas = colors[:, 0], alphas[:, 0, ..., 0]  # [F, H, W, D + 1], [F, H, W]
    depth = colors[..., D] * (alphas > 0)
    # RGB+ED normalises the depth channel only; features stay sum(weight * feature) as in torch.
    return Splats(colors[..., :D], alphas, depth)


def footprint_scales(depth_ref: Tensor, K_ref: Tensor, footprint: float) -> Tensor:
    """Returns isotropic standard deviations (metres) of ``footprint`` pixels at the reference
    depths ``depth_ref`` [N] seen through ``K_ref`` [3, 3]."""
    focal = math.sqrt(float(K_ref[0, 0]) * float(K_ref[1, 1]))
    return footprint * depth_ref.abs() / focal
