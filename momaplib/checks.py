"""Checks of user-given settings that every config of the kit shares; errors name the field."""

from __future__ import annotations

import numbers
from typing import Any

import torch


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers, False for bools (``True`` is no frame count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_device(field: str, value: Any) -> torch.device:
    """Returns ``torch.device(value)`` for a CPU or CUDA device; raises ``ValueError`` naming ``field``."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{field}: expected 'cpu', 'cuda' or 'cuda:<index>', got {value!r}")
    return device
