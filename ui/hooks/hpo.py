"""HPO page hooks: best value and regret, the suggestions, the baselines, best-so-far, trials and the GP slice."""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.core.commands import format_value
from ui import hpo_charts as figures


def summary(plan: dict[str, Any]) -> None:
    """Best value, regret, evaluations, history used; the suggestions, rejected history rows, the baselines."""
    result, metrics = plan["result"], plan["metrics"]
    cols = st.columns(4)
    cols[0].metric("best value", format_value(metrics["best_value"], 6))
    cols[1].metric("regret", format_value(metrics["regret"], 6), help="best value - known minimum (built-in benchmarks)")
    cols[2].metric("evaluations", metrics["n_evaluations"])
    cols[3].metric("history used / rejected", f"{metrics['n_history_used']} / {metrics['n_history_rejected']}")
    st.caption(f"Objective: {result['objective_detail']}; direction {result['direction']}.")
    st.subheader(f"Next {len(result['suggestions'])} suggestions ({result['suggestion_method']})")
    st.dataframe(result["suggestions"], hide_index=False, key="hpo_suggestions_table")
    if result["history_rejected"]:
        st.warning("History rows outside the space (not used): "
                   + "; ".join(f"row {r['row']}: {r['reason']}" for r in result["history_rejected"]), icon=":material/block:")
    if plan["baselines"]:
        rows = [{"method": f"plan ({plan['solver']['ran']})", "best_value": metrics["best_value"], "regret": metrics["regret"]}]
        rows += [{"method": name, "best_value": b["best_value"], "regret": b["regret"]} for name, b in plan["baselines"].items()]
        st.dataframe(rows, hide_index=True, key="hpo_baselines_table")


def charts(run: Any) -> None:
    """Best-so-far per method, parallel coordinates of the trials, and the GP posterior along one parameter."""
    plan = run.plan
    st.plotly_chart(figures.best_so_far_figure(plan), key="hpo_best_chart")
    if plan["result"]["trials"]:
        st.plotly_chart(figures.parallel_coordinates_figure(plan), key="hpo_parcoords_chart")
    names = figures.slice_parameters(plan)
    if names:
        parameter = st.selectbox("GP posterior along", names, key="hpo_slice_parameter")
        st.plotly_chart(figures.gp_posterior_figure(plan, parameter), key="hpo_gp_chart")
    quantum = plan["solver"].get("quantum")
    if quantum:
        st.caption(f"VQC on `{quantum['device']}`: {quantum['qubits_per_circuit'][0]} qubits, {quantum['layers']} layers, "
                   f"{len(quantum['optimizer_steps'])} refits, {quantum['circuits_run']} circuits, "
                   f"shots {quantum['blocks'][0]['shots']}.")
