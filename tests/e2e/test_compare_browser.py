"""The Compare page in a real browser: pick the hpo module, run two configurations of its sample at once
and see both runs side by side (fixtures in conftest.py). The server gets its own QFLOW_HOME, so the history is empty
before the test and holds exactly what it made afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from qflow.core.runs import RunStore

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 180_000


@pytest.fixture
def own_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunStore:
    """A fresh QFLOW_HOME for the Streamlit server (requested before ``server_url``, which inherits it)."""
    home = tmp_path / "home"
    monkeypatch.setenv("QFLOW_HOME", str(home))
    return RunStore(home / "runs.db")


def test_two_configurations_then_both_on_the_compare_page(own_history: RunStore, server_url: str, page,
                                                          tmp_path: Path) -> None:
    page.goto(f"{server_url}/compare", timeout=60_000)
    page.get_by_text("Run several configurations of one input").wait_for(timeout=60_000)
    page.get_by_text("No stored runs of").wait_for(timeout=60_000)

    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="hpo", exact=True).click()
    page.get_by_text("No stored runs of").wait_for(timeout=60_000)
    page.get_by_text("space.yaml").first.wait_for(timeout=60_000)

    # Configuration 2 differs from configuration 1 by no baselines and its number of suggestions.
    baselines = page.get_by_role("switch", name="baselines")
    expect(baselines).to_have_count(2, timeout=60_000)  # a rerun in flight may briefly show stale copies
    settings = page.locator('[data-testid="stTextInput"] input')
    expect(settings).to_have_count(2, timeout=60_000)
    set_until_kept(page, page.get_by_text("baselines", exact=True).nth(1), baselines.nth(1), settings.nth(1), "suggest=2")
    expect(baselines.nth(0)).to_be_checked()

    page.get_by_role("button", name="Run all configurations").click()
    page.get_by_text("Ran 2 configuration(s)").wait_for(timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot .main-svg').length >= 2",
        timeout=60_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "compare_after_batch.png"), full_page=True)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.all_inner_texts()

    runs = own_history.list(module="hpo")
    assert len(runs) == 2 and own_history.count() == 2
    assert sorted((run.config["suggest"], run.config["baselines"]) for run in runs) == [(2, False), (4, True)]
    # Both runs are picked and compared: two chips in the picker, both ids in the bar chart, the difference named.
    picked = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
    chart_text = page.locator('[data-testid="stPlotlyChart"]').first.inner_text()
    for run in runs:
        assert f"#{run.id} ·" in picked and f"#{run.id}" in chart_text
    differs = page.get_by_text("differs in:").inner_text()
    assert "suggest" in differs and "baselines" in differs
    assert "Compare" in page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()[-2]


def set_until_kept(page, toggle_label, toggle, field, text: str, attempts: int = 4) -> None:
    """Switch ``toggle`` off and type ``text`` into ``field``, again if a rerun still in flight redrew either.

    On a loaded machine a widget change made while the previous rerun is still
    running can be drawn over by that rerun's stale state.
    """
    for _ in range(attempts):
        page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
        if toggle.is_checked():
            toggle_label.click()
            page.wait_for_timeout(1500)
            page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
        if field.input_value() != text:
            field.fill(text)
            field.press("Enter")  # commits the value (a rerun); the page keeps it
            page.wait_for_timeout(1500)
            page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
        if field.input_value() == text and not toggle.is_checked():
            return
    expect(toggle).not_to_be_checked(timeout=30_000)
    expect(field).to_have_value(text, timeout=30_000)
