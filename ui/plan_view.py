"""Streamlit sections every module's page shows the same way: path badges, warnings, downloads, the plan JSON."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.summary import fallback_messages, not_adopted, not_adopted_messages, path_steps, plan_for_display, step_name

__all__ = ["show_charts", "show_downloads", "show_solver"]


def _badges(steps: list[str], colour: str) -> str:
    """Markdown badges, one per step (brackets would end a badge, so they are dropped)."""
    return " ".join(f":{colour}-badge[{step.replace('[', '').replace(']', '')}]" for step in steps)


def show_solver(plan: dict[str, Any]) -> None:
    """The path requested, each step of ``solver.ran`` as a badge and the steps not adopted struck out; then each fallback
    and not-adopted step as a warning and the plan's diagnostics as warnings."""
    solver = plan["solver"]
    skipped = [step_name(entry) for entry in not_adopted(plan)]
    st.markdown(f"**Path requested:** `{solver['requested']}` &nbsp;&nbsp; **Path ran:** `{solver['ran']}`")
    st.markdown("Steps adopted: " + _badges(path_steps(solver["ran"]), "green")
                + (" &nbsp; not adopted: " + _badges(skipped, "orange") if skipped else ""))
    for message in fallback_messages(plan):
        st.warning(message, icon=":material/call_split:")
    for message in not_adopted_messages(plan):
        st.warning(message, icon=":material/block:")
    for note in plan.get("diagnostics", []):
        text = note if isinstance(note, str) else str(note.get("message", note))
        st.warning(text, icon=":material/info:")


def show_downloads(name: str, plan: dict[str, Any], plan_json: str, artifacts: list[tuple[str, bytes]]) -> None:
    """A download per artifact the module wrote, the plan JSON's download, and the plan collapsed for reading."""
    for index, (file_name, data) in enumerate(artifacts):
        st.download_button(f"Download {file_name}", data=data, file_name=file_name, mime="application/octet-stream",
                           key=f"{name}_artifact_{index}", on_click="ignore", icon=":material/download:")
    st.download_button("Download plan JSON", data=plan_json, file_name=f"{name}_plan.json", mime="application/json",
                       key=f"{name}_download", on_click="ignore", type="secondary", icon=":material/download:")
    with st.expander("Plan JSON (long lists shortened here; the download has everything)"):
        st.json(plan_for_display(plan), expanded=1)


def show_charts(module: str, figures: dict[str, Any]) -> None:
    """Each figure that is not ``None``, in order, under the key ``{module}_{name}_chart``."""
    for name, figure in figures.items():
        if figure is not None:
            st.plotly_chart(figure, key=f"{module}_{name}_chart")
