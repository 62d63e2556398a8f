"""The input of reconstruction: a video with optional depth, intrinsics and instance masks.

A ``Video`` is what every stage reads. It is built from arrays (a simulator clip, a notebook) or
loaded from disk by ``load_video``; both check every field and raise ``VideoError`` naming the
field, its expected shape/range and what was found.

On-disk inputs (one video each, documented in data/README.md):
- ``<name>.npz`` with ``frames (T, H, W, 3) uint8`` (or ``video_rgb``, as in MoMap-Sim clip files)
  and optionally ``depth (T, H, W) float32`` metres (or ``video_depth``), ``K (3, 3)``,
  ``instance (T, H, W) int`` (or ``video_instance``), ``prompt`` (str);
- ``<name>/`` a folder of frames (``*.png`` / ``*.jpg``, sorted by file name) with an optional
  ``meta.json`` holding ``{"K": [[...], [...], [...]], "prompt": "..."}`` (other keys go to
  ``Video.meta``), and optional ``depth.npy (T, H, W)`` metres and ``instance.npy (T, H, W)`` ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from momaplib.storage import DataFormatError, load_npz, unpack_json, unpack_str

#: File suffixes of frame images in a frame folder.
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Keys read from a video npz: field -> accepted keys, first found wins (the ``video_*`` keys of a
#: MoMap-Sim clip file come first: its ``instance`` is the MoMap's (H, W) reference ids).
NPZ_KEYS = {
    "frames": ("video_rgb", "frames"),
    "depth": ("video_depth", "depth"),
    "instance": ("video_instance", "instance"),
    "K": ("K",),
    "prompt": ("prompt",),
}


class VideoError(ValueError):
    """A video field has the wrong shape, dtype or values; the message names the field."""


@dataclass
class Video:
    """A video to reconstruct; ``frames`` is required, everything else is optional."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    depth: np.ndarray | None = None  # (T, H, W) float32 z-depth in metres; 0 or NaN: a hole (no measurement)
    K: np.ndarray | None = None  # (3, 3) float32 intrinsics in pixels (None: unknown)
    instance: np.ndarray | None = None  # (T, H, W) int32 instance ids, 0 = background
    prompt: str = ""  # text describing the motion ("" when unknown)
    name: str = "video"  # identifier used in messages and as the clip id
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras (family, source, ...)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Returns ``(T, H, W)``."""
        return tuple(self.frames.shape[:3])

    def validate(self) -> None:
        """Checks every field in place; raises ``VideoError`` naming the bad field."""
        if isinstance(self.frames, (list, tuple)):  # a list of frames: name the first odd one out
            shapes = [np.shape(frame) for frame in self.frames]
            for t, shape in enumerate(shapes):
                if shape != shapes[0]:
                    raise VideoError(
                        f"{self.name}: frames[{t}]: has shape {shape} but frames[0] has {shapes[0]}; "
                        "expected every frame (H, W, 3) of one size"
                    )
            self.frames = np.stack(self.frames) if shapes else np.zeros((0, 0, 0, 3), np.uint8)
        frames = np.asarray(self.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise VideoError(
                f"{self.name}: frames: expected (T, H, W, 3) uint8 RGB, got shape {frames.shape} "
                f"dtype {frames.dtype}"
            )
        if frames.shape[0] == 0:
            raise VideoError(f"{self.name}: frames: the video is empty (T = 0); expected T >= 2 frames")
        if frames.shape[0] < 2:
            raise VideoError(f"{self.name}: frames: expected T >= 2 frames, got {frames.shape[0]}")
        if min(frames.shape[1:3]) < 8:
            raise VideoError(f"{self.name}: frames: expected H, W >= 8 pixels, got {frames.shape[1:3]}")
        self.frames = frames
        T, H, W = frames.shape[:3]
        if self.depth is not None:
            self.depth = check_depth(self.depth, (T, H, W), f"{self.name}: depth", allow_holes=True)
        if self.K is not None:
            self.K = check_intrinsics(self.K, f"{self.name}: K")
        if self.instance is not None:
            instance = np.asarray(self.instance)
            if instance.shape != (T, H, W) or not np.issubdtype(instance.dtype, np.integer):
                raise VideoError(
                    f"{self.name}: instance: expected (T, H, W) = {(T, H, W)} integer ids, "
                    f"got shape {instance.shape} dtype {instance.dtype}"
                )
            if instance.size and instance.min() < 0:
                raise VideoError(f"{self.name}: instance: expected ids >= 0 (0 = background)")
            self.instance = instance.astype(np.int32, copy=False)
        if not isinstance(self.prompt, str):
            raise VideoError(f"{self.name}: prompt: expected str, got {type(self.prompt).__name__}")

    @classmethod
    def from_clip(cls, clip: Any, with_depth: bool = True, with_instance: bool = True) -> Video:
        """Returns the video of a MoMap-Sim ``Clip`` (frames, and optionally its exact depth/instances)."""
        return cls(
            frames=clip.frames,
            depth=clip.depth if with_depth else None,
            K=clip.K,
            instance=clip.instances if with_instance else None,
            prompt=clip.prompt,
            name=f"{clip.family}_seed{clip.seed}",
            meta={"family": clip.family, "seed": int(clip.seed), "action": clip.task.action},
        )


def resize_video(video: Video, height: int, width: int) -> Video:
    """Returns ``video`` resized to ``height x width`` pixels (itself when it already has that size).

    Every field keeps pixel centres aligned with the frames (pixel ``u`` of ``W`` covers
    ``[u, u + 1) * W' / W`` of the new image, centres at ``u' = (u + 0.5) * W' / W - 0.5``):
    frames are area-averaged; depth (``resize_depth``) takes the nearest surface in each new
    pixel's footprint rather than an average across a depth edge (which would put points in
    mid-air); instance ids take the source pixel nearest to the new pixel's centre; ``K`` is
    scaled with the image.
    """
    H, W = video.shape[1:]
    if (H, W) == (height, width):
        return video
    if height < 8 or width < 8:
        raise VideoError(f"{video.name}: height/width: expected >= 8 pixels, got {height}x{width}")
    frames = np.stack(
        [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in video.frames]
    )
    depth = None if video.depth is None else resize_depth(video.depth, height, width)
    instance = None
    if video.instance is not None:
        rows, cols = _centre_index(H, height), _centre_index(W, width)
        instance = video.instance[:, rows][:, :, cols]
    K = None
    if video.K is not None:
        sx, sy = width / W, height / H
        K = video.K.astype(np.float64).copy()
        K[0, 0], K[0, 1], K[0, 2] = K[0, 0] * sx, K[0, 1] * sx, (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1], K[1, 2] = K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5
    return Video(frames, depth, K, instance, video.prompt, video.name, {**video.meta, "resized_from": [H, W]})


def _centre_index(size: int, new_size: int) -> np.ndarray:
    """Returns (new_size,) indices of the source pixels nearest to the new pixels' centres."""
    centres = (np.arange(new_size) + 0.5) * size / new_size - 0.5
    return np.clip(np.floor(centres + 0.5), 0, size - 1).astype(np.int64)


def _footprints(size: int, new_size: int) -> np.ndarray:
    """Returns (new_size,) first source pixel of each new pixel's footprint (downsampling): the
    source pixels whose centres fall in ``[i, i + 1) * size / new_size``."""
    return np.ceil(np.arange(new_size) * size / new_size - 0.5).astype(np.int64).clip(0, size - 1)


def resize_depth(depth: np.ndarray, height: int, width: int, surface_ratio: float = 1.05) -> np.ndarray:
    """Returns z-depth (T, H, W) resized to (T, height, width), edge-aware and pixel-centre-correct.

    Downsampling (per axis where the image shrinks): each new pixel takes the mean of the measured
    source pixels in its footprint that lie within ``surface_ratio`` of the footprint's nearest
    depth: one surface, the front one, never a mix across an edge; a smooth surface keeps its
    footprint mean (no shift). Upsampling: the source pixel nearest to each new centre. Holes (0,
    NaN) are ignored; a footprint without measurements stays a hole (0).
    """
    depth = np.asarray(depth, np.float32)
    H, W = depth.shape[1:]
    measured = np.isfinite(depth) & (depth > 0)
    if height > H or width > W:  # nearest-centre upsampling of the growing axes first
        rows = _centre_index(H, height) if height > H else np.arange(H)
        cols = _centre_index(W, width) if width > W else np.arange(W)
        depth, measured = depth[:, rows][:, :, cols], measured[:, rows][:, :, cols]
        H, W = depth.shape[1:]
    if (H, W) == (height, width):
        return np.where(measured, depth, 0).astype(np.float32)
    row_start, col_start = _footprints(H, height), _footprints(W, width)
    row_of = np.searchsorted(row_start, np.arange(H), side="right") - 1  # footprint of each source row
    col_of = np.searchsorted(col_start, np.arange(W), side="right") - 1

    def block_reduce(values: np.ndarray, ufunc) -> np.ndarray:
        return ufunc.reduceat(ufunc.reduceat(values, row_start, axis=1), col_start, axis=2)

    nearest = block_reduce(np.where(measured, depth, np.inf), np.minimum)  # (T, height, width)
    front = measured & (depth <= surface_ratio * nearest[:, row_of][:, :, col_of])
    total = block_reduce(np.where(front, depth, 0).astype(np.float64), np.add)
    count = block_reduce(front.astype(np.int64), np.add)
    return np.where(count > 0, total / np.maximum(count, 1), 0).astype(np.float32)


def check_depth(depth: Any, shape: tuple[int, int, int], name: str, allow_holes: bool = False) -> np.ndarray:
    """Returns ``depth`` as float32 after checking shape ``(T, H, W)`` and values (finite, > 0).

    With ``allow_holes``, 0 and NaN mark pixels without a measurement (as depth sensors write
    them); negative or infinite values are still refused, and every frame needs some depth.
    """
    depth = np.asarray(depth)
    if depth.shape != tuple(shape) or not np.issubdtype(depth.dtype, np.floating):
        raise VideoError(
            f"{name}: expected (T, H, W) = {tuple(shape)} floating z-depth in metres, "
            f"got shape {depth.shape} dtype {depth.dtype}"
        )
    if allow_holes:
        with np.errstate(invalid="ignore"):
            bad = np.isinf(depth) | (depth < 0)
        if bad.any():
            t, v, u = np.argwhere(bad)[0]
            raise VideoError(
                f"{name}: expected z-depth >= 0 metres (0 or NaN = a hole), found {int(bad.sum())} "
                f"negative/inf values (first at t={t}, v={v}, u={u})"
            )
        with np.errstate(invalid="ignore"):
            empty = ~(depth > 0).reshape(depth.shape[0], -1).any(1)
        if empty.any():
            raise VideoError(
                f"{name}: frame {int(np.argmax(empty))} has no depth at all (every pixel 0 or NaN); "
                "expected some measured pixels in every frame"
            )
        return depth.astype(np.float32, copy=False)
    bad = ~np.isfinite(depth) | (depth <= 0)
    if bad.any():
        t, v, u = np.argwhere(bad)[0]
        nan = int((~np.isfinite(depth)).sum())
        raise VideoError(
            f"{name}: expected finite depth > 0 metres everywhere, found {nan} NaN/inf and "
            f"{int(bad.sum()) - nan} zero/negative values (first at t={t}, v={v}, u={u}); "
            "fill holes before reconstruction"
        )
    return depth.astype(np.float32, copy=False)


def check_intrinsics(K: Any, name: str = "K") -> np.ndarray:
    """Returns ``K`` as float32 after checking it is a (3, 3) pinhole matrix with positive focals."""
    K = np.asarray(K)
    if K.shape != (3, 3) or not np.issubdtype(K.dtype, np.number) or not np.isfinite(K).all():
        raise VideoError(f"{name}: expected a finite (3, 3) intrinsics matrix in pixels, got shape {K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise VideoError(f"{name}: expected positive focal lengths and last row [0, 0, 1], got {K.tolist()}")
    return K.astype(np.float32)


def _load_npy(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from exc


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """Returns the videos of ``folder`` (``*.npz`` files and frame folders), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: not a folder of videos (see data/README.md, 'Reconstructing videos')"
        )
    videos = sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and ((p.is_file() and p.suffix == ".npz") or (p.is_dir() and _frame_files(p)))
    )
    stems: dict[str, Path] = {}
    for path in videos:
        if path.stem in stems:
            raise DataFormatError(
                f"{folder}: two videos are named {path.stem!r}: {stems[path.stem]} and {path}"
            )
        stems[path.stem] = path
    return videos


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def load_video(path: str | os.PathLike) -> Video:
    """Returns the ``Video`` stored at ``path``: an ``.npz`` file or a folder of frames."""
    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise VideoError(f"{path}: frames: no {'/'.join(FRAME_SUFFIXES)} frame images in the folder")
        frames = []
        for file in files:
            frame = np.asarray(Image.open(file).convert("RGB"))
            if frames and frame.shape != frames[0].shape:
                raise VideoError(
                    f"{path}: frames: {file.name} is {frame.shape[1]}x{frame.shape[0]} pixels but "
                    f"{files[0].name} is {frames[0].shape[1]}x{frames[0].shape[0]}"
                    "; all frames must have one size"
                )
            frames.append(frame)
        meta_path = path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{meta_path}: not readable JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise DataFormatError(f"{meta_path}: expected a JSON object with optional 'K' and 'prompt'")
        K = meta.pop("K", None)
        prompt = meta.pop("prompt", "")
        extras = {name: _load_npy(path / f"{name}.npy") for name in ("depth", "instance")}
        return Video(
            np.stack(frames),
            K=K,
            prompt=prompt,
            name=path.name,
            meta={"source": str(path), **meta},
            **extras,
        )
    arrays = load_npz(path)
    found = {name: next((arrays[k] for k in keys if k in arrays), None) for name, keys in NPZ_KEYS.items()}
    if found["frames"] is None:
        raise VideoError(f"{path}: frames: missing; expected an array 'frames' (T, H, W, 3) uint8")
    prompt = unpack_str(found["prompt"]) if found["prompt"] is not None else ""
    meta = {"source": str(path)}
    for key in ("family", "seed"):
        if key in arrays:
            meta[key] = unpack_str(arrays[key]) if key == "family" else int(arrays[key])
    if "task" in arrays:  # a MoMap-Sim clip file
        meta["action"] = unpack_json(arrays["task"]).get("action", "")
    return Video(
        found["frames"],
        depth=found["depth"],
        K=found["K"],
        instance=found["instance"],
        prompt=prompt,
        name=path.stem,
        meta=meta,
    )
