"""The README's "Input limits" table lists every limit of qflow.core.limits with its default and variable."""

from __future__ import annotations

import re
from pathlib import Path

from qflow.core.limits import LIMITS

ROOT = Path(__file__).resolve().parents[1]


def input_limits_table() -> list[list[str]]:
    """Cells of each body row of the first table under the README's ``### Input limits`` heading."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^### Input limits\n(.*?)(?=^#{2,3} )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "README has no '### Input limits' subsection"
    rows = [line for line in match.group(1).splitlines() if line.startswith("|")]
    assert len(rows) > 2, "no table under '### Input limits'"
    header = [cell.strip().lower() for cell in rows[0].strip("|").split("|")]
    assert header[:3] == ["limit", "default", "variable"], header
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_every_limit_is_documented_once_and_nothing_else():
    names = [re.sub(r"`", "", row[0]) for row in input_limits_table()]
    assert sorted(names) == sorted(LIMITS), "README Input limits table vs qflow.core.limits.LIMITS"


def test_defaults_and_variables_match():
    for row in input_limits_table():
        spec = LIMITS[row[0].strip("`")]
        number = re.match(r"[0-9][0-9,.]*", row[1])
        assert number, f"{row[0]}: default {row[1]!r} is not a number"
        assert float(number.group(0).replace(",", "")) == spec.default, f"{row[0]}: README {row[1]}, code {spec.default}"
        if spec.unit != "count":
            assert row[1].endswith(spec.unit), f"{row[0]}: default {row[1]!r} should be in {spec.unit}"
        assert row[2] == f"`{spec.env}`", f"{row[0]}: README variable {row[2]}, code {spec.env}"
