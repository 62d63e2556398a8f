"""Curve-level building blocks of the metrics: batched DTW, distance signatures, quantised directions."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor


# ----------------------------------------------------------------------------- curve-level metrics
def dtw(gt_curves: Tensor, pred_curves: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Returns ``(cost, length)`` [...]: DTW cost and optimal warping-path length per curve pair.

    ``gt_curves`` [..., T, D] and ``pred_curves`` [..., U, D] broadcast over leading dims.
    The step cost is the Euclidean distance ``|g_i - p_j|``; the cost is the sum over the cells
    of the optimal path from (0, 0) to (T-1, U-1) with steps (1, 1), (1, 0), (0, 1); the length
    is the number of cells on that path (between ``max(T, U)`` and ``T + U - 1``).

    Tie-break: each cell takes the predecessor with the lowest accumulated cost; on exact ties
    the diagonal (i-1, j-1) wins, then (i-1, j), then (i, j-1). This is the convention of the
    backtracking in dtaidistance and tslearn, so path lengths agree with theirs. It matters in
    practice: a static prediction matches x_0 of the GT exactly, and every path along that
    zero-cost row has the same cost but a different length.

    ``chunk_size`` pairs are processed at a time (None: ``default_chunk_size`` of the device).

    Why our own: peer libraries (dtaidistance, tslearn) take one pair per Python call or all
    pairs of a set, and their fast kernels return the cost without the path length. This is an
    anti-diagonal wavefront DP, vectorised over all pairs with the pair axis contiguous, that
    carries the path length along; on CUDA it runs compiled (``wavefront_kernel``).
    """
    if gt_curves.shape[-1] != pred_curves.shape[-1] or min(gt_curves.dim(), pred_curves.dim()) < 2:
        raise ValueError(
            f"dtw: expected curves [..., T, D] and [..., U, D], got {tuple(gt_curves.shape)} "
            f"and {tuple(pred_curves.shape)}"
        )
    batch = torch.broadcast_shapes(gt_curves.shape[:-2], pred_curves.shape[:-2])
    T, U, D = gt_curves.shape[-2], pred_curves.shape[-2], gt_curves.shape[-1]
    if T == 0 or U == 0:
        raise ValueError(f"dtw: curves need at least one point, got T={T}, U={U}")
    dtype = torch.promote_types(torch.promote_types(gt_curves.dtype, pred_curves.dtype), torch.float32)
    # pairs-last layout [D, T, P]: every op of the DP below runs over all pairs at once
    gt_pairs = gt_curves.to(dtype).expand(*batch, T, D).reshape(-1, T, D).permute(2, 1, 0)
    # the prediction reversed in time (``_dtw_pairs_last``), flipped while its layout is contiguous
    pred_pairs = pred_curves.to(dtype).flip(-2).expand(*batch, U, D).reshape(-1, U, D).permute(2, 1, 0)
    num_pairs = gt_pairs.shape[-1]
    kernel = wavefront_kernel(gt_curves.device)
    if chunk_size is None and kernel is not _dtw_pairs_last and gt_curves.device.type == "cpu":
        chunk_size = CPU_COMPILED_PAIRS
    chunk_size = chunk_size or default_chunk_size(gt_curves.device)
    cost = torch.empty(num_pairs, dtype=dtype, device=gt_curves.device)
    length = torch.empty(num_pairs, dtype=dtype, device=gt_curves.device)
    for start in range(0, num_pairs, chunk_size):
        stop = min(start + chunk_size, num_pairs)
        cost[start:stop], length[start:stop] = kernel(
            gt_pairs[..., start:stop].contiguous(), pred_pairs[..., start:stop].contiguous()
        )
    return cost.reshape(batch), length.reshape(batch)


#: Devices on which ``dtw`` runs ``torch.compile`` of ``dtw_wavefront`` (one fused loop per
#: anti-diagonal instead of ~15 tensor ops): on by default on CUDA; off on CPUs, where compiling takes
#: ~40 s once per (T, U) before a sweep ~2.5x faster than the eager one (worth it for evaluation
#: jobs: ``curves.COMPILE_DTW["cpu"] = True``). ``benchmarks/bench_metrics.py`` times both kernels.
COMPILE_DTW: dict[str, bool] = {"cuda": True, "cpu": False}
#: Pairs per call of the compiled kernel on a CPU (its working set then stays in the L2 cache).
CPU_COMPILED_PAIRS = 2048
_compiled: dict[str, Any] = {}


def wavefront_kernel(device: torch.device | str):
    """Returns the DTW kernel ``(gt [D, T, P], pred_reversed [D, U, P]) -> (cost [P], length [P])``
    used on ``device``: the compiled ``dtw_wavefront`` where ``COMPILE_DTW`` says so (compiled once
    per (T, U), any number of pairs), else the eager in-place sweep ``_dtw_pairs_last``. A failing
    compilation warns once and falls back to the eager sweep."""
    kind = torch.device(device).type
    if not COMPILE_DTW.get(kind, False):
        return _dtw_pairs_last
    if kind not in _compiled:
        compiled = torch.compile(dtw_wavefront, dynamic=True)
        pairs = CPU_COMPILED_PAIRS if kind == "cpu" else None

        def kernel(gt: Tensor, pred_reversed: Tensor) -> tuple[Tensor, Tensor]:
            try:
                if pairs is None or gt.shape[-1] <= pairs:
                    return compiled(gt, pred_reversed)
                parts = [
                    compiled(
                        gt[..., i : i + pairs].contiguous(), pred_reversed[..., i : i + pairs].contiguous()
                    )
                    for i in range(0, gt.shape[-1], pairs)
                ]
                return torch.cat([c for c, _ in parts]), torch.cat([n for _, n in parts])
            except Exception as error:  # inductor/triton/C++ compiler errors have many types
                warnings.warn(
                    f"dtw: torch.compile failed ({type(error).__name__}: {error}); using the eager kernel",
                    stacklevel=3,
                )
                _compiled[kind] = _dtw_pairs_last
                return _dtw_pairs_last(gt, pred_reversed)

        _compiled[kind] = kernel
    return _compiled[kind]


def dtw_wavefront(gt: Tensor, pred_reversed: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(cost [P], length [P])`` like ``_dtw_pairs_last``, written for ``torch.compile``.

    The same anti-diagonal recursion and tie-break, but functional: each diagonal is a new tensor
    (padded with "unreachable" outside its cells) built from elementwise ops only, so the compiler
    fuses a diagonal into one kernel, and the pair count P may vary without recompiling. Eager, it
    is slower than the in-place sweep (every op allocates).
    """
    D, T, _ = gt.shape
    U = pred_reversed.shape[1]
    big = torch.finfo(gt.dtype).max / 8
    prev2 = prev = torch.full_like(gt[0, :1], big).expand(T + 2, -1)
    prev2_len = prev_len = torch.zeros_like(prev)
    for k in range(T + U - 1):
        lo, hi = max(0, k - U + 1), min(T, k + 1)  # GT indices i on diagonal k; j = k - i
        n, j_rev = hi - lo, U - 1 - k + lo
        difference = gt[:, lo:hi] - pred_reversed[:, j_rev : j_rev + n]
        squared = difference[0] * difference[0]
        for d in range(1, D):
            squared = squared + difference[d] * difference[d]
        step_cost = squared.sqrt()
        if k == 0:
            value, length = step_cost, torch.ones_like(step_cost)
        else:
            diag, up, left = prev2[lo:hi], prev[lo:hi], prev[lo + 1 : hi + 1]
            # strict '>' keeps the earlier candidate on ties: diagonal, then up, then left
            length = torch.where(diag > up, prev_len[lo:hi], prev2_len[lo:hi])
            best = torch.minimum(diag, up)
            length = torch.where(best > left, prev_len[lo + 1 : hi + 1], length) + 1.0
            value = torch.minimum(best, left) + step_cost
        rows = (0, 0, lo + 1, T + 1 - hi)  # row i + 1 holds cell i; the others are unreachable
        prev2, prev = prev, torch.nn.functional.pad(value, rows, value=big)
        prev2_len, prev_len = prev_len, torch.nn.functional.pad(length, rows, value=0.0)
    return prev[T], prev_len[T]


def default_chunk_size(device: torch.device | str) -> int:
    """Returns the pairs per chunk used when ``chunk_size`` is None: 8192 on CPU, 65536 on GPUs."""
    return 8192 if torch.device(device).type == "cpu" else 65536


def _dtw_pairs_last(gt: Tensor, pred_reversed: Tensor) -> tuple[Tensor, Tensor]:
    """Returns ``(cost [P], length [P])`` for curves [D, T, P] and time-reversed curves [D, U, P].

    Cells (i, j) on anti-diagonal k = i + j depend only on diagonals k-1 and k-2, so each
    diagonal is a handful of elementwise ops over [cells, P]. Reversing the prediction in time
    makes its points along a diagonal a contiguous slice. Comparisons write floats (0/1) and
    choices are blends (``torch.lerp``): on CPU these run many times faster than bool masks
    and ``torch.where``.
    """
    D, T, P = gt.shape
    U = pred_reversed.shape[1]
    big = torch.finfo(gt.dtype).max / 8  # finite "unreachable", so big - big stays 0 (no NaN)

    def buffers(fill: float) -> list[Tensor]:
        # row i + 1 holds cell i of a diagonal. Rows are only ever written with cells of their
        # diagonal, and the rows read beyond a diagonal's ends (row 0, and the row after the end
        # while diagonals grow) were never written, so they keep the "unreachable" fill
        return [torch.full((T + 2, P), fill, dtype=gt.dtype, device=gt.device) for _ in range(3)]

    acc, steps = buffers(big), buffers(0.0)
    rows = min(T, U)
    step_cost, scratch, best, pick, best_steps = (
        torch.empty((rows, P), dtype=gt.dtype, device=gt.device) for _ in range(5)
    )
    for k in range(T + U - 1):
        lo, hi = max(0, k - U + 1), min(T, k + 1)  # GT indices i on diagonal k; j = k - i
        n, j_rev = hi - lo, U - 1 - k + lo
        cost_k, tmp = step_cost[:n], scratch[:n]
        torch.sub(gt[0, lo:hi], pred_reversed[0, j_rev : j_rev + n], out=cost_k).square_()
        for d in range(1, D):
            torch.sub(gt[d, lo:hi], pred_reversed[d, j_rev : j_rev + n], out=tmp)
            cost_k.addcmul_(tmp, tmp)
        cost_k.sqrt_()
        cur, prev, prev2 = acc[k % 3], acc[(k - 1) % 3], acc[(k - 2) % 3]
        cur_steps, prev_steps, prev2_steps = steps[k % 3], steps[(k - 1) % 3], steps[(k - 2) % 3]
        if k == 0:
            cur[1], cur_steps[1] = cost_k[0], 1.0
        else:
            b, p, s = best[:n], pick[:n], best_steps[:n]
            diag, up, left = prev2[lo:hi], prev[lo:hi], prev[lo + 1 : hi + 1]
            # strict '>' keeps the earlier candidate on ties: diagonal, then up, then left
            torch.gt(diag, up, out=p)
            torch.minimum(diag, up, out=b)
            torch.lerp(prev2_steps[lo:hi], prev_steps[lo:hi], p, out=s)
            torch.gt(b, left, out=p)
            torch.minimum(b, left, out=b)
            s.lerp_(prev_steps[lo + 1 : hi + 1], p)
            torch.add(b, cost_k, out=cur[lo + 1 : hi + 1])
            torch.add(s, 1.0, out=cur_steps[lo + 1 : hi + 1])
    last = (T + U - 2) % 3
    return acc[last][T].clone(), steps[last][T].clone()


def dtw_path(gt_curve: Any, pred_curve: Any) -> tuple[np.ndarray, float]:
    """Returns ``(path [L, 2] int, cost)``: the optimal DTW path of one curve pair, for figures.

    ``gt_curve`` [T, D] and ``pred_curve`` [U, D]; rows of ``path`` are (i, j) cells from
    (0, 0) to (T-1, U-1). Same step cost and tie-break as ``dtw``; plain numpy, one pair only.
    """
    gt_curve, pred_curve = np.asarray(gt_curve, np.float64), np.asarray(pred_curve, np.float64)
    step = np.linalg.norm(gt_curve[:, None] - pred_curve[None], axis=-1)
    T, U = step.shape
    acc = np.full((T + 1, U + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(T):
        for j in range(U):
            acc[i + 1, j + 1] = step[i, j] + min(acc[i, j], acc[i, j + 1], acc[i + 1, j])
    path, i, j = [(T - 1, U - 1)], T - 1, U - 1
    while (i, j) != (0, 0):
        # np.argmin keeps the first minimum: diagonal, then (i-1, j), then (i, j-1)
        move = int(np.argmin([acc[i, j], acc[i, j + 1], acc[i + 1, j]]))
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
        path.append((i, j))
    return np.array(path[::-1]), float(acc[T, U])


def distance_signature(curves: Tensor) -> Tensor:
    """Returns the T x T distance matrices [..., T, T] ``|x_i - x_j|`` of curves [..., T, D].

    The signature is unchanged by any rotation and translation of a curve (paper §4.2, D_sig).
    """
    return torch.cdist(curves, curves, compute_mode="donot_use_mm_for_euclid_dist")


def quantize_displacements(curves: Tensor, dt: int, threshold: float) -> Tensor:
    """Returns per-axis directions [..., W, D] int8 in {-1, 0, +1} of curves [..., T, D] over dT windows.

    Windows start at t = 0, dT, 2dT, ... with t + dT < T (W of them, possibly 0); a component
    of ``x_{t+dT} - x_t`` counts when its magnitude exceeds ``threshold`` (same units as the
    curves). Axes follow the reference camera: x left/right, y up/down, z forward/backward.
    """
    starts = torch.arange(0, max(curves.shape[-2] - dt, 0), dt, device=curves.device)
    displacement = curves[..., starts + dt, :] - curves[..., starts, :]
    return (torch.sign(displacement) * (displacement.abs() > threshold)).to(torch.int8)
