"""``momap recon``: reconstruct a folder of videos into a MoMap dataset, resumable and shardable.

The output folder has the layout of a MoMap-Sim dataset (``momaplib.data``, data/README.md), so
``MoMapDataset`` and the training jobs read it like a simulated one::

    <out>/dataset.json      format_version, source "recon", num_clips (videos in the folder),
                            splits, split_seed, sim {family "recon", height, width, num_frames}
                            (the MoMap size, read by training), recon (the stage settings),
                            videos (the input folder) and library versions
    <out>/manifest.jsonl    one line per finished clip, sorted by id (``momaplib.data.MANIFEST_KEYS``)
    <out>/clips/<id>.npz    the reconstructed MoMap (``MoMap.load``) plus ``video_rgb`` and
                            ``video_depth`` (the depth used, after per-frame scale correction);
                            id = the video's name (file stem or folder name)
    <out>/shards/           with ``--shard i/n``: one manifest per shard, merged into manifest.jsonl

Guarantees (as ``momaplib.data.write_dataset``): every file is written to a temporary file and
renamed into place; a clip counts as done only once its manifest line is on disk and its file
has the recorded size; rerunning the same command skips finished clips and redoes the rest;
other settings in the same folder are refused. With ``--shard i/n`` a run takes the videos whose
index in the sorted listing is ``i`` modulo ``n``; shards may run at the same time on machines
that share the folder (each has its own lock and manifest), and the last one to finish writes
the merged manifest.jsonl (rerun any shard, or the command without ``--shard``, to merge again).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from momaplib.data import (
    CLIPS_DIR,
    FORMAT_VERSION,
    MANIFEST_FILE,
    SPLITS,
    check_splits,
    format_shard,
    library_versions,
    manifest_line,
    resolve_shard,
    split_of,
)
from momaplib.recon.depth import GivenDepth, GivenDepthConfig, TransformersDepth, TransformersDepthConfig
from momaplib.recon.folder import (
    SHARDS_DIR,
    _check_new_folder,
    _finished_entries,
    _lock,
    _open_dataset,
    merge_manifests,
    verify_recon_dataset,
)
from momaplib.recon.infill import InfillConfig, TrajectoryInfill
from momaplib.recon.pipeline import Pipeline, PipelineConfig
from momaplib.recon.poses import DEFAULT_FOV_CANDIDATES, PoseConfig, TrackletBundleAdjustment
from momaplib.recon.segmentation import GivenSegmentation, MotionSegmentation
from momaplib.recon.tracking import FlowChainConfig, FlowChainTracker, ImportedTracks, ImportedTracksConfig
from momaplib.recon.video import list_videos, load_video, resize_video
from momaplib.sim.config import MAX_CLIP_PIXELS, MAX_FRAMES, MAX_SIZE, MIN_SIZE
from momaplib.storage import save_npz

#: Family recorded for reconstructed clips whose video does not say (MoMap-Sim clips keep theirs).
RECON_FAMILY = "recon"


class ReconSettingsError(ValueError):
    """A ``momap recon`` setting is malformed or disagrees with the videos; the message names it."""


class ReconFailedError(ValueError):
    """Some videos could not be reconstructed; the others are written. The message lists each one."""


def parse_shard(shard: str) -> tuple[int, int]:
    """Returns ``(i, n)`` of a shard spec ``"i/n"`` with ``0 <= i < n``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ReconSettingsError(f"shard: expected 'i/n' with 0 <= i < n (e.g. '0/4'), got {shard!r}")
    return int(match[1]), int(match[2])


@dataclass
class ReconReport:
    """What ``ReconJob.run`` did."""

    root: Path  # the dataset folder
    num_videos: int  # videos in the input folder (= dataset.json's num_clips)
    shard_videos: int  # videos of this shard
    reconstructed: int  # clips written by this run
    already_done: int  # clips of this shard found finished when the run started (resume)
    failed: dict[str, str]  # video name -> why it could not be reconstructed
    num_clips: int  # clips in the merged manifest now
    seconds: float  # wall-clock time of the run
    stage_seconds: dict[str, float] = field(default_factory=dict)  # total seconds per pipeline stage


@dataclass
class ReconJob:
    """Reconstructs every video of a folder into a MoMap dataset (paper §3.2, the data engine).

    Videos are ``*.npz`` files (``frames``, optional ``depth``, ``K``, ``instance``, ``prompt``;
    MoMap-Sim clip files work as they are) or folders of frame images (optional ``meta.json``
    with ``K`` and ``prompt``, ``depth.npy``, ``instance.npy``); see data/README.md. The output
    has the layout of ``momap sim`` datasets. Resumable: rerun the same command to finish.
    """

    videos: Path
    """Folder of videos to reconstruct (*.npz files and/or folders of frames)."""
    out: Path
    """Dataset folder to write (created if missing), e.g. data/recon_myvideos."""
    shard: str | None = None
    """'i/n': reconstruct only the videos whose index in the sorted listing is i modulo n (default:
    from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set, else 0/1)."""
    num_frames: int | None = None
    """Frames T of every MoMap from t0, 2..512 (None: the first video's length minus t0)."""
    t0: int = 0
    """Reference frame of every MoMap."""
    height: int | None = None
    """Resize videos to this height in pixels, 8..1024 (None: the first video's height)."""
    width: int | None = None
    """Resize videos to this width in pixels, 8..1024 (None: the first video's width)."""
    depth: Literal["given", "model"] = "given"
    """'given': the video's own depth (npz 'depth' / depth.npy); 'model': --depth-model."""
    depth_model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    """transformers depth-estimation model (hub id or local folder) used with --depth model."""
    depth_output: Literal["disparity", "depth"] = "disparity"
    """What --depth-model predicts (Depth Anything: disparity)."""
    tracks: Literal["flow", "imported"] = "flow"
    """'flow': DIS optical-flow chains; 'imported': 2D tracks from --tracks-path."""
    tracks_path: Path | None = None
    """With --tracks imported: a folder with one <video name>.npz of tracks per video."""
    segmentation: Literal["motion", "given"] = "motion"
    """'motion': rigid-motion clustering; 'given': the video's own instance masks."""
    fov_candidates: tuple[float, ...] = DEFAULT_FOV_CANDIDATES
    """Horizontal fields of view (deg) searched for videos without K."""
    splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    """Fractions of train, val and test clips (split = a hash of the clip id)."""
    split_seed: int = 0
    """Seed of the split assignment."""
    device: str = "cpu"
    """Torch device of the depth model and the optimisations."""
    verify: bool = True
    """Check every clip file's sha256 against the manifest at the end."""
    progress: bool = True
    """Show a progress bar."""

    # ------------------------------------------------------------------ building blocks
    def pipeline(self, num_frames: int | None = None) -> Pipeline:
        """Returns the ``Pipeline`` these settings describe (MoMaps of ``num_frames`` frames from t0)."""
        if self.depth == "model":
            depth = TransformersDepth(
                TransformersDepthConfig(model=self.depth_model, output=self.depth_output, device=self.device)
            )
        else:
            depth = GivenDepth(GivenDepthConfig())
        if self.tracks == "imported":
            if self.tracks_path is None:
                raise ReconSettingsError("tracks_path: --tracks imported needs a folder of <video name>.npz")
            tracker = ImportedTracks(ImportedTracksConfig(path=str(self.tracks_path)))
        else:
            tracker = FlowChainTracker(FlowChainConfig())
        poses = TrackletBundleAdjustment(PoseConfig(focal_candidates=self.fov_candidates, device=self.device))
        segmentation = GivenSegmentation() if self.segmentation == "given" else MotionSegmentation()
        infill = TrajectoryInfill(InfillConfig(device=self.device))
        return Pipeline(
            infill=infill,
            depth=depth,
            tracker=tracker,
            poses=poses,
            segmentation=segmentation,
            config=PipelineConfig(t0=self.t0, num_frames=num_frames or self.num_frames),
        )

    def _check(self) -> tuple[int, int]:
        if self.shard is None:  # a SLURM job array's task, else the whole folder
            self.shard = format_shard(resolve_shard(None))
        shard = parse_shard(self.shard)
        check_splits(self.splits)
        if self.t0 < 0:
            raise ReconSettingsError(f"t0: expected a frame index >= 0, got {self.t0}")
        if self.num_frames is not None and not 2 <= self.num_frames <= MAX_FRAMES:
            raise ReconSettingsError(
                f"num_frames: expected 2..{MAX_FRAMES} frames or None, got {self.num_frames}"
            )
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and not MIN_SIZE <= value <= MAX_SIZE:
                raise ReconSettingsError(
                    f"{name}: expected {MIN_SIZE}..{MAX_SIZE} pixels or None, got {value}"
                )
        if any(not 0 < fov < 180 for fov in self.fov_candidates):
            raise ReconSettingsError(
                f"fov_candidates: expected degrees in (0, 180), got {self.fov_candidates}"
            )
        if self.tracks == "imported" and self.tracks_path is None:
            raise ReconSettingsError("tracks_path: --tracks imported needs a folder of <video name>.npz")
        return shard

    def settings(self, paths: list[Path]) -> dict:
        """Returns the dataset.json content for the videos ``paths`` (JSON types only)."""
        T, H, W = self.num_frames, self.height, self.width
        if None in (T, H, W):  # sizes default to the first video's (every shard lists the same first one)
            first = load_video(paths[0])
            T = first.num_frames - self.t0 if T is None else T
            H = first.shape[1] if H is None else H
            W = first.shape[2] if W is None else W
            if T < 2:
                raise ReconSettingsError(
                    f"num_frames: the first video {first.name} has {first.num_frames} frames, "
                    f"too few for a MoMap from t0 = {self.t0}; set --num-frames or --t0"
                )
        if (
            T > MAX_FRAMES
            or not MIN_SIZE <= min(H, W) <= max(H, W) <= MAX_SIZE
            or T * H * W > MAX_CLIP_PIXELS
        ):
            raise ReconSettingsError(
                f"num_frames/height/width: MoMaps of {T} x {H} x {W} (from the first video where not set); "
                f"expected T <= {MAX_FRAMES}, {MIN_SIZE}..{MAX_SIZE} pixels and "
                f"T x H x W <= {MAX_CLIP_PIXELS}: "
                "set --num-frames, --height and --width"
            )
        stages = {
            "t0": self.t0,
            "depth": self.depth if self.depth == "given" else f"model:{self.depth_model}:{self.depth_output}",
            "tracks": self.tracks if self.tracks == "flow" else f"imported:{self.tracks_path}",
            "segmentation": self.segmentation,
            "fov_candidates": list(self.fov_candidates),
        }
        settings = {
            "format_version": FORMAT_VERSION,
            "source": "recon",
            "num_clips": len(paths),
            "splits": dict(zip(SPLITS, check_splits(self.splits), strict=True)),
            "split_seed": int(self.split_seed),
            "sim": {"family": RECON_FAMILY, "height": int(H), "width": int(W), "num_frames": int(T)},
            "recon": stages,
            "videos": str(Path(self.videos).resolve()),
            "library": library_versions(),
        }
        return json.loads(json.dumps(settings))

    # ------------------------------------------------------------------ the job
    def run(self) -> ReconReport:
        """Reconstructs (or finishes) this shard's videos, merges the manifest, prints a summary."""
        try:
            report = self._run()
        except KeyboardInterrupt:  # _run said how to resume; a traceback would only bury it
            raise SystemExit(130) from None
        print(
            f"{report.root}: {report.num_clips} of {report.num_videos} clips done; this run reconstructed "
            f"{report.reconstructed} of shard {self.shard}'s {report.shard_videos} videos "
            f"({report.already_done} were already done) in {report.seconds:.1f} s"
        )
        if report.stage_seconds:
            print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in report.stage_seconds.items()))
        if self.verify:
            count, size = verify_recon_dataset(self.out)
            print(f"verified {count} clips ({size / 1e6:.1f} MB, sha256)")
        if report.failed:
            listed = "\n  - ".join(
                why if why.startswith(f"{name}: ") else f"{name}: {why}"
                for name, why in sorted(report.failed.items())
            )
            raise ReconFailedError(
                f"{len(report.failed)} video(s) could not be reconstructed (the others are written):\n"
                f"  - {listed}"
            )
        return report

    def _run(self) -> ReconReport:
        started = time.perf_counter()
        index, count = self._check()
        paths = list_videos(self.videos)
        if not paths:
            raise ReconSettingsError(
                f"videos: {self.videos} holds no videos (*.npz files or folders of .png/.jpg frames)"
            )
        root = Path(self.out)
        requested = self.settings(paths)
        size = requested["sim"]
        pipeline = self.pipeline(num_frames=size["num_frames"])
        _check_new_folder(root)
        (root / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
        mine = [(i, path) for i, path in enumerate(paths) if i % count == index]
        own_manifest = root / (
            MANIFEST_FILE if count == 1 else f"{SHARDS_DIR}/manifest-{index}-of-{count}.jsonl"
        )
        own_manifest.parent.mkdir(exist_ok=True)
        failed: dict[str, str] = {}
        stage_seconds: dict[str, float] = {}
        with _lock(root / (".lock" if count == 1 else f".lock-{index}-of-{count}")):
            _open_dataset(root, requested)
            for _, path in mine:  # stray temporary files of this shard's clips (killed runs)
                for stale in (root / CLIPS_DIR).glob(f".{path.stem}.npz.*.tmp"):
                    stale.unlink(missing_ok=True)
            done = _finished_entries(root)
            already_done = sum(path.stem in done for _, path in mine)
            todo = [(i, path) for i, path in mine if path.stem not in done]
            reconstructed = 0
            bar = tqdm(
                total=len(mine),
                initial=already_done,
                desc=f"momap recon {self.shard}",
                unit="clip",
                disable=not self.progress,
            )
            try:
                with bar, open(own_manifest, "a") as manifest:
                    for i, path in todo:
                        bar.set_postfix_str(path.stem)
                        try:
                            entry, seconds = self._reconstruct(root, i, path, pipeline, size, requested)
                        except (ValueError, FileNotFoundError) as exc:
                            failed[path.stem] = str(exc)
                            bar.update()
                            continue
                        manifest.write(manifest_line(entry))
                        manifest.flush()
                        os.fsync(manifest.fileno())  # the clip counts as done only once its line is on disk
                        done[entry["id"]] = entry
                        reconstructed += 1
                        for stage, value in seconds.items():
                            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + value
                        bar.update()
            except KeyboardInterrupt:
                print(
                    f"\ninterrupted: {already_done + reconstructed} of this shard's {len(mine)} clips are "
                    "written; rerun the same command to resume"
                )
                raise
        merged = merge_manifests(root, [path.stem for path in paths])
        return ReconReport(
            root,
            len(paths),
            len(mine),
            reconstructed,
            already_done,
            failed,
            merged,
            time.perf_counter() - started,
            stage_seconds,
        )

    def _reconstruct(
        self, root: Path, index: int, path: Path, pipeline: Pipeline, size: dict, settings: dict
    ) -> tuple[dict, dict[str, float]]:
        """Returns ``(manifest entry, seconds per stage)`` after writing one clip's npz atomically."""
        video = load_video(path)
        if video.K is None and not self.fov_candidates:
            raise ReconSettingsError(
                f"{video.name}: K: the video has no intrinsics and --fov-candidates is empty"
            )
        needed = self.t0 + size["num_frames"]
        if video.num_frames < needed:
            raise ReconSettingsError(
                f"{video.name}: num_frames: the video has {video.num_frames} frames, the MoMap needs "
                f"t0 + T = {needed}"
            )
        video = resize_video(video, size["height"], size["width"])
        result = pipeline(video)
        momap = result.momap
        clip_id = video.name
        file = f"{CLIPS_DIR}/{clip_id}.npz"
        depth_used = result.depth * result.poses.depth_scale[:, None, None]
        arrays = {**momap.to_arrays(), "video_rgb": result.video.frames, "video_depth": depth_used}
        sha256 = save_npz(root / file, arrays)
        T, H, W = momap.xyz.shape[:3]
        entry = {
            "id": clip_id,
            "index": index,
            "split": split_of(clip_id, settings["split_seed"], [settings["splits"][s] for s in SPLITS]),
            "file": file,
            "family": str(video.meta.get("family", RECON_FAMILY)),
            "seed": int(video.meta.get("seed", -1)),
            "shape": [T, H, W],
            "prompt": momap.prompt,
            "action": str(video.meta.get("action", "")),
            "sha256": sha256,
            "bytes": (root / file).stat().st_size,
        }
        return entry, {stage: values["seconds"] for stage, values in result.report.items()}


__all__ = [
    "ReconFailedError",
    "ReconJob",
    "ReconReport",
    "ReconSettingsError",
    "merge_manifests",
    "parse_shard",
    "verify_recon_dataset",
]
