"""The fault table's building block: one bad input to one entry point and the error it must give.

Each area lists its cases in ``tests/faults_<area>.py`` as ``CASES: list[Fault]``;
``tests/test_bad_inputs.py`` runs them all, one parametrised test, so the table stays visible in one
place and grows with every fix (README, "Reliability").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fault:
    """``call(tmp_path)`` must raise ``error`` whose message contains ``fragment`` (a plain substring)."""

    entry: str  # the entry point, as a user meets it: "MoMapPipeline.__call__", "momap eval", "SimConfig"
    bad_input: str  # what is wrong, in a few words: "depth with NaN holes", "fov_deg = 0"
    call: Callable[[Path], object]  # does the bad thing in a fresh temporary folder
    error: type[BaseException]
    fragment: str  # part of the message that names the field and what was expected

    @property
    def id(self) -> str:
        return f"{self.entry}: {self.bad_input}"
