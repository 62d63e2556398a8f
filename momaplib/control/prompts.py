"""The ``RulePlanner``'s prompt parser: MoMap-Sim's task vocabulary -> action, objects, direction.

Objects are resolved by colour and shape words against the instance labels: a label matches when
its shape word (last word, synonyms allowed) and its colour agree with those the phrase names;
exactly one label must match. The simulator's ``role`` of an instance (which one is the target)
is never read. Anything outside the vocabulary raises ``PlannerError`` naming what was not
understood, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from momaplib.sim.objects import CATEGORIES, COLORS

#: Shape words that name a simulator category.
SHAPE_SYNONYMS = {
    "cube": "block",
    "brick": "block",
    "mug": "cup",
    "sphere": "ball",
    "tin": "can",
    "crate": "box",
    "chest": "box",
    "plate": "tray",
    "cupboard": "cabinet",
}
#: Words that stand for "an object" without naming its shape ("the red one").
ANY_SHAPE = ("one", "object", "thing", "item")
#: Direction phrases of ``momaplib.sim.tasks.DIRECTION_PHRASES`` and a few synonyms, longest first.
DIRECTION_PHRASES = {
    "forward": (
        "away from the camera",
        "away from camera",
        "to the back",
        "farther away",
        "further away",
        "forwards",
        "forward",
        "away",
    ),
    "backward": (
        "towards the camera",
        "toward the camera",
        "closer to the camera",
        "to the front",
        "backwards",
        "backward",
        "closer",
        "nearer",
    ),
    "left": ("to the left", "leftwards", "leftward", "left"),
    "right": ("to the right", "rightwards", "rightward", "right"),
}
#: Relation phrases of pick-and-place prompts: the destination follows them.
RELATION_PHRASES = (
    ("in", r"\b(?:into|inside|in)\s+(?:the\s+)?"),
    ("next_to", r"\b(?:next\s+to|beside|over\s+to|near|by)\s+(?:the\s+)?"),
)
LIFT_WORDS = ("lift", "raise", "pick", "hoist")
#: Shape words of the agent's instance label (MoMap-Sim: "gripper", "hand"); never a task's object.
AGENT_WORDS = ("gripper", "hand")


class PromptError(ValueError):
    """A prompt the rules do not understand; the planner re-raises it as ``PlannerError``."""


@dataclass(frozen=True)
class ParsedPrompt:
    """What a prompt asks for, resolved against the instance labels."""

    action: str  # one of momaplib.sim.ACTIONS
    target_id: int  # instance id of the part that moves (the drawer or lid for fixtures)
    direction: str | None = None  # push: left/right/forward/backward
    destination_id: int | None = None  # pick_place: instance id of the reference object
    relation: str | None = None  # pick_place: "in" or "next_to"


def _normalise(prompt: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", prompt.lower()).split())


def _words(text: str) -> list[str]:
    return [SHAPE_SYNONYMS.get(w, w) for w in text.split()]


def _label_words(label: str) -> tuple[list[str], str]:
    words = _words(_normalise(label))
    return words[:-1], words[-1] if words else ""


def is_agent(label: str) -> bool:
    """Returns whether an instance label names the agent (its shape word is in ``AGENT_WORDS``)."""
    return _label_words(label)[1] in AGENT_WORDS


def resolve_object(phrase: str, labels: Mapping[int, str], exclude: tuple[int, ...] = ()) -> int:
    """Returns the one instance id whose label matches the colour and shape words of ``phrase``."""
    words = set(_words(_normalise(phrase)))
    nouns = {_label_words(label)[1] for label in labels.values()} | set(CATEGORIES)
    shape = words & nouns
    colour = words & set(COLORS)
    if not shape and not colour:
        raise PromptError(f"no colour or shape word in {phrase!r} (labels: {sorted(labels.values())})")
    matches = []
    for patch_id, label in labels.items():
        adjectives, noun = _label_words(label)
        if patch_id in exclude:
            continue
        if shape and noun not in shape:
            continue
        if colour and not colour & set(adjectives):
            continue
        if not shape and not (words & set(ANY_SHAPE) or colour):
            continue
        matches.append(patch_id)
    if len(matches) != 1:
        found = "no instance label matches" if not matches else "ambiguous: several instance labels match"
        names = sorted(labels[i] for i in matches) if matches else sorted(labels.values())
        raise PromptError(f"{found} {phrase!r} ({'matches' if matches else 'labels'}: {names})")
    return matches[0]


def _part_of(part: str, owner_phrase: str | None, labels: Mapping[int, str], instance_map: Any) -> int:
    """Returns the id of the ``part`` ("drawer", "lid") the prompt means: the only one, or the one
    nearest (in the image) to the owner the phrase names."""
    parts = [i for i, label in labels.items() if _label_words(label)[1] == part]
    if not parts:
        raise PromptError(f"the scene has no {part} (labels: {sorted(labels.values())})")
    if len(parts) == 1:
        return parts[0]
    if owner_phrase is None or instance_map is None:
        raise PromptError(
            f"ambiguous: {len(parts)} instances are a {part}; name its owner ('the {part} of the ...')"
        )
    owner = resolve_object(owner_phrase, labels, exclude=tuple(parts))
    instance_map = np.asarray(instance_map)
    centre = np.argwhere(instance_map == owner).mean(0)
    distance = [np.linalg.norm(np.argwhere(instance_map == i).mean(0) - centre) for i in parts]
    return parts[int(np.argmin(distance))]


def _direction(text: str) -> tuple[str | None, str]:
    """Returns (direction or None, text without the direction phrase)."""
    for direction, phrases in DIRECTION_PHRASES.items():
        for phrase in phrases:
            match = re.search(rf"\b{phrase}\b", text)
            if match:
                return direction, (text[: match.start()] + text[match.end() :]).strip()
    return None, text


def parse_prompt(prompt: str, labels: Mapping[int, str], instance_map: Any = None) -> ParsedPrompt:
    """Returns the ``ParsedPrompt`` of a task prompt over instances ``labels`` ({id: name}).

    ``instance_map`` (H, W) picks between several drawers or lids by their owner's position.
    Raises ``PromptError`` naming what it could not understand or resolve.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"prompt: expected a task description, got {prompt!r}")
    text = _normalise(prompt)
    words = set(_words(text))
    objects = {i: label for i, label in labels.items() if not is_agent(label)}
    owner = text.split(" of the ", 1)[1] if " of the " in text else None
    fixture = None
    if "drawer" not in words and "lid" not in words and words & {"open", "close", "shut"}:
        fixture = resolve_object(text, objects)  # "open the pink box": the box's lid
        owner = text
    fixture_noun = _label_words(objects[fixture])[1] if fixture is not None else None
    if "drawer" in words or fixture_noun == "cabinet":
        if words & {"open", "pull", "out"}:
            action = "open_drawer"
        elif words & {"close", "shut", "push", "in"}:
            action = "close_drawer"
        else:
            raise PromptError(f"{prompt!r}: a drawer, but neither open/pull/out nor close/shut/push/in")
        return ParsedPrompt(action, _part_of("drawer", owner, objects, instance_map))
    if "lid" in words or fixture_noun == "box":
        if words & {"close", "shut", "down", "lower"}:
            action = "close_lid"
        elif words & {"open", "lift", "raise", "flip", "up"}:
            action = "open_lid"
        else:
            raise PromptError(f"{prompt!r}: a lid, but neither open/lift/raise/flip nor close/shut/down")
        return ParsedPrompt(action, _part_of("lid", owner, objects, instance_map))
    if fixture is not None:
        raise PromptError(
            f"{prompt!r}: only drawers and lids open and close; {objects[fixture]!r} has neither"
        )
    for relation, pattern in RELATION_PHRASES:
        match = re.search(pattern, text)
        if match:
            target = resolve_object(text[: match.start()], objects)
            destination = resolve_object(text[match.end() :], objects, exclude=(target,))
            return ParsedPrompt("pick_place", target, destination_id=destination, relation=relation)
    direction, rest = _direction(text)
    if direction is not None:
        return ParsedPrompt("push", resolve_object(rest, objects), direction=direction)
    if words & set(LIFT_WORDS) or "up" in words:
        return ParsedPrompt("lift", resolve_object(text, objects))
    raise PromptError(
        f"cannot tell the action of {prompt!r}: the rules know push/slide/move/nudge + a direction, "
        "lift/pick up/raise, put in/next to/beside, and open/close a drawer or lid"
    )
