"""The hpo module as the CLI and API drive it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qflow.core.commands import ModuleCommand, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.hpo._schemas import HpoConfig

__all__ = ["COMMANDS"]


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    from qflow.hpo._plan import load_hpo_inputs, plan_hpo

    space, history, dataset, digests = load_hpo_inputs(files.get("space"), files.get("history"), files.get("dataset"))
    return plan_hpo(space, history, config, dataset=dataset, digests=digests, progress=progress)


def _config_text(config: dict) -> str:
    return ", ".join(f"{k}={format_value(v, 6)}" for k, v in config.items())


def _summarize(plan: Plan) -> list[str]:
    r, m = plan.result, plan.metrics
    lines = [f"  mode {r['mode']}, objective {r['objective_detail']}, direction {r['direction']}"]
    lines.append(f"  history: {r['history_used']} trials used, {r['history_pending']} pending, "
                 f"{len(r['history_rejected'])} rejected (outside the space)")
    if r["mode"] == "optimize":
        lines.append(f"  {m['n_evaluations']} evaluations by method {m['trials_by_method']}")
        lines.append(f"  {'method':<16}{'best_value':>14}{'regret':>14}")
        lines.append(f"  {'plan (' + plan.solver.ran + ')':<16}{format_value(m['best_value'], 6):>14}{format_value(m['regret'], 6):>14}")
        for name, base in plan.baselines.items():
            lines.append(f"  {name:<16}{format_value(base['best_value'], 6):>14}{format_value(base['regret'], 6):>14}")
    if r["best"] is not None:
        lines.append(f"  best so far: {format_value(r['best']['value'], 6)} at {_config_text(r['best']['config'])} ({r['best']['method']})")
    lines.append(f"  {len(r['suggestions'])} suggestions ({r['suggestion_method']}):")
    for i, config in enumerate(r["suggestions"], 1):
        lines.append(f"    {i}. {_config_text(config)}")
    if "distributed" in r:
        d = r["distributed"]
        lines.append(f"  Dask {d['scheduler']}: trials on {len(d['workers_used'])} of {len(d['workers_at_start'])} workers, "
                     f"{d['in_flight']} in flight; {len(d['workers_lost'])} workers lost, {len(d['retried_trials'])} trials rerun")
    if "hybrid" in r:
        h = r["hybrid"]
        lines.append(f"  hybrid: {h['vqc_trials']} VQC trials, then GP from trial {format_value(h['switch_trial'], 6)} ({h['gp_trials']} GP trials)")
    quantum = plan.solver.quantum
    if quantum is not None:
        lines.append(f"  VQC on {quantum.device}: {quantum.qubits_per_circuit[0]} qubits, {quantum.layers} layers, "
                     f"{len(quantum.optimizer_steps)} refits x {quantum.optimizer_steps[0]} steps, {quantum.circuits_run} circuits, "
                     f"shots {quantum.blocks[0]['shots']}")
    return lines


COMMANDS = (ModuleCommand(
    name="hpo",
    help="recommend hyperparameters: GP-EI, a VQC optimizer or a hybrid, against random search and Optuna TPE",
    config_cls=HpoConfig,
    inputs=(),
    optional_inputs=("space", "history", "dataset"),
    input_help={
        "space": "JSON/YAML: parameters: {name: {kind: float|int, low, high, log} | {kind: categorical, choices: [...]}}; "
        "optional for the built-in objectives branin, hartmann6, hartmann6_noisy (they search their own domain)",
        "history": "CSV of earlier trials: one column per parameter plus objective (blank = pending)",
        "dataset": "CSV for --objective train: feature columns and a target column (named target, else the last)",
    },
    sample_inputs={"space": "sample_data/hpo/space.yaml", "history": "sample_data/hpo/history.csv"},
    run=_run,
    summarize=_summarize,
    title="HPO",
    icon=":material/tune:",
    summary="Recommend hyperparameters from a search space and past trials: Gaussian-process expected "
    "improvement, a VQC optimizer and a hybrid, measured against random search and Optuna's TPE.",
    input_types={"space": ("json", "yaml", "yml"), "history": ("csv",), "dataset": ("csv",)},
),)
