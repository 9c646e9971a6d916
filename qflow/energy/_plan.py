"""``plan_energy``: the energy module's one entry point.

Stages: validate -> predict (persistence, ridge, GNN walk-forward) -> job
power estimates -> schedules (ASAP, per-node, cluster-wide list scheduler) ->
peak-slot windows (greedy, QAOA, meta-controller) -> clock caps -> plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.errors import InfeasibleError
from qflow.core.io import RawInput, digest_frame, digest_mapping, load_table, parse_mapping, read_input
from qflow.core.limits import check_limit
from qflow.core.models import ModelArtifact
from qflow.core.plan import InputDigest, Plan, QuantumReport, SolverReport
from qflow.core.qaoa import approximation_ratio, run_qaoa, solve_exact
from qflow.core.quantum import choose_device
from qflow.core.skeleton import PlanRun, input_sources, quantum_budget, quantum_step
from qflow.energy._apply import apply_commands, schedule_csv
from qflow.energy._caps import choose_caps, current_clocks, fit_power_models
from qflow.energy._levels import (
    LEVELS,
    LevelWindow,
    apply_levels,
    build_level_window,
    decode_levels,
    encode_levels,
    greedy_levels,
    level_model,
    level_slowdowns,
    level_window_cost,
)
from qflow.energy._makespan import budget_sweep, flatten_within, makespan_lower_bound, shortest_schedule
from qflow.energy._meta import WindowController
from qflow.energy._predict import build_node_series, estimate_job_power, evaluate_predictors
from qflow.energy._quantum import apply_window, build_window, greedy_bits, window_cost, window_ising
from qflow.energy._schedule import (
    Problem,
    Schedule,
    asap_schedule,
    check_schedule,
    gpu_usage,
    list_schedule,
    lower_bound_w,
    per_node_schedule,
    power_profile,
)
from qflow.energy._schemas import EnergyConfig, EnergyInputs, parse_jobs, parse_telemetry, parse_topology
from qflow.energy._telemetry import read_telemetry

__all__ = ["load_energy_inputs", "plan_energy"]

Progress = Callable[[float, str], None]
#: Auto horizon = this x the ASAP makespan (slack for flattening the peak).
AUTO_HORIZON_FACTOR = 1.5
#: Budgets in the makespan-against-peak sweep (plus the plan's own).
SWEEP_BUDGETS = 6
#: Seconds between progress reports from inside long loops.
HEARTBEAT_S = 0.25


def load_energy_inputs(telemetry: Any, topology: Any, jobs: Any, *, telemetry_name: str | None = None,
                       topology_name: str | None = None, jobs_name: str | None = None,
                       telemetry_options: Mapping[str, Any] | EnergyConfig | None = None) -> tuple[EnergyInputs, list[InputDigest]]:
    """Read and validate the three files (paths, bytes or uploads).

    Telemetry: qflow's CSV or JSON records (``{"telemetry": [...]}`` too), a
    Prometheus range-query answer or text scrapes of dcgm-exporter metrics,
    nvidia-smi CSV logs or ``dcgmi dmon`` output (see
    :mod:`qflow.energy._telemetry`); a list or tuple of sources is read file
    by file and concatenated (one nvidia-smi log per node, say).
    ``telemetry_options``: the config (or a mapping) with
    ``telemetry_format``, ``telemetry_interval_s`` and ``telemetry_start_s``,
    plus ``telemetry_node`` (a mapping key only: the node of per-node logs
    not named after their node). Topology: JSON or YAML; jobs: JSON or YAML ``{"jobs": [...]}``.

    Raises
    ------
    InputError
        Naming the file, the field (or series) and what was expected.
    """
    options = telemetry_options.model_dump() if isinstance(telemetry_options, EnergyConfig) else dict(telemetry_options or {})
    raw_topology = read_input(topology, topology_name)
    topo = parse_topology(parse_mapping(raw_topology), raw_topology.name)
    raw_jobs = read_input(jobs, jobs_name)
    job_set = parse_jobs(parse_mapping(raw_jobs), topo, raw_jobs.name)
    sources = list(telemetry) if isinstance(telemetry, list | tuple) else [telemetry]
    names = telemetry_name if isinstance(telemetry_name, list | tuple) else [telemetry_name] * len(sources)
    frames, raws, infos = [], [], []
    for source, name in zip(sources, names, strict=True):
        frame, raw, info = _read_telemetry_file(source, name, topo, options)
        frames.append(frame)
        raws.append(raw)
        infos.append({"file": raw.name, **info})
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    raw_telemetry = raws[0] if len(raws) == 1 else RawInput("+".join(r.name for r in raws), b"\n".join(r.data for r in raws))
    clean = parse_telemetry(frame, topo, raw_telemetry.name)
    digests = [raw_telemetry.digest("telemetry", rows=len(frame), shape=list(frame.shape)),
               raw_topology.digest("topology", rows=topo.n_nodes), raw_jobs.digest("jobs", rows=job_set.n_jobs)]
    info = infos[0] if len(infos) == 1 else {"format": "+".join(sorted({i["format"] for i in infos})), "files": infos}
    return EnergyInputs(clean, topo, job_set, telemetry_info=info), digests


def _read_telemetry_file(source: Any, name: str | None, topo, options: Mapping[str, Any]) -> tuple[pd.DataFrame, RawInput, dict[str, Any]]:
    """One telemetry file as a frame in qflow's columns, its bytes, and the detected format and mapping."""
    raw = read_input(source, name)
    frame, info = read_telemetry(raw, set(topo.node_ids), options)
    if frame is None:
        frame, raw = load_table(raw.data, raw.name, records_key="telemetry", text_columns=("node", "gpu", "job_id"))
    return frame, raw, info


def _requested(config: EnergyConfig) -> str:
    if not (config.gnn_prediction or config.qaoa_scheduling or config.meta_learning):
        return "per-node"
    path = "gnn+list" if config.gnn_prediction else "list"
    if config.meta_learning:
        return path + "+meta"
    return path + "+qaoa" if config.qaoa_scheduling else path


def _schedule_metrics(problem: Problem, schedule: Schedule, horizon: int, budget_w: float | None, slot_hours: float,
                      idle_w: np.ndarray) -> dict[str, Any]:
    profile = power_profile(problem, schedule)
    peak = float(profile.max())
    bound = lower_bound_w(problem, horizon)
    makespan = schedule.makespan(problem)
    busy = gpu_usage(problem, schedule).sum(axis=1)
    idle_kwh = float(idle_w @ (problem.node_gpus * makespan - busy)) * slot_hours / 1000.0
    energy = problem.energy_w_slots * slot_hours / 1000.0
    return {
        "peak_power_w": round(peak, 3),
        "mean_power_w": round(float(profile.mean()), 3),
        "energy_kwh": round(energy, 4),
        "idle_energy_kwh": round(idle_kwh, 4),
        "total_energy_kwh": round(energy + idle_kwh, 4),
        "makespan_slots": makespan,
        "lower_bound_w": round(bound, 3),
        "gap_to_lower_bound": round(peak / bound - 1.0, 6),
        "within_horizon": makespan <= horizon,
        "budget_exceeded_slots": 0 if budget_w is None else int((profile > budget_w * (1 + 1e-9)).sum()),
        "dependency_violations": len(check_schedule(problem, schedule)),
    }


def _not_adopted(problem: Problem, schedule: Schedule, new_problem: Problem, new_schedule: Schedule, horizon: int,
                 budget_w: float | None) -> str | None:
    """Why a window's answer is not applied (None: it is): it must stay valid and improve (peak, sum of squared power)."""
    before, after = _score(problem, schedule), _score(new_problem, new_schedule)
    problems = check_schedule(new_problem, new_schedule)
    if problems:
        return f"would break the schedule: {problems[0]}"
    if new_schedule.makespan(new_problem) > horizon:
        return "would end after the horizon"
    if budget_w is not None and after[0] > budget_w * (1 + 1e-9):
        return "would exceed the budget"
    if not (after[0] < before[0] - 1e-9 or (after[0] <= before[0] + 1e-9 and after[1] < before[1] - 1e-9)):
        return "no improvement of (peak, sum of squared power)"
    return None


def _score(problem: Problem, schedule: Schedule) -> tuple[float, float]:
    """(peak W, sum of squared slot power kW^2): lexicographic, lower is better."""
    profile = power_profile(problem, schedule) / 1000.0
    return float(profile.max() * 1000.0), float(profile @ profile)


class _WindowRun:
    """State of the window stage: the schedule being improved, the quantum backend, the records."""

    def __init__(self, config: EnergyConfig, problem: Problem, solver: SolverReport, heartbeat: Callable[[], None] | None = None,
                 idle_w_per_gpu: np.ndarray | None = None) -> None:
        self.config, self.problem, self.solver = config, problem, solver
        # Multi-level windows change durations and powers: self.problem is the problem as planned so far.
        self.idle_w_per_gpu = np.zeros(problem.n_nodes) if idle_w_per_gpu is None else idle_w_per_gpu
        self.at_level_zero = np.ones(problem.n_jobs, dtype=bool)
        self.records: list[dict[str, Any]] = []
        self.histories: list[list[float]] = []
        self.steps: list[int] = []
        self.circuits = 0
        self.controller = WindowController() if config.meta_learning else None
        self.budget = quantum_budget(config, heartbeat)
        self.device = quantum_step(solver, lambda device, budget: device, self.budget, fallback_to=self._heuristic_path())
        self.quantum_reason = None if self.device is not None else solver.fallbacks[-1].reason

    def _heuristic_path(self) -> str:
        """The path name once QAOA is abandoned: the windows fall back to the greedy answer."""
        return self.solver.ran.replace("+qaoa", "+greedy").replace("+meta", "+greedy")

    def run(self, schedule: Schedule, horizon: int, budget_w: float | None, ids: list[str], progress: Progress) -> Schedule:
        config, problem = self.config, self.problem
        tried: set[int] = set()
        done = attempts = 0
        while done < config.qaoa_windows and attempts < 4 * config.qaoa_windows:
            profile = power_profile(self.problem, schedule)
            slots = [int(t) for t in np.argsort(-profile, kind="stable") if int(t) not in tried and profile[t] > 0]
            if not slots:
                break
            slot = slots[0]
            tried.add(slot)
            attempts += 1
            if config.power_levels == LEVELS:
                window = build_level_window(self.problem, schedule, slot, horizon, config.max_qubits, self.idle_w_per_gpu,
                                            config.max_slowdown, self.at_level_zero)
            else:
                window = build_window(problem, schedule, slot, horizon, config.max_qubits)
            if window is None:
                continue
            progress(0.45 + 0.35 * done / config.qaoa_windows, f"window {done + 1}/{config.qaoa_windows} at slot {slot} ({window.n} qubits)")
            if config.power_levels == LEVELS:
                self._solve_levels(window, schedule, horizon, budget_w, ids, done)
            else:
                schedule = self._solve(window, schedule, horizon, budget_w, ids, done)
            problem = self.problem
            done += 1
        return schedule

    def _solve(self, window, schedule: Schedule, horizon: int, budget_w: float | None, ids: list[str], index: int) -> Schedule:
        problem = self.problem
        model = window_ising(window)
        exact_bits, best, worst = solve_exact(model)
        greedy = greedy_bits(model)
        record = self._record(window, model, ids, best, worst, model.energy(greedy))
        bits = self._quantum_bits(model, record, greedy, index, best, worst)
        record["exact_bits"] = exact_bits.astype(int).tolist()
        record["chosen_bits"] = np.asarray(bits).astype(int).tolist()
        candidate = apply_window(schedule, window, bits)
        reason = None if np.asarray(bits).any() else "the answer keeps every job (nothing to apply)"
        reason = reason or _not_adopted(problem, schedule, problem, candidate, horizon, budget_w)
        before, after = _score(problem, schedule), _score(problem, candidate)
        record.update(applied=reason is None, not_applied_reason=reason, deferred=[ids[j] for j in window.jobs[np.asarray(bits, bool)]],
                      peak_before_w=round(before[0], 3), peak_after_w=round(after[0] if reason is None else before[0], 3))
        # Sanity: the Ising energies are the direct window cost (checked on the chosen answer).
        record["cost_check_abs_diff"] = abs(window_cost(window, bits) - model.energy(bits))
        self.records.append(record)
        return candidate if reason is None else schedule

    def _solve_levels(self, window: LevelWindow, schedule: Schedule, horizon: int, budget_w: float | None, ids: list[str],
                      index: int) -> None:
        """Solve one multi-level window; on adoption ``self.problem`` takes the new durations and powers."""
        problem = self.problem
        model = level_model(window)
        exact_bits, best, worst = solve_exact(model)
        greedy = encode_levels(greedy_levels(window))
        record = self._record(window, model, ids, best, worst, model.energy(greedy))
        bits = self._quantum_bits(model, record, greedy, index, best, worst)
        levels = window.effective(decode_levels(bits))
        candidate = apply_levels(problem, window, levels)
        reason = None if levels.any() else "the answer keeps every job at level 0 (nothing to apply)"
        reason = reason or _not_adopted(problem, schedule, candidate, schedule, horizon, budget_w)
        before, after = _score(problem, schedule), _score(candidate, schedule)
        slowdowns = level_slowdowns(self.config.max_slowdown)
        record.update(exact_levels=decode_levels(exact_bits).tolist(), chosen_levels=levels.tolist(),
                      level_slowdowns=[round(float(v), 4) for v in slowdowns], applied=reason is None, not_applied_reason=reason,
                      slowed=[{"job": ids[j], "level": int(lv), "slowdown": round(float(slowdowns[lv]), 4),
                               "duration_slots": int(window.duration[i, lv]), "power_w": round(float(window.power_w[i, lv]), 3)}
                              for i, (j, lv) in enumerate(zip(window.jobs, levels, strict=True)) if lv > 0],
                      peak_before_w=round(before[0], 3), peak_after_w=round(after[0] if reason is None else before[0], 3),
                      cost_check_abs_diff=abs(level_window_cost(window, decode_levels(bits)) - model.energy(bits)))
        self.records.append(record)
        if reason is None:
            self.problem = candidate
            self.at_level_zero[window.jobs[levels > 0]] = False

    def _record(self, window, model, ids: list[str], best: float, worst: float, greedy_cost: float) -> dict[str, Any]:
        """The window's record before any quantum work: exact, worst, keep-all and greedy costs, the method chosen."""
        greedy_ratio = approximation_ratio(worst, greedy_cost, best)
        if self.controller is not None:
            method, why = self.controller.choose(1.0 - greedy_ratio)
        else:
            method, why = "qaoa", "qaoa_scheduling on: QAOA on every window"
        return {
            "slot": window.slot, "jobs": [ids[j] for j in window.jobs], "qubits": window.n,
            "exact_cost_kw2": round(best, 6), "worst_cost_kw2": round(worst, 6), "keep_all_cost_kw2": round(model.energy(np.zeros(window.n, int)), 6),
            "greedy_cost_kw2": round(greedy_cost, 6), "greedy_ratio": round(greedy_ratio, 6),
            "qaoa_cost_kw2": None, "qaoa_ratio": None, "choice": method, "why": why,
        }

    def _quantum_bits(self, model, record: dict[str, Any], greedy: np.ndarray, index: int, best: float, worst: float) -> np.ndarray:
        """QAOA's answer when the record's method is QAOA and it runs, else the greedy bits (the record says which)."""
        if record["choice"] == "qaoa" and self.device is None:
            record["choice"], record["why"] = "heuristic", f"QAOA unavailable ({self.quantum_reason})"
            return greedy
        if record["choice"] == "qaoa":
            return self._qaoa(model, record, worst, best, index, greedy)
        return greedy

    def _qaoa(self, model, record: dict[str, Any], worst: float, best: float, index: int, greedy: np.ndarray) -> np.ndarray:
        """QAOA on one window's Ising model; the greedy bits (and a recorded fallback) when it cannot run."""
        config = self.config
        result = quantum_step(self.solver, lambda device, budget: run_qaoa(model, config.qaoa_layers, device, budget,
                                                                          max_steps=config.qaoa_steps, seed=config.seed + index),
                              self.budget, fallback_to=self._heuristic_path(), device=self.device)
        if result is None:
            self.quantum_reason, self.device = self.solver.fallbacks[-1].reason, None
            record["choice"], record["why"] = "heuristic", f"QAOA failed: {self.quantum_reason}"
            return greedy
        ratio = approximation_ratio(worst, result.energy, best)
        record.update(qaoa_cost_kw2=round(result.energy, 6), qaoa_ratio=round(ratio, 6),
                      qaoa_probability=round(result.probability, 6), qaoa_steps=result.steps)
        self.histories.append([round(v, 6) for v in result.expectation_history])
        self.steps.append(result.steps)
        self.circuits += result.circuits_run
        if self.controller is not None:
            self.controller.observe_qaoa(1.0 - ratio)
        return result.bits

    def report(self) -> QuantumReport | None:
        ran = [r for r in self.records if r["qaoa_ratio"] is not None]
        if not ran or self.device is None and not self.steps:
            return None
        device = self.device or choose_device()
        return QuantumReport(device=device.name, device_reason=device.reason, layers=self.config.qaoa_layers,
                             qubits_per_circuit=[r["qubits"] for r in ran], circuits_run=self.circuits, optimizer_steps=self.steps,
                             block_ratios=[r["qaoa_ratio"] for r in ran], exact_checked=[True] * len(ran), convergence=self.histories,
                             blocks=[{k: r[k] for k in ("slot", "jobs", "qubits", "exact_cost_kw2", "qaoa_cost_kw2", "applied")} for r in ran])


def plan_energy(inputs: EnergyInputs, config: EnergyConfig | dict[str, Any] | None = None, *,
                digests: list[InputDigest] | None = None, progress: Progress | None = None, model: ModelArtifact | None = None) -> Plan:
    """Predict power, schedule the jobs under the budget and recommend clock caps.

    Parameters
    ----------
    inputs : EnergyInputs
        From :func:`load_energy_inputs` (or the ``parse_*`` functions).
    config : EnergyConfig or mapping, optional
    digests : list of InputDigest, optional
        Digests of the files (front ends pass them).
    progress : callable, optional
        ``progress(fraction, message)``.
    model : ModelArtifact, optional
        A power model from ``qflow train power-model``: scored instead of
        training the GNN (``result.trained_model`` says which).

    Returns
    -------
    Plan
        ``result.schedule`` (``{job, node, start, end}`` in slots), frequency
        caps, active accelerators, predicted peak/energy/savings;
        ``metrics`` peak_power_w, energy_kwh, makespan_slots, lower_bound_w,
        gap_to_lower_bound; ``baselines`` asap and per_node.

    Raises
    ------
    InfeasibleError
        Budget below the largest job, or no schedule within an explicit
        horizon under the budget.

    Examples
    --------
    >>> import pandas as pd
    >>> from qflow.energy import parse_jobs, parse_telemetry, parse_topology
    >>> topo = parse_topology({"nodes": [{"id": "a", "gpus": 2, "min_clock_mhz": 500, "max_clock_mhz": 1500,
    ...                                   "gpu_power_limit_w": 400}]})
    >>> jobs = parse_jobs({"jobs": [{"id": "x", "duration": 2, "power_w": 300}, {"id": "z", "duration": 1, "power_w": 250},
    ...                             {"id": "y", "duration": 1, "power_w": 200, "deps": ["x"]}]}, topo)
    >>> tel = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=8, freq="h", tz="UTC"), "node": "a",
    ...                     "gpu": "0", "power_w": [100.0, 200, 150, 300, 250, 100, 120, 180]})
    >>> inputs = EnergyInputs(parse_telemetry(tel, topo), topo, jobs)
    >>> plan = plan_energy(inputs, {"power_budget_w": 500})
    >>> [(r["job"], r["start"], r["end"]) for r in plan.result["schedule"]], plan.metrics["peak_power_w"]
    ([('x', 0, 2), ('z', 2, 3), ('y', 2, 3)], 450.0)
    >>> plan.metrics["makespan_slots"], plan.metrics["makespan_lower_bound_slots"], plan.baselines["asap"]["peak_power_w"]
    (3, 3, 550.0)
    >>> plan = plan_energy(inputs, {"power_budget_w": 500, "objective": "min_peak"})
    >>> [(r["job"], r["start"], r["end"]) for r in plan.result["schedule"]], plan.metrics["peak_power_w"]
    ([('x', 0, 2), ('z', 2, 3), ('y', 3, 4)], 300.0)
    >>> plan.metrics["lower_bound_w"], plan.metrics["horizon_slots"]
    (300.0, 5)
    """
    names = input_sources(digests)
    run = PlanRun.start("energy", config, EnergyConfig, requested=_requested, progress=progress,
                        digests=digests if digests is not None else _input_digests(inputs))
    config = run.config
    _check_horizon(inputs, config)
    beat = _Heartbeat(run.progress)
    with run.stage("schedule", 0.02, "job power estimates and schedules"):
        jobs = _job_problem(inputs, config, names)
        scheduled = _schedule(jobs, inputs.topology, run, beat)
    beat.stage(0.2, "prediction: training the GNN")
    with run.stage("predict", 0.2, "prediction: persistence, ridge" + (", GNN" if config.gnn_prediction else "")):
        fitted = _predict(inputs, config, beat, model, run.diagnostics)
    if config.gnn_prediction and fitted.prediction.best != "gnn":
        mae = fitted.prediction.mae_w
        run.note(f"the GNN did not win: walk-forward MAE gnn {mae['gnn']:.1f} W vs "
                 f"{fitted.prediction.best} {mae[fitted.prediction.best]:.1f} W")
    before_windows, window_run = scheduled.schedule, None
    if config.qaoa_scheduling or config.meta_learning:
        with run.stage("windows"):
            window_run = _windows(run, jobs, scheduled, fitted, inputs.jobs.ids, beat)
    with run.stage("caps", 0.85, "clock caps"):
        caps = _caps(jobs.problem, scheduled.schedule, fitted.fits, inputs.topology, fitted.clocks, jobs.budget, config)
    metrics = _measure(run, jobs, scheduled, fitted, caps, before_windows if window_run is not None else None)
    result = _result(inputs, config, jobs, scheduled, fitted, caps, metrics, run.baselines["asap"]["peak_power_w"])
    if window_run is not None:
        _report_windows(window_run, result, metrics, run)
    return run.finish(result, metrics)


def _input_digests(inputs: EnergyInputs) -> list[InputDigest]:
    """Digests of parsed inputs (when no front end passed the files' own)."""
    return [digest_frame(inputs.telemetry, "telemetry"), digest_mapping(inputs.topology.node_ids, "topology"),
            digest_mapping(inputs.jobs.ids, "jobs")]


def _check_horizon(inputs: EnergyInputs, config: EnergyConfig) -> None:
    """Refuse a job or node count x horizon beyond the limit before any (nodes, horizon) array is allocated."""
    jobs, topo = inputs.jobs, inputs.topology
    # An explicit horizon sizes the window stage's (nodes, horizon) arrays: bound it like the jobs' slots.
    slots = max(config.horizon, int(jobs.duration.sum()) + 1)
    check_limit(max(jobs.n_jobs, topo.n_nodes) * slots, "energy_job_slots", "config", "horizon (jobs or nodes x horizon slots)")


@dataclass
class _Jobs:
    """The scheduling problem: the jobs with every power filled in, and the cluster budget (W, or ``None``)."""

    problem: Problem
    power: np.ndarray
    missing: np.ndarray
    sources: list[str]
    budget: float | None
    budget_source: str
    #: The problem as given, once multi-level windows changed ``problem``'s durations and powers (baselines use it).
    given: Problem | None = None

    @property
    def baseline_problem(self) -> Problem:
        return self.given if self.given is not None else self.problem


@dataclass
class _Scheduled:
    """The schedule stage's answer and the simple schedules it is measured against."""

    schedule: Schedule
    horizon: int
    auto: bool
    asap: Schedule
    per_node: Schedule
    objective: dict[str, Any]
    list_info: dict[str, Any] | None = None


@dataclass
class _Fitted:
    """The predict stage's answer: forecasts, per-node power models and current clocks (MHz)."""

    prediction: Any
    fits: list[Any]
    clocks: np.ndarray
    clock_sources: list[str]
    trained_model: dict[str, Any] | None = None


def _job_problem(inputs: EnergyInputs, config: EnergyConfig, names: dict[str, str]) -> _Jobs:
    """Estimate the missing job powers from telemetry; refuse a budget below the largest job."""
    telemetry, topo, jobs = inputs.telemetry, inputs.topology, inputs.jobs
    missing = ~np.isfinite(jobs.power_w)
    estimates, sources = estimate_job_power(telemetry, jobs.ids, jobs.gpus, jobs.node, topo, missing)
    power = np.where(missing, estimates, jobs.power_w)
    problem = Problem(jobs.duration, power, jobs.gpus, jobs.node, jobs.deps, topo.gpus)
    budget, budget_source = _budget(config, topo, names)
    if budget is not None and budget < power.max():
        j = int(np.argmax(power))
        raise InfeasibleError(budget_source, "power_budget_w", "budget below the largest single job",
                              f"at least {power[j]:.0f} W (job {jobs.ids[j]})", f"{budget:.0f} W")
    return _Jobs(problem, power, missing, sources, budget, budget_source)


def _schedule(jobs: _Jobs, topo, run: PlanRun, beat: _Heartbeat) -> _Scheduled:
    """ASAP and per-node baselines, then the plan's schedule: per-node, shortest under the budget, or list-scheduled."""
    config, problem = run.config, jobs.problem
    objective: dict[str, Any] = {"name": "min_peak", "requested": config.objective}
    if jobs.budget is None:
        objective["why"] = "no power budget: the peak is minimised within the horizon"
    elif config.objective == "min_peak":
        objective["why"] = "objective min_peak: the lowest peak within the horizon"
    asap = asap_schedule(problem)
    auto = config.horizon == 0
    horizon = math.ceil(AUTO_HORIZON_FACTOR * asap.makespan(problem)) if auto else config.horizon
    per_node = per_node_schedule(problem, _node_caps(topo, jobs.budget))
    scheduled = _Scheduled(per_node, horizon, auto, asap, per_node, objective)
    if run.solver.requested == "per-node":
        objective["name"] = "per_node"
        objective["why"] = "all toggles off: the simple per-node scheduler (each node ASAP under its own share of the budget)"
        if per_node.makespan(problem) > horizon:
            run.note(f"the per-node schedule needs {per_node.makespan(problem)} slots, beyond the horizon of {horizon}")
        return scheduled
    shortest = _shortest_within(jobs, scheduled, run, beat)
    if shortest is not None:
        scheduled.schedule, scheduled.objective = shortest["schedule"], shortest["report"]
        scheduled.horizon = shortest["schedule"].makespan(problem) if auto else horizon
        return scheduled
    listed = list_schedule(problem, horizon, jobs.budget, auto, budget_source=jobs.budget_source, heartbeat=beat)
    scheduled.schedule = listed.schedule
    scheduled.list_info = {"priority_rule": listed.rule, "probes": listed.probes, "cap_w": round(listed.cap_w, 3)}
    if listed.horizon_extended:
        run.note(f"auto horizon {horizon} slots extended to {listed.horizon} to stay under the budget")
    scheduled.horizon = listed.horizon
    return scheduled


def _shortest_within(jobs: _Jobs, scheduled: _Scheduled, run: PlanRun, beat: _Heartbeat) -> dict[str, Any] | None:
    """The min_makespan answer when a budget is set and it fits the horizon; otherwise ``None`` (and why, in the objective)."""
    if jobs.budget is None or run.config.objective != "min_makespan":
        return None
    run.progress(0.04, "shortest makespan under the budget")
    shortest = _shortest(jobs.problem, jobs.budget, run.config, beat)
    span = shortest["schedule"].makespan(jobs.problem)
    if not scheduled.auto and span > scheduled.horizon:
        why = (f"the min_makespan search needs {span} slots, beyond the "
               f"explicit horizon of {scheduled.horizon}: the min_peak search ran instead")
        run.note(why)
        scheduled.objective.update(why=why, not_adopted={"name": "min_makespan", "makespan_slots": span})
        return None
    return shortest


def _predict(inputs: EnergyInputs, config: EnergyConfig, beat: _Heartbeat, model: ModelArtifact | None,
             diagnostics: list[str]) -> _Fitted:
    """Walk-forward forecasts of node power (a given power model scored instead of training one), per-node power models
    and the current clocks."""
    telemetry, topo = inputs.telemetry, inputs.topology
    series = build_node_series(telemetry, topo)
    gnn, trained_model = _loaded_power_model(model, config, topo, series, diagnostics)
    prediction = evaluate_predictors(series, topo, window=config.history_window, test_fraction=config.test_fraction,
                                     use_gnn=config.gnn_prediction, hidden=config.gnn_hidden, steps=config.gnn_steps, seed=config.seed,
                                     heartbeat=beat, gnn_model=gnn)
    fits = fit_power_models(telemetry, topo)
    clocks, clock_sources = current_clocks(telemetry, topo)
    return _Fitted(prediction, fits, clocks, clock_sources, trained_model)


def _windows(run: PlanRun, jobs: _Jobs, scheduled: _Scheduled, fitted: _Fitted, ids: list[str], beat: _Heartbeat) -> _WindowRun:
    """Re-solve the peak slots (QAOA, greedy or the meta-controller's pick); updates ``scheduled.schedule`` (and, with
    multi-level windows, ``jobs.problem``'s durations and powers, keeping the given problem for the baselines)."""
    window_run = _WindowRun(run.config, jobs.problem, run.solver, beat, idle_w_per_gpu=np.array([f.p_idle_w for f in fitted.fits]))
    scheduled.schedule = window_run.run(scheduled.schedule, scheduled.horizon, jobs.budget, ids, run.progress)
    jobs.given, jobs.problem = jobs.problem, window_run.problem
    quantum = window_run.report()
    if quantum is not None:
        run.solver.quantum = quantum
    return window_run


def _plan_metrics(jobs: _Jobs, scheduled: _Scheduled, fitted: _Fitted, caps: dict[str, Any], idle: np.ndarray,
                  config: EnergyConfig) -> dict[str, Any]:
    """The plan's schedule metrics, its makespan against the lower bound (completing the objective record) and the forecasts."""
    problem, budget, objective = jobs.problem, jobs.budget, scheduled.objective
    metrics = _schedule_metrics(problem, scheduled.schedule, scheduled.horizon, budget, config.slot_hours, idle)
    if budget is not None and "makespan_lower_bound_slots" not in objective:
        bound = makespan_lower_bound(problem, budget)
        objective.update(makespan_lower_bound_slots=bound["bound"], lower_bound_components=bound)
    if "makespan_lower_bound_slots" in objective:
        objective["makespan_gap_to_lower_bound"] = round(metrics["makespan_slots"] / objective["makespan_lower_bound_slots"] - 1.0, 6)
    prediction = fitted.prediction
    metrics.update({
        "objective": objective["name"],
        "makespan_lower_bound_slots": objective.get("makespan_lower_bound_slots"),
        "makespan_gap_to_lower_bound": objective.get("makespan_gap_to_lower_bound"),
        "horizon_slots": scheduled.horizon,
        "power_budget_w": budget,
        "budget_respected": metrics["budget_exceeded_slots"] == 0,
        "peak_reduction_vs_asap": None,
        "prediction_mae_w": {k: round(v, 3) for k, v in prediction.mae_w.items()},
        "prediction_best_method": prediction.best,
        "prediction_mape": {k: round(v, 6) for k, v in prediction.mape.items()},
        "power_fit_mae_w": [None if f.mae_w is None else round(f.mae_w, 3) for f in fitted.fits],
        "predicted_energy_saving_kwh": caps["saving_kwh"],
        "active_accelerators": caps["active_total"],
    })
    return metrics


def _measure(run: PlanRun, jobs: _Jobs, scheduled: _Scheduled, fitted: _Fitted, caps: dict[str, Any],
             before_windows: Schedule | None) -> dict[str, Any]:
    """The plan's metrics; fills ``run.baselines`` and says when the schedule exceeds the budget."""
    idle = np.array([f.p_idle_w for f in fitted.fits])
    metrics = _plan_metrics(jobs, scheduled, fitted, caps, idle, run.config)
    run.baselines = _baselines(jobs, scheduled, before_windows, idle, run.config.slot_hours)
    asap_peak = run.baselines["asap"]["peak_power_w"]
    metrics["peak_reduction_vs_asap"] = round(1.0 - metrics["peak_power_w"] / asap_peak, 6) if asap_peak > 0 else None
    if jobs.budget is not None and metrics["budget_exceeded_slots"]:
        run.note(f"the {run.solver.ran} schedule exceeds the budget in {metrics['budget_exceeded_slots']} slots "
                 "(the per-node scheduler gives each node a fixed share; turn on gnn_prediction for the cluster-wide scheduler)")
    return metrics


def _baselines(jobs: _Jobs, scheduled: _Scheduled, before_windows: Schedule | None, idle: np.ndarray,
               slot_hours: float) -> dict[str, dict[str, Any]]:
    """ASAP, per-node and (when windows ran) the list schedule before them, measured like the plan."""
    def measure(schedule: Schedule) -> dict[str, Any]:
        return _schedule_metrics(jobs.baseline_problem, schedule, scheduled.horizon, jobs.budget, slot_hours, idle)

    baselines = {"asap": measure(scheduled.asap), "per_node": measure(scheduled.per_node)}
    if before_windows is not None:
        baselines["list_before_windows"] = measure(before_windows)
    return baselines


def _result(inputs: EnergyInputs, config: EnergyConfig, jobs: _Jobs, scheduled: _Scheduled, fitted: _Fitted,
            caps: dict[str, Any], metrics: dict[str, Any], asap_peak: float) -> dict[str, Any]:
    """The plan's answer: the schedule, timelines, caps, forecasts, savings and the commands that apply them."""
    problem, topo, ids, power = jobs.problem, inputs.topology, inputs.jobs.ids, jobs.power
    schedule, asap, per_node, prediction = scheduled.schedule, scheduled.asap, scheduled.per_node, fitted.prediction
    given = jobs.baseline_problem
    length = max(schedule.makespan(problem), asap.makespan(given), per_node.makespan(given))
    slot_h = config.slot_hours
    result: dict[str, Any] = {
        "schedule": [{"job": ids[j], "node": topo.node_ids[schedule.node[j]], "start": int(schedule.start[j]),
                      "end": int(schedule.start[j] + problem.duration[j]), "power_w": round(float(problem.power_w[j]), 3), "gpus": int(problem.gpus[j])}
                     for j in np.lexsort((np.arange(problem.n_jobs), schedule.start))],
        "slot_hours": slot_h,
        "horizon_slots": scheduled.horizon,
        "horizon_source": ("config" if not scheduled.auto else "auto: the shortest makespan found under the budget"
                           if scheduled.objective["name"] == "min_makespan" else "auto (1.5 x ASAP makespan)"),
        "objective": scheduled.objective,
        "power_budget_w": jobs.budget,
        "power_budget_source": jobs.budget_source if jobs.budget is not None else None,
        "node_ids": topo.node_ids,
        "list_scheduler": scheduled.list_info,
        "power_timeline_w": {
            "plan": _rounded(power_profile(problem, schedule, length)),
            "asap": _rounded(power_profile(given, asap, length)),
            "per_node": _rounded(power_profile(given, per_node, length)),
            "plan_capped": _rounded(caps["capped_total"], length),
        },
        "frequency_caps": caps["per_node"],
        "caps_assumption": "compute-bound jobs: dynamic power scales with f^3 and run time with 1/f; the slot schedule is not re-timed",
        "active_accelerators": caps["active"],
        "predicted": {
            "peak_power_w": metrics["peak_power_w"], "energy_kwh": metrics["energy_kwh"],
            "peak_power_w_capped": round(float(caps["capped_total"].max(initial=0.0)), 3), "energy_kwh_capped": caps["capped_kwh"],
            "next_interval_power_w": dict(zip(topo.node_ids, prediction.forecast_w[prediction.best], strict=True)),
            "next_interval_method": prediction.best,
        },
        "predicted_savings": {
            "caps_energy_kwh": caps["saving_kwh"],
            "caps_energy_fraction": caps["saving_fraction"],
            "power_gating_idle_kwh": caps["gating_kwh"],
            "peak_reduction_vs_asap_w": round(asap_peak - metrics["peak_power_w"], 3),
        },
        "prediction": prediction.summary(),
        "estimated_job_power": [{"job": ids[i], "power_w": round(float(power[i]), 3), "source": jobs.sources[i]}
                                for i in np.flatnonzero(jobs.missing)],
        "current_clock_sources": dict(zip(topo.node_ids, fitted.clock_sources, strict=True)),
        "quantum_accelerators": topo.quantum_accelerators,
        "telemetry_format": inputs.telemetry_info or {"format": "qflow", "detected": False, "mapping": "a parsed frame in qflow columns"},
    }
    if fitted.trained_model is not None:
        result["trained_model"] = fitted.trained_model
    result["apply"] = {**apply_commands(caps["per_node"], topo), "schedule_csv": schedule_csv(result["schedule"], slot_h),
                       "files": {key: {"file": None, "written_to": None} for key in ("set_script", "restore_script", "schedule_csv")}}
    return result


def _report_windows(window_run: _WindowRun, result: dict[str, Any], metrics: dict[str, Any], run: PlanRun) -> None:
    """Add the window stage's records, the meta-controller's choices and the window metrics to the plan."""
    records = window_run.records
    result["windows"] = records
    if window_run.controller is not None:
        result["meta"] = {"learner": "online: expected QAOA gap (EWMA of 1 - ratio) vs this window's greedy gap",
                          "choices": [{"slot": r["slot"], "choice": r["choice"], "why": r["why"]} for r in records]}
    applied = sum(r["applied"] for r in records)
    config = run.config
    if config.power_levels == LEVELS:
        result["clock_levels"] = {"slowdowns": [round(float(v), 4) for v in level_slowdowns(config.max_slowdown)],
                                  "model": "idle part g P_idle kept, dynamic part / slowdown^3, run time x slowdown, "
                                           "slot-average power on the slot grid (energy kept)",
                                  "jobs": [row for r in records if r["applied"] for row in r["slowed"]]}
        metrics["jobs_slowed"] = len(result["clock_levels"]["jobs"])
    metrics.update(windows=len(records), windows_applied=applied,
                   qaoa_mean_ratio=_mean([r["qaoa_ratio"] for r in records]),
                   greedy_mean_ratio=_mean([r["greedy_ratio"] for r in records]))
    if not records:
        run.note("no peak slot had 2 or more jobs that could be deferred: no window ran")


def _loaded_power_model(model: ModelArtifact | None, config: EnergyConfig, topo, series, diagnostics: list[str]):
    """The GNN from a given model (checked against these inputs) and what the plan says about it; (None, None) without one."""
    if model is None:
        return None, None
    from qflow.energy._train import power_model_from_artifact

    described = {**model.describe(), "component": "GraphSAGE power predictor"}
    if not config.gnn_prediction:
        diagnostics.append(f"model {model.source} given but gnn_prediction is off: it was checked and not used")
        return None, {**described, "used": False}
    gnn = power_model_from_artifact(model, topo, series, config.history_window)
    diagnostics.append(f"power predictor: trained: no, loaded from {model.source} (card sha256 {model.card_sha256[:12]})")
    return gnn, {**described, "used": True}


class _Heartbeat:
    """Progress reports from inside long loops, at most every :data:`HEARTBEAT_S`, so a cancel raised there stops them."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.last = time.perf_counter()
        self.fraction = 0.0
        self.message = "working"

    def stage(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def __call__(self) -> None:
        now = time.perf_counter()
        if now - self.last >= HEARTBEAT_S:
            self.last = now
            self.progress(self.fraction, self.message)


def _shortest(problem: Problem, budget: float, config: EnergyConfig, beat: _Heartbeat) -> dict[str, Any]:
    """The min_makespan objective: shortest schedule under the budget, then the lowest peak at that makespan."""
    beat.stage(0.05, "shortest makespan under the budget")
    found = shortest_schedule(problem, budget, config.makespan_iterations, config.seed, heartbeat=beat)
    flat, probes = flatten_within(problem, found.schedule, budget, heartbeat=beat)
    beat.stage(0.15, "budget sweep (makespan against peak)")
    asap_peak = float(power_profile(problem, asap_schedule(problem)).max())
    floor = float(problem.power_w.max())
    budgets = sorted({*np.linspace(floor, max(asap_peak, budget), SWEEP_BUDGETS).round(3).tolist(), round(budget, 3)})
    sweep = budget_sweep(problem, budgets, heartbeat=beat)
    bound = found.lower_bound
    span = flat.makespan(problem)
    report = {
        "name": "min_makespan", "requested": config.objective,
        "why": "a power budget is set: the shortest schedule that never exceeds it; peak flattening only breaks ties",
        "makespan_slots": span,
        "makespan_lower_bound_slots": bound["bound"],
        "makespan_gap_to_lower_bound": round(span / bound["bound"] - 1.0, 6),
        "lower_bound_components": bound,
        "optimal_proven": span <= bound["bound"],
        "search": {"method": "list scheduling at cap = budget, priority rules + randomised bottom-level orders, "
                             "each improved by forward-backward passes; then the cap bisected at that makespan (tie-break)",
                   "starts": found.starts, "forward_backward_passes": found.passes, "best_start": found.source,
                   "best_makespan_after_each_start": found.history, "peak_before_tie_break_w": round(found.peak_w, 3),
                   "tie_break_probes": probes},
        "budget_sweep": sweep,
        "budget_sweep_note": (f"{len(sweep)} budgets from the largest job to the ASAP peak; each: the fixed priority rules with one "
                              "forward-backward pass (the plan's own budget also got the randomised orders above)"),
    }
    return {"schedule": flat, "report": report}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(float(np.mean(present)), 6) if present else None


def _rounded(values: np.ndarray, length: int | None = None) -> list[float]:
    out = np.zeros(length if length is not None else len(values))
    out[: min(len(out), len(values))] = values[: len(out)]
    return [round(float(v), 3) for v in out]


def _budget(config: EnergyConfig, topo, names: dict[str, str]) -> tuple[float | None, str]:
    if config.power_budget_w > 0:
        return float(config.power_budget_w), "config"
    if topo.power_budget_w is not None:
        return float(topo.power_budget_w), names.get("topology", "topology")
    return None, "none"


def _node_caps(topo, budget: float | None) -> np.ndarray | None:
    """Per-node shares for the simple scheduler: the node's own budget, else the cluster budget by GPU count."""
    if budget is None and not np.isfinite(topo.node_budget_w).any():
        return None
    share = (budget * topo.gpus / topo.gpus.sum()) if budget is not None else np.full(topo.n_nodes, np.inf)
    return np.where(np.isfinite(topo.node_budget_w), topo.node_budget_w, share)


def _caps(problem: Problem, schedule: Schedule, fits, topo, clocks: np.ndarray, budget: float | None, config: EnergyConfig) -> dict[str, Any]:
    profile = power_profile(problem, schedule, by_node=True)
    busy = gpu_usage(problem, schedule)
    idle = np.array([f.p_idle_w for f in fits])
    parts = np.zeros((problem.n_nodes, 2))
    for j in range(problem.n_jobs):
        n = schedule.node[j]
        static = problem.gpus[j] * idle[n] * problem.duration[j]
        parts[n, 0] += static
        parts[n, 1] += max(problem.power_w[j] * problem.duration[j] - static, 0.0)
    chosen = choose_caps(profile, busy, parts, fits, topo, clocks, budget, config.max_slowdown)
    kwh = config.slot_hours / 1000.0
    active = busy.max(axis=1) if busy.size else np.zeros(problem.n_nodes, dtype=int)
    makespan = schedule.makespan(problem)
    gating = float(idle @ ((topo.gpus - active) * makespan)) * kwh
    per_node = []
    for i, node in enumerate(topo.node_ids):
        per_node.append({
            "node": node,
            "current": {"clock_mhz": round(float(clocks[i]), 1), "power_limit_w": float(topo.gpu_power_limit_w[i])},
            "recommended": {"clock_mhz": round(float(chosen["clock_mhz"][i]), 1), "power_limit_w": round(float(chosen["power_limit_w"][i]), 1)},
            "limits": {"min_clock_mhz": float(topo.min_clock_mhz[i]), "max_clock_mhz": float(topo.max_clock_mhz[i]),
                       "gpu_min_power_w": float(topo.gpu_min_power_w[i]), "gpu_power_limit_w": float(topo.gpu_power_limit_w[i]),
                       "node_power_limit_w": float(topo.node_power_limit_w[i])},
            "slowdown": round(float(1.0 / chosen["ratio"][i]), 4),
            "binding": chosen["binding"][i],
            "peak_w_uncapped": round(float(profile[i].max(initial=0.0)), 3),
            "peak_w_capped": round(float(chosen["capped_profile_w"][i].max(initial=0.0)), 3),
            "energy_kwh_uncapped": round(float(chosen["uncapped_energy_w_slots"][i]) * kwh, 4),
            "energy_kwh_capped": round(float(chosen["energy_w_slots"][i]) * kwh, 4),
            "fit": fits[i].describe(),
        })
    uncapped = float(chosen["uncapped_energy_w_slots"].sum()) * kwh
    capped = float(chosen["energy_w_slots"].sum()) * kwh
    return {
        "per_node": per_node,
        "capped_total": chosen["capped_profile_w"].sum(axis=0) if problem.n_nodes else np.zeros(0),
        "capped_kwh": round(capped, 4),
        "saving_kwh": round(uncapped - capped, 4),
        "saving_fraction": round((uncapped - capped) / uncapped, 6) if uncapped > 0 else 0.0,
        "gating_kwh": round(gating, 4),
        "active": {"per_node": {n: int(a) for n, a in zip(topo.node_ids, active, strict=True)}, "total": int(active.sum()),
                   "of": int(topo.gpus.sum()), "rule": "most GPUs the schedule uses at once on each node; the rest can be powered down"},
        "active_total": int(active.sum()),
    }
