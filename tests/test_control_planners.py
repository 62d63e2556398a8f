"""Planners: the oracle, the rule planner against the oracle on simulated clips, the table-plane fit,
and the VLM planner's whole path offline on a tiny randomly initialised LLaVA saved by the test."""

from __future__ import annotations

import functools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from momaplib.control import (
    DSLValidationError,
    MotionDSL,
    OraclePlanner,
    Planner,
    PlannerError,
    RulePlanner,
    VLMPlanner,
    dsl_accuracy,
    dsl_from_momap,
    examples_from_momaps,
    extract_json_object,
    fit_table_frame,
    instance_labels,
    parse_prompt,
    patch_centroids,
)
from momaplib.data import simulate_split_clips
from momaplib.sim import SimConfig, clip_seed, generate_clip

T, WINDOW = 8, 2  # smoke clips: 4 windows of 2 frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def clips(family: str, action: str | None, count: int):
    config = SimConfig(family=family).smoke()
    if action is not None:
        config = replace(config, actions=(action,))
    return [generate_clip(clip_seed(11, i), config) for i in range(count)]


def test_every_planner_is_a_planner():
    assert all(isinstance(p, Planner) for p in (OraclePlanner(), RulePlanner()))


def test_the_oracle_is_the_gt_dsl(family):
    momap = clips(family, None, 2)[0].momap
    dsl = OraclePlanner(window=WINDOW).plan(momap.rgb, momap.instance, momap.prompt, momap=momap)
    assert dsl == dsl_from_momap(momap, window=WINDOW)


# ----------------------------------------------------------------------------- the rule planner
def test_the_parser_reads_the_simulators_prompts(family):
    # measured: 300 of 300 simulated prompts (both families, seed 1) parse to the true task
    right = 0
    for clip in clips(family, None, 30):
        parsed = parse_prompt(clip.prompt, instance_labels(clip.momap), clip.momap.instance)
        task = clip.task
        right += (parsed.action, parsed.target_id, parsed.direction, parsed.destination_id) == (
            task.action,
            task.target_id,
            task.direction,
            task.destination_id,
        )
    assert right >= 29


def test_rule_planner_agrees_with_the_oracle_on_the_dominant_direction_of_pushes(family):
    """Measured on these 16 push clips per family (seed 11): 16/16 agree with the fitted table plane
    (target flags 0.97 tabletop, 0.95 egocentric; whole DSL 0.83 / 0.81, lowest clip 0.64, the
    agent's approach is not modelled); with camera axes only 7/16 and 5/16, as a push away from a
    camera tilted down at the table is mostly image-up."""
    agree = {True: 0, False: 0}
    target_accuracy = []
    pushes = clips(family, "push", 16)
    for clip in pushes:
        momap, target = clip.momap, clip.task.target_id
        gt = OraclePlanner(window=WINDOW).plan(momap.rgb, momap.instance, momap.prompt, momap=momap)
        ids, centroids = patch_centroids(momap.xyz, momap.valid, momap.instance)
        displacement = centroids[-1, list(ids).index(target)] - centroids[0, list(ids).index(target)]
        axis = int(np.argmax(np.abs(displacement)))
        for geometry in (True, False):
            labels = instance_labels(momap)
            dsl = RulePlanner(num_frames=T, window=WINDOW).plan(
                momap.rgb, momap.instance, momap.prompt, labels=labels, momap=momap if geometry else None
            )
            summed = dsl.flags()[dsl.ids.index(target), :, axis].sum()
            agree[geometry] += int(np.sign(summed) == np.sign(displacement[axis]))
            if geometry:
                flags = dsl.flags()[dsl.ids.index(target)]
                target_accuracy.append((flags == gt.flags()[gt.ids.index(target)]).mean())
                assert dsl_accuracy(dsl, gt)["accuracy"] >= 0.5
    assert agree[True] >= 0.9 * len(pushes)
    assert agree[True] > agree[False]
    assert np.mean(target_accuracy) >= 0.9


LABELS = {1: "red block", 2: "blue block", 3: "gripper", 4: "yellow tray"}


def scene_map() -> np.ndarray:
    instance = np.zeros((16, 16), np.int64)
    instance[2:5, 2:5], instance[2:5, 10:13], instance[12:15, 7:10], instance[9:12, 12:15] = 1, 2, 3, 4
    return instance


def rule_words(prompt: str, patch_id: int, window: int = 8, labels=LABELS) -> list[tuple[str, str, str]]:
    dsl = RulePlanner(num_frames=32, window=window).plan(None, scene_map(), prompt, labels=labels)
    return dsl.patch(patch_id).motion


def test_rule_planner_known_answers_without_geometry():
    # push: the act spans clip times 0.43-0.75, windows 1 and 2 of [0, 8, 16, 24, 31] frames
    left = [("stay",) * 3, ("left", "stay", "stay"), ("left", "stay", "stay"), ("stay",) * 3]
    assert rule_words("push the red block to the left", 1) == left
    assert rule_words("push the red block to the left", 3) == left  # the gripper pushes along
    assert rule_words("push the red block to the left", 2) == [("stay",) * 3] * 4
    assert rule_words("slide the red cube towards the camera", 1)[1] == ("stay", "stay", "backward")
    assert rule_words("nudge the blue one away from the camera", 2)[2] == ("stay", "stay", "forward")
    # lift: up while lifting (clip times 0.61-0.95), stay before and after
    lift = [words[1] for words in rule_words("lift the red block", 1, window=2)]
    first, last = lift.index("up"), len(lift) - 1 - lift[::-1].index("up")
    assert set(lift[:first]) == {"stay"} and set(lift[first : last + 1]) == {"up"} and lift[-1] == "stay"
    # pick and place: up, then towards the destination (right and nearer: down the image), then down
    motion = rule_words("pick up the red block and put it in the yellow tray", 1, window=2)
    ups = [w for w, m in enumerate(motion) if m[1] == "up"]
    rights = [w for w, m in enumerate(motion) if m[0] == "right"]
    downs = [w for w, m in enumerate(motion) if m[1] == "down"]
    assert ups and rights and downs and max(ups) <= min(rights) and max(rights) <= min(downs)
    assert any(m[2] == "backward" for m in motion)  # the tray is lower in the image: nearer


def test_lids_and_drawers_resolve_through_their_owner():
    instance = np.zeros((16, 16), np.int64)
    instance[1:4, 1:4], instance[4:7, 1:4] = 1, 2  # green box and the lid above it
    instance[10:13, 10:13], instance[13:16, 10:13] = 3, 4  # pink box and the lid below it
    instance[0, 15] = 5
    labels = {1: "green box", 2: "lid", 3: "pink box", 4: "lid", 5: "hand"}
    assert parse_prompt("lift the lid of the pink box", labels, instance).target_id == 4
    assert parse_prompt("close the green box", labels, instance).action == "close_lid"
    assert parse_prompt("close the green box", labels, instance).target_id == 2
    with pytest.raises(PlannerError, match="ambiguous: 2 instances are a lid"):
        RulePlanner().plan(None, instance, "open the lid", labels=labels)
    drawer = {1: "white cabinet", 2: "drawer", 3: "red ball", 4: "blue cup", 5: "hand"}
    assert parse_prompt("pull out the drawer", drawer, instance).action == "open_drawer"
    assert parse_prompt("push the drawer in", drawer, instance).action == "close_drawer"
    assert parse_prompt("open the white cabinet", drawer, instance).action == "open_drawer"


def test_the_table_frame_of_a_tilted_plane():
    tilt = np.radians(40)  # the camera looks down 40 degrees at a table 1 m below it
    up = np.array([0.0, -np.cos(tilt), -np.sin(tilt)])
    forward = np.array([0.0, -np.sin(tilt), np.cos(tilt)])
    u, v = np.meshgrid(np.linspace(-0.5, 0.5, 20), np.linspace(0.2, 1.5, 20))
    points = (-up * 1.0)[None, None] + u[..., None] * np.array([1.0, 0, 0]) + v[..., None] * forward
    mask = np.ones(points.shape[:2], bool)
    frame = fit_table_frame(points, mask)
    assert frame.fitted
    np.testing.assert_allclose(frame.up, up, atol=1e-6)
    np.testing.assert_allclose(frame.forward, forward, atol=1e-6)
    np.testing.assert_allclose(frame.right, [1, 0, 0], atol=1e-6)
    assert not fit_table_frame(points, np.zeros_like(mask)).fitted  # too few points: camera axes


# ----------------------------------------------------------------------------- the VLM planner, offline
def save_tiny_vlm(folder) -> None:
    """Saves a randomly initialised LLaVA (CLIP vision tower, 1-layer Llama) with a byte-level
    tokenizer, a CLIP image processor and a chat template: the real classes, tiny and offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers: the processor class itself
        from transformers import CLIPImageProcessor as ImageProcessor

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    template = (
        "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=16384,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava")
    save_tiny_vlm(folder)
    return folder


@pytest.fixture(scope="module")
def scene():
    (_, momap), *train = simulate_split_clips(
        "tabletop", 3, seed=0, config=SimConfig().smoke(), split="train", progress=False
    )
    return momap, examples_from_momaps(train, k=2, window=WINDOW)


def fake_generate(planner: VLMPlanner, answers: list[str], prompts: list[str]):
    """Returns a ``generate`` that records the decoded prompt and answers ``answers`` in turn."""
    tokenizer = planner.processor.tokenizer

    def generate(input_ids=None, **kwargs):
        prompts.append(tokenizer.decode(input_ids[0]))
        new = tokenizer(answers[len(prompts) - 1], add_special_tokens=False, return_tensors="pt").input_ids
        return torch.cat([input_ids, new], 1)

    return generate


def test_the_tiny_models_garbage_is_rejected_after_one_repair(tiny_vlm, scene):
    momap, examples = scene
    planner = VLMPlanner(tiny_vlm, examples=examples, num_frames=T, window=WINDOW, max_new_tokens=16)
    with pytest.raises(PlannerError, match="no valid DSL after one repair") as raised:
        planner.plan(momap.rgb, momap.instance, momap.prompt, momap=momap)
    assert len(raised.value.answers) == 2 and raised.value.answers == planner.answers
    messages, images = planner.messages(instance_labels(momap), momap.prompt)
    text = json.dumps(messages)
    assert len(images) == 2 and '\\"window\\":' in text and "Instruction: " + momap.prompt in text
    assert all(
        example.dsl.to_json() in messages[0]["content"][3 + 3 * n]["text"]
        for n, example in enumerate(examples)
    )


def test_a_valid_answer_is_accepted_and_a_bad_one_repaired(tiny_vlm, scene, monkeypatch):
    momap, examples = scene
    planner = VLMPlanner(tiny_vlm, examples=examples, num_frames=T, window=WINDOW)
    truth = dsl_from_momap(momap, window=WINDOW)
    prompts: list[str] = []
    answer = f"Here is the plan:\n```json\n{truth.to_json(indent=1)}\n```"
    monkeypatch.setattr(planner.model, "generate", fake_generate(planner, [answer], prompts))
    assert planner.plan(momap.rgb, momap.instance, momap.prompt, momap=momap) == truth
    assert (
        len(prompts) == 1 and "JSON Schema" in prompts[0] and prompts[0].count("<image>") == 3 * 4
    )  # 2 examples + the scene, 4 patches each

    wrong = truth.to_dict()
    wrong["patches"][0]["motion"][0][0] = "lft"
    prompts.clear()
    repair = fake_generate(planner, [json.dumps(wrong), truth.to_json()], prompts)
    monkeypatch.setattr(planner.model, "generate", repair)
    assert planner.plan(momap.rgb, momap.instance, momap.prompt, momap=momap) == truth
    assert "That answer is not valid: patches[0].motion[0][0]: expected one of left/stay/right" in prompts[1]


def test_schema_valid_answers_that_do_not_fit_the_scene_are_refused(tiny_vlm, scene, monkeypatch):
    momap, _ = scene
    planner = VLMPlanner(tiny_vlm, num_frames=T, window=WINDOW)
    truth = dsl_from_momap(momap, window=WINDOW)
    unknown = truth.to_dict()
    unknown["patches"][0]["id"] = 99
    fewer = MotionDSL.from_dict({**truth.to_dict(), "patches": truth.to_dict()["patches"][1:]})
    for bad, fragment in (
        (json.dumps(unknown), "unknown patch id 99"),
        (fewer.to_json(), "no patch for instance"),
    ):
        monkeypatch.setattr(planner.model, "generate", fake_generate(planner, [bad, bad], []))
        with pytest.raises(PlannerError, match=fragment):
            planner.plan(momap.rgb, momap.instance, momap.prompt, momap=momap)
    with pytest.raises(DSLValidationError, match="window: expected 2 frames, got 4"):
        planner.check(MotionDSL.from_dict({**truth.to_dict(), "window": 4}).to_json(), momap.instance)


def test_json_extraction():
    assert extract_json_object('x {"a": {"b": 1}} y {"c": 2}') == '{"a": {"b": 1}}'
    assert extract_json_object('{broken {"a": 1}') == '{"a": 1}'
    with pytest.raises(DSLValidationError, match="no JSON object"):
        extract_json_object("[1, 2]")
