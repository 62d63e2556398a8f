"""MoMap-Sim datasets on disk: a resumable parallel writer, a verifier and a torch ``Dataset``.

Layout of a dataset folder ``<root>`` (DESIGN.md, "On disk"; see also ``data/README.md``)::

    <root>/dataset.json     what generated it: format_version, seed (base seed), num_clips,
                            splits (fractions), split_seed, sim (every SimConfig field:
                            family, height, width, num_frames, fov_deg, ..., device) and
                            library (versions; informational, not compared on resume)
    <root>/manifest.jsonl   one JSON line per finished clip (sorted by id once the writer
                            ends): id, index, split, file, family, seed, shape [T, H, W],
                            prompt, action, sha256, bytes
    <root>/clips/<id>.npz   one ``Clip.save`` file per clip; id = "<family>_<index:06d>",
                            e.g. "tabletop_000042"
    <root>/.lock            locked by a running writer, so two writers never share a folder

Guarantees:
- Deterministic: clip ``i`` is ``generate_clip(clip_seed(seed, i), sim)``; its split is a pure
  function of ``(split_seed, id)`` (``split_of``), so it never changes when the dataset grows
  or a run resumes. Files are bit-identical across runs on the same device and torch build.
- Atomic: workers write each npz to a temporary file and rename it into place; only the parent
  appends to the manifest (append, flush, fsync per line), after the clip's file is complete.
  A clip counts as done only when it is in the manifest *and* its file has the recorded size.
- Resumable: rerunning the same command finishes an interrupted run (a kill at any moment
  leaves at worst a torn last manifest line, stray ``*.tmp`` files or an npz without a manifest
  line; all are dropped or regenerated). Different settings in the same folder are refused.

Modules: ``splits`` (ids and splits), ``manifest`` (settings, manifest, verification), ``writer``
(the parallel writer and ``SimJob``), ``shards`` (``--shard i/N``, ``momap merge``),
``dataset`` (the torch ``Dataset``), ``examples`` (example
scene folders: one image with its depth, instances, intrinsics and prompt).
"""

from momaplib.data.dataset import MoMapDataset, collate, model_inputs
from momaplib.data.examples import (
    DEPTH_FILE,
    EXAMPLES_DIR,
    FORMAT_VERSION,
    GT_FILE,
    GT_KEYS,
    IMAGE_FILE,
    INSTANCE_FILES,
    PROMPT_FILE,
    SCENE_FILE,
    Example,
    find_examples,
    load_example,
    save_example,
)
from momaplib.data.manifest import (
    CLIPS_DIR,
    DATASET_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFEST_KEYS,
    MAX_DEFAULT_WORKERS,
    SHARDS_DIR,
    SPLITS,
    DatasetSettingsError,
    VerifyReport,
    check_clip_file,
    check_settings,
    library_versions,
    load_manifest,
    load_settings,
    manifest_line,
    read_manifest,
    verify_dataset,
)
from momaplib.data.shards import (
    MergeJob,
    MergeReport,
    format_shard,
    merge_dataset,
    parse_shard,
    resolve_shard,
    shard_lock,
    shard_manifest,
)
from momaplib.data.splits import (
    check_splits,
    clip_family,
    clip_id,
    simulate_split_clips,
    simulate_split_videos,
    split_indices,
    split_of,
)
from momaplib.data.writer import SimJob, WriteReport, default_workers, parallel_map, write_dataset

__all__ = [
    "CLIPS_DIR",
    "DATASET_FILE",
    "DEPTH_FILE",
    "EXAMPLES_DIR",
    "FORMAT_VERSION",
    "GT_FILE",
    "GT_KEYS",
    "IMAGE_FILE",
    "INSTANCE_FILES",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MANIFEST_KEYS",
    "MAX_DEFAULT_WORKERS",
    "PROMPT_FILE",
    "SCENE_FILE",
    "SHARDS_DIR",
    "SPLITS",
    "DatasetSettingsError",
    "Example",
    "MergeJob",
    "MergeReport",
    "MoMapDataset",
    "SimJob",
    "VerifyReport",
    "WriteReport",
    "check_clip_file",
    "check_settings",
    "check_splits",
    "clip_family",
    "clip_id",
    "collate",
    "default_workers",
    "find_examples",
    "format_shard",
    "library_versions",
    "load_example",
    "load_manifest",
    "load_settings",
    "manifest_line",
    "merge_dataset",
    "model_inputs",
    "parallel_map",
    "parse_shard",
    "read_manifest",
    "resolve_shard",
    "save_example",
    "shard_lock",
    "shard_manifest",
    "simulate_split_clips",
    "simulate_split_videos",
    "split_indices",
    "split_of",
    "verify_dataset",
    "write_dataset",
]
