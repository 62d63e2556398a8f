"""Motion variants: one scene, task and start frame with the motion re-drawn (``SimConfig.motion_variant``).

Variant 0 is the clip as planned with the scene. A variant ``k`` > 0 keeps everything the
reference frame shows (objects at rest, the agent at its home pose with its yaw and finger
opening, the camera at t = 0, the prompt) and re-draws, from its own random stream:

========================  ==================================================================
what                      range (relative to the planned motion unless said otherwise)
========================  ==================================================================
timing                    task start at clip time U(0, 0.08), end at U(0.9, 1.0)
phase durations           each x U(0.75, 1.33)
speed profile             clip time warped by ``t + a sin(2 pi t) / (2 pi)``, ``a`` ~ U(-0.5, 0.5)
approach path             an arc: +-5 cm sideways, 0..4 cm up at mid-approach
hand wobble               smooth, up to 8 mm sideways and 4 mm up, on free-space phases
retreat                   0..4 cm higher
grasp height              fingertips 0..min(2 cm, 30 % of the object's height) higher
push                      distance U(6, 12) cm (as planned), heading +-10 deg off the word's axis
lift                      height U(10, 18) cm (as planned)
pick and place            "in": anywhere on the tray's floor; "next to": another side and gap
                          (1.2..3 cm) of the destination; carried 0..5 cm higher, arcing up
                          to 3 cm more mid-carry
open drawer / lid         how far: 55..100 % of the drawer's travel, lid 70..105 deg (as planned)
close drawer / lid        only the above (the end state is fixed: shut)
egocentric camera path    re-drawn hand-held wobble (same amplitudes), starting at the same pose
========================  ==================================================================

A re-drawn free parameter that makes the motion infeasible (the pushed or placed object would
leave the view or hit another object) is drawn again, up to 12 times, and otherwise kept as
planned. The task's meaning never changes: a push left stays a push left (the heading stays
within 10 degrees of the camera's left), a lift stays a lift, an "in" stays in the tray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from momaplib.sim.motion import Phase
from momaplib.sim.tasks import CLEARANCE, Plan, Workspace, _clear, _discs, _moved_copy, _segment_clear

#: Salt of the motion variants' random stream: ``default_rng([seed, task_variant, MOTION_STREAM, k])``.
MOTION_STREAM = 0x6D6F74
_TRIES = 12


def motion_rng(seed: int, task_variant: int, motion_variant: int) -> np.random.Generator | None:
    """Returns the random stream of a motion variant (None for variant 0: the planned motion)."""
    if not motion_variant:
        return None
    return np.random.default_rng([seed, task_variant, MOTION_STREAM, motion_variant])


def vary_timing(rng: np.random.Generator, times: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Returns warped clip times [T] (0 stays 0, 1 stays 1, strictly increasing) and a new (start, end)."""
    a = rng.uniform(-0.5, 0.5)
    warped = times + a * np.sin(2 * np.pi * times) / (2 * np.pi)
    return warped, rng.uniform(0.0, 0.08), rng.uniform(0.9, 1.0)


def vary_plan(rng: np.random.Generator, plan: Plan, agent, workspace: Workspace, in_view) -> Plan:
    """Returns ``plan`` with its phases re-drawn (see the module docstring); t = 0 is unchanged.

    The task, prompt, objects, target rest pose and agent yaw are shared with ``plan``; the home
    position and first finger opening (the agent at t = 0) are the first phase's start.
    """
    phases = [replace(p) for p in plan.phases]
    action = plan.task.action
    obj = plan.objects[plan.target_object]
    others = [o for i, o in enumerate(plan.objects) if i != plan.target_object]
    if action == "push":
        _vary_push(rng, phases, obj, others, workspace, in_view)
    elif action == "lift":
        _raise_grasp(rng, phases, obj, upto=4)
        grasp = phases[3].start
        phases[3] = replace(phases[3], end=grasp + np.array([0.0, 0.0, rng.uniform(0.1, 0.18)]))
    elif action == "pick_place":
        _vary_pick_place(rng, phases, plan, agent, others, workspace, in_view)
    elif action == "open_drawer":
        grip, pulled = phases[3].start, phases[3].end
        out = (pulled - grip) / np.linalg.norm(pulled - grip)
        travel = rng.uniform(0.55, 1.0) * obj.info["max_open"]
        _shift_from(phases, 3, grip + out * travel - pulled)
    elif action == "open_lid":
        _vary_lid(rng, phases)
    _vary_free_space(rng, phases)
    phases = [replace(p, duration=p.duration * rng.uniform(0.75, 1.33)) for p in phases]
    return replace(plan, phases=phases)


def _shift_from(phases: list[Phase], index: int, delta: np.ndarray) -> None:
    """Moves the end of phase ``index`` and every later phase by ``delta`` [3] (a new end point)."""
    phases[index] = replace(phases[index], end=phases[index].end + delta)
    for i in range(index + 1, len(phases)):
        phases[i] = replace(phases[i], start=phases[i].start + delta, end=phases[i].end + delta)


def _vary_push(rng, phases, obj, others, workspace, in_view) -> None:
    low, pushed = phases[2].start, phases[2].end
    planned = pushed[:2] - low[:2]
    for _ in range(_TRIES):
        angle = np.radians(rng.uniform(-10.0, 10.0))
        c, s = np.cos(angle), np.sin(angle)
        heading = np.array([[c, -s], [s, c]]) @ planned / np.linalg.norm(planned)
        shift = heading * rng.uniform(0.06, 0.12)
        end_xy = obj.xy + shift
        if not workspace.contains(end_xy, obj.footprint_radius):
            continue
        if not _segment_clear(obj.xy, end_xy, obj.footprint_radius, others, margin=0.015):
            continue
        if not in_view(_moved_copy(obj, shift)):
            continue
        _shift_from(phases, 2, np.array([*(shift - planned), 0.0]))
        return


def _raise_grasp(rng, phases: list[Phase], obj, upto: int) -> None:
    """Raises the grasp point (descend end, grasp, and phases 3..upto-1 starts) by a random height."""
    lift = np.array([0.0, 0.0, rng.uniform(0.0, min(0.02, 0.3 * obj.height))])
    phases[1] = replace(phases[1], end=phases[1].end + lift)
    phases[2] = replace(phases[2], start=phases[2].start + lift, end=phases[2].end + lift)
    for i in range(3, upto):
        phases[i] = replace(phases[i], start=phases[i].start + lift)


def _vary_pick_place(rng, phases, plan: Plan, agent, others, workspace, in_view) -> None:
    # phases: approach, descend, grasp, lift, carry, lower, release, retreat
    obj = plan.objects[plan.target_object]
    dest = next(o for o in others if o.parts[0].name == plan.task.destination)
    _raise_grasp(rng, phases, obj, upto=4)
    dz = phases[2].start[2] - plan.phases[2].start[2]
    place_xy = phases[5].end[:2]
    if plan.task.relation == "in":
        # the object and the open fingers around it stay inside the rim
        fingers = obj.grasp_width / 2 + 2 * agent.finger_half_thickness
        room = np.array(dest.info["inner_half"]) - max(obj.footprint_radius, fingers) - 0.005
        if (room > 0).all():
            local = rng.uniform(-1.0, 1.0, size=2) * room
            place_xy = dest.xy + dest.world_from_object[:2, :2] @ local
    else:
        centre, radius = _discs(dest)[0]
        rest = [o for o in others if o is not dest]
        for _ in range(_TRIES):
            angle = rng.uniform(0.0, 2 * np.pi)
            xy = centre + np.array([np.cos(angle), np.sin(angle)]) * (
                radius + obj.footprint_radius + rng.uniform(0.012, 0.03)
            )
            if np.linalg.norm(xy - obj.xy) < 0.1 or not workspace.contains(xy, obj.footprint_radius):
                continue
            if not _clear(xy, obj.footprint_radius, rest, margin=CLEARANCE) or not in_view(
                _moved_copy(obj, xy - obj.xy)
            ):
                continue
            place_xy = xy
            break
    higher = rng.uniform(0.0, 0.05)
    lifted = phases[3].end + np.array([0.0, 0.0, higher])
    above = np.array([*place_xy, lifted[2]])
    placed = np.array([*place_xy, plan.phases[5].end[2] + dz])
    retreat = np.array([*place_xy, max(phases[7].end[2], lifted[2] + 0.05)])
    phases[3] = replace(phases[3], end=lifted)
    phases[4] = replace(phases[4], start=lifted, end=above)
    phases[5] = replace(phases[5], start=above, end=placed)
    phases[6] = replace(phases[6], start=placed, end=placed)
    phases[7] = replace(phases[7], start=placed, end=retreat)


def _vary_lid(rng, phases: list[Phase]) -> None:
    """Scales how far the lid swings open; the hinge path and lid pose closures are re-parametrised."""
    swing = phases[3]
    first, last = swing.target_pose(np.zeros(1))[0], swing.target_pose(np.ones(1))[0]
    cos = np.clip((np.trace(first[:3, :3].T @ last[:3, :3]) - 1) / 2, -1.0, 1.0)
    scale = np.radians(rng.uniform(70.0, 105.0)) / max(float(np.arccos(cos)), 1e-9)
    path, pose = swing.path, swing.target_pose

    def scaled_path(s: np.ndarray) -> np.ndarray:
        return path(s * scale)

    def scaled_pose(s: np.ndarray) -> np.ndarray:
        return pose(s * scale)

    done = scaled_path(np.ones(1))[0]
    top = max(phases[5].end[2], done[2] + 0.06)
    phases[3] = replace(swing, end=done, path=scaled_path, target_pose=scaled_pose)
    phases[4] = replace(phases[4], start=done, end=done)
    phases[5] = replace(phases[5], start=done, end=np.array([*done[:2], top]))


def _wobble(rng: np.random.Generator, amplitude: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Returns s [n] -> [n, 3] smooth offsets, zero at s = 0 and 1, the z offset never negative."""
    freq = rng.uniform(0.5, 2.0, size=(3, 3))
    phase = rng.uniform(0, 2 * np.pi, size=(3, 3))
    weight = rng.dirichlet(np.ones(3), size=3).T  # [3 terms, 3 axes]

    def offsets(s: np.ndarray) -> np.ndarray:
        wave = (weight[None] * np.sin(2 * np.pi * freq[None] * s[:, None, None] + phase[None])).sum(1)
        wave[:, 2] = (wave[:, 2] + 1) / 2  # up only: the fingertips never dip below the planned path
        return np.sin(np.pi * s)[:, None] * wave * amplitude

    return offsets


def _curved(phase: Phase, bulge: np.ndarray, wobble: Callable[[np.ndarray], np.ndarray]) -> Phase:
    """Returns ``phase`` following an arc through ``bulge`` [3] at mid-phase plus ``wobble``."""
    base = phase.tcp

    def path(s: np.ndarray) -> np.ndarray:
        return base(s) + np.sin(np.pi * s)[:, None] * bulge + wobble(s)

    return replace(phase, path=path)


def _vary_free_space(rng: np.random.Generator, phases: list[Phase]) -> None:
    """Curves the approach, raises the retreat and adds hand wobble to phases in free space."""
    amplitude = np.array([0.008, 0.008, 0.004])
    bulge = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.0, 0.04)])
    phases[0] = _curved(phases[0], bulge, _wobble(rng, amplitude))
    last = phases[-1]
    if last.name == "retreat":
        phases[-1] = replace(last, end=last.end + np.array([0.0, 0.0, rng.uniform(0.0, 0.04)]))
        phases[-1] = _curved(phases[-1], np.zeros(3), _wobble(rng, amplitude))
    for i, phase in enumerate(phases):
        if phase.name == "carry":
            phases[i] = _curved(phase, np.array([0.0, 0.0, rng.uniform(0.0, 0.03)]), _wobble(rng, amplitude))
