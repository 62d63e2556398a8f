"""Example scenes on disk: one image with its geometry, instances, camera and prompt (+ optional GT).

An example folder holds exactly what a user gives ``MoMapPipeline`` for their own image, plus,
optionally, the ground-truth MoMap so that samples can be scored. ``data/examples/`` bundles a
few (written by ``scripts/make_examples.py`` from MoMap-Sim seeds); ``python -m momaplib.demo``
and ``momaplib.ui.SamplingPanel`` offer every folder found there.

Layout of ``<name>/`` (H x W image, T frames; conventions of DESIGN.md: metres, OpenCV axes)::

    image.png       reference RGB image, 8 bit (RGBA, grey and palette PNGs are converted to RGB)
    depth.npy       (H, W) float32 z-depth in metres (along the optical axis, not along the ray);
                    0, NaN or inf: no geometry at that pixel (a sensor's hole; it gets no
                    trajectory); a median over ``MAX_MEDIAN_DEPTH`` (100 m) is refused as millimetres
    instance.png    (H, W) instance ids, 0 = background: an 8- or 16-bit grey PNG or a palette
                    PNG (the palette index is the id); or instance.npy, an (H, W) integer array
    scene.json      {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]} intrinsics in pixels; optional
                    "meta": {...} (JSON, carried along; "instances": {"3": {"name": "blue block"}}
                    labels the instance legends), "format_version": 1
    prompt.txt      optional: the text prompt (UTF-8, surrounding whitespace dropped); missing or
                    empty: no text condition
    gt_momap.npz    optional: the GT MoMap (below)

The reference points are ``depth_to_xyz(depth, K)``, the XYZ map the pipeline computes from
``depth`` and ``K``. ``gt_momap.npz`` stores what the inputs do not: ``motion (T, H, W, 3)
float16``, the displacement ``xyz[t] - xyz[0]`` in metres (reference camera frame, 0 at pixels
without a trajectory), ``valid (H, W) bool`` (a subset of the pixels with depth), ``visible
(T, H, W) bool`` and ``ref_from_cam (T, 4, 4) float32``. The GT is ``xyz = xyz0 + motion`` with
``xyz0`` the reference points. Displacements rather than positions are stored because float16
rounds a value by at most 2^-11 of itself: 0.05 % of a displacement (a tenth of a millimetre for
the bundled examples) instead of 0.05 % of the distance to the camera, and static pixels are
zeros that compress to nothing (a 128x128, T = 32 GT takes 15-100 kB instead of 1.1 MB).

Writes are atomic per file (``momaplib.storage``); ``save_example`` removes ``scene.json``
first and writes it last, so a folder whose writing was interrupted is refused by
``load_example`` until it is written again. ``load_example`` checks every file and raises
``DataFormatError`` naming the file, the field and what was expected.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from momaplib.geometry import MAX_MEDIAN_DEPTH, check_depth_scale, depth_to_xyz, valid_depth
from momaplib.momap import MoMap, MoMapValidationError
from momaplib.storage import DataFormatError, atomic_write_bytes, atomic_write_text, load_npz, save_npz

#: The bundled example scenes (a folder of example folders).
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "data" / "examples"
#: Version of the folder layout written by ``save_example``.
FORMAT_VERSION = 1

IMAGE_FILE = "image.png"
DEPTH_FILE = "depth.npy"
INSTANCE_FILES = ("instance.png", "instance.npy")
SCENE_FILE = "scene.json"
PROMPT_FILE = "prompt.txt"
GT_FILE = "gt_momap.npz"
GT_KEYS = ("motion", "valid", "visible", "ref_from_cam")

# PIL modes read as instance ids: 8-bit grey, 16-bit grey, 32-bit int, palette indices
_INSTANCE_MODES = ("L", "I;16", "I;16B", "I;16L", "I", "P")
_IMAGE_MODES = ("RGB", "RGBA", "L", "P")


@dataclass
class Example:
    """One example scene: the pipeline's inputs and, when known, the ground-truth MoMap."""

    image: np.ndarray  # (H, W, 3) uint8 reference RGB
    depth: np.ndarray  # (H, W) float32 z-depth in metres; 0, NaN or inf = no geometry
    instance: np.ndarray  # (H, W) int32 instance ids, 0 = background
    K: np.ndarray  # (3, 3) float32 intrinsics in pixels
    prompt: str = ""  # text prompt ("" = no text condition)
    gt: MoMap | None = None  # GT MoMap (its rgb, instance, K, prompt and meta are the fields here)
    meta: dict[str, Any] = field(default_factory=dict)  # JSON extras (instance names, source)
    name: str = ""  # the folder's name when loaded

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def valid(self) -> np.ndarray:
        """Returns the (H, W) bool mask of pixels with geometry (finite depth > 0)."""
        return valid_depth(self.depth)

    @property
    def xyz(self) -> np.ndarray:
        """Returns the (H, W, 3) float32 reference points in metres (camera frame), 0 without depth."""
        valid = self.valid
        xyz = depth_to_xyz(np.where(valid, self.depth, 0).astype(np.float32), self.K)
        return np.where(valid[..., None], xyz, np.float32(0))

    @property
    def instance_names(self) -> dict[int, Any]:
        """Returns ``{id: label}`` from ``meta["instances"]`` (a clip's ``instance_info`` layout)."""
        return {int(k): v for k, v in self.meta.get("instances", {}).items()}

    def pipeline_inputs(self) -> dict[str, Any]:
        """Returns the keyword arguments of ``MoMapPipeline.__call__`` for this scene.

        ``image``, ``depth`` and ``K`` (the pipeline unprojects the depth), ``instance_map`` and
        ``prompt`` (None when empty): ``pipeline(**example.pipeline_inputs(), num_samples=10)``.
        """
        return {
            "image": self.image,
            "depth": self.depth,
            "K": self.K,
            "instance_map": self.instance,
            "prompt": self.prompt or None,
        }

    def momap(self) -> MoMap:
        """Returns the GT MoMap, or without one a one-frame MoMap of the reference points.

        Either is what ``SamplingPanel.generate`` and the ``momaplib.viz`` figures take; a
        one-frame MoMap (T = 1) is never scored as a GT.
        """
        if self.gt is not None:
            return self.gt
        valid = self.valid
        return MoMap(
            xyz=self.xyz[None],
            valid=valid,
            visible=valid[None],
            rgb=self.image,
            instance=self.instance,
            K=self.K,
            ref_from_cam=np.eye(4, dtype=np.float32)[None],
            prompt=self.prompt,
            meta=self.meta,
        )

    @classmethod
    def from_momap(cls, momap: MoMap, with_gt: bool = True) -> Example:
        """Returns the example of a MoMap: its reference image, depth, instances, K and prompt.

        Pixels without a trajectory (``valid`` False) get no depth. With ``with_gt`` the MoMap
        is the GT; ``save_example`` then checks that ``xyz[0]`` is the unprojection of its depth
        ``xyz[0, ..., 2]`` with ``K``, as for every MoMap anchored at its reference image.
        """
        depth = np.where(momap.valid, momap.xyz[0, ..., 2], np.float32(0)).astype(np.float32)
        if np.any(depth[momap.valid] <= 0):
            raise MoMapValidationError("MoMap.xyz[0]: valid pixels need a reference depth z > 0")
        example = cls(momap.rgb, depth, momap.instance, momap.K, momap.prompt, meta=dict(momap.meta))
        example.gt = momap if with_gt else None
        return example


# ----------------------------------------------------------------------------- writing
def save_example(folder: str | os.PathLike, scene: MoMap | Example | Any, with_gt: bool = True) -> Path:
    """Writes an example folder (layout in the module docstring); returns the folder.

    ``scene`` is an ``Example``, a MoMap (its GT is written with ``with_gt``) or a MoMap-Sim
    ``Clip`` (its GT MoMap). Every file is written atomically; ``scene.json`` goes last, and
    files of an earlier example in the folder that this one does not have are removed.
    """
    folder = Path(folder)
    if not isinstance(scene, Example):
        scene = getattr(scene, "momap", scene)  # a Clip carries its GT MoMap
    if isinstance(scene, MoMap):
        example = Example.from_momap(scene, with_gt=with_gt)
    elif isinstance(scene, Example):
        example = scene
    else:
        raise TypeError(f"scene: expected a MoMap, a Clip or an Example, got {type(scene).__name__}")
    _check_inputs(example)
    gt_arrays = _gt_arrays(example) if example.gt is not None and with_gt else None  # checks it first
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SCENE_FILE).unlink(missing_ok=True)  # the folder is incomplete until the end

    atomic_write_bytes(folder / IMAGE_FILE, _png_bytes(example.image))
    atomic_write_bytes(folder / DEPTH_FILE, _npy_bytes(example.depth.astype(np.float32)))
    if example.instance.max(initial=0) <= np.iinfo(np.uint16).max:
        instance_file, data = INSTANCE_FILES[0], _png_bytes(example.instance.astype(np.uint16))
    else:
        instance_file, data = INSTANCE_FILES[1], _npy_bytes(example.instance.astype(np.int32))
    atomic_write_bytes(folder / instance_file, data)
    for other in INSTANCE_FILES:
        if other != instance_file:
            (folder / other).unlink(missing_ok=True)
    if example.prompt:
        atomic_write_text(folder / PROMPT_FILE, example.prompt + "\n")
    else:
        (folder / PROMPT_FILE).unlink(missing_ok=True)
    if gt_arrays is not None:
        save_npz(folder / GT_FILE, gt_arrays)
    else:
        (folder / GT_FILE).unlink(missing_ok=True)

    scene_json = {"format_version": FORMAT_VERSION, "K": example.K.tolist(), "meta": example.meta}
    try:
        text = json.dumps(scene_json, indent=2)
    except TypeError as exc:
        raise MoMapValidationError(f"Example.meta: must be JSON-serialisable ({exc})") from exc
    atomic_write_text(folder / SCENE_FILE, text + "\n")
    return folder


def _gt_arrays(example: Example) -> dict[str, Any]:
    """Returns the ``gt_momap.npz`` arrays of an example's GT (displacements as float16)."""
    gt = example.gt
    if gt.xyz.shape[1:3] != (example.height, example.width):
        raise MoMapValidationError(
            f"Example.gt: a MoMap of {gt.height}x{gt.width} pixels for an image of "
            f"{example.height}x{example.width}"
        )
    without_depth = gt.valid & ~example.valid
    if without_depth.any():
        raise MoMapValidationError(
            f"Example.gt.valid: {int(without_depth.sum())} pixels have a trajectory but no depth"
        )
    # the reader rebuilds xyz[0] from depth and K, so the GT must start at those points
    error = np.abs(example.xyz - gt.xyz[0]).max(-1)
    far = (error > 1e-5 + 1e-4 * np.abs(example.xyz[..., 2])) & gt.valid
    if far.any():
        v, u = np.argwhere(far)[0]
        raise MoMapValidationError(
            f"MoMap.xyz[0]: not the unprojection of its depth with K ({error[v, u]:.3g} m apart at pixel "
            f"u={u}, v={v}); an example stores the reference points as depth + K"
        )
    # from the GT's own xyz[0], not from the unprojected depth (equal up to float32 rounding), so
    # that static points are exact zeros, which compress to nothing
    motion = np.where(gt.valid[None, ..., None], gt.xyz - gt.xyz[:1], np.float32(0))
    motion16 = motion.astype(np.float16)
    if not np.isfinite(motion16).all():
        raise MoMapValidationError("MoMap.xyz: a displacement does not fit float16 (over 65504 m)")
    return {"motion": motion16, "valid": gt.valid, "visible": gt.visible, "ref_from_cam": gt.ref_from_cam}


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- reading
def find_examples(folder: str | os.PathLike = EXAMPLES_DIR) -> dict[str, Path]:
    """Returns ``{name: folder}`` of the example folders (those with a ``scene.json``), sorted.

    Only the listing is read here; ``load_example`` checks the files. A missing folder gives {}.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {path.name: path for path in sorted(folder.iterdir()) if (path / SCENE_FILE).is_file()}


def load_example(folder: str | os.PathLike) -> Example:
    """Returns the ``Example`` stored in ``folder`` (layout in the module docstring).

    Raises ``DataFormatError`` naming the file when a required file is missing or unreadable
    or an array has the wrong shape, dtype or values (depth not float metres, an instance map
    that is not integer ids, an image and a depth of different sizes, ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: example folder not found")
    scene = _read_scene_json(folder / SCENE_FILE)
    image = _read_image(folder / IMAGE_FILE)
    H, W = image.shape[:2]
    depth = _read_depth(folder / DEPTH_FILE, (H, W))
    instance = _read_instance(folder, (H, W))
    prompt_path = folder / PROMPT_FILE
    prompt = prompt_path.read_text(encoding="utf-8").strip() if prompt_path.is_file() else ""
    example = Example(image, depth, instance, scene["K"], prompt, meta=scene["meta"], name=folder.name)
    if (folder / GT_FILE).exists():
        example.gt = _read_gt(folder / GT_FILE, example)
    return example


def _read_scene_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataFormatError(
            f'{path}: file not found; expected {{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}} '
            "(a folder whose save_example was interrupted has none either)"
        )
    try:
        scene = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(scene, dict) or "K" not in scene:
        raise DataFormatError(f'{path}: expected a JSON object with "K" (3x3 intrinsics in pixels)')
    version = scene.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise DataFormatError(f"{path}: format_version {version!r}; this momaplib reads {FORMAT_VERSION}")
    try:
        K = np.array(scene["K"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: K must be a 3x3 list of numbers ({exc})") from exc
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise DataFormatError(f"{path}: K must be 3x3 finite numbers, got shape {K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise DataFormatError(
            f"{path}: K must have focal lengths > 0 and last row [0, 0, 1] (pixels), got {K.tolist()}"
        )
    meta = scene.get("meta", {})
    if not isinstance(meta, dict):
        raise DataFormatError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
    return {"K": K, "meta": meta}


def _open_png(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found; expected {what}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataFormatError(f"{path}: not a readable image (truncated or corrupted?): {exc}") from exc
    return image


def _read_image(path: Path) -> np.ndarray:
    image = _open_png(path, "the reference RGB image, an 8-bit (H, W, 3) PNG")
    if image.mode not in _IMAGE_MODES:
        raise DataFormatError(
            f"{path}: image mode {image.mode!r}; expected an 8-bit RGB PNG (or RGBA, grey, palette)"
        )
    return np.array(image.convert("RGB"))


def _read_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found; expected {shape} float32 z-depth in metres (.npy)")
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array (truncated or corrupted?): {exc}") from exc
    if not np.issubdtype(depth.dtype, np.floating):
        raise DataFormatError(
            f"{path}: depth has dtype {depth.dtype}; expected float32 metres "
            "(convert millimetre integers with depth_mm / 1000)"
        )
    if depth.shape != shape:
        raise DataFormatError(
            f"{path}: depth has shape {depth.shape}, expected (H, W) = {shape} like {IMAGE_FILE}"
        )
    depth = depth.astype(np.float32, copy=False)
    if np.any(np.nan_to_num(depth, posinf=0.0, neginf=0.0) < 0):
        raise DataFormatError(f"{path}: depth must be >= 0 metres (0, NaN or inf: no geometry)")
    valid = valid_depth(depth)
    if not np.any(valid):
        raise DataFormatError(f"{path}: no pixel has a finite depth > 0")
    try:
        check_depth_scale(depth, valid, "depth", MAX_MEDIAN_DEPTH)
    except ValueError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc
    return depth


def _read_instance(folder: Path, shape: tuple[int, int]) -> np.ndarray:
    present = [folder / name for name in INSTANCE_FILES if (folder / name).is_file()]
    expected = f"{shape} integer instance ids, 0 = background"
    if not present:
        raise DataFormatError(
            f"{folder / INSTANCE_FILES[0]}: file not found (nor {INSTANCE_FILES[1]}); expected {expected}"
        )
    if len(present) > 1:
        raise DataFormatError(f"{folder}: both {INSTANCE_FILES[0]} and {INSTANCE_FILES[1]}; keep one")
    path = present[0]
    if path.suffix == ".png":
        image = _open_png(path, expected)
        if image.mode not in _INSTANCE_MODES:
            raise DataFormatError(
                f"{path}: a {image.mode!r} PNG; expected {expected} as an 8- or 16-bit grey "
                "(or palette) PNG, one channel"
            )
        instance = np.array(image)
    else:
        try:
            instance = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataFormatError(f"{path}: not a readable .npy array: {exc}") from exc
        if not np.issubdtype(instance.dtype, np.integer):
            raise DataFormatError(f"{path}: instance ids have dtype {instance.dtype}; expected {expected}")
    if instance.shape != shape:
        raise DataFormatError(
            f"{path}: instance map has shape {instance.shape}, expected {shape} like {IMAGE_FILE}"
        )
    if instance.min() < 0 or instance.max() > np.iinfo(np.int32).max:
        raise DataFormatError(
            f"{path}: instance ids must be in [0, 2^31); got {instance.min()}..{instance.max()}"
        )
    return instance.astype(np.int32)


def _read_gt(path: Path, example: Example) -> MoMap:
    arrays = load_npz(path, required=GT_KEYS)
    H, W = example.height, example.width
    motion = arrays["motion"]
    if motion.ndim != 4 or motion.shape[1:] != (H, W, 3) or not np.issubdtype(motion.dtype, np.floating):
        raise DataFormatError(
            f"{path}: motion has shape {motion.shape} dtype {motion.dtype}; expected (T, {H}, {W}, 3) "
            "float16 or float32 metres"
        )
    valid = arrays["valid"]
    if valid.shape == (H, W) and valid.dtype == np.bool_:
        without_depth = valid & ~example.valid
        if without_depth.any():
            raise DataFormatError(
                f"{path}: valid marks {int(without_depth.sum())} pixels without depth ({DEPTH_FILE} is 0, "
                "NaN or inf there); a trajectory starts at its reference point"
            )
    xyz0 = example.xyz
    try:
        return MoMap(
            xyz=xyz0[None] + motion.astype(np.float32),
            valid=valid,
            visible=arrays["visible"],
            rgb=example.image,
            instance=example.instance,
            K=example.K,
            ref_from_cam=arrays["ref_from_cam"],
            prompt=example.prompt,
            meta=example.meta,
        )
    except MoMapValidationError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc


def _check_inputs(example: Example) -> None:
    """Raises ``MoMapValidationError`` unless the example's arrays have the documented layout."""
    image = np.asarray(example.image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise MoMapValidationError(
            f"Example.image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    shape = image.shape[:2]
    depth = np.asarray(example.depth)
    if depth.shape != shape or not np.issubdtype(depth.dtype, np.floating):
        raise MoMapValidationError(
            f"Example.depth: expected {shape} float metres, got {depth.shape} {depth.dtype}"
        )
    instance = np.asarray(example.instance)
    if instance.shape != shape or not np.issubdtype(instance.dtype, np.integer):
        raise MoMapValidationError(
            f"Example.instance: expected {shape} integer ids, got {instance.shape} {instance.dtype}"
        )
    if instance.min() < 0 or instance.max() > np.iinfo(np.int32).max:
        raise MoMapValidationError(f"Example.instance: ids must be in [0, 2^31), got {instance.min()}..")
    if np.asarray(example.K).shape != (3, 3):
        raise MoMapValidationError(f"Example.K: expected (3, 3), got {np.asarray(example.K).shape}")
