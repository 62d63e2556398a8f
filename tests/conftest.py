"""Shared fixtures: tiny MoMap-Sim clips (32x32, T = 8) cached per session."""

from __future__ import annotations

import functools

import pytest

from momaplib.sim import SimConfig, simulate


@functools.lru_cache(maxsize=256)
def tiny_simulation(family: str, seed: int, action: str | None = None):
    """Returns a cached ``Simulation`` of a smoke-sized clip (optionally of one action type)."""
    config = SimConfig(family=family).smoke()
    if action is not None:
        config = SimConfig(family=family, height=32, width=32, num_frames=8, actions=(action,))
    return simulate(seed, config)


@pytest.fixture(params=["tabletop", "egocentric"])
def family(request) -> str:
    return request.param
