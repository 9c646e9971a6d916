"""Routing page hooks: key figures, load, traffic, the capacity sweep (computed in the same job) and QAOA.

Expert order in the figures is the order of ``result.expert_capacity``, which is that of ``metrics.expert_load``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from qflow.core.commands import Progress
from qflow.core.config import QflowConfig
from qflow.core.uploads import Upload
from qflow.routing import capacity_sweep, load_routing_inputs
from ui.charts import COLORS, SUBPLOTS, styled
from ui.plan_view import key_figures

#: Metrics compared between the plan and each baseline, in table order.
METRICS = ("tokens_routed", "dropped_tokens", "capacity_violations", "max_overload", "load_imbalance", "total_affinity",
           "objective", "cross_node_fraction")
#: capacity_factor values of the capacity sweep chart.
SWEEP_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
#: A marker shape per baseline, so they stay apart where they overlap.
_SYMBOLS = {"hash": "circle-open", "top1_gating": "diamond", "greedy_balanced": "triangle-up"}
_SWEEP_LABELS = {"plan": "qflow router (classical)", "top1_gating": "top1_gating"}


def extras(uploads: dict[str, Upload | None], config: QflowConfig, progress: Progress) -> dict[str, Any]:
    """The router and top-1 gating at each of :data:`SWEEP_FACTORS` (``{"sweep": rows}``)."""
    (tokens_name, tokens), (graph_name, graph) = uploads["tokens"], uploads["model_graph"]
    frame, model_graph, _ = load_routing_inputs(tokens, graph, tokens_name=tokens_name, model_graph_name=graph_name)
    progress(0.85, "capacity sweep (router and top-1 gating at each capacity_factor)")
    return {"sweep": capacity_sweep(frame, model_graph, config, factors=SWEEP_FACTORS)}


def expert_load_figure(plan: dict[str, Any]) -> go.Figure:
    """Load per expert (complexity units): the plan as bars, each baseline as markers, capacity as a dashed line.

    Anything above the capacity line is an overloaded expert (plain hash routing has no capacity). Markers rather than
    grouped bars keep 4 methods x E experts legible.
    """
    experts = list(plan["result"]["expert_capacity"])
    fig = go.Figure()
    fig.add_bar(x=experts, y=plan["metrics"]["expert_load"], name=f"plan ({plan['solver']['ran']})",
                marker_color=COLORS["plan"], opacity=0.85)
    for name, values in plan.get("baselines", {}).items():
        fig.add_scatter(x=experts, y=values["expert_load"], name=name, mode="markers",
                        marker={"color": COLORS.get(name), "symbol": _SYMBOLS.get(name, "circle"), "size": 7})
    fig.add_scatter(x=experts, y=plan["metrics"]["expert_capacity"], name="capacity", mode="lines",
                    line={"color": COLORS["capacity"], "dash": "dash", "shape": "hvh", "width": 2})
    return styled(fig, "Expert load vs capacity", "expert", "load (token complexity)", bargap=0.25)


def node_traffic_figure(plan: dict[str, Any]) -> go.Figure:
    """Heatmap of routed tokens from each source node (rows) to the node of their expert (columns); off the diagonal
    crosses the network."""
    nodes, cross = plan["result"]["node_ids"], plan["metrics"].get("cross_node_fraction")
    fig = go.Figure(go.Heatmap(
        z=plan["result"]["node_traffic_tokens"], x=nodes, y=nodes, colorscale="Blues", colorbar={"title": "tokens"},
        texttemplate="%{z}" if len(nodes) <= 16 else None, hovertemplate="from %{y} to %{x}: %{z} tokens<extra></extra>"))
    fig.update_yaxes(autorange="reversed")  # first node on top, like a matrix
    fig.update_xaxes(side="bottom")
    return styled(fig, "Token traffic between nodes" + (f" ({cross:.1%} cross-node)" if cross is not None else ""),
                  "expert node", "source node")


def capacity_sweep_figure(rows: Sequence[dict[str, Any]], current_factor: float | None = None) -> go.Figure:
    """Dropped tokens and total affinity against ``capacity_factor``, router vs top-1 gating.

    ``rows`` is :func:`qflow.routing.capacity_sweep`'s output. Its ``"plan"`` method is the classical router at each
    factor whatever path the plan took, so it is labelled as such. A dotted line marks ``current_factor``.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Dropped tokens", "Total affinity"), horizontal_spacing=0.15)
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["capacity_factor"])
        for col, metric in ((1, "dropped_tokens"), (2, "total_affinity")):
            fig.add_scatter(x=[r["capacity_factor"] for r in mine], y=[r[metric] for r in mine], legendgroup=method,
                            name=_SWEEP_LABELS.get(method, method), showlegend=col == 1, mode="lines+markers",
                            line={"color": COLORS.get(method)}, row=1, col=col)
    if current_factor is not None:
        fig.add_vline(x=current_factor, line_dash="dot", line_color="#555", row="all", col="all")
    fig.update_xaxes(title_text="capacity_factor")
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    fig.update_yaxes(title_text="affinity", row=1, col=2)
    return styled(fig, "Capacity sweep", layout=SUBPLOTS)


def qaoa_convergence_figure(plan: dict[str, Any]) -> go.Figure | None:
    """QAOA cost expectation per optimizer step for each block, and each block's approximation ratio ((worst - QAOA) /
    (worst - exact) of the block cost; 1 is optimal). ``None`` when QAOA did not run."""
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
    return styled(fig, f"QAOA on {quantum['device']} (p={quantum['layers']})", layout=SUBPLOTS)


def _block_label(index: int, block: dict[str, Any]) -> str:
    """``"block 0: expert32/expert33 (6q)"``; the plan names block experts by id."""
    names = [str(e) for e in block.get("experts") or []]
    qubits = f" ({block['qubits']}q)" if "qubits" in block else ""
    return f"block {index}: {'/'.join(names)}{qubits}" if names else f"block {index}"


def summary(plan: dict[str, Any]) -> None:
    """Tokens routed and dropped, imbalance, cross-node share, the gap to the optimum."""
    metrics, dropped = plan["metrics"], plan["result"]["dropped"]
    gap = metrics.get("affinity_gap_to_optimum")
    key_figures(("tokens routed", metrics["tokens_routed"]), ("dropped tokens", metrics["dropped_tokens"]),
                ("load imbalance (max/mean)", f"{metrics['load_imbalance']:.3f}"),
                ("cross-node fraction", f"{metrics['cross_node_fraction']:.1%}"),
                ("gap to optimum", "-" if gap is None else f"{gap:.2e}", f"Relative gap to the exact optimum "
                 f"({metrics.get('optimum_kind')}); certified bound: {metrics['gap_to_upper_bound']:.2e}"))
    if dropped["count"]:
        st.warning(f"{dropped['count']} tokens dropped: {dropped['reason']}", icon=":material/block:")
    if metrics.get("top_k", 1) <= 1:
        return
    limit = metrics.get("node_limit") or 0  # with top_k > 1: nodes per token, warned where over node_limit
    st.caption(f"top_k={metrics['top_k']}: each token's experts span {metrics['nodes_per_token_mean']:.2f} nodes on average, "
               f"{metrics['nodes_per_token_max']} at most" + (f" (node_limit={limit})." if limit else " (no node_limit)."))
    if limit and metrics["nodes_per_token_max"] > limit:
        st.warning(f"node_limit={limit} not met: some tokens' experts span {metrics['nodes_per_token_max']} nodes "
                   "in this plan's own assignments.", icon=":material/hub:")


def charts(run: Any) -> None:
    """Load vs capacity, node traffic, the capacity sweep and, when QAOA ran, its convergence."""
    plan = run.plan
    st.plotly_chart(expert_load_figure(plan), key="routing_load_chart")
    left, right = st.columns(2)
    left.plotly_chart(node_traffic_figure(plan), key="routing_traffic_chart")
    right.plotly_chart(capacity_sweep_figure(run.extras["sweep"], plan["config"]["capacity_factor"]), key="routing_sweep_chart")
    convergence = qaoa_convergence_figure(plan)
    if convergence is not None:
        quantum = plan["solver"]["quantum"]
        st.subheader("QAOA")
        st.caption(f"Device `{quantum['device']}` ({quantum['device_reason']}); qubits per circuit "
                   f"{quantum['qubits_per_circuit']}; {quantum['circuits_run']} circuit evaluations; "
                   f"tokens moved by QAOA: {plan['metrics'].get('tokens_moved_by_qaoa', 0)}.")
        st.plotly_chart(convergence, key="routing_qaoa_chart")
