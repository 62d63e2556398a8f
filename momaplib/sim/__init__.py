"""MoMap-Sim: seeded procedural clips of tabletop and egocentric manipulation with exact ground truth.

Frames are rendered by analytic ray casting of boxes, cylinders, spheres and planes in torch,
which gives exact depth, instance ids and the object-local coordinates of every pixel; the GT
MoMap follows each reference pixel's surface point through the rigid motion of its part.

Beyond the default tabletop, ``SimConfig`` varies the camera (``camera_randomisation``), the
background (``room``, ``clutter``; see ``momaplib.sim.scene``) and, for one start frame, the
future (``motion_variant``; see ``momaplib.sim.variants``). At their defaults every clip is
bit for bit what it always was.
"""

from momaplib.sim.clip import ACTIONS, DIRECTIONS, FAMILIES, RELATIONS, Clip, Task
from momaplib.sim.config import SimConfig
from momaplib.sim.generate import Simulation, clip_seed, generate_clip, simulate
from momaplib.sim.sensor import SENSOR_MODELS, SENSORS, SensorModel, observed_xyz

__all__ = [
    "ACTIONS",
    "DIRECTIONS",
    "FAMILIES",
    "RELATIONS",
    "SENSORS",
    "SENSOR_MODELS",
    "Clip",
    "SensorModel",
    "SimConfig",
    "Simulation",
    "Task",
    "clip_seed",
    "generate_clip",
    "observed_xyz",
    "simulate",
]
