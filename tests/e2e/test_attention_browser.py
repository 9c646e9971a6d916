"""The console in a real browser: start ``streamlit run app.py``, open Attention, press Run, see charts.

Needs Debian's Chromium at /usr/bin/chromium (``make chromium``; CI installs
it). Playwright drives it; only localhost is contacted.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SERVER_START_S = 60
RUN_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    """Poll Streamlit's health endpoint until it answers ok; fail with the server log otherwise."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit not healthy after {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; its absence is a failure with the fix, never a silent skip."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium: install it (`make chromium` or "
                    "`apt-get install chromium`); CI installs it")
    return CHROMIUM


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """A headless Streamlit server for app.py on a free localhost port, stopped afterwards."""
    port = _free_port()
    log = tmp_path / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", server, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def test_attention_run_draws_charts(chromium: Path, server_url: str, tmp_path: Path) -> None:
    """Open /attention on a fresh server, press Run on the sample data: the charts render under app.py's navigation."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            # Tall viewport: Streamlit scrolls inside its own container, so a "full page" shot is one screen.
            page = browser.new_page(viewport={"width": 1600, "height": 3200})
            page.goto(f"{server_url}/attention", timeout=60_000)
            run = page.get_by_role("button", name="Run", exact=True)
            run.wait_for(timeout=60_000)
            run.click()
            page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=RUN_TIMEOUT_MS)
            # Three charts on the defaults with the sample weights: attention maps, error vs k, singular values.
            page.wait_for_function(
                "document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot .main-svg').length >= 3",
                timeout=RUN_TIMEOUT_MS,
            )
            page.wait_for_timeout(1000)  # let Plotly finish its transitions before the screenshot
            shot = tmp_path / "attention_after_run.png"
            page.screenshot(path=str(shot), full_page=True)

            # app.py's navigation, not Streamlit's legacy listing of the pages/ files.
            nav = page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()
            labels = [text.strip().splitlines()[-1] for text in nav]  # after the icon name
            assert "Attention" in labels and labels[0] == "Home" and labels[-1] == "About"
            assert page.locator('[data-testid="stPlotlyChart"]').count() == 3
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.get_by_text("Path ran:").count() == 1
            assert page.get_by_role("button", name="Download plan JSON").count() == 1
            assert page.get_by_role("button", name="Download updated embeddings (.npy)").count() == 1
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
