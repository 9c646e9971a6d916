"""Hostile and absurd energy inputs: one-line InputErrors naming file, field and row; work bounded before it starts."""

from __future__ import annotations

import time

import numpy as np
import pytest
from energy_helpers import chain_jobs, small_inputs, telemetry_frame, topology_dict

import qflow.energy._plan as plan_module
from qflow.core.errors import InputError
from qflow.core.limits import LimitExceededError
from qflow.energy import parse_jobs, parse_telemetry, parse_topology, plan_energy


def _topo():
    return parse_topology(topology_dict())


@pytest.mark.parametrize(("column", "value", "problem"), [
    ("power_w", "inf", "not finite"),
    ("power_w", "-inf", "not finite"),
    ("power_w", 1e308, "implausibly large"),
    ("sm_clock_mhz", 1e12, "implausibly large"),
    ("utilization", 1e5, "implausibly large"),
])
def test_non_finite_and_absurd_telemetry_names_file_column_and_row(column: str, value, problem: str) -> None:
    frame = telemetry_frame()
    frame[column] = frame[column].astype(object)
    frame.loc[7, column] = value
    with pytest.raises(InputError) as err:
        parse_telemetry(frame, _topo(), "tel.csv")
    assert err.value.source == "tel.csv" and err.value.field == f"{column}[row 7]" and problem in str(err.value)


def test_a_blank_timestamp_is_a_missing_value_not_a_crash() -> None:
    frame = telemetry_frame()
    frame["timestamp"] = frame["timestamp"].astype(object)
    frame.loc[3, "timestamp"] = None
    with pytest.raises(InputError, match=r"timestamp\[row 3\]: missing value"):
        parse_telemetry(frame, _topo(), "tel.csv")


@pytest.mark.parametrize(("edit", "field", "problem"), [
    (lambda j: j[0].update(duration=1e9), "jobs[0].duration", "implausibly large"),
    (lambda j: j[0].update(power_w=float("inf")), "jobs[0].power_w", "not finite"),
    (lambda j: j[0].update(power_w=10**5000), "jobs[0].power_w", "implausibly large"),
    (lambda j: j[0].update(gpus=10**400), "jobs[0].gpus", "implausibly large"),
    (lambda j: j[1].update(id="x" * 5000), "jobs[1].id", "too long"),
    (lambda j: j[1].update(deps=[["a"] * 3]), "jobs[1].deps", "wrong type"),
])
def test_absurd_job_numbers_and_ids_are_input_errors(edit, field: str, problem: str) -> None:
    jobs = chain_jobs()
    edit(jobs)
    with pytest.raises(InputError) as err:
        parse_jobs({"jobs": jobs}, _topo(), "jobs.json")
    assert err.value.field == field and problem in str(err.value) and len(str(err.value).splitlines()) == 1


def test_huge_topology_numbers_are_input_errors() -> None:
    data = topology_dict()
    data["nodes"][0]["gpus"] = 10**5000
    with pytest.raises(InputError, match=r"nodes\[0\].gpus: implausibly large"):
        parse_topology(data, "topo.yaml")
    data = topology_dict()
    data["nodes"][1]["gpu_power_limit_w"] = float("nan")
    with pytest.raises(InputError, match=r"nodes\[1\].gpu_power_limit_w: not finite"):
        parse_topology(data, "topo.yaml")


def test_200000_jobs_are_refused_by_the_job_slots_limit_before_any_is_parsed() -> None:
    jobs = [{"id": "first", "duration": 1}] + [None] * 199_999  # malformed entries: never reached
    start = time.perf_counter()
    with pytest.raises(LimitExceededError) as err:
        parse_jobs({"jobs": jobs}, _topo(), "jobs.json")
    assert err.value.limit_name == "energy_job_slots" and time.perf_counter() - start < 5
    assert "QFLOW_MAX_ENERGY_JOB_SLOTS" in str(err.value)


def test_the_job_slots_limit_counts_durations_and_follows_its_variable(monkeypatch) -> None:
    jobs = [{"id": f"j{i}", "duration": 500} for i in range(10)]  # 10 jobs x 5001 slots
    assert parse_jobs({"jobs": jobs}, _topo()).n_jobs == 10
    monkeypatch.setenv("QFLOW_MAX_ENERGY_JOB_SLOTS", "40000")
    with pytest.raises(LimitExceededError, match="50,010"):
        parse_jobs({"jobs": jobs}, _topo(), "jobs.json")


def test_a_carried_field_is_size_limited_even_when_aliases_share_one_big_value() -> None:
    # What a YAML alias bomb loads as: the same list referenced many times over (2.6 KB of text, 10^8 leaves).
    leaf = ["lol"] * 10
    bomb = leaf
    for _ in range(7):
        bomb = [bomb] * 10
    start = time.perf_counter()
    data = topology_dict()
    data["quantum_accelerators"] = [{"id": "q", "notes": bomb}]
    with pytest.raises(LimitExceededError) as err:
        parse_topology(data, "topo.yaml")
    assert err.value.field == "quantum_accelerators" and err.value.limit_name == "carried_field_bytes"
    assert time.perf_counter() - start < 2
    small = topology_dict()
    small["quantum_accelerators"] = [{"id": "qpu0", "kind": "simulator", "attached_to": "n0"}]
    assert parse_topology(small).quantum_accelerators == small["quantum_accelerators"]


class Cancelled(Exception):
    pass


@pytest.mark.parametrize("stage", ["shortest makespan", "training the GNN"])
def test_long_loops_report_progress_so_a_cancel_stops_them(monkeypatch, stage: str) -> None:
    monkeypatch.setattr(plan_module, "HEARTBEAT_S", 0.0)
    calls: list[str] = []

    def progress(fraction: float, message: str) -> None:
        calls.append(message)
        if stage in message and calls.count(message) >= 3:  # the third report from inside the loop
            raise Cancelled(message)

    with pytest.raises(Cancelled):
        plan_energy(small_inputs(chain_jobs(), budget=1500), {"gnn_steps": 50}, progress=progress)
    assert calls.count(calls[-1]) == 3 and not any(m == "clock caps" for m in calls)
    assert np.isfinite(len(calls))


def test_an_explicit_horizon_counts_against_the_job_slots_limit(monkeypatch) -> None:
    monkeypatch.setenv("QFLOW_MAX_ENERGY_JOB_SLOTS", "400000")
    inputs = small_inputs(chain_jobs())
    with pytest.raises(LimitExceededError) as err:
        plan_energy(inputs, {"horizon": 100_000, "gnn_steps": 10})
    assert err.value.source == "config" and err.value.field.startswith("horizon") and err.value.declared == 8 * 100_000
