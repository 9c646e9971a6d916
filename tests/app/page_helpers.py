"""What every page's AppTest does: open a module's page, press Run and wait for the job, read the Plotly figures."""

from __future__ import annotations

import json
from typing import Any

from streamlit.testing.v1 import AppTest

#: Longest a test waits for a page's job, s.
JOB_TIMEOUT_S = 300


def _module_page(name: str) -> None:
    from ui.page import render

    render(name)


def open_page(name: str) -> AppTest:
    """Module ``name``'s page (:func:`ui.page.render`) run once (before any Run click), with no uncaught exception."""
    at = AppTest.from_function(_module_page, args=(name,), default_timeout=120)
    at.run()
    assert not at.exception
    return at


def finish_job(at: AppTest, module: str) -> AppTest:
    """Wait for the page's running job to end, then rerun as the progress fragment would."""
    job = at.session_state[f"{module}_job"] if f"{module}_job" in at.session_state else None
    if job is not None:
        assert job.wait(JOB_TIMEOUT_S), "job still running"
        at.run()
    assert not at.exception
    return at


def click_run(at: AppTest, module: str) -> AppTest:
    """Press the page's Run button (key ``<module>_run_button``) and wait for the plan; a page never raises."""
    at.button(key=f"{module}_run_button").click().run()
    assert not at.exception
    return finish_job(at, module)


def upload(at: AppTest, module: str, input_name: str, file_name: str, data: bytes) -> AppTest:
    """Upload ``data`` as ``file_name`` into the page's uploader for ``input_name`` and rerun."""
    at.file_uploader(key=f"{module}_{input_name}_upload").upload(file_name, data)
    at.run()
    assert not at.exception
    return at


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    """The Plotly figures on the page, as the JSON Streamlit sends to the browser."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def chart_titles(at: AppTest) -> list[str]:
    return [spec["layout"]["title"]["text"] for spec in chart_specs(at)]
