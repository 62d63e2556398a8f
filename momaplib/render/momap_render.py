"""Render a MoMap into any cameras as Gaussian splats (paper §3.4.1).

Every valid pixel of the MoMap becomes one isotropic 3D Gaussian whose centre follows the pixel's
trajectory and whose size is the pixel's footprint at its reference depth; it carries the
reference colour and the instance id. Rendering into the clip's own cameras gives the *partial*
video: the frames as far as the points seen at t0 explain them, with holes (low ``alpha``) where
something new comes into view. No per-scene optimisation is needed; ``refine_colors`` optionally
fits the colours so that frame 0 reproduces the reference image exactly (undoing the blur of
overlapping splats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from momaplib.checks import check_device
from momaplib.geometry import invert_pose
from momaplib.momap import MoMap, MoMapValidationError, check_poses
from momaplib.render.splat import footprint_scales, rasterize

#: Footprint of a splat in reference pixels (standard deviation, before the 0.1 px² dilation of
#: ``render.splat.EPS2D``). Neighbouring splats of a surface lie at nearly one depth, so each pixel
#: also shows a share of its neighbours: 0.5 blurs sharp textures (21 dB on a plane of random 4-pixel
#: blocks), 0.3 leaves cracks where a surface comes closer; 0.4 keeps 25 dB on that plane and 38-42
#: dB on MoMap-Sim clips while losing under 1 % of coverage to cracks.
FOOTPRINT = 0.4
#: A rendered pixel counts as covered (not a hole) at this alpha.
COVERED_ALPHA = 0.5
#: Instance id of pixels that no splat covers.
HOLE_ID = -1


@dataclass
class RenderOutput:
    """Frames rendered from a MoMap (numpy)."""

    rgb: np.ndarray  # (T, H, W, 3) float32 in [0, 1]: composited colour / alpha; 0 where alpha = 0
    instance: np.ndarray  # (T, H, W) int32: the id with the largest compositing weight; -1 = hole
    alpha: np.ndarray  # (T, H, W) float32 coverage in [0, 1)
    depth: np.ndarray  # (T, H, W) float32 expected z-depth in the target camera; 0 where alpha = 0

    @property
    def holes(self) -> np.ndarray:
        """(T, H, W) bool: pixels that the MoMap's points do not cover (alpha < COVERED_ALPHA)."""
        return self.alpha < COVERED_ALPHA


def check_cameras(K, cam_from_ref, num_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``K`` as (F, 3, 3) and ``cam_from_ref`` as (F, 4, 4) float32 after checking them;
    raises ``ValueError`` naming the field."""
    cam_from_ref = np.asarray(cam_from_ref, dtype=np.float64)
    if cam_from_ref.ndim == 2:
        cam_from_ref = cam_from_ref[None]
    if cam_from_ref.ndim != 3 or cam_from_ref.shape[1:] != (4, 4) or len(cam_from_ref) == 0:
        raise ValueError(f"cam_from_ref: expected (T, 4, 4) poses, got shape {cam_from_ref.shape}")
    if num_frames is not None and len(cam_from_ref) != num_frames:
        raise ValueError(
            f"cam_from_ref: expected one pose per rendered frame ({num_frames}), got {len(cam_from_ref)}"
        )
    if not np.isfinite(cam_from_ref).all():
        raise ValueError("cam_from_ref: poses must be finite (got NaN or inf)")
    try:
        check_poses("cam_from_ref", cam_from_ref)
    except MoMapValidationError as error:
        raise ValueError(str(error)) from None
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (len(cam_from_ref), 3, 3))
    if K.shape != (len(cam_from_ref), 3, 3):
        raise ValueError(
            f"K: expected (3, 3) or (T, 3, 3) = {(len(cam_from_ref), 3, 3)}, got shape {K.shape}"
        )
    if not np.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise ValueError("K: expected finite intrinsics with positive focal lengths")
    if not np.allclose(K[:, 2], [0, 0, 1]):
        raise ValueError("K: the last row of every intrinsics matrix must be [0, 0, 1]")
    return K.astype(np.float32), cam_from_ref.astype(np.float32)


def own_cameras(momap: MoMap) -> np.ndarray:
    """Returns the MoMap's own cameras ``cam_from_ref`` (T, 4, 4): the views its video was shot from."""
    return invert_pose(torch.from_numpy(momap.ref_from_cam)).numpy()


def render_momap(
    momap: MoMap,
    rgb: np.ndarray | None = None,
    instance_map: np.ndarray | None = None,
    K: np.ndarray | None = None,
    cam_from_ref: np.ndarray | None = None,
    height: int | None = None,
    width: int | None = None,
    backend: str = "auto",
    frames: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    footprint: float = FOOTPRINT,
    refine_colors: int = 0,
) -> RenderOutput:
    """Returns the MoMap rendered into ``cam_from_ref`` (T, 4, 4): frame ``t`` shows the points at
    their positions at time ``t``, seen from camera ``t``.

    ``rgb`` (H, W, 3) uint8 and ``instance_map`` (H, W) default to the MoMap's own; ``K`` ((3, 3)
    or (T, 3, 3)) to the MoMap's, ``cam_from_ref`` to its own cameras (``own_cameras``), ``height``
    and ``width`` to its size. ``frames`` renders only those time steps (``cam_from_ref`` then has
    one pose per chosen frame). ``backend``: ``"gsplat"`` (CUDA), ``"torch"`` (anywhere) or
    ``"auto"`` (gsplat when ``device`` is CUDA and gsplat is installed). ``refine_colors`` > 0 runs
    that many Adam steps fitting the splat colours to the reference image in the reference view.
    """
    if not isinstance(momap, MoMap):
        raise ValueError(f"momap: expected a MoMap record, got {type(momap).__name__}")
    if not momap.valid.any():
        raise ValueError("momap.valid: the MoMap has no valid pixel, so there is nothing to render")
    T, H, W = momap.xyz.shape[:3]
    frame_ids = np.arange(T) if frames is None else np.asarray(list(frames))
    if frame_ids.ndim != 1 or len(frame_ids) == 0 or frame_ids.min() < 0 or frame_ids.max() >= T:
        raise ValueError(f"frames: expected frame indices in 0..{T - 1}, got {frames!r}")
    rgb = momap.rgb if rgb is None else np.asarray(rgb)
    if rgb.shape != (H, W, 3) or rgb.dtype != np.uint8:
        raise ValueError(f"rgb: expected (H, W, 3) = {(H, W, 3)} uint8, got {rgb.shape} {rgb.dtype}")
    instance_map = momap.instance if instance_map is None else np.asarray(instance_map)
    if (
        instance_map.shape != (H, W)
        or not np.issubdtype(instance_map.dtype, np.integer)
        or instance_map.min() < 0
    ):
        raise ValueError(
            f"instance_map: expected (H, W) = {(H, W)} integer ids >= 0, got {instance_map.shape}"
        )
    if cam_from_ref is None:
        cam_from_ref = own_cameras(momap)[frame_ids]
    K, cam_from_ref = check_cameras(momap.K if K is None else K, cam_from_ref, len(frame_ids))
    height, width = H if height is None else height, W if width is None else width
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or not 1 <= value <= 4096:
            raise ValueError(f"{name}: expected an integer number of pixels in 1..4096, got {value!r}")
    if not 0 < footprint <= 4:
        raise ValueError(f"footprint: expected a splat size in (0, 4] pixels, got {footprint}")
    device = check_device("device", device)

    splats = momap_splats(momap, rgb, instance_map, device, footprint)
    means = torch.from_numpy(momap.xyz[frame_ids][:, momap.valid]).to(device)
    K_t, cams = torch.from_numpy(K).to(device), torch.from_numpy(cam_from_ref).to(device)
    if refine_colors:
        means0 = torch.from_numpy(momap.xyz[0][momap.valid]).to(device)
        splats["features"][:, :3] = fit_colors(splats, means0, momap, rgb, refine_colors)
    out = rasterize(means, splats["scales"], splats["features"], K_t, cams, height, width, backend)
    return _to_output(out, splats["ids"])


def momap_splats(
    momap: MoMap, rgb: np.ndarray, instance_map: np.ndarray, device, footprint: float
) -> dict[str, Tensor]:
    """Returns the splats of a MoMap's valid pixels: ``scales`` [N], ``features`` [N, 3 + I]
    (colour in [0, 1], then one-hot instance over ``ids``) and ``ids`` [I] (the instance ids)."""
    valid = momap.valid
    depth_ref = torch.from_numpy(momap.xyz[0][valid][:, 2]).to(device)
    scales = footprint_scales(depth_ref, torch.from_numpy(momap.K), footprint)
    colors = torch.from_numpy(rgb[valid].astype(np.float32) / 255.0).to(device)
    instance = torch.from_numpy(instance_map[valid].astype(np.int64)).to(device)
    ids, index = torch.unique(instance, return_inverse=True)
    one_hot = torch.nn.functional.one_hot(index, len(ids)).float()
    return {"scales": scales, "features": torch.cat([colors, one_hot], dim=1), "ids": ids}


def fit_colors(
    splats: dict[str, Tensor], means0: Tensor, momap: MoMap, rgb: np.ndarray, steps: int
) -> Tensor:
    """Returns splat colours [N, 3] fitted by ``steps`` Adam steps so that rendering the t0 points
    into the reference camera reproduces ``rgb`` on the valid pixels."""
    device = means0.device
    H, W = momap.valid.shape
    target = torch.from_numpy(rgb.astype(np.float32) / 255.0).to(device)
    mask = torch.from_numpy(momap.valid).to(device)
    logits = torch.logit(splats["features"][:, :3].clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    K = torch.from_numpy(momap.K).to(device)[None]
    eye = torch.eye(4, device=device)[None]
    for _ in range(steps):
        out = rasterize(means0[None], splats["scales"], torch.sigmoid(logits), K, eye, H, W, backend="torch")
        image = out.features[0] / out.alpha[0, ..., None].clamp_min(1e-6)
        loss = ((image - target).abs() * mask[..., None]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(logits).detach()


def unpremultiply(features: Tensor, alpha: Tensor) -> Tensor:
    """Returns composited colours [..., 3] divided by their coverage (0 where nothing covers),
    i.e. the colour of the splats that cover a pixel, whatever lies behind them."""
    return (features / alpha[..., None].clamp_min(1e-6)).clamp(0, 1) * (alpha[..., None] > 0)


def _to_output(out, ids: Tensor) -> RenderOutput:
    alpha = out.alpha
    weights = out.features[..., 3:]
    instance = ids[weights.argmax(-1)].to(torch.int32)
    instance = torch.where(alpha >= COVERED_ALPHA, instance, torch.full_like(instance, HOLE_ID))
    return RenderOutput(
        rgb=unpremultiply(out.features[..., :3], alpha).cpu().numpy().astype(np.float32),
        instance=instance.cpu().numpy(),
        alpha=alpha.cpu().numpy().astype(np.float32),
        depth=out.depth.cpu().numpy().astype(np.float32),
    )
