"""Sensor models of MoMap-Sim: what a real camera would have recorded of a clip.

MoMap-Sim renders exact depth and clean colours; no real camera does. ``SimConfig(sensor=name)``
passes the exact rendering of every frame through a ``SensorModel`` before it is stored in
``clip.frames`` and ``clip.depth`` (and ``momap.rgb``, which is ``frames[0]``). The ground truth
(``momap.xyz``, ``valid``, ``visible``, ``instance``, ``clip.instances``, ``K``, poses, prompt)
stays exact, so a reconstruction or a model can be scored on what it would have seen.

The models (``SENSOR_MODELS``):

- ``"ideal"``: the exact rendering, bit-identical to a clip without a sensor model.
- ``"structured-light"``: a PrimeSense-type camera (Kinect v1 in near mode, Carmine 1.09:
  640x480, focal ~570 px, projector 7.5 cm right of the camera, disparity in 1/8-pixel steps).
  Depth noise ``sigma_z = z^2 sigma_d / (f b)`` with ``sigma_d`` = 0.1 px: 0.6 mm at 0.5 m,
  2.3 mm at 1 m, 6 cm at 5 m, plus quantisation steps of the same law (0.7 mm at 0.5 m); no
  depth nearer than 0.2 m or beyond 3.5 m; a hole band left of every object where the projector
  is occluded (``f b (1/z_near - 1/z_far)`` pixels wide, with ``f`` the simulated focal length:
  ~2 px at 128 x 128 for a top 5 cm in front of the table at 0.5 m, ~16 px for a hand at 0.25 m);
  ragged holes and flying pixels (depths between foreground and background) along depth edges;
  holes on surfaces seen at more than 65 degrees from their normal (all beyond 82), on dark
  surfaces (weak infrared return) and on metallic cans; colour noise (~2 of 255 levels), blur,
  exposure (+-0.5 stops) and white-balance changes.
- ``"stereo"``: an active stereo camera (Intel RealSense D435: 848x480, focal ~430 px,
  baseline 5 cm, 1/32-pixel subpixel disparity): the same ``z^2`` law with a smaller baseline
  (0.9 mm at 0.5 m), an invalid band left of objects (seen by one imager only), foreground
  fattening (the matching window pulls foreground depth onto background pixels next to an
  edge), more noise and holes on weakly textured surfaces, fewer holes on dark ones.
- ``"monocular"``: an RGB camera without a depth sensor (a webcam or robot camera recorded to
  JPEG, as in BRIDGE), its depth estimated by a monocular depth network: dense (no holes),
  but off in metric scale by a per-clip factor of 0.8..1.25 with 3 % frame-to-frame flicker,
  smooth across depth edges (every edge turns into a ramp of flying pixels) and warped by a
  low-frequency relative error of ~5 %; the strongest colour degradation, with JPEG artefacts.

Missing depth is stored as 0, as depth sensors write it (``momaplib.geometry.valid_depth``
treats 0 as a hole; ``fill_depth_holes`` fills them). Observations are deterministic given the
clip's seed and draw from their own random stream, independent of the scene and the motion.

Why our own code: existing sensor simulators (BlenSor, the Kinect noise models of simkinect)
bring their own renderer or work on one depth map at a time without the surface normals,
materials and instance ids that decide where a real sensor fails; here the failures are a few
vectorised numpy/scipy passes over what MoMap-Sim's ray caster already computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from momaplib.geometry import depth_to_xyz, valid_depth
from momaplib.sim.raycast import Hits

SENSORS = ("ideal", "structured-light", "stereo", "monocular")
#: Seeds the sensor's random stream together with the clip seed (disjoint from the scene's stream).
SENSOR_STREAM = 0x53454E53
#: Categories of metallic objects, whose specular surfaces return no structured light.
METALLIC_CATEGORIES = ("can",)
#: Neighbouring pixels whose depths differ by more than this many pixel footprints (``z / f``) lie
#: on a depth discontinuity: a surface steeper than atan(4) = 76 degrees to the ray, or an edge.
EDGE_SLOPE = 4.0
#: Luminance weights of linear RGB (Rec. 709).
LUMA = np.array([0.2126, 0.7152, 0.0722])


@dataclass(frozen=True)
class TriangulationDepth:
    """Depth by triangulation (structured light, stereo): noise, quantisation and holes.

    Depth comes from the disparity ``d = f b / z`` between the camera and a second view (the
    projector, or the second imager) ``baseline_m`` to its right, so disparity noise and
    quantisation turn into depth errors growing as ``z^2``, and pixels the second view cannot
    see (left of foreground objects) have no depth.
    """

    focal_px: float = 570.0
    """Focal length of the imitated device at its native resolution, pixels (sets the noise)."""
    baseline_m: float = 0.075
    """Distance from the camera to the projector or second imager, metres (along +x)."""
    disparity_noise_px: float = 0.1
    """Standard deviation of the disparity error, native pixels, at frontal incidence."""
    disparity_step_px: float = 0.125
    """Disparity quantisation step, native pixels (0: none)."""
    depth_range_m: tuple[float, float] = (0.2, 3.5)
    """Nearest and farthest measured depth, metres; depth outside is a hole."""
    occlusion_holes: bool = True
    """Holes where the second view (projector, second imager) does not see the point."""
    edge_jump: float = 0.02
    """Smallest relative depth jump between neighbouring pixels that counts as a depth edge
    (at least ``EDGE_SLOPE`` pixel footprints)."""
    edge_band_px: float = 6.0
    """Half-width of the band along depth edges where matching fails, native pixels."""
    edge_hole_prob: float = 0.7
    """Probability that a pixel of the edge band has no depth."""
    fatten_prob: float = 0.0
    """Probability that a remaining edge-band pixel takes the nearest depth of the band
    (foreground fattening of window-based stereo matching)."""
    flying_prob: float = 0.5
    """Probability that a remaining pixel on the edge takes a depth between the foreground and
    the background (a flying pixel)."""
    grazing_deg: tuple[float, float] = (65.0, 82.0)
    """Angle between ray and surface normal where holes start and where every pixel is a hole,
    degrees (the hole probability ramps linearly in between)."""
    grazing_noise: float = 0.1
    """Growth of disparity noise with the incidence angle ``theta``: the standard deviation is
    multiplied by ``1 + grazing_noise * theta^2 / (pi/2 - theta)^2`` (Nguyen et al. 2012)."""
    dark_return: float = 0.1
    """Holes on dark surfaces: pixels whose linear luminance times ``(0.5 m / z)^2`` is below half
    this have no depth, above it all have depth, a linear ramp between (0: off)."""
    metallic_dropout: float = 0.5
    """Probability that a pixel of a metallic object (``METALLIC_CATEGORIES``) has no depth."""
    specular_deg: float = 12.0
    """Metallic surfaces seen within this angle of their normal saturate: no depth, degrees."""
    texture_contrast: float = 0.0
    """Stereo matching needs texture: pixels whose local contrast (std / mean of luminance over
    the matching window) is below this are weakly textured (0: off, as for structured light)."""
    texture_noise: float = 0.0
    """Extra disparity noise on weak texture: the std is multiplied by ``1 + texture_noise * w``
    with ``w`` in [0, 1] the weakness ``1 - contrast / texture_contrast``."""
    texture_hole_prob: float = 0.0
    """Probability of a hole on a pixel of weakness 1 (proportional below)."""


@dataclass(frozen=True)
class MonocularDepth:
    """Depth estimated from the RGB frames by a monocular network: dense, smooth, scale-ambiguous."""

    scale_range: tuple[float, float] = (0.8, 1.25)
    """Range of the per-clip metric scale error (log-uniform)."""
    scale_jitter: float = 0.03
    """Standard deviation of the frame-to-frame relative scale flicker."""
    smooth_frac: float = 0.015
    """Gaussian smoothing of the depth, in fractions of the image width (edges become ramps)."""
    warp: float = 0.05
    """Amplitude (std) of the low-frequency relative depth error."""
    warp_cells: int = 4
    """The low-frequency error is drawn on a grid of this many cells per side and interpolated."""


@dataclass(frozen=True)
class ColorSensor:
    """Colour camera degradations, applied in linear RGB before re-encoding to 8 bits."""

    exposure_stops: float = 0.5
    """Per-clip exposure change, uniform in +-this many stops."""
    exposure_flicker: float = 0.03
    """Frame-to-frame auto-exposure flicker (std, stops)."""
    white_balance: float = 0.08
    """Std of the per-clip log gain of the red and blue channels relative to green."""
    blur_px: float = 0.6
    """Gaussian blur (optics, demosaicing, downsampling), std in output pixels (0: none)."""
    shot_noise: float = 0.00025
    """Photon noise: variance per unit of linear intensity, at the output resolution (downsampling a
    native frame averages noise away, so this is lower than a sensor's per-pixel noise)."""
    read_noise: float = 0.003
    """Read noise: std in linear intensity, at the output resolution. With the defaults a mid-grey
    pixel varies by ~2 of 255 levels."""
    jpeg_quality: int = 0
    """JPEG compression quality 1..100 of the recorded frames (0: none)."""


@dataclass(frozen=True)
class SensorModel:
    """A named camera: its colour degradations and how its depth is measured."""

    name: str
    """Name used in ``SimConfig.sensor``."""
    imitates: str
    """The class of real device it imitates (documentation)."""
    color: ColorSensor | None = None
    """Colour degradations (None: exact colours)."""
    depth: TriangulationDepth | MonocularDepth | None = None
    """Depth measurement (None: exact depth)."""


SENSOR_MODELS: dict[str, SensorModel] = {
    "ideal": SensorModel("ideal", "none: exact rendering"),
    "structured-light": SensorModel(
        "structured-light",
        "PrimeSense structured light (Kinect v1 near mode, Carmine 1.09)",
        ColorSensor(),
        TriangulationDepth(),
    ),
    "stereo": SensorModel(
        "stereo",
        "active stereo (Intel RealSense D435)",
        ColorSensor(
            exposure_stops=0.4, exposure_flicker=0.02, white_balance=0.06, blur_px=0.5, shot_noise=0.0002
        ),
        TriangulationDepth(
            focal_px=430.0,
            baseline_m=0.05,
            disparity_noise_px=0.08,
            disparity_step_px=1 / 32,
            depth_range_m=(0.2, 4.0),
            edge_band_px=4.0,
            edge_hole_prob=0.3,
            fatten_prob=0.6,
            flying_prob=0.3,
            grazing_deg=(70.0, 85.0),
            dark_return=0.0,
            metallic_dropout=0.3,
            texture_contrast=0.03,
            texture_noise=2.0,
            texture_hole_prob=0.05,
        ),
    ),
    "monocular": SensorModel(
        "monocular",
        "RGB camera recorded to JPEG, depth from a monocular depth network",
        ColorSensor(
            exposure_stops=0.7, exposure_flicker=0.05, white_balance=0.1, blur_px=0.8, shot_noise=0.0005,
            read_noise=0.004, jpeg_quality=75,
        ),
        MonocularDepth(),
    ),
}  # fmt: skip


@dataclass
class Rendering:
    """The exact rendering of a clip, as the sensor models need it (numpy, T frames of H x W)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 exact colours (gamma 2)
    depth: np.ndarray  # (T, H, W) float32 exact z-depth in metres (inf: nothing hit)
    incidence_cos: np.ndarray  # (T, H, W) float32 |cos| of the angle between ray and surface normal
    instances: np.ndarray  # (T, H, W) int32 instance ids, 0 = background
    K: np.ndarray  # (3, 3) intrinsics in pixels
    metallic_ids: tuple[int, ...] = field(default_factory=tuple)  # instance ids of metallic objects


def sensor_rng(seed: int) -> np.random.Generator:
    """Returns the sensor's random stream of clip ``seed`` (independent of the scene's stream)."""
    return np.random.default_rng([int(seed), SENSOR_STREAM])


def observe(model: SensorModel | str, rendering: Rendering, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns what ``model`` records of ``rendering``: frames (T, H, W, 3) uint8, depth (T, H, W) float32.

    Missing depth is 0. The same ``seed`` gives the same observations; the colour and depth
    draws come from one stream, colour first.
    """
    if isinstance(model, str):
        if model not in SENSOR_MODELS:
            raise ValueError(f"sensor: expected one of {tuple(SENSOR_MODELS)}, got {model!r}")
        model = SENSOR_MODELS[model]
    rng = sensor_rng(seed)
    frames, depth = rendering.frames, rendering.depth.astype(np.float32)
    if model.color is not None:
        frames = degrade_colors(model.color, rendering.frames, rng)
    if isinstance(model.depth, TriangulationDepth):
        depth = triangulation_depth(model.depth, rendering, rng)
    elif isinstance(model.depth, MonocularDepth):
        depth = monocular_depth(model.depth, rendering, rng)
    depth = np.where(valid_depth(depth), depth, np.float32(0))
    return frames, depth.astype(np.float32)


def observe_render(
    sensor: str,
    seed: int,
    frames: Tensor,  # [T, H, W, 3] uint8 exact colours
    depth: Tensor,  # [T, H, W] exact z-depth (inf: nothing hit)
    hits: Hits,  # [T, H*W] the frames' ray hits (for the surface normals)
    directions: Tensor,  # [T, H*W, 3] unit ray directions (world frame, as the normals)
    instances: Tensor,  # [T, H, W] instance ids
    K: np.ndarray,  # (3, 3)
    instance_info: dict[int, dict[str, str]],  # instance id -> {"category", ...}
) -> tuple[Tensor, Tensor]:
    """Returns the frames [T, H, W, 3] uint8 and depth [T, H, W] float32 that ``sensor`` records,
    on the device of ``frames``: ``observe`` applied to the renderer's tensors."""
    incidence = (hits.normal * directions).sum(-1).abs().reshape(depth.shape)
    metallic = tuple(int(i) for i, v in instance_info.items() if v.get("category") in METALLIC_CATEGORIES)
    rendering = Rendering(
        frames=frames.cpu().numpy(),
        depth=depth.cpu().numpy(),
        incidence_cos=incidence.cpu().numpy(),
        instances=instances.cpu().numpy(),
        K=np.asarray(K),
        metallic_ids=metallic,
    )
    observed_frames, observed_depth = observe(sensor, rendering, seed)
    device = frames.device
    return torch.from_numpy(observed_frames).to(device), torch.from_numpy(observed_depth).to(device)


def linear_rgb(frames: np.ndarray) -> np.ndarray:
    """Returns linear RGB (..., 3) float32 in [0, 1] of MoMap-Sim frames (gamma 2 encoded uint8)."""
    return (frames.astype(np.float32) / 255.0) ** 2


def encode_rgb(linear: np.ndarray) -> np.ndarray:
    """Returns uint8 frames of linear RGB in [0, 1], the inverse of ``linear_rgb`` (clipped)."""
    return (np.sqrt(np.clip(linear, 0.0, 1.0)) * 255 + 0.5).astype(np.uint8)


def degrade_colors(color: ColorSensor, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Returns frames (T, H, W, 3) uint8 after exposure, white balance, blur, noise and JPEG."""
    T = frames.shape[0]
    stops = rng.uniform(-color.exposure_stops, color.exposure_stops) + color.exposure_flicker * rng.normal(
        size=T
    )
    log_gains = color.white_balance * rng.normal(size=2)
    gain = np.exp2(stops)[:, None] * np.array([math.exp(log_gains[0]), 1.0, math.exp(log_gains[1])])
    linear = linear_rgb(frames) * gain[:, None, None, :].astype(np.float32)
    if color.blur_px > 0:
        linear = ndimage.gaussian_filter(linear, sigma=(0, color.blur_px, color.blur_px, 0), mode="nearest")
    std = np.sqrt(color.shot_noise * np.clip(linear, 0, None) + color.read_noise**2)
    linear = linear + std * rng.standard_normal(linear.shape, dtype=np.float32)
    out = encode_rgb(linear)
    if color.jpeg_quality:
        import cv2

        quality = [int(cv2.IMWRITE_JPEG_QUALITY), int(color.jpeg_quality)]
        for t in range(T):  # OpenCV codes BGR
            _, data = cv2.imencode(".jpg", out[t, :, :, ::-1], quality)
            out[t] = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    return out


def depth_edges(depth: np.ndarray, K: np.ndarray, min_jump: float = 0.02) -> np.ndarray:
    """Returns the (T, H, W) bool mask of pixels on a depth discontinuity of ``depth`` (T, H, W).

    A pixel is on one when a 4-neighbour's depth differs by more than ``min_jump`` of the nearer
    depth and by more than ``EDGE_SLOPE`` pixel footprints; both sides of the edge are marked.
    Pixels without depth (0, inf) count as infinitely far.
    """
    z = np.where(valid_depth(depth), depth, np.inf).astype(np.float64)
    threshold = max(min_jump, EDGE_SLOPE / float(K[0, 0]))
    edges = np.zeros(z.shape, dtype=bool)
    for axis in (-1, -2):
        a, b = _pairs(z, axis)
        with np.errstate(invalid="ignore"):
            jump = np.abs(a - b) > threshold * np.minimum(a, b)
        jump &= np.isfinite(np.minimum(a, b))
        ea, eb = _pairs(edges, axis)
        ea |= jump
        eb |= jump
    return edges


def _pairs(array: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns views of the first and second pixel of every neighbouring pair along ``axis``."""
    index_a, index_b = [slice(None)] * array.ndim, [slice(None)] * array.ndim
    index_a[axis], index_b[axis] = slice(None, -1), slice(1, None)
    return array[tuple(index_a)], array[tuple(index_b)]


def triangulation_depth(
    model: TriangulationDepth, rendering: Rendering, rng: np.random.Generator
) -> np.ndarray:
    """Returns the depth (T, H, W) float32 a triangulating sensor measures (0: hole)."""
    z = np.where(valid_depth(rendering.depth), rendering.depth, np.inf).astype(np.float64)
    T, H, W = z.shape
    focal = float(rendering.K[0, 0])  # of the simulated image: holes and bands are in its pixels
    native = focal / model.focal_px  # simulated pixels per native pixel
    near, far = model.depth_range_m
    holes = ~np.isfinite(z)
    z_far = np.where(holes, far * 10, z)
    uniform = lambda: rng.random((T, H, W), dtype=np.float32)  # noqa: E731

    if model.occlusion_holes:
        # The second view sees pixel u at u - f b / z. A point is hidden from it when a pixel to
        # its right lands at or left of it there: that pixel is nearer and blocks the ray.
        seen_at = np.arange(W) - focal * model.baseline_m / z_far
        right_min = np.minimum.accumulate(seen_at[..., ::-1], axis=-1)[..., ::-1]
        right_min = np.concatenate([right_min[..., 1:], np.full((T, H, 1), np.inf)], axis=-1)
        holes |= seen_at > right_min + 1e-3

    edges = depth_edges(z_far, rendering.K, model.edge_jump)
    band_px = max(model.edge_band_px * native, 0.5)
    distance = ndimage.distance_transform_edt(~edges, sampling=(H + W, 1, 1))
    band = distance <= band_px
    holes |= band & (uniform() < model.edge_hole_prob)
    size = (1, 2 * math.ceil(band_px) + 1, 2 * math.ceil(band_px) + 1)
    fatten = band & ~holes & (uniform() < model.fatten_prob)
    z_obs = np.where(fatten, ndimage.minimum_filter(z_far, size=size, mode="nearest"), z_far)
    flying = edges & ~holes & ~fatten & (uniform() < model.flying_prob)
    if flying.any():
        low = ndimage.minimum_filter(z_far, size=(1, 3, 3), mode="nearest")
        high = ndimage.maximum_filter(z_far, size=(1, 3, 3), mode="nearest")
        z_obs = np.where(flying, low + uniform() * (np.minimum(high, far) - low), z_obs)

    theta = np.arccos(np.clip(rendering.incidence_cos.astype(np.float64), 0.0, 1.0))
    start, end = np.radians(model.grazing_deg)
    holes |= uniform() < np.clip((theta - start) / (end - start), 0.0, 1.0)
    if model.dark_return > 0:
        luminance = linear_rgb(rendering.frames) @ LUMA.astype(np.float32)
        signal = luminance * (0.5 / z_far) ** 2
        holes |= uniform() < np.clip(2.0 - 2.0 * signal / model.dark_return, 0.0, 1.0)
    if rendering.metallic_ids:
        metallic = np.isin(rendering.instances, rendering.metallic_ids)
        specular = theta < math.radians(model.specular_deg)
        holes |= metallic & ((uniform() < model.metallic_dropout) | specular)

    grazing = theta**2 / (np.pi / 2 - theta + 1e-3) ** 2
    sigma = model.disparity_noise_px * (1.0 + model.grazing_noise * grazing)
    if model.texture_contrast > 0:
        weakness = np.clip(1.0 - local_contrast(rendering.frames, band_px) / model.texture_contrast, 0, 1)
        sigma = sigma * (1.0 + model.texture_noise * weakness)
        holes |= uniform() < model.texture_hole_prob * weakness
    fb = model.focal_px * model.baseline_m
    disparity = fb / z_obs + sigma * rng.standard_normal((T, H, W))
    if model.disparity_step_px > 0:
        disparity = np.round(disparity / model.disparity_step_px) * model.disparity_step_px
    with np.errstate(divide="ignore"):
        measured = np.where(disparity > 0, fb / np.maximum(disparity, 1e-12), np.inf)
    holes |= (measured < near) | (measured > far)
    return np.where(holes, 0.0, measured).astype(np.float32)


def local_contrast(frames: np.ndarray, radius: float) -> np.ndarray:
    """Returns (T, H, W) std / mean of the luminance over a (2r+1)^2 window: how textured a pixel is."""
    luminance = frames.astype(np.float32) @ (LUMA / 255).astype(np.float32)
    size = (1, 2 * math.ceil(radius) + 1, 2 * math.ceil(radius) + 1)
    mean = ndimage.uniform_filter(luminance, size=size, mode="nearest")
    square = ndimage.uniform_filter(luminance**2, size=size, mode="nearest")
    return np.sqrt(np.clip(square - mean**2, 0, None)) / np.maximum(mean, 1e-3)


def monocular_depth(model: MonocularDepth, rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """Returns the depth (T, H, W) float32 a monocular depth network would estimate (0: nothing hit)."""
    z = rendering.depth.astype(np.float64)
    T, H, W = z.shape
    valid = valid_depth(z)
    # Smooth the inverse depth: networks regress disparity-like values, and the far background
    # (misses) must not pull near edges towards infinity.
    inverse = np.where(valid, 1.0 / np.where(valid, z, 1.0), 0.0)
    sigma = model.smooth_frac * W
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigma=(0, sigma, sigma), mode="nearest")
    inverse = ndimage.gaussian_filter(inverse, sigma=(0, sigma, sigma), mode="nearest")
    inverse = inverse / np.maximum(weight, 1e-6)
    low, high = np.log(model.scale_range)
    scale = math.exp(rng.uniform(low, high)) * np.exp(model.scale_jitter * rng.normal(size=T))
    cells = model.warp * rng.normal(size=(1, model.warp_cells, model.warp_cells))
    warp = ndimage.zoom(cells, (1, H / model.warp_cells, W / model.warp_cells), order=1, mode="nearest")
    estimate = scale[:, None, None] * np.exp(warp[:, :H, :W]) / np.maximum(inverse, 1e-6)
    return np.where(valid, estimate, 0.0).astype(np.float32)


def observed_xyz(depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns the XYZ map (H, W, 3) float32 of a sensor depth map (H, W) and its valid mask (H, W).

    Pixels without depth (0, NaN, inf) are invalid and their XYZ is 0. For a clip this is the
    noisy counterpart of ``momap.xyz[0]`` (same camera frame): ``observed_xyz(clip.depth[0], clip.K)``.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth: expected (H, W) float z-depth in metres, got {depth.shape} {depth.dtype}")
    K = np.asarray(K, dtype=np.float32)
    if K.shape != (3, 3):
        raise ValueError(f"K: expected (3, 3) intrinsics in pixels, got shape {K.shape}")
    valid = valid_depth(depth)
    xyz = depth_to_xyz(np.where(valid, depth, 0).astype(np.float32), K)
    return xyz.astype(np.float32), valid
