"""app.py's navigation under AppTest: Home links every module of the registry, About documents every setting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import qflow
from qflow.core.commands import available_commands
from qflow.routing import RoutingConfig

ROOT = Path(__file__).resolve().parents[2]
UI_FILES = ["app.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "views").glob("*.py")),
            *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ui").rglob("*.py"))]


def app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    return at


def test_home_is_the_default_page_and_links_every_module_of_the_registry() -> None:
    at = app()
    assert at.title[0].value == "QuantumFlow"
    links = at.get("page_link")
    commands = available_commands()
    assert [link.proto.label for link in links] == [c.page_title for c in commands]
    assert [link.proto.page for link in links] == [c.name for c in commands]
    assert {"Routing", "Compress", "Decompress"} <= {c.page_title for c in commands}
    assert "real PennyLane circuits" in at.markdown[0].value


def test_about_shows_version_cli_and_every_setting() -> None:
    at = app()
    at.switch_page("views/about.py").run()
    assert not at.exception
    assert f"qflow {qflow.__version__}" in at.markdown[0].value
    assert "python -m qflow routing --tokens" in at.code[0].value
    assert len(at.dataframe) == len(available_commands())
    fields = at.dataframe[0].value["field"].tolist()
    assert sorted(fields) == sorted(RoutingConfig.model_fields)


@pytest.mark.parametrize("script", ["app.py", *sorted(p.name for p in (ROOT / "views").glob("*.py"))])
def test_pages_stay_thin(script: str) -> None:
    """Views and app.py import only Streamlit, the engine and ui helpers (never numpy, networkx, pandas)."""
    path = ROOT / script if script == "app.py" else ROOT / "views" / script
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    allowed = ("__future__", "typing", "uuid", "streamlit", "qflow", "ui")
    assert all(name.split(".")[0] in allowed for name in imported), sorted(imported)


@pytest.mark.parametrize("script", UI_FILES)
def test_no_streamlit_internals_and_no_module_lists(script: str) -> None:
    """The console uses Streamlit's public API only, and names no module: the registry lists them."""
    text = (ROOT / script).read_text()
    assert "streamlit.runtime" not in text and "PagesManager" not in text
    tree = ast.parse(text)
    keys = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}  # plan["result"]["placement"]
    literals = {node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys}
    names = {c.name for c in available_commands()}
    if not script.startswith("ui/hooks/"):
        assert not names & literals, sorted(names & literals)


def test_every_hooks_module_belongs_to_a_registered_module_and_names_known_hooks() -> None:
    """Hooks are looked up by module name: one for a name the registry lacks would never be drawn."""
    names = {c.name for c in available_commands()}
    known = {"METRICS", "summary", "charts", "options", "out_name", "extras", "run_in_place", "artifacts"}
    for path in (ROOT / "ui" / "hooks").glob("[!_]*.py"):
        assert path.stem in names, path.name
        public = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)
                  and not n.name.startswith("_") and not n.name.endswith("_figure")}  # its figures live beside its hooks
        assert public <= known, (path.name, public - known)
