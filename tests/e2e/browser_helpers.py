"""What every browser test does: open a page, press Run, wait for the charts."""

from __future__ import annotations

from pathlib import Path

#: How long a Run may take before the charts must be drawn, ms.
RUN_TIMEOUT_MS = 120_000


def run_page_until_charts(page, url: str, charts: int, screenshot: Path) -> list[str]:
    """Open ``url``, press Run, wait until ``charts`` Plotly charts are drawn, take a screenshot.

    Returns the sidebar navigation labels (app.py's navigation, after the icon name).
    """
    page.goto(url, timeout=60_000)
    run = page.get_by_role("button", name="Run", exact=True)
    run.wait_for(timeout=60_000)
    run.click()
    page.wait_for_function(
        f"document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot .main-svg').length >= {charts}",
        timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_timeout(1000)  # let Plotly finish its transitions before the screenshot
    page.screenshot(path=str(screenshot), full_page=True)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.all_inner_texts()
    assert screenshot.stat().st_size > 10_000
    nav = page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()
    return [text.strip().splitlines()[-1] for text in nav]
