"""Task vocabulary, prompts and planning: which object moves where, as a list of motion phases.

Directions are relative to the reference camera (t0): "left"/"right" follow the image's x axis
and "forward"/"backward" move away from / towards the camera, both projected onto the table.
Planning is rejection sampling: a layout and a task are drawn, and kept only when the motion is
feasible (the path is clear of other objects, the result stays on the table and in view).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from momaplib.sim.agents import Agent
from momaplib.sim.clip import Task
from momaplib.sim.motion import Phase
from momaplib.sim.objects import SMALL_CATEGORIES, SceneObject, rotation_x, translation

PROMPTS = {
    "push": [
        "push the {target} {direction}",
        "slide the {target} {direction}",
        "move the {target} {direction}",
        "nudge the {target} {direction}",
    ],
    "pick_place:in": [
        "pick up the {target} and put it in the {destination}",
        "put the {target} into the {destination}",
        "place the {target} in the {destination}",
        "move the {target} into the {destination}",
    ],
    "pick_place:next_to": [
        "pick up the {target} and put it next to the {destination}",
        "place the {target} next to the {destination}",
        "put the {target} beside the {destination}",
        "move the {target} over to the {destination}",
    ],
    "lift": [
        "lift the {target}",
        "pick up the {target}",
        "raise the {target}",
        "lift the {target} off the table",
    ],
    "open_drawer": [
        "open the drawer",
        "pull the drawer open",
        "open the drawer of the {owner}",
        "pull out the drawer",
    ],
    "close_drawer": [
        "close the drawer",
        "push the drawer shut",
        "close the drawer of the {owner}",
        "push the drawer in",
    ],
    "open_lid": [
        "open the lid",
        "open the {owner}",
        "lift the lid of the {owner}",
        "flip the lid of the {owner} open",
    ],
    "close_lid": [
        "close the lid",
        "close the {owner}",
        "shut the lid of the {owner}",
        "put the lid of the {owner} down",
    ],
}
DIRECTION_PHRASES = {
    "left": ["to the left", "left", "leftwards"],
    "right": ["to the right", "right", "rightwards"],
    "forward": ["forward", "away from the camera", "to the back"],
    "backward": ["backward", "towards the camera", "to the front"],
}

#: Gap kept between object footprints so that fingers fit between neighbours.
CLEARANCE = 0.035
#: Height of the fingertips above the support surface while grasping or pushing.
GRASP_Z = 0.006


@dataclass
class Workspace:
    """The table region in view, expressed in the reference camera's table-plane axes."""

    center: np.ndarray  # (2,) world xy of the region's centre
    right: np.ndarray  # (2,) unit table direction of the reference camera's +x ("right")
    forward: np.ndarray  # (2,) unit table direction away from the camera ("forward")
    half_right: float  # half extent along ``right``
    half_forward: float  # half extent along ``forward``

    def direction(self, name: str) -> np.ndarray:
        """Returns the unit world xy vector of a direction word."""
        return {"left": -self.right, "right": self.right, "forward": self.forward, "backward": -self.forward}[
            name
        ]

    def contains(self, xy: np.ndarray, radius: float = 0.0) -> bool:
        """Returns whether a disc of ``radius`` at ``xy`` lies inside the region."""
        d = np.asarray(xy) - self.center
        return bool(
            abs(d @ self.right) + radius <= self.half_right
            and abs(d @ self.forward) + radius <= self.half_forward
        )

    def sample(self, rng: np.random.Generator, radius: float) -> np.ndarray:
        """Returns a random xy whose disc of ``radius`` fits inside the region."""
        a = rng.uniform(-1, 1) * max(self.half_right - radius, 0.0)
        b = rng.uniform(-1, 1) * max(self.half_forward - radius, 0.0)
        return self.center + a * self.right + b * self.forward


@dataclass
class Plan:
    """A feasible task: the objects (at rest poses), the task, the phases and the prompt."""

    objects: list[SceneObject]
    task: Task
    target_object: int  # index into objects
    target_part: int  # index into that object's parts (0 = body, 1 = drawer/lid)
    target_rest: np.ndarray  # (4, 4) world pose of the target part before the task
    phases: list[Phase]
    yaw: float  # TCP yaw during the whole task
    prompt: str


def _yaw_facing(forward: np.ndarray) -> float:
    """Returns the yaw that turns an object's local +y to ``forward`` (its front faces the camera)."""
    return float(np.arctan2(-forward[0], forward[1]))


def _pose(xy: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    pose = translation(xy[0], xy[1], 0.0)
    pose[:2, :2] = [[c, -s], [s, c]]
    return pose


def _local_discs(obj: SceneObject) -> np.ndarray:
    """Returns [D, 3] discs (x, y, radius) in the object's frame covering it and the room its parts need."""
    discs = [(0.0, 0.0, obj.footprint_radius)]
    if obj.category == "cabinet":  # the drawer slides out of the front face (local -y)
        for frac in (0.5, 1.0):
            y = obj.info["front"] - frac * (obj.info["max_open"] + 0.05)
            discs.append((0.0, y, obj.info["drawer_half_width"] + 0.02))
    if obj.category == "box":  # the lid swings up and slightly past the back
        discs.append((0.0, obj.half_size[1] + 0.03, obj.half_size[0]))
    return np.asarray(discs)


def _discs_at(local: np.ndarray, xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Returns [C, D, 3] world discs of local discs [D, 3] for C candidate poses (xy [C, 2], yaw [C])."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x = xy[:, None, 0] + c * local[None, :, 0] - s * local[None, :, 1]
    y = xy[:, None, 1] + s * local[None, :, 0] + c * local[None, :, 1]
    return np.stack([x, y, np.broadcast_to(local[:, 2], x.shape)], -1)


def _discs(obj: SceneObject) -> list[tuple[np.ndarray, float]]:
    """Returns discs covering an object and the room its parts need to move (drawer, lid)."""
    discs = _discs_at(_local_discs(obj), obj.xy[None], np.array([obj.yaw]))[0]
    return [(d[:2], float(d[2])) for d in discs]


def _disc_array(objects: list[SceneObject]) -> np.ndarray:
    """Returns the [N, 3] (x, y, radius) discs of ``objects``."""
    discs = [(*c, r) for o in objects for c, r in _discs(o)]
    return np.asarray(discs, dtype=np.float64).reshape(-1, 3)


def _clear(
    xy: np.ndarray, radius: float, others: list[SceneObject] | np.ndarray, margin: float = CLEARANCE
) -> bool:
    """Returns whether a disc at ``xy`` keeps ``margin`` from every other object (or [N, 3] disc array)."""
    discs = others if isinstance(others, np.ndarray) else _disc_array(others)
    gap = np.hypot(discs[:, 0] - xy[0], discs[:, 1] - xy[1]) - discs[:, 2]
    return bool((gap >= radius + margin).all())


def _segment_clear(
    a: np.ndarray, b: np.ndarray, radius: float, others: list[SceneObject], margin: float
) -> bool:
    """Returns whether a disc swept from ``a`` to ``b`` keeps ``margin`` from every other object."""
    discs = _disc_array(others)
    ab = b - a
    s = np.clip((discs[:, :2] - a) @ ab / max(ab @ ab, 1e-12), 0.0, 1.0)
    closest = a + s[:, None] * ab
    return bool((np.linalg.norm(closest - discs[:, :2], axis=1) >= radius + discs[:, 2] + margin).all())


def place_objects(
    rng: np.random.Generator, objects: list[SceneObject], workspace: Workspace, in_view, tries: int = 60
) -> bool:
    """Places objects (fixtures first) at random clear spots; returns False when it fails."""
    placed = np.zeros((0, 3))
    for obj in sorted(objects, key=lambda o: o.category in SMALL_CATEGORIES):
        radius = obj.footprint_radius
        if obj.category in SMALL_CATEGORIES:
            yaw = rng.uniform(-np.pi, np.pi, size=tries)
        else:  # fixtures face the camera, give or take 25 degrees
            yaw = _yaw_facing(workspace.forward) + rng.uniform(-0.45, 0.45, size=tries)
        a = rng.uniform(-1, 1, size=tries) * max(workspace.half_right - radius, 0.0)
        b = rng.uniform(-1, 1, size=tries) * max(workspace.half_forward - radius, 0.0)
        xy = workspace.center + a[:, None] * workspace.right + b[:, None] * workspace.forward
        discs = _discs_at(_local_discs(obj), xy, yaw)  # [C, D, 3]
        gap = np.linalg.norm(discs[:, :, None, :2] - placed[None, None, :, :2], axis=-1)
        gap -= discs[:, :, None, 2] + placed[None, None, :, 2]
        clear = (gap >= CLEARANCE).all(axis=(1, 2))
        for k in np.flatnonzero(clear):
            obj.world_from_object = _pose(xy[k], yaw[k])
            if in_view(obj):
                placed = np.concatenate([placed, discs[k]])
                break
        else:
            return False
    return True


def _jitter(rng: np.random.Generator, base: float) -> float:
    return base * rng.uniform(0.8, 1.25)


def plan_task(
    rng: np.random.Generator,
    action: str,
    objects: list[SceneObject],
    agent: Agent,
    workspace: Workspace,
    home: np.ndarray,
    in_view,
) -> Plan | None:
    """Returns a feasible plan of ``action`` on the placed ``objects``, or None."""
    heights = [o.height for o in objects]
    if action in ("push", "lift", "pick_place"):
        candidates = [i for i, o in enumerate(objects) if o.category in SMALL_CATEGORIES]
    elif action.endswith("drawer"):
        candidates = [i for i, o in enumerate(objects) if o.category == "cabinet"]
    else:
        candidates = [i for i, o in enumerate(objects) if o.category == "box"]
    if not candidates:
        return None
    index = int(rng.choice(candidates))
    obj = objects[index]
    others = [o for i, o in enumerate(objects) if i != index]
    z_safe = max(heights) + 0.06
    planner = {
        "push": _plan_push,
        "lift": _plan_lift,
        "pick_place": _plan_pick_place,
        "open_drawer": _plan_drawer,
        "close_drawer": _plan_drawer,
        "open_lid": _plan_lid,
        "close_lid": _plan_lid,
    }[action]
    result = planner(rng, action, obj, others, agent, workspace, home, z_safe, in_view)
    if result is None:
        return None
    task, phases, yaw, part = result
    target_rest = obj.world_from_object @ obj.parts[part].object_from_part
    fields = {
        "target": task.target,
        "destination": task.destination,
        "direction": rng.choice(DIRECTION_PHRASES[task.direction]) if task.direction else None,
        "owner": obj.name,
    }
    key = f"pick_place:{task.relation}" if action == "pick_place" else action
    prompt = str(rng.choice(PROMPTS[key])).format(**fields)
    return Plan(objects, task, index, part, target_rest, phases, yaw, prompt)


def _grasp_yaw(obj: SceneObject) -> float:
    return obj.yaw + (np.pi / 2 if obj.grasp_axis == 1 else 0.0)


def _approach(rng, home, above, opening_from, opening_to) -> Phase:
    return Phase("approach", home, above, (opening_from, opening_to), _jitter(rng, 1.0))


def _plan_push(rng, action, obj, others, agent, workspace, home, z_safe, in_view):
    for direction in rng.permutation(["left", "right", "forward", "backward"]):
        v = workspace.direction(str(direction))
        length = rng.uniform(0.06, 0.12)
        start_xy, end_xy = obj.xy, obj.xy + v * length
        if not workspace.contains(end_xy, obj.footprint_radius):
            continue
        if not _segment_clear(start_xy, end_xy, obj.footprint_radius, others, margin=0.015):
            continue
        contact = start_xy - v * (obj.support_distance(v) + agent.finger_half_depth + 0.002)
        if not _clear(contact, 0.03, others, margin=0.01):
            continue
        moved = _moved_copy(obj, end_xy - start_xy)
        if not in_view(moved):
            continue
        yaw = float(np.arctan2(-v[0], v[1]))  # TCP +y along the push: the fingers' broad face pushes
        low = np.array([*contact, GRASP_Z])
        above = np.array([*contact, z_safe])
        pushed = np.array([*(contact + v * length), GRASP_Z])
        retreat = np.array([*(contact + v * length * 0.6), z_safe])
        opening = rng.uniform(0.0, 0.04)
        phases = [
            _approach(rng, home, above, opening, 0.0),
            Phase("descend", above, low, (0.0, 0.0), _jitter(rng, 0.6)),
            Phase(
                "push",
                low,
                pushed,
                (0.0, 0.0),
                _jitter(rng, 1.3),
                attach=True,
                roll_radius=obj.info["radius"] if obj.category == "ball" else None,
            ),
            Phase("retreat", pushed, retreat, (0.0, opening), _jitter(rng, 0.8)),
        ]
        task = Task("push", obj.parts[0].name, 0, direction=str(direction))
        return task, phases, yaw, 0
    return None


def _moved_copy(obj: SceneObject, shift_xy: np.ndarray) -> SceneObject:
    moved = SceneObject(obj.category, obj.color, obj.parts, obj.half_size, obj.height)
    moved.world_from_object = translation(shift_xy[0], shift_xy[1], 0.0) @ obj.world_from_object
    return moved


def _grasp_phases(rng, obj, agent, home, z_safe, support_z=0.0):
    """Returns (phases up to a closed grasp, yaw, grasp TCP position, open width)."""
    width = obj.grasp_width
    wide = min(width + 0.03, agent.max_opening)
    grasp = np.array([*obj.xy, support_z + GRASP_Z])
    above = np.array([*obj.xy, z_safe])
    phases = [
        _approach(rng, home, above, rng.uniform(0.0, 0.04), wide),
        Phase("descend", above, grasp, (wide, wide), _jitter(rng, 0.7)),
        Phase("grasp", grasp, grasp, (wide, width), _jitter(rng, 0.35)),
    ]
    return phases, _grasp_yaw(obj), grasp, wide


def _plan_lift(rng, action, obj, others, agent, workspace, home, z_safe, in_view):
    if obj.grasp_width is None or obj.grasp_width + 0.01 > agent.max_opening:
        return None
    phases, yaw, grasp, _ = _grasp_phases(rng, obj, agent, home, z_safe)
    lifted = grasp + np.array([0.0, 0.0, rng.uniform(0.1, 0.18)])
    phases.append(Phase("lift", grasp, lifted, (obj.grasp_width,) * 2, _jitter(rng, 1.2), attach=True))
    return Task("lift", obj.parts[0].name, 0), phases, yaw, 0


def _plan_pick_place(rng, action, obj, others, agent, workspace, home, z_safe, in_view):
    if obj.grasp_width is None or obj.grasp_width + 0.01 > agent.max_opening:
        return None
    relations = ["in", "next_to"] if any(o.category == "tray" for o in others) else ["next_to"]
    relation = str(rng.choice(relations))
    rest = [o for o in others]
    if relation == "in":
        dest = next(o for o in others if o.category == "tray")
        inner = min(dest.info["inner_half"])
        if (
            obj.footprint_radius > inner - 0.005
            or obj.grasp_width / 2 + 2 * agent.finger_half_thickness > inner - 0.004
        ):
            return None
        place_xy, support_z = dest.xy, dest.info["floor"]
    else:
        choices = [o for o in others if o.category != "tray" or True]
        dest = choices[int(rng.integers(len(choices)))]
        place_xy, support_z = None, 0.0
        for angle in rng.permutation(np.linspace(0, 2 * np.pi, 16, endpoint=False)):
            gap = rng.uniform(0.012, 0.03)
            best = None
            for c, r in _discs(dest)[:1]:
                best = c + np.array([np.cos(angle), np.sin(angle)]) * (r + obj.footprint_radius + gap)
            if best is None or np.linalg.norm(best - obj.xy) < 0.1:
                continue
            if not workspace.contains(best, obj.footprint_radius):
                continue
            if not _clear(best, obj.footprint_radius, [o for o in rest if o is not dest], margin=CLEARANCE):
                continue
            if not in_view(_moved_copy(obj, best - obj.xy)):
                continue
            place_xy = best
            break
        if place_xy is None:
            return None
    phases, yaw, grasp, wide = _grasp_phases(rng, obj, agent, home, z_safe)
    width = obj.grasp_width
    clear_z = max(o.height for o in others) + 0.03 + GRASP_Z
    lifted = np.array([*grasp[:2], clear_z])
    above_place = np.array([*place_xy, clear_z])
    placed = np.array([*place_xy, support_z + GRASP_Z])
    retreat = np.array([*place_xy, max(z_safe, clear_z + 0.05)])
    phases += [
        Phase("lift", grasp, lifted, (width, width), _jitter(rng, 0.7), attach=True),
        Phase("carry", lifted, above_place, (width, width), _jitter(rng, 1.2), attach=True),
        Phase("lower", above_place, placed, (width, width), _jitter(rng, 0.7), attach=True),
        Phase("release", placed, placed, (width, wide), _jitter(rng, 0.35)),
        Phase("retreat", placed, retreat, (wide, wide), _jitter(rng, 0.7)),
    ]
    task = Task(
        "pick_place",
        obj.parts[0].name,
        0,
        destination=dest.parts[0].name,
        destination_id=-1,
        relation=relation,
    )
    return task, phases, yaw, 0


def _plan_drawer(rng, action, obj, others, agent, workspace, home, z_safe, in_view):
    info = obj.info
    travel = rng.uniform(0.55, 1.0) * info["max_open"]
    opening = action == "open_drawer"
    if not opening:  # starts open: the drawer part rests `travel` out of the cabinet
        obj.parts[1].object_from_part = translation(0.0, -travel, 0.0)
    world = obj.world_from_object
    out = world[:3, :3] @ np.array([0.0, -1.0, 0.0])  # the drawer's sliding direction (out)
    yaw = obj.yaw  # fingers close along the cabinet's x axis
    if opening:
        grip = (world @ np.array([*info["handle"], 1.0]))[:3] + np.array([0.0, 0.0, 0.002])
        above = grip + np.array([0.0, 0.0, z_safe - grip[2]])
        pulled = grip + out * travel
        retreat = pulled + np.array([0.0, 0.0, z_safe - pulled[2]]) + out * 0.04
        phases = [
            _approach(rng, home, above, rng.uniform(0.0, 0.04), 0.035),
            Phase("descend", above, grip, (0.035, 0.035), _jitter(rng, 0.7)),
            Phase("grasp", grip, grip, (0.035, 0.010), _jitter(rng, 0.35)),
            Phase("pull", grip, pulled, (0.010, 0.010), _jitter(rng, 1.2), attach=True),
            Phase("release", pulled, pulled, (0.010, 0.035), _jitter(rng, 0.35)),
            Phase("retreat", pulled, retreat, (0.035, 0.035), _jitter(rng, 0.7)),
        ]
    else:
        side = rng.choice([-1.0, 1.0]) * (0.005 + 2 * agent.finger_half_thickness + 0.012)
        if abs(side) + 2 * agent.finger_half_thickness > info["drawer_half_width"]:
            return None
        local = np.array(
            [
                side,
                info["front"] - travel - agent.finger_half_depth - 0.004,
                info["drawer_bottom"] + 0.003,
                1.0,
            ]
        )
        start = (world @ local)[:3]
        above = start + np.array([0.0, 0.0, z_safe - start[2]])
        pushed = start - out * travel
        retreat = pushed + np.array([0.0, 0.0, z_safe - pushed[2]]) + out * 0.05
        phases = [
            _approach(rng, home, above, rng.uniform(0.0, 0.04), 0.0),
            Phase("descend", above, start, (0.0, 0.0), _jitter(rng, 0.7)),
            Phase("push", start, pushed, (0.0, 0.0), _jitter(rng, 1.2), attach=True),
            Phase("retreat", pushed, retreat, (0.0, 0.0), _jitter(rng, 0.8)),
        ]
    task = Task(action, obj.parts[1].name, 0)
    return task, phases, yaw, 1


def _plan_lid(rng, action, obj, others, agent, workspace, home, z_safe, in_view):
    opening = action == "open_lid"
    angle = np.radians(rng.uniform(70, 105))
    theta_from, theta_to = (0.0, angle) if opening else (angle, 0.0)
    lid_rest = obj.parts[1].object_from_part.copy()
    obj.parts[1].object_from_part = lid_rest @ rotation_x(-theta_from)
    world = obj.world_from_object
    tab = np.array([*obj.info["tab"], 1.0])

    def lid_pose(s: np.ndarray) -> np.ndarray:
        theta = theta_from + s * (theta_to - theta_from)
        # a phase may hold no frame of a short clip (T = 2): an empty s gives no pose
        return np.array([world @ lid_rest @ rotation_x(-th) for th in theta]).reshape(-1, 4, 4)

    def tab_path(s: np.ndarray) -> np.ndarray:
        return (lid_pose(s) @ tab)[:, :3]

    grip, done = tab_path(np.zeros(1))[0], tab_path(np.ones(1))[0]
    top = max(z_safe, grip[2] + 0.06, done[2] + 0.06)
    above = np.array([*grip[:2], top])
    retreat = np.array([*done[:2], top])
    phases = [
        _approach(rng, home, above, rng.uniform(0.0, 0.04), 0.035),
        Phase("descend", above, grip, (0.035, 0.035), _jitter(rng, 0.7)),
        Phase("grasp", grip, grip, (0.035, 0.010), _jitter(rng, 0.35)),
        Phase("swing", grip, done, (0.010, 0.010), _jitter(rng, 1.4), path=tab_path, target_pose=lid_pose),
        Phase("release", done, done, (0.010, 0.035), _jitter(rng, 0.35)),
        Phase("retreat", done, retreat, (0.035, 0.035), _jitter(rng, 0.7)),
    ]
    return Task(action, obj.parts[1].name, 0), phases, obj.yaw, 1
