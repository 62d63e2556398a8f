"""The torch ``Dataset`` of a dataset folder and the model inputs of one MoMap."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from momaplib.data.manifest import clip_path, load_manifest, load_settings
from momaplib.momap import MoMap, normalization_stats, normalize_xyz, xyz_to_channels
from momaplib.sim.sensor import observed_xyz
from momaplib.storage import DataFormatError, sha256_file


# ----------------------------------------------------------------------------- torch Dataset
def model_inputs(momap: MoMap, observed_depth: np.ndarray | None = None) -> dict[str, Any]:
    """Returns the model-ready tensors of one MoMap (the items of ``MoMapDataset``).

    Keys: ``momap`` (3T, H, W) float32 normalised trajectories in model layout (channel 3t + c),
    ``xyz0`` (3, H, W) the normalised reference XYZ (= ``momap[:3]``), ``center`` (3,) and
    ``scale`` () float32 from ``normalization_stats`` (``denormalize_xyz`` with them gives back
    metres), ``rgb`` (3, H, W) float32 in [-1, 1], ``instance`` (H, W) int64, ``valid`` (H, W)
    bool, ``visible`` (T, H, W) bool, ``K`` (3, 3) float32, ``ref_from_cam`` (T, 4, 4) float32,
    ``prompt`` str, ``target_id`` int (the instance the prompt names, ``meta["task"]["target_id"]``;
    -1 when the clip does not say). Invalid pixels carry no trajectory and are 0 (the scene centre) in
    ``momap`` and ``xyz0``.

    ``observed_depth`` (H, W), the reference frame's depth as a sensor saw it (``clip.depth[0]`` of a
    ``SimConfig(sensor=...)`` clip; 0 = no depth): then ``xyz0`` is what the pipeline gets at
    inference, the observed XYZ (``momaplib.sim.sensor.observed_xyz``, 0 where there is no depth),
    and the normalisation statistics come from it too, as the pipeline computes them; ``momap``
    stays the exact GT trajectories in that normalisation, so a model learns to give the true
    motion of a noisy scene, and ``observed`` (H, W) bool marks the pixels with depth. Without it
    ``xyz0`` is ``momap[:3]`` and ``observed`` is ``valid``.
    """
    xyz, valid = torch.from_numpy(momap.xyz), torch.from_numpy(momap.valid)
    seen_xyz, seen = xyz[0], valid
    if observed_depth is not None:
        seen_np, seen_valid = observed_xyz(np.asarray(observed_depth, dtype=np.float32), momap.K)
        seen_xyz, seen = torch.from_numpy(seen_np), torch.from_numpy(seen_valid)
        if int(seen.sum()) < 2:
            raise ValueError(f"observed_depth: {int(seen.sum())} pixels have depth; expected a depth map")
    center, scale = normalization_stats(seen_xyz, seen)
    normalized = torch.where(valid[None, :, :, None], normalize_xyz(xyz, center, scale), 0.0)
    channels = xyz_to_channels(normalized).contiguous()  # (3T, H, W)
    if observed_depth is None:
        xyz0 = channels[:3].clone()
    else:
        seen_normalized = torch.where(
            seen[None, :, :, None], normalize_xyz(seen_xyz[None], center, scale), 0.0
        )
        xyz0 = xyz_to_channels(seen_normalized).contiguous()
    return {
        "momap": channels,
        "xyz0": xyz0,
        "observed": seen,
        "center": center.float(),
        "scale": scale.float(),
        "rgb": torch.from_numpy(momap.rgb).permute(2, 0, 1).float() / 127.5 - 1.0,
        "instance": torch.from_numpy(momap.instance).long(),
        "valid": valid,
        "visible": torch.from_numpy(momap.visible),
        "K": torch.from_numpy(momap.K),
        "ref_from_cam": torch.from_numpy(momap.ref_from_cam),
        "prompt": momap.prompt,
        "target_id": int(momap.meta.get("task", {}).get("target_id", -1)),
    }


class MoMapDataset(torch.utils.data.Dataset):
    """The clips of one split of a dataset folder as model-ready tensors (see ``model_inputs``).

    ``MoMapDataset(root, split="train")[i]`` is ``model_inputs`` of clip i (manifest order) plus
    ``id`` (str). ``split=None`` takes every clip; a split may be empty for tiny datasets. With
    ``verify=True`` every load first checks the file's sha256 against the manifest. PyTorch's
    default collate batches items (tensors stacked, strings into lists), as does ``collate``.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = "train", verify: bool = False):
        self.root = Path(root)
        self.split = split
        self.verify = verify
        self.settings = load_settings(self.root)
        self.entries = load_manifest(self.root, split)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        path = clip_path(self.root, entry)  # never outside the dataset folder
        if self.verify:
            if not path.is_file():
                raise DataFormatError(f"clip {entry['id']}: file {path} is missing")
            sha256 = sha256_file(path)
            if sha256 != entry["sha256"]:
                raise DataFormatError(
                    f"clip {entry['id']}: {path} has sha256 {sha256} "
                    f"but the manifest says {entry['sha256']}; "
                    "the file is truncated, corrupted or was changed after writing"
                )
        momap = MoMap.load(path)  # DataFormatError / MoMapValidationError name the file
        if list(momap.xyz.shape[:3]) != list(entry["shape"]):
            raise DataFormatError(
                f"clip {entry['id']}: {path} has (T, H, W) = {momap.xyz.shape[:3]}, "
                f"the manifest says {tuple(entry['shape'])}"
            )
        observed_depth = None
        if self.settings.get("sim", {}).get("sensor", "ideal") != "ideal":  # the condition as a sensor saw it
            with np.load(path) as arrays:
                observed_depth = arrays["video_depth"][0]
        return {**model_inputs(momap, observed_depth), "id": entry["id"]}


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Returns a batch: tensors stacked to (B, ...), strings (``prompt``, ``id``) as lists of B."""
    return torch.utils.data.default_collate(list(items))
