"""Energy page: files and toggles -> EnergyConfig -> plan_energy (cached, worker thread) -> charts.

Inputs default to the sample files. Tests and automation can inject bytes
through ``st.session_state["energy_telemetry_bytes"]``, ``["energy_topology_bytes"]``
and ``["energy_jobs_bytes"]`` (optional ``..._name``); see :mod:`ui.inputs`.
The last run is kept in ``st.session_state["energy_run"]``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.energy import EnergyConfig
from ui import energy_charts as charts
from ui.energy_run import EnergyRun, run_energy
from ui.inputs import REPO_ROOT, InputFile, file_input
from ui.navigation import leave_legacy_pages_mode
from ui.plan_view import finished_run, run_in_status, show_plan_json, show_solver
from ui.store import save_run
from ui.summary import metrics_table
from ui.widgets import config_form

SAMPLES = REPO_ROOT / "sample_data" / "energy"
RUN_KEY = "energy_run"
METRICS = ("peak_power_w", "gap_to_lower_bound", "makespan_slots", "budget_exceeded_slots", "energy_kwh", "total_energy_kwh")


def show_inputs_and_settings() -> tuple[InputFile, InputFile, InputFile, dict[str, Any]]:
    """Uploaders and the config form; returns (telemetry, topology, jobs, settings)."""
    cols = st.columns(3)
    with cols[0]:
        telemetry = file_input("telemetry (CSV or JSON)", "energy_telemetry", ["csv", "json"], SAMPLES / "telemetry.csv",
                               help="timestamp, node, gpu, power_w; optional utilization, sm_clock_mhz, temperature_c, job_id")
    with cols[1]:
        topology = file_input("topology (JSON or YAML)", "energy_topology", ["json", "yaml", "yml"], SAMPLES / "topology.json",
                              help="nodes (id, gpus, min/max_clock_mhz, gpu_power_limit_w, ...), links, power_budget_w")
    with cols[2]:
        jobs = file_input("jobs (JSON or YAML)", "energy_jobs", ["json", "yaml", "yml"], SAMPLES / "jobs.json",
                          help='{"jobs": [{"id", "duration" (slots), "power_w"?, "deps"?, "node"?, "gpus"?}]}')
    with st.container(border=True):
        settings = config_form(EnergyConfig, key_prefix="energy")
    return telemetry, topology, jobs, settings


def run_with_progress(telemetry: InputFile, topology: InputFile, jobs: InputFile, settings: dict[str, Any]) -> EnergyRun:
    """Call the engine in a worker thread with a live progress bar."""
    return run_in_status(lambda progress: run_energy(telemetry, topology, jobs, settings, on_progress=progress))


def show_summary(plan: dict[str, Any]) -> None:
    """Key figures, the path taken, the schedule against its baselines, and the prediction errors."""
    m, r = plan["metrics"], plan["result"]
    cols = st.columns(5)
    cols[0].metric("peak power", f"{m['peak_power_w'] / 1000:.2f} kW",
                   help=f"ASAP {plan['baselines']['asap']['peak_power_w'] / 1000:.2f} kW")
    cols[1].metric("gap to lower bound", f"{m['gap_to_lower_bound']:.1%}", help=f"lower bound {m['lower_bound_w']:.0f} W")
    cols[2].metric("makespan", f"{m['makespan_slots']} slots", help=f"horizon {m['horizon_slots']} slots ({r['horizon_source']})")
    cols[3].metric("predicted saving (caps)", f"{r['predicted_savings']['caps_energy_kwh']:.1f} kWh")
    cols[4].metric("active accelerators", f"{r['active_accelerators']['total']} / {r['active_accelerators']['of']}")
    show_solver(plan)
    budget = "no budget" if r["power_budget_w"] is None else f"budget {r['power_budget_w']:.0f} W from {r['power_budget_source']}"
    st.caption(f"{len(r['schedule'])} jobs; {budget}; budget respected: {m['budget_respected']}.")
    st.dataframe(metrics_table(plan, METRICS), hide_index=True, key="energy_metrics_table")
    pred = r["prediction"]
    st.dataframe([{"method": k, "MAE (W per node and interval)": v, "best": k == pred["best_method"]} for k, v in pred["mae_w"].items()],
                 hide_index=True, key="energy_mae_table")


def show_charts(plan: dict[str, Any]) -> None:
    """Power timeline with the budget, the Gantt chart, predicted vs measured power, caps per node (and windows)."""
    st.plotly_chart(charts.power_timeline_figure(plan), key="energy_timeline_chart")
    st.plotly_chart(charts.gantt_figure(plan), key="energy_gantt_chart")
    st.plotly_chart(charts.prediction_figure(plan), key="energy_prediction_chart")
    st.plotly_chart(charts.caps_figure(plan), key="energy_caps_chart")
    windows = charts.windows_figure(plan)
    if windows is not None:
        st.plotly_chart(windows, key="energy_windows_chart")
        st.dataframe([{k: w[k] for k in ("slot", "qubits", "choice", "why", "greedy_ratio", "qaoa_ratio", "applied", "not_applied_reason")}
                      for w in plan["result"]["windows"]], hide_index=True, key="energy_windows_table")
    st.subheader("Clock caps (current settings kept for restore)")
    st.dataframe([{"node": c["node"], "current clock MHz": c["current"]["clock_mhz"], "recommended clock MHz": c["recommended"]["clock_mhz"],
                   "current power limit W": c["current"]["power_limit_w"], "recommended power limit W": c["recommended"]["power_limit_w"],
                   "slowdown": c["slowdown"], "binding": c["binding"], "fit": c["fit"]["model"], "fit MAE W": c["fit"]["mae_w"]}
                  for c in plan["result"]["frequency_caps"]], hide_index=True, key="energy_caps_table")


leave_legacy_pages_mode()
st.title("Energy")
st.caption("Predict per-node power from telemetry (GraphSAGE GNN vs ridge and persistence), schedule dependent jobs under a "
           "power budget against ASAP and the per-node scheduler, refine peak slots with QAOA, and recommend clock caps.")
telemetry, topology, jobs, settings = show_inputs_and_settings()
if st.button("Run", type="primary", key="energy_run_button"):
    st.session_state[RUN_KEY] = run_with_progress(telemetry, topology, jobs, settings)
    if not st.session_state[RUN_KEY].error:
        save_run(st.session_state[RUN_KEY].plan)  # run history for the Compare page

last: EnergyRun | None = finished_run(RUN_KEY, settings, "Press **Run** to plan on the inputs above.")
if last is not None:
    show_summary(last.plan)
    show_charts(last.plan)
    show_plan_json(last.plan, last.plan_json, file_name="energy_plan.json", key="energy_download")
