"""Shared fixtures: tiny MoMap-Sim clips (32x32, T = 8) cached per session."""

from __future__ import annotations

import functools

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Runs a test module with one torch thread: the simulator and the small models run many small
    ops, and on a shared CPU one thread is many times faster than several. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
