"""Routing page: files and toggles -> RoutingConfig -> plan_routing (cached) -> charts.

Inputs default to the sample files. Tests and automation can inject input
bytes through ``st.session_state["routing_tokens_bytes"]`` and
``st.session_state["routing_model_graph_bytes"]`` (optional ``..._name``);
see :mod:`ui.inputs`. The last run is kept in
``st.session_state["routing_run"]`` so reruns keep showing it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.routing import RoutingConfig
from ui import charts
from ui.inputs import REPO_ROOT, InputFile, file_input
from ui.navigation import leave_legacy_pages_mode
from ui.plan_view import finished_run, run_in_status, show_plan_json, show_solver
from ui.run import RoutingRun, run_routing
from ui.store import save_run
from ui.summary import metrics_table
from ui.widgets import config_form

SAMPLES = REPO_ROOT / "sample_data" / "routing"
RUN_KEY = "routing_run"


def show_inputs_and_settings() -> tuple[InputFile, InputFile, dict[str, Any]]:
    """Uploaders and the config form; returns (tokens, model_graph, settings)."""
    left, right = st.columns(2)
    with left:
        tokens = file_input("tokens (CSV or JSON)", "routing_tokens", ["csv", "json"], SAMPLES / "tokens.csv",
                            help="token_id, source, complexity, scores or score_0..score_{E-1}, hint, padding")
    with right:
        model_graph = file_input("model_graph (JSON or YAML)", "routing_model_graph", ["json", "yaml", "yml"],
                                 SAMPLES / "model_graph.json",
                                 help="nodes, experts (id, node, capacity), links (bandwidth_gbps); or node-link JSON")
    with st.container(border=True):
        settings = config_form(RoutingConfig, key_prefix="routing")
    return tokens, model_graph, settings


def run_with_progress(tokens: InputFile, model_graph: InputFile, settings: dict[str, Any]) -> RoutingRun:
    """Call the engine with a live progress bar inside a status box."""
    return run_in_status(lambda progress: run_routing(tokens, model_graph, settings, on_progress=progress))


def show_summary(plan: dict[str, Any]) -> None:
    """Key figures, the path taken, dropped tokens, and the plan against each baseline."""
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
    show_solver(plan)
    if dropped["count"]:
        st.warning(f"{dropped['count']} tokens dropped: {dropped['reason']}", icon=":material/block:")
    st.dataframe(metrics_table(plan), hide_index=True)


def show_charts(run: RoutingRun) -> None:
    """Load vs capacity, node traffic, the capacity sweep and, when QAOA ran, its convergence."""
    plan = run.plan
    st.plotly_chart(charts.expert_load_figure(plan), key="routing_load_chart")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.node_traffic_figure(plan), key="routing_traffic_chart")
    with right:
        st.plotly_chart(charts.capacity_sweep_figure(run.sweep, plan["config"]["capacity_factor"]), key="routing_sweep_chart")
    convergence = charts.qaoa_convergence_figure(plan)
    if convergence is not None:
        quantum = plan["solver"]["quantum"]
        st.subheader("QAOA")
        st.caption(f"Device `{quantum['device']}` ({quantum['device_reason']}); qubits per circuit "
                   f"{quantum['qubits_per_circuit']}; {quantum['circuits_run']} circuit evaluations; "
                   f"tokens moved by QAOA: {plan['metrics'].get('tokens_moved_by_qaoa', 0)}.")
        st.plotly_chart(convergence, key="routing_qaoa_chart")


leave_legacy_pages_mode()
st.title("Token routing")
st.caption("Assign the tokens of one MoE layer step to experts under capacity, near their expert's node, "
           "and compare with hash routing, top-1 gating and greedy balancing on the same input.")
tokens, model_graph, settings = show_inputs_and_settings()
if st.button("Run", type="primary", key="routing_run_button"):
    st.session_state[RUN_KEY] = run_with_progress(tokens, model_graph, settings)
    if not st.session_state[RUN_KEY].error:
        save_run(st.session_state[RUN_KEY].plan)  # run history for the Compare page

last: RoutingRun | None = finished_run(RUN_KEY, settings, "Press **Run** to plan on the inputs above.")
if last is not None:
    show_summary(last.plan)
    show_charts(last)
    show_plan_json(last.plan, last.plan_json, file_name="routing_plan.json", key="routing_download")
