"""Compare page: stored runs of one module side by side, and a batch of configurations run at once.

Run several configurations of one input (uploads or the samples, as on a module page) as one :mod:`ui.jobs` job that
runs each as the page's Run job and stores each plan as it finishes, ranked by the advisor's ranking
(:func:`qflow.advisor.rank_plans`) for a goal; or pick stored runs: metrics, config differences, metric bars, stage
times. Widget keys: ``compare_module``, ``compare_{module}_c{i}_{field}``, ``compare_{module}_c{i}_set``,
``compare_run_all``, ``compare_goal``, ``compare_runs``.
"""

from __future__ import annotations

import uuid
from typing import Any

import streamlit as st

from qflow.advisor import GOALS, rank_plans
from qflow.core.commands import ModuleCommand, available_commands
from qflow.core.errors import QflowError
from qflow.core.runs import RunStore
from ui import compare
from ui.advise import show_ranking
from ui.inputs import choose_inputs
from ui.jobs import Job, ended_job, job_board
from ui.widgets import toggle_row

JOB_KEY = "compare_job"
COLLECTED_KEY = "compare_collected_job"
ITEMS_KEY = "compare_batch_items"
RUNS_KEY = "compare_runs"
#: Runs offered in the picker (newest first).
RUNS_LISTED = 200


def configuration_forms(command: ModuleCommand) -> list[dict[str, Any]] | None:
    """Per configuration: a toggle per boolean field and a ``name=value`` box; ``None`` if a box is malformed."""
    count = int(st.number_input("configurations", 1, compare.MAX_CONFIGURATIONS, 2, key="compare_n_configs"))
    fields = command.config_cls.model_fields
    toggles = [(name, fields[name]) for name in command.config_cls.toggles()]
    configurations: list[dict[str, Any]] = []
    ok = True
    for index in range(count):
        with st.container(border=True):
            st.markdown(f"**Configuration {index + 1}**")
            settings: dict[str, Any] = toggle_row(toggles, f"compare_{command.name}_c{index}")
            text = st.text_input("other settings (name=value, comma separated)", key=f"compare_{command.name}_c{index}_set",
                                 placeholder="e.g. seed=1", help="Any config field: " + ", ".join(fields))
            try:
                settings.update(compare.parse_overrides(text, source=f"configuration {index + 1}"))
                command.config_cls.from_mapping(settings, source=f"configuration {index + 1}")
            except QflowError as exc:
                st.error(exc.message)
                ok = False
            configurations.append(settings)
    return configurations if ok else None


def show_batch_outcome(job: Job) -> None:
    """What the finished batch did; on first sight, select its runs for the comparison below."""
    items: list[dict[str, Any]] = st.session_state.get(ITEMS_KEY, [])
    run_ids = [item["run_id"] for item in items if item["run_id"] is not None]
    if st.session_state.get(COLLECTED_KEY) != job.id:
        st.session_state[COLLECTED_KEY] = job.id
        if run_ids:
            st.session_state[RUNS_KEY] = run_ids  # the picker below is drawn after this
    if job.state == "failed":
        st.error(f"The batch failed (a bug): {job.error}")
    elif job.state == "cancelled":
        st.warning(f"Cancelled after {len(items)} configuration(s); finished runs are stored: "
                   + (", ".join(f"#{i}" for i in run_ids) or "none"), icon=":material/cancel:")
    else:
        st.success(f"Ran {len(items)} configuration(s) in {job.elapsed_s:.1f} s; stored as "
                   + (", ".join(f"#{i}" for i in run_ids) or "nothing") + ".", icon=":material/check_circle:")
    for index, item in enumerate(items, 1):
        if item["error"]:
            st.error(f"Configuration {index}: {item['error']}")
    if plans := [item["plan"] for item in items if item["plan"]]:
        ranking_section(plans[0]["module"], items)


def ranking_section(module: str, items: list[dict[str, Any]]) -> None:
    """The batch's plans ranked by the advisor's ranking for the chosen goal (primary metric, engine seconds)."""
    goal = st.segmented_control("rank for", GOALS, default="balanced", key="compare_goal") or "balanced"
    names = [f"configuration {i}" + (f" (#{item['run_id']})" if item["run_id"] else "") for i, item in enumerate(items, 1)]
    try:
        ranking = rank_plans(module, [item["plan"] for item in items], goal, names)
    except QflowError as exc:
        st.caption(f"Not ranked: {exc.message}")
        return
    metric = ranking["primary_metric"]
    st.markdown(f"**Ranked for {goal}** on `{metric['metric']}` ({metric['better']} is better) and engine seconds: "
                f"{ranking['recommended_candidate']} first.")
    if ranking["protected_differ"]:
        st.warning("These configurations differ in what defines the objective or its constraints ("
                   + ", ".join(ranking["protected_differ"]) + "): the ranking compares different problems.")
    show_ranking(ranking, "compare_ranking")


def batch_section(command: ModuleCommand) -> None:
    """Inputs, configurations, Run all, and the running or finished batch."""
    st.subheader("Run several configurations of one input")
    inputs = choose_inputs(command, f"compare_{command.name}")
    uploads = None if inputs.problem else inputs.uploads
    configurations = configuration_forms(command)
    job: Job | None = st.session_state.get(JOB_KEY)
    pressed = st.button("Run all configurations", type="primary", key="compare_run_all",
                        disabled=(job is not None and job.running) or uploads is None or configurations is None)
    if pressed and uploads is not None and configurations is not None:
        items: list[dict[str, Any]] = []
        st.session_state[ITEMS_KEY] = items
        board = job_board()
        job = board.submit(uuid.uuid4().hex, f"{command.name}: {len(configurations)} configurations", compare.run_batch,
                           board, items, command.name, uploads, configurations, str(RunStore().path))
        st.session_state[JOB_KEY] = job
    if job := ended_job(JOB_KEY, "compare_cancel"):
        show_batch_outcome(job)


def comparison_section(module: str, store: RunStore) -> None:
    """Pick stored runs of ``module``; metrics table, config differences, charts."""
    st.subheader("Stored runs side by side")
    try:
        summaries = store.list(module=module, limit=RUNS_LISTED)
    except QflowError as exc:
        st.error(f"Run history unavailable: {exc.message}")
        return
    if not summaries:
        st.info(f"No stored runs of **{module}** yet: run its page, the batch above, `python -m qflow {module} ... --save`, "
                "or the API.")
        return
    labels = {run.id: compare.run_label(run.to_dict()) for run in summaries}
    chosen = [run_id for run_id in st.session_state.get(RUNS_KEY, []) if run_id in labels]
    st.session_state[RUNS_KEY] = chosen or [run.id for run in summaries[:2]]
    selected = st.multiselect("runs", list(labels), format_func=labels.__getitem__, key=RUNS_KEY,
                              help=f"The newest {RUNS_LISTED} runs of this module, newest first.")
    if not selected:
        st.info("Pick one or more runs.")
        return
    runs = [run.to_dict() for run in store.get_many(list(selected))]
    if compare.inputs_differ(runs):
        st.warning("These runs were made on different inputs (their digests differ): metrics compare different "
                   "problems.", icon=":material/difference:")
    st.markdown("**Metrics**")
    st.dataframe(compare.metrics_frame(runs), key="compare_metrics_table")
    differing = compare.differing_fields(runs)
    st.markdown("**Config** " + (f"(differs in: {', '.join(f'`{f}`' for f in differing)})" if differing
                                 else "(identical)"))
    st.dataframe(compare.style_differences(compare.config_frame(runs), differing), key="compare_config_table")
    names = compare.numeric_metric_names(runs)
    metrics = st.multiselect("metrics to chart", names, default=compare.default_metrics(runs), key="compare_chart_metrics")
    st.plotly_chart(compare.metrics_figure(runs, metrics), key="compare_metrics_chart")
    st.plotly_chart(compare.timings_figure(runs), key="compare_timings_chart")
    with st.expander("Stored plans"):
        for run in runs:
            st.download_button(f"Plan #{run['id']} (JSON)", data=compare.plan_json(run), file_name=f"{module}_run_{run['id']}.json",
                               mime="application/json", key=f"compare_download_{run['id']}", on_click="ignore")


st.title("Compare runs")
st.caption("Every plan made in the app, by `python -m qflow MODULE ... --save` or by the HTTP API is stored; put runs "
           f"of one module side by side, or run several toggle sets on one input at once. History: `{RunStore().path}`.")
commands = {command.name: command for command in available_commands()}
module = st.selectbox("module", list(commands), key="compare_module")
with st.container(border=True):
    batch_section(commands[module])
comparison_section(module, RunStore())
