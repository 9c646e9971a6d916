"""Sample energy inputs (fixed seed): 5 days of telemetry of an 8-node / 64-GPU cluster and a job DAG.

Telemetry, every 30 minutes per GPU: single-node jobs arrive more often in the
daytime (diurnal load); multi-node jobs start on a lead node and on its rack
neighbours one interval later (so a node's neighbours say something about
its next interval); jobs alternate compute (utilization 0.85-1) and
checkpoint/eval phases (0.3-0.5); each job runs at one of several DVFS
clocks; per-GPU power follows ``P_idle + k u f^3`` with per-node constants
plus noise. Jobs: 30 workflows (prep -> train -> finetune -> 2 evals ->
export -> report) and independent jobs; a few pinned to a node, a few
without power (the planner estimates it). The cluster budget sits between
the power-aware list scheduler's peak and the ASAP peak.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["make_jobs", "make_telemetry", "make_topology", "write_sample"]

NODES = [f"node{i}" for i in range(8)]
GPUS = 8
RACKS = [NODES[:4], NODES[4:]]
MAX_CLOCK, MIN_CLOCK, IDLE_CLOCK = 1980.0, 690.0, 345.0
CLOCKS = np.array([1980.0, 1830.0, 1680.0, 1530.0, 1410.0])
CLOCK_P = np.array([0.55, 0.15, 0.12, 0.1, 0.08])


def make_topology() -> dict:
    """Two racks of 4 nodes (400 Gb/s inside a rack, 200 Gb/s between rack partners); H100-like limits."""
    links = [{"source": a, "target": b, "bandwidth_gbps": 400} for rack in RACKS for i, a in enumerate(rack) for b in rack[i + 1:]]
    links += [{"source": RACKS[0][i], "target": RACKS[1][i], "bandwidth_gbps": 200} for i in range(4)]
    nodes = [{"id": n, "gpus": GPUS, "min_clock_mhz": MIN_CLOCK, "max_clock_mhz": MAX_CLOCK, "gpu_power_limit_w": 700.0,
              "gpu_min_power_w": 200.0, "power_limit_w": 6200.0} for n in NODES]
    return {"nodes": nodes, "links": links, "power_budget_w": None,
            "quantum_accelerators": [{"id": "qpu0", "kind": "simulator", "attached_to": "node0"}]}


def make_telemetry(seed: int = 0, days: int = 5, step_minutes: int = 30) -> pd.DataFrame:
    """One row per GPU and interval: timestamp, node, gpu, power_w, utilization, sm_clock_mhz, temperature_c, job_id."""
    rng = np.random.default_rng(seed)
    steps = days * 24 * 60 // step_minutes
    per_hour = 60 / step_minutes
    idle_w = rng.normal(65, 4, len(NODES))
    k = (640 - idle_w) / (MAX_CLOCK / 1000) ** 3 * rng.uniform(0.95, 1.05, len(NODES))
    busy_until = np.zeros((len(NODES), GPUS), dtype=int)  # step at which each GPU frees up
    job_of = np.full((len(NODES), GPUS), "", dtype=object)
    clock_of = np.full((len(NODES), GPUS), IDLE_CLOCK)
    phase0 = np.zeros((len(NODES), GPUS), dtype=int)
    pending: list[tuple[int, int, list[int], int, str, float]] = []  # (start step, node, gpus, end, job, clock)
    rows = []
    start = pd.Timestamp("2026-11-20T00:00:00Z")
    counter = 0
    for t in range(steps):
        hour = (t / per_hour) % 24
        daytime = 0.5 + 0.5 * np.sin(2 * np.pi * (hour - 8) / 24)  # peaks mid-afternoon
        for ni in range(len(NODES)):
            free = np.flatnonzero(busy_until[ni] <= t)
            if free.size and rng.random() < 0.05 + 0.2 * daytime:
                size = int(rng.choice([1, 2, 4, 8], p=[0.35, 0.3, 0.25, 0.1]))
                if size <= free.size:
                    gpus = free[:size].tolist()
                    counter += 1
                    end = t + int(rng.integers(2, 17))
                    busy_until[ni, gpus] = end
                    pending.append((t, ni, gpus, end, f"t{counter:04d}", float(rng.choice(CLOCKS, p=CLOCK_P))))
        for rack in RACKS:
            if rng.random() < 0.06 + 0.24 * daytime:
                members = [NODES.index(n) for n in rng.permutation(rack)[: int(rng.integers(2, 5))]]
                if all((busy_until[ni] <= t).sum() >= 4 for ni in members):
                    counter += 1
                    end = t + int(rng.integers(6, 25))
                    clock = float(rng.choice(CLOCKS, p=CLOCK_P))
                    for pos, ni in enumerate(members):
                        gpus = np.flatnonzero(busy_until[ni] <= t)[:4].tolist()
                        pending.append((t + (1 if pos else 0), ni, gpus, end, f"m{counter:04d}", clock))
                        busy_until[ni, gpus] = end  # reserved from now so nothing else takes them
        for item in [p for p in pending if p[0] == t]:
            _, ni, gpus, end, job, clock = item
            busy_until[ni, gpus] = end
            job_of[ni, gpus] = job
            clock_of[ni, gpus] = clock
            phase0[ni, gpus] = t
        pending = [p for p in pending if p[0] > t]
        stamp = (start + pd.Timedelta(minutes=step_minutes * t)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for ni, node in enumerate(NODES):
            for g in range(GPUS):
                running = busy_until[ni, g] > t and job_of[ni, g] != ""
                if running:
                    checkpoint = (t - phase0[ni, g]) % 4 == 3
                    u = rng.uniform(0.3, 0.5) if checkpoint else rng.uniform(0.85, 1.0)
                    f = clock_of[ni, g] + rng.normal(0, 8)
                else:
                    u, f = rng.uniform(0.0, 0.03), IDLE_CLOCK + rng.normal(0, 5)
                    job_of[ni, g] = ""
                power = float(np.clip(idle_w[ni] + k[ni] * u * (f / 1000) ** 3 + rng.normal(0, 12), 30, 700))
                rows.append((stamp, node, f"gpu{g}", round(power, 1), round(u, 3), round(f, 0),
                             round(28 + 0.065 * power + rng.normal(0, 1.5), 1), job_of[ni, g] if running else ""))
    return pd.DataFrame(rows, columns=["timestamp", "node", "gpu", "power_w", "utilization", "sm_clock_mhz", "temperature_c", "job_id"])


def make_jobs(seed: int = 0, workflows: int = 30, independent: int = 40) -> dict:
    """A DAG of ``7 * workflows + independent`` jobs with durations in slots and power in W."""
    rng = np.random.default_rng([seed, 1])
    jobs = []

    def add(job_id: str, duration: int, gpus: int, per_gpu: float, deps: list[str]) -> None:
        job = {"id": job_id, "duration": int(duration), "gpus": int(gpus), "power_w": round(gpus * per_gpu, 1), "deps": deps}
        if rng.random() < 0.08:
            job["node"] = NODES[int(rng.integers(len(NODES)))]
        if rng.random() < 0.05:
            del job["power_w"]  # estimated by the planner from telemetry
        jobs.append(job)

    for w in range(workflows):
        p = f"wf{w:02d}"
        add(f"{p}-prep", rng.integers(1, 3), 1, rng.uniform(250, 380), [])
        add(f"{p}-train", rng.integers(3, 9), int(rng.choice([4, 8])), rng.uniform(520, 650), [f"{p}-prep"])
        add(f"{p}-finetune", rng.integers(2, 5), int(rng.choice([2, 4])), rng.uniform(480, 620), [f"{p}-train"])
        add(f"{p}-eval-a", 1, int(rng.choice([1, 2])), rng.uniform(380, 500), [f"{p}-finetune"])
        add(f"{p}-eval-b", 1, int(rng.choice([1, 2])), rng.uniform(380, 500), [f"{p}-finetune"])
        add(f"{p}-export", 1, 1, rng.uniform(200, 300), [f"{p}-eval-a", f"{p}-eval-b"])
        add(f"{p}-report", 1, 1, rng.uniform(150, 250), [f"{p}-export"])
    for i in range(independent):
        add(f"batch{i:02d}", rng.integers(1, 7), int(rng.choice([1, 2, 4, 8])), rng.uniform(300, 650), [])
    return {"jobs": jobs}


def _budget_between_list_and_asap(jobs: dict, topology: dict) -> float:
    """A round cluster budget a third of the way from the list scheduler's best peak to the ASAP peak."""
    from qflow.energy._schedule import Problem, asap_schedule, list_schedule, power_profile

    spec = jobs["jobs"]
    ids = {j["id"]: i for i, j in enumerate(spec)}
    nodes = {n["id"]: i for i, n in enumerate(topology["nodes"])}
    power = np.array([j.get("power_w", 600.0 * j["gpus"]) for j in spec])
    problem = Problem(np.array([j["duration"] for j in spec]), power, np.array([j["gpus"] for j in spec]),
                      np.array([nodes.get(j.get("node"), -1) for j in spec]), [[ids[d] for d in j["deps"]] for j in spec],
                      np.array([n["gpus"] for n in topology["nodes"]]))
    asap = asap_schedule(problem)
    horizon = int(np.ceil(1.5 * asap.makespan(problem)))
    best = list_schedule(problem, horizon, None, True)
    asap_peak = float(power_profile(problem, asap).max())
    return float(np.ceil((best.cap_w + (asap_peak - best.cap_w) / 3) / 500.0) * 500.0)


#: dcgm-exporter metric per qflow column, and the factor back to the exporter's unit (utilization: 0..1 -> %).
DCGM_EXPORT = {"power_w": ("DCGM_FI_DEV_POWER_USAGE", 1.0), "utilization": ("DCGM_FI_DEV_GPU_UTIL", 100.0),
               "sm_clock_mhz": ("DCGM_FI_DEV_SM_CLOCK", 1.0), "temperature_c": ("DCGM_FI_DEV_GPU_TEMP", 1.0)}


def to_prometheus_range(telemetry: pd.DataFrame, step_s: int = 1800) -> dict:
    """The telemetry as Prometheus would answer ``query_range`` for the four dcgm-exporter metrics.

    Labels as dcgm-exporter writes them (``gpu``, ``UUID``, ``device``,
    ``modelName``, ``Hostname``) plus Prometheus' ``instance`` and ``job``;
    values as strings, times in unix seconds; utilization back in percent.
    """
    seconds = (pd.to_datetime(telemetry["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    frame = telemetry.assign(t=seconds,
                             index=telemetry["gpu"].str.replace("gpu", "", regex=False))
    result = []
    for column, (metric, factor) in DCGM_EXPORT.items():
        for (node, gpu), rows in frame.groupby(["node", "index"], sort=True):
            n = NODES.index(node)
            labels = {"__name__": metric, "gpu": gpu, "UUID": f"GPU-{n:04x}{int(gpu):04x}-5e1f-4c8a-9d2b-{n * 8 + int(gpu):012x}",
                      "device": f"nvidia{gpu}", "modelName": "NVIDIA H100 80GB HBM3", "Hostname": node,
                      "instance": f"{node}:9400", "job": "dcgm-exporter"}
            values = [[int(t), f"{v * factor:g}"] for t, v in zip(rows["t"], rows[column].round(3), strict=True)]
            result.append({"metric": labels, "values": values})
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def write_sample(directory: str | Path, seed: int = 0) -> list[Path]:
    """Write ``telemetry.csv`` (15,360 rows, about 0.9 MB), ``telemetry_dcgm.json`` (the same telemetry as a
    Prometheus range query over dcgm-exporter metrics), ``topology.json`` and ``jobs.json`` (250 jobs)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    topology = make_topology()
    jobs = make_jobs(seed)
    topology["power_budget_w"] = _budget_between_list_and_asap(jobs, topology)
    paths = [out / "telemetry.csv", out / "telemetry_dcgm.json", out / "topology.json", out / "jobs.json"]
    telemetry = make_telemetry(seed)
    telemetry.to_csv(paths[0], index=False)
    paths[1].write_text(json.dumps(to_prometheus_range(telemetry), separators=(",", ":")) + "\n")
    paths[2].write_text(json.dumps(topology, indent=1) + "\n")
    paths[3].write_text(json.dumps(jobs, indent=1) + "\n")
    return paths
