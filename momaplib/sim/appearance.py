"""Appearance randomisation of MoMap-Sim for training data: textures, colours and light.

``SimConfig(appearance=a)`` with ``a`` in (0, 1] redraws, for each clip, how its surfaces look
and how they are lit, by up to ``a`` times the ranges below. Only the shading changes: the
geometry, the motion, the instances and the prompt, hence the ground truth, are those of the
same seed at ``appearance=0``. Objects keep their hue, since prompts name their colour ("red
block"); the background (table, walls) may take any colour. Draws come from their own random
stream of the clip seed, so task variants of a seed share their appearance.

Ranges at ``a = 1`` (``APPEARANCE_RANGES``): light elevation +-30 degrees around the default 58
(kept within 15..90) and azimuth +-180 degrees; directional and ambient intensity x2^+-0.8;
warm or cool light of +-15 % red/blue tint (the ambient tint drawn apart); object brightness
x2^+-0.5 and saturation x(1 +- 0.3); background colours mixed up to 80 % towards a random
colour; texture contrast x2^+-1 and pattern frequency x2^+-1, phases shifted by up to 2 pi.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from momaplib.sim.render import AMBIENT, DIFFUSE, LIGHT_DIRECTION, Lighting, RenderScene

#: Seeds the appearance's random stream together with the clip seed.
APPEARANCE_STREAM = 0x41505052
#: What ``appearance = 1`` may change (see the module docstring); ``appearance = a`` scales each by ``a``.
APPEARANCE_RANGES = {
    "light_elevation_deg": 30.0,
    "light_azimuth_deg": 180.0,
    "light_stops": 0.8,
    "light_tint": 0.15,
    "object_stops": 0.5,
    "object_saturation": 0.3,
    "background_mix": 0.8,
    "texture_contrast_stops": 1.0,
    "texture_frequency_stops": 1.0,
}
#: The light stays at least this high above the horizon, degrees (a light from below looks wrong).
MIN_LIGHT_ELEVATION_DEG = 15.0


def appearance_rng(seed: int) -> np.random.Generator:
    """Returns the appearance's random stream of clip ``seed`` (independent of the scene's stream)."""
    return np.random.default_rng([int(seed), APPEARANCE_STREAM])


def random_lighting(rng: np.random.Generator, strength: float) -> Lighting:
    """Returns a light drawn around the default one, within ``strength`` (0..1) times the ranges."""
    ranges = APPEARANCE_RANGES
    x, y, z = LIGHT_DIRECTION
    elevation = math.degrees(math.asin(z)) + strength * ranges["light_elevation_deg"] * rng.uniform(-1, 1)
    elevation = math.radians(min(max(elevation, MIN_LIGHT_ELEVATION_DEG), 90.0))
    azimuth = math.atan2(y, x) + math.radians(strength * ranges["light_azimuth_deg"] * rng.uniform(-1, 1))
    direction = (
        math.cos(elevation) * math.cos(azimuth),
        math.cos(elevation) * math.sin(azimuth),
        math.sin(elevation),
    )

    def light(base: float) -> tuple[float, float, float]:
        gain = base * 2.0 ** (strength * ranges["light_stops"] * rng.uniform(-1, 1))
        tint = strength * ranges["light_tint"] * rng.uniform(-1, 1)  # > 0 warm, < 0 cool
        return (gain * (1 + tint), gain, gain * (1 - tint))

    return Lighting(direction=direction, diffuse=light(DIFFUSE), ambient=light(AMBIENT))


def randomize_appearance(scene: RenderScene, strength: float, seed: int) -> tuple[RenderScene, Lighting]:
    """Returns a copy of ``scene`` with redrawn colours and textures, and a redrawn light.

    ``strength`` in [0, 1] scales every range of ``APPEARANCE_RANGES``; the geometry of the
    scene (primitives, planes, poses, instances) is shared, not copied.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength: expected 0..1, got {strength!r}")
    rng = appearance_rng(seed)
    lighting = random_lighting(rng, strength)
    ranges = APPEARANCE_RANGES
    color = scene.color.cpu().numpy().astype(np.float64)  # [S, 3] linear albedo per surface
    count = color.shape[0]

    def signed() -> np.ndarray:
        return rng.uniform(-1, 1, size=count) * strength

    brightness = 2.0 ** (ranges["object_stops"] * signed())
    saturation = 1.0 + ranges["object_saturation"] * signed()
    grey = color.mean(axis=1, keepdims=True)
    objects = np.clip((grey + saturation[:, None] * (color - grey)) * brightness[:, None], 0.0, 1.0)
    mix = (ranges["background_mix"] * strength * rng.uniform(0, 1, size=count))[:, None]
    backgrounds = (1 - mix) * color + mix * rng.uniform(0.1, 0.9, size=(count, 3))
    background = (scene.surface_instance == 0).cpu().numpy()[:, None]
    new_color = np.where(background, backgrounds, objects)

    contrast = 2.0 ** (ranges["texture_contrast_stops"] * signed())
    frequency = 2.0 ** (ranges["texture_frequency_stops"] * signed())
    phase_shift = rng.uniform(0, 2 * np.pi, size=(count, 1)) * strength

    def like(array: np.ndarray, reference: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(array, dtype=reference.dtype, device=reference.device)

    checker = scene.checker.cpu().numpy() * np.stack([frequency, contrast], axis=1)
    textured = replace(
        scene,
        color=like(new_color, scene.color),
        wave_freq=scene.wave_freq * like(frequency, scene.wave_freq)[:, None, None],
        wave_phase=scene.wave_phase + like(phase_shift, scene.wave_phase),
        wave_weight=scene.wave_weight * like(contrast, scene.wave_weight)[:, None],
        checker=like(checker, scene.checker),
    )
    return textured, lighting
