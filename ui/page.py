"""The one module page: any module drawn from its registry entry, plus its own charts from ``ui/hooks/<name>.py``.

:func:`render` draws inputs (:mod:`ui.inputs`), the config form, Run with progress and Cancel (:mod:`ui.jobs`), then
path badges, the module's summary, the table against the baselines, the module's charts and the downloads.

Page hooks (a module ``ui.hooks.<name>``; every name optional):

- ``METRICS``: tuple of metric names for the table of the plan against each baseline;
- ``summary(plan)``: key figures and tables of its own;
- ``charts(run)``: its charts (``run`` is a :class:`PageRun`);
- ``options()`` -> dict: extra choices drawn under the inputs (part of the run's identity);
- ``out_name(options, uploads)`` -> str: the ``--out`` name the command writes its artifacts beside;
- ``extras(uploads, config, progress)`` -> dict: more work in the same job (``run.extras``);
- ``artifacts(plan, files)`` -> list of (file name, bytes): the downloads from the files the command wrote (default:
  every file, by its name), for a module writing more than plain files beside the plan;
- ``run_in_place(command, options, config, progress)`` -> ``(plan, artifacts)`` or None: run on server-side files the
  options picked instead of the uploads (None: the uploads are used).

Widget keys: ``{name}_run_button``, ``{name}_{input}_upload``, ``{name}_{field}``; the finished run is
``st.session_state[f"{name}_run"]``, the job ``[f"{name}_job"]``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import streamlit as st

from qflow.core.commands import ModuleCommand, available_commands, load_command
from qflow.core.errors import QflowError
from qflow.core.runs import RunStore
from qflow.core.uploads import Upload, run_on_uploads_keeping_artifacts
from ui.advise import advise_section
from ui.inputs import choose_inputs
from ui.jobs import Job, ended_job, job_board, run_identity
from ui.plan_view import metrics_table, show_downloads, show_solver
from ui.widgets import config_form

__all__ = ["PageRun", "module_pages", "page_hooks", "render", "run_module", "save_run"]

#: Share of the progress bar given to the plan when a hook adds ``extras``.
PLAN_SHARE = 0.85
#: ``st.session_state`` key holding ``{module: run id}`` of the last run each page stored.
LAST_SAVED_KEY = "qflow_saved_runs"


@dataclass(frozen=True)
class PageRun:
    """One Run of a module page: the plan (dict and JSON), files it wrote, hook extras; or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    artifacts: list[tuple[str, bytes]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def page_hooks(name: str) -> ModuleType | None:
    """``ui.hooks.<name>`` when the module has page hooks, else ``None``."""
    module = f"ui.hooks.{name}"
    return importlib.import_module(module) if importlib.util.find_spec(module) is not None else None


def run_module(name: str, uploads: dict[str, Upload | None], config_json: str, options: dict[str, Any],
               _progress: Callable[[float, str], None]) -> PageRun:
    """Plan ``name`` on ``uploads`` (a job's work: runs in the pool); bad input becomes ``PageRun(error=...)``."""
    command, hooks = load_command(name), page_hooks(name)
    extras_hook, out_hook = getattr(hooks, "extras", None), getattr(hooks, "out_name", None)
    artifacts_hook = getattr(hooks, "artifacts", None) or (lambda _plan, files: [(f.name, f.read_bytes()) for f in files])
    share = PLAN_SHARE if extras_hook else 1.0
    try:
        config = command.config_cls.model_validate_json(config_json)
        progress = lambda fraction, message: _progress(share * fraction, message)  # noqa: E731
        in_place = getattr(hooks, "run_in_place", None)
        ran = in_place(command, options, config, progress) if in_place else None
        plan, artifacts = ran or run_on_uploads_keeping_artifacts(
            command, uploads, config, lambda plan, files: (plan, artifacts_hook(plan, files)),
            out_name=out_hook(options, uploads) if out_hook else f"{name}.json", progress=progress)
        extras = extras_hook(uploads, config, _progress) if extras_hook else {}
    except QflowError as exc:
        return PageRun(error=exc.message)
    _progress(1.0, "done")
    return PageRun(plan.to_dict(), plan.to_json(), artifacts, extras)


def save_run(plan: dict[str, Any]) -> int | None:
    """Store ``plan`` as an ``app`` run in ``$QFLOW_HOME/runs.db`` for Compare (the same plan twice is one run) and say so;
    its run id, or ``None`` with a warning when the store cannot be written (the page carries on)."""
    try:
        run_id = RunStore().save(dict(plan), origin="app")
    except QflowError as exc:
        st.warning(f"Run not saved to history: {exc.message}", icon=":material/history:")
        return None
    st.session_state[LAST_SAVED_KEY] = {**st.session_state.get(LAST_SAVED_KEY, {}), str(plan.get("module", "")): run_id}
    st.caption(f"Saved as run #{run_id} in the run history (see **Compare**).")
    return run_id


def _collect(name: str, job: Job) -> None:
    """Once per finished job: keep its run for drawing and store a successful plan in the run history."""
    if st.session_state.get(f"{name}_collected") == job.id:
        return
    st.session_state[f"{name}_collected"] = job.id
    if job.state == "done":
        st.session_state[f"{name}_run"] = job.result
        if job.result.error is None:
            save_run(job.result.plan)
    elif job.state == "cancelled":
        st.warning("Run cancelled: nothing was stored.", icon=":material/cancel:")
    else:
        st.error(f"The run failed (a bug, please report it): {job.error}")


def _show_run(command: ModuleCommand, hooks: ModuleType | None, run: PageRun, settings: dict[str, Any]) -> None:
    """The finished run: badges, the module's summary, the table against the baselines, charts, downloads."""
    if run.error:
        st.error(run.error)
        return
    plan = run.plan
    if any(plan["config"].get(key) != value for key, value in settings.items()):
        st.caption("Settings changed since this plan was made; press Run to update it.")
    st.caption(f"Plan ready (engine {sum(plan['timings_s'].values()):.2f} s).")
    show_solver(plan)
    if summary := getattr(hooks, "summary", None):
        summary(plan)
    if metrics := getattr(hooks, "METRICS", None):
        st.dataframe(metrics_table(plan, metrics), hide_index=True, key=f"{command.name}_metrics_table")
    if charts := getattr(hooks, "charts", None):
        charts(run)
    show_downloads(command.name, plan, run.plan_json, run.artifacts)


def render(name: str) -> None:
    """Draw the page of module ``name`` (a :func:`qflow.core.commands.load_command` name)."""
    command, hooks = load_command(name), page_hooks(name)
    st.title(command.page_title)
    st.caption(command.description)
    inputs = choose_inputs(command, name)
    options = options_hook() if (options_hook := getattr(hooks, "options", None)) else {}
    with st.container(border=True):
        settings = config_form(command.config_cls, key_prefix=name)
    if inputs.problem:
        st.warning(inputs.problem, icon=":material/upload_file:")
    if st.button("Run", type="primary", key=f"{name}_run_button", disabled=inputs.problem is not None):
        try:  # the same inputs, config and options attach to the job running them; a bad setting is an error run
            key, config_json = run_identity(command, inputs.uploads, settings, options)
        except QflowError as exc:
            st.session_state[f"{name}_run"] = PageRun(error=exc.message)
        else:
            st.session_state[f"{name}_job"] = job_board().submit(key, command.page_title, run_module, name, inputs.uploads,
                                                                 config_json, options)
        st.session_state[f"{name}_collected"] = None  # a finished job handed back again is shown again
    advise_section(command, inputs.uploads, settings, disabled=inputs.problem is not None)
    if job := ended_job(f"{name}_job", f"{name}_cancel"):
        _collect(name, job)
    run: PageRun | None = st.session_state.get(f"{name}_run")
    if run is None:
        st.info("Press **Run** to plan on the inputs above.")
    else:
        _show_run(command, hooks, run, settings)


def _page_function(name: str) -> Callable[[], None]:
    """A no-argument function drawing ``name``'s page (``st.Page`` calls its page without arguments)."""
    def page() -> None:
        render(name)

    page.__name__ = page.__qualname__ = f"{name}_page"
    return page


def module_pages() -> list[Any]:
    """One ``st.Page`` per registry entry, in registry order, at ``/<name>``."""
    return [st.Page(_page_function(c.name), title=c.page_title, icon=c.icon, url_path=c.name)
            for c in available_commands()]
