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

from qflow.nvlink._plan import load_nvlink_inputs, plan_nvlink, read_fabric
from qflow.nvlink._schemas import Fabric, Job, NvlinkConfig, parse_fabric, parse_jobs, parse_topo_text, pattern_traffic

__all__ = ["Fabric", "Job", "NvlinkConfig", "load_nvlink_inputs", "parse_fabric", "parse_jobs", "parse_topo_text",
           "pattern_traffic", "plan_nvlink", "read_fabric"]
