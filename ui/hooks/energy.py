"""Energy page hooks: peak power against its bound, prediction errors, timeline, Gantt, caps and QAOA windows."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from ui.charts import COLORS, SUBPLOTS, styled
from ui.plan_view import key_figures, show_charts

METRICS = ("peak_power_w", "gap_to_lower_bound", "makespan_slots", "budget_exceeded_slots", "energy_kwh", "total_energy_kwh")
WINDOW_COLUMNS = ("slot", "qubits", "choice", "why", "greedy_ratio", "qaoa_ratio", "applied", "not_applied_reason")

_LABELS = {"plan": "plan", "asap": "ASAP (before)", "per_node": "per-node scheduler", "plan_capped": "plan with clock caps"}


def power_timeline_figure(plan: dict[str, Any]) -> go.Figure:
    """Jobs' power per slot: ASAP and per-node (before) against the plan (after), the budget and the lower bound, W."""
    result, metrics = plan["result"], plan["metrics"]
    timeline = result["power_timeline_w"]
    fig = go.Figure()
    for name in ("asap", "per_node", "plan", "plan_capped"):
        values = timeline[name]
        label = f"plan ({plan['solver']['ran']})" if name == "plan" else _LABELS[name]
        fig.add_scatter(x=list(range(len(values))), y=values, name=label, mode="lines",
                        line={"color": COLORS[name], "width": 3 if name == "plan" else 2, "shape": "hv",
                              "dash": "dot" if name == "plan_capped" else None})
    if result["power_budget_w"] is not None:
        fig.add_hline(y=result["power_budget_w"], line_dash="dash", line_color=COLORS["budget"],
                      annotation_text=f"budget {result['power_budget_w']:.0f} W", annotation_position="top left")
    fig.add_hline(y=metrics["lower_bound_w"], line_dash="dot", line_color=COLORS["lower_bound"],
                  annotation_text=f"lower bound {metrics['lower_bound_w']:.0f} W", annotation_position="bottom left")
    fig.add_vline(x=result["horizon_slots"], line_dash="dot", line_color="#999999")
    return styled(fig, f"Power timeline: peak {metrics['peak_power_w']:.0f} W vs ASAP {plan['baselines']['asap']['peak_power_w']:.0f} W",
                  f"slot ({result['slot_hours']:g} h each; dotted line: horizon)", "jobs' power (W)")


def _gantt_lanes(schedule: list[dict[str, Any]]) -> list[int]:
    """A lane per job so that jobs sharing a node and a slot never share a lane (first free lane, in start order).

    >>> _gantt_lanes([{"node": "a", "start": 0, "end": 2}, {"node": "a", "start": 1, "end": 3}, {"node": "a", "start": 2, "end": 4}])
    [0, 1, 0]
    """
    lanes: list[int] = []
    ends: dict[str, list[int]] = {}
    for row in schedule:
        free = ends.setdefault(row["node"], [])
        lane = next((i for i, end in enumerate(free) if end <= row["start"]), len(free))
        if lane == len(free):
            free.append(row["end"])
        else:
            free[lane] = row["end"]
        lanes.append(lane)
    return lanes


def gantt_figure(plan: dict[str, Any]) -> go.Figure:
    """One bar per job from start to end slot, grouped by node (a lane per concurrent job), coloured by power."""
    schedule = sorted(plan["result"]["schedule"], key=lambda r: (r["start"], r["job"]))
    lanes = _gantt_lanes(schedule)
    nodes = plan["result"]["node_ids"]
    width = {n: max([lane for row, lane in zip(schedule, lanes, strict=True) if row["node"] == n], default=0) + 1 for n in nodes}
    offset, y = {}, 0
    for n in nodes:
        offset[n] = y
        y += width[n] + 1
    ys = [offset[row["node"]] + lane for row, lane in zip(schedule, lanes, strict=True)]
    fig = go.Figure(go.Bar(
        base=[r["start"] for r in schedule], x=[r["end"] - r["start"] for r in schedule], y=ys, orientation="h",
        marker={"color": [r["power_w"] for r in schedule], "colorscale": "YlOrRd", "showscale": True,
                "colorbar": {"title": "W"}, "line": {"width": 0.5, "color": "#333"}},
        customdata=[[r["job"], r["node"], r["start"], r["end"], r["power_w"], r["gpus"]] for r in schedule],
        hovertemplate="%{customdata[0]} on %{customdata[1]}<br>slots %{customdata[2]}-%{customdata[3]}<br>"
                      "%{customdata[4]:.0f} W, %{customdata[5]} GPUs<extra></extra>",
        name="jobs",
    ))
    fig.update_yaxes(tickvals=[offset[n] + (width[n] - 1) / 2 for n in nodes], ticktext=nodes, autorange="reversed")
    return styled(fig, f"Schedule ({len(schedule)} jobs, {plan['metrics']['makespan_slots']} slots)", "slot", "node",
                  bargap=0.15, height=max(420, 12 * y), showlegend=False)


def prediction_figure(plan: dict[str, Any]) -> go.Figure:
    """Cluster power over the held-out tail: measured against each method's one-interval-ahead prediction, W."""
    pred = plan["result"]["prediction"]
    x = pred["tail_timestamps"]
    fig = go.Figure()
    fig.add_scatter(x=x, y=pred["tail_measured_total_w"], name="measured", mode="lines+markers",
                    line={"color": COLORS["measured"], "width": 3}, marker={"size": 4})
    for name, values in pred["tail_predicted_total_w"].items():
        fig.add_scatter(x=x, y=values, name=f"{name} (MAE {pred['mae_w'][name]:.0f} W/node)", mode="lines",
                        line={"color": COLORS.get(name), "width": 2, "dash": None if name == pred["best_method"] else "dash"})
    return styled(fig, f"Predicted vs measured power (walk-forward tail; best: {pred['best_method']})", "time",
                  "cluster power (W)")


def caps_figure(plan: dict[str, Any]) -> go.Figure:
    """Per node: current vs recommended SM clock (with the allowed range) and per-GPU power limit."""
    caps = plan["result"]["frequency_caps"]
    nodes = [c["node"] for c in caps]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("SM clock cap (MHz)", "GPU power limit (W)"), horizontal_spacing=0.1)
    for which in ("current", "recommended"):
        fig.add_bar(x=nodes, y=[c[which]["clock_mhz"] for c in caps], name=which, marker_color=COLORS[which], legendgroup=which,
                    row=1, col=1)
        fig.add_bar(x=nodes, y=[c[which]["power_limit_w"] for c in caps], name=which, marker_color=COLORS[which], legendgroup=which,
                    showlegend=False, row=1, col=2)
    for key, col, label in (("min_clock_mhz", 1, "min clock"), ("max_clock_mhz", 1, "max clock"),
                            ("gpu_min_power_w", 2, "min power limit"), ("gpu_power_limit_w", 2, "max power limit")):
        fig.add_scatter(x=nodes, y=[c["limits"][key] for c in caps], mode="markers", name=label, showlegend=col == 1 or "power" in key,
                        marker={"symbol": "line-ew-open", "size": 18, "color": COLORS["budget"] if "max" in key else "#555"},
                        row=1, col=col)
    saving = plan["result"]["predicted_savings"]
    return styled(fig, f"Clock caps per node: predicted saving {saving['caps_energy_kwh']:.1f} kWh "
                       f"({100 * saving['caps_energy_fraction']:.1f} %)", layout=SUBPLOTS, barmode="group")


def windows_figure(plan: dict[str, Any]) -> go.Figure | None:
    """Approximation ratio of the greedy and QAOA answers per window (1 = the exact optimum); None without windows."""
    windows = plan["result"].get("windows")
    if not windows:
        return None
    labels = [f"slot {w['slot']} ({w['qubits']}q)" for w in windows]
    fig = go.Figure()
    fig.add_bar(x=labels, y=[w["greedy_ratio"] for w in windows], name="greedy", marker_color=COLORS["greedy"])
    fig.add_bar(x=labels, y=[w["qaoa_ratio"] for w in windows], name="QAOA", marker_color=COLORS["qaoa"],
                text=[None if w["qaoa_ratio"] is None else f"{w['qaoa_ratio']:.3f}" for w in windows], textposition="outside")
    fig.add_hline(y=1.0, line_dash="dash", line_color=COLORS["budget"])
    return styled(fig, "Peak-slot windows: ratio to the exact optimum (1 = optimal)", barmode="group",
                  yaxis={"range": [0, 1.15]})


def budget_tradeoff_figure(plan: dict[str, Any]) -> go.Figure | None:
    """Makespan (slots) against peak power (W) over the plan's budget sweep, with its lower bound; None without a sweep.

    ``result.objective.budget_sweep`` rows: ``budget_w``, ``peak_w`` reached, ``makespan_slots`` and
    ``makespan_lower_bound_slots``. The plan's own schedule is the star (its budget also got the randomised search).
    """
    rows = sorted((plan["result"].get("objective") or {}).get("budget_sweep") or [], key=lambda r: r["peak_w"])
    if not rows:
        return None
    peaks = [r["peak_w"] / 1000 for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=peaks, y=[r["makespan_slots"] for r in rows], name="schedule at each budget", mode="lines+markers",
                    line={"color": COLORS["plan"]}, customdata=[r["budget_w"] for r in rows],
                    hovertemplate="budget %{customdata:.0f} W: peak %{x:.2f} kW, %{y} slots<extra></extra>")
    fig.add_scatter(x=peaks, y=[r["makespan_lower_bound_slots"] for r in rows], name="makespan lower bound",
                    mode="lines", line={"color": COLORS["lower_bound"], "dash": "dot"})
    metrics = plan["metrics"]
    fig.add_scatter(x=[metrics["peak_power_w"] / 1000], y=[metrics["makespan_slots"]], name="this plan", mode="markers",
                    marker={"symbol": "star", "size": 14, "color": COLORS["budget"]})
    return styled(fig, "Budget trade-off: makespan against peak power", "peak power (kW)", "makespan (slots)")


def summary(plan: dict[str, Any]) -> None:
    """Peak power, gap to the lower bound, makespan, predicted saving, active accelerators; prediction errors."""
    m, r = plan["metrics"], plan["result"]
    key_figures(("peak power", f"{m['peak_power_w'] / 1000:.2f} kW", f"ASAP {plan['baselines']['asap']['peak_power_w'] / 1000:.2f} kW"),
                ("peak gap to lower bound", f"{m['gap_to_lower_bound']:.1%}", f"lower bound {m['lower_bound_w']:.0f} W"),
                ("makespan", f"{m['makespan_slots']} slots", f"horizon {m['horizon_slots']} slots ({r['horizon_source']})"),
                _makespan_gap(m, r.get("objective") or {}),
                ("predicted saving (caps)", f"{r['predicted_savings']['caps_energy_kwh']:.1f} kWh"),
                ("active accelerators", f"{r['active_accelerators']['total']} / {r['active_accelerators']['of']}"))
    budget = "no budget" if r["power_budget_w"] is None else f"budget {r['power_budget_w']:.0f} W from {r['power_budget_source']}"
    st.caption(f"{len(r['schedule'])} jobs; {budget}; budget respected: {m['budget_respected']}.")
    pred = r["prediction"]
    st.dataframe([{"method": k, "MAE (W per node and interval)": v, "best": k == pred["best_method"]}
                  for k, v in pred["mae_w"].items()], hide_index=True, key="energy_mae_table")


def _makespan_gap(metrics: dict[str, Any], objective: dict[str, Any]) -> tuple[str, str, str]:
    """The key figure: ``2.4% (bound 42 slots)`` (``-`` without a makespan lower bound), its help saying where the bound
    comes from and whether the plan's makespan is proven optimal."""
    bound = metrics.get("makespan_lower_bound_slots")
    parts = objective.get("lower_bound_components") or {}
    named = ", ".join(f"{k} {v}" for k, v in parts.items() if isinstance(v, int | float) and k != "bound")
    return ("makespan gap to lower bound",
            "-" if bound is None else f"{metrics['makespan_gap_to_lower_bound']:.1%} (bound {bound} slots)",
            f"Largest of: {named}. Proven optimal: {objective.get('optimal_proven')}." if named else "No makespan bound.")


def charts(run: Any) -> None:
    """Power timeline with the budget, the Gantt chart, predicted vs measured power, caps per node (and windows), trade-off."""
    plan = run.plan
    show_charts("energy", {"timeline": power_timeline_figure(plan), "gantt": gantt_figure(plan),
                           "prediction": prediction_figure(plan), "caps": caps_figure(plan), "windows": windows_figure(plan)})
    if plan["result"].get("windows"):
        st.dataframe([{k: w[k] for k in WINDOW_COLUMNS} for w in plan["result"]["windows"]], hide_index=True,
                     key="energy_windows_table")
    show_charts("energy", {"tradeoff": budget_tradeoff_figure(plan)})
    st.subheader("Clock caps (current settings kept for restore)")
    st.dataframe([{"node": c["node"], "current clock MHz": c["current"]["clock_mhz"], "recommended clock MHz": c["recommended"]["clock_mhz"],
                   "current power limit W": c["current"]["power_limit_w"], "recommended power limit W": c["recommended"]["power_limit_w"],
                   "slowdown": c["slowdown"], "binding": c["binding"], "fit": c["fit"]["model"], "fit MAE W": c["fit"]["mae_w"]}
                  for c in plan["result"]["frequency_caps"]], hide_index=True, key="energy_caps_table")
