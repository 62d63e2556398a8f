"""Fault table of the motion DSL and its planners (``momaplib.control``).

Bad DSL JSON (``BAD_JSON``: malformed text and every kind of schema violation), bad pixel forms,
instance maps, ``dsl_from_momap`` arguments and prompts the planners cannot serve. Each must raise
an error that names the field, never default silently. Every case is fast: toy inputs only,
nothing simulated or loaded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from momaplib.control import (
    DSLValidationError,
    MotionDSL,
    OraclePlanner,
    PlannerError,
    RulePlanner,
    VLMPlanner,
    dsl_accuracy,
    dsl_from_momap,
    extract_json_object,
)
from tests.faults import Fault
from tests.test_metrics import toy_momap


def good_dsl_dict(num_patches: int = 2, num_windows: int = 2) -> dict:
    """Returns a valid DSL as a dict: patches 1..num_patches, each moving left then staying."""
    motion = [["left", "stay", "stay"]] + [["stay", "stay", "stay"]] * (num_windows - 1)
    return {
        "fps": 10.0,
        "window": 8,
        "patches": [
            {"id": i, "label": f"object {i}", "motion": copy.deepcopy(motion)}
            for i in range(1, num_patches + 1)
        ],
    }


def _changed(change) -> str:
    """Returns the JSON text of ``good_dsl_dict()`` after ``change(data)`` edits it in place."""
    data = good_dsl_dict()
    change(data)
    return json.dumps(data)


def _set(path: tuple, value) -> str:
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return _changed(change)


def _drop(path: tuple) -> str:
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return _changed(change)


#: (what is wrong, JSON text, the part of the message that names the field and what was expected)
BAD_JSON: list[tuple[str, str, str]] = [
    (
        "not JSON at all",
        "push the red block left",
        "DSL JSON: not valid JSON (Expecting value at line 1 column 1)",
    ),
    ("truncated JSON", '{"fps": 10, "window": 8, "patches": [', "DSL JSON: not valid JSON"),
    ("NaN fps", '{"fps": NaN, "window": 8, "patches": []}', "DSL JSON: NaN is not JSON"),
    ("an array at the top", "[]", "(root): expected object, got array []"),
    ("window missing", _drop(("window",)), "window: missing (required)"),
    ("an extra top-level field", _set(("comment",), "hi"), "(root): unknown field(s) ['comment']"),
    ("fps = 0", _set(("fps",), 0), "fps: expected a number > 0, got 0"),
    ("fps as a string", _set(("fps",), "10"), "fps: expected number, got string '10'"),
    ("window = 2.5", _set(("window",), 2.5), "window: expected integer, got number 2.5"),
    ("window = 0", _set(("window",), 0), "window: expected a number >= 1, got 0"),
    ("no patches", _set(("patches",), []), "patches: expected at least 1 item(s), got 0"),
    (
        "patch id 0 (the background)",
        _set(("patches", 0, "id"), 0),
        "patches[0].id: expected a number >= 1, got 0",
    ),
    ("patch id true", _set(("patches", 0, "id"), True), "patches[0].id: expected integer, got boolean True"),
    ("an empty label", _set(("patches", 1, "label"), ""), "patches[1].label: expected a non-empty string"),
    ("a patch without label", _drop(("patches", 0, "label")), "patches[0].label: missing (required)"),
    ("an extra field in a patch", _set(("patches", 0, "speed"), 3), "patches[0]: unknown field(s) ['speed']"),
    (
        "a misspelt word",
        _set(("patches", 1, "motion", 1, 0), "lft"),
        "patches[1].motion[1][0]: expected one of left/stay/right, got 'lft'",
    ),
    (
        "a y word on the x axis",
        _set(("patches", 0, "motion", 0, 0), "up"),
        "patches[0].motion[0][0]: expected one of left/stay/right, got 'up'",
    ),
    (
        "a z word that is no direction",
        _set(("patches", 0, "motion", 0, 2), "away"),
        "patches[0].motion[0][2]: expected one of backward/stay/forward, got 'away'",
    ),
    (
        "two words in a window",
        _set(("patches", 0, "motion", 1), ["left", "up"]),
        "patches[0].motion[1]: expected at least 3 item(s), got 2",
    ),
    (
        "four words in a window",
        _set(("patches", 0, "motion", 1), ["left", "up", "stay", "stay"]),
        "patches[0].motion[1]: expected at most 3 item(s), got 4",
    ),
    (
        "a window as one string",
        _set(("patches", 0, "motion", 0), "left"),
        "patches[0].motion[0]: expected array, got string 'left'",
    ),
    (
        "no windows",
        _set(("patches", 0, "motion"), []),
        "patches[0].motion: expected at least 1 item(s), got 0",
    ),
    (
        "patches with different numbers of windows",
        _set(("patches", 1, "motion"), [["stay", "stay", "stay"]]),
        "patches[1].motion: expected 2 windows like patches[0], got 1",
    ),
    (
        "a duplicate patch id",
        _set(("patches", 1, "id"), 1),
        "patches[1].id: duplicate id 1 (also patches[0])",
    ),
]


def _from_json(text):
    return lambda tmp_path: MotionDSL.from_json(text)


GOOD = MotionDSL.from_dict(good_dsl_dict())  # ids 1, 2; 2 windows of 8 frames
INSTANCE = np.array([[0, 1, 1], [2, 2, 0]])
LABELS = {1: "red block", 2: "blue block", 3: "gripper"}
SCENE = np.array([[1, 1, 0, 2], [3, 0, 0, 2]])


def _rule(prompt: str, labels=LABELS):
    return lambda tmp_path: RulePlanner(num_frames=8, window=2).plan(None, SCENE, prompt, labels=labels)


def _vlm_from_file(tmp_path: Path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    return VLMPlanner(tmp_path / "weights.bin")


CASES = [
    Fault("MotionDSL.from_json", bad, _from_json(text), DSLValidationError, fragment)
    for bad, text, fragment in BAD_JSON
]
CASES += [
    Fault(
        "MotionDSL.from_json",
        "bytes that are not UTF-8",
        _from_json(b"\xff\xfe{"),
        DSLValidationError,
        "not UTF-8",
    ),
    Fault(
        "MotionDSL.from_json",
        "a dict instead of text",
        _from_json({"fps": 10}),
        DSLValidationError,
        "expected text, got dict",
    ),
    Fault(
        "MotionDSL.validate_against",
        "a patch id not in the instance map",
        lambda tmp_path: GOOD.validate_against(np.array([[0, 1], [3, 3]])),
        DSLValidationError,
        "patches[1].id: unknown patch id 2",
    ),
    Fault(
        "MotionDSL.to_pixels",
        "negative instance ids",
        lambda tmp_path: GOOD.to_pixels(-INSTANCE),
        DSLValidationError,
        "instance_map: ids must be >= 0",
    ),
    Fault(
        "MotionDSL.from_pixels",
        "4 channels (not 3 per window)",
        lambda tmp_path: MotionDSL.from_pixels(np.zeros((4, 2, 3)), INSTANCE, window=8),
        DSLValidationError,
        "pixels: expected (3 * n_windows, H, W), got shape (4, 2, 3)",
    ),
    Fault(
        "MotionDSL.from_pixels",
        "pixels of another size than the instance map",
        lambda tmp_path: MotionDSL.from_pixels(np.zeros((3, 3, 2)), INSTANCE, window=8),
        DSLValidationError,
        "pixels: expected (H, W) = (2, 3) like the instance map",
    ),
    Fault(
        "MotionDSL.from_pixels",
        "NaN pixels",
        lambda tmp_path: MotionDSL.from_pixels(
            np.pad(np.full((1, 2, 3), np.nan), ((1, 1), (0, 0), (0, 0))), INSTANCE, 8
        ),
        DSLValidationError,
        "pixels[1]: non-finite values",
    ),
    Fault(
        "MotionDSL.from_pixels",
        "values outside [-1, 1]",
        lambda tmp_path: MotionDSL.from_pixels(np.full((3, 2, 3), 2.0), INSTANCE, window=8),
        DSLValidationError,
        "pixels[0]: values up to 2; expected flags in [-1, 1]",
    ),
    Fault(
        "MotionDSL.from_pixels",
        "an instance map without instances",
        lambda tmp_path: MotionDSL.from_pixels(np.zeros((3, 2, 3)), np.zeros((2, 3), int), window=8),
        DSLValidationError,
        "instance_map: no instance id > 0",
    ),
    Fault(
        "dsl_from_momap",
        "window = 0",
        lambda tmp_path: dsl_from_momap(toy_momap(T=4), window=0),
        DSLValidationError,
        "window: expected an integer >= 1 frames, got 0",
    ),
    Fault(
        "dsl_from_momap",
        "tau = NaN",
        lambda tmp_path: dsl_from_momap(toy_momap(T=4), tau=float("nan")),
        DSLValidationError,
        "tau: expected a finite threshold >= 0",
    ),
    Fault(
        "dsl_from_momap",
        "an instance map of another size",
        lambda tmp_path: dsl_from_momap(toy_momap(T=4), instance_map=np.ones((8, 8), int)),
        DSLValidationError,
        "instance_map: expected (H, W) = (24, 24) like the MoMap",
    ),
    Fault(
        "dsl_from_momap",
        "an xyz array instead of a MoMap",
        lambda tmp_path: dsl_from_momap(toy_momap(T=4).xyz),
        DSLValidationError,
        "momap: expected a MoMap, got ndarray",
    ),
    Fault(
        "dsl_accuracy",
        "DSLs of different patches",
        lambda tmp_path: dsl_accuracy(MotionDSL.from_dict(good_dsl_dict(num_patches=1)), GOOD),
        DSLValidationError,
        "pred.patches: ids [1] do not match the GT's [1, 2]",
    ),
    Fault(
        "OraclePlanner.plan",
        "no GT MoMap",
        lambda tmp_path: OraclePlanner().plan(None, INSTANCE, "push it"),
        PlannerError,
        "needs the GT MoMap",
    ),
    Fault(
        "RulePlanner.plan",
        "an action outside the vocabulary",
        _rule("juggle the red block"),
        PlannerError,
        "cannot tell the action of 'juggle the red block'",
    ),
    Fault(
        "RulePlanner.plan",
        "an ambiguous object",
        _rule("push the block to the left"),
        PlannerError,
        "ambiguous: several instance labels match 'push the block' (matches: ['blue block', 'red block'])",
    ),
    Fault(
        "RulePlanner.plan",
        "an object not in the scene",
        _rule("push the green ball left"),
        PlannerError,
        "no instance label matches 'push the green ball'",
    ),
    Fault(
        "RulePlanner.plan",
        "instances without labels",
        _rule("push the red block left", {1: "red block"}),
        PlannerError,
        "instance id(s) [2, 3] have no label",
    ),
    Fault(
        "VLMPlanner",
        "a weights file instead of a folder",
        _vlm_from_file,
        PlannerError,
        "neither a model folder nor a hub id",
    ),
    Fault(
        "VLMPlanner",
        "an empty folder",
        lambda tmp_path: VLMPlanner(tmp_path),
        PlannerError,
        "VLMPlanner: cannot load an image-text-to-text model from",
    ),
    Fault(
        "VLMPlanner.check",
        "an answer without JSON",
        lambda tmp_path: extract_json_object("Sure! The red block moves left."),
        DSLValidationError,
        "answer: no JSON object found in 'Sure! The red block moves left.'",
    ),
]


# ----------------------------------------------------------------------------- python -m momaplib.demo --dsl
def _demo_dsl(text: str | None, *args: str):
    """Runs the demo on the bundled ``tabletop_blue_block`` example with a --dsl file holding ``text``
    (None: no file written)."""

    def call(tmp_path: Path):
        from momaplib.demo import main

        path = tmp_path / "dsl.json"
        if text is not None:
            path.write_text(text)
        return main(
            ["--out", str(tmp_path / "out"), "--scenes", "tabletop_blue_block", "--dsl", str(path), *args]
        )

    return call


_UNKNOWN_PATCH = good_dsl_dict(num_patches=1, num_windows=4)
_UNKNOWN_PATCH["patches"][0]["id"] = 99
DEMO = "python -m momaplib.demo --dsl"
CASES += [
    Fault(
        DEMO, "a DSL file that does not exist", _demo_dsl(None), FileNotFoundError, "dsl.json: no such file"
    ),
    Fault(DEMO, "a DSL file that is not JSON", _demo_dsl("{oops"), ValueError, "DSL JSON: not valid JSON"),
    Fault(
        DEMO,
        "a DSL patch id the scene does not have",
        _demo_dsl(json.dumps(_UNKNOWN_PATCH)),
        ValueError,
        "scene tabletop_blue_block: patches[0].id: unknown patch id 99",
    ),
    Fault(
        DEMO,
        "--dsl with --smoke",
        _demo_dsl(json.dumps(good_dsl_dict()), "--smoke"),
        ValueError,
        "needs a pipeline",
    ),
]
