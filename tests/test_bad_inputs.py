"""The fault table: every entry point x bad input the kit has been tried with, and the clear error
it gives instead of a traceback, a hang or a silently wrong result (README, "Reliability").

Cases live next to their area in ``tests/faults_*.py`` (a ``CASES`` list of ``tests.faults.Fault``);
this module collects and runs them all.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.faults import Fault

AREAS = sorted(p.stem for p in Path(__file__).parent.glob("faults_*.py"))
CASES: list[Fault] = [case for area in AREAS for case in importlib.import_module(f"tests.{area}").CASES]


def test_the_table_covers_every_area_and_ids_are_unique():
    assert len(CASES) >= 60 and len(AREAS) >= 3, (len(CASES), AREAS)
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_gives_a_clear_error(case: Fault, tmp_path):
    with pytest.raises(case.error) as raised:
        case.call(tmp_path)
    assert case.fragment in str(raised.value), (
        f"{case.id}: message {str(raised.value)!r} lacks {case.fragment!r}"
    )
