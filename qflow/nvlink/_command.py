"""The nvlink module as the CLI and API drive it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qflow.core.commands import ModuleCommand, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.nvlink._sample import SAMPLE_SCENARIOS
from qflow.nvlink._schemas import NvlinkConfig

__all__ = ["COMMANDS"]


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    from qflow.core.models import load_model, model_digest
    from qflow.nvlink._plan import load_nvlink_inputs, plan_nvlink

    fabric, jobs, logs, digests = load_nvlink_inputs(files["fabric"], files["jobs"], files.get("logs"))
    model = load_model(files["model"], "contention-classifier") if files.get("model") else None
    if model is not None:
        digests.append(model_digest(files["model"]))
    return plan_nvlink(fabric, jobs, config, logs=logs, digests=digests, progress=progress, model=model)


def _summarize(plan: Plan) -> list[str]:
    r, m, b = plan.result, plan.metrics, plan.baselines
    fab = r["fabric"]
    lines = [f"  fabric {fab['name']} ({fab['format']}): {fab['nodes_by_kind']}, {fab['links']} links, {fab['hosts']} hosts; "
             f"{m['n_jobs']} jobs, {m['n_ranks']} ranks, {m['n_transfers']} transfers"]
    lines.append(f"  {'placement':<14}{'cut_cost_s':>14}{'cross_node_GB':>15}{'cross_switch_GB':>17}{'time_s':>12}{'max_util':>10}")
    rows = [("plan", m)] + [(k, b[k]) for k in ("round_robin", "random") if k in b]
    for name, v in rows:
        lines.append(f"  {name:<14}{format_value(v['cut_cost_s']):>14}{format_value(v['cross_node_bytes'] / 1e9):>15}"
                     f"{format_value(v['cross_switch_bytes'] / 1e9):>17}{format_value(v['estimated_collective_time_s']):>12}"
                     f"{format_value(v['max_link_utilisation']):>10}")
    g = b.get("greedy_colouring", {})
    lines.append(f"  rounds {m['rounds']} (lower bound {m['rounds_lower_bound']}; greedy colouring {g.get('rounds', '-')}); "
                 f"per job {m['rounds_per_job']}")
    sp = b.get("shortest_path", {})
    lines.append(f"  routing {m['routing_policy']}: collective time {format_value(m['estimated_collective_time_s'])} s "
                 f"vs shortest path {format_value(sp.get('estimated_collective_time_s'))} s")
    if "rl" in r:
        rl = r["rl"]
        lines.append(f"  RL ({rl['agents']} agents, {rl['episodes']} episodes): reward {format_value(rl['reward_curve'][0])} -> "
                     f"{format_value(rl['final_reward'])} (shortest path {format_value(rl['shortest_path_reward'])})")
    if "classifier" in r:
        c = r["classifier"]
        call = c["predictions"]["plan"]["congested"]
        verdict = ("no call (it does not beat the majority class)" if call is None
                   else "plan flagged " + ("congested" if call else "not congested"))
        lines.append(f"  classifier ({c['logs']} logs, {c['log_rows']} runs): held-out accuracy {format_value(c['held_out_accuracy'])} "
                     f"(majority class {format_value(c['majority_class_accuracy'])}); {verdict}")
        k = c.get("quantum_kernel")
        if k is not None and "quantum" in k:
            lines.append(f"  quantum kernel ({k['qubits']} qubits, {k['device']}): held-out accuracy "
                         f"{format_value(k['quantum']['held_out_accuracy'])} vs RBF {format_value(k['rbf']['held_out_accuracy'])}, "
                         f"alignment {format_value(k['quantum']['kernel_target_alignment'])} vs "
                         f"{format_value(k['rbf']['kernel_target_alignment'])}; {'adopted' if k['adopted'] else 'not adopted'}")
    quantum = plan.solver.quantum
    if quantum is not None:
        optimal = sum(1 for blk in quantum.blocks if blk.get("optimal"))
        lines.append(f"  QAOA on {quantum.device}: {len(quantum.qubits_per_circuit)} blocks, qubits {quantum.qubits_per_circuit}, "
                     f"{optimal} reached the brute-force optimum")
    return lines


COMMANDS = (ModuleCommand(
    name="nvlink",
    help="place ranks on an NVLink/NVSwitch fabric, schedule transfer rounds and route flows, against round-robin, "
    "greedy colouring and shortest paths",
    config_cls=NvlinkConfig,
    inputs=("fabric", "jobs"),
    optional_inputs=("logs", "model"),
    input_help={
        "model": "a contention classifier from qflow train contention-classifier (.safetensors): reused instead of training",
        "fabric": "NetworkX node-link JSON (gpu / nvswitch / nic / switch nodes; links with bandwidth_gbps, optional "
        "latency_us) or the text of nvidia-smi topo -m",
        "jobs": 'JSON/YAML {"jobs": [{"id", "ranks", "traffic": ranks x ranks bytes | "pattern": all_reduce|all_to_all|'
        'pipeline, "bytes"}]}',
        "logs": "CSV of contention logs for the classifier: its feature columns and congested (0/1)",
    },
    sample_inputs={"fabric": "sample_data/nvlink/gb200_nvl72.json", "jobs": "sample_data/nvlink/jobs.json"},
    run=_run,
    summarize=_summarize,
    title="NVLink",
    icon=":material/lan:",
    summary="Place jobs' ranks on an NVLink/NVSwitch fabric, schedule transfers in conflict-free rounds and "
    "route flows, against round-robin placement, greedy colouring and shortest paths.",
    input_types={"fabric": ("json", "txt"), "jobs": ("json", "yaml", "yml"), "logs": ("csv",), "model": ("safetensors",)},
    sample_sets={fabric: {"fabric": f"sample_data/nvlink/{fabric}", "jobs": f"sample_data/nvlink/{jobs}"}
                 for fabric, jobs in SAMPLE_SCENARIOS.items()},
),)
