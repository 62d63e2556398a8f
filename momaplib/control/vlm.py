"""``VLMPlanner``: a vision-language model writes the motion DSL, in context (paper §3.4.2).

The paper prompts a VLM (Gemini) with the input's first frame, the global text prompt and a few
ground-truth examples from the training videos, and feeds the DSL it writes to a UNet trained
without text. Here any transformers image-text-to-text model does (``AutoModelForImageTextToText``
+ ``AutoProcessor`` with a chat template: SmolVLM / Idefics3, Qwen2-VL, LLaVA, PaliGemma-class
models), given by hub id or local folder.

The message holds the DSL's JSON Schema and the meaning of its words, ``k`` in-context examples
(each: optionally its reference image, its instance labels, its prompt and its GT DSL as JSON,
``examples_from_momaps`` builds them from the training split), then the scene's image, its
instance labels and the prompt. The answer's first JSON object is parsed and validated: against
the schema, against the instance map (every instance has a patch, no unknown id) and against the
planner's window and number of windows. An invalid answer gets one repair turn that quotes the
error; a second invalid answer raises ``PlannerError`` with both answers attached. No unchecked
DSL leaves the planner.

``tests/test_control_planners.py`` runs the whole path offline on a tiny randomly initialised
LLaVA saved by the test: its answers are garbage and must be rejected; a ``generate`` replaced
by one that returns valid JSON must be accepted, and the repair turn must recover from one bad
answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from momaplib.checkpoints import HUB_ID, checkpoints_root, resolve_checkpoint
from momaplib.control.dsl import (
    DEFAULT_FPS,
    DEFAULT_WINDOW,
    DSLValidationError,
    MotionDSL,
    dsl_from_momap,
    instance_labels,
    window_bounds,
)
from momaplib.control.planners import PlannerError
from momaplib.control.schema import DSL_SCHEMA
from momaplib.metrics import TAU_DIR
from momaplib.momap import MoMap

INSTRUCTIONS = """You plan how objects move in a video that starts at the image.
Answer with one JSON object in this motion DSL and nothing else. JSON Schema:
{schema}
Each patch is one object of the scene, by its id. "motion" lists, for each of the {num_windows} \
time windows of {window} frames in order, three words for the object's centre: x = left/stay/right \
(image left or right), y = up/stay/down (image up or down), z = forward/stay/backward (forward = away \
from the camera, backward = towards it). Objects that do not move "stay"."""


@dataclass
class InContextExample:
    """One worked example: a scene's instance labels, a prompt and its GT DSL (and image)."""

    prompt: str  # the task text
    labels: dict[int, str]  # {instance id: name} of the example's scene
    dsl: MotionDSL  # the GT DSL (``dsl_from_momap`` of the GT MoMap)
    image: np.ndarray | None = None  # (H, W, 3) uint8 reference image, shown to the model if given


def examples_from_momaps(
    momaps: Iterable[MoMap | tuple[str, MoMap]],
    k: int,
    window: int = DEFAULT_WINDOW,
    tau: float = TAU_DIR,
    with_images: bool = True,
) -> list[InContextExample]:
    """Returns the first ``k`` in-context examples of (training split) MoMaps with a prompt.

    Accepts MoMaps or ``(clip_id, MoMap)`` pairs (``momaplib.data.simulate_split_clips(...,
    split="train")``); each example is the clip's prompt, instance names and GT DSL.
    """
    examples = []
    for item in momaps:
        momap = item[1] if isinstance(item, tuple) else item
        if len(examples) == k:
            break
        if momap.prompt:
            dsl = dsl_from_momap(momap, window=window, tau=tau)
            image = momap.rgb if with_images else None
            examples.append(InContextExample(momap.prompt, dsl.labels, dsl, image))
    return examples


def extract_json_object(text: str) -> str:
    """Returns the first complete JSON object ``{...}`` in a model's answer (code fences allowed).

    Raises ``DSLValidationError`` when the answer holds none.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value, end = None, start
        if isinstance(value, dict):
            return text[start:end]
        start = text.find("{", start + 1)
    shown = text if len(text) <= 200 else text[:200] + "..."
    raise DSLValidationError(f"answer: no JSON object found in {shown!r}")


def _labels_text(labels: Mapping[int, str]) -> str:
    return "; ".join(f"id {i}: {name}" for i, name in sorted(labels.items()))


def _image(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise PlannerError(f"VLMPlanner: image must be (H, W, 3) uint8 RGB, got {array.shape} {array.dtype}")
    return Image.fromarray(array)


class VLMPlanner:
    """Plans a ``MotionDSL`` with an image-text-to-text model prompted in context (see the module)."""

    def __init__(
        self,
        model: str | os.PathLike,
        examples: Sequence[InContextExample] = (),
        num_frames: int = 32,
        window: int = DEFAULT_WINDOW,
        fps: float = DEFAULT_FPS,
        max_new_tokens: int = 768,
        device: str = "cpu",
        dtype: Any = None,
        revision: str | None = None,
    ) -> None:
        """Loads ``model``: a local folder or bundled checkpoint name (``resolve_checkpoint``,
        nothing downloaded) or a hub id (transformers downloads it into the hub cache; with no
        network this fails with ``PlannerError``). Only safetensors weights are loaded. ``examples``
        are the in-context examples (``examples_from_momaps``); ``num_frames`` and ``window`` fix
        the number of windows every answer must have; ``dtype`` (e.g. ``torch.bfloat16``) is passed
        to ``from_pretrained``; answers are greedy, at most ``max_new_tokens`` tokens."""
        self.examples = list(examples)
        self.num_frames, self.window, self.fps = num_frames, window, fps
        self.num_windows = len(window_bounds(num_frames, window))
        self.max_new_tokens = max_new_tokens
        self.source = self._source(model)
        local = Path(self.source).is_dir()
        from transformers import AutoModelForImageTextToText, AutoProcessor  # slow import: only here

        options = {"revision": revision, "local_files_only": local}
        weights = {"use_safetensors": True, **({"dtype": dtype} if dtype is not None else {})}
        try:
            self.processor = AutoProcessor.from_pretrained(self.source, **options)
            self.model = AutoModelForImageTextToText.from_pretrained(self.source, **weights, **options)
        except (OSError, ValueError) as error:
            raise PlannerError(
                f"VLMPlanner: cannot load an image-text-to-text model from {str(model)!r} "
                f"({type(error).__name__}: {error})"
            ) from error
        self.model.to(device).eval()
        if getattr(self.processor, "chat_template", None) is None:
            raise PlannerError(f"VLMPlanner: {str(model)!r} has no chat template; the planner needs one")
        self.answers: list[str] = []  # raw answers of the last ``plan`` call

    @staticmethod
    def _source(model: str | os.PathLike) -> str:
        """Returns a local folder for folders and bundled names (``resolve_checkpoint``, which also
        checks a weight manifest if the folder has one), else the hub id unchanged."""
        name = os.fspath(model)
        path = Path(name).expanduser()
        if path.is_dir() or (HUB_ID.match(name) and (checkpoints_root() / name).is_dir()):
            return str(resolve_checkpoint(name))
        if path.exists() or not HUB_ID.match(name) or name.startswith((".", "~")):
            raise PlannerError(f"VLMPlanner: {name!r} is neither a model folder nor a hub id")
        # a hub id: transformers fetches the processor files (tokenizer, chat template) too, which
        # resolve_checkpoint's *.json / *.safetensors / *.md patterns would leave behind
        return name

    # -------------------------------------------------------------------- prompting
    def messages(self, labels: Mapping[int, str], prompt: str) -> tuple[list[dict], list[Any]]:
        """Returns the chat messages and the images they refer to, in order."""
        content: list[dict] = [
            {
                "type": "text",
                "text": INSTRUCTIONS.format(
                    schema=json.dumps(DSL_SCHEMA, separators=(",", ":")),
                    num_windows=self.num_windows,
                    window=self.window,
                ),
            }
        ]
        images = []
        for n, example in enumerate(self.examples, 1):
            content.append({"type": "text", "text": f"\nExample {n}."})
            if example.image is not None:
                content.append({"type": "image"})
                images.append(_image(example.image))
            content.append(
                {
                    "type": "text",
                    "text": f"\nObjects: {_labels_text(example.labels)}\nInstruction: {example.prompt}\n"
                    f"Answer: {example.dsl.to_json()}",
                }
            )
        content.append({"type": "text", "text": "\nNow this scene."})
        content.append({"type": "image"})
        content.append(
            {
                "type": "text",
                "text": f"\nObjects: {_labels_text(labels)}\nInstruction: {prompt}\nAnswer with the JSON "
                f'object only: "fps": {self.fps}, "window": {self.window}, one patch per object, '
                f"{self.num_windows} windows each.",
            }
        )
        return [{"role": "user", "content": content}], images

    def generate(self, messages: list[dict], images: list[Any]) -> str:
        """Returns the model's greedy answer (new tokens only, special tokens removed)."""
        import torch

        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=text, images=images or None, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]

    def check(self, answer: str, instance_map: Any) -> MotionDSL:
        """Returns the DSL of an answer after every check; raises ``DSLValidationError`` naming the field."""
        dsl = MotionDSL.from_json(extract_json_object(answer))
        if dsl.window != self.window:
            raise DSLValidationError(f"window: expected {self.window} frames, got {dsl.window}")
        return dsl.validate_against(instance_map, num_windows=self.num_windows, complete=True)

    def plan(self, image, instance_map, prompt, labels=None, momap=None) -> MotionDSL:
        """Returns the model's validated DSL for ``prompt`` on the scene; ``PlannerError`` when its
        answer and its repaired answer are both invalid. ``momap`` is read only for labels."""
        if labels is None:
            labels = instance_labels(momap) if momap is not None else {}
        instance_map = np.asarray(instance_map)
        ids = sorted(int(i) for i in np.unique(instance_map[instance_map > 0]))
        unnamed = [i for i in ids if i not in labels]
        if unnamed or not ids:
            raise PlannerError(
                f"VLMPlanner: every instance needs a label; no label for id(s) {unnamed or 'any'}"
            )
        labels = {i: str(labels[i]) for i in ids}
        messages, images = self.messages(labels, prompt)
        images.append(_image(image))
        self.answers = []
        errors = []
        for attempt in range(2):
            answer = self.generate(messages, images)
            self.answers.append(answer)
            try:
                return self.check(answer, instance_map)
            except DSLValidationError as error:
                errors.append(str(error))
            if attempt == 0:  # one repair turn that quotes the problem
                messages = [
                    *messages,
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": f"That answer is not valid: {errors[0]}. Reply with the corrected "
                                "JSON object only.",
                            }
                        ],
                    },
                ]
        raise PlannerError(
            f"VLMPlanner: no valid DSL after one repair; first answer: {errors[0]}; "
            f"repaired answer: {errors[1]}",
            answers=self.answers,
        )
