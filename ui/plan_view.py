"""Streamlit sections every module's page shows the same way: solver path, plan JSON, download."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.summary import fallback_messages, plan_for_display

__all__ = ["show_plan_json", "show_solver"]


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
