"""Every notebook is committed without outputs, reads as a lesson, and runs top to bottom in smoke mode.

Each notebook's cell tagged ``parameters`` sets ``SMOKE = not torch.cuda.is_available()``: on a
CPU (CI, a laptop) the committed default *is* the smoke run, so the notebook runs exactly as
committed. Only where this interpreter sees a GPU does the harness force the smoke run, following
papermill's convention: a cell ``SMOKE = True`` is injected right after the cell tagged
``parameters``. Notebooks derive their other parameters from ``SMOKE`` in that same
cell, so the injected cell also re-runs the rest of the parameters cell (without its own ``SMOKE``
assignment); otherwise e.g. ``NUM_CLIPS = 3 if SMOKE else 24`` would keep its full-size value.

Notebooks execute in memory with nbclient on a kernel of *this* interpreter (the venv's
``sys.executable`` with its ipykernel, whatever kernelspecs a user has installed), with the
``notebooks/`` folder as working directory; nothing is written back to the notebook files. A
notebook may raise its time limit with ``{"momaplib": {"smoke_timeout_s": N}}`` in its metadata.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from traitlets import default

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Wall-clock limit of one notebook's smoke run, unless its metadata says otherwise.
DEFAULT_TIMEOUT_S = 300
#: Most lines of code a notebook may carry (logic and drawing belong in momaplib).
MAX_CODE_LINES = 130
#: Time allowed for the kernel to start and answer, on top of the notebook's limit.
KERNEL_STARTUP_S = 120
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ThisInterpreterKernelManager(AsyncKernelManager):
    """Starts the native "python3" kernel of *this* interpreter (``sys.executable``).

    User- or system-wide kernelspecs named "python3" may point at another Python without momaplib;
    with no kernel folders to search, jupyter_client falls back to ipykernel's own spec, whose
    command is ``sys.executable -m ipykernel_launcher``.
    """

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[])


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _timeout_s(path: Path) -> int:
    return int(_read(path).metadata.get("momaplib", {}).get("smoke_timeout_s", DEFAULT_TIMEOUT_S))


def _smoke_cell_source(parameters_source: str, name: str) -> str:
    """Returns ``SMOKE = True`` followed by the parameters cell without its ``SMOKE`` assignments."""
    lines = parameters_source.splitlines()
    smoke_lines: set[int] = set()
    try:
        for node in ast.parse(parameters_source).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(target, ast.Name) and target.id == "SMOKE" for target in targets):
                smoke_lines.update(range(node.lineno, node.end_lineno + 1))
    except SyntaxError:  # IPython syntax (%magics) in the cell: fall back to one-line assignments
        smoke_lines = {n for n, line in enumerate(lines, 1) if re.match(r"\s*SMOKE\s*(:[^=]*)?=[^=]", line)}
    if not smoke_lines:
        pytest.fail(
            f"{name}: the cell tagged 'parameters' must assign SMOKE (e.g. `SMOKE = False`)", pytrace=False
        )
    rest = [line for number, line in enumerate(lines, 1) if number not in smoke_lines]
    return "\n".join(["SMOKE = True  # injected by tests/test_notebooks.py", *rest]).rstrip() + "\n"


def _inject_smoke(nb: nbformat.NotebookNode, name: str) -> int:
    """Inserts the smoke cell after the ``parameters`` cell; returns the injected cell's index."""
    tagged = [
        i for i, cell in enumerate(nb.cells) if "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    if not tagged:
        pytest.fail(
            f"{name}: no cell is tagged 'parameters'; tag the cell that sets `SMOKE = False` "
            '(cell metadata {"tags": ["parameters"]}) so the smoke run can override it',
            pytrace=False,
        )
    index = tagged[0]
    source = _smoke_cell_source(nb.cells[index].source, name)
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return index + 1


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _parameters_cell(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    tagged = [cell for cell in nb.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        pytest.fail(f"{name}: expected one cell tagged 'parameters', found {len(tagged)}", pytrace=False)
    return tagged[0]


def _is_device_default(node: ast.expr) -> bool:
    """True for the expression ``not torch.cuda.is_available()``."""
    return (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.Not)
        and isinstance(node.operand, ast.Call)
        and ast.unparse(node.operand.func) == "torch.cuda.is_available"
    )


def _failure_report(nb: nbformat.NotebookNode, name: str, injected: int, exc: Exception) -> str:
    """Returns the source and traceback of the cell that failed, numbered as in the notebook file."""
    for index, cell in enumerate(nb.cells):
        errors = [output for output in cell.get("outputs", []) if output.get("output_type") == "error"]
        if cell.cell_type == "code" and errors:
            number = index if injected < 0 or index < injected else index - 1
            where = "the injected smoke parameters cell" if index == injected else f"cell {number}"
            traceback = ANSI_ESCAPE.sub("", "\n".join(errors[0].get("traceback", [])))
            return (
                f"{name}: {where} (0-based, counting markdown cells) failed in smoke mode\n"
                f"----- source -----\n{cell.source}\n----- traceback -----\n{traceback}"
            )
    return f"{name}: smoke run failed\n{ANSI_ESCAPE.sub('', str(exc))}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_smoke_defaults_by_device(path: Path):
    """``SMOKE = not torch.cuda.is_available()``: minutes on a CPU, the full run on a GPU."""
    source = _parameters_cell(_read(path), path.name).source
    values = [
        node.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SMOKE" for t in node.targets)
    ]
    assert len(values) == 1 and _is_device_default(values[0]), (
        f"{path.name}: the parameters cell must set `SMOKE = not torch.cuda.is_available()`, got "
        f"{[ast.unparse(v) for v in values]}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_a_lesson(path: Path):
    """Thin, and shaped like a lesson: what you will learn and the paper section first, exercises last."""
    nb = _read(path)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    lines = sum(
        1
        for source in code
        for line in source.splitlines()
        if line.strip() and not line.strip().startswith("#")
    )
    assert lines <= MAX_CODE_LINES, f"{path.name}: {lines} lines of code (at most {MAX_CODE_LINES})"
    opening = " ".join(cell.source for cell in nb.cells[:3] if cell.cell_type == "markdown").lower()
    assert "what you will learn" in opening and "paper §" in opening, (
        f"{path.name}: the opening markdown must say what you will learn and which paper section it follows"
    )
    closing = " ".join(cell.source for cell in nb.cells[-3:] if cell.cell_type == "markdown").lower()
    assert "exercises" in closing, f"{path.name}: the notebook must end with exercises for students"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(path: Path):
    nb = _read(path)
    dirty = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} have outputs or execution counts; "
        "run `make strip-notebooks` before committing"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_smoke_mode(path: Path):
    nb = _read(path)
    # On a CPU the committed default (SMOKE = not torch.cuda.is_available()) is the smoke run.
    injected = _inject_smoke(nb, path.name) if _has_gpu() else -1
    timeout_s = _timeout_s(path)
    started = time.monotonic()
    deadline = started + timeout_s + KERNEL_STARTUP_S

    def remaining_s(cell) -> int:  # nbclient asks before each cell: the notebook shares one budget
        return max(1, round(deadline - time.monotonic()))

    client = NotebookClient(
        nb,
        kernel_manager_class=ThisInterpreterKernelManager,
        kernel_name="python3",
        timeout_func=remaining_s,
        startup_timeout=KERNEL_STARTUP_S,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    env = dict(os.environ)
    # Import the working tree's momaplib even where it is not installed in editable mode.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning on 3.11+
    failure = None
    try:
        client.execute(env=env)
    except CellTimeoutError as exc:
        failure = f"{path.name}: smoke run exceeded {timeout_s} s\n{ANSI_ESCAPE.sub('', str(exc))}"
    except (CellExecutionError, DeadKernelError) as exc:
        failure = _failure_report(nb, path.name, injected, exc)
    if failure:  # raised outside the except blocks: the report replaces nbclient's own traceback
        pytest.fail(failure, pytrace=False)
    elapsed = time.monotonic() - started
    print(f"{path.name}: smoke run took {elapsed:.1f} s with {sys.executable}")
