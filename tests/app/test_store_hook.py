"""The app's run-history hook: ui.page.save_run, and the module pages calling it after a Run."""

from __future__ import annotations

from pathlib import Path

import pytest
from page_helpers import click_run, open_page
from streamlit.testing.v1 import AppTest

from qflow.core.runs import RunStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
    return tmp_path


def _saving_script() -> None:
    import streamlit as st

    from ui.page import save_run

    plan = {"module": "demo", "created_at": "2026-11-25T00:00:00+00:00", "inputs": [], "config": {"seed": 1},
            "solver": {"requested": "classical", "ran": "classical"}, "metrics": {"x": 1.0}, "timings_s": {}}
    st.session_state["saved_id"] = save_run(plan)


def test_save_run_stores_once_and_says_where(home: Path) -> None:
    at = AppTest.from_function(_saving_script)
    at.run()
    assert not at.exception
    run_id = at.session_state["saved_id"]
    assert run_id == 1 and f"Saved as run #{run_id}" in at.caption[0].value
    assert at.session_state["qflow_saved_runs"] == {"demo": 1}
    at.run()  # the same plan again (a cached rerun): still one stored run
    assert at.session_state["saved_id"] == 1 and RunStore(home / "runs.db").count() == 1


def test_a_broken_history_warns_and_the_page_goes_on(home: Path) -> None:
    (home / "runs.db").write_bytes(b"not a database" * 100)
    at = AppTest.from_function(_saving_script)
    at.run()
    assert not at.exception and at.session_state["saved_id"] is None
    assert "Run not saved to history" in at.warning[0].value and "not a usable run database" in at.warning[0].value


def test_the_hpo_page_stores_each_run(home: Path) -> None:
    at = click_run(open_page("hpo"), "hpo")
    assert not at.error
    runs = RunStore(home / "runs.db").list()
    assert len(runs) == 1 and runs[0].module == "hpo" and runs[0].origin == "app"
    assert RunStore(home / "runs.db").get(runs[0].id).plan == at.session_state["hpo_run"].plan
