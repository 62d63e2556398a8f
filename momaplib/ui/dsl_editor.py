"""A motion-DSL editor as ipywidgets: one row per patch, one dropdown per time window.

Each dropdown holds the patch's three words for that window (``x / y / z``, e.g.
``left / stay / stay``; the 27 combinations of ``momaplib.control.AXIS_WORDS``), so a student can make
the red block go left in the second window and watch the samples change. ``DSLEditor.dsl()``
reads the widgets back as a validated ``MotionDSL``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from momaplib.control import AXIS_WORDS, MotionDSL, window_frames

#: every word triple a window can hold, "stay / stay / stay" first
CHOICES = [" / ".join(words) for words in itertools.product(*[(w[1], w[0], w[2]) for w in AXIS_WORDS])]


def _choice(step: tuple[str, str, str]) -> str:
    return " / ".join(step)


class DSLEditor:
    """Dropdowns for the DSL of one scene: ``ids`` / ``labels`` of its patches, ``num_windows``
    windows of ``window`` frames, starting from ``initial`` (default: every patch stays)."""

    def __init__(
        self,
        ids: list[int],
        labels: Mapping[int, str],
        num_windows: int,
        window: int,
        initial: MotionDSL | None = None,
        fps: float = 10.0,
        num_frames: int | None = None,
    ):
        import ipywidgets as W

        self.ids, self.window, self.fps = [int(i) for i in ids], int(window), float(fps)
        self.labels = {i: str(labels.get(i, f"patch {i}")) for i in self.ids}
        start = {p.id: p.motion for p in initial.patches} if initial is not None else {}
        self.dropdowns: dict[int, list[Any]] = {}
        rows = []
        for patch_id in self.ids:
            steps = start.get(patch_id, [("stay", "stay", "stay")] * num_windows)
            boxes = [
                W.Dropdown(options=CHOICES, value=_choice(step), layout=W.Layout(width="190px"))
                for step in steps
            ]
            self.dropdowns[patch_id] = boxes
            name = W.Label(f"{patch_id}: {self.labels[patch_id]}", layout=W.Layout(width="130px"))
            rows.append(W.HBox([name, *boxes]))
        header = [W.Label("patch", layout=W.Layout(width="130px"))]
        header += [
            W.Label(f"frames {start}-{end} (x / y / z)", layout=W.Layout(width="190px"))
            for start, end in window_frames(num_windows, window, num_frames)
        ]
        self.widget = W.VBox([W.HBox(header), *rows])

    @classmethod
    def for_scene(
        cls, instance_map: Any, labels: Mapping[int, str], num_windows: int, window: int, initial=None,
        num_frames: int | None = None,
    ):  # fmt: skip
        """Returns the editor of every instance (id > 0) of ``instance_map`` (windows of a
        ``num_frames``-frame clip, for the column labels)."""
        instance_map = np.asarray(instance_map)
        ids = sorted(int(i) for i in np.unique(instance_map[instance_map > 0]))
        return cls(ids, labels, num_windows, window, initial, num_frames=num_frames)

    def dsl(self) -> MotionDSL:
        """Returns the DSL the dropdowns show."""
        lookup = [{word: i - 1 for i, word in enumerate(words)} for words in AXIS_WORDS]
        flags = np.array(
            [
                [
                    [lookup[a][word] for a, word in enumerate(box.value.split(" / "))]
                    for box in self.dropdowns[i]
                ]
                for i in self.ids
            ],
            dtype=np.int8,
        ).reshape(len(self.ids), -1, 3)
        return MotionDSL.from_flags(
            self.ids, [self.labels[i] for i in self.ids], flags, self.window, self.fps
        )

    def set(self, dsl: MotionDSL) -> None:
        """Shows ``dsl`` in the dropdowns (its patches that the editor has)."""
        for patch in dsl.patches:
            for box, step in zip(self.dropdowns.get(patch.id, []), patch.motion, strict=False):
                box.value = _choice(step)
