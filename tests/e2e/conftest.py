"""Browser-test fixtures: a headless Streamlit server for app.py and a Chromium page.

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


@pytest.fixture
def page(chromium: Path) -> Iterator[object]:
    """A Playwright page in headless Chromium, closed afterwards.

    The viewport is tall because Streamlit scrolls inside its own container,
    so a "full page" screenshot is one screen.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 3200})
        finally:
            browser.close()
