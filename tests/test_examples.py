"""Example scene folders: round trip, input checks with clear errors, and the bundled examples."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import momaplib.data.examples
from momaplib.data.examples import (
    EXAMPLES_DIR,
    GT_FILE,
    Example,
    find_examples,
    load_example,
    save_example,
)
from momaplib.geometry import depth_to_xyz
from momaplib.momap import MoMap, MoMapValidationError
from momaplib.sim import FAMILIES, SimConfig, generate_clip
from momaplib.storage import DataFormatError

SEED = 3


@pytest.fixture(scope="module")
def momap() -> MoMap:
    # egocentric: the camera moves, so ref_from_cam is not the identity
    return generate_clip(SEED, SimConfig(family="egocentric").smoke()).momap


def assert_gt_close(
    stored: MoMap, exact: MoMap, atol_m: float = 1e-6, rgb_levels: int = 0, visible_flips: float = 0.0
) -> None:
    """Checks a stored GT against the exact one: float16 displacements, everything else exact.

    ``atol_m``, ``rgb_levels`` and ``visible_flips`` (a fraction of the visibility flags, decided by
    a depth test at a tolerance) allow for another numpy/torch build re-simulating the clip.
    """
    motion = np.abs(exact.xyz - exact.xyz[:1])
    # float16 rounds a displacement by at most 2^-11 of itself; 1e-6 m covers the float32
    # rounding of the unprojected reference points
    assert np.all(
        np.abs(stored.xyz - exact.xyz)[:, exact.valid] <= (2**-11 * motion + atol_m)[:, exact.valid]
    )
    assert (stored.visible != exact.visible).mean() <= visible_flips
    np.testing.assert_allclose(stored.ref_from_cam, exact.ref_from_cam, rtol=0, atol=1e-9)
    for key in ("valid", "instance", "K"):
        np.testing.assert_array_equal(getattr(stored, key), getattr(exact, key), err_msg=key)
    assert np.abs(stored.rgb.astype(int) - exact.rgb.astype(int)).max() <= rgb_levels
    assert stored.prompt == exact.prompt and stored.meta == exact.meta


def test_round_trip_keeps_inputs_exactly_and_the_gt_within_float16(tmp_path, momap):
    folder = save_example(tmp_path / "scene", momap)
    assert sorted(path.name for path in folder.iterdir()) == [
        "depth.npy",
        "gt_momap.npz",
        "image.png",
        "instance.png",
        "prompt.txt",
        "scene.json",
    ]
    example = load_example(folder)
    assert example.name == "scene"
    np.testing.assert_array_equal(example.image, momap.rgb)
    np.testing.assert_array_equal(example.depth, momap.xyz[0, ..., 2])
    np.testing.assert_array_equal(example.instance, momap.instance)
    np.testing.assert_array_equal(example.K, momap.K)
    assert example.prompt == momap.prompt and example.meta == momap.meta
    assert example.image.dtype == np.uint8 and example.depth.dtype == np.float32
    assert example.instance.dtype == np.int32
    assert_gt_close(example.gt, momap)
    # the pipeline unprojects depth with K: the same reference points as the stored GT's xyz[0]
    inputs = example.pipeline_inputs()
    assert set(inputs) == {"image", "depth", "K", "instance_map", "prompt"}
    np.testing.assert_array_equal(depth_to_xyz(inputs["depth"], inputs["K"]), example.gt.xyz[0])
    assert example.momap() is example.gt


def test_example_without_gt_or_prompt_gives_a_one_frame_momap(tmp_path, momap):
    folder = save_example(tmp_path / "scene", momap)
    assert (folder / GT_FILE).is_file()
    # rewriting the folder without a GT or a prompt removes the old files
    save_example(folder, replace(momap, prompt=""), with_gt=False)
    assert not (folder / GT_FILE).exists() and not (folder / "prompt.txt").exists()
    example = load_example(folder)
    assert example.gt is None and example.prompt == "" and example.pipeline_inputs()["prompt"] is None
    one_frame = example.momap()
    assert one_frame.num_frames == 1 and one_frame.valid.all()
    np.testing.assert_allclose(one_frame.xyz[0], momap.xyz[0], atol=1e-6)


def test_user_example_with_large_ids_and_missing_depth_round_trips(tmp_path, momap):
    depth = momap.xyz[0, ..., 2].copy()
    depth[:4] = np.nan  # no geometry in the top rows
    instance = momap.instance.astype(np.int64) * 100_000  # ids above 16 bits go to instance.npy
    user = Example(image=momap.rgb, depth=depth, instance=instance, K=momap.K, prompt="lift the cup")
    folder = save_example(tmp_path / "mine", user)
    assert (folder / "instance.npy").is_file() and not (folder / "instance.png").exists()
    example = load_example(folder)
    np.testing.assert_array_equal(example.instance, instance)
    np.testing.assert_array_equal(example.depth, depth)  # NaN stays NaN
    assert not example.valid[:4].any() and example.valid[4:].all()
    assert example.momap().valid.sum() == example.valid.sum()


def test_an_interrupted_save_leaves_a_folder_that_is_refused(tmp_path, momap, monkeypatch):
    folder = save_example(tmp_path / "scene", momap)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(momaplib.data.examples, "save_npz", crash)
    with pytest.raises(KeyboardInterrupt):
        save_example(folder, momap)
    with pytest.raises(DataFormatError, match=r"scene\.json: file not found.*interrupted"):
        load_example(folder)
    assert find_examples(tmp_path) == {}  # not offered either


def _break(folder, what: str) -> None:
    """Damages one file of an example folder the way a user might get it wrong."""
    if what == "missing image":
        (folder / "image.png").unlink()
    elif what == "missing depth":
        (folder / "depth.npy").unlink()
    elif what == "missing instances":
        (folder / "instance.png").unlink()
    elif what == "depth of another size":
        np.save(folder / "depth.npy", np.ones((16, 24), np.float32))
    elif what == "depth in millimetres":
        np.save(folder / "depth.npy", np.full((32, 32), 1500, np.uint16))
    elif what == "negative depth":
        np.save(folder / "depth.npy", -np.ones((32, 32), np.float32))
    elif what == "float instance ids":
        (folder / "instance.png").unlink()
        np.save(folder / "instance.npy", np.zeros((32, 32), np.float32))
    elif what == "colour instance png":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "instance.png")
    elif what == "two instance maps":
        np.save(folder / "instance.npy", np.zeros((32, 32), np.int32))
    elif what == "instances of another size":
        Image.fromarray(np.zeros((32, 16), np.uint16)).save(folder / "instance.png")
    elif what == "16-bit image":
        Image.fromarray(np.zeros((32, 32), np.uint16)).save(folder / "image.png")
    elif what == "K not 3x3":
        (folder / "scene.json").write_text(json.dumps({"K": [[100, 0, 16], [0, 100, 16]]}))
    elif what == "truncated gt":
        data = (folder / GT_FILE).read_bytes()
        (folder / GT_FILE).write_bytes(data[: len(data) // 2])
    elif what == "gt of another size":
        arrays = dict(np.load(folder / GT_FILE))
        np.savez(folder / GT_FILE, **{**arrays, "motion": np.zeros((8, 16, 16, 3), np.float16)})
    else:
        raise KeyError(what)


BAD_INPUTS = {
    "missing image": r"image\.png: file not found; expected the reference RGB image",
    "missing depth": r"depth\.npy: file not found; expected \(32, 32\) float32 z-depth in metres",
    "missing instances": r"instance\.png: file not found \(nor instance\.npy\)",
    "depth of another size": r"depth\.npy: depth has shape \(16, 24\), expected \(H, W\) = \(32, 32\)",
    "depth in millimetres": r"depth\.npy: depth has dtype uint16; expected float32 metres",
    "negative depth": r"depth\.npy: depth must be >= 0",
    "float instance ids": r"instance\.npy: instance ids have dtype float32; expected \(32, 32\) integer",
    "colour instance png": r"instance\.png: a 'RGB' PNG; expected .* one channel",
    "two instance maps": r"both instance\.png and instance\.npy",
    "instances of another size": r"instance\.png: instance map has shape \(32, 16\), expected \(32, 32\)",
    "16-bit image": r"image\.png: image mode 'I;16'; expected an 8-bit RGB PNG",
    "K not 3x3": r"scene\.json: K must be 3x3",
    "truncated gt": r"gt_momap\.npz: not a readable \.npz file",
    "gt of another size": r"gt_momap\.npz: motion has shape \(8, 16, 16, 3\) .* expected \(T, 32, 32, 3\)",
}


@pytest.mark.parametrize("what", list(BAD_INPUTS))
def test_bad_inputs_are_refused_naming_the_file_and_what_was_expected(tmp_path, momap, what):
    folder = save_example(tmp_path / "scene", momap)
    _break(folder, what)
    with pytest.raises(DataFormatError, match=BAD_INPUTS[what]):
        load_example(folder)


def test_a_momap_not_anchored_at_its_depth_is_refused(tmp_path, momap):
    shifted = momap.xyz.copy()
    shifted[..., 0] += 0.1  # xyz[0] is no longer the unprojection of its depth
    with pytest.raises(MoMapValidationError, match=r"xyz\[0\]: not the unprojection of its depth"):
        save_example(tmp_path / "scene", replace(momap, xyz=shifted))
    assert not (tmp_path / "scene").exists()  # checked before anything is written
    with pytest.raises(DataFormatError, match="example folder not found"):
        load_example(tmp_path / "nowhere")


def test_bundled_examples_are_the_simulator_clips_of_their_seeds():
    examples = find_examples(EXAMPLES_DIR)
    assert len(examples) == 3
    families = []
    for name, folder in examples.items():
        example = load_example(folder)
        meta = example.meta
        assert meta["source"] == "MoMap-Sim" and name.startswith(meta["family"])
        families.append(meta["family"])
        sim = SimConfig(**{**meta["sim"], "actions": tuple(meta["sim"]["actions"])})
        assert (sim.height, sim.width, sim.num_frames) == (128, 128, 32)
        clip = generate_clip(meta["seed"], sim)
        exact = replace(clip.momap, meta=meta)  # the stored meta adds the source and config
        assert example.prompt == clip.prompt != ""
        # shading is float maths: another numpy/torch build may round a few pixels the other way
        difference = np.abs(example.image.astype(int) - clip.frames[0].astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
        np.testing.assert_allclose(example.depth, clip.depth[0], rtol=1e-4)
        np.testing.assert_array_equal(example.instance, clip.instances[0])
        assert_gt_close(example.gt, exact, atol_m=2e-5, rgb_levels=1, visible_flips=1e-4)
        assert example.gt.moving_mask().any()
        # the prompt names the object that moves: the target of the clip's task
        target = example.instance_names[clip.task.target_id]["name"]
        assert target in example.prompt
    assert sorted(families) == sorted(["tabletop", "tabletop", "egocentric"]) and set(families) == set(
        FAMILIES
    )
    size = sum(path.stat().st_size for path in EXAMPLES_DIR.rglob("*") if path.is_file())
    assert size < 4_000_000, f"data/examples/ takes {size} bytes; keep the bundled examples small"
