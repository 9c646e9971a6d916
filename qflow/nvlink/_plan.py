"""``plan_nvlink``: the nvlink module's one entry point."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.errors import InputError
from qflow.core.io import RawInput, digest_mapping, load_table, parse_mapping, read_input
from qflow.core.models import ModelArtifact
from qflow.core.plan import Fallback, InputDigest, Plan, QuantumReport, SolverReport
from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.core.skeleton import PlanRun, input_sources, quantum_budget, quantum_step
from qflow.nvlink._classifier import features_of, label_of, parse_logs, simulate_logs, train_classifier
from qflow.nvlink._kernel import compare_kernels
from qflow.nvlink._placement import HOST_TIE_BREAK, cut_cost, place_jobs, random_placement, round_robin_placement
from qflow.nvlink._quantum import QaoaBlockSolver
from qflow.nvlink._rl import learn_paths
from qflow.nvlink._rounds import (
    Transfers,
    colour_transfers,
    empty_last_rounds,
    first_fit,
    is_proper,
    lower_bound,
    n_colours,
    rounds_of,
    solve_block_exactly,
    transfers_of,
)
from qflow.nvlink._schemas import Fabric, Job, NvlinkConfig, looks_like_topo_text, parse_fabric, parse_jobs, parse_topo_text
from qflow.nvlink._simulator import FlowSet, PaddedPaths, PathTable, injection_bound_s

__all__ = ["load_nvlink_inputs", "plan_nvlink", "read_fabric"]

Progress = Callable[[float, str], None]


def read_fabric(raw: RawInput) -> Fabric:
    """A fabric from file bytes: ``nvidia-smi topo -m`` text, else node-link JSON."""
    head = raw.data.lstrip()[:1]
    if head not in (b"{", b"["):
        try:
            text = raw.data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(raw.name, "(file)", "not UTF-8 text", "node-link JSON or nvidia-smi topo -m text", f"byte {exc.start}") from None
        if looks_like_topo_text(text):
            return parse_topo_text(text, raw.name)
        raise InputError(raw.name, "(file)", "neither JSON nor nvidia-smi topo -m text",
                         "NetworkX node-link JSON or the matrix printed by nvidia-smi topo -m")
    return parse_fabric(parse_mapping(RawInput(raw.name if raw.suffix == ".json" else raw.name + ".json", raw.data)), raw.name)


def load_nvlink_inputs(
    fabric: Any, jobs: Any, logs: Any = None, *,
    fabric_name: str | None = None, jobs_name: str | None = None, logs_name: str | None = None,
) -> tuple[Fabric, dict[str, Any], pd.DataFrame | None, list[InputDigest]]:
    """Read the fabric (node-link JSON or topo text), the jobs (JSON/YAML) and the optional logs (CSV).

    Returns ``(fabric, jobs_mapping, logs_frame, digests)``; the jobs are
    checked against the fabric by :func:`plan_nvlink`.
    """
    raw_fabric = read_input(fabric, fabric_name)
    parsed = read_fabric(raw_fabric)
    raw_jobs = read_input(jobs, jobs_name)
    jobs_mapping = parse_mapping(raw_jobs)
    digests = [raw_fabric.digest("fabric", rows=parsed.n_gpus), raw_jobs.digest("jobs")]
    frame = None
    if logs is not None:
        frame, raw_logs = load_table(logs, name=logs_name)
        frame = parse_logs(frame, raw_logs.name)
        digests.append(raw_logs.digest("logs", rows=len(frame), shape=list(frame.shape)))
    return parsed, jobs_mapping, frame, digests


@dataclass
class _Workload:
    """All transfers of all jobs as one flow list, with the job, ranks and round of each."""

    flows: FlowSet
    job: np.ndarray
    src_rank: np.ndarray
    dst_rank: np.ndarray
    round: np.ndarray
    paths: PaddedPaths


def _workload(table: PathTable, transfers: Sequence[Transfers], colourings: Sequence[np.ndarray],
              placements: Sequence[np.ndarray]) -> _Workload:
    parts = [FlowSet(p[t.src], p[t.dst], t.nbytes) for t, p in zip(transfers, placements, strict=True)]
    flows = FlowSet.concat(parts)
    job = np.concatenate([np.full(t.m, j) for j, t in enumerate(transfers)]) if transfers else np.zeros(0, int)
    return _Workload(
        flows=flows, job=job.astype(int),
        src_rank=np.concatenate([t.src for t in transfers]), dst_rank=np.concatenate([t.dst for t in transfers]),
        round=np.concatenate(list(colourings)).astype(int), paths=PaddedPaths.build(table, flows),
    )


def _one_hot(paths: PaddedPaths, choice: np.ndarray) -> np.ndarray:
    w = np.zeros(paths.bottleneck_gbps.shape)
    w[np.arange(len(choice)), choice] = 1.0
    return w


def _evaluate(table: PathTable, work: _Workload, weights: np.ndarray, alpha_us: float) -> dict[str, Any]:
    """Round times per job, link busy times, and the concurrent (no rounds) time.

    Flows of round ``r`` of every job are simulated together (they contend
    where they share links); a job's round lasts until its slowest flow in
    that simulation ends, each job moves through its own rounds, and the
    collective time is the slowest job's sum. The ideal time is the same sum
    with every round at its busiest GPU's injection bound.
    """
    n_rounds = int(work.round.max()) + 1 if work.flows.n else 0
    n_jobs = int(work.job.max()) + 1 if work.flows.n else 0
    busy_total = np.zeros(table.n_links)
    job_times: list[list[float]] = [[] for _ in range(n_jobs)]
    job_ideal = np.zeros(n_jobs)
    for r in range(n_rounds):
        idx = np.flatnonzero(work.round == r)
        sub = PaddedPaths(work.paths.links[idx], work.paths.n_options[idx], work.paths.latency_s[idx],
                          work.paths.bottleneck_gbps[idx])
        times = sub.split_times(table, work.flows.nbytes[idx], weights[idx], alpha_us)
        for j in np.unique(work.job[idx]).tolist():
            mine = work.job[idx] == j
            job_times[j].append(float(times[mine].max()))
            picked = idx[mine]
            job_ideal[j] += injection_bound_s(table, FlowSet(work.flows.src[picked], work.flows.dst[picked], work.flows.nbytes[picked]))
        busy_total += sub.link_busy_s(table, work.flows.nbytes[idx], weights[idx])
    totals = [float(sum(t)) for t in job_times]
    ideal = float(job_ideal.max(initial=0.0))
    concurrent = work.paths.split_times(table, work.flows.nbytes, weights, alpha_us) if work.flows.n else np.zeros(1)
    # Planned utilisation: busy time over the ideal time, the same reference for every placement and routing of
    # these rounds; above 1 a link, not the GPUs, sets the pace.
    utilisation = busy_total / ideal if ideal > 0 else busy_total
    return {"job_round_times_s": job_times, "job_times_s": totals, "estimated_collective_time_s": max(totals, default=0.0),
            "link_busy_s": busy_total, "ideal_time_s": ideal, "link_utilisation": utilisation,
            "max_link_utilisation": float(utilisation.max(initial=0.0)), "concurrent_time_s": float(concurrent.max())}


def _placement_metrics(table: PathTable, jobs: Sequence[Job], placements: Sequence[np.ndarray], cost: np.ndarray) -> dict[str, Any]:
    flows = FlowSet.concat([FlowSet.from_traffic(j.traffic, p) for j, p in zip(jobs, placements, strict=True)])
    hosts = table.hosts
    switch = np.array([table.crosses_switches(s, d) for s, d in zip(flows.src.tolist(), flows.dst.tolist(), strict=True)], bool)
    return {
        "cut_cost_s": float(sum(cut_cost(j.traffic, p, cost) for j, p in zip(jobs, placements, strict=True))),
        "cut_cost_s_per_job": {j.id: cut_cost(j.traffic, p, cost) for j, p in zip(jobs, placements, strict=True)},
        "cross_node_bytes": float(flows.nbytes[hosts[flows.src] != hosts[flows.dst]].sum()),
        "cross_switch_bytes": float(flows.nbytes[switch].sum()) if flows.n else 0.0,
        "total_bytes": float(flows.nbytes.sum()),
    }


def _changed(config: NvlinkConfig, names: Sequence[str]) -> list[str]:
    """Those of ``names`` whose value differs from the field's default (what the user actually set)."""
    return [n for n in names if getattr(config, n) != type(config).model_fields[n].default]


def _settings_without_effect(config: NvlinkConfig, logs_given: bool, n_flows: int) -> list[str]:
    """One diagnostic per setting that was changed from its default but cannot act in this combination."""
    rules = [
        (("qaoa_layers", "qaoa_blocks", "qaoa_steps", "quantum_time_budget_s"), not config.qaoa_optimizer,
         "only the QAOA recolouring uses them and qaoa_optimizer is off"),
        (("rl_episodes",), not config.rl_planner, "rl_planner is off"),
        (("classifier_samples", "quantum_kernel"), not config.classifier, "classifier is off"),
        (("classifier_samples",), config.classifier and logs_given, "the classifier trains on the uploaded logs, not simulated runs"),
    ]
    notes = [f"{', '.join(changed)} set but without effect: {why}" for names, active, why in rules
             if active and (changed := _changed(config, names))]
    if logs_given and not config.classifier:
        notes.append("logs were given but the classifier is off: they were validated and not used")
    if config.rl_planner and n_flows == 0:
        notes.append("rl_planner without effect: the jobs have no transfers to route")
    return notes


def _requested(config: NvlinkConfig) -> str:
    return "qaoa" if config.qaoa_optimizer else "classical"


def _record_quantum_kernel(config: NvlinkConfig, solver: SolverReport, classifier: dict[str, Any] | None) -> None:
    """``+quantum_kernel`` in ``solver.ran`` only when its calls were used; otherwise a fallback with the measured effect."""
    if not (config.quantum_kernel and config.classifier):
        return
    kernel = (classifier or {}).get("quantum_kernel")
    if kernel is not None and kernel["adopted"]:
        solver.ran += "+quantum_kernel"
        return
    if kernel is None:
        reason = "the classifier was not trained (its logs hold one class)"
    elif "unavailable" in kernel:
        reason = kernel["unavailable"]
    else:
        q, c = kernel["quantum"], kernel["rbf"]
        reason = (f"held-out accuracy {q['held_out_accuracy']:.3f} (balanced {q['held_out_balanced_accuracy']:.3f}) is not above "
                  f"the RBF SVC's {c['held_out_accuracy']:.3f} (balanced {c['held_out_balanced_accuracy']:.3f}) on the same split: "
                  "the RBF SVC makes the calls")
    solver.fallbacks.append(Fallback(**{"from": "quantum_kernel", "to": "rbf_svc", "reason": reason}))


def plan_nvlink(
    fabric: Fabric | Mapping[str, Any] | str,
    jobs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    config: NvlinkConfig | Mapping[str, Any] | None = None,
    *,
    logs: pd.DataFrame | None = None,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
    model: ModelArtifact | None = None,
) -> Plan:
    """Place jobs' ranks on a fabric, schedule their transfers in rounds and route the flows.

    Parameters
    ----------
    fabric : Fabric, node-link mapping, or ``nvidia-smi topo -m`` text
    jobs : mapping ``{"jobs": [...]}`` or list of job mappings
        See :func:`qflow.nvlink.parse_jobs`.
    config : NvlinkConfig or mapping, optional
    logs : DataFrame, optional
        Contention logs to train the classifier on instead of simulated ones.
    digests : list of InputDigest, optional
        Digests of the files the inputs came from (front ends pass them).
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    Plan
        ``result.placement`` (job -> rank -> GPU id), ``result.rounds``
        (job -> rounds of ``{src, dst, bytes}``), ``result.link_utilisation``,
        ``result.routing``; ``metrics`` (max link utilisation, cut cost,
        cross-switch and cross-node bytes, rounds vs lower bound, estimated
        collective time); ``baselines`` round-robin and random placement,
        greedy colouring, shortest-path routing.

    Examples
    --------
    >>> from qflow.nvlink._sample import dgx_h100_fabric
    >>> plan = plan_nvlink(dgx_h100_fabric(), {"jobs": [{"id": "p", "ranks": 4, "pattern": "pipeline", "bytes": 1e6}]},
    ...                    {"classifier": False, "rl_planner": False})
    >>> plan.metrics["rounds"], plan.metrics["rounds_lower_bound"]
    (4, 4)
    """
    run = PlanRun.start("nvlink", config, NvlinkConfig, requested=_requested_path, digests=digests, progress=progress)
    config = run.config
    run.solver.ran = _requested(config)
    fabric, job_list = _validate(run, fabric, jobs, digests)
    with run.stage("paths", 0.05, "path options and pair costs"):
        table, cost, tie_cost = _pair_costs(fabric, config, run.progress)
    with run.stage("placement", 0.15, "placement (recursive bisection + swap refinement)"):
        placements = _place(job_list, tie_cost, table.hosts, config, run.diagnostics)
    with run.stage("baseline_placements"):
        rr = round_robin_placement(job_list, table.hosts)
        rnd = random_placement(job_list, fabric.n_gpus, config.seed)
    run.progress(0.3, "transfer rounds (edge colouring)")
    quantum_solver = _qaoa_block_solver(run) if config.qaoa_optimizer else None
    with run.stage("rounds"):
        rounds = _schedule_rounds(job_list, config, quantum_solver or solve_block_exactly, run.progress)
    with run.stage("simulate", 0.45, "flow simulation (weighted ECMP)"):
        work = _workload(table, rounds.transfers, rounds.colourings, placements)
        routing = _route_by_ecmp(table, work, config.alpha_us)
    if config.rl_planner and work.flows.n:
        with run.stage("rl", 0.55, f"RL path planner ({config.rl_episodes} episodes)"):
            _route_by_rl(table, work, config, routing, run)
    classifier_report = None
    if config.classifier:
        with run.stage("classifier", 0.7, "contention classifier (SVM)"):
            classifier_report = _classify(table, work, routing.weights, job_list, rr, rounds.transfers, rounds.colourings, logs,
                                          config, run.diagnostics, run.progress, run.timer.timings_s, loaded=model)
    elif model is not None:
        run.note(f"model {model.source} given but the classifier is off: it was checked and not used")
    with run.stage("baselines", 0.85, "baselines"):
        run.baselines = _baselines(table, job_list, rounds.transfers, rounds.colourings, rounds.greedy, rr, rnd, cost, work,
                                   routing.shortest_eval, config)
    _report_paths(run, quantum_solver, rounds.recolour, classifier_report, logs is not None, work.flows.n)
    with run.stage("result"):
        result, metrics = _plan_body(fabric, table, job_list, placements, cost, rounds, work, routing, quantum_solver,
                                     classifier_report)
    return run.finish(result, metrics)


def _requested_path(config: NvlinkConfig) -> str:
    """The requested path: ``qaoa`` or ``classical``, plus ``+quantum_kernel`` when the classifier may use it."""
    return _requested(config) + ("+quantum_kernel" if config.quantum_kernel and config.classifier else "")


def _validate(run: PlanRun, fabric: Fabric | Mapping[str, Any] | str, jobs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
              digests: list[InputDigest] | None) -> tuple[Fabric, list[Job]]:
    """Stage ``validate``: the parsed fabric and jobs (checked against its GPUs); digests when the caller gave none."""
    names = input_sources(digests)
    with run.stage("validate"):
        if not isinstance(fabric, Fabric):
            fabric = parse_fabric(fabric, names.get("fabric", "fabric"))
        job_list = parse_jobs(jobs, names.get("jobs", "jobs"), fabric.n_gpus)
    if digests is None:
        run.digests = [digest_mapping({"gpus": list(fabric.gpus), "links": sorted(map(sorted, fabric.graph.edges()))}, "fabric"),
                       digest_mapping(jobs if isinstance(jobs, Mapping) else {"jobs": list(jobs)}, "jobs")]
    return fabric, job_list


def _pair_costs(fabric: Fabric, config: NvlinkConfig, report: Progress) -> tuple[PathTable, np.ndarray, np.ndarray]:
    """Path options, the (G, G) pair cost in seconds per byte, and the same with the cross-host tie-break."""
    table = PathTable(fabric, config.max_paths)
    cost = table.cost_matrix(np.arange(fabric.n_gpus),
                             heartbeat=lambda a, k: report(0.05 + 0.1 * a / k, f"pair costs: GPU {a + 1}/{k}"))
    hosts = table.hosts
    tie_cost = cost * (1.0 + HOST_TIE_BREAK * (hosts[:, None] != hosts[None, :]))
    return table, cost, tie_cost


def _place(jobs: Sequence[Job], tie_cost: np.ndarray, hosts: np.ndarray, config: NvlinkConfig,
           diagnostics: list[str]) -> list[np.ndarray]:
    """Each job's rank -> GPU index array; metis falls back to Kernighan-Lin (with a diagnostic) without pymetis."""
    partitioner = config.partitioner
    if partitioner == "metis" and importlib.util.find_spec("pymetis") is None:
        diagnostics.append("partitioner metis: pymetis is not installed; Kernighan-Lin bisection was used")
        partitioner = "kernighan_lin"
    return place_jobs(jobs, tie_cost, hosts, partitioner, config.seed, config.refine_passes)


def _qaoa_block_solver(run: PlanRun) -> QaoaBlockSolver | None:
    """The QAOA recolouring solver on the chosen device, or ``None`` with the fallback recorded."""
    config = run.config
    budget = quantum_budget(config, heartbeat=lambda: run.progress(0.3, "transfer rounds (QAOA blocks)"))
    return quantum_step(
        run.solver,
        lambda device, budget: QaoaBlockSolver(device, budget, config.qaoa_layers, config.qaoa_steps, config.qaoa_blocks,
                                               config.seed),
        budget, fallback_to="classical",
    )


@dataclass
class _Rounds:
    """Per job: its transfers, their round (colour) per transfer, the method that coloured them, the recolouring
    counts, and first-fit greedy colours (the baseline)."""

    transfers: list[Transfers]
    colourings: list[np.ndarray]
    methods: list[str]
    recolour: list[dict[str, int]]
    greedy: list[np.ndarray]


def _schedule_rounds(jobs: Sequence[Job], config: NvlinkConfig, block_solver: Any, report: Progress) -> _Rounds:
    """Colour each job's transfers into rounds, then empty the last rounds with ``block_solver`` down to the lower bound."""
    transfers = [transfers_of(j.traffic, config.full_duplex) for j in jobs]
    rounds = _Rounds(transfers, [], [], [], [])
    for i, t in enumerate(transfers):
        report(0.3 + 0.15 * i / len(transfers), f"transfer rounds: job {i + 1}/{len(transfers)}")
        colour, method = colour_transfers(t, config.seed)
        before = n_colours(colour)
        stats = {"blocks": 0, "moved": 0, "rounds_removed": 0}
        if before > lower_bound(t):
            colour, stats = empty_last_rounds(t, colour, block_solver, min(config.max_qubits, 20))
        assert is_proper(t, colour)
        rounds.colourings.append(colour)
        rounds.methods.append(method)
        rounds.recolour.append({**stats, "rounds_before": before, "rounds_after": n_colours(colour)})
        rounds.greedy.append(first_fit(t, np.arange(t.m)))
    return rounds


@dataclass
class _Routing:
    """The flows' path weights (flows, options), the policy they follow and its evaluation; the RL run when any."""

    weights: np.ndarray
    policy: str
    plan_eval: dict[str, Any]
    shortest_eval: dict[str, Any]
    rl_result: Any = None
    rl_vs_ecmp: tuple[float, float] | None = None


def _route_by_ecmp(table: PathTable, work: _Workload, alpha_us: float) -> _Routing:
    """Weighted ECMP (the plan's routing unless RL beats it), evaluated with shortest-path routing beside it."""
    ecmp = work.paths.ecmp_weights()
    plan_eval = _evaluate(table, work, ecmp, alpha_us)
    shortest_eval = _evaluate(table, work, _one_hot(work.paths, np.zeros(work.flows.n, dtype=int)), alpha_us)
    return _Routing(ecmp, "weighted_ecmp", plan_eval, shortest_eval)


def _route_by_rl(table: PathTable, work: _Workload, config: NvlinkConfig, routing: _Routing, run: PlanRun) -> None:
    """Learn one path per flow; ``routing`` takes it only when its estimated collective time beats weighted ECMP's."""
    rl_result = learn_paths(table, work.flows, config.rl_episodes, config.seed, config.alpha_us,
                            heartbeat=lambda e, n: run.progress(0.55 + 0.15 * e / n, f"RL path planner: episode {e + 1}/{n}"))
    rl_weights = _one_hot(work.paths, rl_result.choice)
    rl_eval = _evaluate(table, work, rl_weights, config.alpha_us)
    ecmp_s = routing.plan_eval["estimated_collective_time_s"]
    routing.rl_result, routing.rl_vs_ecmp = rl_result, (rl_eval["estimated_collective_time_s"], ecmp_s)
    if rl_eval["estimated_collective_time_s"] < ecmp_s:
        routing.weights, routing.policy, routing.plan_eval = rl_weights, "rl_q_learning", rl_eval
    else:
        run.note(f"RL routing ({rl_eval['estimated_collective_time_s']:.4g} s) did not beat weighted ECMP "
                 f"({ecmp_s:.4g} s): the plan routes by weighted ECMP")


def _report_paths(run: PlanRun, quantum_solver: QaoaBlockSolver | None, recolour: list[dict[str, int]],
                  classifier: dict[str, Any] | None, logs_given: bool, n_flows: int) -> None:
    """The solver report's quantum part and kernel record, and the notes on settings that had no effect."""
    quantum = _quantum_report(quantum_solver, run.solver, recolour)
    if quantum is not None:
        run.solver.quantum = quantum
    _record_quantum_kernel(run.config, run.solver, classifier)
    run.diagnostics.extend(_settings_without_effect(run.config, logs_given, n_flows))


def _plan_body(fabric: Fabric, table: PathTable, jobs: Sequence[Job], placements: Sequence[np.ndarray], cost: np.ndarray,
               rounds: _Rounds, work: _Workload, routing: _Routing, quantum_solver: QaoaBlockSolver | None,
               classifier: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stage ``result``: the plan's ``(result, metrics)``."""
    metrics = _metrics(table, jobs, rounds.transfers, rounds.colourings, placements, cost, routing.plan_eval, rounds.recolour,
                       routing.policy)
    if quantum_solver is not None:
        metrics["recolouring_moves_from_qaoa"] = quantum_solver.moves_applied
    result = _result(fabric, table, jobs, placements, rounds, work, routing, classifier)
    result["learned_components"] = _learned_components(routing.rl_vs_ecmp, classifier)
    if routing.rl_result is not None:
        result["rl"]["adopted"] = routing.policy == "rl_q_learning"
    return result, metrics


def _classify(table: PathTable, work: _Workload, weights: np.ndarray, jobs: Sequence[Job], rr: Sequence[np.ndarray],
              transfers: Sequence[Transfers], colourings: Sequence[np.ndarray], logs: pd.DataFrame | None,
              config: NvlinkConfig, diagnostics: list[str], report: Progress, timings: dict[str, float],
              loaded: ModelArtifact | None = None) -> dict[str, Any] | None:
    if loaded is not None:
        from qflow.nvlink._train import classifier_from_artifact

        source, data, model = "loaded model", None, classifier_from_artifact(loaded)
        diagnostics.append(f"contention classifier: trained: no, loaded from {loaded.source} (card sha256 {loaded.card_sha256[:12]})")
    else:
        source = "uploaded" if logs is not None else "simulated"
        data = logs if logs is not None else simulate_logs(
            table, config.classifier_samples, config.seed, [j.traffic for j in jobs],
            heartbeat=lambda i, n: report(0.7 + 0.15 * i / n, f"contention classifier: simulated run {i + 1}/{n}"))
        started = time.perf_counter()
        model = train_classifier(data, config.seed)
        timings["classifier_rbf_fit"] = round(time.perf_counter() - started, 6)
    if model is None:
        diagnostics.append(f"classifier not trained: the {source} logs hold fewer than 2 runs of one class")
        return None
    rr_work = _workload(table, transfers, colourings, rr)
    cases = {
        "plan": (work, weights),
        "round_robin": (rr_work, rr_work.paths.ecmp_weights()),
        "shortest_path": (work, _one_hot(work.paths, np.zeros(work.flows.n, dtype=int))),
    }
    features = {name: features_of(table, w.flows, w.paths, wt) for name, (w, wt) in cases.items()}
    figures, calls = dict(model.report), {name: model.predict(f) for name, f in features.items()}
    kernel = _quantum_kernel(data, config, model, features, report, timings) if config.quantum_kernel and data is not None else None
    if config.quantum_kernel and data is None:
        diagnostics.append("quantum_kernel: the comparison needs the training runs, which a loaded model does not carry: not run")
    if kernel is not None and kernel["adopted"]:
        figures.update(model="SVC on the quantum kernel (precomputed, C=10, balanced)", **kernel.pop("calls_and_figures"))
        calls = figures.pop("calls")
    trusted = figures["held_out_accuracy"] > figures["majority_class_accuracy"]
    if not trusted:
        diagnostics.append(f"contention classifier: held-out accuracy {figures['held_out_accuracy']:.3f} does not beat "
                           f"always answering the majority class ({figures['majority_class_accuracy']:.3f}) on "
                           f"{figures['n_test']} held-out {source} runs; its congestion calls are not used (congested: null)")
    predictions = {}
    for name, (w, wt) in cases.items():
        congested, slowdown = label_of(table, w.flows, w.paths, wt)
        call = calls[name]
        predictions[name] = {"congested": call["congested"] if trusted else None, "model_call": call["congested"],
                             "score": call["score"], "simulated_congested": bool(congested), "simulated_slowdown": slowdown,
                             "features": features[name]}
    out = {**figures, "logs": source, "log_rows": int(len(data)) if data is not None else figures.get("log_rows"), "acted_on": trusted,
           "predictions": predictions}
    if loaded is not None:
        out["trained_model"] = {**loaded.describe(), "component": "contention classifier (RBF SVM)", "used": True}
    if kernel is not None:
        out["quantum_kernel"] = kernel
    return out


def _quantum_kernel(data: pd.DataFrame, config: NvlinkConfig, rbf: Any, features: dict[str, dict[str, float]],
                    report: Progress, timings: dict[str, float]) -> dict[str, Any]:
    """The quantum-kernel SVC against the RBF one on the same split (see :mod:`qflow.nvlink._kernel`).

    When adopted, ``calls_and_figures`` carries its calls on ``features`` and
    its held-out figures for the plan to use; a refusal of the quantum budget
    (qubits, memory, time) leaves the RBF model in charge, with the reason.
    """
    def fit_and_call(device: QuantumDevice, budget: QuantumBudget) -> dict[str, Any]:
        model, kernel, fit_s = compare_kernels(data, config.seed, rbf, device, budget)
        timings["quantum_kernel_fit"] = round(fit_s, 6)
        if kernel["adopted"]:
            calls = {name: model.predict(f) for name, f in features.items()}
            q = kernel["quantum"]
            kernel["calls_and_figures"] = {"calls": calls, "held_out_accuracy": q["held_out_accuracy"],
                                           "held_out_balanced_accuracy": q["held_out_balanced_accuracy"],
                                           "confusion_matrix": q["confusion_matrix"]}
        return kernel

    # The plan's own record of the kernel (a fallback from quantum_kernel to rbf_svc) is written by
    # _record_quantum_kernel, with the other reasons it can lose; this record only carries the reason.
    record = SolverReport(requested="quantum_kernel", ran="quantum_kernel")
    budget = quantum_budget(config, heartbeat=lambda: report(0.85, "contention classifier: quantum kernel states"))
    kernel = quantum_step(record, fit_and_call, budget, fallback_to="rbf_svc")
    return kernel if kernel is not None else {"adopted": False, "unavailable": record.fallbacks[-1].reason}


def _baselines(table: PathTable, jobs: Sequence[Job], transfers: Sequence[Transfers], colourings: Sequence[np.ndarray],
               greedy: Sequence[np.ndarray], rr: Sequence[np.ndarray], rnd: Sequence[np.ndarray], cost: np.ndarray,
               work: _Workload, shortest_eval: dict[str, Any], config: NvlinkConfig) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, placements in (("round_robin", rr), ("random", rnd)):
        w = _workload(table, transfers, colourings, placements)
        ev = _evaluate(table, w, w.paths.ecmp_weights(), config.alpha_us)
        out[name] = {**_placement_metrics(table, jobs, placements, cost), "max_link_utilisation": ev["max_link_utilisation"],
                     "estimated_collective_time_s": ev["estimated_collective_time_s"], "concurrent_time_s": ev["concurrent_time_s"]}
    gw = _Workload(work.flows, work.job, work.src_rank, work.dst_rank, np.concatenate(list(greedy)).astype(int), work.paths)
    gev = _evaluate(table, gw, work.paths.ecmp_weights(), config.alpha_us)
    out["greedy_colouring"] = {
        "rounds": max((n_colours(g) for g in greedy), default=0),
        "rounds_per_job": {j.id: n_colours(g) for j, g in zip(jobs, greedy, strict=True)},
        "rounds_lower_bound": max((lower_bound(t) for t in transfers), default=0),
        "estimated_collective_time_s": gev["estimated_collective_time_s"],
    }
    out["shortest_path"] = {
        "max_link_utilisation": shortest_eval["max_link_utilisation"],
        "estimated_collective_time_s": shortest_eval["estimated_collective_time_s"],
        "concurrent_time_s": shortest_eval["concurrent_time_s"],
        "max_link_busy_s": float(shortest_eval["link_busy_s"].max(initial=0.0)),
    }
    return out


def _metrics(table: PathTable, jobs: Sequence[Job], transfers: Sequence[Transfers], colourings: Sequence[np.ndarray],
             placements: Sequence[np.ndarray], cost: np.ndarray, ev: dict[str, Any], recolour: list[dict[str, int]],
             policy: str) -> dict[str, Any]:
    rounds = {j.id: n_colours(c) for j, c in zip(jobs, colourings, strict=True)}
    bounds = {j.id: lower_bound(t) for j, t in zip(jobs, transfers, strict=True)}
    flows = FlowSet.concat([FlowSet.from_traffic(j.traffic, p) for j, p in zip(jobs, placements, strict=True)])
    return {
        **_placement_metrics(table, jobs, placements, cost),
        "max_link_utilisation": ev["max_link_utilisation"],
        "max_link_busy_s": float(ev["link_busy_s"].max(initial=0.0)),
        "estimated_collective_time_s": ev["estimated_collective_time_s"],
        "concurrent_time_s": ev["concurrent_time_s"],
        "injection_bound_s": injection_bound_s(table, flows),
        "ideal_time_s": ev["ideal_time_s"],
        "rounds": max(rounds.values(), default=0),
        "rounds_lower_bound": max(bounds.values(), default=0),
        "rounds_per_job": rounds,
        "rounds_lower_bound_per_job": bounds,
        "rounds_at_lower_bound": all(rounds[k] == bounds[k] for k in rounds),
        "rounds_removed_by_recolouring": sum(r["rounds_removed"] for r in recolour),
        "routing_policy": policy,
        "n_jobs": len(jobs),
        "n_ranks": sum(j.ranks for j in jobs),
        "n_transfers": int(sum(t.m for t in transfers)),
    }


def _link_rows(table: PathTable, ev: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for link in np.flatnonzero(ev["link_busy_s"] > 0).tolist():
        a, b = table.link_ends[link]
        rows.append({"source": a, "target": b, "utilisation": round(float(ev["link_utilisation"][link]), 6),
                     "busy_s": float(f"{ev['link_busy_s'][link]:.6g}"), "bandwidth_gbps": float(table.capacity_gbps[link])})
    rows.sort(key=lambda r: -r["utilisation"])
    return rows


def _routing_rows(table: PathTable, jobs: Sequence[Job], work: _Workload, weights: np.ndarray) -> list[dict[str, Any]]:
    gpus = table.fabric.gpus
    rows = []
    for f in range(work.flows.n):
        s, d = int(work.flows.src[f]), int(work.flows.dst[f])
        options = table.node_paths(s, d)
        used = np.flatnonzero(weights[f] > 0).tolist()
        shares = [round(float(weights[f, a]), 6) for a in used]
        rows.append({"job": jobs[int(work.job[f])].id, "src_rank": int(work.src_rank[f]), "dst_rank": int(work.dst_rank[f]),
                     "src_gpu": gpus[s], "dst_gpu": gpus[d],
                     "via": [">".join(options[a][1:-1]) for a in used],
                     "weights": "equal" if len(set(shares)) == 1 else shares})
    return rows


def _result(fabric: Fabric, table: PathTable, jobs: Sequence[Job], placements: Sequence[np.ndarray], rounds: _Rounds,
            work: _Workload, routing: _Routing, classifier: dict[str, Any] | None) -> dict[str, Any]:
    """The plan's ``result``: placement, rounds, round and job times, link utilisation, per-flow routing, RL and classifier."""
    transfers, colourings, ev, rl = rounds.transfers, rounds.colourings, routing.plan_eval, routing.rl_result
    gpus = fabric.gpus
    result: dict[str, Any] = {
        "fabric": {**fabric.describe(), "graph": fabric.graph_data()},
        "gpus": list(gpus),
        "gpu_hosts": fabric.hosts(),
        "jobs": [{"id": j.id, "ranks": j.ranks, "pattern": j.pattern, "total_bytes": j.total_bytes} for j in jobs],
        "placement": {j.id: [gpus[g] for g in p.tolist()] for j, p in zip(jobs, placements, strict=True)},
        "rounds": {j.id: rounds_of(t, c) for j, t, c in zip(jobs, transfers, colourings, strict=True)},
        "colouring": {j.id: {"method": m, **r} for j, m, r in zip(jobs, rounds.methods, rounds.recolour, strict=True)},
        "round_times_s": {j.id: ev["job_round_times_s"][i] if i < len(ev["job_round_times_s"]) else []
                          for i, j in enumerate(jobs)},
        "job_times_s": {j.id: ev["job_times_s"][i] if i < len(ev["job_times_s"]) else 0.0 for i, j in enumerate(jobs)},
        "link_utilisation": _link_rows(table, ev),
        "routing": {"policy": routing.policy, "format": "per flow: 'via' lists the intermediate nodes of each path (src and dst GPUs "
                    "left out), 'weights' the share of the flow's bytes on each ('equal': the same on all)",
                    "flows": _routing_rows(table, jobs, work, routing.weights)},
    }
    if rl is not None:
        result["rl"] = {"agents": rl.agents, "episodes": len(rl.reward_curve), "reward_curve": [round(v, 6) for v in rl.reward_curve],
                        "time_curve_s": rl.time_curve_s, "final_reward": rl.final_reward, "final_concurrent_time_s": rl.final_time_s,
                        "shortest_path_reward": rl.shortest_path_reward, "shortest_path_concurrent_time_s": rl.shortest_path_time_s}
    if classifier is not None:
        result["classifier"] = classifier
    return result


def _learned_components(rl_vs_ecmp: tuple[float, float] | None, classifier: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each learned part against its trivial baseline, and whether the plan acted on it (the page shows this table).

    The RL routing is used only when its estimated collective time is below
    weighted ECMP's; the classifier's calls only when its held-out accuracy is
    above the majority class's.
    """
    rows = []
    if rl_vs_ecmp is not None:
        rl_s, ecmp_s = rl_vs_ecmp
        rows.append({"component": "rl_planner", "measure": "estimated_collective_time_s (lower is better)", "value": rl_s,
                     "baseline": "weighted_ecmp", "baseline_value": ecmp_s, "beats_baseline": rl_s < ecmp_s, "acted_on": rl_s < ecmp_s})
    if classifier is not None:
        rows.append({"component": "contention_classifier", "measure": "held_out_accuracy (higher is better)",
                     "value": classifier["held_out_accuracy"], "baseline": "majority_class",
                     "baseline_value": classifier["majority_class_accuracy"], "beats_baseline": classifier["acted_on"],
                     "acted_on": classifier["acted_on"]})
    kernel = (classifier or {}).get("quantum_kernel")
    if kernel is not None and "quantum" in kernel:
        rows.append({"component": "quantum_kernel", "measure": "held_out_accuracy (higher is better)",
                     "value": kernel["quantum"]["held_out_accuracy"], "baseline": "rbf_svc",
                     "baseline_value": kernel["rbf"]["held_out_accuracy"], "beats_baseline": kernel["adopted"],
                     "acted_on": kernel["adopted"] and classifier["acted_on"]})
    return rows


def _quantum_report(qs: QaoaBlockSolver | None, solver: SolverReport, recolour: list[dict[str, int]]) -> QuantumReport | None:
    if qs is None:
        return None
    if not qs.blocks:
        blocks_total = sum(r["blocks"] for r in recolour)
        reason = qs.stopped or ("no recolouring block was needed: every job's rounds already meet the lower bound or "
                                "move directly" if blocks_total == 0 else "no QAOA block ran")
        solver.fall_back("qaoa", "classical", reason)
        return None
    if qs.moves_applied == 0:
        optimal = sum(1 for b in qs.blocks if b["optimal"])
        solver.fall_back("qaoa", "classical", f"QAOA ran on {len(qs.blocks)} recolouring blocks ({optimal} reached the "
                         "brute-force optimum) but no move was applied from its answers: the rounds are the exact block "
                         "solver's" + (f"; {qs.stopped}" if qs.stopped else ""))
    elif qs.stopped:
        solver.fall_back("qaoa", "qaoa+exact", qs.stopped)
    return QuantumReport(
        device=qs.device.name, device_reason=qs.device.reason, layers=qs.layers,
        qubits_per_circuit=[b["qubits"] for b in qs.blocks], circuits_run=qs.circuits,
        optimizer_steps=[b["steps"] for b in qs.blocks], block_ratios=[b["ratio"] for b in qs.blocks],
        exact_checked=[True] * len(qs.blocks), convergence=[b["history"] for b in qs.blocks],
        blocks=[{k: v for k, v in b.items() if k != "history"} for b in qs.blocks] + (
            [{"exact_only_blocks": qs.exact_only}] if qs.exact_only else []),
    )
