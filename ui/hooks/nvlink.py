"""NVLink page hooks: rounds, collective time and utilisation against the baselines, fabric, rounds, RL, classifier."""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.core.commands import format_value
from ui import nvlink_charts as figures

#: What the page says where the classifier's held-out accuracy does not beat always answering the majority class.
NO_CALL = "no call (classifier does not beat the majority class)"


def _scaled(value: float | None, scale: float) -> str:
    return format_value(None if value is None else value * scale)


def _row(method: str, values: dict[str, Any], rounds: Any) -> dict[str, Any]:
    """One row of the placement table (GB and ms, missing figures left out)."""
    row: dict[str, Any] = {"method": method}
    for key, column, scale in (("cut_cost_s", "cut_cost_s", 1), ("cross_node_bytes", "cross_node_GB", 1e-9),
                               ("cross_switch_bytes", "cross_switch_GB", 1e-9),
                               ("max_link_utilisation", "max_link_utilisation", 1),
                               ("estimated_collective_time_s", "collective_time_ms", 1e3)):
        if values.get(key) is not None:
            row[column] = values[key] * scale
    return {**row, "rounds": rounds}


def summary(plan: dict[str, Any]) -> None:
    """Rounds against the bound, collective time, utilisation, cross-node bytes; the baselines and the placement."""
    m, b, r = plan["metrics"], plan["baselines"], plan["result"]
    cols = st.columns(4)
    cols[0].metric("rounds / lower bound", f"{m['rounds']} / {m['rounds_lower_bound']}",
                   help="Largest number of rounds of any job vs the largest port degree (no schedule can use fewer)")
    cols[1].metric("collective time (ms)", _scaled(m["estimated_collective_time_s"], 1e3),
                   help="Alpha-beta estimate: round r of every job together, summed over the rounds")
    cols[2].metric("max link utilisation", _scaled(m["max_link_utilisation"], 1),
                   help="Busy time over the rounds' ideal time; above 1 a link, not the GPUs, sets the pace")
    cols[3].metric("cross-node GB", _scaled(m["cross_node_bytes"], 1e-9))
    fab = r["fabric"]
    st.caption(f"Fabric `{fab['name']}` ({fab['format']}): {fab['nodes_by_kind']}, {fab['links']} links, {fab['hosts']} hosts. "
               f"Routing: `{m['routing_policy']}`.")
    g, sp = b["greedy_colouring"], b["shortest_path"]
    rows = [_row("plan", m, m["rounds"]), *(_row(f"{name} placement", b[name], m["rounds"]) for name in ("round_robin", "random")),
            _row("greedy colouring", {"estimated_collective_time_s": g["estimated_collective_time_s"]}, g["rounds"]),
            _row("shortest-path routing", {k: sp[k] for k in ("max_link_utilisation", "estimated_collective_time_s")}, m["rounds"])]
    st.dataframe(rows, hide_index=True, key="nvlink_baselines_table")
    st.dataframe([{"job": job, "ranks": len(gpus), "rounds": m["rounds_per_job"][job],
                   "lower bound": m["rounds_lower_bound_per_job"][job], "GPUs (rank order)": ", ".join(gpus)}
                  for job, gpus in r["placement"].items()], hide_index=True, key="nvlink_placement_table")


def charts(run: Any) -> None:
    """Fabric by utilisation, rounds timeline, RL reward curve and the classifier's confusion matrix."""
    plan, result = run.plan, run.plan["result"]
    st.plotly_chart(figures.fabric_figure(plan), key="nvlink_fabric_chart")
    st.plotly_chart(figures.rounds_timeline_figure(plan), key="nvlink_rounds_chart")
    left, right = st.columns(2)
    if "rl" in result:
        left.plotly_chart(figures.rl_reward_figure(plan), key="nvlink_rl_chart")
    else:
        left.caption("RL planner off.")
    if "classifier" in result:
        right.plotly_chart(figures.confusion_figure(plan), key="nvlink_confusion_chart")
        flags = {k: _call(v["congested"]) for k, v in result["classifier"]["predictions"].items()}
        right.caption("Classifier's call: " + ", ".join(f"{k}: {v}" for k, v in flags.items()) + ".")
    else:
        right.caption("Classifier off (or its logs held one class only).")
    if result.get("learned_components"):
        st.subheader("Learned components against their trivial baselines")
        st.dataframe(result["learned_components"], hide_index=True, key="nvlink_learned_table")


def _call(congested: bool | None) -> str:
    """The classifier's call for one placement; ``None`` when the plan does not trust it (see ``acted_on``)."""
    if congested is None:
        return NO_CALL
    return "congested" if congested else "not congested"
