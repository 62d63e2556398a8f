"""Numerical guards shared by the torch optimisations of the reconstruction stages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treats denormal floats as zero on CPU inside the block (torch's default mode again after it).

    The optimisations drive residuals of static points towards exactly zero; on x86 CPUs the
    denormal numbers on the way there make arithmetic ~100x slower (an infill of 0.5 s took
    40 s). Flushing them changes nothing at float32/float64 precision. Torch has no getter for
    the mode, so the block ends in torch's default (denormals kept).
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
