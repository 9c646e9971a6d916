"""What every module's page shows the same way: path badges, warnings, the table against the baselines, downloads, the
plan JSON. The plain-data pieces (tables, messages, a shortened copy) take the plan as a dict (``Plan.to_dict()``) and
return plain Python, so they are tested without an app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

__all__ = ["fallback_messages", "key_figures", "metrics_table", "not_adopted", "not_adopted_messages", "path_steps", "plan_for_display",
           "show_charts", "show_downloads", "show_solver", "step_name"]


def _rounded(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def metrics_table(plan: dict[str, Any], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row for the plan (labelled with the path that ran), then one per baseline.

    Metrics missing from a row show as ``None``; floats are rounded to 4 decimals.
    """
    rows = [{"method": f"plan ({plan['solver']['ran']})", **{m: _rounded(plan["metrics"].get(m)) for m in metrics}}]
    for name, values in plan.get("baselines", {}).items():
        rows.append({"method": name, **{m: _rounded(values.get(m)) for m in metrics}})
    return rows


def _extra(entry: dict[str, Any], known: Sequence[str]) -> str:
    """The entry's other fields (a measured effect) as ``; name value, ...``, or nothing."""
    rest = [f"{key} {_rounded(value, 6)}" for key, value in entry.items() if key not in known and value is not None]
    return f" ({', '.join(rest)})" if rest else ""


def fallback_messages(plan: dict[str, Any]) -> list[str]:
    """One sentence per fallback: which path gave way to which, why, and any measured effect it records."""
    return [f"Requested path `{fb['from']}` fell back to `{fb['to']}`: {fb['reason']}"
            + _extra(fb, ("from", "to", "reason")) for fb in plan["solver"].get("fallbacks", [])]


def not_adopted(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Steps that ran and whose result was not used: ``solver.not_adopted`` and a top-level ``not_adopted``."""
    entries = [*plan["solver"].get("not_adopted", []), *plan.get("not_adopted", [])]
    return [entry if isinstance(entry, dict) else {"step": str(entry)} for entry in entries]


def step_name(entry: dict[str, Any]) -> str:
    """The step a not-adopted entry names (``step``, else ``name``, else ``path``)."""
    return str(entry.get("step", entry.get("name", entry.get("path", "?"))))


def not_adopted_messages(plan: dict[str, Any]) -> list[str]:
    """One sentence per step that ran and was not adopted: its reason and its measured effect."""
    return [f"`{step_name(e)}` ran but was not adopted: {e.get('reason', 'no reason recorded')}"
            + _extra(e, ("step", "name", "path", "reason")) for e in not_adopted(plan)]


def path_steps(ran: str) -> list[str]:
    """The steps of a ``solver.ran`` path (``quant8+zstd`` -> two steps).

    >>> path_steps("quant8+zstd"), path_steps("plain")
    (['quant8', 'zstd'], ['plain'])
    """
    return [step for step in ran.split("+") if step]


def plan_for_display(value: Any, list_limit: int = 12, dict_limit: int = 24) -> Any:
    """A copy with long lists cut to ``list_limit`` items and big mappings to ``dict_limit``, for ``st.json``.

    The limits differ because the plan's small mappings (metrics, config) are worth showing whole, while per-token and
    per-expert ones are not. Cut lists end with a note ``"... N more"``; cut mappings get a ``"..."`` key. The plan
    itself is not changed (the download keeps everything).

    >>> plan_for_display({"ids": list(range(5)), "n": 1}, list_limit=2)
    {'ids': [0, 1, '... 3 more (in the download)'], 'n': 1}
    """
    if isinstance(value, dict):
        items = list(value.items())
        out = {key: plan_for_display(item, list_limit, dict_limit) for key, item in items[:dict_limit]}
        if len(items) > dict_limit:
            out["..."] = f"{len(items) - dict_limit} more entries (in the download)"
        return out
    if isinstance(value, list):
        out_list = [plan_for_display(item, list_limit, dict_limit) for item in value[:list_limit]]
        if len(value) > list_limit:
            out_list.append(f"... {len(value) - list_limit} more (in the download)")
        return out_list
    return value


def _badges(steps: list[str], colour: str) -> str:
    """Markdown badges, one per step (brackets would end a badge, so they are dropped)."""
    return " ".join(f":{colour}-badge[{step.replace('[', '').replace(']', '')}]" for step in steps)


def show_solver(plan: dict[str, Any]) -> None:
    """The path requested, each step of ``solver.ran`` as a badge and the steps not adopted struck out; then each fallback
    and not-adopted step as a warning and the plan's diagnostics as warnings."""
    solver = plan["solver"]
    skipped = [step_name(entry) for entry in not_adopted(plan)]
    st.markdown(f"**Path requested:** `{solver['requested']}` &nbsp;&nbsp; **Path ran:** `{solver['ran']}`")
    st.markdown("Steps adopted: " + _badges(path_steps(solver["ran"]), "green")
                + (" &nbsp; not adopted: " + _badges(skipped, "orange") if skipped else ""))
    for message in fallback_messages(plan):
        st.warning(message, icon=":material/call_split:")
    for message in not_adopted_messages(plan):
        st.warning(message, icon=":material/block:")
    for note in plan.get("diagnostics", []):
        text = note if isinstance(note, str) else str(note.get("message", note))
        st.warning(text, icon=":material/info:")


def show_downloads(name: str, plan: dict[str, Any], plan_json: str, artifacts: list[tuple[str, bytes]]) -> None:
    """A download per artifact the module wrote, the plan JSON's download, and the plan collapsed for reading."""
    for index, (file_name, data) in enumerate(artifacts):
        st.download_button(f"Download {file_name}", data=data, file_name=file_name, mime="application/octet-stream",
                           key=f"{name}_artifact_{index}", on_click="ignore", icon=":material/download:")
    st.download_button("Download plan JSON", data=plan_json, file_name=f"{name}_plan.json", mime="application/json",
                       key=f"{name}_download", on_click="ignore", type="secondary", icon=":material/download:")
    with st.expander("Plan JSON (long lists shortened here; the download has everything)"):
        st.json(plan_for_display(plan), expanded=1)


def key_figures(*figures: tuple[str, Any] | tuple[str, Any, str]) -> None:
    """A module's key figures side by side: one ``st.metric`` per ``(label, value)`` or ``(label, value, help)``."""
    for column, (label, value, *help_text) in zip(st.columns(len(figures)), figures, strict=True):
        column.metric(label, value, help=next(iter(help_text), None))


def show_charts(module: str, figures: dict[str, Any]) -> None:
    """Each figure that is not ``None``, in order, under the key ``{module}_{name}_chart``."""
    for name, figure in figures.items():
        if figure is not None:
            st.plotly_chart(figure, key=f"{module}_{name}_chart")
