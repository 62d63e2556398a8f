"""MoMap-Sim: seeded procedural clips of tabletop and egocentric manipulation with exact ground truth.

Frames are rendered by analytic ray casting of boxes, cylinders, spheres and planes in torch,
which gives exact depth, instance ids and the object-local coordinates of every pixel; the GT
MoMap follows each reference pixel's surface point through the rigid motion of its part.
"""

from momaplib.sim.clip import ACTIONS, DIRECTIONS, FAMILIES, RELATIONS, Clip, Task
from momaplib.sim.config import SimConfig
from momaplib.sim.generate import Simulation, clip_seed, generate_clip, simulate

__all__ = [
    "ACTIONS",
    "DIRECTIONS",
    "FAMILIES",
    "RELATIONS",
    "Clip",
    "SimConfig",
    "Simulation",
    "Task",
    "clip_seed",
    "generate_clip",
    "simulate",
]
