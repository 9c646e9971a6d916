"""The plan envelope: paths per toggle, determinism, JSON round trip, estimated job power, per-node shares."""

from __future__ import annotations

import numpy as np
import pytest
from energy_helpers import chain_jobs, small_inputs, topology_dict

from qflow.core.errors import InputError
from qflow.core.plan import Plan
from qflow.energy import EnergyConfig, parse_jobs, parse_topology, plan_energy

FAST = {"gnn_steps": 30}


@pytest.mark.parametrize(("toggles", "path"), [
    ({"gnn_prediction": False}, "per-node"),
    ({}, "gnn+list"),
    ({"gnn_prediction": False, "qaoa_scheduling": True, "max_qubits": 3, "qaoa_steps": 3, "qaoa_windows": 1}, "list+qaoa"),
])
def test_each_toggle_set_runs_its_path(toggles, path) -> None:
    plan = plan_energy(small_inputs(chain_jobs(), budget=1700), {**FAST, **toggles})
    assert plan.solver.requested == path
    assert plan.module == "energy" and plan.metrics["dependency_violations"] == 0
    if path == "per-node":
        assert plan.metrics["peak_power_w"] == plan.baselines["per_node"]["peak_power_w"]
        assert "gnn" not in plan.metrics["prediction_mae_w"]


def test_the_plan_is_deterministic_and_survives_json() -> None:
    inputs = small_inputs(chain_jobs())
    a, b = plan_energy(inputs, FAST), plan_energy(inputs, FAST)
    assert a.result == b.result and a.metrics == b.metrics
    again = Plan.from_json(a.to_json())
    assert again.result == a.result and again.config == EnergyConfig(**FAST).model_dump()


def test_missing_job_power_is_estimated_from_telemetry_and_recorded() -> None:
    jobs = [{"id": "x", "duration": 2, "gpus": 2}, {"id": "y", "duration": 1, "gpus": 1, "power_w": 300, "node": "n0"},
            {"id": "z", "duration": 1, "gpus": 3, "node": "n1"}]
    plan = plan_energy(small_inputs(jobs), FAST)
    estimated = {e["job"]: e for e in plan.result["estimated_job_power"]}
    assert set(estimated) == {"x", "z"}
    assert estimated["x"]["source"] == "busy-GPU power of the cluster" and estimated["z"]["source"] == "busy-GPU power of its node"
    per_gpu = estimated["x"]["power_w"] / 2
    assert 60 < per_gpu < 60 + 70 * 1.8**3  # between idle and a fully busy GPU at max clock (the telemetry's model)
    assert {r["job"]: r["power_w"] for r in plan.result["schedule"]}["y"] == 300


def test_node_budgets_bound_the_per_node_scheduler() -> None:
    topo_data = topology_dict(nodes=2, gpus=4)
    topo_data["nodes"][0]["power_budget_w"] = 900
    topo_data["nodes"][1]["power_budget_w"] = 1200
    inputs = small_inputs(chain_jobs())
    topo = parse_topology(topo_data)
    inputs = type(inputs)(inputs.telemetry, topo, parse_jobs({"jobs": chain_jobs()}, topo))
    plan = plan_energy(inputs, {**FAST, "gnn_prediction": False})
    for node, cap in (("n0", 900), ("n1", 1200)):
        rows = [r for r in plan.result["schedule"] if r["node"] == node]
        load = np.zeros(max(r["end"] for r in plan.result["schedule"]))
        for r in rows:
            load[r["start"]:r["end"]] += r["power_w"]
        assert load.max() <= max(cap, max(r["power_w"] for r in rows))


def test_result_has_caps_accelerators_and_predicted_savings() -> None:
    plan = plan_energy(small_inputs(chain_jobs(), budget=1700), FAST)
    r = plan.result
    assert [c["node"] for c in r["frequency_caps"]] == ["n0", "n1"]
    for cap in r["frequency_caps"]:
        assert 600 <= cap["recommended"]["clock_mhz"] <= cap["current"]["clock_mhz"] <= 1800
        assert 150 <= cap["recommended"]["power_limit_w"] <= cap["current"]["power_limit_w"] == 500
    assert r["active_accelerators"]["of"] == 8 and 1 <= r["active_accelerators"]["total"] <= 8
    assert r["predicted"]["peak_power_w"] == plan.metrics["peak_power_w"]
    assert r["predicted_savings"]["caps_energy_kwh"] >= 0
    assert r["predicted"]["energy_kwh_capped"] == pytest.approx(r["predicted"]["energy_kwh"] - r["predicted_savings"]["caps_energy_kwh"], abs=1e-3)


@pytest.mark.parametrize(("field", "value"), [("power_budget_w", -1), ("slot_hours", 0), ("max_qubits", 21), ("horizon", -2)])
def test_bad_config_values_name_the_field(field, value) -> None:
    with pytest.raises(InputError, match=rf"config: config.{field}: invalid value"):
        plan_energy(small_inputs(chain_jobs()), {field: value})


def test_telemetry_as_json_records_gives_the_same_plan_as_csv(tmp_path) -> None:
    import json

    from energy_helpers import telemetry_frame

    from qflow.energy import load_energy_inputs

    frame = telemetry_frame(steps=12)
    topology = json.dumps(topology_dict()).encode()
    jobs = json.dumps({"jobs": chain_jobs()}).encode()
    from_csv, _ = load_energy_inputs(frame.to_csv(index=False).encode(), topology, jobs, telemetry_name="t.csv",
                                     topology_name="t.json", jobs_name="j.json")
    records = json.dumps({"telemetry": frame.to_dict("records")}).encode()
    from_json, _ = load_energy_inputs(records, topology, jobs, telemetry_name="t.json", topology_name="t.json", jobs_name="j.json")
    a, b = plan_energy(from_csv, FAST), plan_energy(from_json, FAST)
    assert a.result["schedule"] == b.result["schedule"]
    assert a.metrics["prediction_mae_w"] == pytest.approx(b.metrics["prediction_mae_w"])
