"""Energy page hooks: peak power against its bound, prediction errors, timeline, Gantt, caps and QAOA windows."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui import energy_charts as figures

METRICS = ("peak_power_w", "gap_to_lower_bound", "makespan_slots", "budget_exceeded_slots", "energy_kwh", "total_energy_kwh")
WINDOW_COLUMNS = ("slot", "qubits", "choice", "why", "greedy_ratio", "qaoa_ratio", "applied", "not_applied_reason")


def summary(plan: dict[str, Any]) -> None:
    """Peak power, gap to the lower bound, makespan, predicted saving, active accelerators; prediction errors."""
    m, r = plan["metrics"], plan["result"]
    cols = st.columns(6)
    cols[0].metric("peak power", f"{m['peak_power_w'] / 1000:.2f} kW",
                   help=f"ASAP {plan['baselines']['asap']['peak_power_w'] / 1000:.2f} kW")
    cols[1].metric("peak gap to lower bound", f"{m['gap_to_lower_bound']:.1%}", help=f"lower bound {m['lower_bound_w']:.0f} W")
    cols[2].metric("makespan", f"{m['makespan_slots']} slots", help=f"horizon {m['horizon_slots']} slots ({r['horizon_source']})")
    cols[3].metric("makespan gap to lower bound", _makespan_gap(m), help=_makespan_help(r.get("objective") or {}))
    cols[4].metric("predicted saving (caps)", f"{r['predicted_savings']['caps_energy_kwh']:.1f} kWh")
    cols[5].metric("active accelerators", f"{r['active_accelerators']['total']} / {r['active_accelerators']['of']}")
    budget = "no budget" if r["power_budget_w"] is None else f"budget {r['power_budget_w']:.0f} W from {r['power_budget_source']}"
    st.caption(f"{len(r['schedule'])} jobs; {budget}; budget respected: {m['budget_respected']}.")
    pred = r["prediction"]
    st.dataframe([{"method": k, "MAE (W per node and interval)": v, "best": k == pred["best_method"]}
                  for k, v in pred["mae_w"].items()], hide_index=True, key="energy_mae_table")


def _makespan_gap(metrics: dict[str, Any]) -> str:
    """``2.4% (bound 42 slots)``, or ``-`` where the plan has no makespan lower bound."""
    bound = metrics.get("makespan_lower_bound_slots")
    return "-" if bound is None else f"{metrics['makespan_gap_to_lower_bound']:.1%} (bound {bound} slots)"


def _makespan_help(objective: dict[str, Any]) -> str:
    """Where the makespan lower bound comes from and whether the plan's makespan is proven optimal."""
    parts = objective.get("lower_bound_components") or {}
    named = ", ".join(f"{k} {v}" for k, v in parts.items() if isinstance(v, int | float) and k != "bound")
    return f"Largest of: {named}. Proven optimal: {objective.get('optimal_proven')}." if named else "No makespan bound."


def _caps_rows(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"node": c["node"], "current clock MHz": c["current"]["clock_mhz"], "recommended clock MHz": c["recommended"]["clock_mhz"],
             "current power limit W": c["current"]["power_limit_w"], "recommended power limit W": c["recommended"]["power_limit_w"],
             "slowdown": c["slowdown"], "binding": c["binding"], "fit": c["fit"]["model"], "fit MAE W": c["fit"]["mae_w"]}
            for c in plan["result"]["frequency_caps"]]


def charts(run: Any) -> None:
    """Power timeline with the budget, the Gantt chart, predicted vs measured power, caps per node (and windows), trade-off."""
    plan = run.plan
    st.plotly_chart(figures.power_timeline_figure(plan), key="energy_timeline_chart")
    st.plotly_chart(figures.gantt_figure(plan), key="energy_gantt_chart")
    st.plotly_chart(figures.prediction_figure(plan), key="energy_prediction_chart")
    st.plotly_chart(figures.caps_figure(plan), key="energy_caps_chart")
    windows = figures.windows_figure(plan)
    if windows is not None:
        st.plotly_chart(windows, key="energy_windows_chart")
        st.dataframe([{k: w[k] for k in WINDOW_COLUMNS} for w in plan["result"]["windows"]], hide_index=True,
                     key="energy_windows_table")
    tradeoff = figures.budget_tradeoff_figure(plan)
    if tradeoff is not None:
        st.plotly_chart(tradeoff, key="energy_tradeoff_chart")
    st.subheader("Clock caps (current settings kept for restore)")
    st.dataframe(_caps_rows(plan), hide_index=True, key="energy_caps_table")
