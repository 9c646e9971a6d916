"""The HPO page in a real browser: own Streamlit server, open /hpo, press Run, see Plotly charts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_qflow_browser_fixtures", Path(__file__).with_name("test_browser.py"))
_browser = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _browser
_spec.loader.exec_module(_browser)

# The server and Chromium fixtures of test_browser.py: a headless server on a free port, stopped afterwards.
chromium = _browser.chromium
server_url = _browser.server_url

pytestmark = pytest.mark.browser


def test_hpo_run_draws_charts(chromium: Path, server_url: str, tmp_path: Path) -> None:
    """Open /hpo on a fresh server, press Run on the samples: the three charts and the suggestions render."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=_browser.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 3200})
            page.goto(f"{server_url}/hpo", timeout=60_000)
            run = page.get_by_role("button", name="Run", exact=True)
            run.wait_for(timeout=60_000)
            run.click()
            page.wait_for_function(
                "document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot .main-svg').length >= 3",
                timeout=_browser.RUN_TIMEOUT_MS,
            )
            page.wait_for_timeout(1000)
            shot = tmp_path / "hpo_after_run.png"
            page.screenshot(path=str(shot), full_page=True)
            nav = [text.strip().splitlines()[-1] for text in page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()]
            assert "HPO" in nav
            assert page.locator('[data-testid="stPlotlyChart"]').count() == 3
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.get_by_text("Next 4 suggestions (gp-ei)").count() == 1
            assert page.get_by_role("button", name="Download plan JSON").count() == 1
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
