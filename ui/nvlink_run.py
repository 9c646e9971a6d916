"""The cached nvlink runner: input bytes + config JSON -> plan, with live progress (see :mod:`ui.run`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from qflow.core import QflowError
from qflow.nvlink import NvlinkConfig, load_nvlink_inputs, plan_nvlink
from ui.inputs import InputFile
from ui.run import Progress, call_with_progress

__all__ = ["NvlinkRun", "run_nvlink"]


@dataclass(frozen=True)
class NvlinkRun:
    """What one Run produced: the plan (dict and JSON text), or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    error: str | None = None


def _ignore(fraction: float, message: str) -> None:
    """Progress sink for cache-filling calls nobody watches."""


@st.cache_data(show_spinner=False, max_entries=8)
def _nvlink_cached(fabric: bytes, fabric_name: str, jobs: bytes, jobs_name: str, logs: bytes | None, logs_name: str | None,
                   config_json: str, _progress: Progress = _ignore) -> NvlinkRun:
    """Load and plan; keyed on the bytes, the file names and the config JSON (errors are cached results too)."""
    try:
        parsed, jobs_mapping, frame, digests = load_nvlink_inputs(
            fabric, jobs, logs, fabric_name=fabric_name, jobs_name=jobs_name, logs_name=logs_name)
        config = NvlinkConfig.model_validate_json(config_json)
        plan = plan_nvlink(parsed, jobs_mapping, config, logs=frame, digests=digests, progress=_progress)
    except QflowError as exc:
        return NvlinkRun(error=exc.message)
    return NvlinkRun(plan=plan.to_dict(), plan_json=plan.to_json())


def run_nvlink(fabric: InputFile, jobs: InputFile, logs: InputFile | None, settings: Mapping[str, Any],
               on_progress: Progress) -> NvlinkRun:
    """Validate the page's settings as an :class:`NvlinkConfig`, then plan (cached) in a worker thread."""
    try:
        config = NvlinkConfig.from_mapping(dict(settings), source="settings")
    except QflowError as exc:
        return NvlinkRun(error=exc.message)
    return call_with_progress(
        _nvlink_cached, fabric.data, fabric.name, jobs.data, jobs.name,
        logs.data if logs else None, logs.name if logs else None, config.model_dump_json(), on_progress=on_progress,
    )
