"""The package's layers: every module imports only from its own layer or the layers below it.

Layers, lowest first (README "Layout"): core -> data sources -> metrics -> stages -> baselines and
evaluation -> figures -> apps. Within a layer, packages may import each other as long as no two
packages import each other (directly or round a cycle). Private names (``_name``) are never
imported from another package. The checker reads imports with ``ast`` (function-level imports
count too), so it needs no import of the package and runs on a synthetic tree in the tests below.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (layer name, top-level units of ``momaplib``) lowest first; a unit is a sub-package or module.
LAYERS = (
    ("core", ("momap", "geometry", "storage", "checkpoints", "checks")),
    ("data", ("sim", "data")),
    ("metrics", ("metrics",)),
    ("stages", ("training", "recon", "vae", "diffusion", "render", "video", "control")),
    ("evaluation", ("baselines", "eval")),
    ("figures", ("viz",)),
    ("apps", ("ui", "demo", "videos", "cli")),
)


@dataclass(frozen=True)
class Import:
    path: Path  # the importing file
    line: int
    text: str  # the source line
    unit: str  # importing unit
    target_unit: str  # imported unit
    names: tuple[str, ...]  # names taken from the target (``from x import a, b``)


def _module_name(path: Path, root: Path, package: str) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def package_imports(root: Path, package: str) -> list[Import]:
    """Returns every import of ``package.<unit>`` made by a module of ``root/package`` (``root`` is the
    folder that holds the package), relative imports resolved."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        module = _module_name(path, root, package)
        if len(module) < 2:
            continue  # package/__init__.py: re-exports nothing here
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [(alias.name.split("."), ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    is_package = path.name == "__init__.py"
                    base = module[: len(module) - node.level + (1 if is_package else 0)]
                    target = base + (node.module.split(".") if node.module else [])
                else:
                    target = (node.module or "").split(".")
                names = tuple(alias.name for alias in node.names)
                if node.module is None or len(target) == 1:  # from package import unit
                    targets = [([*target, name], ()) for name in names]
                else:
                    targets = [(target, names)]
            else:
                continue
            for target, names in targets:
                if target[0] != package or len(target) < 2:
                    continue
                text = lines[node.lineno - 1].strip()
                found.append(Import(path, node.lineno, text, module[1], target[1], names))
    return found


def layer_violations(root: Path, package: str, layers=LAYERS) -> list[str]:
    """Returns one message per broken rule (empty: the package is layered), each naming the file,
    line and source text of an offending import."""
    rank = {unit: i for i, (_, units) in enumerate(layers) for unit in units}
    layer_name = {unit: name for name, units in layers for unit in units}
    imports = package_imports(root, package)
    problems = []
    units = {m[1] for p in (root / package).rglob("*.py") if len(m := _module_name(p, root, package)) > 1}
    for unit in sorted(units - set(rank)):
        problems.append(f"{package}.{unit}: not in any layer; add it to LAYERS (tests/test_layers.py)")
    edges: dict[tuple[str, str], Import] = {}
    for imp in imports:
        where = f"{imp.path.relative_to(root)}:{imp.line}: {imp.text}"
        if imp.unit in rank and imp.target_unit in rank and rank[imp.target_unit] > rank[imp.unit]:
            problems.append(
                f"{where}  <- upward import: {imp.unit} ({layer_name[imp.unit]}) imports "
                f"{imp.target_unit} ({layer_name[imp.target_unit]})"
            )
        if imp.unit != imp.target_unit:
            edges.setdefault((imp.unit, imp.target_unit), imp)
            private = [name for name in imp.names if name.startswith("_") and not name.startswith("__")]
            if private:
                problems.append(f"{where}  <- private name(s) {private} imported from another package")
    problems += _cycles(edges, root)
    return problems


def _cycles(edges: dict[tuple[str, str], Import], root: Path) -> list[str]:
    """Returns one message per cycle of the unit graph, with an import line for every edge of it."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    problems, seen_cycles = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                key = frozenset(pairwise(cycle))
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    lines = [
                        f"{edges[a, b].path.relative_to(root)}:{edges[a, b].line}: {edges[a, b].text}"
                        for a, b in pairwise(cycle)
                    ]
                    problems.append(f"import cycle {' -> '.join(cycle)}: " + "; ".join(lines))
            elif len(path) < 12:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return problems


def test_momaplib_is_layered():
    problems = layer_violations(ROOT, "momaplib")
    assert not problems, "\n".join(problems)


def test_every_module_stays_small():
    """A module past 500 lines is usually two responsibilities (README "Layout")."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "momaplib").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"modules over 500 lines: {long}"


# ----------------------------------------------------------------------------- the checker itself
TINY_LAYERS = (("low", ("core",)), ("mid", ("stage", "other")), ("high", ("app",)))


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"pkg/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_layered_tree_passes(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/core.py": "X = 1\n",
            "pkg/stage/__init__.py": "from pkg.stage.model import Model\n",
            "pkg/stage/model.py": "from pkg.core import X\nfrom . import helpers\n",
            "pkg/stage/helpers.py": "from .model import _private_inside_the_package\n",
            "pkg/other.py": "import pkg.stage\n",
            "pkg/app.py": "from pkg import core, stage\n",
        },
    )
    assert layer_violations(root, "pkg", TINY_LAYERS) == []


def test_an_upward_import_fails_with_its_line(tmp_path):
    root = _tree(
        tmp_path,
        {
            "pkg/core.py": "import os\n\n\ndef f():\n    from pkg.app import main  # lazy, still counts\n",
            "pkg/stage.py": "from ..pkg import core\n",
            "pkg/app.py": "def main(): ...\n",
        },
    )
    problems = layer_violations(root, "pkg", TINY_LAYERS)
    assert len(problems) == 1
    assert "pkg/core.py:5: from pkg.app import main  # lazy, still counts" in problems[0]
    assert "upward import: core (low) imports app (high)" in problems[0]


def test_a_relative_upward_import_fails(tmp_path):
    root = _tree(tmp_path, {"pkg/core/__init__.py": "from ..stage import thing\n", "pkg/stage.py": ""})
    (problem,) = layer_violations(root, "pkg", TINY_LAYERS)
    assert "pkg/core/__init__.py:1: from ..stage import thing" in problem and "upward" in problem


def test_a_cycle_within_a_layer_fails_and_names_both_lines(tmp_path):
    root = _tree(
        tmp_path,
        {"pkg/stage.py": "from pkg.other import b\na = 1\n", "pkg/other.py": "b = 2\n\nimport pkg.stage\n"},
    )
    problems = layer_violations(root, "pkg", TINY_LAYERS)
    assert len(problems) == 1 and problems[0].startswith("import cycle")
    assert "pkg/stage.py:1: from pkg.other import b" in problems[0]
    assert "pkg/other.py:3: import pkg.stage" in problems[0]


def test_private_names_from_another_package_and_unknown_units_fail(tmp_path):
    root = _tree(
        tmp_path, {"pkg/core.py": "_x = 1\n", "pkg/app.py": "from pkg.core import _x\n", "pkg/new.py": ""}
    )
    problems = layer_violations(root, "pkg", TINY_LAYERS)
    assert any("pkg/app.py:1: from pkg.core import _x" in p and "private" in p for p in problems)
    assert any(p.startswith("pkg.new: not in any layer") for p in problems)
    assert len(problems) == 2


@pytest.mark.parametrize(
    "bad", ["from momaplib.ui import SamplingPanel\n", "from momaplib.viz import save_figure\n"]
)
def test_the_real_package_fails_with_an_upward_import_added(tmp_path, bad):
    """The check on momaplib itself: a copy with one upward import added to the core fails."""
    import shutil

    shutil.copytree(ROOT / "momaplib", tmp_path / "momaplib", ignore=shutil.ignore_patterns("__pycache__"))
    geometry = tmp_path / "momaplib" / "geometry.py"
    geometry.write_text(geometry.read_text() + "\n\ndef _late():\n    " + bad)
    problems = layer_violations(tmp_path, "momaplib")
    upward = [p for p in problems if "upward import" in p]
    assert len(upward) == 1 and "momaplib/geometry.py" in upward[0] and "geometry (core)" in upward[0]
    # and the new edge closes cycles through the packages that import the core
    assert all(
        p.startswith("import cycle") and "momaplib/geometry.py" in p for p in problems if p not in upward
    )
