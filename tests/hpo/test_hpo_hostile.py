"""Hostile and absurd inputs: worker processes capped and reaped, dataset copies bounded, absurd numbers refused."""

from __future__ import annotations

import glob
import os

import pandas as pd
import pytest
from sklearn.datasets import load_iris

from qflow.core.errors import InputError
from qflow.core.io import digest_frame
from qflow.core.limits import LimitExceededError
from qflow.hpo import parse_space, plan_hpo
from qflow.hpo._objectives import Evaluator, Objective

TRAIN = {"objective": "train", "builtin_dataset": "iris", "n_trials": 4, "n_initial": 2, "batch_size": 2, "n_jobs": 2,
         "baselines": False, "suggest": 1}
SPACE = {"max_depth": {"kind": "int", "low": 1, "high": 4}, "n_estimators": {"kind": "int", "low": 5, "high": 10}}


class Cancelled(BaseException):
    """What a front end's progress callback raises on Cancel."""


def worker_processes() -> list[int]:
    """Pids of this process's loky workers (its resource trackers are shared and long-lived, not workers)."""
    pids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            ppid = int(open(stat).read().rsplit(")", 1)[1].split()[1])
            pid = stat.split("/")[2]
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"LokyProcess" in cmdline:
            pids.append(int(pid))
    return pids


def test_worker_count_is_capped_and_benchmarks_stay_in_process(monkeypatch):
    monkeypatch.setenv("QFLOW_MAX_WORKERS", "1")
    assert Evaluator(Objective("train"), n_jobs=32).workers == 1
    monkeypatch.delenv("QFLOW_MAX_WORKERS")
    assert Evaluator(Objective("train"), n_jobs=32).workers == min(32, len(os.sched_getaffinity(0)))
    assert Evaluator(Objective("branin"), n_jobs=32).workers == 1


def test_capped_n_jobs_is_reported(monkeypatch):
    monkeypatch.setenv("QFLOW_MAX_WORKERS", "1")
    plan = plan_hpo(SPACE, None, {**TRAIN, "n_jobs": 32})
    assert "n_jobs=32 capped at 1 worker processes (the machine's cores, or QFLOW_MAX_WORKERS)" in plan.diagnostics
    assert worker_processes() == []


NEEDS_WORKERS = pytest.mark.skipif(not os.path.isdir("/proc/self") or len(os.sched_getaffinity(0)) < 2,
                                   reason="needs /proc and 2 cores")


@NEEDS_WORKERS
def test_workers_are_reaped_when_the_run_ends():
    alive: list[list[int]] = []

    def progress(fraction: float, message: str) -> None:
        if message.startswith("trial 2/"):  # after the first parallel batch: the pool is up
            alive.append(worker_processes())

    plan = plan_hpo(SPACE, None, TRAIN, progress=progress)
    assert plan.metrics["n_evaluations"] == 4 and len(alive[0]) == 2
    assert worker_processes() == []


@NEEDS_WORKERS
def test_workers_are_killed_when_the_run_is_cancelled():
    objective = Objective("train", X=load_iris().data, y=load_iris().target, cv_folds=3)
    alive: list[int] = []
    with pytest.raises(Cancelled), Evaluator(objective, n_jobs=2) as evaluate_batch:
        evaluate_batch([{"max_depth": 2, "n_estimators": 5}, {"max_depth": 3, "n_estimators": 5}], [1, 2])
        alive = worker_processes()
        raise Cancelled("the progress callback, on Cancel")
    assert len(alive) == 2 and worker_processes() == []


def test_dataset_copies_in_the_workers_count_against_the_decoded_bytes_limit(monkeypatch):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no worker copies")
    monkeypatch.setenv("QFLOW_MAX_DECODED_MB", "0.001")
    data = pd.DataFrame({"a": range(200), "b": [i % 3 for i in range(200)], "target": [i % 2 for i in range(200)]})
    with pytest.raises(LimitExceededError, match=r"data.csv: \(the dataset copied into 2 worker processes\): over the decoded_bytes"):
        plan_hpo(SPACE, None, TRAIN, dataset=data, digests=[digest_frame(data, "dataset", "data.csv")])
    assert worker_processes() == []


@pytest.mark.parametrize(("spec", "problem"), [
    ({"kind": "int", "low": 0, "high": 1e26}, "parameters.n.high: integer bound too large"),
    ({"kind": "int", "low": 0, "high": 10**400}, "parameters.n.high: number too large; expected at most 2**53"),
    ({"kind": "int", "low": 0, "high": 10**5000}, "parameters.n.high: number too large"),
    ({"kind": "float", "low": -1e308, "high": 1e308}, "parameters.n.bounds: range too wide to search"),
    ({"kind": "float", "low": 0, "high": float("inf")}, "parameters.n.high: not a finite number"),
])
def test_absurd_bounds_are_input_errors(spec, problem):
    with pytest.raises(InputError) as info:
        parse_space({"parameters": {"n": spec}}, "space.yaml")
    assert info.value.message.startswith(f"space.yaml: {problem}") and len(info.value.message) < 300


def test_history_objectives_too_large_to_model_are_rejected_rows():
    space = {"x": {"kind": "float", "low": 0, "high": 1}}
    history = pd.DataFrame({"x": [0.1, 0.5, 0.9, 0.3, 0.7, 0.2], "objective": [1e308, -1e308, 1.0, 2.0, 1e300, 3.0]})
    plan = plan_hpo(space, history, {"suggest": 2})
    assert plan.metrics["n_history_used"] == 3 and plan.metrics["n_history_rejected"] == 3
    assert plan.result["history_rejected"][0] == {"row": 0, "reason": "objective 1e+308 is beyond +-1e+100"}
    assert all(0.0 <= s["x"] <= 1.0 for s in plan.result["suggestions"])
