"""Hostile and absurd inputs: sizes checked against limits before work, absurd numbers refused, long loops cancellable."""

from __future__ import annotations

import json

import pytest
from nvlink_helpers import FAST, SAMPLES, node_fabric

from qflow.cli import main
from qflow.core.errors import InputError
from qflow.core.limits import LimitExceededError
from qflow.nvlink import parse_fabric, parse_jobs, parse_topo_text, plan_nvlink
from qflow.nvlink._sample import dgx_h100_fabric


class Cancelled(BaseException):
    """What a front end's progress callback raises on Cancel."""


def topo_header_only(n_gpus: int) -> str:
    """The header row of an n-GPU ``nvidia-smi topo -m`` matrix and no rows: any work past the header would fail on them."""
    return "\t" + "\t".join(f"GPU{i}" for i in range(n_gpus)) + "\tCPU Affinity\n"


def test_topo_text_gpu_count_is_checked_before_the_matrix_is_read():
    with pytest.raises(LimitExceededError) as info:
        parse_topo_text(topo_header_only(1000), "big_topo.txt")
    err = info.value
    assert (err.source, err.limit_name, err.declared, err.limit) == ("big_topo.txt", "fabric_gpus", 1000, 256)
    assert err.message.startswith("big_topo.txt: (header) GPU columns: over the fabric_gpus limit")
    assert "QFLOW_MAX_FABRIC_GPUS" in err.message and "got 1,000" in err.message


def test_node_link_gpu_count_follows_the_environment(monkeypatch):
    parse_fabric(dgx_h100_fabric(), "dgx.json")  # 8 GPUs: within the default
    monkeypatch.setenv("QFLOW_MAX_FABRIC_GPUS", "4")
    with pytest.raises(LimitExceededError, match=r"dgx.json: nodes \(kind gpu\): over the fabric_gpus limit .* at most 4, got 8"):
        parse_fabric(dgx_h100_fabric(), "dgx.json")


def test_cli_refuses_a_1000_gpu_topo_text_with_exit_2(capsys, tmp_path):
    fabric = tmp_path / "topo.txt"
    fabric.write_text(topo_header_only(1000))
    assert main(["nvlink", "--fabric", str(fabric), "--jobs", str(SAMPLES / "jobs_node.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: topo.txt: (header) GPU columns: over the fabric_gpus limit") and "\n" not in err


def _fabric_with(**link) -> dict:
    data = dgx_h100_fabric()
    data["links"][0] = {**data["links"][0], **link}
    return data


@pytest.mark.parametrize(("link", "field", "problem"), [
    ({"bandwidth_gbps": 1e-308}, "bandwidth_gbps", "out of range"),
    ({"bandwidth_gbps": 1e308}, "bandwidth_gbps", "out of range"),
    ({"bandwidth_gbps": 10**400}, "bandwidth_gbps", "not a finite number"),
    ({"bandwidth_gbps": float("nan")}, "bandwidth_gbps", "not a finite number"),
    ({"latency_us": 1e9}, "latency_us", "out of range"),
    ({"latency_us": float("inf")}, "latency_us", "not a finite number"),
])
def test_absurd_link_numbers_are_input_errors(link, field, problem):
    with pytest.raises(InputError) as info:
        parse_fabric(_fabric_with(**link), "f.json")
    assert info.value.message.startswith(f"f.json: links[0].{field}: {problem}")


@pytest.mark.parametrize(("job", "field", "problem"), [
    ({"pattern": "all_reduce", "bytes": 1e308}, "jobs[0].bytes", "out of range"),
    ({"pattern": "all_reduce", "bytes": 10**400}, "jobs[0].bytes", "not a finite number"),
    ({"pattern": "all_reduce", "bytes": float("inf")}, "jobs[0].bytes", "not a finite number"),
    ({"traffic": [[0, 1e300], [0, 0]]}, "jobs[0].traffic[0][1]", "invalid byte count"),
    ({"traffic": [[0, float("nan")], [0, 0]]}, "jobs[0].traffic[0][1]", "invalid byte count"),
])
def test_absurd_job_numbers_are_input_errors(job, field, problem):
    with pytest.raises(InputError) as info:
        parse_jobs({"jobs": [{"id": "j", "ranks": 2, **job}]}, "jobs.json", 8)
    assert info.value.message.startswith(f"jobs.json: {field}: {problem}")


def test_a_huge_integer_rank_count_is_described_not_printed():
    with pytest.raises(InputError) as info:
        parse_jobs({"jobs": [{"id": "j", "ranks": 10**5000, "pattern": "pipeline", "bytes": 1}]}, "jobs.json", 8)
    assert info.value.message == ("jobs.json: jobs[0].ranks: invalid rank count; expected an integer in [1, 1024], "
                                  "got an integer of 16610 bits")


def test_cli_exit_2_for_bytes_1e308(capsys, tmp_path):
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"jobs": [{"id": "j", "ranks": 4, "pattern": "all_to_all", "bytes": 1e308}]}))
    assert main(["nvlink", "--fabric", str(SAMPLES / "dgx_h100.json"), "--jobs", str(jobs)]) == 2
    assert capsys.readouterr().err.strip() == ("error: jobs.json: jobs[0].bytes: out of range; expected bytes per rank in "
                                               "(0, 2**60], got 1e+308")


@pytest.mark.parametrize(("settings", "stage"), [
    ({**FAST}, "pair costs: GPU 3/8"),
    ({"classifier": False, "rl_episodes": 50}, "RL path planner: episode 3/50"),
    ({"rl_planner": False, "classifier_samples": 40}, "contention classifier: simulated run 3/40"),
])
def test_long_loops_report_progress_so_a_cancel_stops_them(settings, stage):
    seen: list[str] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(message)
        if message == stage:
            raise Cancelled(message)

    jobs = {"jobs": [{"id": "a", "ranks": 8, "pattern": "all_to_all", "bytes": 1e8}]}
    with pytest.raises(Cancelled):
        plan_nvlink(node_fabric(), jobs, settings, progress=progress)
    assert seen[-1] == stage and "done" not in seen
