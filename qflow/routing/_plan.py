"""``plan_routing``: the routing module's one entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from qflow.core.cluster import scheduler_address
from qflow.core.errors import InputError
from qflow.core.io import digest_frame, digest_mapping, load_table_digested, parse_mapping, read_input
from qflow.core.plan import InputDigest, Plan, QuantumReport, SolverReport
from qflow.core.qaoa import EXACT_MAX_VARIABLES
from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.core.skeleton import PlanRun, input_sources, quantum_budget, quantum_step
from qflow.core.threads import one_torch_thread
from qflow.routing._classical import (
    _stable_order,
    drop_penalty,
    dual_bound,
    exact_optimum,
    greedy_balanced,
    hash_experts,
    hash_route,
    objective,
    route_balanced,
    route_metrics,
    top1_gating,
    utility_matrix,
)
from qflow.routing._measure import cluster_fields, optimum_metrics
from qflow.routing._quantum import classical_drop_in, refine_with_qaoa
from qflow.routing._schemas import ID_COLUMNS, RoutingConfig, RoutingProblem, build_problem

__all__ = ["plan_routing", "plan_routing_layers", "load_routing_inputs", "capacity_sweep", "min_capacity_factor"]

Progress = Callable[[float, str], None]


class _NetworkxOnUse:
    """The ``networkx`` module, imported on first attribute use.

    Only a caller passing an ``nx.Graph`` reaches it (and has imported
    networkx already); the CLI and API read JSON graphs and skip its 0.1 s import.
    """

    def __getattr__(self, name: str) -> Any:
        import networkx

        return getattr(networkx, name)


if TYPE_CHECKING:
    import networkx as nx
else:
    nx = _NetworkxOnUse()


def load_routing_inputs(
    tokens: Any, model_graph: Any, *, tokens_name: str | None = None, model_graph_name: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any], list[InputDigest]]:
    """Load the two routing files (path, bytes or upload) with validation.

    ``tokens`` is CSV or a JSON list (optionally under a ``"tokens"`` key);
    ``model_graph`` is JSON or YAML (native or NetworkX node-link; YAML is
    recognised by a ``.yaml``/``.yml`` name). The ``*_name`` arguments name
    raw bytes in messages and pick their format.
    """
    frame, tokens_digest = load_table_digested(tokens, "tokens", name=tokens_name, records_key="tokens", text_columns=ID_COLUMNS)
    raw_graph = read_input(model_graph, model_graph_name)
    graph = parse_mapping(raw_graph)
    return frame, graph, [tokens_digest, raw_graph.digest("model_graph")]


def min_capacity_factor(problem: RoutingProblem) -> float | None:
    """Smallest ``capacity_factor`` at which total capacity holds every token.

    ``None`` when the experts' own capacity limits cannot hold them at any
    factor. (With uneven complexities, packing can still need a little more.)
    """
    total = float(problem.complexity.sum())
    limit = problem.graph.expert_capacity_limit
    if np.minimum(limit, np.inf).sum() < total - 1e-9:
        return None
    lo, hi = 1e-6, 64.0
    if problem.capacity(hi).sum() < total - 1e-9:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        if problem.capacity(mid).sum() >= total - 1e-9:
            hi = mid
        else:
            lo = mid
    return float(np.ceil(hi * 1e4) / 1e4)


def _as_frame(tokens: Any, name: str) -> pd.DataFrame:
    if isinstance(tokens, pd.DataFrame):
        return tokens
    if isinstance(tokens, Sequence) and not isinstance(tokens, (str, bytes)) and all(isinstance(t, Mapping) for t in tokens):
        return pd.DataFrame.from_records(list(tokens))
    raise InputError(name, "(top level)", "wrong type", "a DataFrame or a list of token records", type(tokens).__name__)


def _requested_path(config: RoutingConfig) -> str:
    if config.top_k > 1 and not config.qaoa and not config.deterministic_fallback:
        return "classical-topk"
    if config.qaoa:
        return "qaoa+hqc" if config.hqc else "qaoa"
    return "hash" if config.deterministic_fallback else "classical"


def plan_routing(
    tokens: pd.DataFrame | Sequence[Mapping[str, Any]],
    model_graph: Mapping[str, Any] | nx.Graph,
    config: RoutingConfig | Mapping[str, Any] | None = None,
    *,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Assign MoE tokens to experts under capacity, with locality.

    Parameters
    ----------
    tokens : DataFrame or list of dicts
        One row per token: ``token_id`` (required, unique), ``source``,
        ``complexity``, ``scores`` or ``score_0..score_{E-1}``, ``hint``,
        ``padding``; other columns are carried, not used.
    model_graph : dict or networkx.Graph
        Experts, nodes and links (see :func:`qflow.routing.parse_model_graph`).
    config : RoutingConfig or mapping, optional
    digests : list of InputDigest, optional
        Digests of the files the inputs came from (front ends pass them).
    progress : callable, optional
        ``progress(fraction, message)`` for long work.

    Returns
    -------
    Plan
        ``result.assignments`` maps token id to expert id (``None`` if dropped).

    Examples
    --------
    >>> graph = {"nodes": [{"id": "n0"}, {"id": "n1"}],
    ...          "experts": [{"id": "e0", "node": "n0"}, {"id": "e1", "node": "n1"}]}
    >>> tokens = [{"token_id": i, "source": "n0", "scores": [0.9, 0.1]} for i in range(4)]
    >>> plan = plan_routing(tokens, graph, {"capacity_factor": 1.0})
    >>> plan.metrics["expert_load"], plan.metrics["dropped_tokens"]
    ([2.0, 2.0], 0)
    """
    if not isinstance(config, RoutingConfig):
        config = RoutingConfig.from_mapping(config, "config")
    # The routers are numpy and compiled loops; the top-k baselines, the online baseline and QAOA use
    # torch, on one thread (OpenMP waits dominate on a busy 2-core machine).
    with one_torch_thread() if _uses_torch(config) else nullcontext():
        return _plan_routing(tokens, model_graph, config, digests, progress)


def _uses_torch(config: RoutingConfig) -> bool:
    """Whether this config reaches torch code (the routers themselves never import it; some baselines and QAOA do)."""
    return config.qaoa or bool(config.baselines and (config.top_k > 1 or config.aux_free_steps))


def _plan_routing(tokens, model_graph, config: RoutingConfig, digests: list[InputDigest] | None, progress: Progress | None) -> Plan:
    """Body of :func:`plan_routing` (validated config), as its list of named stages."""
    frame = _as_frame(tokens, "tokens")
    run = PlanRun.start("routing", config, RoutingConfig, requested=_requested_path, digests=digests, progress=progress)
    problem = _validate(run, frame, model_graph, digests)
    run.diagnostics.extend([*problem.notes, *_toggle_notes(config)])
    if config.top_k > 1:
        return _plan_topk(run, problem)
    w = problem.complexity
    capacity = problem.capacity(config.capacity_factor)
    with run.stage("utility", 0.05, "building utilities"):
        u = utility_matrix(problem, config.locality_weight)
        penalty = drop_penalty(u)
    baselines = _start_baselines(problem, u, w, capacity, penalty, config) if config.baselines else None
    run.solver.ran = "classical"
    with run.stage("route", 0.15, "routing"):
        expert, prices, router_iterations = _route(run.solver, problem, u, capacity, penalty, config)
    if config.qaoa:
        with run.stage("qaoa", 0.35, "QAOA refinement"):
            expert, _ = _run_quantum(problem, u, w, expert, capacity, config, run.solver, run.diagnostics,
                                     heartbeat=lambda: run.progress(0.35, "QAOA refinement"))
    run.progress(0.6, "measuring against the optimum")
    metrics = route_metrics(problem, expert, u, capacity, penalty)
    metrics.update(_optimum_metrics(run, problem, u, expert, capacity, penalty, prices))
    metrics["router_iterations"] = router_iterations
    metrics["expert_capacity"] = [round(float(c), 6) for c in capacity]
    metrics.update(_quantum_metrics(run.solver.quantum, config))
    if baselines is not None:
        with run.stage("baselines", 0.75, "baselines"):
            run.baselines = baselines()
    with run.stage("result"):
        result = _result(problem, expert, capacity, config)
    return run.finish(result, metrics)


def _validate(run: PlanRun, frame: pd.DataFrame, model_graph: Mapping[str, Any] | nx.Graph,
              digests: list[InputDigest] | None) -> RoutingProblem:
    """Stages ``validate`` (the checked problem) and, when the caller passed no digests, ``digest``.

    The frame's digest is taken on a second thread while the frame is
    validated (hashing releases the GIL; neither writes to the frame), so
    ``digest`` is the time the call still waited for it afterwards.
    """
    names = input_sources(digests)
    pool = ThreadPoolExecutor(1, thread_name_prefix="qflow-digest") if digests is None else None
    try:
        pending = pool.submit(digest_frame, frame, "tokens") if pool else None
        with run.stage("validate"):
            problem = build_problem(frame, model_graph, run.config, names.get("tokens", "tokens"),
                                    names.get("model_graph", "model_graph"))
        if pending is not None:
            with run.stage("digest"):
                graph_data = model_graph if isinstance(model_graph, Mapping) else nx.node_link_data(model_graph, edges="links")
                run.digests = [pending.result(), digest_mapping(graph_data, "model_graph")]
    finally:
        if pool is not None:
            pool.shutdown(wait=False)  # a rejected input is reported at once, not after the hash
    return problem


def _route(solver: SolverReport, problem: RoutingProblem, u: np.ndarray, capacity: np.ndarray, penalty: float,
           config: RoutingConfig) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Stage ``route``: ``(expert per token, -1 dropped; expert prices or None; router iterations)``.

    The hash router runs only when asked for with qaoa off (``solver.ran`` says so).
    """
    if config.deterministic_fallback and not config.qaoa:
        solver.ran = "hash"
        return hash_route(problem.token_ids, problem.complexity, capacity), None, 0
    balanced = route_balanced(u, problem.complexity, capacity, penalty=penalty)
    return balanced.expert, balanced.prices, balanced.iterations


def _optimum_metrics(run: PlanRun, problem: RoutingProblem, u: np.ndarray, expert: np.ndarray, capacity: np.ndarray,
                     penalty: float, prices: np.ndarray | None) -> dict[str, Any]:
    """Stages ``bound`` and ``exact``: the plan's objective against a certified upper bound and, when small, the optimum."""
    config, w = run.config, problem.complexity
    plan_value = objective(u, w, expert, penalty)
    with run.stage("bound"):
        bound_prices = prices if prices is not None else route_balanced(u, w, capacity, penalty=penalty).prices
        bound = dual_bound(u, w, capacity, bound_prices, penalty)
    return optimum_metrics(bound, plan_value, problem.n_tokens, config.exact_max_tokens, run.stage, run.note,
                           lambda: exact_optimum(u, w, capacity, penalty, prices=bound_prices))


def _quantum_metrics(quantum: QuantumReport | None, config: RoutingConfig) -> dict[str, Any]:
    """QAOA blocks, their mean approximation ratio, circuits run and (qaoa on) the tokens each source moved."""
    ratios = [r for r in quantum.block_ratios if r is not None] if quantum else []
    metrics: dict[str, Any] = {
        "qaoa_blocks": len(quantum.block_ratios) if quantum else 0,
        "qaoa_mean_ratio": float(np.mean(ratios)) if quantum and quantum.block_ratios else None,
        "circuit_evaluations": quantum.circuits_run if quantum else 0,
    }
    if config.qaoa:
        moved = _tokens_moved_by_source(quantum, simulated=config.simulator)
        metrics["tokens_moved_by_qaoa"] = moved["qaoa"]
        metrics["tokens_moved_by_exact_blocks"] = moved["exact"]
    return metrics


def _plan_topk(run: PlanRun, problem: RoutingProblem) -> Plan:
    """``top_k > 1``: the top-k router, its bound and baselines (see :mod:`qflow.routing._plan_topk`)."""
    from qflow.routing._plan_topk import route_and_measure_topk
    from qflow.routing._utility import utility_table

    config = run.config
    with run.stage("utility", 0.05, "building utilities"):
        u = utility_table(problem, config.locality_weight)  # over problem.affinity: no (n, E) copy
        penalty = drop_penalty(np.array(u.extremes, dtype=np.float32))  # the same float32 sums as on the whole table

    run.solver.ran = "classical-topk"
    run.progress(0.15, "routing")
    result, metrics, run.baselines, arrays = route_and_measure_topk(problem, u, penalty, config, run.solver, run.timer,
                                                                     run.diagnostics)
    plan = run.finish(result, metrics)
    plan.arrays.update(arrays)
    return plan


def plan_routing_layers(
    frames: Sequence[pd.DataFrame],
    model_graph: Mapping[str, Any] | nx.Graph,
    config: RoutingConfig | Mapping[str, Any] | None = None,
    *,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
) -> Plan:
    """One routing plan per layer (a (layers, tokens, experts) logits tensor), gathered in one Plan.

    A single layer gives exactly :func:`plan_routing`'s plan. Several give
    ``result.layers`` and ``metrics.layers`` (each layer's own result and
    metrics, with ``layer`` and the path that ran), ``baselines`` per layer
    under ``layer<i>.<name>``, and top-level totals: ``total_affinity``,
    ``dropped_tokens``, ``capacity_violations`` summed; ``load_imbalance``
    and ``gap_to_upper_bound`` the worst layer's.
    """
    if not isinstance(config, RoutingConfig):
        config = RoutingConfig.from_mapping(config, "config")
    if len(frames) == 1:
        return plan_routing(frames[0], model_graph, config, digests=digests, progress=progress)
    address = scheduler_address(config.dask_scheduler)
    cluster = None
    if address is not None:
        from qflow.routing._layers import layer_plans_on_cluster

        plans, cluster = layer_plans_on_cluster(address, frames, model_graph, config, digests, progress=progress)
    else:
        plans = []
        for i, frame in enumerate(frames):
            step = (lambda f, m, i=i: progress((i + f) / len(frames), f"layer {i}: {m}")) if progress else None
            plans.append(plan_routing(frame, model_graph, config, digests=digests, progress=step))
    ran = sorted({p.solver.ran for p in plans})
    solver = plans[0].solver.model_copy(update={"ran": "+".join(ran) if len(ran) > 1 else ran[0], "quantum": None})
    metrics: dict[str, Any] = {
        "layers": [{"layer": i, "solver_ran": p.solver.ran, **p.metrics} for i, p in enumerate(plans)],
        "total_affinity": float(sum(p.metrics["total_affinity"] for p in plans)),
        "dropped_tokens": int(sum(p.metrics["dropped_tokens"] for p in plans)),
        "capacity_violations": int(sum(p.metrics["capacity_violations"] for p in plans)),
        "load_imbalance": float(max(p.metrics["load_imbalance"] for p in plans)),
        "gap_to_upper_bound": float(max(p.metrics["gap_to_upper_bound"] for p in plans)),
        "tokens_routed": int(sum(p.metrics["tokens_routed"] for p in plans)),
        "cross_node_fraction": float(np.mean([p.metrics["cross_node_fraction"] for p in plans])),
    }
    timings: dict[str, float] = {}
    for p in plans:
        for stage, seconds in p.timings_s.items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 6)
    result: dict[str, Any] = {"layers": [{"layer": i, **p.result} for i, p in enumerate(plans)]}
    if cluster is not None:  # which worker planned each layer
        for entry, worker in zip(result["layers"], cluster["layer_workers"], strict=True):
            entry["worker"] = worker
        result["cluster"] = cluster
    plan = Plan(
        module="routing", inputs=plans[0].inputs, config=config.model_dump(), solver=solver,
        result=result,
        metrics=metrics,
        baselines={f"layer{i}.{name}": b for i, p in enumerate(plans) for name, b in p.baselines.items()},
        timings_s=timings,
        diagnostics=[f"layer {i}: {d}" for i, p in enumerate(plans) for d in p.diagnostics],
    )
    # Large layers' per-token arrays, one file for all: layer i's under the prefix its result.per_token names.
    for i, (entry, p) in enumerate(zip(result["layers"], plans, strict=True)):
        plan.arrays.update({f"layer{i}_{name}": array for name, array in p.arrays.items()})
        if p.arrays:
            entry["per_token"]["prefix"] = f"layer{i}_"
    return plan


def _toggle_notes(config: RoutingConfig) -> list[str]:
    """Diagnostics for toggles that do nothing in the given combination."""
    notes = []
    if config.hqc and not config.qaoa:
        notes.append("hqc warm-starts QAOA and has no effect while qaoa is off")
    if config.simulator and not config.qaoa:
        notes.append("simulator replaces QAOA circuits and has no effect while qaoa is off")
    if config.deterministic_fallback and config.qaoa:
        notes.append(
            "deterministic_fallback picks the hash router only when qaoa is off; with qaoa on, a quantum failure "
            "keeps the classical plan already computed (itself deterministic for a given input, config and seed)"
        )
    if config.aux_free_steps and not config.baselines:
        notes.append("aux_free_steps simulates a baseline and has no effect while baselines is off")
    if config.node_limit and config.top_k == 1:
        notes.append("node_limit bounds the nodes of a token's top_k experts and has no effect with top_k=1")
    if config.qaoa and config.max_qubits > EXACT_MAX_VARIABLES:
        notes.append(
            f"max_qubits={config.max_qubits}: QAOA blocks are limited to {EXACT_MAX_VARIABLES} tokens so that every "
            "block is checked against its exact optimum (enumeration)"
        )
    return notes


def _tokens_moved_by_source(quantum: QuantumReport | None, *, simulated: bool) -> dict[str, int]:
    """Tokens moved by blocks whose applied answer came from a QAOA circuit vs the exact block solve.

    Under the ``simulator`` toggle no circuit runs: the drop-in is an exact
    solve, so its moves count as exact.
    """
    moved = {"qaoa": 0, "exact": 0}
    for block in quantum.blocks if quantum else []:
        if block["applied"]:
            source = "exact" if simulated or block["applied_from"] != "qaoa" else "qaoa"
            moved[source] += int(block["tokens_moved"])
    return moved


def _run_quantum(problem, u, w, expert, capacity, config, solver, diagnostics, heartbeat=None):
    """QAOA refinement with fallbacks; returns ``(assignment, solver)``, the assignment possibly unchanged.

    On a quantum failure the classical plan ``expert`` (already computed) is
    kept: it is the best plan at hand, and hash routing is only ever the
    router when asked for with qaoa off. ``heartbeat`` is called between
    optimiser steps (the progress sink: a front end's Cancel takes effect there).
    """
    kwargs = {"solver": classical_drop_in} if config.simulator else {}

    def refine(device: QuantumDevice, budget: QuantumBudget) -> tuple[QuantumDevice, np.ndarray, list[dict[str, Any]]]:
        refined, blocks = refine_with_qaoa(
            u, w, expert, capacity,
            layers=config.qaoa_layers, block_size=min(config.max_qubits, EXACT_MAX_VARIABLES), n_blocks=config.qaoa_blocks,
            warm_start=config.hqc, device=device, budget=budget, max_steps=config.qaoa_steps,
            seed=config.seed, **kwargs,
        )
        return device, refined, blocks

    # A failure is recorded as a fallback from the requested quantum path to the classical plan kept.
    solver.ran = solver.requested
    outcome = quantum_step(solver, refine, quantum_budget(config, heartbeat), fallback_to="classical")
    if outcome is None:
        return expert, solver
    device, refined, blocks = outcome
    _record_adoption(solver, blocks, simulated=config.simulator)
    solver.quantum = _quantum_report(problem, device, blocks, config)
    if not blocks:
        diagnostics.append("QAOA found no expert pair with tokens to exchange")
    return refined, solver


def _record_adoption(solver: SolverReport, blocks: list[dict[str, Any]], *, simulated: bool) -> None:
    """A fallback record when no circuit answer was used: the ``simulator`` toggle, or QAOA beaten on every block."""
    if simulated:
        solver.fall_back(solver.requested, "classical-drop-in", "simulator toggle on: each QAOA call replaced by exact enumeration")
    elif blocks and not any(b["applied_from"] == "qaoa" for b in blocks):
        exact_moves = sum(b["tokens_moved"] for b in blocks if b["applied"])
        solver.fall_back(
            solver.requested, "classical",
            f"QAOA ran on {len(blocks)} blocks and none of its answers was adopted (each was infeasible or no better "
            f"than the exact block solve or the plan as it stood); exact block solves moved {exact_moves} tokens",
        )


def _quantum_report(problem: RoutingProblem, device: QuantumDevice, blocks: list[dict[str, Any]],
                    config: RoutingConfig) -> QuantumReport:
    """``solver.quantum``: device, qubits, circuits, steps and each block's ratio to its exact optimum."""
    return QuantumReport(
        device="classical-drop-in" if config.simulator else device.name,
        device_reason="simulator toggle on" if config.simulator else device.reason,
        layers=config.qaoa_layers,
        qubits_per_circuit=[b["qubits"] for b in blocks],
        circuits_run=sum(b["circuits"] for b in blocks),
        optimizer_steps=[b["steps"] for b in blocks],
        block_ratios=[round(b["ratio"], 6) for b in blocks],
        exact_checked=[True for _ in blocks],
        convergence=[b["history"] for b in blocks],
        blocks=[{**{k: v for k, v in b.items() if k != "history"}, "experts": [problem.graph.expert_ids[e] for e in b["experts"]]}
                for b in blocks],
    )


def _start_baselines(problem: RoutingProblem, u: np.ndarray, w: np.ndarray, capacity: np.ndarray, penalty: float,
                     config: RoutingConfig) -> Callable[[], dict[str, dict[str, Any]]]:
    """Start the baselines; returns the call that waits for them (``{name: route_metrics}``, hash first).

    The token ids are hashed here, first (one compiled pass that holds the
    GIL); top-1 gating, greedy balancing and their metrics (large numpy
    passes that release the GIL) run on a second thread while the caller
    routes, so on two cores they add little wall time. The online baseline (torch) runs in
    the returned call, on the caller's thread.
    """
    hashed = hash_experts(problem.token_ids, problem.graph.n_experts)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qflow-baselines")
    future = pool.submit(_array_baselines, problem, hashed, u, w, capacity, penalty)
    pool.shutdown(wait=False)  # the submitted work still runs; the thread ends with it

    def finish() -> dict[str, dict[str, Any]]:
        out = future.result()
        if config.aux_free_steps:
            from qflow.routing._topk import aux_loss_free_routing

            online = aux_loss_free_routing(problem.affinity, 1, config.aux_free_steps, config.aux_free_step_size)[:, 0]
            out["aux_loss_free"] = route_metrics(problem, online, u, capacity, penalty)
        return out

    return finish


def _array_baselines(problem: RoutingProblem, hashed: np.ndarray, u: np.ndarray, w: np.ndarray, capacity: np.ndarray,
                     penalty: float) -> dict[str, dict[str, Any]]:
    """Metrics of hash routing (given), top-1 gating and greedy balancing on the same utilities."""
    return {
        "hash": route_metrics(problem, hashed, u, capacity, penalty),
        "top1_gating": route_metrics(problem, top1_gating(problem.affinity, w, capacity), u, capacity, penalty),
        "greedy_balanced": route_metrics(problem, greedy_balanced(u, w, capacity), u, capacity, penalty),
    }


def _result(problem: RoutingProblem, expert: np.ndarray, capacity: np.ndarray, config: RoutingConfig) -> dict[str, Any]:
    ids = problem.graph.expert_ids
    token_ids = problem.token_ids.tolist()
    names = np.asarray(ids, dtype=object)
    routed = expert >= 0
    assigned = np.where(routed, names[np.maximum(expert, 0)], None)
    assignments = dict(zip(token_ids, assigned.tolist(), strict=True))
    order = _stable_order(expert + 1)  # dropped (-1) first, then by expert; token order within each
    bounds = np.searchsorted(expert[order], np.arange(len(ids) + 1))
    tokens_arr = problem.token_ids
    queues = {ids[e]: tokens_arr[order[bounds[e]:bounds[e + 1]]].tolist() for e in range(len(ids))}
    dropped_ids = tokens_arr[~routed].tolist()
    total = float(problem.complexity.sum())
    dropped = {"count": len(dropped_ids), "token_ids": dropped_ids, "reason": None, "min_capacity_factor_no_drop": None}
    if dropped_ids:
        need = min_capacity_factor(problem)
        dropped["min_capacity_factor_no_drop"] = need
        if capacity.sum() < total - 1e-9:
            dropped["reason"] = (
                f"total capacity {capacity.sum():g} < total complexity {total:g} at capacity_factor={config.capacity_factor:g}; "
                + (f"capacity_factor >= {need:g} would drop none" if need else "the experts' own capacity limits cannot hold every token")
            )
        else:
            dropped["reason"] = "capacity left on experts is smaller than the remaining tokens' complexity (packing)"
    N = len(problem.graph.node_ids)
    known = routed & (problem.source_node >= 0)
    pairs = problem.source_node[known] * N + problem.graph.expert_node[expert[known]]
    traffic = np.bincount(pairs, minlength=N * N).reshape(N, N).astype(np.int64)
    return {
        "expert_ids": ids,  # the order of metrics.expert_load and expert_capacity
        "assignments": assignments,
        "expert_queues": queues,
        "dropped": dropped,
        "padding_token_ids": problem.padding_ids,
        **cluster_fields(problem, ids, capacity, traffic),
    }


def capacity_sweep(
    tokens: pd.DataFrame | Sequence[Mapping[str, Any]],
    model_graph: Mapping[str, Any] | nx.Graph,
    config: RoutingConfig | Mapping[str, Any] | None = None,
    factors: Sequence[float] = (0.5, 0.75, 1.0, 1.1, 1.25, 1.5, 2.0),
) -> list[dict[str, float]]:
    """Dropped tokens and affinity against ``capacity_factor``: router vs top-1 gating.

    With ``top_k > 1`` in ``config``: the top-k router vs top-k gating, and
    ``dropped_tokens`` counts tokens with at least one dropped slot (rows
    also carry ``dropped_slots``).

    Returns
    -------
    list of dict
        One row per factor: ``capacity_factor``, ``method`` ("plan" or
        "top1_gating"), ``dropped_tokens``, ``total_affinity``,
        ``load_imbalance``.
    """
    if not isinstance(config, RoutingConfig):
        config = RoutingConfig.from_mapping(config, "config")
    problem = build_problem(_as_frame(tokens, "tokens"), model_graph, config)
    u = utility_matrix(problem, config.locality_weight)
    penalty = drop_penalty(u)
    if config.top_k > 1:
        return _capacity_sweep_topk(problem, u, penalty, config.top_k, factors)
    rows = []
    for factor in factors:
        cap = problem.capacity(float(factor))
        for method, expert in (
            ("plan", route_balanced(u, problem.complexity, cap, penalty=penalty).expert),
            ("top1_gating", top1_gating(problem.affinity, problem.complexity, cap)),
        ):
            m = route_metrics(problem, expert, u, cap, penalty)
            rows.append({"capacity_factor": float(factor), "method": method, "dropped_tokens": m["dropped_tokens"],
                         "total_affinity": m["total_affinity"], "load_imbalance": m["load_imbalance"]})
    return rows


def _capacity_sweep_topk(problem: RoutingProblem, u: np.ndarray, penalty: float, k: int,
                         factors: Sequence[float]) -> list[dict[str, float]]:
    """Rows of :func:`capacity_sweep` for ``top_k > 1`` (capacity = factor x k x total / experts)."""
    from qflow.routing._plan_topk import topk_metrics
    from qflow.routing._topk import route_topk, topk_gating

    rows = []
    for factor in factors:
        cap = problem.capacity(float(factor) * k)
        for method, experts in (
            ("plan", route_topk(u, problem.complexity, cap, k, penalty=penalty).experts),
            ("topk_gating", topk_gating(problem.affinity, problem.complexity, cap, k)),
        ):
            m = topk_metrics(problem, experts, u, cap, penalty)
            rows.append({"capacity_factor": float(factor), "method": method, "dropped_tokens": m["dropped_tokens"],
                         "dropped_slots": m["dropped_slots"], "total_affinity": m["total_affinity"],
                         "load_imbalance": m["load_imbalance"]})
    return rows
