"""A held-out paraphrase set: task prompts in wording that no training prompt of MoMap-Sim uses.

The simulator writes each task with a few templates (``momaplib.sim.tasks.PROMPTS``), and the text
model and the rule planner were both built against them. Real users write otherwise. For an
evaluation clip, ``paraphrase_prompt`` rewrites its task (read from the simulator's record: the
action, the target and destination instances, the push direction) with

- other verbs and phrasings ("give the ... a shove", "set ... down beside", "take the lid off"),
- reordered clauses ("into the blue box, put the red block"),
- references by position where they pick out the target uniquely ("the object nearest the
  gripper", "the leftmost object", "the object closest to the camera") or by colour alone
  ("the red one"), else the label with another shape word ("the red cube").

Deterministic per clip id. None of these templates is used in training, and none was tuned against
a model: the set is written once, from the task's meaning, and kept apart from the planners.
"""

from __future__ import annotations

import zlib

import numpy as np

from momaplib.control.prompts import AGENT_WORDS, DIRECTION_PHRASES
from momaplib.momap import MoMap

#: other words for the simulator's shape words (a reference may use them)
SHAPE_WORDS = {"block": "cube", "cup": "mug", "ball": "sphere", "can": "tin", "box": "crate"}
#: direction phrases that neither the simulator nor the rule planner's table uses
HELD_OUT_DIRECTIONS = {
    "forward": ("toward the far side", "deeper into the scene"),
    "backward": ("toward you", "toward the near edge"),
    "left": ("over to the left-hand side", "a bit to the left"),
    "right": ("over to the right-hand side", "a bit to the right"),
}
TEMPLATES = {
    "push": (
        "give the {target} a shove {direction}",
        "shift the {target} {direction}",
        "{direction_cap}, push the {target}",
    ),
    "pick_place:in": (
        "grab the {target} and drop it into the {destination}",
        "into the {destination}, put the {target}",
        "stow the {target} inside the {destination}",
    ),
    "pick_place:next_to": (
        "set the {target} down beside the {destination}",
        "next to the {destination}, place the {target}",
        "carry the {target} over beside the {destination}",
    ),
    "lift": ("hold the {target} up in the air", "grab the {target} and raise it up", "hoist the {target} up"),
    "open_drawer": ("slide the drawer out", "pull open the drawer"),
    "close_drawer": ("slide the drawer shut", "shut the drawer"),
    "open_lid": ("take the lid off the {owner}", "flip the lid open"),
    "close_lid": ("put the lid back on the {owner}", "flip the lid shut"),
}


def _direction_of(prompt: str) -> str | None:
    for direction, phrases in DIRECTION_PHRASES.items():
        if any(f" {phrase}" in f" {prompt} " for phrase in phrases):
            return direction
    return None


def _other_shape(label: str) -> str:
    words = label.split()
    return " ".join([*words[:-1], SHAPE_WORDS.get(words[-1], words[-1])])


def _reference(gt: MoMap, target: int, names: dict[int, str], rng: np.random.Generator) -> str:
    """Returns a phrase that picks out ``target`` among the non-agent instances in view."""
    objects = [i for i in names if names[i].split()[-1] not in AGENT_WORDS and (gt.instance == i).any()]
    agents = [i for i in names if names[i].split()[-1] in AGENT_WORDS and (gt.instance == i).any()]
    valid = gt.valid
    centroid = {
        i: gt.xyz[0][(gt.instance == i) & valid].mean(0)
        for i in objects + agents
        if ((gt.instance == i) & valid).any()
    }
    options = []
    if target in centroid and len(objects) > 1 and all(i in centroid for i in objects):
        pixel_x = {i: np.argwhere(gt.instance == i)[:, 1].mean() for i in objects}
        if target == min(pixel_x, key=pixel_x.get):
            options.append("leftmost object")
        if target == max(pixel_x, key=pixel_x.get):
            options.append("rightmost object")
        if target == min(objects, key=lambda i: centroid[i][2]):
            options.append("object closest to the camera")
        if agents and agents[0] in centroid:
            agent = centroid[agents[0]]
            nearest = min(objects, key=lambda i: np.linalg.norm(centroid[i] - agent))
            if target == nearest:
                options.append(f"object nearest the {names[agents[0]].split()[-1]}")
    colour = names[target].split()[0]
    if len(names[target].split()) > 1 and sum(names[i].split()[0] == colour for i in objects) == 1:
        options.append(f"{colour} one")
    options.append(_other_shape(names[target]))
    return str(options[rng.integers(len(options))])


def paraphrase_prompt(gt: MoMap, clip_id: str) -> str | None:
    """Returns a held-out paraphrase of the clip's task, or None when the clip records no task.

    ``gt.meta`` must hold MoMap-Sim's ``task`` (action, target id) and ``instances`` (names,
    roles); the clip's own prompt is only read for the push direction and the relation of a
    pick-and-place ("in" or "next to").
    """
    task, info = gt.meta.get("task"), gt.meta.get("instances")
    if not task or not info or task.get("action") not in {key.split(":")[0] for key in TEMPLATES}:
        return None
    rng = np.random.default_rng(zlib.crc32(clip_id.encode()))
    names = {int(k): str(v["name"]) for k, v in info.items()}
    roles = {int(k): str(v["role"]) for k, v in info.items()}
    action, target = task["action"], int(task["target_id"])
    key = action
    if action == "pick_place":
        key = "pick_place:in" if " in" in f" {gt.prompt} " or "into" in gt.prompt else "pick_place:next_to"
    fields = {"target": "", "destination": "", "owner": "", "direction": "", "direction_cap": ""}
    if target in names and action in ("push", "pick_place", "lift"):
        fields["target"] = _reference(gt, target, names, rng)
    destination = [i for i, role in roles.items() if role == "destination"]
    if destination:
        fields["destination"] = _other_shape(names[destination[0]])
    owners = [
        names[i]
        for i, role in roles.items()
        if role == "static" and names[i].split()[-1] in ("box", "cabinet")
    ]
    fields["owner"] = owners[0] if owners else "box"
    direction = _direction_of(gt.prompt)
    if action == "push":
        if direction is None:
            return None
        phrase = str(rng.choice(HELD_OUT_DIRECTIONS[direction]))
        fields.update(direction=phrase, direction_cap=phrase[0].upper() + phrase[1:])
    template = str(rng.choice(TEMPLATES[key]))
    return template.format(**fields)
