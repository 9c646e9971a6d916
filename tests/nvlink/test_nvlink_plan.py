"""plan_nvlink on the sample files: envelope, determinism, and a result a scheduler can apply as it is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nvlink_helpers import FAST, SAMPLES, pair_fabric, skewed_job

from qflow.core.plan import Plan
from qflow.nvlink import NvlinkConfig, load_nvlink_inputs, plan_nvlink


@pytest.fixture(scope="module")
def sample_plan() -> Plan:
    fabric, jobs, logs, digests = load_nvlink_inputs(SAMPLES / "gb200_nvl72.json", SAMPLES / "jobs.json")
    return plan_nvlink(fabric, jobs, {"rl_episodes": 30, "classifier_samples": 80}, logs=logs, digests=digests)


def test_envelope_and_json_round_trip(sample_plan):
    data = sample_plan.to_dict()
    assert data["module"] == "nvlink" and [d["name"] for d in data["inputs"]] == ["fabric", "jobs"]
    assert data["config"] == NvlinkConfig(rl_episodes=30, classifier_samples=80).model_dump()
    assert Plan.from_json(sample_plan.to_json()) == sample_plan
    assert {"paths", "placement", "rounds", "simulate", "rl", "classifier", "baselines"} <= set(data["timings_s"])


def test_placement_rounds_and_routing_are_consistent(sample_plan):
    result = sample_plan.result
    jobs = json.loads((SAMPLES / "jobs.json").read_text())["jobs"]
    gpus = [g for placement in result["placement"].values() for g in placement]
    assert len(gpus) == len(set(gpus)) == sum(j["ranks"] for j in jobs) == 71
    transfers = sum(len(r) for rounds in result["rounds"].values() for r in rounds)
    assert transfers == sample_plan.metrics["n_transfers"] == len(result["routing"]["flows"])
    for rounds in result["rounds"].values():
        for r in rounds:
            used = [x for t in r for x in (t["src"], t["dst"])]
            assert len(used) == len(set(used))
    flow = result["routing"]["flows"][0]
    assert flow["src_gpu"] == result["placement"][flow["job"]][flow["src_rank"]]
    assert result["routing"]["policy"] in ("weighted_ecmp", "rl_q_learning")
    for job, rounds in result["rounds"].items():
        assert len(result["round_times_s"][job]) == len(rounds) == sample_plan.metrics["rounds_per_job"][job]
        assert result["job_times_s"][job] == pytest.approx(sum(result["round_times_s"][job]))
    assert sample_plan.metrics["estimated_collective_time_s"] == pytest.approx(max(result["job_times_s"].values()))


def test_metrics_against_baselines(sample_plan):
    m, b = sample_plan.metrics, sample_plan.baselines
    assert m["rounds"] == m["rounds_lower_bound"] == 62 and m["rounds_at_lower_bound"]
    assert m["rounds_removed_by_recolouring"] == 1  # the irregular job: 8 greedy rounds -> 7
    assert b["greedy_colouring"]["rounds_per_job"]["sparse_exchange_7"] == 9  # row-major first-fit
    # The NVL72 is flat (every GPU pair one switch hop apart): placement cannot change the NVLink cost,
    # but keeps heavy pairs inside a compute tray.
    assert m["cut_cost_s"] == pytest.approx(b["round_robin"]["cut_cost_s"])
    assert m["cross_node_bytes"] < b["round_robin"]["cross_node_bytes"] / 4
    assert m["estimated_collective_time_s"] < b["shortest_path"]["estimated_collective_time_s"] / 10
    # Utilisation = busy time / the rounds' ideal time: weighted ECMP never overloads a link, one static path does.
    assert 0 < m["max_link_utilisation"] <= 1 + 1e-9
    assert b["shortest_path"]["max_link_utilisation"] > 5
    classifier = sample_plan.result["classifier"]
    assert classifier["logs"] == "simulated" and classifier["held_out_accuracy"] >= 0.85
    assert classifier["predictions"]["shortest_path"]["simulated_congested"]


def test_placement_beats_round_robin_in_the_plan():
    plan = plan_nvlink(pair_fabric(), {"jobs": [skewed_job(16, 4, 0)]}, FAST)
    rr = plan.baselines["round_robin"]
    assert plan.metrics["cut_cost_s"] < rr["cut_cost_s"]
    assert plan.metrics["cross_node_bytes"] < rr["cross_node_bytes"]
    assert plan.metrics["estimated_collective_time_s"] < rr["estimated_collective_time_s"]


def test_same_seed_same_plan():
    jobs = {"jobs": [skewed_job(8, 4, 1), {"id": "a", "ranks": 6, "pattern": "all_to_all", "bytes": 1e8}]}
    config = {"rl_episodes": 20, "classifier_samples": 60, "seed": 4}
    first, second = (plan_nvlink(pair_fabric(), jobs, config).to_dict() for _ in range(2))
    for volatile in ("created_at", "timings_s"):
        first.pop(volatile), second.pop(volatile)
    assert first == second


def test_full_duplex_halves_the_rounds_of_an_all_to_all():
    jobs = {"jobs": [{"id": "a", "ranks": 8, "pattern": "all_to_all", "bytes": 1e8}]}
    half = plan_nvlink(pair_fabric(), jobs, FAST).metrics
    full = plan_nvlink(pair_fabric(), jobs, {**FAST, "full_duplex": True}).metrics
    assert (half["rounds"], full["rounds"]) == (14, 7)
    assert full["estimated_collective_time_s"] < half["estimated_collective_time_s"]


def test_rl_routing_is_used_only_when_it_beats_ecmp():
    plan = plan_nvlink(pair_fabric(), {"jobs": [skewed_job(8, 4, 0)]}, {"classifier": False, "rl_episodes": 40})
    rl = plan.result["rl"]
    assert len(rl["reward_curve"]) == 40 and rl["final_concurrent_time_s"] <= rl["shortest_path_concurrent_time_s"]
    if plan.metrics["routing_policy"] == "weighted_ecmp":
        assert any("did not beat weighted ECMP" in d for d in plan.diagnostics)


def test_no_traffic_job_is_fine():
    plan = plan_nvlink(pair_fabric(), {"jobs": [{"id": "idle", "ranks": 3, "traffic": np.zeros((3, 3)).tolist()}]}, FAST)
    assert plan.metrics["rounds"] == 0 and plan.result["rounds"] == {"idle": []}
