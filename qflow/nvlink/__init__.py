"""NVLink: place jobs' ranks on an NVLink/NVSwitch fabric, schedule transfers in rounds, route flows.

One entry point, :func:`plan_nvlink`; :func:`load_nvlink_inputs` reads the
files (NetworkX node-link JSON or ``nvidia-smi topo -m`` text for the fabric,
JSON/YAML jobs, optional CSV contention logs). Placement by recursive
Kernighan-Lin bisection with swap refinement (vs round-robin and random),
rounds by Koenig edge colouring / first-fit with Kempe recolouring blocks
(QAOA optional, checked by brute force; vs greedy colouring), routing by
weighted ECMP or a Q-learning planner (vs shortest paths), and an SVM
contention classifier trained on simulated logs.
"""

from qflow._lazy import lazy_exports

#: Public name -> the submodule defining it, imported on first use (the CLI lists every
#: module's command without importing any engine).
_EXPORTS = {
    "load_nvlink_inputs": "qflow.nvlink._plan",
    "plan_nvlink": "qflow.nvlink._plan",
    "read_fabric": "qflow.nvlink._plan",
    "Fabric": "qflow.nvlink._schemas",
    "Job": "qflow.nvlink._schemas",
    "NvlinkConfig": "qflow.nvlink._schemas",
    "parse_fabric": "qflow.nvlink._schemas",
    "parse_jobs": "qflow.nvlink._schemas",
    "parse_topo_text": "qflow.nvlink._schemas",
    "pattern_traffic": "qflow.nvlink._schemas",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Fabric", "Job", "NvlinkConfig", "load_nvlink_inputs", "parse_fabric", "parse_jobs", "parse_topo_text",
           "pattern_traffic", "plan_nvlink", "read_fabric"]
