"""Streamlit sections every module's page shows the same way: solver path, plan JSON, download."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import streamlit as st

from ui.summary import fallback_messages, plan_for_display

__all__ = ["finished_run", "run_in_status", "show_plan_json", "show_solver"]

R = TypeVar("R")


def run_in_status(call: Callable[[Callable[[float, str], None]], R], working: str = "Planning...",
                  first_step: str = "loading inputs", done: str = "Plan ready", rejected: str = "Input rejected") -> R:
    """Run ``call(on_progress)`` inside a status box with a live progress bar; returns what it returned.

    ``call`` returns a page run with ``error`` (a message or ``None``) and
    ``plan`` (a plan dict on success); the box closes on ``done`` with the
    engine's time, or on ``rejected``.
    """
    with st.status(working, expanded=True) as status:
        bar = st.progress(0.0, text=first_step)
        run = call(lambda fraction, text: bar.progress(fraction, text=text))
        if run.error:
            status.update(label=rejected, state="error", expanded=False)
        else:
            seconds = sum(run.plan["timings_s"].values())
            status.update(label=f"{done} (engine {seconds:.2f} s)", state="complete", expanded=False)
    return run


def show_solver(plan: dict[str, Any]) -> None:
    """Requested path, the path that ran, each fallback as a warning, then the plan's diagnostics."""
    solver = plan["solver"]
    st.markdown(f"**Path requested:** `{solver['requested']}` &nbsp;&nbsp; **Path ran:** `{solver['ran']}`")
    for message in fallback_messages(plan):
        st.warning(message, icon=":material/call_split:")
    for note in plan.get("diagnostics", []):
        st.info(note, icon=":material/info:")


def show_plan_json(plan: dict[str, Any], plan_json: str, file_name: str, key: str) -> None:
    """The plan as collapsed JSON (long lists shortened for display) and a download of the full JSON."""
    st.download_button("Download plan JSON", data=plan_json, file_name=file_name, mime="application/json",
                       key=key, on_click="ignore", type="secondary", icon=":material/download:")
    with st.expander("Plan JSON (long lists shortened here; the download has everything)"):
        st.json(plan_for_display(plan), expanded=1)


def finished_run(run_key: str, settings: Mapping[str, Any], prompt: str) -> Any | None:
    """The last run kept in ``st.session_state[run_key]``, ready to draw, or ``None``.

    ``None`` after showing why there is nothing to draw: ``prompt`` before the
    first Run, the engine's one-line message after a rejected input. A note
    says when the settings changed since the run was made. Runs are objects
    with ``plan`` (dict) and ``error`` (str or None).
    """
    last = st.session_state.get(run_key)
    if last is None:
        st.info(prompt)
        return None
    if last.error:
        st.error(last.error)
        return None
    if any(last.plan["config"].get(name) != value for name, value in settings.items()):
        st.caption("Settings changed since this plan was made; press Run to update it.")
    return last
