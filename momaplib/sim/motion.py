"""Smooth motion: minimum-jerk phases for the agent and the objects it moves, and camera paths.

A task is a sequence of ``Phase`` objects (approach, contact, act, retreat). Within a phase the
progress ``s`` follows the minimum-jerk profile ``10u^3 - 15u^4 + 6u^5`` of normalised time
``u``, so velocity and acceleration are zero at every phase boundary and the motion is smooth.
The acted-on part either keeps its pose, follows the TCP (grasped, pushed, pulled), or follows
a joint (the lid's hinge); this keeps every moving part rigid by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from momaplib.sim.objects import translation


def minimum_jerk(u: np.ndarray) -> np.ndarray:
    """Returns minimum-jerk progress in [0, 1] for normalised time ``u`` in [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10 - 15 * u + 6 * u**2)


@dataclass
class Phase:
    """One segment of a task: the TCP moves from ``start`` to ``end`` (or along ``path``)."""

    name: str  # approach, descend, grasp, lift, carry, ...
    start: np.ndarray  # (3,) TCP position at s = 0
    end: np.ndarray  # (3,) TCP position at s = 1
    opening: tuple[float, float]  # finger gap at s = 0 and s = 1
    duration: float = 1.0  # relative duration
    attach: bool = False  # the target translates with the TCP during this phase
    roll_radius: float | None = None  # when attached and rolling (a pushed ball): its radius
    path: Callable[[np.ndarray], np.ndarray] | None = None  # s [n] -> TCP [n, 3]; default: straight line
    target_pose: Callable[[np.ndarray], np.ndarray] | None = None  # s [n] -> target [n, 4, 4] (joints)

    def tcp(self, s: np.ndarray) -> np.ndarray:
        """Returns TCP positions [n, 3] at progress ``s`` [n]."""
        if self.path is not None:
            return self.path(s)
        return self.start + s[:, None] * (self.end - self.start)


def evaluate_phases(
    phases: list[Phase],
    times: np.ndarray,  # [T] in [0, 1], clip time of each frame
    target_rest: np.ndarray,  # (4, 4) world pose of the target part before the task
    start: float,  # clip time at which the first phase starts
    end: float,  # clip time at which the last phase ends
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns TCP positions [T, 3], finger openings [T] and target poses [T, 4, 4] at ``times``."""
    weights = np.array([p.duration for p in phases], dtype=np.float64)
    bounds = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    tcp = np.zeros((len(times), 3))
    opening = np.zeros(len(times))
    target = np.zeros((len(times), 4, 4))
    pose_at_start = target_rest
    for i, phase in enumerate(phases):
        last = i == len(phases) - 1
        in_phase = (times >= bounds[i]) & ((times < bounds[i + 1]) | last)
        if i == 0:
            in_phase |= times < bounds[0]
        u = (times[in_phase] - bounds[i]) / max(bounds[i + 1] - bounds[i], 1e-9)
        s = minimum_jerk(u)
        tcp[in_phase] = phase.tcp(s)
        opening[in_phase] = phase.opening[0] + s * (phase.opening[1] - phase.opening[0])
        target[in_phase] = _target_poses(phase, s, pose_at_start)
        pose_at_start = _target_poses(phase, np.ones(1), pose_at_start)[0]
    return tcp, opening, target


def _target_poses(phase: Phase, s: np.ndarray, pose_at_start: np.ndarray) -> np.ndarray:
    if phase.target_pose is not None:
        return phase.target_pose(s)
    if not phase.attach:
        return np.broadcast_to(pose_at_start, (len(s), 4, 4)).copy()
    shift = phase.tcp(s) - phase.start[None]
    poses = np.broadcast_to(pose_at_start, (len(s), 4, 4)).copy()
    poses[:, :3, 3] += shift
    if phase.roll_radius is not None:
        for k, d in enumerate(shift):
            distance = np.hypot(d[0], d[1])
            if distance < 1e-12:
                continue
            axis = np.cross([0.0, 0.0, 1.0], [d[0] / distance, d[1] / distance, 0.0])
            spin = _rotation_about(axis, distance / phase.roll_radius)
            centre = (poses[k] @ np.array([0.0, 0.0, phase.roll_radius, 1.0]))[:3]  # ball centre
            poses[k] = translation(*centre) @ spin @ translation(*-centre) @ poses[k]
    return poses


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    pose = np.eye(4)
    pose[:3, :3] = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    return pose


def tcp_poses(positions: np.ndarray, yaw: float) -> np.ndarray:
    """Returns [T, 4, 4] world-from-TCP poses at ``positions`` [T, 3] with a fixed yaw."""
    c, s = np.cos(yaw), np.sin(yaw)
    poses = np.zeros((len(positions), 4, 4))
    poses[:, :3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    poses[:, :3, 3] = positions
    poses[:, 3, 3] = 1.0
    return poses


def smooth_wobble(
    rng: np.random.Generator, times: np.ndarray, amplitude: np.ndarray, cycles: tuple[float, float]
) -> np.ndarray:
    """Returns [T, D] smooth random offsets: a sum of three sinusoids per dimension, zero-mean.

    ``amplitude`` [D] bounds each dimension; ``cycles`` is the range of frequencies in cycles
    per clip. Hand-held camera shake and drift are well described by a few low frequencies.
    """
    dims = len(amplitude)
    freq = rng.uniform(*cycles, size=(3, dims))
    phase = rng.uniform(0, 2 * np.pi, size=(3, dims))
    weight = rng.dirichlet(np.ones(3), size=dims).T  # [3, D]: the three terms share the amplitude
    wave = np.sin(2 * np.pi * freq[None] * times[:, None, None] + phase[None])  # [T, 3, D]
    return (weight[None] * wave).sum(1) * amplitude[None]
