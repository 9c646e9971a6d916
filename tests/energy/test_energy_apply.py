"""Plans to apply: the scripts set exactly the recommended caps per host and restore exactly today's settings."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from energy_helpers import SAMPLES, chain_jobs, telemetry_frame, topology_dict

from qflow.cli import main
from qflow.energy import EnergyInputs, parse_jobs, parse_telemetry, parse_topology, plan_energy
from qflow.energy._apply import apply_commands

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")


def _run_script(script: str, host: str, tmp_path: Path) -> tuple[int, list[str]]:
    """Run a script with a fake nvidia-smi that logs its arguments; returns the exit code and the logged calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / f"calls-{host}.log"
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    path = tmp_path / "script.sh"
    path.write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "QFLOW_HOST": host}
    done = subprocess.run(["sh", str(path)], env=env, capture_output=True, text=True, timeout=30)
    return done.returncode, log.read_text().splitlines() if log.exists() else []


def test_the_scripts_set_the_recommended_caps_and_restore_the_current_settings(tmp_path: Path) -> None:
    data = topology_dict(nodes=2, gpus=4, budget=1500)
    data["nodes"][1].update(current_power_limit_w=450, locked_clocks_mhz=[600, 1700])
    topo = parse_topology(data)
    inputs = EnergyInputs(parse_telemetry(telemetry_frame(), topo), topo, parse_jobs({"jobs": chain_jobs()}, topo))
    plan = plan_energy(inputs, {"gnn_steps": 10, "max_slowdown": 1.5})
    caps = {c["node"]: c for c in plan.result["frequency_caps"]}
    apply = plan.result["apply"]
    assert apply["hosts"]["n0"]["set"] and apply["hosts"]["n1"]["set"]  # both nodes get a cap on this input
    for host in ("n0", "n1"):
        rec = caps[host]["recommended"]
        code, calls = _run_script(apply["set_script"], host, tmp_path)
        assert code == 0
        if apply["hosts"][host]["set"]:
            assert calls == [c for g in range(4) for c in (f"-i {g} -pl {rec['power_limit_w']:.0f}",
                                                           f"-i {g} -lgc 600,{rec['clock_mhz']:.0f}")]
    (tmp_path / "restore").mkdir()
    code, calls = _run_script(apply["restore_script"], "n1", tmp_path / "restore")
    assert code == 0 and calls == [c for g in range(4) for c in (f"-i {g} -pl 450", f"-i {g} -lgc 600,1700")]  # what is set now
    assert apply["hosts"]["n0"]["restore"][:2] == ["nvidia-smi -i 0 -pl 500", "nvidia-smi -i 0 -rgc"]
    code, _ = _run_script(apply["set_script"], "unknown-host", tmp_path)
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(apply["schedule_csv"])))
    assert [(r["job"], int(r["start_slot"]), int(r["end_slot"])) for r in rows] == \
        [(r["job"], r["start"], r["end"]) for r in plan.result["schedule"]]


def test_a_node_with_nothing_to_change_gets_no_commands() -> None:
    topo = parse_topology(topology_dict(nodes=1))
    same = {"node": "n0", "current": {"clock_mhz": 1800.0, "power_limit_w": 500.0},
            "recommended": {"clock_mhz": 1800.0, "power_limit_w": 500.0}}
    out = apply_commands([same], topo)
    assert out["hosts"]["n0"] == {"set": [], "restore": []} and "no change recommended" in out["set_script"]


def test_the_cli_writes_the_scripts_and_the_schedule_beside_the_plan(tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan.json"
    assert main(["energy", "--telemetry", str(SAMPLES / "telemetry_dcgm.json"), "--topology", str(SAMPLES / "topology.json"),
                 "--jobs", str(SAMPLES / "jobs.json"), "--out", str(out), "--set", "gnn_steps=10", "--set", "makespan_iterations=2"]) == 0
    plan = json.loads(out.read_text())
    for suffix, key in ((".apply.sh", "set_script"), (".restore.sh", "restore_script"), (".schedule.csv", "schedule_csv")):
        path = tmp_path / f"plan{suffix}"
        assert path.read_text() == plan["result"]["apply"][key]
        assert plan["result"]["apply"]["files"][key] == {"file": path.name, "written_to": str(path)}
    assert os.access(tmp_path / "plan.apply.sh", os.X_OK)
    assert len((tmp_path / "plan.schedule.csv").read_text().splitlines()) == 251
    assert "plan.apply.sh, plan.restore.sh, plan.schedule.csv written" in capsys.readouterr().out


def test_the_api_keeps_the_scripts_and_the_schedule_as_downloadable_artifacts(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from qflow.api import create_app
    from qflow.core.runs import RunStore

    files = {name: (f, (SAMPLES / f).read_bytes()) for name, f in
             (("telemetry", "telemetry_dcgm.json"), ("topology", "topology.json"), ("jobs", "jobs.json"))}
    with TestClient(create_app(store=RunStore(tmp_path / "runs.db")), base_url="http://localhost") as client:
        response = client.post("/v1/energy/plan", files=files, data={"config": json.dumps({"gnn_steps": 10, "makespan_iterations": 2})})
        assert response.status_code == 200, response.text
        plan = response.json()
        run_id = int(response.headers["X-Qflow-Run-Id"])
        names = sorted(entry["name"] for entry in client.get(f"/v1/runs/{run_id}/artifacts").json())
        assert names == ["plan.apply.sh", "plan.restore.sh", "plan.schedule.csv"]
        script = client.get(f"/v1/runs/{run_id}/artifacts/plan.apply.sh").text
    assert script == plan["result"]["apply"]["set_script"]
    assert plan["result"]["apply"]["files"]["set_script"] == {"file": "plan.apply.sh", "written_to": None}  # the server's folder is gone
