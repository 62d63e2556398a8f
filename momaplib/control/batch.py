"""The motion DSL of whole batches of model-layout MoMaps, on the device that holds them.

Training data needs the GT DSL of thousands of clips as they are encoded (``momaplib.diffusion
.latents``). ``dsl_from_momap`` works on one ``MoMap`` record in metres (float64, numpy); this is
the same quantity for a batch of normalised trajectories in model layout, in torch: trajectories
in units of the scene scale make the threshold ``tau`` itself, so no scale is needed.
``tests/test_control_dsl.py`` checks that both give the same pixels on simulated clips.
"""

from __future__ import annotations

import torch
from torch import Tensor

from momaplib.control.dsl import DEFAULT_WINDOW, DSLValidationError, window_bounds
from momaplib.metrics import TAU_DIR, quantize_displacements


def dsl_pixels_from_channels(
    momap: Tensor,
    instance: Tensor,
    valid: Tensor,
    window: int = DEFAULT_WINDOW,
    tau: float = TAU_DIR,
) -> Tensor:
    """Returns the DSL pixel form (B, 3 * n_windows, H, W) in {-1, 0, 1} of a batch of MoMaps.

    ``momap`` (B, 3T, H, W) are trajectories in model layout normalised by the scene scale
    (``momaplib.data.model_inputs``), ``instance`` (B, H, W) integer ids (0 = background, no patch)
    and ``valid`` (B, H, W) the pixels with geometry. Patch centroids are the means of each
    instance's valid pixels at the window boundaries of ``window_bounds``; their displacement per
    window is quantised with ``quantize_displacements(..., threshold=tau)`` and painted over the
    patch, as ``dsl_from_momap(...).to_pixels(instance)`` does for one clip in metres.
    """
    if momap.ndim != 4 or momap.shape[1] % 3:
        raise DSLValidationError(f"momap: expected (B, 3T, H, W) model layout, got {tuple(momap.shape)}")
    B, C, H, W = momap.shape
    if tuple(instance.shape) != (B, H, W) or tuple(valid.shape) != (B, H, W):
        raise DSLValidationError(
            f"instance / valid: expected {(B, H, W)} like the MoMap, got {tuple(instance.shape)} and "
            f"{tuple(valid.shape)}"
        )
    if instance.dtype.is_floating_point or bool((instance < 0).any()):
        raise DSLValidationError("instance: expected integer ids >= 0 (0 = background)")
    bounds = window_bounds(C // 3, window)
    frames = [start for start, _ in bounds] + [bounds[-1][1]]
    ids, compact = torch.unique(instance.long(), return_inverse=True)  # compact ids shared by the batch
    num_ids = len(ids)
    xyz = momap.double().reshape(B, C // 3, 3, H * W)[:, frames]  # (B, n + 1, 3, HW)
    weight = valid.reshape(B, 1, H * W).double()
    index = compact.reshape(B, 1, H * W)
    sums = torch.zeros(B, len(frames) * 3, num_ids, dtype=torch.float64, device=momap.device)
    sums.scatter_add_(2, index.expand(-1, len(frames) * 3, -1), (xyz.flatten(1, 2) * weight))
    counts = torch.zeros(B, 1, num_ids, dtype=torch.float64, device=momap.device)
    counts.scatter_add_(2, index, weight)
    centroids = (sums / counts.clamp(min=1)).reshape(B, len(frames), 3, num_ids)
    flags = quantize_displacements(centroids.permute(0, 3, 1, 2), 1, tau)  # (B, K, n, 3)
    flags = flags * ((ids > 0)[None, :, None, None] & (counts[:, 0, :, None, None] > 0))
    flags = flags.flatten(2).to(torch.float32)  # (B, K, 3n), channel 3w + axis
    painted = torch.gather(flags, 1, compact.reshape(B, H * W, 1).expand(-1, -1, flags.shape[-1]))
    return painted.permute(0, 2, 1).reshape(B, -1, H, W).contiguous()
