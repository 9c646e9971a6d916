"""NVLink page: fabric, jobs and toggles -> NvlinkConfig -> plan_nvlink (cached, worker thread) -> charts.

Inputs default to a bundled scenario (a sample fabric and the jobs made for
it). Tests and automation can inject bytes through
``st.session_state["nvlink_fabric_bytes"]``, ``["nvlink_jobs_bytes"]`` and
``["nvlink_logs_bytes"]`` (optional ``..._name``); see :mod:`ui.inputs`. The
last run is kept in ``st.session_state["nvlink_run"]``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.nvlink import NvlinkConfig
from qflow.nvlink._sample import SAMPLE_SCENARIOS
from ui import nvlink_charts
from ui.inputs import REPO_ROOT, InputFile, file_input, optional_file_input
from ui.navigation import leave_legacy_pages_mode
from ui.nvlink_run import NvlinkRun, run_nvlink
from ui.plan_view import finished_run, run_in_status, show_plan_json, show_solver
from ui.store import save_run
from ui.widgets import config_form

SAMPLES = REPO_ROOT / "sample_data" / "nvlink"
RUN_KEY = "nvlink_run"


def show_inputs_and_settings() -> tuple[InputFile, InputFile, InputFile | None, dict[str, Any]]:
    """Scenario choice, uploaders and the config form; returns (fabric, jobs, logs, settings)."""
    scenario = st.selectbox("bundled fabric (used when nothing is uploaded)", list(SAMPLE_SCENARIOS), key="nvlink_scenario",
                            help="GB200 NVL72 rack, two DGX H100 on InfiniBand, one DGX H100, or its nvidia-smi topo -m text; "
                            "each with a jobs file that fits it")
    cols = st.columns(3)
    with cols[0]:
        fabric = file_input("fabric (node-link JSON or nvidia-smi topo -m text)", "nvlink_fabric", ["json", "txt"],
                            SAMPLES / scenario, help="gpu / nvswitch / nic / switch nodes; links with bandwidth_gbps")
    with cols[1]:
        jobs = file_input("jobs (JSON or YAML)", "nvlink_jobs", ["json", "yaml", "yml"], SAMPLES / SAMPLE_SCENARIOS[scenario],
                          help='{"jobs": [{"id", "ranks", "traffic" | "pattern" + "bytes"}]}')
    with cols[2]:
        logs = optional_file_input(
            "contention logs (CSV, optional)", "nvlink_logs", ["csv"],
            "No logs uploaded: the classifier trains on runs simulated on this fabric.",
            help="The classifier's feature columns and congested (0/1); without it the logs are simulated")
    with st.container(border=True):
        settings = config_form(NvlinkConfig, key_prefix="nvlink")
    return fabric, jobs, logs, settings


def run_with_progress(fabric: InputFile, jobs: InputFile, logs: InputFile | None, settings: dict[str, Any]) -> NvlinkRun:
    """Call the engine in a worker thread with a live progress bar."""
    return run_in_status(lambda progress: run_nvlink(fabric, jobs, logs, settings, on_progress=progress))


def _fmt(value: Any, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.4g}"


def show_summary(plan: dict[str, Any]) -> None:
    """Key figures, the path taken, and the plan against its baselines."""
    m, b, r = plan["metrics"], plan["baselines"], plan["result"]
    cols = st.columns(4)
    cols[0].metric("rounds / lower bound", f"{m['rounds']} / {m['rounds_lower_bound']}",
                   help="Largest number of rounds of any job vs the largest port degree (no schedule can use fewer)")
    cols[1].metric("collective time (ms)", _fmt(m["estimated_collective_time_s"], 1e3),
                   help="Alpha-beta estimate: round r of every job together, summed over the rounds")
    cols[2].metric("max link utilisation", _fmt(m["max_link_utilisation"]),
                   help="Busy time over the rounds' ideal time; above 1 a link, not the GPUs, sets the pace")
    cols[3].metric("cross-node GB", _fmt(m["cross_node_bytes"], 1e-9))
    show_solver(plan)
    fab = r["fabric"]
    st.caption(f"Fabric `{fab['name']}` ({fab['format']}): {fab['nodes_by_kind']}, {fab['links']} links, {fab['hosts']} hosts. "
               f"Routing: `{m['routing_policy']}`.")
    rows = [{"method": "plan", "cut_cost_s": m["cut_cost_s"], "cross_node_GB": m["cross_node_bytes"] / 1e9,
             "cross_switch_GB": m["cross_switch_bytes"] / 1e9, "max_link_utilisation": m["max_link_utilisation"],
             "collective_time_ms": m["estimated_collective_time_s"] * 1e3, "rounds": m["rounds"]}]
    for name in ("round_robin", "random"):
        v = b[name]
        rows.append({"method": f"{name} placement", "cut_cost_s": v["cut_cost_s"], "cross_node_GB": v["cross_node_bytes"] / 1e9,
                     "cross_switch_GB": v["cross_switch_bytes"] / 1e9, "max_link_utilisation": v["max_link_utilisation"],
                     "collective_time_ms": v["estimated_collective_time_s"] * 1e3, "rounds": m["rounds"]})
    g, sp = b["greedy_colouring"], b["shortest_path"]
    rows.append({"method": "greedy colouring", "collective_time_ms": g["estimated_collective_time_s"] * 1e3, "rounds": g["rounds"]})
    rows.append({"method": "shortest-path routing", "max_link_utilisation": sp["max_link_utilisation"],
                 "collective_time_ms": sp["estimated_collective_time_s"] * 1e3, "rounds": m["rounds"]})
    st.dataframe(rows, hide_index=True, key="nvlink_baselines_table")
    st.dataframe([{"job": job, "ranks": len(gpus), "rounds": m["rounds_per_job"][job],
                   "lower bound": m["rounds_lower_bound_per_job"][job], "GPUs (rank order)": ", ".join(gpus)}
                  for job, gpus in r["placement"].items()], hide_index=True, key="nvlink_placement_table")


def show_charts(plan: dict[str, Any]) -> None:
    """Fabric by utilisation, rounds timeline, RL reward curve and the classifier's confusion matrix."""
    st.plotly_chart(nvlink_charts.fabric_figure(plan), key="nvlink_fabric_chart")
    st.plotly_chart(nvlink_charts.rounds_timeline_figure(plan), key="nvlink_rounds_chart")
    cols = st.columns(2)
    result = plan["result"]
    with cols[0]:
        if "rl" in result:
            st.plotly_chart(nvlink_charts.rl_reward_figure(plan), key="nvlink_rl_chart")
        else:
            st.caption("RL planner off.")
    with cols[1]:
        if "classifier" in result:
            st.plotly_chart(nvlink_charts.confusion_figure(plan), key="nvlink_confusion_chart")
            flags = {k: ("congested" if v["congested"] else "not congested") for k, v in result["classifier"]["predictions"].items()}
            st.caption("Classifier's call: " + ", ".join(f"{k}: {v}" for k, v in flags.items()) + ".")
        else:
            st.caption("Classifier off (or its logs held one class only).")


leave_legacy_pages_mode()
st.title("NVLink fabric planning")
st.caption("Place jobs' ranks on an NVLink/NVSwitch fabric (recursive Kernighan-Lin bisection), schedule their transfers in "
           "conflict-free rounds (Koenig edge colouring, Kempe recolouring blocks, optional QAOA checked by brute force) and "
           "route flows (weighted ECMP or a Q-learning planner), against round-robin placement, greedy colouring and "
           "shortest-path routing; an SVM flags placements likely to congest.")
fabric, jobs, logs, settings = show_inputs_and_settings()
if st.button("Run", type="primary", key="nvlink_run_button"):
    st.session_state[RUN_KEY] = run_with_progress(fabric, jobs, logs, settings)
    if not st.session_state[RUN_KEY].error:
        save_run(st.session_state[RUN_KEY].plan)  # run history for the Compare page

last: NvlinkRun | None = finished_run(RUN_KEY, settings, "Press **Run** to plan on the inputs above.")
if last is not None:
    show_summary(last.plan)
    show_charts(last.plan)
    show_plan_json(last.plan, last.plan_json, file_name="nvlink_plan.json", key="nvlink_download")
