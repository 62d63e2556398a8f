"""The DTW kernels of ``momaplib.metrics.curves``: in-place sweep, compile-friendly wavefront, numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from momaplib.metrics import curves


def reference_dtw(gt: np.ndarray, pred: np.ndarray) -> tuple[float, int]:
    """Plain O(T U) numpy DTW: cost and length of the optimal path (ties: diagonal, up, left)."""
    T, U = len(gt), len(pred)
    acc = np.full((T + 1, U + 1), np.inf)
    steps = np.zeros((T + 1, U + 1))
    acc[0, 0] = 0.0
    for i in range(1, T + 1):
        for j in range(1, U + 1):
            candidates = [(acc[i - 1, j - 1], steps[i - 1, j - 1]), (acc[i - 1, j], steps[i - 1, j]),
                          (acc[i, j - 1], steps[i, j - 1])]  # fmt: skip
            best = min(range(3), key=lambda c: candidates[c][0])  # first minimum wins ties
            acc[i, j] = np.linalg.norm(gt[i - 1] - pred[j - 1]) + candidates[best][0]
            steps[i, j] = candidates[best][1] + 1
    return acc[T, U], int(steps[T, U])


def curve_pairs(num_pairs: int, T: int, U: int, D: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    gt = torch.cumsum(torch.randn(num_pairs, T, D, generator=generator, dtype=torch.float64), 1)
    pred = torch.cumsum(torch.randn(num_pairs, U, D, generator=generator, dtype=torch.float64), 1)
    pred[0] = gt[0, :1]  # a static prediction at x_0: zero-cost ties along the first row
    pred[1, : min(T, U)] = gt[1, : min(T, U)]  # an exact match up to the shorter length
    return gt, pred


@pytest.mark.parametrize(("T", "U", "D"), [(8, 8, 3), (7, 11, 3), (12, 5, 2), (1, 4, 3)])
def test_wavefront_kernels_agree_with_the_numpy_reference(T, U, D):
    gt, pred = curve_pairs(6, T, U, D)
    layout_gt, layout_pred = gt.permute(2, 1, 0).contiguous(), pred.permute(2, 1, 0).flip(1).contiguous()
    in_place = curves._dtw_pairs_last(layout_gt, layout_pred)
    functional = curves.dtw_wavefront(layout_gt, layout_pred)
    expected = [reference_dtw(gt[p].numpy(), pred[p].numpy()) for p in range(len(gt))]
    for cost, length in (in_place, functional):
        np.testing.assert_allclose(cost.numpy(), [c for c, _ in expected], rtol=1e-6, atol=1e-12)
        assert length.long().tolist() == [n for _, n in expected]
    # float32: the two kernels agree with each other within 1e-6 relative
    cost32, length32 = curves.dtw_wavefront(layout_gt.float(), layout_pred.float())
    np.testing.assert_allclose(cost32.double().numpy(), in_place[0].numpy(), rtol=1e-6, atol=1e-6)
    assert torch.equal(length32.double(), in_place[1])


def test_dtw_picks_its_kernel_by_device_and_falls_back_when_compile_fails(monkeypatch):
    assert curves.wavefront_kernel("cpu") is curves._dtw_pairs_last  # compiling on a CPU is opt-in
    monkeypatch.setattr(curves, "_compiled", {})

    def broken_compile(function, **kwargs):
        def compiled(*args):
            raise RuntimeError("no triton")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    kernel = curves.wavefront_kernel("cuda")  # built without a GPU: compilation is lazy
    gt, pred = curve_pairs(4, 6, 6, 3)
    args = gt.permute(2, 1, 0).contiguous(), pred.permute(2, 1, 0).flip(1).contiguous()
    with pytest.warns(UserWarning, match="torch.compile failed"):
        cost, length = kernel(*args)
    expected = curves._dtw_pairs_last(*args)
    assert torch.equal(cost, expected[0]) and torch.equal(length, expected[1])
    assert curves.wavefront_kernel("cuda") is curves._dtw_pairs_last  # no second attempt
    monkeypatch.setitem(curves.COMPILE_DTW, "cuda", False)
    monkeypatch.setattr(curves, "_compiled", {})
    assert curves.wavefront_kernel("cuda") is curves._dtw_pairs_last
