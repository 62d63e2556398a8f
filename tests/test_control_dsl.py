"""The motion DSL: known answers from synthetic MoMaps, exact JSON and pixel round trips on simulated
clips of both families, schema errors that name the field, majority votes and ``dsl_accuracy``."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch

from momaplib.control import (
    DSL_SCHEMA,
    DSLValidationError,
    MotionDSL,
    PatchMotion,
    dsl_accuracy,
    dsl_from_momap,
    patch_centroids,
    window_bounds,
)
from momaplib.data import simulate_split_clips
from momaplib.metrics import quantize_displacements
from momaplib.momap import MoMap
from momaplib.sim import SimConfig
from tests.faults_control import BAD_JSON, good_dsl_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def moving_boxes(
    T: int = 9, moves: dict[int, dict[tuple[int, int], tuple[float, float, float]]] | None = None
):
    """Returns a 12 x 12 MoMap on a plane at z = 2 m with three 4 x 4 boxes (ids 1, 2, 3).

    ``moves[id][(t0, t1)] = (dx, dy, dz)`` moves a box linearly by that many metres from frame t0
    to t1 (and keeps it there).
    """
    H = W = 12
    instance = np.zeros((H, W), np.int32)
    instance[1:5, 1:5], instance[1:5, 7:11], instance[7:11, 4:8] = 1, 2, 3
    focal = 10.0
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = np.full((H, W), 2.0, np.float32)
    xyz0 = np.stack([(u - 5.5) / focal * depth, (v - 5.5) / focal * depth, depth], -1)
    xyz = np.repeat(xyz0[None], T, 0)
    for patch_id, segments in (moves or {}).items():
        for (t0, t1), delta in segments.items():
            ramp = np.clip((np.arange(T) - t0) / (t1 - t0), 0, 1).astype(np.float32)
            xyz[:, instance == patch_id] += ramp[:, None, None] * np.array(delta, np.float32)
    return MoMap(
        xyz=xyz,
        valid=np.ones((H, W), bool),
        visible=np.ones((T, H, W), bool),
        rgb=np.zeros((H, W, 3), np.uint8),
        instance=instance,
        K=np.array([[focal, 0, 5.5], [0, focal, 5.5], [0, 0, 1]], np.float32),
        ref_from_cam=np.repeat(np.eye(4, dtype=np.float32)[None], T, 0),
        meta={"instances": {"1": {"name": "red block", "role": "target"}, "2": {"name": "blue cup"}}},
    )


# ----------------------------------------------------------------------------- known answers
def test_one_box_moving_right_in_the_second_window_is_right_there_and_stays_elsewhere():
    # s = 2 m, tau = 0.01: a component counts above 2 cm; box 2 moves 1 cm (stays), box 3 goes up
    # then away from the camera
    momap = moving_boxes(
        T=9,
        moves={
            1: {(4, 8): (0.2, 0, 0)},
            2: {(0, 8): (0.01, 0, 0)},
            3: {(0, 4): (0, -0.1, 0), (4, 8): (0, 0, 0.3)},
        },
    )
    dsl = dsl_from_momap(momap, window=4, tau=0.01, fps=5.0)
    assert dsl.window == 4 and dsl.num_windows == 2 and dsl.fps == 5.0
    assert dsl.ids == [1, 2, 3] and dsl.labels == {1: "red block", 2: "blue cup", 3: "patch 3"}
    assert dsl.patch(1).motion == [("stay", "stay", "stay"), ("right", "stay", "stay")]
    assert dsl.patch(2).motion == [("stay", "stay", "stay")] * 2
    assert dsl.patch(3).motion == [("stay", "up", "stay"), ("stay", "stay", "forward")]
    flags = dsl.flags()
    assert flags.dtype == np.int8 and flags.shape == (3, 2, 3)
    np.testing.assert_array_equal(flags[2], [[0, -1, 0], [0, 0, 1]])


def test_the_threshold_is_relative_to_the_scene_scale_and_opposite_moves_flip_the_words():
    momap = moving_boxes(T=5, moves={1: {(0, 4): (-0.03, 0.03, -0.03)}})  # 1.5 % of s = 2 m
    assert dsl_from_momap(momap, window=4, tau=0.01).patch(1).motion == [("left", "down", "backward")]
    assert dsl_from_momap(momap, window=4, tau=0.02).patch(1).motion == [("stay", "stay", "stay")]


def test_windows_cover_the_clip_and_match_the_metric_where_it_has_them():
    assert window_bounds(9, 4) == [(0, 4), (4, 8)]
    assert window_bounds(10, 4) == [(0, 4), (4, 8), (8, 9)]  # a shorter last window
    assert window_bounds(3, 8) == [(0, 2)]
    with pytest.raises(DSLValidationError, match="window: expected an integer >= 1"):
        window_bounds(8, 0)
    # where T - 1 is a multiple of the window, the flags are the metric's quantize_displacements
    momap = moving_boxes(T=9, moves={1: {(2, 7): (0.2, -0.1, 0.05)}, 3: {(0, 3): (0, 0.05, -0.2)}})
    _, centroids = patch_centroids(momap.xyz, momap.valid, momap.instance)
    curves = torch.from_numpy(centroids / momap.scene_scale).permute(1, 0, 2)  # (P, T, 3)
    expected = quantize_displacements(curves, 4, 0.01).numpy()
    np.testing.assert_array_equal(dsl_from_momap(momap, window=4).flags(), expected)
    # a last window the metric leaves out still describes the end of the clip
    late = moving_boxes(T=10, moves={1: {(8, 9): (0.2, 0, 0)}})
    assert dsl_from_momap(late, window=4).patch(1).motion[-1] == ("right", "stay", "stay")


def test_an_instance_map_argument_and_labels_override_the_momaps():
    momap = moving_boxes(T=5, moves={1: {(0, 4): (0.2, 0, 0)}})
    merged = np.where(momap.instance == 2, 1, momap.instance)  # boxes 1 and 2 as one patch
    dsl = dsl_from_momap(momap, instance_map=merged, window=4, labels={1: "two boxes"})
    assert dsl.ids == [1, 3] and dsl.patch(1).label == "two boxes"
    assert dsl.patch(1).motion == [("right", "stay", "stay")]  # centroid moves 0.1 m > 2 cm


# ----------------------------------------------------------------------------- round trips on sim clips
@functools.cache
def sim_clips(family: str):
    return simulate_split_clips(family, 8, seed=0, config=SimConfig().smoke(), split="test", progress=False)


@pytest.mark.parametrize("window", [2, 3])
def test_json_and_pixel_round_trips_are_exact_on_simulated_clips(family, window):
    moving = 0
    for _, momap in sim_clips(family):
        dsl = dsl_from_momap(momap, window=window)
        assert dsl.num_windows == len(window_bounds(momap.num_frames, window))
        assert set(dsl.ids) == set(np.unique(momap.instance[momap.instance > 0]).tolist())
        text = dsl.to_json()
        assert MotionDSL.from_json(text) == dsl and MotionDSL.from_json(text).to_json() == text
        assert MotionDSL.from_json(dsl.to_json(indent=2)) == dsl
        pixels = dsl.to_pixels(momap.instance)
        assert pixels.dtype == np.float32 and pixels.shape == (3 * dsl.num_windows, *momap.instance.shape)
        assert set(np.unique(pixels).tolist()) <= {-1.0, 0.0, 1.0}
        assert (pixels[:, momap.instance == 0] == 0).all()
        back = MotionDSL.from_pixels(pixels, momap.instance, window, fps=dsl.fps, labels=dsl.labels)
        assert back == dsl
        as_tensor = MotionDSL.from_pixels(torch.from_numpy(pixels), torch.from_numpy(momap.instance), window)
        np.testing.assert_array_equal(as_tensor.flags(), dsl.flags())
        moving += int((dsl.flags() != 0).any())
    assert moving == 8  # every clip has a moving target and agent: the round trips carried real flags


def test_pixels_are_painted_per_patch_in_channel_order():
    dsl = MotionDSL(10.0, 4, [PatchMotion(2, "a", [("left", "stay", "stay"), ("stay", "down", "forward")])])
    instance = np.array([[0, 2], [2, 5]])
    pixels = dsl.to_pixels(instance)  # id 5 has no patch: 0
    np.testing.assert_array_equal(pixels[:, 0, 1], [-1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(pixels[:, 1, 1], 0)
    np.testing.assert_array_equal(pixels[:, 0, 0], 0)


def test_from_pixels_votes_per_patch_and_ties_go_to_stay():
    instance = np.zeros((4, 5), np.int64)
    instance[:, :3], instance[:, 3:] = 1, 2
    pixels = np.zeros((3, 4, 5), np.float32)
    pixels[0, :3, :3] = 1.0  # patch 1, x: 9 of 12 pixels right
    pixels[1, :, 3] = -0.8  # patch 2, y: 4 of 8 up, 4 stay: a tie -> stay
    pixels[2, :, 3:] = 0.9  # patch 2, z: all forward (rounded)
    dsl = MotionDSL.from_pixels(pixels, instance, window=5, labels={1: "one"})
    assert dsl.labels == {1: "one", 2: "patch 2"}
    assert dsl.patch(1).motion == [("right", "stay", "stay")]
    assert dsl.patch(2).motion == [("stay", "stay", "forward")]


# ----------------------------------------------------------------------------- errors that name the field
def test_the_bad_json_table_has_ten_kinds_and_each_names_its_field():
    assert len(BAD_JSON) >= 10
    for _, text, fragment in BAD_JSON:
        with pytest.raises(DSLValidationError) as raised:
            MotionDSL.from_json(text)
        assert fragment in str(raised.value)


def test_the_wrong_word_error_is_exact():
    data = good_dsl_dict(num_patches=3)
    data["patches"][2]["motion"][1][0] = "lft"
    with pytest.raises(DSLValidationError) as raised:
        MotionDSL.from_json(json.dumps(data))
    assert str(raised.value) == "patches[2].motion[1][0]: expected one of left/stay/right, got 'lft'"


def test_fields_are_checked_on_construction_too():
    with pytest.raises(DSLValidationError, match=r"patches\[0\]\.motion\[0\]\[2\]: expected one of backward"):
        MotionDSL(10.0, 8, [PatchMotion(1, "a", [("left", "up", "away")])])
    with pytest.raises(DSLValidationError, match=r"patches\[1\]: expected a PatchMotion"):
        MotionDSL(10.0, 8, [PatchMotion(1, "a", [("left", "up", "forward")]), {"id": 2}])
    assert MotionDSL(
        np.float64(10), np.int64(8), [PatchMotion(np.int64(1), "a", [("left", "up", "forward")])]
    )


def test_validation_against_an_instance_map():
    dsl = MotionDSL.from_dict(good_dsl_dict(num_patches=2))  # ids 1, 2; 2 windows
    instance = np.array([[0, 1], [2, 3]])
    assert dsl.validate_against(instance, num_windows=2) is dsl
    with pytest.raises(DSLValidationError, match=r"patches\[1\]\.id: unknown patch id 2"):
        dsl.validate_against(np.array([[0, 1], [3, 3]]))
    with pytest.raises(DSLValidationError, match=r"patches\[0\]\.motion: expected 4 windows, got 2"):
        dsl.validate_against(instance, num_windows=4)
    with pytest.raises(DSLValidationError, match=r"patches: no patch for instance id\(s\) \[3\]"):
        dsl.validate_against(instance, complete=True)
    with pytest.raises(DSLValidationError, match="unknown patch id 2"):
        dsl.to_pixels(np.array([[0, 1]]))
    with pytest.raises(DSLValidationError, match=r"instance_map: expected \(H, W\) integer ids"):
        dsl.to_pixels(np.zeros((2, 2), np.float32))


def test_schema_is_the_published_one():
    assert MotionDSL.json_schema() is DSL_SCHEMA
    assert DSL_SCHEMA["required"] == ["fps", "window", "patches"]
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(DSL_SCHEMA)


# ----------------------------------------------------------------------------- accuracy
def test_dsl_accuracy_known_answers():
    gt = MotionDSL.from_flags([1, 2], ["a", "b"], [[[1, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]], window=4)
    pred_flags = [[[0, 0, 0], [0, 0, 0]], [[1, 0, 0], [0, -1, 0]]]  # listed as patches 2, 1
    pred = MotionDSL.from_flags([2, 1], ["b", "a"], pred_flags, window=4)
    result = dsl_accuracy(pred, gt)
    # patch 1: only y of window 1 differs (5 of 6 flags); patch 2: 6 of 6
    assert result["accuracy"] == pytest.approx(11 / 12)
    assert (result["x"], result["y"], result["z"]) == pytest.approx((1.0, 3 / 4, 1.0))
    assert result["moving_accuracy"] == pytest.approx(5 / 6)  # patch 1 is the only one that moves
    assert result["num_patches"] == 2 and result["num_windows"] == 2
    assert dsl_accuracy(gt, gt)["accuracy"] == 1.0
    still = MotionDSL.from_flags([1], ["a"], np.zeros((1, 2, 3)), window=4)
    assert math.isnan(dsl_accuracy(still, still)["moving_accuracy"])
    with pytest.raises(DSLValidationError, match=r"missing \[2\], extra \[\]"):
        dsl_accuracy(still, gt)
    with pytest.raises(DSLValidationError, match=r"pred\.window"):
        dsl_accuracy(MotionDSL.from_flags([1, 2], ["a", "b"], np.zeros((2, 2, 3)), window=8), gt)
