"""The routing module as the CLI and API drive it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from qflow.core.commands import ModuleCommand, format_value
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.io import digest_file, load_table, parse_mapping, read_input
from qflow.core.plan import Plan
from qflow.routing._placement_plan import PlacementConfig, plan_placement
from qflow.routing._schemas import RoutingConfig

__all__ = ["COMMANDS", "per_token_path", "write_per_token"]


def per_token_path(out: Path) -> Path:
    """``plan.json`` -> ``plan.tokens.npz`` (same folder): a large top-k plan's per-token experts and weights."""
    return out.with_name(out.stem + ".tokens.npz")


def write_per_token(plan: Plan, out: Path | None) -> None:
    """Write :attr:`Plan.arrays` (a large top-k plan's per-token results) beside ``out`` as one ``.npz``.

    Fills ``file``, ``sha256`` and ``written_to`` in ``result.per_token`` (and in each layer's); without
    ``out`` they stay ``None`` and a diagnostic says how to get the file. Nothing happens for plans whose
    per-token results are inline in the JSON. The file loads with ``numpy.load(path, allow_pickle=False)``.
    """
    if not plan.arrays:
        return
    infos = [entry["per_token"] for entry in [plan.result, *plan.result.get("layers", [])] if entry.get("per_token")]
    if out is None:
        plan.diagnostics.append("per-token experts and combine weights of this large plan are not in the JSON; "
                                "pass --out to write them as <out stem>.tokens.npz")
        return
    target = per_token_path(out)
    with target.open("wb") as handle:
        np.savez(handle, **plan.arrays)
    sha256 = digest_file(target)
    for info in infos:
        info.update(file=target.name, sha256=sha256, written_to=str(target))


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    plan = _plan(files, config, progress)
    write_per_token(plan, out)
    return plan


def _plan(files: dict[str, Path | None], config: QflowConfig, progress: Callable[[float, str], None] | None) -> Plan:
    from qflow.routing._plan import load_routing_inputs, plan_routing, plan_routing_layers
    from qflow.routing._tensors import is_tensor_file, load_logit_layers

    if is_tensor_file(files["tokens"]):
        frames, digests = load_logit_layers(files["tokens"], files.get("token_metadata"))
        raw_graph = read_input(files["model_graph"])
        return plan_routing_layers(frames, parse_mapping(raw_graph), config, digests=[*digests, raw_graph.digest("model_graph")],
                                   progress=progress)
    if files.get("token_metadata") is not None:
        raise InputError(Path(files["token_metadata"]).name, "(file)", "token metadata without a logits tensor",
                         "tokens as .npy/.safetensors/.pt when token_metadata is given", Path(files["tokens"]).name)
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
    per_token = plan.result.get("per_token")
    if per_token:
        lines.append(f"  per-token experts and weights: {per_token['written_to'] or 'not written (pass --out)'}")
    if dropped.get("count"):
        lines.append(f"  dropped {dropped['count']} tokens: {dropped.get('reason')}")
    return lines


def _run_placement(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None) -> Plan:
    loads, raw_loads = load_table(files["loads"], records_key="loads", text_columns=("expert",))
    raw_graph = read_input(files["model_graph"])
    digests = [raw_loads.digest("loads", rows=len(loads), shape=list(loads.shape)), raw_graph.digest("model_graph")]
    return plan_placement(loads, parse_mapping(raw_graph), config, digests=digests)


def _summarize_placement(plan: Plan) -> list[str]:
    m, lines = plan.metrics, []
    keys = ("max_gpu_imbalance", "mean_gpu_imbalance", "max_node_imbalance", "cross_node_dispatch")
    lines.append(f"  {'':<12}" + "".join(f"{k:>20}" for k in keys))
    lines.append(f"  {'plan':<12}" + "".join(f"{format_value(m.get(k)):>20}" for k in keys))
    for name, base in plan.baselines.items():
        lines.append(f"  {name:<12}" + "".join(f"{format_value(base.get(k)):>20}" for k in keys))
    lines.append(f"  worst gap of the max GPU load to its lower bound: {format_value(m.get('max_gap_to_lower_bound'))}; "
                 f"{plan.result.get('slots_per_gpu')} slots per GPU")
    return lines


COMMANDS = (ModuleCommand(
    name="routing",
    help="assign MoE tokens to experts under capacity, near their expert",
    config_cls=RoutingConfig,
    inputs=("tokens", "model_graph"),
    input_help={
        "tokens": "CSV or JSON list: token_id, source, complexity, scores or score_0..score_{E-1}, hint, padding; "
        "or router logits .npy/.safetensors/.pt of shape (tokens, experts) or (layers, tokens, experts)",
        "token_metadata": "with a logits tensor: CSV/JSON, one row per token (token_id, source, complexity, hint, padding)",
        "model_graph": "JSON/YAML: experts (id, node, capacity), nodes, links (bandwidth_gbps); or node-link JSON",
    },
    optional_inputs=("token_metadata",),
    sample_inputs={"tokens": "sample_data/routing/tokens.csv", "model_graph": "sample_data/routing/model_graph.json"},
    run=_run,
    summarize=_summarize,
    title="Routing",
    icon=":material/alt_route:",
    summary="Assign the tokens of one MoE layer step to experts under capacity, close to their expert's node, "
    "and compare with hash routing, top-1 gating and greedy balancing on the same input.",
    input_types={"tokens": ("csv", "json", "npy", "safetensors", "pt"), "token_metadata": ("csv", "json"),
                 "model_graph": ("json", "yaml", "yml")},
), ModuleCommand(
    name="placement",
    help="place MoE experts and replicas of the hot ones on GPUs from expert-load statistics (EPLB's three arrays)",
    config_cls=PlacementConfig,
    inputs=("loads", "model_graph"),
    input_help={
        "loads": "CSV or JSON list: layer, expert, load (expected tokens per expert, e.g. a serving engine's counters)",
        "model_graph": "JSON/YAML: nodes with their gpus (the same count on every node)",
    },
    sample_inputs={"loads": "sample_data/routing/expert_loads.csv", "model_graph": "sample_data/routing/model_graph.json"},
    run=_run_placement,
    summarize=_summarize_placement,
    title="Expert placement",
    icon=":material/grid_view:",
    summary="Place each layer's experts, with replicas of the hot ones, on GPUs from expert-load statistics, "
    "and compare with EPLB's greedy and contiguous placement on the same loads.",
    input_types={"loads": ("csv", "json"), "model_graph": ("json", "yaml", "yml")},
))
