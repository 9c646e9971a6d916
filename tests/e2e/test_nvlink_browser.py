"""The NVLink page in a real browser: a fresh server, /nvlink, Run on the NVL72 sample, four charts (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import run_page_until_charts

pytestmark = pytest.mark.browser


def test_nvlink_run_draws_charts(page, server_url: str, tmp_path: Path) -> None:
    """Fabric by utilisation, rounds timeline, RL reward curve and confusion matrix, plus the baselines table."""
    nav = run_page_until_charts(page, f"{server_url}/nvlink", 4, tmp_path / "nvlink_after_run.png")
    assert "NVLink" in nav
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 4
    assert page.get_by_text("rounds / lower bound").count() == 1
    assert page.get_by_role("button", name="Download plan JSON").count() == 1
