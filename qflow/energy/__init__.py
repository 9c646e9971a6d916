"""Energy: telemetry in, power prediction, a power-capped schedule and frequency caps out.

One entry point, :func:`plan_energy`; :func:`load_energy_inputs` reads the
files. Prediction: a GraphSAGE-style GNN against ridge and persistence
(``_predict``); scheduling: a cluster-wide list scheduler against ASAP and
the per-node simple scheduler (``_schedule``); peak-slot run-now/defer
windows by QAOA or greedy flips (``_quantum``) chosen by a meta-controller
(``_meta``); clock caps from a fitted power-vs-clock model (``_caps``).
"""

from qflow._lazy import lazy_exports

#: Public name -> the submodule defining it, imported on first use (the CLI lists every
#: module's command without importing any engine).
_EXPORTS = {
    "load_energy_inputs": "qflow.energy._plan",
    "plan_energy": "qflow.energy._plan",
    "EnergyConfig": "qflow.energy._schemas",
    "EnergyInputs": "qflow.energy._schemas",
    "parse_jobs": "qflow.energy._schemas",
    "parse_telemetry": "qflow.energy._schemas",
    "parse_topology": "qflow.energy._schemas",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["EnergyConfig", "EnergyInputs", "load_energy_inputs", "parse_jobs", "parse_telemetry", "parse_topology", "plan_energy"]
