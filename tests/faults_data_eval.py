"""Fault table: the simulator's settings, dataset folders (manifest paths) and ``momap eval``.

Each case would have crashed, hung, exhausted memory, written into a folder it then refused, or
silently produced a wrong table without its check (cases marked ``# already handled`` document
checks that existed before). Every case is fast: datasets are written by hand from a toy MoMap,
nothing is simulated or sampled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from momaplib.data import MANIFEST_KEYS, MoMapDataset, load_manifest, write_dataset
from momaplib.eval import EvalJob
from momaplib.metrics import load_split, sample_metrics, save_predictions
from momaplib.recon.folder import verify_recon_dataset
from momaplib.recon.runner import ReconJob, ReconSettingsError
from momaplib.sim import SimConfig
from momaplib.storage import DataFormatError, sha256_file
from tests.faults import Fault
from tests.test_metrics import toy_momap

SMALL = SimConfig(height=8, width=8, num_frames=2)


def tiny_dataset(root: Path, num_clips: int = 2, **changes) -> Path:
    """Returns ``root`` after writing a dataset folder of toy MoMaps (T = 4, 24 x 24) by hand.

    ``changes`` override fields of the first manifest entry (e.g. ``file="../x.npz"``).
    """
    lines = []
    for index in range(num_clips):
        identifier = f"toy_{index:06d}"
        file = f"clips/{identifier}.npz"
        toy_momap(T=4, seed=index).save(root / file)
        entry = {
            "id": identifier,
            "index": index,
            "split": "test",
            "file": file,
            "family": "tabletop",
            "seed": index,
            "shape": [4, 24, 24],
            "prompt": "",
            "action": "push",
            "sha256": sha256_file(root / file),
            "bytes": (root / file).stat().st_size,
        }
        if index == 0:
            entry.update(changes)
        lines.append(json.dumps({key: entry[key] for key in MANIFEST_KEYS}) + "\n")
    settings = {"format_version": 1, "num_clips": num_clips, "seed": 0, "split_seed": 0}
    settings |= {"splits": {"train": 0.0, "val": 0.0, "test": 1.0}, "sim": {"family": "tabletop"}}
    (root / "dataset.json").write_text(json.dumps(settings))
    (root / "manifest.jsonl").write_text("".join(lines))
    return root


def escaping_symlink(tmp_path: Path) -> Path:
    """Returns a dataset whose first clip file is a symlink to a MoMap outside the folder."""
    root = tiny_dataset(tmp_path / "data")
    outside = tmp_path / "elsewhere.npz"
    toy_momap(T=4, seed=7).save(outside)
    link = root / "clips" / "toy_000000.npz"
    link.unlink()
    os.symlink(outside, link)
    return root


def scaled_predictions(tmp_path: Path, factor: float = 1e20, value: float | None = None) -> Path:
    """Returns a predictions folder for ``tiny_dataset``: the GT x ``factor`` (or filled with ``value``)."""
    dataset = tiny_dataset(tmp_path / "data")
    for clip_id, momap in load_split(dataset, "test"):
        xyz = momap.xyz[None] * factor if value is None else np.full((1, *momap.xyz.shape), value)
        save_predictions(tmp_path / "preds", clip_id, xyz)
    return dataset


def eval_job(tmp_path: Path, **fields) -> object:
    """Runs ``EvalJob`` on a tiny dataset with the ``static`` baseline and ``fields``."""
    dataset = tiny_dataset(tmp_path / "data") if "datasets" not in fields else None
    settings = {"datasets": (dataset,), "baselines": ("static",), "progress": False} | fields
    return EvalJob(**settings).run()


def far_away(which: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (gt, pred) xyz of a toy MoMap where the prediction is x 1e20, or one GT point moves 1e20 m."""
    gt = toy_momap(T=4).xyz
    pred = gt * np.float32(1e20) if which == "pred" else gt.copy()
    if which == "gt":
        gt = gt.copy()
        gt[-1, 0, 0, 0] = 1e20
    return gt, pred


def write_small(tmp_path: Path, **options) -> object:
    return write_dataset(tmp_path / "out", SMALL, **{"workers": 0, "progress": False, **options})


def two_folders_named_alike(tmp_path: Path) -> object:
    dataset = scaled_predictions(tmp_path, factor=1.0)
    return eval_job(tmp_path, datasets=(dataset,), predictions=(tmp_path / "preds", tmp_path / "." / "preds"))


CASES: list[Fault] = [
    # ------------------------------------------------------------------ SimConfig (every entry point)
    Fault(
        "SimConfig",
        "fov_deg = 0",
        lambda p: SimConfig(fov_deg=0),
        ValueError,
        "SimConfig.fov_deg: expected 30..160",
    ),
    Fault(
        "SimConfig",
        "fov_deg = NaN",
        lambda p: SimConfig(fov_deg=float("nan")),
        ValueError,
        "SimConfig.fov_deg",
    ),
    Fault(
        "SimConfig",
        "fov_deg = 179 (no feasible scene)",
        lambda p: SimConfig(fov_deg=179),
        ValueError,
        "30..160",
    ),
    Fault(
        "SimConfig",
        "height = 20000",
        lambda p: SimConfig(height=20000),
        ValueError,
        "SimConfig.height: expected 8..1024",
    ),
    Fault(
        "SimConfig",
        "width = 4",
        lambda p: SimConfig(width=4),
        ValueError,
        "SimConfig.width: expected 8..1024",
    ),
    Fault(
        "SimConfig",
        "height = 32.5 (not an integer)",
        lambda p: SimConfig(height=32.5),
        ValueError,
        "SimConfig.height: expected an integer",
    ),
    Fault(
        "SimConfig",
        "num_frames = 100000",
        lambda p: SimConfig(num_frames=100_000),
        ValueError,
        "SimConfig.num_frames: expected 2..512",
    ),
    Fault(
        "SimConfig", "num_frames = 1", lambda p: SimConfig(num_frames=1), ValueError, "SimConfig.num_frames"
    ),  # already handled
    Fault(
        "SimConfig",
        "512 frames of 1024 x 1024 (memory)",
        lambda p: SimConfig(num_frames=512, height=1024, width=1024),
        ValueError,
        "pixels per clip; expected at most",
    ),
    Fault(
        "SimConfig",
        "family = 'kitchen'",
        lambda p: SimConfig(family="kitchen"),
        ValueError,
        "SimConfig.family: expected one of",
    ),
    Fault("SimConfig", "device = 'tpu'", lambda p: SimConfig(device="tpu"), ValueError, "SimConfig.device"),
    Fault(
        "SimConfig",
        "max_objects = 9",
        lambda p: SimConfig(max_objects=9),
        ValueError,
        "SimConfig.min_objects/max_objects",
    ),  # already handled
    Fault(
        "SimConfig",
        "actions = ('dance',)",
        lambda p: SimConfig(actions=("dance",)),
        ValueError,
        "SimConfig.actions",
    ),  # already handled
    # ------------------------------------------------------------------ momap sim (write_dataset)
    Fault(
        "write_dataset",
        "num_clips = 2.5",
        lambda p: write_small(p, num_clips=2.5),
        ValueError,
        "num_clips: expected 1..1000000",
    ),
    Fault(
        "write_dataset",
        "num_clips = 10^9",
        lambda p: write_small(p, num_clips=10**9),
        ValueError,
        "num_clips: expected 1..1000000",
    ),
    Fault(
        "write_dataset", "num_clips = 0", lambda p: write_small(p, num_clips=0), ValueError, "num_clips"
    ),  # already handled
    Fault(
        "write_dataset",
        "workers = 10000 (one process per clip, unbounded)",
        lambda p: write_small(p, num_clips=1, workers=10_000),
        ValueError,
        "workers: expected 0..256",
    ),
    Fault(
        "write_dataset",
        "seed = 1.5",
        lambda p: write_small(p, num_clips=1, seed=1.5),
        ValueError,
        "seed: expected an integer",
    ),
    # ------------------------------------------------------------------ paths read from manifests
    Fault(
        "load_manifest",
        "file = '../x.npz'",
        lambda p: load_manifest(tiny_dataset(p, file="../x.npz")),
        DataFormatError,
        "not a relative path inside its folder",
    ),
    Fault(
        "load_manifest",
        "file = '/etc/passwd'",
        lambda p: load_manifest(tiny_dataset(p, file="/etc/passwd")),
        DataFormatError,
        "not a relative path inside its folder",
    ),
    Fault(
        "load_manifest",
        "id = '../../x' (names prediction files)",
        lambda p: load_manifest(tiny_dataset(p, id="../../x")),
        DataFormatError,
        "id: expected a clip name",
    ),
    Fault(
        "MoMapDataset[i]",
        "clip file is a symlink out of the folder",
        lambda p: MoMapDataset(escaping_symlink(p), split="test")[0],
        DataFormatError,
        "leads outside",
    ),
    Fault(
        "momap recon --verify",
        "clip file is a symlink out of the folder",
        lambda p: verify_recon_dataset(escaping_symlink(p)),
        DataFormatError,
        "leads outside",
    ),
    Fault(
        "load_split (momap eval)",
        "clip file is a symlink out of the folder",
        lambda p: load_split(escaping_symlink(p), "test"),
        DataFormatError,
        "leads outside",
    ),
    Fault(
        "save_predictions",
        "clip id '../escape'",
        lambda p: save_predictions(p / "preds", "../escape", np.zeros((1, 2, 8, 8, 3))),
        DataFormatError,
        "id: expected a clip name",
    ),
    # ------------------------------------------------------------------ momap eval
    Fault(
        "momap eval",
        "--max-clips -1 (dropped the last clip)",
        lambda p: eval_job(p, max_clips=-1),
        ValueError,
        "max_clips: expected >= 1",
    ),
    Fault(
        "momap eval",
        "--num-samples 1000000",
        lambda p: eval_job(p, num_samples=10**6),
        ValueError,
        "num_samples: expected 1..1000",
    ),
    Fault(
        "momap eval",
        "--baselines oracle (unknown name)",
        lambda p: eval_job(p, baselines=("oracle",)),
        ValueError,
        "baselines: unknown ['oracle']",
    ),
    Fault(
        "momap eval",
        "--baselines gt gt (one column)",
        lambda p: eval_job(p, baselines=("gt", "gt")),
        ValueError,
        "given twice",
    ),
    Fault(
        "momap eval",
        "--device gpu",
        lambda p: eval_job(p, device="gpu"),
        ValueError,
        "device: expected 'cpu'",
    ),
    Fault(
        "momap eval",
        "--split testing",
        lambda p: eval_job(p, split="testing"),
        ValueError,
        "split: expected one of",
    ),  # already handled
    Fault(
        "momap eval",
        "--guidance-scale nan",
        lambda p: eval_job(p, guidance_scale=float("nan")),
        ValueError,
        "guidance_scale: expected 0..100",
    ),
    Fault(
        "momap eval",
        "the same predictions folder twice",
        two_folders_named_alike,
        ValueError,
        "is given twice",
    ),
    Fault(
        "momap eval",
        "predictions x 1e20 (inf metrics, exit 0)",
        lambda p: eval_job(p, datasets=(scaled_predictions(p),), baselines=(), predictions=(p / "preds",)),
        ValueError,
        "toy_000000.npz",
    ),
    Fault(
        "momap eval",
        "predictions with NaN (names the file)",
        lambda p: eval_job(
            p, datasets=(scaled_predictions(p, value=np.nan),), baselines=(), predictions=(p / "preds",)
        ),
        ValueError,
        "non-finite values (NaN/inf) at valid pixels",
    ),  # already handled (the file's name is new)
    Fault(
        "sample_metrics",
        "predictions x 1e20",
        lambda p: sample_metrics(*far_away("pred")),
        ValueError,
        "pred[0] (sample 0): coordinates up to",
    ),
    Fault(
        "sample_metrics",
        "a GT point moving to 1e20 m",
        lambda p: sample_metrics(*far_away("gt")),
        ValueError,
        "gt.xyz: coordinates up to",
    ),
    # ------------------------------------------------------------------ momap recon
    Fault(
        "momap recon",
        "--height 20000",
        lambda p: ReconJob(videos=p, out=p / "out", height=20000)._check(),
        ReconSettingsError,
        "height: expected 8..1024",
    ),
]
