"""Plotly figures of a routing plan: pure functions, plan dict in, Figure out.

No Streamlit here, so every figure is tested on a real plan without an app.
The plan is ``Plan.to_dict()``; expert order is the order of
``result.expert_capacity``, which is the order of ``metrics.expert_load``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["capacity_sweep_figure", "expert_load_figure", "node_traffic_figure", "placement_load_figure", "qaoa_convergence_figure"]

#: The plan in one strong colour, baselines in muted ones, the same on every chart.
COLORS = {
    "plan": "#1f5fbf",
    "hash": "#b0b0b0",
    "top1_gating": "#e8a33d",
    "greedy_balanced": "#7fb77e",
    "capacity": "#c0392b",
    "eplb": "#e8a33d",
}
#: Legend in one row above the plot, right-aligned under the title, clear of the axis titles.
LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 80, "b": 50},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
}
#: For side-by-side subplots: legend under the plots, where it cannot cover a subplot title.
_LAYOUT_SUBPLOTS = {
    "margin": {"l": 60, "r": 20, "t": 80, "b": 100},
    "legend": {"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0},
}
#: A marker shape per baseline, so they stay apart where they overlap.
_SYMBOLS = {"hash": "circle-open", "top1_gating": "diamond", "greedy_balanced": "triangle-up"}


def _expert_ids(plan: dict[str, Any]) -> list[str]:
    return list(plan["result"]["expert_capacity"])


def expert_load_figure(plan: dict[str, Any]) -> go.Figure:
    """Load per expert: the plan as bars, each baseline as markers, capacity as a dashed line.

    Loads are in complexity units, as ``metrics.expert_load``. Anything above
    the capacity line is an overloaded expert (plain hash routing has no
    capacity). Markers rather than grouped bars keep 4 methods x E experts legible.
    """
    experts = _expert_ids(plan)
    fig = go.Figure()
    fig.add_bar(x=experts, y=plan["metrics"]["expert_load"], name=f"plan ({plan['solver']['ran']})",
                marker_color=COLORS["plan"], opacity=0.85)
    for name, values in plan.get("baselines", {}).items():
        fig.add_scatter(x=experts, y=values["expert_load"], name=name, mode="markers",
                        marker={"color": COLORS.get(name), "symbol": _SYMBOLS.get(name, "circle"), "size": 7})
    fig.add_scatter(x=experts, y=plan["metrics"]["expert_capacity"], name="capacity", mode="lines",
                    line={"color": COLORS["capacity"], "dash": "dash", "shape": "hvh", "width": 2})
    fig.update_layout(title="Expert load vs capacity", bargap=0.25, xaxis_title="expert",
                      yaxis_title="load (token complexity)", **LAYOUT)
    return fig


def node_traffic_figure(plan: dict[str, Any]) -> go.Figure:
    """Heatmap of routed tokens from each source node (rows) to the node of their expert (columns).

    The diagonal stays on its node; everything off it crosses the network.
    """
    result = plan["result"]
    nodes = result["node_ids"]
    traffic = result["node_traffic_tokens"]
    fig = go.Figure(go.Heatmap(
        z=traffic, x=nodes, y=nodes, colorscale="Blues", colorbar={"title": "tokens"},
        texttemplate="%{z}" if len(nodes) <= 16 else None,
        hovertemplate="from %{y} to %{x}: %{z} tokens<extra></extra>",
    ))
    cross = plan["metrics"].get("cross_node_fraction")
    title = "Token traffic between nodes" + (f" ({cross:.1%} cross-node)" if cross is not None else "")
    fig.update_layout(title=title, xaxis_title="expert node", yaxis_title="source node", **LAYOUT)
    fig.update_yaxes(autorange="reversed")  # first node on top, like a matrix
    fig.update_xaxes(side="bottom")
    return fig


def placement_load_figure(layer: dict[str, Any], ids: Sequence[str], level: str, title: str) -> go.Figure:
    """Load per GPU or per node (``level`` = ``"gpu"`` or ``"node"``) of one placed layer: the plan against EPLB.

    ``layer`` is one of a placement plan's ``result.layers`` (``<level>_load`` and
    ``eplb_<level>_load``, expected tokens); a dotted line marks the mean load,
    the floor every placement shares, so the tallest bar over it is the imbalance.
    """
    plan_load, eplb_load = layer[f"{level}_load"], layer[f"eplb_{level}_load"]
    fig = go.Figure()
    fig.add_bar(x=list(ids), y=plan_load, name="plan", marker_color=COLORS["plan"])
    fig.add_bar(x=list(ids), y=eplb_load, name="EPLB baseline", marker_color=COLORS["eplb"], opacity=0.8)
    fig.add_hline(y=sum(plan_load) / max(len(plan_load), 1), line_dash="dot", line_color="#555",
                  annotation_text="mean", annotation_position="top left")
    fig.update_layout(title=title, barmode="group", bargap=0.2, xaxis_title=level, yaxis_title="load (tokens)", **LAYOUT)
    return fig


_SWEEP_LABELS = {"plan": "qflow router (classical)", "top1_gating": "top1_gating"}


def capacity_sweep_figure(rows: Sequence[dict[str, Any]], current_factor: float | None = None) -> go.Figure:
    """Dropped tokens and total affinity against ``capacity_factor``, router vs top-1 gating.

    ``rows`` is :func:`qflow.routing.capacity_sweep`'s output. Its ``"plan"``
    method is the classical router at each factor whatever path the plan took,
    so it is labelled as such. A dotted line marks ``current_factor``.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Dropped tokens", "Total affinity"), horizontal_spacing=0.15)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["capacity_factor"])
        x = [r["capacity_factor"] for r in mine]
        style = {"color": COLORS.get(method, None)}
        label = _SWEEP_LABELS.get(method, method)
        fig.add_scatter(x=x, y=[r["dropped_tokens"] for r in mine], name=label, legendgroup=method,
                        mode="lines+markers", line=style, row=1, col=1)
        fig.add_scatter(x=x, y=[r["total_affinity"] for r in mine], name=label, legendgroup=method, showlegend=False,
                        mode="lines+markers", line=style, row=1, col=2)
    if current_factor is not None:
        fig.add_vline(x=current_factor, line_dash="dot", line_color="#555", row="all", col="all")
    fig.update_xaxes(title_text="capacity_factor")
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    fig.update_yaxes(title_text="affinity", row=1, col=2)
    fig.update_layout(title="Capacity sweep", **_LAYOUT_SUBPLOTS)
    return fig


def qaoa_convergence_figure(plan: dict[str, Any]) -> go.Figure | None:
    """QAOA cost expectation per optimizer step for each block, and each block's approximation ratio.

    ``None`` when the plan has no quantum report (QAOA did not run).
    The ratio is (worst - QAOA) / (worst - exact) of the block cost; 1 is optimal.
    """
    quantum = plan["solver"].get("quantum")
    if not quantum:
        return None
    blocks = quantum.get("blocks") or [{} for _ in quantum["convergence"]]
    labels = [_block_label(i, block) for i, block in enumerate(blocks)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3], horizontal_spacing=0.12,
                        subplot_titles=("Cost expectation per optimizer step", "Approximation ratio per block"))
    for label, history in zip(labels, quantum["convergence"], strict=False):
        fig.add_scatter(x=list(range(1, len(history) + 1)), y=history, name=label, mode="lines+markers", row=1, col=1)
    ratios = quantum.get("block_ratios", [])
    fig.add_bar(x=labels[: len(ratios)], y=ratios, name="ratio", showlegend=False, marker_color=COLORS["plan"],
                text=[None if r is None else f"{r:.3f}" for r in ratios], textposition="outside", row=1, col=2)
    fig.add_hline(y=1.0, line_dash="dash", line_color=COLORS["capacity"], row=1, col=2)
    fig.update_xaxes(title_text="optimizer step", row=1, col=1)
    fig.update_yaxes(title_text="<H>", row=1, col=1)
    fig.update_yaxes(range=[0, 1.1], row=1, col=2)
    fig.update_layout(title=f"QAOA on {quantum['device']} (p={quantum['layers']})", **_LAYOUT_SUBPLOTS)
    return fig


def _block_label(index: int, block: dict[str, Any]) -> str:
    """``"block 0: expert32/expert33 (6q)"``; the plan names block experts by id."""
    names = [str(e) for e in block.get("experts") or []]
    qubits = f" ({block['qubits']}q)" if "qubits" in block else ""
    return f"block {index}: {'/'.join(names)}{qubits}" if names else f"block {index}"
