"""The energy module as the CLI and API drive it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qflow.core.commands import ModuleCommand, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.energy._schemas import EnergyConfig

__all__ = ["COMMANDS", "apply_paths", "write_apply_files"]


def apply_paths(out: Path) -> dict[str, Path]:
    """``plan.json`` -> ``plan.apply.sh``, ``plan.restore.sh``, ``plan.schedule.csv`` (same folder)."""
    return {key: out.with_name(out.stem + suffix) for key, suffix in
            (("set_script", ".apply.sh"), ("restore_script", ".restore.sh"), ("schedule_csv", ".schedule.csv"))}


def write_apply_files(plan: Plan, out: Path) -> dict[str, dict[str, str]]:
    """Write the two scripts (executable) and the schedule CSV beside ``out``.

    Returns key -> ``{"file": name, "written_to": path}`` (the shape the API
    recognises for artifacts it keeps; see :mod:`qflow.core.uploads`).
    """
    written = {}
    for key, path in apply_paths(out).items():
        path.write_text(plan.result["apply"][key])
        if path.suffix == ".sh":
            path.chmod(0o755)
        written[key] = {"file": path.name, "written_to": str(path)}
    return written


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    from qflow.core.models import load_model, model_digest
    from qflow.energy._plan import load_energy_inputs, plan_energy

    inputs, digests = load_energy_inputs(files["telemetry"], files["topology"], files["jobs"], telemetry_options=config)
    model = load_model(files["model"], "power-model") if files.get("model") else None
    if model is not None:
        digests.append(model_digest(files["model"]))
    plan = plan_energy(inputs, config, digests=digests, progress=progress, model=model)
    if out is not None:
        plan.result["apply"]["files"] = write_apply_files(plan, out)
    return plan


def _summarize(plan: Plan) -> list[str]:
    r, m = plan.result, plan.metrics
    budget = "none" if r["power_budget_w"] is None else f"{r['power_budget_w']:.0f} W ({r['power_budget_source']})"
    lines = [f"  {len(r['schedule'])} jobs, horizon {r['horizon_slots']} slots of {r['slot_hours']:g} h ({r['horizon_source']}), budget {budget}"]
    lines.append(f"  {'method':<22}{'peak W':>12}{'gap to LB':>12}{'makespan':>10}{'energy kWh':>12}")
    rows = [(f"plan ({plan.solver.ran})", m), *plan.baselines.items()]
    for name, values in rows:
        lines.append(f"  {name:<22}{values['peak_power_w']:>12.1f}{values['gap_to_lower_bound']:>12.4f}"
                     f"{values['makespan_slots']:>10}{values['total_energy_kwh']:>12.2f}")
    lines.append(f"  lower bound {m['lower_bound_w']:.1f} W; budget respected: {m['budget_respected']}")
    mae = ", ".join(f"{k} {v:.1f}" for k, v in m["prediction_mae_w"].items())
    mape = ", ".join(f"{k} {100 * v:.1f} %" for k, v in m["prediction_mape"].items())
    lines.append(f"  prediction MAE (W per node and interval, walk-forward): {mae}; best {m['prediction_best_method']}")
    lines.append(f"  prediction MAPE (held-out tail): {mape}; per node in result.prediction.per_node")
    s = r["predicted_savings"]
    lines.append(f"  caps: predicted energy saving {format_value(s['caps_energy_kwh'])} kWh ({100 * s['caps_energy_fraction']:.1f} %); "
                 f"active accelerators {r['active_accelerators']['total']}/{r['active_accelerators']['of']}")
    o = r["objective"]
    if o.get("makespan_lower_bound_slots") is not None:
        lines.append(f"  objective {o['name']}: makespan {m['makespan_slots']} slots, lower bound {o['makespan_lower_bound_slots']} "
                     f"(gap {100 * o['makespan_gap_to_lower_bound']:.1f} %)")
    written = [f["file"] for f in r["apply"]["files"].values() if f["written_to"]]
    lines.append("  apply: " + (", ".join(written) + " written" if written
                                else "result.apply holds the set/restore scripts and the schedule CSV (--out also writes them as files)"))
    if "windows" in r:
        lines.append(f"  windows: {m['windows']} ({m['windows_applied']} applied); mean QAOA ratio {format_value(m['qaoa_mean_ratio'])}, "
                     f"mean greedy ratio {format_value(m['greedy_mean_ratio'])}")
    return lines


COMMANDS = (ModuleCommand(
    name="energy",
    help="predict node power (GNN vs ridge/persistence), schedule jobs under a power budget, recommend clock caps",
    config_cls=EnergyConfig,
    inputs=("telemetry", "topology", "jobs"),
    optional_inputs=("model",),
    input_help={
        "model": "a power model from qflow train power-model (.safetensors): reused instead of training the GNN",
        "telemetry": "CSV or JSON records: timestamp, node, gpu, power_w (+ utilization, sm_clock_mhz, temperature_c, job_id)",
        "topology": "JSON/YAML: nodes (id, gpus, min/max_clock_mhz, gpu_power_limit_w, ...), links, power_budget_w",
        "jobs": 'JSON/YAML: {"jobs": [{"id", "duration" (slots), "power_w"?, "deps"?, "node"?, "gpus"?}]}',
    },
    sample_inputs={"telemetry": "sample_data/energy/telemetry.csv", "topology": "sample_data/energy/topology.json",
                   "jobs": "sample_data/energy/jobs.json"},
    run=_run,
    summarize=_summarize,
    title="Energy",
    icon=":material/bolt:",
    summary="Predict per-node power from telemetry, schedule dependent jobs under a power budget and cap "
    "clocks, against ASAP and per-node scheduling and the lower bound on peak power.",
    input_types={"telemetry": ("csv", "json"), "topology": ("json", "yaml", "yml"), "jobs": ("json", "yaml", "yml"),
                 "model": ("safetensors",)},
),)
