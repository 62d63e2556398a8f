"""Project plumbing: the two commands, CI entry point and conda environment stay consistent."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_readme_opens_with_the_two_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    commands = [line.split("#")[0].strip() for line in lines[:6] if line.startswith("make ")]
    assert commands == ["make demo", "make test"], lines[:6]


def test_ci_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", script, flags=re.MULTILINE)


def test_environment_yml_lists_every_dependency_with_the_same_bounds():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*pyproject["dependencies"], *pyproject["optional-dependencies"]["dev"]]
    wanted += pyproject["optional-dependencies"]["notebooks"]
    listed = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"^\s*-\s+([A-Za-z0-9_.\-]+)\s*((?:[<>=!~]=?|==)\s*[^\s#]+)?", line)
        if match and not line.strip().startswith("- -"):
            listed[match.group(1).lower().replace("_", "-")] = (match.group(2) or "").replace(" ", "")
    for requirement in wanted:
        name = _name(requirement)
        assert name in listed, f"environment.yml misses {name}"
        bound = requirement[len(name) :].strip().split(";")[0]
        if bound and not bound.startswith("["):
            assert listed[name] == bound, (
                f"{name}: pyproject says {bound}, environment.yml says {listed[name]}"
            )


def test_bundled_weights_are_fp16_shards_within_the_size_limits():
    from safetensors import safe_open

    files = sorted((ROOT / "checkpoints").rglob("*.safetensors"))
    assert files, "no bundled weights under checkpoints/"
    sizes = {path.relative_to(ROOT).as_posix(): path.stat().st_size for path in files}
    too_big = {name: size for name, size in sizes.items() if size > 15 * 2**20}
    assert not too_big, too_big
    assert sum(sizes.values()) <= 60 * 2**20, sum(sizes.values())
    for path in files:
        with safe_open(path, "pt") as weights:
            dtypes = {str(weights.get_slice(key).get_dtype()) for key in weights.keys()}
        assert dtypes <= {"F16", "I64"}, (path.name, dtypes)
    for config in (ROOT / "checkpoints").rglob("config.json"):
        assert "_name_or_path" not in config.read_text(), f"{config}: a training machine's path"


def test_the_card_carries_the_readmes_deviations_table():
    readme = (ROOT / "README.md").read_text()
    section = readme.index("## Deviations from the paper")
    start = readme.index("| | paper |", section)
    table = readme[start : readme.index("\n\n", start)]
    card = (ROOT / "checkpoints" / "README.md").read_text()
    between = card.split("<!-- deviations start -->\n", 1)[1].split("\n<!-- deviations end -->", 1)[0]
    assert table.count("\n") > 10 and between == table, (
        "copy README's 'Deviations from the paper' table into the card"
    )
