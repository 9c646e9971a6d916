"""No unpickling anywhere: every call that could run code from a file is refused by a source scan.

Scans qflow/, ui/, views/ and app.py (modules that land later included) for ``pickle``/``dill``/
``joblib``/``cloudpickle`` loads, ``pandas.read_pickle``, ``yaml.load``/``unsafe_load`` and
``yaml.full_load``, ``torch.load`` without ``weights_only=True`` and ``numpy.load`` without
``allow_pickle=False``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("qflow/**/*.py"), *ROOT.glob("ui/**/*.py"), *ROOT.glob("views/*.py"), ROOT / "app.py"])

#: Called names (last two dotted parts) that deserialize arbitrary objects.
FORBIDDEN = {("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
             ("cloudpickle", "load"), ("cloudpickle", "loads"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
             ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("marshal", "loads")}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def unsafe_calls(source: str) -> list[str]:
    """``line: call`` for each unsafe deserializing call in ``source``.

    >>> unsafe_calls("import torch, numpy as np\\ntorch.load(f)\\nnp.load(f, allow_pickle=False)\\nnp.load(g)")
    ['2: torch.load without weights_only=True', '4: np.load without allow_pickle=False']
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        tail = name[-2:]
        text = ".".join(name)
        if tail in FORBIDDEN:
            found.append(f"{node.lineno}: {text}")
        elif tail == ("torch", "load") and _keyword(node, "weights_only") is not True:
            found.append(f"{node.lineno}: {text} without weights_only=True")
        elif tail in {("np", "load"), ("numpy", "load")} and _keyword(node, "allow_pickle") is not False:
            found.append(f"{node.lineno}: {text} without allow_pickle=False")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_deserialization(path: Path) -> None:
    assert unsafe_calls(path.read_text()) == []
