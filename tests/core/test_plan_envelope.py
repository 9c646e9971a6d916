"""The error family and the plan envelope, independent of any module."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qflow import __version__
from qflow.core.errors import InfeasibleError, InputError, QflowError
from qflow.core.plan import PLAN_SCHEMA, InputDigest, Plan, QuantumReport, SolverReport, StageTimer, digest_bytes


class TestErrors:
    def test_message_shape(self):
        err = InputError("routing.yaml", "config.max_hops", "out of range", "int in [1, 64]", 0)
        assert str(err) == "routing.yaml: config.max_hops: out of range; expected int in [1, 64], got 0"

    def test_optional_parts(self):
        assert str(InfeasibleError("tokens.csv", "(rows)", "no plan fits")) == "tokens.csv: (rows): no plan fits"
        assert str(InputError("f", "x", "bad", "a number")) == "f: x: bad; expected a number"

    def test_received_is_shortened_to_one_line(self):
        err = InputError("f", "x", "bad", "short", "line one\n" + "y" * 200)
        assert "\n" not in str(err)
        assert len(err.received) == 80 and err.received.endswith("...")
        assert InputError("f", "x", "bad", "int", np.int64(3)).received == "3"

    def test_hierarchy(self):
        assert issubclass(InputError, ValueError) and issubclass(InputError, QflowError)
        assert issubclass(InfeasibleError, QflowError) and not issubclass(InfeasibleError, ValueError)

    def test_to_dict(self):
        d = InputError("t.csv", "token_id", "missing column", "a 'token_id' column", "id").to_dict()
        assert d == {
            "kind": "InputError", "source": "t.csv", "field": "token_id", "problem": "missing column",
            "expected": "a 'token_id' column", "received": "id",
            "message": "t.csv: token_id: missing column; expected a 'token_id' column, got id",
        }


def sample_plan() -> Plan:
    solver = SolverReport(requested="qaoa", ran="qaoa")
    solver.quantum = QuantumReport(device="default.qubit", device_reason="test", layers=2, block_ratios=[0.5, None])
    return Plan(
        module="routing",
        inputs=[InputDigest(name="tokens", sha256=digest_bytes(b"x"), rows=1, shape=[1, 2], source="t.csv")],
        config={"seed": 0, "qaoa": True},
        solver=solver,
        result={"assignments": {"t0": "e1", "t1": None}},
        metrics={"objective": 1.25, "optimum_kind": None},
        timings_s={"route": 0.1},
    )


class TestPlanModel:
    def test_json_uses_schema_alias(self):
        data = json.loads(sample_plan().to_json())
        assert data["schema"] == PLAN_SCHEMA == "qflow.plan/v1"
        assert "schema_" not in data
        assert data["qflow_version"] == __version__
        assert sample_plan().to_dict() == data

    def test_round_trip(self):
        plan = sample_plan()
        plan.solver.fall_back("qaoa", "classical", "time budget")
        again = Plan.from_json(plan.to_json())
        assert again == plan
        assert Plan.from_json(plan.to_json(indent=None).encode()) == plan

    def test_fallback_records_reason_and_path(self):
        solver = SolverReport(requested="qaoa+hqc", ran="qaoa+hqc")
        solver.fall_back("qaoa+hqc", "classical", "pennylane is not installed")
        assert solver.ran == "classical"
        assert solver.model_dump(by_alias=True)["fallbacks"] == [
            {"from": "qaoa+hqc", "to": "classical", "reason": "pennylane is not installed"}
        ]

    def test_refuses_other_schema(self):
        data = sample_plan().to_dict()
        data["schema"] = "qflow.plan/v2"
        with pytest.raises(ValueError, match="schema"):
            Plan.model_validate(data)

    def test_created_at_is_utc_iso(self):
        assert sample_plan().created_at.endswith("+00:00")

    def test_stage_timer_accumulates(self):
        timer = StageTimer()
        for _ in range(2):
            with timer.stage("solve"):
                pass
        with pytest.raises(RuntimeError), timer.stage("fail"):
            raise RuntimeError
        assert list(timer.timings_s) == ["solve", "fail"]
        assert all(v >= 0 for v in timer.timings_s.values())
