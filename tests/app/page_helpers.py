"""What every page's AppTest does: open the page, press Run, read the Plotly figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def open_page(name: str) -> AppTest:
    """``pages/<name>.py`` run once (before any Run click), with no uncaught exception."""
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)
    at.run()
    assert not at.exception
    return at


def click_run(at: AppTest, module: str) -> AppTest:
    """Press the page's Run button (key ``<module>_run_button``); a page never raises, it shows ``st.error``."""
    at.button(key=f"{module}_run_button").click().run()
    assert not at.exception
    return at


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    """The Plotly figures on the page, as the JSON Streamlit sends to the browser."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def chart_titles(at: AppTest) -> list[str]:
    return [spec["layout"]["title"]["text"] for spec in chart_specs(at)]
