"""The kernel command as the CLI and API drive it (``qflow kernel``, ``POST /v1/kernel``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qflow.core.commands import ModuleCommand, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.kernel._schemas import KernelConfig

__all__ = ["COMMANDS"]


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    from qflow.kernel._plan import load_kernel_inputs, plan_kernel

    path = files["features"]
    frame, digests = load_kernel_inputs(path)
    return plan_kernel(frame, config, digests=digests, source=Path(path).name, out=out, progress=progress)


def _summarize(plan: Plan) -> list[str]:
    r, m, rbf = plan.result, plan.metrics, plan.baselines.get("rbf", {})
    lines = [f"  {r['kernel']} kernel ({r['embedding']}, {r['layers']} layer(s)): {r['rows']} rows x {r['qubits']} qubits"
             + (f", classes {r['classes']}" if r["classes"] else ", no labels")]
    lines.append(f"  {'kernel':<10}{'alignment':>12}{'mean_offdiag':>14}{'min_eig':>12}")
    for name, v in (("plan", m), ("rbf", rbf)):
        lines.append(f"  {name:<10}{format_value(v.get('kernel_target_alignment')):>12}"
                     f"{format_value(v.get('mean_off_diagonal')):>14}{format_value(v.get('min_eigenvalue')):>12}")
    if r["matrix_file"]:
        lines.append(f"  matrix written to {r['matrix_file']}")
    elif r["matrix"] is None:
        lines.append("  matrix not written (over inline_rows; pass --out plan.json)")
    return lines


COMMANDS = (ModuleCommand(
    name="kernel",
    help="quantum kernel matrix (angle or IQP feature map, state overlaps) of a features table and its kernel-target "
    "alignment, against the RBF kernel",
    config_cls=KernelConfig,
    inputs=("features",),
    input_help={"features": "CSV (or JSON records): numeric feature columns, one qubit each, and an optional label "
                            "column (label_column)"},
    sample_inputs={"features": "sample_data/kernel/features.csv"},
    run=_run,
    summarize=_summarize,
    title="Quantum kernel",
    icon=":material/grid_on:",
    summary="The quantum kernel matrix of a features table (angle or IQP feature map with an entangling layer, "
    "state overlaps on lightning.qubit) and its kernel-target alignment, against the RBF kernel on the same data.",
    input_types={"features": ("csv", "json")},
),)
