"""Energy inputs and config: parse once, validate once, then trust.

Three inputs, each checked here and nowhere else (the schedulers, the
predictor and the cap chooser take the parsed objects and assume they are
valid):

* telemetry: a table with ``timestamp``, ``node``, ``gpu``, ``power_w`` and
  optionally ``utilization`` (0..1, or 0..100 %), ``sm_clock_mhz``,
  ``temperature_c``, ``job_id`` -> :func:`parse_telemetry`.
* topology: ``nodes`` (``id``, ``gpus``, clocks and power limits), optional
  ``links`` and cluster ``power_budget_w`` -> :func:`parse_topology`.
* jobs: ``{"jobs": [{"id", "duration", "power_w"?, "deps"?, "node"?, "gpus"?}]}``
  -> :func:`parse_jobs` (durations in slots; cycles refused).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
import numpy as np
import pandas as pd
from pydantic import Field

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.io import bounded_carry
from qflow.core.limits import check_limit

__all__ = [
    "EnergyConfig",
    "EnergyInputs",
    "JobSet",
    "Topology",
    "TELEMETRY_REQUIRED",
    "parse_jobs",
    "parse_telemetry",
    "parse_topology",
]

#: Columns every telemetry table must have.
TELEMETRY_REQUIRED = ("timestamp", "node", "gpu", "power_w")
#: Optional numeric telemetry columns.
TELEMETRY_NUMERIC = ("utilization", "sm_clock_mhz", "temperature_c")
#: Largest plausible value per telemetry column (one GPU's row): anything above is a unit mix-up or corrupt data.
TELEMETRY_MAX = {"power_w": 100_000.0, "utilization": 100.0, "sm_clock_mhz": 100_000.0, "temperature_c": 1_000.0}
#: Longest job and largest slot count anything may declare (the config's horizon has the same cap).
MAX_SLOTS = 100_000
#: Plausibility caps of topology and job numbers: beyond these a value is a typo or hostile, not hardware.
MAX_GPUS_PER_NODE = 4096
MAX_CLOCK_MHZ = 100_000.0
MAX_GPU_POWER_W = 100_000.0
MAX_POWER_W = 1e9
#: Longest node, job or accelerator id, characters.
MAX_ID_CHARS = 200


class EnergyConfig(QflowConfig):
    """Toggles and settings of the energy planner (page widgets, CLI flags, API form).

    With ``qaoa_scheduling``, ``gnn_prediction`` and ``meta_learning`` all off
    the plan is the simple scheduler that treats each node independently.
    """

    qaoa_scheduling: bool = Field(False, description="Refine run-now/defer decisions at the peak slots with QAOA (each window also solved exactly; only improvements applied).")
    gnn_prediction: bool = Field(True, description="Train the GraphSAGE power predictor and schedule cluster-wide with the power-aware list scheduler.")
    meta_learning: bool = Field(False, description="A controller picks, per window, the greedy heuristic or QAOA from their recent errors.")
    power_budget_w: float = Field(0.0, ge=0, le=1e9, description="Cluster power budget for the jobs, W; 0 = the topology's power_budget_w (none: minimise the peak only).")
    horizon: int = Field(0, ge=0, le=100_000, description="Deadline for every job, slots; 0 = auto: 1.5 x the ASAP makespan, extended if the budget needs more.")
    slot_hours: float = Field(1.0, gt=0, le=24, description="Length of one scheduling slot, hours.")
    max_qubits: int = Field(16, ge=2, le=20, description="Largest QAOA window (one qubit per job decision).")
    qaoa_layers: int = Field(2, ge=1, le=6, description="QAOA depth p.")
    qaoa_windows: int = Field(3, ge=1, le=32, description="How many peak-slot windows QAOA (or the controller) works on.")
    qaoa_steps: int = Field(30, ge=1, le=500, description="Adam steps per QAOA window at most.")
    quantum_time_budget_s: float = Field(60.0, gt=0, le=3600, description="Wall time for all QAOA circuits of one plan, s.")
    gnn_steps: int = Field(300, ge=10, le=5000, description="Adam steps training the GNN (full batch, CPU).")
    gnn_hidden: int = Field(16, ge=4, le=256, description="Hidden width of the GraphSAGE layers.")
    history_window: int = Field(4, ge=1, le=48, description="Telemetry intervals of history each prediction sees.")
    test_fraction: float = Field(0.2, ge=0.05, le=0.5, description="Share of the telemetry's tail held out for the walk-forward evaluation.")
    objective: Literal["min_makespan", "min_peak"] = Field("min_makespan", description="With a budget: min_makespan = the shortest schedule that never exceeds it (peak flattening only breaks ties); min_peak = the lowest peak within the horizon. Without a budget the peak is minimised.")
    makespan_iterations: int = Field(24, ge=0, le=500, description="Randomised priority orders the min_makespan search tries besides the fixed rules (each improved by forward-backward passes).")
    telemetry_format: Literal["auto", "qflow", "prometheus_json", "prometheus_text", "nvidia_smi", "dcgmi_dmon"] = Field("auto", description="Telemetry file format; auto detects it from the content.")
    telemetry_interval_s: float = Field(0.0, ge=0, le=86_400, description="dcgmi dmon only: seconds between samples (its --delay / 1000); required for that format.")
    telemetry_start_s: float = Field(0.0, ge=0, le=9.0e9, description="dcgmi dmon only: time of the first sample, unix seconds (0: 1970-01-01, times then relative).")
    max_slowdown: float = Field(1.15, ge=1.0, le=3.0, description="Clock caps may slow jobs by at most this factor for energy (power limits may need more).")
    power_levels: Literal[2, 4] = Field(2, description="Peak-slot windows: 2 = one qubit per job (run now or defer one slot); 4 = two qubits per job choosing one of four clock levels (slowdown 1 to max_slowdown, power from the fitted power-vs-clock model).")


@dataclass(frozen=True)
class Topology:
    """A validated cluster: per-node arrays of shape (m,) in ``node_ids`` order.

    Attributes
    ----------
    node_ids : list of str
    gpus : ndarray of int, shape (m,)
    min_clock_mhz, max_clock_mhz : ndarray of float, shape (m,)
    current_clock_mhz : ndarray of float, shape (m,)
        The clock the node runs at now (NaN: read from telemetry).
    gpu_power_limit_w, gpu_min_power_w : ndarray of float, shape (m,)
        Per-GPU power-limit range (what ``nvidia-smi -pl`` accepts).
    node_power_limit_w : ndarray of float, shape (m,)
        Most a node may draw (default: gpus x gpu_power_limit_w).
    node_budget_w : ndarray of float, shape (m,)
        Per-node job power budget (NaN: a share of the cluster budget).
    power_budget_w : float or None
        Cluster budget for the jobs' power, W.
    links : list of (int, int)
        Undirected node index pairs.
    quantum_accelerators : list of dict
        Passed through to the plan.
    current_power_limit_w : ndarray of float, shape (m,)
        Per-GPU power limit set now (the restore script sets it back).
    locked_clocks_mhz : list of (min, max) or None
        SM clock range locked now (None: not locked; restore unlocks).
    """

    node_ids: list[str]
    gpus: np.ndarray
    min_clock_mhz: np.ndarray
    max_clock_mhz: np.ndarray
    current_clock_mhz: np.ndarray
    gpu_power_limit_w: np.ndarray
    gpu_min_power_w: np.ndarray
    node_power_limit_w: np.ndarray
    node_budget_w: np.ndarray
    power_budget_w: float | None
    links: list[tuple[int, int]]
    quantum_accelerators: list[dict[str, Any]] = field(default_factory=list)
    current_power_limit_w: np.ndarray | None = None
    locked_clocks_mhz: list[tuple[float, float] | None] | None = None

    def __post_init__(self) -> None:
        # Topologies built in code may leave the current settings out: the limit is then the device's, clocks unlocked.
        if self.current_power_limit_w is None:
            object.__setattr__(self, "current_power_limit_w", self.gpu_power_limit_w.copy())
        if self.locked_clocks_mhz is None:
            object.__setattr__(self, "locked_clocks_mhz", [None] * len(self.node_ids))

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.node_ids)}


@dataclass(frozen=True)
class JobSet:
    """Validated jobs, arrays of shape (n,) in file order.

    Attributes
    ----------
    ids : list of str
    duration : ndarray of int
        Slots.
    power_w : ndarray of float
        NaN where the file gave none (the planner estimates it).
    gpus : ndarray of int
        GPUs the job occupies on its node.
    node : ndarray of int
        Required node index, -1 for any.
    deps : list of list of int
        Indices of the jobs that must end before each starts.
    """

    ids: list[str]
    duration: np.ndarray
    power_w: np.ndarray
    gpus: np.ndarray
    node: np.ndarray
    deps: list[list[int]]

    @property
    def n_jobs(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EnergyInputs:
    """The three parsed inputs together."""

    telemetry: pd.DataFrame
    topology: Topology
    jobs: JobSet
    telemetry_info: dict[str, Any] = field(default_factory=dict)


def _number(value: Any, source: str, where: str, *, low: float | None = None, strict_low: bool = False,
            integer: bool = False, expected: str = "a number", high: float = MAX_POWER_W) -> float:
    """``value`` as a finite float in ``[low, high]`` (huge integers refused before any conversion)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(source, where, "not a number", expected, value)
    if isinstance(value, int) and abs(value) > 10**15:
        raise InputError(source, where, "implausibly large", f"{expected}, at most {high:g}",
                         f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits" if abs(value) > 10**30 else value)
    x = float(value)
    if not math.isfinite(x):
        raise InputError(source, where, "not finite", expected, value)
    if integer and x != round(x):
        raise InputError(source, where, "not an integer", expected, value)
    if low is not None and (x <= low if strict_low else x < low):
        raise InputError(source, where, "out of range", expected, value)
    if x > high:
        raise InputError(source, where, "implausibly large", f"{expected}, at most {high:g}", value)
    return x


def _identifier(value: Any, source: str, where: str) -> str:
    """A node, job or accelerator id: text or a whole number, at most :data:`MAX_ID_CHARS` characters."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(source, where, "wrong type", f"a text id of at most {MAX_ID_CHARS} characters", type(value).__name__)
    if isinstance(value, int) and abs(value).bit_length() > 3 * MAX_ID_CHARS:
        raise InputError(source, where, "too long", f"a text id of at most {MAX_ID_CHARS} characters", "a huge integer")
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        raise InputError(source, where, "too long", f"a text id of at most {MAX_ID_CHARS} characters", f"{len(text)} characters")
    return text


def parse_topology(data: Mapping[str, Any], source: str = "topology") -> Topology:
    """Validate a topology mapping.

    ``nodes``: list of ``{id, gpus, min_clock_mhz, max_clock_mhz,
    gpu_power_limit_w, gpu_min_power_w?, power_limit_w?, power_budget_w?,
    current_clock_mhz?}``; ``links``: ``[{source, target}]`` (optional);
    ``power_budget_w``: cluster budget (optional); ``quantum_accelerators``
    (optional, carried).

    >>> t = parse_topology({"nodes": [{"id": "a", "gpus": 2, "min_clock_mhz": 500, "max_clock_mhz": 1500,
    ...                                "gpu_power_limit_w": 400}]})
    >>> t.node_ids, int(t.gpus[0]), float(t.node_power_limit_w[0])
    (['a'], 2, 800.0)
    """
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise InputError(source, "nodes", "missing or empty", "a non-empty list of nodes", type(nodes).__name__ if nodes is not None else None)
    ids: list[str] = []
    cols: dict[str, list[float]] = {k: [] for k in ("gpus", "min", "max", "cur", "plim", "pmin", "nlim", "nbud", "climit")}
    locked: list[tuple[float, float] | None] = []
    for i, node in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(node, Mapping) or "id" not in node:
            raise InputError(source, where, "wrong shape", "an object with an id", node)
        node_id = _identifier(node["id"], source, f"{where}.id")
        if node_id in ids:
            raise InputError(source, f"{where}.id", "duplicate node id", "distinct ids", node_id)
        ids.append(node_id)
        gpus = _number(node.get("gpus", 8), source, f"{where}.gpus", low=1, integer=True, expected="an integer >= 1", high=MAX_GPUS_PER_NODE)
        lo = _number(node.get("min_clock_mhz"), source, f"{where}.min_clock_mhz", low=0, strict_low=True, expected="a clock > 0 MHz",
                     high=MAX_CLOCK_MHZ)
        hi = _number(node.get("max_clock_mhz"), source, f"{where}.max_clock_mhz", low=0, strict_low=True, expected="a clock > 0 MHz",
                     high=MAX_CLOCK_MHZ)
        if lo >= hi:
            raise InputError(source, f"{where}.min_clock_mhz", "not below max_clock_mhz", "min_clock_mhz < max_clock_mhz", f"{lo:g} >= {hi:g}")
        plim = _number(node.get("gpu_power_limit_w"), source, f"{where}.gpu_power_limit_w", low=0, strict_low=True, expected="a power > 0 W",
                       high=MAX_GPU_POWER_W)
        pmin = _number(node.get("gpu_min_power_w", 0.3 * plim), source, f"{where}.gpu_min_power_w", low=0, expected="a power >= 0 W",
                       high=MAX_GPU_POWER_W)
        if pmin > plim:
            raise InputError(source, f"{where}.gpu_min_power_w", "above gpu_power_limit_w", "gpu_min_power_w <= gpu_power_limit_w", pmin)
        cur = node.get("current_clock_mhz")
        cur_value = math.nan
        if cur is not None:
            cur_value = _number(cur, source, f"{where}.current_clock_mhz", low=0, strict_low=True, expected=f"a clock in [{lo:g}, {hi:g}] MHz",
                                high=MAX_CLOCK_MHZ)
            if not lo <= cur_value <= hi:
                raise InputError(source, f"{where}.current_clock_mhz", "outside the clock range", f"a clock in [{lo:g}, {hi:g}] MHz", cur)
        nlim = _number(node.get("power_limit_w", gpus * plim), source, f"{where}.power_limit_w", low=0, strict_low=True, expected="a power > 0 W")
        nbud = node.get("power_budget_w")
        nbud_value = math.nan if nbud is None else _number(nbud, source, f"{where}.power_budget_w", low=0, strict_low=True, expected="a power > 0 W")
        climit = _number(node.get("current_power_limit_w", plim), source, f"{where}.current_power_limit_w", low=pmin,
                         expected=f"a power in [{pmin:g}, {plim:g}] W", high=plim)
        locked.append(_locked_clocks(node.get("locked_clocks_mhz"), source, f"{where}.locked_clocks_mhz", lo, hi))
        for key, value in zip(cols, (gpus, lo, hi, cur_value, plim, pmin, nlim, nbud_value, climit), strict=True):
            cols[key].append(value)
    links = _parse_links(data.get("links") or [], {n: i for i, n in enumerate(ids)}, source)
    budget = data.get("power_budget_w")
    budget_value = None if budget is None else _number(budget, source, "power_budget_w", low=0, strict_low=True, expected="a power > 0 W")
    quantum = bounded_carry(data.get("quantum_accelerators") or [], source, "quantum_accelerators")
    if not isinstance(quantum, list):
        raise InputError(source, "quantum_accelerators", "wrong type", "a list", type(quantum).__name__)
    arr = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    return Topology(
        node_ids=ids, gpus=arr["gpus"].astype(int), min_clock_mhz=arr["min"], max_clock_mhz=arr["max"],
        current_clock_mhz=arr["cur"], gpu_power_limit_w=arr["plim"], gpu_min_power_w=arr["pmin"],
        node_power_limit_w=arr["nlim"], node_budget_w=arr["nbud"], power_budget_w=budget_value,
        links=sorted(set(links)), quantum_accelerators=[dict(q) if isinstance(q, Mapping) else {"name": str(q)} for q in quantum],
        current_power_limit_w=arr["climit"], locked_clocks_mhz=locked,
    )


def _parse_links(raw_links: Any, index: Mapping[str, int], source: str) -> list[tuple[int, int]]:
    """``[{source, target}]`` node ids as ``(low, high)`` node-index pairs; self-links dropped."""
    if not isinstance(raw_links, list):
        raise InputError(source, "links", "wrong type", "a list of {source, target}", type(raw_links).__name__)
    links: list[tuple[int, int]] = []
    for i, link in enumerate(raw_links):
        if not isinstance(link, Mapping) or "source" not in link or "target" not in link:
            raise InputError(source, f"links[{i}]", "wrong shape", "an object with source and target", link)
        ends = [_identifier(link[end], source, f"links[{i}].{end}") for end in ("source", "target")]
        for end, name in zip(("source", "target"), ends, strict=True):
            if name not in index:
                raise InputError(source, f"links[{i}].{end}", "unknown node", "a node id from nodes", name)
        a, b = index[ends[0]], index[ends[1]]
        if a != b:
            links.append((min(a, b), max(a, b)))
    return links


def _locked_clocks(value: Any, source: str, where: str, lo: float, hi: float) -> tuple[float, float] | None:
    """``[min, max]`` MHz within the node's clock range, or None."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(source, where, "wrong shape", "[min, max] in MHz", value)
    a = _number(value[0], source, f"{where}[0]", low=lo, expected=f"a clock in [{lo:g}, {hi:g}] MHz", high=hi)
    b = _number(value[1], source, f"{where}[1]", low=a, expected=f"a clock in [{a:g}, {hi:g}] MHz", high=hi)
    return (a, b)


def parse_jobs(data: Mapping[str, Any], topology: Topology, source: str = "jobs") -> JobSet:
    """Validate ``{"jobs": [...]}`` against the topology; refuse unknown deps and cycles.

    >>> topo = parse_topology({"nodes": [{"id": "a", "gpus": 2, "min_clock_mhz": 500, "max_clock_mhz": 1500,
    ...                                   "gpu_power_limit_w": 400}]})
    >>> parse_jobs({"jobs": [{"id": "x", "duration": 1, "deps": ["y"]}, {"id": "y", "duration": 1, "deps": ["x"]}]}, topo)
    Traceback (most recent call last):
    ...
    qflow.core.errors.InputError: jobs: jobs.deps: cyclic dependencies (x -> y -> x, 2 jobs); expected a DAG (no job may depend on itself through others)
    """
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise InputError(source, "jobs", "missing or empty", "a non-empty list of jobs", type(jobs).__name__ if jobs is not None else None)
    # Each job takes at least one slot: refuse a job count whose smallest schedule is already over the limit.
    check_limit(len(jobs) * (len(jobs) + 1), "energy_job_slots", source, "jobs (jobs x total duration slots, at least jobs^2)")
    node_index = topology.index()
    ids: list[str] = []
    seen: set[str] = set()
    for i, job in enumerate(jobs):
        if not isinstance(job, Mapping) or "id" not in job:
            raise InputError(source, f"jobs[{i}]", "wrong shape", "an object with an id and a duration", job)
        job_id = _identifier(job["id"], source, f"jobs[{i}].id")
        if job_id in seen:
            raise InputError(source, f"jobs[{i}].id", "duplicate job id", "distinct ids", job_id)
        ids.append(job_id)
        seen.add(job_id)
    index = {j: i for i, j in enumerate(ids)}
    n = len(ids)
    duration = np.zeros(n, dtype=int)
    power = np.full(n, np.nan)
    gpus = np.ones(n, dtype=int)
    node = np.full(n, -1, dtype=int)
    deps: list[list[int]] = []
    for i, job in enumerate(jobs):
        where = f"jobs[{i}]"
        if "duration" not in job:
            raise InputError(source, f"{where}.duration", "missing field", "a whole number of slots >= 1")
        duration[i] = int(_number(job["duration"], source, f"{where}.duration", low=1, integer=True,
                                  expected="a whole number of slots >= 1", high=MAX_SLOTS))
        if job.get("power_w") is not None:
            power[i] = _number(job["power_w"], source, f"{where}.power_w", low=0, strict_low=True, expected="a power > 0 W")
        if job.get("node") is not None:
            node_id = _identifier(job["node"], source, f"{where}.node")
            if node_id not in node_index:
                raise InputError(source, f"{where}.node", "unknown node", "a node id from the topology", node_id)
            node[i] = node_index[node_id]
        if job.get("gpus") is not None:
            gpus[i] = int(_number(job["gpus"], source, f"{where}.gpus", low=1, integer=True, expected="an integer >= 1",
                                  high=MAX_GPUS_PER_NODE))
        most = int(topology.gpus[node[i]]) if node[i] >= 0 else int(topology.gpus.max())
        if gpus[i] > most:
            raise InputError(source, f"{where}.gpus", "more GPUs than its node has", f"at most {most}", int(gpus[i]))
        raw_deps = job.get("deps") or []
        if not isinstance(raw_deps, list):
            raise InputError(source, f"{where}.deps", "wrong type", "a list of job ids", raw_deps)
        mine = []
        for dep in raw_deps:
            dep_id = _identifier(dep, source, f"{where}.deps")
            if dep_id not in index:
                raise InputError(source, f"{where}.deps", "unknown job", "ids of jobs in this file", dep_id)
            mine.append(index[dep_id])
        deps.append(sorted(set(mine)))
    # Every scheduler pass keeps (nodes, slots) arrays and places each job over them: bound the work before any of it.
    slots = int(duration.sum()) + 1
    check_limit(n * slots, "energy_job_slots", source, "jobs (jobs x total duration slots)")
    check_limit(topology.n_nodes * slots, "energy_job_slots", source, "jobs (topology nodes x total duration slots)")
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((d, i) for i, ds in enumerate(deps) for d in ds)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = [ids[cycle[0][0]], *(ids[b] for _, b in cycle)]
        path = " -> ".join(names if len(names) <= 6 else [*names[:3], "...", *names[-2:]])
        raise InputError(source, "jobs.deps", f"cyclic dependencies ({path}, {len(cycle)} jobs)",
                         "a DAG (no job may depend on itself through others)")
    return JobSet(ids=ids, duration=duration, power_w=power, gpus=gpus, node=node, deps=deps)


def parse_telemetry(frame: pd.DataFrame, topology: Topology, source: str = "telemetry") -> pd.DataFrame:
    """Validate a telemetry table; returns a clean copy sorted by time.

    Columns out: ``timestamp`` (datetime64), ``node``, ``gpu`` (text),
    ``power_w`` (float) and the optional numeric columns that were given;
    ``utilization`` is scaled to 0..1 when given in percent.
    """
    missing = [c for c in TELEMETRY_REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(source, missing[0], "missing column", f"columns {', '.join(TELEMETRY_REQUIRED)}", ", ".join(map(str, frame.columns[:8])))
    out = pd.DataFrame({"node": frame["node"].astype(str).str.strip(), "gpu": frame["gpu"].astype(str).str.strip()})
    try:
        out["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise InputError(source, "timestamp", "not a timestamp", "ISO 8601 times (2026-01-01T00:00:00Z)", str(exc).splitlines()[0]) from None
    if out["timestamp"].isna().any():
        row = int(np.flatnonzero(out["timestamp"].isna().to_numpy())[0])
        raise InputError(source, f"timestamp[row {row}]", "missing value", "a time on every row")
    for column in ("power_w", *TELEMETRY_NUMERIC):
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = (values.isna() & frame[column].notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(source, f"{column}[row {row}]", "not a number", "a number", frame[column].iloc[row])
        if column == "power_w" and values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise InputError(source, f"{column}[row {row}]", "missing value", "a number on every row")
        infinite = np.isinf(values.to_numpy(float))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise InputError(source, f"{column}[row {row}]", "not finite", "a finite number", frame[column].iloc[row])
        if (values < 0).any():
            row = int(np.flatnonzero((values < 0).to_numpy())[0])
            raise InputError(source, f"{column}[row {row}]", "negative", "a number >= 0", frame[column].iloc[row])
        if (values > TELEMETRY_MAX[column]).any():
            row = int(np.flatnonzero((values > TELEMETRY_MAX[column]).to_numpy())[0])
            raise InputError(source, f"{column}[row {row}]", "implausibly large", f"at most {TELEMETRY_MAX[column]:g} per GPU row",
                             frame[column].iloc[row])
        out[column] = values.astype(float)
    if "utilization" in out and out["utilization"].max() > 1.0:
        out["utilization"] = out["utilization"] / 100.0  # given in percent
    if "job_id" in frame.columns:
        out["job_id"] = frame["job_id"].where(frame["job_id"].notna(), "").astype(str)
    known = set(topology.node_ids)
    unknown = sorted(set(out["node"]) - known)
    if unknown:
        raise InputError(source, "node", "node not in the topology", "node ids from the topology", unknown[0])
    if out["timestamp"].nunique() < 3:
        raise InputError(source, "timestamp", "too short", "at least 3 distinct timestamps", int(out["timestamp"].nunique()))
    return out.sort_values(["timestamp", "node", "gpu"], kind="stable").reset_index(drop=True)
