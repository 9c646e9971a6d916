"""The HPO page in a real browser: a fresh server, /hpo, Run, charts (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import run_page_until_charts

pytestmark = pytest.mark.browser


def test_hpo_run_draws_charts(page, server_url: str, tmp_path: Path) -> None:
    """Run on the samples: best-so-far, parallel coordinates and GP slice, plus the suggestions."""
    nav = run_page_until_charts(page, f"{server_url}/hpo", 3, tmp_path / "hpo_after_run.png")
    assert "HPO" in nav
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 3
    assert page.get_by_text("Next 4 suggestions (gp-ei)").count() == 1
    assert page.get_by_role("button", name="Download plan JSON").count() == 1
