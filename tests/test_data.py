"""Datasets on disk: deterministic, atomic and resumable writing, verification, and model-ready items."""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from momaplib.data import (
    DatasetSettingsError,
    MoMapDataset,
    clip_family,
    clip_id,
    collate,
    load_manifest,
    split_indices,
    split_of,
    verify_dataset,
    write_dataset,
)
from momaplib.momap import (
    MoMapValidationError,
    channels_to_xyz,
    denormalize_xyz,
    normalization_stats,
)
from momaplib.sim import Clip, SimConfig, clip_seed, generate_clip
from momaplib.storage import DataFormatError, load_npz, save_npz, sha256_file

# Egocentric: a moving camera, so ref_from_cam is not the identity.
TINY = SimConfig(family="egocentric", height=24, width=24, num_frames=5)
NUM_CLIPS = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Returns a small complete dataset folder; tests that change it work on a copy."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    write_dataset(root, TINY, NUM_CLIPS, seed=3, workers=0, progress=False)
    return root


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    """Returns a private copy of the ``dataset`` folder."""
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


def _lines(root: Path) -> list[str]:
    return (root / "manifest.jsonl").read_text().splitlines()


# ----------------------------------------------------------------------------- writing
def test_written_clips_equal_generate_clip_bit_for_bit(dataset):
    entries = load_manifest(dataset)
    assert [entry["id"] for entry in entries] == [clip_id("egocentric", i) for i in range(NUM_CLIPS)]
    settings = json.loads((dataset / "dataset.json").read_text())
    assert settings["sim"]["height"] == 24 and settings["seed"] == 3 and settings["num_clips"] == NUM_CLIPS
    for i, entry in enumerate(entries):
        path = dataset / entry["file"]
        assert entry["seed"] == clip_seed(3, i)
        assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size
        expected = generate_clip(clip_seed(3, i), TINY)
        assert entry["shape"] == [5, 24, 24] and entry["prompt"] == expected.prompt
        assert entry["action"] == expected.task.action
        loaded = Clip.load(path).to_arrays()
        for key, value in expected.to_arrays().items():
            if isinstance(value, np.ndarray):
                assert loaded[key].dtype == value.dtype, key
                np.testing.assert_array_equal(loaded[key], value, err_msg=key)
            else:
                assert loaded[key] == value, key
    assert not list(dataset.rglob("*.tmp"))


def test_split_indices_continue_the_split_of_a_dataset_past_its_size():
    for family, in_dataset in (("tabletop", 117), ("egocentric", 110)):
        indices = split_indices(family, 130, "test")
        assert len(indices) == 130 and indices == sorted(set(indices))
        assert all(split_of(clip_id(family, i)) == "test" for i in indices)
        # a 2,500-clip dataset (the bundled checkpoints' data) holds the first `in_dataset` of them
        expected = [i for i in range(2500) if split_of(clip_id(family, i)) == "test"]
        assert indices[:in_dataset] == expected and indices[in_dataset] >= 2500
        assert split_indices(family, 5, "test", first_index=indices[3]) == indices[3:8]
        assert not set(split_indices(family, 20, "val")) & set(indices)
    with pytest.raises(ValueError, match="split"):
        split_indices("tabletop", 3, "tset")


def test_a_clip_id_names_its_family_with_or_without_a_variant():
    assert clip_id("egocentric", 42, task_variant=1) == "egocentric_000042_v1"
    assert [clip_family(clip_id(f, 7, v)) for f in ("tabletop", "egocentric") for v in (0, 2)] == [
        "tabletop", "tabletop", "egocentric", "egocentric"
    ]  # fmt: skip
    assert clip_family(clip_id("tabletop", 3) + "_m1") == "tabletop"  # a streamed motion variant


def test_splits_are_a_pure_function_of_the_id_and_stable_when_the_dataset_grows(tmp_path):
    ids = [clip_id("tabletop", i) for i in range(4000)]
    splits = [split_of(i, split_seed=0) for i in ids]
    assert splits == [split_of(i, split_seed=0) for i in ids]
    counts = {name: splits.count(name) / len(ids) for name in ("train", "val", "test")}
    assert counts["train"] == pytest.approx(0.9, abs=0.02)
    assert counts["val"] == pytest.approx(0.05, abs=0.015) and counts["test"] == pytest.approx(
        0.05, abs=0.015
    )
    other_seed = [split_of(i, split_seed=1) for i in ids]
    assert sum(a != b for a, b in zip(splits, other_seed, strict=True)) > 200
    assert {split_of(i, 0, (0.0, 0.0, 1.0)) for i in ids[:100]} == {"test"}
    with pytest.raises(ValueError, match="summing to 1"):
        split_of(ids[0], 0, (0.5, 0.2, 0.2))

    config = SimConfig(height=24, width=24, num_frames=4)
    first = write_dataset(tmp_path, config, 4, splits=(0.5, 0.25, 0.25), workers=0, progress=False)
    before = load_manifest(tmp_path)
    grown = write_dataset(tmp_path, config, 7, splits=(0.5, 0.25, 0.25), workers=0, progress=False)
    after = load_manifest(tmp_path)
    assert (first.generated, grown.generated, grown.already_done) == (4, 3, 4)
    assert after[:4] == before and len(after) == 7
    assert [e["split"] for e in after] == [split_of(e["id"], 0, (0.5, 0.25, 0.25)) for e in after]
    assert len({e["split"] for e in after}) > 1  # the check above is not vacuous
    assert verify_dataset(tmp_path).num_clips == 7
    with pytest.raises(DatasetSettingsError, match="num_clips is 7 there but 5 here"):
        write_dataset(tmp_path, config, 5, splits=(0.5, 0.25, 0.25), workers=0, progress=False)


def test_rerunning_a_complete_dataset_does_nothing_and_says_so(copy, capsys):
    manifest = (copy / "manifest.jsonl").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in (copy / "clips").iterdir()}
    report = write_dataset(copy, TINY, NUM_CLIPS, seed=3, workers=0, progress=True)
    assert (report.generated, report.already_done, report.num_clips) == (0, NUM_CLIPS, NUM_CLIPS)
    assert "nothing to do" in capsys.readouterr().out
    assert (copy / "manifest.jsonl").read_bytes() == manifest
    assert {p: p.stat().st_mtime_ns for p in (copy / "clips").iterdir()} == mtimes


def test_a_dataset_from_before_a_new_sim_field_resumes_with_its_default(copy):
    import json
    from dataclasses import replace

    settings = json.loads((copy / "dataset.json").read_text())
    for name in ("motion_variant", "camera_randomisation", "sensor"):  # fields added later
        settings["sim"].pop(name)
    (copy / "dataset.json").write_text(json.dumps(settings))
    report = write_dataset(copy, TINY, NUM_CLIPS, seed=3, workers=0, progress=False)
    assert report.already_done == NUM_CLIPS
    with pytest.raises(DatasetSettingsError, match=r"sim\.motion_variant is 0 there but 1 here"):
        write_dataset(copy, replace(TINY, motion_variant=1), NUM_CLIPS, seed=3, workers=0)


def test_other_settings_in_the_same_folder_are_refused_naming_the_field(copy, tmp_path):
    settings = (copy / "dataset.json").read_bytes()
    with pytest.raises(DatasetSettingsError, match=r"sim\.height is 24 there but 32 here"):
        write_dataset(copy, SimConfig(family="egocentric", height=32, width=24, num_frames=5), 8, seed=3)
    with pytest.raises(
        DatasetSettingsError, match=r"(?s)seed is 3 there but 4 here.*split_seed is 0 there but 1"
    ):
        write_dataset(copy, TINY, NUM_CLIPS, seed=4, split_seed=1)
    with pytest.raises(DatasetSettingsError, match=r"sim\.family is 'egocentric' there but 'tabletop' here"):
        write_dataset(copy, SimConfig(height=24, width=24, num_frames=5), NUM_CLIPS, seed=3)
    assert (copy / "dataset.json").read_bytes() == settings
    assert len(_lines(copy)) == NUM_CLIPS

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(
        DataFormatError, match=r"not empty and has no dataset\.json \(found \['todo\.txt'\]\)"
    ):
        write_dataset(tmp_path / "notes", TINY, 2, workers=0, progress=False)
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]  # untouched


def test_an_entry_without_its_newline_counts_and_the_manifest_ends_sorted(copy):
    lines = _lines(copy)
    # Workers finished out of order, and the run was killed after the last clip's JSON but
    # before its newline and the final sorted rewrite: every clip is done all the same.
    (copy / "manifest.jsonl").write_text("\n".join(lines[::-1]))
    report = write_dataset(copy, TINY, NUM_CLIPS, seed=3, workers=0, progress=False)
    assert (report.already_done, report.generated) == (NUM_CLIPS, 0)
    assert _lines(copy) == lines and (copy / "manifest.jsonl").read_text().endswith("}\n")


def test_a_second_writer_on_the_same_folder_is_refused(copy):
    with open(copy / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="another `momap sim` is writing this dataset"):
            write_dataset(copy, TINY, NUM_CLIPS, seed=3, workers=0, progress=False)


def test_resume_repairs_every_interrupted_state(copy, dataset):
    """A torn manifest line, stray temporary files, a partial npz and a missing file are all repaired."""
    original = load_manifest(dataset)
    lines = _lines(copy)
    # Clips 5-7: clip 5's line is torn mid-write, clips 6 and 7 never reached the manifest,
    # clip 6's file is half-written garbage, clip 2's file vanished after its line was written.
    torn = lines[5][: len(lines[5]) // 2]
    (copy / "manifest.jsonl").write_text("\n".join(lines[:5]) + "\n" + torn)
    (copy / "clips" / "egocentric_000006.npz").write_bytes(b"PK\x03\x04 half a zip")
    (copy / "clips" / "egocentric_000002.npz").unlink()
    (copy / "clips" / ".egocentric_000007.npz.abc123.tmp").write_bytes(b"partial")
    (copy / ".manifest.jsonl.xyz.tmp").write_text("partial")

    with pytest.warns(UserWarning, match="torn last line"):
        assert [e["id"] for e in load_manifest(copy)] == [e["id"] for e in original[:5]]
    with pytest.raises(DataFormatError, match=r"manifest\.jsonl:6: .*torn last line"):
        verify_dataset(copy)

    report = write_dataset(copy, TINY, NUM_CLIPS, seed=3, workers=0, progress=False)
    assert (report.already_done, report.generated) == (4, 4)  # clips 0, 1, 3, 4 were done
    assert load_manifest(copy) == original  # same entries and hashes: bit-identical clips
    assert verify_dataset(copy).extra_files == []
    assert not list(copy.rglob("*.tmp"))


@pytest.mark.timeout(120)
def test_killing_momap_sim_and_rerunning_gives_a_complete_verified_dataset(tmp_path):
    root = tmp_path / "killed"
    num_clips = 32
    command = [
        sys.executable, "-m", "momaplib.cli", "sim", "--family", "tabletop", "--num-clips", str(num_clips),
        "--height", "24", "--width", "24", "--num-frames", "4", "--seed", "7", "--workers", "2",
        "--out", str(root), "--no-progress", "--no-verify",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = root / "manifest.jsonl"
    deadline = time.monotonic() + 90
    while not (manifest.exists() and manifest.read_bytes().count(b"\n") >= 3):
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no clip was written in 90 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    time.sleep(0.2)  # the workers die with their parent (PR_SET_PDEATHSIG); let the kernel reap them
    done_at_kill = manifest.read_bytes().count(b"\n")
    assert 3 <= done_at_kill < num_clips, "the run finished before the kill; raise num_clips"
    # Every complete manifest line already points at a complete file: nothing half-written is accepted.
    for entry in load_manifest(root):
        assert sha256_file(root / entry["file"]) == entry["sha256"], entry["id"]
    with pytest.raises(DataFormatError, match="not in the manifest"):
        verify_dataset(root)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{num_clips} clips" in rerun.stdout
    already_done = int(rerun.stdout.split("(")[-1].split(" were already done")[0])
    assert already_done >= done_at_kill
    report = verify_dataset(root)
    assert report.num_clips == num_clips and report.extra_files == []
    ids = [line["id"] for line in map(json.loads, _lines(root))]
    assert ids == sorted(set(ids)) and len(ids) == num_clips
    assert not list(root.rglob("*.tmp"))
    assert sorted(p.name for p in (root / "clips").iterdir()) == [f"{i}.npz" for i in ids]

    fresh = tmp_path / "fresh"
    config = SimConfig(family="tabletop", height=24, width=24, num_frames=4)
    write_dataset(fresh, config, num_clips, seed=7, workers=0, progress=False)
    assert load_manifest(root) == load_manifest(fresh)  # same sha256 per clip: bit-identical files


# ----------------------------------------------------------------------------- verification
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_clip_file_is_reported_naming_the_clip_and_both_hashes(copy, damage):
    entry = load_manifest(copy)[3]
    path = copy / entry["file"]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2 : len(data) // 2 + 8] = bytes(
            b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 8]
        )
    path.write_bytes(bytes(data))
    actual = sha256_file(path)

    with pytest.raises(
        DataFormatError, match=rf"(?s)clip {entry['id']}: .*{actual}.*{entry['sha256']}"
    ) as caught:
        verify_dataset(copy)
    assert "1 problem" in str(caught.value)
    dataset = MoMapDataset(copy, split=None, verify=True)
    dataset[2]  # undamaged clips still load
    with pytest.raises(
        DataFormatError, match=rf"clip {entry['id']}: .*{actual} but the manifest says {entry['sha256']}"
    ):
        dataset[3]
    # Without the hash check the npz reader itself refuses the file, naming it.
    with pytest.raises(DataFormatError, match=rf"{entry['id']}\.npz: not a readable \.npz file"):
        MoMapDataset(copy, split=None)[3]


def test_verify_reports_duplicates_missing_clips_and_extra_files(copy):
    lines = _lines(copy)
    (copy / "clips" / "stray.npz").write_bytes(b"not in the manifest")
    with pytest.warns(UserWarning, match="not named by the manifest"):
        assert verify_dataset(copy).extra_files == ["clips/stray.npz"]

    (copy / "manifest.jsonl").write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DataFormatError, match="clip egocentric_000001: appears more than once"):
        verify_dataset(copy)
    with pytest.raises(DataFormatError, match="clip egocentric_000001 appears twice"):
        load_manifest(copy)

    (copy / "manifest.jsonl").write_text("\n".join(lines[:6]) + "\n")
    with pytest.raises(
        DataFormatError, match=r"2 of 8 clips are not in the manifest \(e\.g\. \['egocentric_000006'"
    ):
        verify_dataset(copy)

    entry = json.loads(lines[0])
    (copy / "manifest.jsonl").write_text("\n".join([json.dumps({**entry, "seed": 1}), *lines[1:]]) + "\n")
    with pytest.raises(
        DataFormatError, match=rf"clip egocentric_000000 \(index 0\): seed 1 \(expected {entry['seed']}\)"
    ):
        verify_dataset(copy)


def test_invalid_momap_contents_are_reported_naming_the_field_and_file(copy):
    entry = load_manifest(copy)[1]
    path = copy / entry["file"]
    arrays = load_npz(path)
    v, u = np.argwhere(arrays["valid"])[0]
    xyz = arrays["xyz"].copy()
    xyz[2, v, u, 1] = np.nan
    save_npz(path, {**arrays, "xyz": xyz})
    dataset = MoMapDataset(copy, split=None)
    with pytest.raises(MoMapValidationError, match=rf"{entry['id']}\.npz: MoMap\.xyz: 1 non-finite values"):
        dataset[1]

    save_npz(path, {**arrays, "visible": arrays["visible"][:-1]})
    with pytest.raises(
        MoMapValidationError, match=r"MoMap\.visible: expected \(T, H, W\) = \(5, 24, 24\) bool"
    ):
        dataset[1]


# ----------------------------------------------------------------------------- torch Dataset
def test_dataset_items_are_model_ready_and_denormalise_to_the_clip(dataset):
    everything = MoMapDataset(dataset, split=None)
    splits = {name: MoMapDataset(dataset, split=name) for name in ("train", "val", "test")}
    assert len(everything) == NUM_CLIPS == sum(len(d) for d in splits.values())
    assert [e["id"] for e in splits["train"].entries] == [
        e["id"] for e in load_manifest(dataset) if e["split"] == "train"
    ]
    with pytest.raises(ValueError, match="split: expected one of"):
        MoMapDataset(dataset, split="training")

    T, H, W = 5, 24, 24
    for index in (0, 5):
        item = everything[index]
        clip = generate_clip(clip_seed(3, index), TINY)
        momap = clip.momap
        shapes = {
            key: (tuple(value.shape), value.dtype) for key, value in item.items() if torch.is_tensor(value)
        }
        assert shapes == {
            "momap": ((3 * T, H, W), torch.float32),
            "xyz0": ((3, H, W), torch.float32),
            "center": ((3,), torch.float32),
            "scale": ((), torch.float32),
            "rgb": ((3, H, W), torch.float32),
            "instance": ((H, W), torch.int64),
            "valid": ((H, W), torch.bool),
            "observed": ((H, W), torch.bool),
            "visible": ((T, H, W), torch.bool),
            "K": ((3, 3), torch.float32),
            "ref_from_cam": ((T, 4, 4), torch.float32),
        }
        assert item["id"] == clip_id("egocentric", index) and item["prompt"] == clip.prompt
        center, scale = normalization_stats(momap.xyz[0], momap.valid)
        np.testing.assert_array_equal(item["center"].numpy(), center)
        assert float(item["scale"]) == float(scale) == momap.scene_scale
        valid = momap.valid
        metres = denormalize_xyz(channels_to_xyz(item["momap"]), item["center"], item["scale"]).numpy()
        np.testing.assert_allclose(metres[:, valid], momap.xyz[:, valid], rtol=0, atol=1e-5)
        assert torch.equal(item["xyz0"], item["momap"][:3])
        assert not item["momap"].reshape(T, 3, H, W)[:, :, ~torch.from_numpy(valid)].any()
        # The scene scale is the median depth, so most of the scene lands in [-1, 1] (paper §3.3).
        assert float((item["momap"].abs() <= 1.5).float().mean()) > 0.95
        np.testing.assert_allclose(item["rgb"].numpy(), momap.rgb.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
        assert item["rgb"].min() >= -1 and item["rgb"].max() <= 1
        np.testing.assert_array_equal(item["instance"].numpy(), momap.instance)
        np.testing.assert_array_equal(item["valid"].numpy(), valid)
        np.testing.assert_array_equal(item["visible"].numpy(), momap.visible)
        np.testing.assert_array_equal(item["K"].numpy(), momap.K)
        np.testing.assert_array_equal(item["ref_from_cam"].numpy(), momap.ref_from_cam)
        assert not np.allclose(momap.ref_from_cam[-1], np.eye(4))  # egocentric: the camera moves

    for collate_fn in (None, collate):
        batch = next(iter(torch.utils.data.DataLoader(everything, batch_size=3, collate_fn=collate_fn)))
        assert batch["momap"].shape == (3, 3 * T, H, W) and batch["scale"].shape == (3,)
        assert batch["id"] == [clip_id("egocentric", i) for i in range(3)] and len(batch["prompt"]) == 3


def test_dataset_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(
        DataFormatError, match=r"no dataset\.json; expected a dataset folder written by `momap sim`"
    ):
        MoMapDataset(tmp_path)


# ----------------------------------------------------------------------------- paths and limits
def _rewrite_entry(root: Path, index: int, **changes) -> None:
    lines = _lines(root)
    lines[index] = json.dumps({**json.loads(lines[index]), **changes})
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "file", ["../outside.npz", "clips/../../outside.npz", "/tmp/outside.npz", "C:\\x.npz"]
)
def test_a_manifest_file_outside_the_folder_is_refused_by_every_reader(copy, file):
    shutil.copy(copy / "clips" / "egocentric_000001.npz", copy.parent / "outside.npz")  # readable, out there
    _rewrite_entry(copy, 1, file=file)
    for read in (load_manifest, lambda root: MoMapDataset(root, split=None)):
        with pytest.raises(
            DataFormatError, match=r"manifest\.jsonl:2: .*not a relative path inside its folder"
        ):
            read(copy)
    with pytest.raises(DataFormatError, match="not a relative path inside its folder"):
        verify_dataset(copy)
    with pytest.raises(DataFormatError, match="not a relative path inside its folder"):
        write_dataset(copy, TINY, NUM_CLIPS, seed=3, workers=0, progress=False)  # resume


def test_a_clip_file_that_is_a_symlink_out_of_the_folder_is_refused(copy, tmp_path):
    outside = tmp_path / "secret.npz"
    shutil.copy(copy / "clips" / "egocentric_000002.npz", outside)  # same bytes: hashes would pass
    link = copy / "clips" / "egocentric_000002.npz"
    link.unlink()
    link.symlink_to(outside)
    dataset = MoMapDataset(copy, split=None, verify=True)
    with pytest.raises(DataFormatError, match=r"clip egocentric_000002: file: .* leads outside"):
        dataset[2]
    with pytest.raises(DataFormatError, match=r"clip egocentric_000002: file: .* leads outside"):
        verify_dataset(copy)
    with pytest.raises(DataFormatError, match="leads outside"):
        write_dataset(copy, TINY, NUM_CLIPS, seed=3, workers=0, progress=False)
    inside = copy / "clips" / "egocentric_000003.npz"  # a link that stays inside is fine
    (copy / "elsewhere").mkdir()
    inside.rename(copy / "elsewhere" / inside.name)
    inside.symlink_to(copy / "elsewhere" / inside.name)
    assert dataset[3]["id"] == "egocentric_000003"


def test_a_manifest_id_that_is_not_a_file_name_is_refused(copy):
    _rewrite_entry(copy, 0, id="../../predictions")
    with pytest.raises(DataFormatError, match=r"manifest\.jsonl:1: .*id: expected a clip name"):
        load_manifest(copy)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_clips": 0}, r"num_clips: expected 1\.\.1000000, got 0"),
        ({"num_clips": 10**7}, r"num_clips: expected 1\.\.1000000"),
        ({"num_clips": 2.5}, r"num_clips: expected 1\.\.1000000, got 2\.5"),
        ({"num_clips": 2, "workers": 100_000}, r"workers: expected 0\.\.256"),
        ({"num_clips": 2, "seed": "3"}, r"seed: expected an integer"),
        ({"num_clips": 2, "splits": (0.5, 0.5, 0.5)}, r"splits: expected 3 fractions"),
    ],
)
def test_write_dataset_checks_its_arguments_before_writing_anything(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        write_dataset(tmp_path / "out", TINY, **{"workers": 0, "progress": False, **options})
    assert not (tmp_path / "out").exists()


def test_model_inputs_take_the_reference_xyz_as_a_sensor_saw_it(tmp_path):
    from momaplib.data import MoMapDataset, model_inputs
    from momaplib.momap import normalization_stats, normalize_xyz
    from momaplib.sim import generate_clip
    from momaplib.sim.sensor import observed_xyz

    config = SimConfig(height=32, width=32, num_frames=4, sensor="structured-light")
    clip = generate_clip(5, config)
    exact = model_inputs(clip.momap)
    noisy = model_inputs(clip.momap, clip.depth[0])
    seen_xyz, seen = observed_xyz(clip.depth[0], clip.K)
    assert 0 < (~seen).sum() < seen.size and torch.equal(noisy["observed"], torch.from_numpy(seen))
    # statistics of what was observed, as the pipeline computes them from its input
    center, scale = normalization_stats(torch.from_numpy(seen_xyz), torch.from_numpy(seen))
    expected = normalize_xyz(torch.from_numpy(seen_xyz)[None], center, scale)[0][seen].T
    torch.testing.assert_close(noisy["xyz0"][:, torch.from_numpy(seen)], expected)
    assert noisy["xyz0"][:, torch.from_numpy(~seen)].abs().max() == 0  # holes: 0 like invalid pixels
    # the target stays the exact trajectories, in that normalisation
    gt = normalize_xyz(torch.from_numpy(clip.momap.xyz), center, scale)
    torch.testing.assert_close(noisy["momap"][3:6], gt[1].permute(2, 0, 1))
    assert (
        (noisy["xyz0"] - noisy["momap"][:3]).abs().max()
        > 1e-3
        > (exact["xyz0"] - exact["momap"][:3]).abs().max()
    )
    # an ideal sensor's depth gives back the exact inputs
    ideal = generate_clip(5, SimConfig(height=32, width=32, num_frames=4))
    torch.testing.assert_close(
        model_inputs(ideal.momap, ideal.depth[0])["xyz0"], exact["xyz0"], atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="observed_depth: 0 pixels have depth"):
        model_inputs(clip.momap, np.zeros_like(clip.depth[0]))

    write_dataset(tmp_path / "noisy", config, 4, workers=0, progress=False)
    item = MoMapDataset(tmp_path / "noisy", None)[0]
    stored = generate_clip(int(MoMapDataset(tmp_path / "noisy", None).entries[0]["seed"]), config)
    torch.testing.assert_close(item["xyz0"], model_inputs(stored.momap, stored.depth[0])["xyz0"])
