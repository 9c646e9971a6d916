"""The Compare page's pieces: stored runs side by side (tables, figures) and a batch of configurations run at once.

Generic over modules: metrics are whatever numeric scalars the plans hold, configs whatever fields their module
declares, and a batch runs each configuration as the module page's own Run job (:func:`run_batch`), so a module that
lands later is compared without changes here. Runs are the dicts of :meth:`qflow.core.runs.StoredRun.to_dict` (``id``,
``module``, ``config``, ``metrics``, ``timings_s``, ``inputs``, ``plan``...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from qflow.core.commands import Progress, load_command
from qflow.core.errors import InputError, QflowError
from qflow.core.runs import RunStore
from qflow.core.uploads import Upload
from ui.jobs import JobBoard, run_identity
from ui.page import PageRun, run_module

__all__ = ["MAX_CONFIGURATIONS", "BatchItem", "config_frame", "default_metrics", "differing_fields", "inputs_differ",
           "metrics_figure", "metrics_frame", "numeric_metric_names", "parse_overrides", "plan_json", "run_batch",
           "run_label", "style_differences", "timings_figure"]

#: Most configurations one batch runs.
MAX_CONFIGURATIONS = 6
#: Colour of config rows that differ between the runs compared.
HIGHLIGHT = "background-color: rgba(255, 196, 0, 0.35)"
#: Bars per chart when nothing is picked: the metrics that differ most often matter most.
DEFAULT_CHART_METRICS = 6

Run = Mapping[str, Any]
#: One configuration's outcome in a batch: settings, stored run id, error message.
BatchItem = dict[str, Any]


# -- tables --------------------------------------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def run_label(run: Run) -> str:
    """``#12 · 2026-11-25 12:03:04 · classical · qaoa, hqc`` (the toggles that were on).

    >>> run_label({"id": 3, "created_at": "2026-01-01T10:00:00+00:00", "solver_ran": "classical",
    ...            "config": {"qaoa": True, "hqc": False, "seed": 0}})
    '#3 · 2026-01-01 10:00:00 · classical · qaoa'
    """
    on = [name for name, value in run.get("config", {}).items() if value is True]
    when = str(run.get("created_at", ""))[:19].replace("T", " ")
    return " · ".join([f"#{run['id']}", when, str(run.get("solver_ran", "")), ", ".join(on) or "no toggles on"])


def numeric_metric_names(runs: Sequence[Run]) -> list[str]:
    """Metric names holding a finite number (not a bool) in at least one run, in first-seen order.

    >>> numeric_metric_names([{"metrics": {"a": 1.5, "b": "x", "c": True}}, {"metrics": {"d": 2, "a": None}}])
    ['a', 'd']
    """
    names: dict[str, None] = {}
    for run in runs:
        for name, value in run.get("metrics", {}).items():
            if _is_number(value):
                names.setdefault(name)
    return list(names)


def metrics_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per numeric metric, one column per run (``#id``); a run without the metric shows empty."""
    names = numeric_metric_names(runs)
    data = {f"#{run['id']}": [run["metrics"].get(name) if _is_number(run["metrics"].get(name)) else None
                                for name in names] for run in runs}
    return pd.DataFrame(data, index=pd.Index(names, name="metric"), dtype=float)


def _keys(runs: Sequence[Run], part: str) -> list[str]:
    """The keys of ``run[part]`` over all ``runs``, in first-seen order."""
    return list(dict.fromkeys(key for run in runs for key in run.get(part, {})))


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def differing_fields(runs: Sequence[Run]) -> list[str]:
    """Config fields whose values are not all equal across ``runs`` (missing counts as different).

    >>> differing_fields([{"config": {"a": 1, "b": 2}}, {"config": {"a": 1, "b": 3, "c": 0}}])
    ['b', 'c']
    """
    missing = object()
    return [name for name in _keys(runs, "config")
            if len({_text(run.get("config", {}).get(name, missing)) for run in runs}) > 1]


def config_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per config field, one column per run; values as text so mixed types line up."""
    fields = _keys(runs, "config")
    data = {f"#{run['id']}": [_text(run["config"][f]) if f in run.get("config", {}) else "" for f in fields] for run in runs}
    return pd.DataFrame(data, index=pd.Index(fields, name="field"))


def style_differences(frame: pd.DataFrame, differing: Sequence[str]) -> Any:
    """``frame`` as a pandas Styler with the ``differing`` rows highlighted (``st.dataframe`` draws it)."""
    marked = set(differing)
    return frame.style.apply(lambda row: [HIGHLIGHT if row.name in marked else ""] * len(row), axis=1)


def plan_json(run: Run) -> str:
    """The stored run's plan as indented JSON text (the download)."""
    return json.dumps(run.get("plan"), indent=2)


def inputs_differ(runs: Sequence[Run]) -> bool:
    """Whether the runs were made on different input files (by their sha256 digests)."""
    keys = {tuple((d.get("name"), d.get("sha256")) for d in run.get("inputs", [])) for run in runs}
    return len(keys) > 1


def default_metrics(runs: Sequence[Run], limit: int = DEFAULT_CHART_METRICS) -> list[str]:
    """Metrics to chart first: those whose values differ between the runs, then the others, at most ``limit``."""
    names = numeric_metric_names(runs)
    frame = metrics_frame(runs)
    differ = [n for n in names if frame.loc[n].nunique(dropna=False) > 1]
    return (differ + [n for n in names if n not in differ])[:limit]


# -- figures -------------------------------------------------------------------------------------------------------

_PALETTE = plotly.colors.qualitative.Plotly


def metrics_figure(runs: Sequence[Run], metrics: Sequence[str], columns: int = 3) -> go.Figure:
    """Grouped bars: one panel per metric (each on its own scale), one bar per run, same colour per run.

    Where a run's plan holds baselines with that metric, the first run's baseline values are drawn as dashed lines (the
    simple methods on the same input), so each bar reads against what an operator would otherwise get.
    """
    metrics = list(metrics)
    rows = max(1, math.ceil(len(metrics) / columns))
    cols = min(columns, max(1, len(metrics)))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=metrics or ["(no numeric metrics)"],
                        vertical_spacing=0.5 / rows if rows > 1 else 0.1)
    labels = [f"#{run['id']}" for run in runs]
    for index, name in enumerate(metrics):
        row, col = index // cols + 1, index % cols + 1
        for run_index, run in enumerate(runs):
            value = run["metrics"].get(name)
            fig.add_trace(go.Bar(
                x=[labels[run_index]], y=[value if _is_number(value) else None], name=run_label(run),
                marker_color=_PALETTE[run_index % len(_PALETTE)], legendgroup=labels[run_index],
                showlegend=index == 0, hovertemplate=f"{name}<br>{run_label(run)}<br>%{{y:.6g}}<extra></extra>",
            ), row=row, col=col)
        baselines = ((runs[0].get("plan") or {}).get("baselines") or {}) if runs else {}
        for base_name, values in baselines.items():
            value = values.get(name) if isinstance(values, Mapping) else None
            if _is_number(value):
                fig.add_hline(y=value, line_dash="dash", line_color="gray", row=row, col=col,
                              annotation_text=base_name, annotation_font_size=10)
    fig.update_xaxes(type="category")  # "#12" would otherwise be read as the number 12
    fig.update_layout(barmode="group", height=280 * rows + 80, legend_title_text="run",
                      margin={"t": 60, "b": 20, "l": 40, "r": 20}, title_text="Metrics by run")
    return fig


def timings_figure(runs: Sequence[Run]) -> go.Figure:
    """Wall time per engine stage, stacked per run (seconds)."""
    labels = [f"#{run['id']}" for run in runs]
    fig = go.Figure([go.Bar(name=stage, x=labels, y=[run.get("timings_s", {}).get(stage) for run in runs])
                     for stage in _keys(runs, "timings_s")])
    fig.update_xaxes(type="category")
    fig.update_layout(barmode="stack", title_text="Engine time per stage", yaxis_title="seconds",
                      height=360, margin={"t": 60, "b": 20, "l": 40, "r": 20})
    return fig


# -- a batch of configurations ----------------------------------------------------------------------------------------

def parse_overrides(text: str, source: str = "settings") -> dict[str, Any]:
    """``"capacity_factor=1.5, qaoa_layers=3"`` (commas or new lines; values as YAML scalars) -> dict.

    >>> parse_overrides("capacity_factor=1.5, qaoa=true\\nobjective=branin")
    {'capacity_factor': 1.5, 'qaoa': True, 'objective': 'branin'}
    >>> parse_overrides("")
    {}
    """
    import yaml

    values: dict[str, Any] = {}
    for item in (part.strip() for line in text.splitlines() for part in line.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise InputError(source, item, "not NAME=VALUE", "NAME=VALUE pairs, e.g. capacity_factor=1.5", item)
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            values[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            values[key] = raw
    return values


def run_batch(board: JobBoard, items: list[BatchItem], module: str, uploads: Mapping[str, Upload | None],
              configurations: Sequence[Mapping[str, Any]], db_path: str, _progress: Progress) -> list[BatchItem]:
    """Run each configuration of ``module`` on the same ``uploads`` in turn, as the module page's Run does.

    The work of one :meth:`ui.jobs.JobBoard.submit` job: each configuration is the page's own job
    (:func:`ui.page.run_module` under :func:`ui.jobs.run_identity`'s key, run here by
    :meth:`~ui.jobs.JobBoard.run_here`), so a run the page already made is reused, and Cancel stops the configuration
    running. Each outcome lands in ``items`` (``settings``, ``plan`` or ``None``, ``run_id``, ``error``) and each plan
    in the run store at ``db_path`` as it finishes, so a cancelled batch keeps what it finished. Returns ``items``.
    """
    command, store, total = load_command(module), RunStore(db_path), len(configurations)
    for index, settings in enumerate(configurations):
        item: BatchItem = {"settings": dict(settings), "plan": None, "run_id": None, "error": None}
        items.append(item)
        source = f"configuration {index + 1}"

        def report(fraction: float, message: str, index: int = index, source: str = source) -> None:
            _progress((index + fraction) / total, f"{source} of {total}: {message}")

        try:
            key, config_json = run_identity(command, dict(uploads), dict(settings), {}, source=source)
        except QflowError as exc:
            item["error"] = exc.message
            continue
        job = board.run_here(key, command.page_title, report, run_module, module, dict(uploads), config_json, {})
        report(1.0, job.state)  # raises here once this batch was cancelled
        run = job.result if job.state == "done" else PageRun(error=f"the run {job.state}: {job.error or ''}")
        item["plan"], item["error"] = run.plan, run.error
        try:
            item["run_id"] = None if run.plan is None else store.save(run.plan, origin="app")
        except QflowError as exc:
            item["error"] = f"plan made but not stored: {exc.message}"
    _progress(1.0, f"{total} configurations done")
    return items
