"""app.py's navigation under AppTest: Home, the working modules, About."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import qflow
from qflow.routing import RoutingConfig
from ui.modules import MODULE_PAGES

ROOT = Path(__file__).resolve().parents[2]


def app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    return at


def test_home_is_the_default_page_and_links_every_module() -> None:
    at = app()
    assert at.title[0].value == "QuantumFlow"
    links = at.get("page_link")
    assert [link.proto.label for link in links] == [m.title for m in MODULE_PAGES]
    assert "Routing" in [m.title for m in MODULE_PAGES]
    assert "real PennyLane circuits" in at.markdown[0].value


def test_switching_to_routing_shows_its_form() -> None:
    at = app()
    at.switch_page("pages/routing.py").run()
    assert not at.exception
    assert at.title[0].value == "Token routing"
    assert at.button(key="routing_run_button").label == "Run"
    assert [t.label for t in at.toggle] == RoutingConfig.toggles()


def test_about_shows_version_cli_and_every_setting() -> None:
    at = app()
    at.switch_page("pages/about.py").run()
    assert not at.exception
    assert f"qflow {qflow.__version__}" in at.markdown[0].value
    assert "python -m qflow routing --tokens" in at.code[0].value
    fields = at.dataframe[0].value["field"].tolist()
    assert sorted(fields) == sorted(RoutingConfig.model_fields)


@pytest.mark.parametrize("script", ["app.py", *sorted(p.name for p in (ROOT / "pages").glob("*.py"))])
def test_pages_stay_thin(script: str) -> None:
    """Pages and app.py import only Streamlit, the engine and ui helpers (never numpy, networkx, pandas)."""
    path = ROOT / script if script == "app.py" else ROOT / "pages" / script
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    allowed = ("__future__", "typing", "streamlit", "qflow", "ui")
    assert all(name.split(".")[0] in allowed for name in imported), sorted(imported)
