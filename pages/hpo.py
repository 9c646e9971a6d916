"""HPO page: files and toggles -> HpoConfig -> plan_hpo (cached, worker thread) -> charts.

Inputs default to the sample files (the dataset is optional: without it the
train objective uses ``builtin_dataset``). Tests and automation can inject
bytes through ``st.session_state["hpo_space_bytes"]``, ``["hpo_history_bytes"]``
and ``["hpo_dataset_bytes"]`` (optional ``..._name``); see :mod:`ui.inputs`.
The last run is kept in ``st.session_state["hpo_run"]``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.hpo import HpoConfig
from ui import hpo_charts
from ui.hpo_run import HpoRun, run_hpo
from ui.inputs import REPO_ROOT, InputFile, file_input, optional_file_input
from ui.navigation import leave_legacy_pages_mode
from ui.plan_view import finished_run, run_in_status, show_plan_json, show_solver
from ui.store import save_run
from ui.widgets import config_form

SAMPLES = REPO_ROOT / "sample_data" / "hpo"
RUN_KEY = "hpo_run"


def show_inputs_and_settings() -> tuple[InputFile, InputFile, InputFile | None, dict[str, Any]]:
    """Uploaders and the config form; returns (space, history, dataset, settings)."""
    cols = st.columns(3)
    with cols[0]:
        space = file_input("space (JSON or YAML)", "hpo_space", ["json", "yaml", "yml"], SAMPLES / "space.yaml",
                           help="parameters: {name: {kind: float|int, low, high, log} | {kind: categorical, choices}}")
    with cols[1]:
        history = file_input("history (CSV)", "hpo_history", ["csv"], SAMPLES / "history.csv",
                             help="one column per parameter plus objective (blank = pending trial)")
    with cols[2]:
        dataset = optional_file_input(
            "dataset (CSV, optional)", "hpo_dataset", ["csv"],
            "No dataset uploaded: the train objective uses the scikit-learn dataset named by `builtin_dataset`.",
            help="For objective train: feature columns and a target column (named target, else the last)")
    with st.container(border=True):
        settings = config_form(HpoConfig, key_prefix="hpo")
    return space, history, dataset, settings


def run_with_progress(space: InputFile, history: InputFile, dataset: InputFile | None, settings: dict[str, Any]) -> HpoRun:
    """Call the engine in a worker thread with a live progress bar."""
    return run_in_status(lambda progress: run_hpo(space, history, dataset, settings, on_progress=progress),
                         working="Optimising...")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def show_summary(plan: dict[str, Any]) -> None:
    """Key figures, the path taken, the suggestions and the baselines."""
    result, metrics = plan["result"], plan["metrics"]
    cols = st.columns(4)
    cols[0].metric("best value", _fmt(metrics["best_value"]))
    cols[1].metric("regret", _fmt(metrics["regret"]), help="best value - known minimum (built-in benchmarks)")
    cols[2].metric("evaluations", metrics["n_evaluations"])
    cols[3].metric("history used / rejected", f"{metrics['n_history_used']} / {metrics['n_history_rejected']}")
    show_solver(plan)
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


def show_charts(plan: dict[str, Any]) -> None:
    """Best-so-far per method, parallel coordinates of the trials, and the GP posterior along one parameter."""
    st.plotly_chart(hpo_charts.best_so_far_figure(plan), key="hpo_best_chart")
    if plan["result"]["trials"]:
        st.plotly_chart(hpo_charts.parallel_coordinates_figure(plan), key="hpo_parcoords_chart")
    names = hpo_charts.slice_parameters(plan)
    if names:
        parameter = st.selectbox("GP posterior along", names, key="hpo_slice_parameter")
        st.plotly_chart(hpo_charts.gp_posterior_figure(plan, parameter), key="hpo_gp_chart")
    quantum = plan["solver"].get("quantum")
    if quantum:
        st.caption(f"VQC on `{quantum['device']}`: {quantum['qubits_per_circuit'][0]} qubits, {quantum['layers']} layers, "
                   f"{len(quantum['optimizer_steps'])} refits, {quantum['circuits_run']} circuits, "
                   f"shots {quantum['blocks'][0]['shots']}.")


leave_legacy_pages_mode()
st.title("Hyperparameter optimisation")
st.caption("Recommend the next configurations from a search space and past trials, or optimise a benchmark or a "
           "cross-validated training objective; GP expected improvement, a VQC optimizer and a hybrid, against "
           "random search and Optuna's TPE.")
space, history, dataset, settings = show_inputs_and_settings()
if st.button("Run", type="primary", key="hpo_run_button"):
    st.session_state[RUN_KEY] = run_with_progress(space, history, dataset, settings)
    if not st.session_state[RUN_KEY].error:
        save_run(st.session_state[RUN_KEY].plan)  # run history for the Compare page

last: HpoRun | None = finished_run(RUN_KEY, settings, "Press **Run** to plan on the inputs above.")
if last is not None:
    show_summary(last.plan)
    show_charts(last.plan)
    show_plan_json(last.plan, last.plan_json, file_name="hpo_plan.json", key="hpo_download")
