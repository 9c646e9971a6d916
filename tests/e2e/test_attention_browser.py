"""The Attention page in a real browser: a fresh server, /attention, Run, charts (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import run_page_until_charts

pytestmark = pytest.mark.browser


def test_attention_run_draws_charts(page, server_url: str, tmp_path: Path) -> None:
    """Run on the sample data: attention maps, error vs k, singular values, and both downloads."""
    nav = run_page_until_charts(page, f"{server_url}/attention", 3, tmp_path / "attention_after_run.png")
    assert "Attention" in nav and nav[0] == "Home" and nav[-1] == "About"
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 3
    assert page.get_by_text("Path ran:").count() == 1
    assert page.get_by_role("button", name="Download plan JSON").count() == 1
    assert page.get_by_role("button", name="Download attention.embeddings.npy").count() == 1
