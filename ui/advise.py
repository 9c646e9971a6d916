""""Recommend settings" on a module page: the advisor measured on the page's inputs, its verdict as tables.

:func:`advise_section` is the one call the generic page makes; the work runs on the job board (:mod:`ui.jobs`) as a
page's Run does, so it survives clicks elsewhere and can be cancelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from qflow.advisor import GOALS, PRIMARY_METRICS, advise_on_uploads
from qflow.core.commands import ModuleCommand, load_command
from qflow.core.errors import QflowError
from qflow.core.uploads import Upload
from ui.jobs import ended_job, job_board, run_identity

#: Budgets offered, seconds (a fixed choice: the page's number inputs are its config fields only).
BUDGETS_S: tuple[int, ...] = (15, 30, 60, 120, 300)

__all__ = ["BUDGETS_S", "advise_job", "advise_section", "apply_recommendation", "candidates_frame", "rules_frame",
           "show_ranking", "tradeoff_figure"]


def advise_job(name: str, uploads: dict[str, Upload | None], config_json: str, goal: str, budget_s: float,
               _progress: Callable[[float, str], None]) -> dict[str, Any]:
    """The advice plan as a dict, or ``{"error": message}`` for bad input (a job's work: runs in the pool)."""
    command = load_command(name)
    try:
        config = command.config_cls.model_validate_json(config_json)
        return advise_on_uploads(name, uploads, config, goal, budget_s, _progress).to_dict()
    except QflowError as exc:
        return {"error": exc.message}


def candidates_frame(result: dict[str, Any]) -> pd.DataFrame:
    """One row per measured candidate of a ranking (an advice plan's ``result``, or :func:`qflow.advisor.rank_plans`'):
    rank, name, rule, primary metric, seconds, settings changed from the first."""
    first = result["candidates"][0]["config"]
    return pd.DataFrame([
        {"rank": row["rank"], "candidate": row["name"], "rule": row["rule"] or "",
         result["primary_metric"]["metric"]: row["quality"], "seconds": row["seconds"],
         "changes": json.dumps({k: v for k, v in row["config"].items() if first.get(k) != v}), "error": row["error"]}
        for row in result["candidates"]
    ]).sort_values("rank")


def tradeoff_figure(result: dict[str, Any]) -> go.Figure:
    """Each measured candidate of a ranking as a point: seconds (x) against the primary metric (y), the first marked."""
    metric = result["primary_metric"]["metric"]
    rows = [row for row in result["candidates"] if row["quality"] is not None]
    chosen = result["recommended_candidate"]
    figure = go.Figure(go.Scatter(
        x=[row["seconds"] for row in rows], y=[row["quality"] for row in rows], mode="markers+text",
        text=[row["name"] for row in rows], textposition="top center",
        marker={"size": [16 if row["name"] == chosen else 9 for row in rows],
                "symbol": ["star" if row["name"] == chosen else "circle" for row in rows]}))
    figure.update_layout(title=f"Candidates: {metric} against time (star: ranked first for {result['goal']})",
                         xaxis_title="seconds", yaxis_title=metric, height=360, margin={"t": 50, "b": 40})
    return figure


def show_ranking(result: dict[str, Any], key: str) -> None:
    """The trade-off chart and the table of a ranking (the advisor's and Compare's)."""
    st.plotly_chart(tradeoff_figure(result), key=f"{key}_tradeoff")
    st.dataframe(candidates_frame(result), hide_index=True, key=f"{key}_candidates")


def apply_recommendation(prefix: str, changes: dict[str, Any]) -> None:
    """Copy the recommended changes into the page's settings widgets (``{prefix}_{field}`` keys).

    Used as a button callback: callbacks run before the page is drawn again, the only time Streamlit lets a widget's
    value be set from code.
    """
    for field, value in changes.items():
        st.session_state[f"{prefix}_{field}"] = value


def rules_frame(plan: dict[str, Any]) -> pd.DataFrame:
    """One row per rule: its text, whether it matched, whether the measurement agreed, and why not run."""
    return pd.DataFrame([{"rule": r["row"], "matched": r["matched"], "agreed": r["agreed"], "note": r["note"] or ""}
                         for r in plan["result"]["rules"]])


def advise_section(command: ModuleCommand, uploads: dict[str, Upload | None], settings: dict[str, Any],
                   disabled: bool) -> None:
    """Goal, budget and the "Recommend settings" button; the finished advice as tables."""
    if command.name not in PRIMARY_METRICS:
        return
    name = command.name
    with st.expander("Recommend settings (measured on these inputs)"):
        goal = st.segmented_control("Goal", GOALS, default="balanced", key=f"{name}_advise_goal") or "balanced"
        budget_s = st.segmented_control("Budget, s", BUDGETS_S, default=60, key=f"{name}_advise_budget") or 60
        if st.button("Recommend settings", key=f"{name}_advise_button", disabled=disabled):
            try:  # the page's Run identity, with the advice's own options: never a page Run's job
                key, config_json = run_identity(command, uploads, settings, {"advise": goal, "budget_s": budget_s})
            except QflowError as exc:
                st.error(exc.message)
                return
            st.session_state[f"{name}_advise_job"] = job_board().submit(
                key, f"{command.page_title} advisor", advise_job, name, uploads, config_json, goal, float(budget_s))
        job = ended_job(f"{name}_advise_job", f"{name}_advise_cancel")
        if job is None:
            return
        if job.state != "done":
            st.error(f"The advisor stopped: {job.error or job.state}")
            return
        _show_advice(job.result, name)


def _show_advice(plan: dict[str, Any], prefix: str) -> None:
    if "error" in plan:
        st.error(plan["error"])
        return
    result = plan["result"]
    changes = result["changes"]
    st.success(f"Goal {result['goal']}: {result['recommended_candidate']} "
               f"({'change ' + json.dumps(changes) if changes else 'keep the given settings'}).")
    if changes:
        st.button("Use these settings", key=f"{prefix}_advise_apply", on_click=apply_recommendation, args=(prefix, changes))
    show_ranking(result, f"{prefix}_advise")
    st.dataframe(rules_frame(plan), hide_index=True)
    for line in plan["diagnostics"]:
        st.caption(line)
