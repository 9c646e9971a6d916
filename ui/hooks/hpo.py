"""HPO page hooks: best value and regret, the suggestions, the baselines, best-so-far, trials and the GP slice."""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from qflow.core.commands import format_value
from ui.charts import COLORS, styled
from ui.plan_view import key_figures, show_charts


def best_so_far_figure(plan: dict[str, Any]) -> go.Figure:
    """Best objective value after each trial: the plan's method and each baseline (optimize mode), or the history (suggest mode)."""
    result = plan["result"]
    minimize = result["direction"] == "minimize"
    fig = go.Figure()
    if result["mode"] == "optimize":
        curve = result["best_so_far"]
        fig.add_scatter(x=list(range(1, len(curve) + 1)), y=curve, name=f"plan ({plan['solver']['ran']})", mode="lines",
                        line={"color": COLORS["plan"], "width": 3})
        for name, base in plan.get("baselines", {}).items():
            fig.add_scatter(x=list(range(1, len(base["best_so_far"]) + 1)), y=base["best_so_far"], name=name, mode="lines",
                            line={"color": COLORS.get(name), "width": 2})
        title = "Best value so far vs trial"
    else:
        values = [t["value"] for t in result["trials"] if t["method"] == "history"]
        fig.add_scatter(x=list(range(1, len(values) + 1)), y=list(accumulate(values, min if minimize else max)), name="history (best so far)",
                        mode="lines", line={"color": COLORS["history"], "width": 3})
        fig.add_scatter(x=list(range(1, len(values) + 1)), y=values, name="history trials", mode="markers",
                        marker={"color": COLORS["history"], "size": 7})
        title = "History: best value so far vs trial (suggest mode)"
    return styled(fig, title, "trial", "objective")


def _axis(param: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    if param["kind"] == "categorical":
        labels = [str(c) for c in param["choices"]]
        return {"label": param["name"], "values": [labels.index(str(v)) for v in values],
                "tickvals": list(range(len(labels))), "ticktext": labels, "range": [0, max(len(labels) - 1, 1)]}
    if param.get("log"):  # a log-scale parameter spreads out only on a log axis
        return {"label": f"log10 {param['name']}", "values": [math.log10(v) for v in values],
                "range": [math.log10(param["low"]), math.log10(param["high"])]}
    return {"label": param["name"], "values": values, "range": [param["low"], param["high"]]}


def parallel_coordinates_figure(plan: dict[str, Any]) -> go.Figure:
    """One line per trial across every parameter and the objective, coloured by the objective (better = darker)."""
    result = plan["result"]
    trials = result["trials"]
    dims = [_axis(p, [t["config"][p["name"]] for t in trials]) for p in result["space"]]
    values = [t["value"] for t in trials]
    dims.append({"label": "objective", "values": values})
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line={"color": values, "colorscale": "Viridis", "reversescale": result["direction"] == "minimize",
              "showscale": True, "colorbar": {"title": "objective"}},
    ))
    fig.update_layout(title=f"Trials across the search space ({len(trials)} trials)", margin={"l": 80, "r": 60, "t": 100, "b": 40})
    return fig


def gp_posterior_figure(plan: dict[str, Any], parameter: str) -> go.Figure:
    """GP posterior mean +- 2 standard deviations along ``parameter``, the others held at the best trial; trials as dots."""
    result = plan["result"]
    data = result["gp_posterior"][parameter]
    x, mean, std = data["x"], data["mean"], data["std"]
    kind = next(p["kind"] for p in result["space"] if p["name"] == parameter)
    fig = go.Figure()
    observed_x = [t["config"][parameter] for t in result["trials"]]
    observed_y = [t["value"] for t in result["trials"]]
    if kind == "categorical":
        labels = [str(v) for v in x]
        fig.add_scatter(x=labels, y=mean, name="GP mean +- 2 sd", mode="markers",
                        error_y={"type": "data", "array": [2 * s for s in std]}, marker={"color": COLORS["plan"], "size": 12})
        observed_x = [str(v) for v in observed_x]
    else:
        upper = [m + 2 * s for m, s in zip(mean, std, strict=True)]
        lower = [m - 2 * s for m, s in zip(mean, std, strict=True)]
        fig.add_scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor="rgba(31,95,191,0.18)",
                        line={"width": 0}, name="+- 2 sd", hoverinfo="skip")
        fig.add_scatter(x=x, y=mean, name="GP mean", mode="lines", line={"color": COLORS["plan"], "width": 3})
    fig.add_scatter(x=observed_x, y=observed_y, name="trials", mode="markers",
                    marker={"color": "#333333", "size": 6, "opacity": 0.6})
    log = any(p.get("log") for p in result["space"] if p["name"] == parameter)
    return styled(fig, f"GP posterior along {parameter} (others at the best trial)", parameter, "objective",
                  xaxis_type="log" if log else None)


def summary(plan: dict[str, Any]) -> None:
    """Best value, regret, evaluations, history used; the suggestions, rejected history rows, the baselines."""
    result, metrics = plan["result"], plan["metrics"]
    key_figures(("best value", format_value(metrics["best_value"], 6)),
                ("regret", format_value(metrics["regret"], 6), "best value - known minimum (built-in benchmarks)"),
                ("evaluations", metrics["n_evaluations"]),
                ("history used / rejected", f"{metrics['n_history_used']} / {metrics['n_history_rejected']}"))
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
    show_charts("hpo", {"best": best_so_far_figure(plan),
                        "parcoords": parallel_coordinates_figure(plan) if plan["result"]["trials"] else None})
    if names := list(plan["result"].get("gp_posterior", {})):  # a GP slice needs 2 points or more
        parameter = st.selectbox("GP posterior along", names, key="hpo_slice_parameter")
        st.plotly_chart(gp_posterior_figure(plan, parameter), key="hpo_gp_chart")
    quantum = plan["solver"].get("quantum")
    if quantum:
        st.caption(f"VQC on `{quantum['device']}`: {quantum['qubits_per_circuit'][0]} qubits, {quantum['layers']} layers, "
                   f"{len(quantum['optimizer_steps'])} refits, {quantum['circuits_run']} circuits, "
                   f"shots {quantum['blocks'][0]['shots']}.")
