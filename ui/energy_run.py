"""The cached energy runner: input bytes + config JSON -> plan, with live progress (see :mod:`ui.run`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from qflow.core import QflowError
from qflow.energy import EnergyConfig, load_energy_inputs, plan_energy
from ui.inputs import InputFile
from ui.run import Progress, call_with_progress

__all__ = ["EnergyRun", "run_energy"]


@dataclass(frozen=True)
class EnergyRun:
    """What one Run produced: the plan (dict and JSON text), or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    error: str | None = None


def _ignore(fraction: float, message: str) -> None:
    """Progress sink for cache-filling calls nobody watches."""


@st.cache_data(show_spinner=False, max_entries=8)
def _energy_cached(telemetry: bytes, telemetry_name: str, topology: bytes, topology_name: str, jobs: bytes, jobs_name: str,
                   config_json: str, _progress: Progress = _ignore) -> EnergyRun:
    """Load and plan; keyed on the bytes, the file names and the config JSON (errors are cached results too)."""
    try:
        inputs, digests = load_energy_inputs(telemetry, topology, jobs, telemetry_name=telemetry_name,
                                             topology_name=topology_name, jobs_name=jobs_name)
        config = EnergyConfig.model_validate_json(config_json)
        plan = plan_energy(inputs, config, digests=digests, progress=_progress)
    except QflowError as exc:
        return EnergyRun(error=exc.message)
    return EnergyRun(plan=plan.to_dict(), plan_json=plan.to_json())


def run_energy(telemetry: InputFile, topology: InputFile, jobs: InputFile, settings: Mapping[str, Any],
               on_progress: Progress) -> EnergyRun:
    """Validate the page's settings as an :class:`EnergyConfig`, then plan (cached) in a worker thread."""
    try:
        config = EnergyConfig.from_mapping(dict(settings), source="settings")
    except QflowError as exc:
        return EnergyRun(error=exc.message)
    return call_with_progress(_energy_cached, telemetry.data, telemetry.name, topology.data, topology.name, jobs.data, jobs.name,
                              config.model_dump_json(), on_progress=on_progress)
