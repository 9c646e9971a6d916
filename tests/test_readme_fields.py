"""The README documents every config field of every module, and no field that does not exist.

Each module's ``## `` section of the README documents its settings in
"settings blocks": a paragraph whose bold label mentions toggles or settings
(``**Toggles and settings**: `a`, `b` (16), ...``, ``**Decompress
toggles**: ...``), and any table right after it whose first column is
``field`` (names in backticks, several per cell allowed). A label naming one
of the section's commands (``Compress``, ``Decompress``) documents that
command only; otherwise the block documents every command of the section.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from qflow.core.commands import available_commands

ROOT = Path(__file__).resolve().parents[1]

#: Backticked identifiers in settings prose that are not config fields, and what they are.
NOT_FIELDS = {
    "relative_l2_error_change": "a plan figure the decompress toggles' text points to",
}

LABEL = re.compile(r"^\*\*(?P<label>[^*]+)\*\*")
CODE = re.compile(r"`([^`]+)`")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
FIELD_HEADERS = {"field", "fields", "setting", "settings"}


def sections(text: str) -> dict[str, str]:
    """``{level-2 heading: its text}``."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def commands_by_section(headings: list[str]) -> dict[str, list[str]]:
    """``{heading: [command names]}``: a command belongs to the section whose heading has its name as a word."""
    found: dict[str, list[str]] = {}
    for command in available_commands():
        matches = [h for h in headings if re.search(rf"\b{re.escape(command.name)}\b", h, flags=re.IGNORECASE)]
        assert len(matches) == 1, f"command {command.name!r}: README sections naming it: {matches}"
        found.setdefault(matches[0], []).append(command.name)
    return found


def blocks(section: str) -> list[str]:
    """Paragraphs and tables of a section (blank-line separated)."""
    return [b.strip() for b in re.split(r"\n\s*\n", section) if b.strip()]


def table_fields(table: str) -> list[str] | None:
    """Backticked names in the first column of a ``| field | ... |`` table, or None when it is not one."""
    rows = [line for line in table.splitlines() if line.lstrip().startswith("|")]
    if len(rows) < 2 or rows[0].strip("| ").split("|")[0].strip().lower() not in FIELD_HEADERS:
        return None
    names = []
    for row in rows[2:]:
        first = row.strip().strip("|").split("|")[0]
        names.extend(CODE.findall(first))
    return names


def settings_documented(section: str, commands: list[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per command: names in its settings tables (strict), and identifiers in its settings prose."""
    in_tables: dict[str, set[str]] = {c: set() for c in commands}
    in_prose: dict[str, set[str]] = {c: set() for c in commands}
    targets: list[str] = []
    for block in blocks(section):
        fields = table_fields(block)
        if fields is not None:
            for command in targets or commands:
                in_tables[command].update(fields)
            continue
        label = LABEL.match(block)
        if not label or not re.search(r"toggle|setting", label.group("label"), flags=re.IGNORECASE):
            targets = []
            continue
        named = [c for c in commands if re.search(rf"\b{c}\b", label.group("label"), flags=re.IGNORECASE)]
        targets = named or commands
        paragraph = re.split(r"^\s*[-*|] ", block, maxsplit=1, flags=re.MULTILINE)[0]  # a list or table after it is not settings
        for command in targets:
            in_prose[command].update(n for n in CODE.findall(paragraph) if IDENTIFIER.fullmatch(n))
    return in_tables, in_prose


def literal_choices(config_cls) -> set[str]:
    """String values of the config's ``Literal`` fields (``"metis"``, ``"rbf"``): prose names them too."""
    choices: set[str] = set()
    for field in config_cls.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal:
            choices.update(str(v) for v in typing.get_args(field.annotation))
    return choices


def documented() -> dict[str, tuple[set[str], set[str]]]:
    text = (ROOT / "README.md").read_text()
    by_heading = sections(text)
    out: dict[str, tuple[set[str], set[str]]] = {}
    for heading, commands in commands_by_section(list(by_heading)).items():
        tables, prose = settings_documented(by_heading[heading], commands)
        for command in commands:
            out[command] = (tables[command], prose[command])
    return out


COMMANDS = {c.name: c for c in available_commands()}


@pytest.fixture(scope="module")
def readme_settings() -> dict[str, tuple[set[str], set[str]]]:
    return documented()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_config_field_is_documented(name, readme_settings):
    tables, prose = readme_settings[name]
    missing = [f for f in COMMANDS[name].config_cls.model_fields if f not in tables | prose]
    assert not missing, f"{name}: config fields in no README settings table or toggles/settings paragraph: {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_readme_documents_no_field_that_does_not_exist(name, readme_settings):
    tables, prose = readme_settings[name]
    config_cls = COMMANDS[name].config_cls
    fields = set(config_cls.model_fields)
    assert not sorted(tables - fields), f"{name}: README settings tables list fields the config lacks"
    unknown = prose - fields - literal_choices(config_cls) - set(NOT_FIELDS)
    assert not sorted(unknown), f"{name}: README settings paragraphs name fields the config lacks"


def test_parser_reads_tables_and_labelled_paragraphs():
    """The parser itself: a table's first column and a labelled paragraph, each attributed to its command."""
    section = (
        "Intro `not_a_setting`.\n\n**Compress toggles**: `bits` (8), `lossless`.\n- How: `not_either`.\n\n"
        "| field | default |\n|---|---|\n| `a`, `b` | 1 |\n\n**Decompress toggles**: `hhl`.\n\n**Outputs**: `metric`.\n"
    )
    tables, prose = settings_documented(section, ["compress", "decompress"])
    assert tables == {"compress": {"a", "b"}, "decompress": set()}
    assert prose == {"compress": {"bits", "lossless"}, "decompress": {"hhl"}}
