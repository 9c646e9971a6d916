"""The CLI acceptance commands: the sample plan, and exit 2 with one clear line for malformed or infeasible input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from energy_helpers import SAMPLES

from qflow.cli import main

TELEMETRY, TOPOLOGY, JOBS = (str(SAMPLES / name) for name in ("telemetry.csv", "topology.json", "jobs.json"))


def run(*args: str) -> int:
    return main(["energy", *args])


def test_the_sample_plan_is_written_with_schedule_caps_and_baselines(capsys, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert run("--telemetry", TELEMETRY, "--topology", TOPOLOGY, "--jobs", JOBS, "--out", str(out), "--set", "gnn_steps=60") == 0
    text = capsys.readouterr().out
    assert "qflow energy: requested gnn+list, ran gnn+list" in text and "budget respected: True" in text
    plan = json.loads(out.read_text())
    jobs = json.loads(Path(JOBS).read_text())["jobs"]
    rows = {r["job"]: r for r in plan["result"]["schedule"]}
    assert len(rows) == len(jobs) == 250
    for job in jobs:
        assert set(rows[job["id"]]) >= {"job", "node", "start", "end"}
        assert all(rows[job["id"]]["start"] >= rows[d]["end"] for d in job["deps"])
        assert "node" not in job or rows[job["id"]]["node"] == job["node"]
    m = plan["metrics"]
    assert {"peak_power_w", "energy_kwh", "makespan_slots", "lower_bound_w", "gap_to_lower_bound"} <= set(m)
    assert set(plan["baselines"]) == {"asap", "per_node"}
    assert m["peak_power_w"] <= plan["result"]["power_budget_w"] < plan["baselines"]["asap"]["peak_power_w"]
    assert len(plan["result"]["frequency_caps"]) == 8
    for cap in plan["result"]["frequency_caps"]:
        assert {"current", "recommended"} <= set(cap)
    assert set(m["prediction_mae_w"]) == {"persistence", "ridge", "gnn"}


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("which", "edit", "message"), [
    ("telemetry", lambda t: t.replace("power_w,", "watts,", 1),
     "error: bad.csv: power_w: missing column; expected columns timestamp, node, gpu, power_w, "
     "got timestamp, node, gpu, watts, utilization, sm_clock_mhz, temperature_c, job_id"),
    ("telemetry", lambda t: t.replace(",69.8,", ",high,", 1),
     "error: bad.csv: power_w[row 1]: not a number; expected a number, got high"),
    ("telemetry", lambda t: t.replace(",69.8,", ",,", 1),
     "error: bad.csv: power_w[row 1]: missing value; expected a number on every row"),
])
def test_malformed_telemetry_exits_2(capsys, tmp_path: Path, which: str, edit, message: str) -> None:
    bad = _write(tmp_path, "bad.csv", edit(Path(TELEMETRY).read_text()))
    assert run("--telemetry", bad, "--topology", TOPOLOGY, "--jobs", JOBS) == 2
    assert capsys.readouterr().err.strip() == message


def test_cyclic_dependencies_exit_2(capsys, tmp_path: Path) -> None:
    data = json.loads(Path(JOBS).read_text())
    data["jobs"][0]["deps"] = ["wf00-report"]  # wf00-prep now waits for the end of its own workflow
    bad = _write(tmp_path, "bad.json", json.dumps(data))
    assert run("--telemetry", TELEMETRY, "--topology", TOPOLOGY, "--jobs", bad) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: bad.json: jobs.deps: cyclic dependencies (wf00-prep -> wf00-train -> wf00-finetune -> ... -> "
                   "wf00-report -> wf00-prep, 6 jobs); expected a DAG (no job may depend on itself through others)")


def test_a_budget_below_the_largest_job_exits_2(capsys) -> None:
    assert run("--telemetry", TELEMETRY, "--topology", TOPOLOGY, "--jobs", JOBS, "--power-budget-w", "3000") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config: power_budget_w: budget below the largest single job; expected at least ")
    assert err.endswith("got 3000 W") and len(err.splitlines()) == 1


def test_a_topology_budget_below_the_largest_job_names_the_file(capsys, tmp_path: Path) -> None:
    data = json.loads(Path(TOPOLOGY).read_text())
    data["power_budget_w"] = 1000
    bad = _write(tmp_path, "tight.json", json.dumps(data))
    assert run("--telemetry", TELEMETRY, "--topology", bad, "--jobs", JOBS) == 2
    assert capsys.readouterr().err.startswith("error: tight.json: power_budget_w: budget below the largest single job")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["nodes"][0].update(min_clock_mhz=2500),
     "error: bad.json: nodes[0].min_clock_mhz: not below max_clock_mhz; expected min_clock_mhz < max_clock_mhz, got 2500 >= 1980"),
    (lambda d: d["links"].append({"source": "node0", "target": "node9"}),
     "error: bad.json: links[16].target: unknown node; expected a node id from nodes, got node9"),
])
def test_malformed_topology_exits_2(capsys, tmp_path: Path, edit, message: str) -> None:
    data = json.loads(Path(TOPOLOGY).read_text())
    edit(data)
    bad = _write(tmp_path, "bad.json", json.dumps(data))
    assert run("--telemetry", TELEMETRY, "--topology", bad, "--jobs", JOBS) == 2
    assert capsys.readouterr().err.strip() == message
