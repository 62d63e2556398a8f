"""``benchmarks/eval_tables.py``: the paper's tables rebuilt from per-clip rows (the card's source)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "eval_tables.py"


def _per_clip(tmp_path: Path) -> Path:
    """Table 1 rows from the bundled per-clip results: the card's methods renamed to the paper's."""
    rows = pd.read_csv(ROOT / "checkpoints" / "logs" / "test600_per_clip.csv.gz")
    names = {"static": "static", "MoMap-VAE": "momap-vae", "Ours (text)": "ours"}
    rows = rows[rows["method"].isin(names)].assign(method=lambda frame: frame["method"].map(names))
    rows = rows.groupby(["dataset", "method"]).head(40)  # the same 40 clips per family and method
    path = tmp_path / "table1_per_clip.csv.gz"
    rows.to_csv(path, index=False)
    return path


def test_the_tables_are_rebuilt_from_the_per_clip_csv(tmp_path):
    path = _per_clip(tmp_path)
    run = [
        sys.executable,
        str(SCRIPT),
        "--table",
        "1",
        "--from-csv",
        str(path),
        "--out",
        str(tmp_path / "out"),
    ]
    subprocess.run(run, check=True, capture_output=True, text=True, cwd=ROOT)
    table = (tmp_path / "out" / "table1.md").read_text()
    rows = pd.read_csv(path)
    for family in ("tabletop", "egocentric"):
        for method in ("static", "momap-vae", "ours"):
            mean = rows[(rows["dataset"] == family) & (rows["method"] == method)]["ate_dtw"].mean()
            assert f"{mean:.4f}" in table, (family, method, mean)
    # paired intervals against "ours", one line per family, method and metric
    assert table.count("| tabletop | static | ate_dtw |") == 1 and "| egocentric | momap-vae | epe |" in table
    # the same rows give the same file: the card's tables are reproducible from the CSV
    again = tmp_path / "again"
    subprocess.run([*run[:-1], str(again)], check=True, capture_output=True, text=True, cwd=ROOT)
    assert (again / "table1.md").read_text() == table


def test_a_method_that_is_not_a_row_of_the_table_is_refused(tmp_path):
    path = _per_clip(tmp_path)
    rows = pd.read_csv(path)
    rows.loc[rows["method"] == "static", "method"] = "Static"
    rows.to_csv(path, index=False)
    run = [sys.executable, str(SCRIPT), "--table", "1", "--from-csv", str(path), "--out", str(tmp_path / "o")]
    result = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "are not rows of Table 1" in result.stderr
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([*run[:3], "--method", "mine=static"], check=True, capture_output=True, cwd=ROOT)


def test_the_tables_are_written_into_a_card_between_its_markers(tmp_path):
    path = _per_clip(tmp_path)
    card = tmp_path / "README.md"
    card.write_text("# card\n\n<!-- table1 start -->\nold\n<!-- table1 end -->\n\nafter\n")
    run = [sys.executable, str(SCRIPT), "--table", "1", "--from-csv", str(path), "--out", str(tmp_path / "o")]
    subprocess.run([*run, "--card", str(card)], check=True, capture_output=True, cwd=ROOT)
    table = (tmp_path / "o" / "table1.md").read_text().strip()
    assert card.read_text() == f"# card\n\n<!-- table1 start -->\n{table}\n<!-- table1 end -->\n\nafter\n"
    subprocess.run([*run, "--card", str(card)], check=True, capture_output=True, cwd=ROOT)  # idempotent
    assert card.read_text().count(table) == 1
    card.write_text("# a card without markers\n")
    result = subprocess.run([*run, "--card", str(card)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "table1 start" in result.stderr
    assert card.read_text() == "# a card without markers\n"  # nothing half-written
