"""The Compress page in a real browser: a fresh server, /compress, Run, charts, downloads (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import run_page_until_charts

pytestmark = pytest.mark.browser


def test_compress_run_draws_charts(page, server_url: str, tmp_path: Path) -> None:
    """Run on the sample checkpoint: ratio vs error, histogram, error heatmap, and both downloads."""
    nav = run_page_until_charts(page, f"{server_url}/compress", 3, tmp_path / "compress_after_run.png")
    assert "Compress" in nav and "Decompress" in nav and nav[0] == "Home"
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 3
    assert page.get_by_text("Path ran:").count() == 1
    assert page.get_by_role("button", name="Download checkpoint.qfz").count() == 1
    assert page.get_by_role("button", name="Download plan JSON").count() == 1
