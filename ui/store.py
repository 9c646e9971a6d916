"""The app's hook into the run store: every plan a page makes is kept for the Compare page.

The module page calls :func:`save_run` on the script thread once per finished run. Saving the same plan twice keeps one
stored run. A store that cannot be written shows a warning and the page carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from qflow.core.errors import QflowError
from qflow.core.runs import RunStore

__all__ = ["LAST_SAVED_KEY", "run_store", "save_run"]

#: ``st.session_state`` key holding ``{module: run id}`` of the last run each page stored.
LAST_SAVED_KEY = "qflow_saved_runs"


def run_store() -> RunStore:
    """The store at ``$QFLOW_HOME/runs.db`` (read per call, so tests can point QFLOW_HOME elsewhere)."""
    return RunStore()


def save_run(plan: Mapping[str, Any]) -> int | None:
    """Store ``plan`` (``Plan.to_dict()``) as an ``app`` run and say so; its run id, or ``None`` (with a warning)."""
    try:
        run_id = run_store().save(dict(plan), origin="app")
    except QflowError as exc:
        st.warning(f"Run not saved to history: {exc.message}", icon=":material/history:")
        return None
    saved = dict(st.session_state.get(LAST_SAVED_KEY, {}))
    saved[str(plan.get("module", ""))] = run_id
    st.session_state[LAST_SAVED_KEY] = saved
    st.caption(f"Saved as run #{run_id} in the run history (see **Compare**).")
    return run_id
