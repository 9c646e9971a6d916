"""The routing module as the CLI and API drive it."""

from __future__ import annotations

from pathlib import Path

from qflow.core.commands import ModuleCommand, Progress, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.routing._plan import load_routing_inputs, plan_routing
from qflow.routing._schemas import RoutingConfig

__all__ = ["COMMANDS"]


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Progress | None = None) -> Plan:
    frame, graph, digests = load_routing_inputs(files["tokens"], files["model_graph"])
    return plan_routing(frame, graph, config, digests=digests, progress=progress)


def _summarize(plan: Plan) -> list[str]:
    m = plan.metrics
    keys = ("tokens_routed", "dropped_tokens", "capacity_violations", "load_imbalance", "total_affinity", "cross_node_fraction")
    lines = [
        f"  {'':<18}" + "".join(f"{k:>20}" for k in keys),
        f"  {'plan':<18}" + "".join(f"{format_value(m.get(k)):>20}" for k in keys),
    ]
    for name, base in plan.baselines.items():
        lines.append(f"  {name:<18}" + "".join(f"{format_value(base.get(k)):>20}" for k in keys))
    lines.append(f"  gap to optimum: {format_value(m.get('affinity_gap_to_optimum'))} ({format_value(m.get('optimum_kind'))}); "
                 f"certified gap bound: {format_value(m.get('gap_to_upper_bound'))}")
    quantum = plan.solver.quantum
    if quantum is not None:
        ratios = ", ".join(f"{r:.3f}" for r in quantum.block_ratios if r is not None)
        lines.append(f"  QAOA on {quantum.device}: {len(quantum.block_ratios)} blocks, qubits {quantum.qubits_per_circuit}, "
                     f"ratios [{ratios}] (exact-checked), {quantum.circuits_run} circuit evaluations, "
                     f"moved {m.get('tokens_moved_by_qaoa', 0)} tokens")
    dropped = plan.result.get("dropped", {})
    if dropped.get("count"):
        lines.append(f"  dropped {dropped['count']} tokens: {dropped.get('reason')}")
    return lines


COMMANDS = (ModuleCommand(
    name="routing",
    help="assign MoE tokens to experts under capacity, near their expert",
    config_cls=RoutingConfig,
    inputs=("tokens", "model_graph"),
    input_help={
        "tokens": "CSV or JSON list: token_id, source, complexity, scores or score_0..score_{E-1}, hint, padding",
        "model_graph": "JSON/YAML: experts (id, node, capacity), nodes, links (bandwidth_gbps); or node-link JSON",
    },
    sample_inputs={"tokens": "sample_data/routing/tokens.csv", "model_graph": "sample_data/routing/model_graph.json"},
    run=_run,
    summarize=_summarize,
    title="Routing",
    icon=":material/alt_route:",
    summary="Assign the tokens of one MoE layer step to experts under capacity, close to their expert's node, "
    "and compare with hash routing, top-1 gating and greedy balancing on the same input.",
    input_types={"tokens": ("csv", "json"), "model_graph": ("json", "yaml", "yml")},
),)
