"""Routing page hooks: key figures, load, traffic, the capacity sweep (computed in the same job) and QAOA."""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.core.commands import Progress
from qflow.core.config import QflowConfig
from qflow.core.uploads import Upload
from qflow.routing import capacity_sweep, load_routing_inputs
from ui import charts as figures

#: Metrics compared between the plan and each baseline, in table order.
METRICS = ("tokens_routed", "dropped_tokens", "capacity_violations", "max_overload", "load_imbalance", "total_affinity",
           "objective", "cross_node_fraction")
#: capacity_factor values of the capacity sweep chart.
SWEEP_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def extras(uploads: dict[str, Upload | None], config: QflowConfig, progress: Progress) -> dict[str, Any]:
    """The router and top-1 gating at each of :data:`SWEEP_FACTORS` (``{"sweep": rows}``)."""
    (tokens_name, tokens), (graph_name, graph) = uploads["tokens"], uploads["model_graph"]
    frame, model_graph, _ = load_routing_inputs(tokens, graph, tokens_name=tokens_name, model_graph_name=graph_name)
    progress(0.85, "capacity sweep (router and top-1 gating at each capacity_factor)")
    return {"sweep": capacity_sweep(frame, model_graph, config, factors=SWEEP_FACTORS)}


def summary(plan: dict[str, Any]) -> None:
    """Tokens routed and dropped, imbalance, cross-node share, the gap to the optimum."""
    metrics, dropped = plan["metrics"], plan["result"]["dropped"]
    cols = st.columns(5)
    cols[0].metric("tokens routed", metrics["tokens_routed"])
    cols[1].metric("dropped tokens", metrics["dropped_tokens"])
    cols[2].metric("load imbalance (max/mean)", f"{metrics['load_imbalance']:.3f}")
    cols[3].metric("cross-node fraction", f"{metrics['cross_node_fraction']:.1%}")
    gap = metrics.get("affinity_gap_to_optimum")
    cols[4].metric("gap to optimum", "-" if gap is None else f"{gap:.2e}",
                   help=f"Relative gap to the exact optimum ({metrics.get('optimum_kind')}); "
                        f"certified bound: {metrics['gap_to_upper_bound']:.2e}")
    if dropped["count"]:
        st.warning(f"{dropped['count']} tokens dropped: {dropped['reason']}", icon=":material/block:")
    if metrics.get("top_k", 1) > 1:
        _top_k_caption(metrics)


def _top_k_caption(metrics: dict[str, Any]) -> None:
    """Nodes per token with top_k > 1, and a warning where tokens span more nodes than ``node_limit``."""
    limit = metrics.get("node_limit") or 0
    st.caption(f"top_k={metrics['top_k']}: each token's experts span {metrics['nodes_per_token_mean']:.2f} nodes on average, "
               f"{metrics['nodes_per_token_max']} at most" + (f" (node_limit={limit})." if limit else " (no node_limit)."))
    if limit and metrics["nodes_per_token_max"] > limit:
        st.warning(f"node_limit={limit} not met: some tokens' experts span {metrics['nodes_per_token_max']} nodes "
                   "in this plan's own assignments.", icon=":material/hub:")


def charts(run: Any) -> None:
    """Load vs capacity, node traffic, the capacity sweep and, when QAOA ran, its convergence."""
    plan = run.plan
    st.plotly_chart(figures.expert_load_figure(plan), key="routing_load_chart")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.node_traffic_figure(plan), key="routing_traffic_chart")
    with right:
        st.plotly_chart(figures.capacity_sweep_figure(run.extras["sweep"], plan["config"]["capacity_factor"]),
                        key="routing_sweep_chart")
    convergence = figures.qaoa_convergence_figure(plan)
    if convergence is not None:
        quantum = plan["solver"]["quantum"]
        st.subheader("QAOA")
        st.caption(f"Device `{quantum['device']}` ({quantum['device_reason']}); qubits per circuit "
                   f"{quantum['qubits_per_circuit']}; {quantum['circuits_run']} circuit evaluations; "
                   f"tokens moved by QAOA: {plan['metrics'].get('tokens_moved_by_qaoa', 0)}.")
        st.plotly_chart(convergence, key="routing_qaoa_chart")
