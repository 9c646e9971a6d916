"""The energy page in a real browser: a fresh server, /energy, Run, charts (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import run_page_until_charts

pytestmark = pytest.mark.browser


def test_energy_run_draws_charts(page, server_url: str, tmp_path: Path) -> None:
    """Run on the samples: power timeline, Gantt, predicted vs measured, caps, budget trade-off; the plan download."""
    nav = run_page_until_charts(page, f"{server_url}/energy", 5, tmp_path / "energy_after_run.png")
    assert "Energy" in nav
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 5
    assert page.get_by_text("Clock caps (current settings kept for restore)").count() == 1
    assert page.get_by_role("button", name="Download plan JSON").count() == 1
