"""The cached hpo runner: input bytes + config JSON -> plan, with live progress (see :mod:`ui.run`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from qflow.core import QflowError
from qflow.hpo import HpoConfig, load_hpo_inputs, plan_hpo
from ui.inputs import InputFile
from ui.run import Progress, call_with_progress

__all__ = ["HpoRun", "run_hpo"]


@dataclass(frozen=True)
class HpoRun:
    """What one Run produced: the plan (dict and JSON text), or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    error: str | None = None


def _ignore(fraction: float, message: str) -> None:
    """Progress sink for cache-filling calls nobody watches."""


@st.cache_data(show_spinner=False, max_entries=16)
def _hpo_cached(space: bytes, space_name: str, history: bytes | None, history_name: str | None, dataset: bytes | None,
                dataset_name: str | None, config_json: str, _progress: Progress = _ignore) -> HpoRun:
    """Load and plan; keyed on the bytes, the file names and the config JSON (errors are cached results too)."""
    try:
        mapping, history_frame, dataset_frame, digests = load_hpo_inputs(
            space, history, dataset, space_name=space_name, history_name=history_name, dataset_name=dataset_name)
        config = HpoConfig.model_validate_json(config_json)
        plan = plan_hpo(mapping, history_frame, config, dataset=dataset_frame, digests=digests, progress=_progress)
    except QflowError as exc:
        return HpoRun(error=exc.message)
    return HpoRun(plan=plan.to_dict(), plan_json=plan.to_json())


def run_hpo(space: InputFile, history: InputFile | None, dataset: InputFile | None, settings: Mapping[str, Any],
            on_progress: Progress) -> HpoRun:
    """Validate the page's settings as an :class:`HpoConfig`, then plan (cached) in a worker thread."""
    try:
        config = HpoConfig.from_mapping(dict(settings), source="settings")
    except QflowError as exc:
        return HpoRun(error=exc.message)
    return call_with_progress(
        _hpo_cached, space.data, space.name,
        history.data if history else None, history.name if history else None,
        dataset.data if dataset else None, dataset.name if dataset else None,
        config.model_dump_json(), on_progress=on_progress,
    )
