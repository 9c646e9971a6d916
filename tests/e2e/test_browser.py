"""The console in a real browser: a fresh server, /routing, Run, charts (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import run_page_until_charts

from qflow.core.commands import available_commands

pytestmark = pytest.mark.browser


def test_routing_run_draws_charts(page, server_url: str, tmp_path: Path) -> None:
    """The first request goes straight to /routing: the page still runs under app.py's navigation."""
    nav = run_page_until_charts(page, f"{server_url}/routing", 3, tmp_path / "routing_after_run.png")
    assert nav == ["Home", *(c.page_title for c in available_commands()), "Compare", "About"]  # the registry, in its order
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 3  # load, traffic, sweep
    assert page.get_by_text("Path ran:").count() == 1
    assert page.get_by_role("button", name="Download plan JSON").count() == 1
