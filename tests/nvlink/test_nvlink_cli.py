"""The CLI acceptance commands: the sample plan, and exit 2 with one clear line for a dangling link, too many ranks, negative bandwidth."""

from __future__ import annotations

import json

import pytest
from nvlink_helpers import SAMPLES

from qflow.cli import main


def test_sample_plan_on_the_nvl72(capsys, tmp_path):
    out = tmp_path / "plan.json"
    code = main(["nvlink", "--fabric", str(SAMPLES / "gb200_nvl72.json"), "--jobs", str(SAMPLES / "jobs.json"),
                 "--out", str(out), "--no-classifier", "--set", "rl_episodes=20"])
    assert code == 0
    text = capsys.readouterr().out
    assert "{'gpu': 72, 'nvswitch': 18}, 1296 links" in text and "rounds 62 (lower bound 62" in text
    plan = json.loads(out.read_text())
    assert plan["module"] == "nvlink" and set(plan["result"]["placement"]) == {"train_tp4x4", "moe_all_to_all", "pipeline_16",
                                                                                  "sparse_exchange_7"}
    assert {"round_robin", "random", "greedy_colouring", "shortest_path"} <= set(plan["baselines"])
    assert plan["metrics"]["estimated_collective_time_s"] < plan["baselines"]["shortest_path"]["estimated_collective_time_s"]


def test_topo_text_fabric(capsys, tmp_path):
    code = main(["nvlink", "--fabric", str(SAMPLES / "dgx_h100_topo.txt"), "--jobs", str(SAMPLES / "jobs_node.json"),
                 "--no-classifier", "--no-rl-planner"])
    assert code == 0
    assert "(nvidia-smi topo -m): {'gpu': 8, 'nic': 8}, 120 links" in capsys.readouterr().out


def _fabric_with(tmp_path, edit) -> str:
    data = json.loads((SAMPLES / "dgx_h100.json").read_text())
    edit(data)
    path = tmp_path / "bad_fabric.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["links"].append({"source": "gpu0", "target": "nvsw9", "bandwidth_gbps": 400}),
     "error: bad_fabric.json: links[40].target: dangling link: endpoint is not a node; expected the id of a node listed "
     "under 'nodes', got nvsw9"),
    (lambda d: d["links"][3].update(bandwidth_gbps=-400),
     "error: bad_fabric.json: links[3].bandwidth_gbps: out of range; expected a bandwidth in Gbit/s in [0.001, 1e+07], got -400"),
])
def test_bad_fabric_exits_2(capsys, tmp_path, edit, message):
    fabric = _fabric_with(tmp_path, edit)
    assert main(["nvlink", "--fabric", fabric, "--jobs", str(SAMPLES / "jobs_node.json")]) == 2
    assert capsys.readouterr().err.strip() == message


def test_job_with_more_ranks_than_gpus_exits_2(capsys, tmp_path):
    jobs = tmp_path / "big_jobs.json"
    jobs.write_text(json.dumps({"jobs": [{"id": "huge", "ranks": 9, "pattern": "all_to_all", "bytes": 1e6}]}))
    assert main(["nvlink", "--fabric", str(SAMPLES / "dgx_h100.json"), "--jobs", str(jobs)]) == 2
    assert capsys.readouterr().err.strip() == ("error: big_jobs.json: jobs[0].ranks: job huge has more ranks than the fabric has "
                                               "GPUs; expected at most 8 ranks, got 9")


def test_text_that_is_no_fabric_exits_2(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n")
    assert main(["nvlink", "--fabric", str(path), "--jobs", str(SAMPLES / "jobs_node.json")]) == 2
    assert "notes.txt: (file): neither JSON nor nvidia-smi topo -m text" in capsys.readouterr().err


@pytest.mark.quantum
def test_summary_reports_the_classifier_verdict_and_the_quantum_kernel(capsys, tmp_path):
    out = tmp_path / "plan.json"
    code = main(["nvlink", "--fabric", str(SAMPLES / "dgx_h100_topo.txt"), "--jobs", str(SAMPLES / "jobs_node.json"),
                 "--no-rl-planner", "--quantum-kernel", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    plan = json.loads(out.read_text())
    c = plan["result"]["classifier"]
    verdict = "no call (it does not beat the majority class)" if not c["acted_on"] else "plan flagged"
    assert verdict in text
    assert "quantum kernel (8 qubits" in text and ("not adopted" in text) == (not c["quantum_kernel"]["adopted"])
