"""Energy: telemetry in, power prediction, a power-capped schedule and frequency caps out.

One entry point, :func:`plan_energy`; :func:`load_energy_inputs` reads the
files. Prediction: a GraphSAGE-style GNN against ridge and persistence
(``_predict``); scheduling: a cluster-wide list scheduler against ASAP and
the per-node simple scheduler (``_schedule``); peak-slot run-now/defer
windows by QAOA or greedy flips (``_quantum``) chosen by a meta-controller
(``_meta``); clock caps from a fitted power-vs-clock model (``_caps``).
"""

from qflow.energy._plan import load_energy_inputs, plan_energy
from qflow.energy._schemas import EnergyConfig, EnergyInputs, parse_jobs, parse_telemetry, parse_topology

__all__ = ["EnergyConfig", "EnergyInputs", "load_energy_inputs", "parse_jobs", "parse_telemetry", "parse_topology", "plan_energy"]
