"""Routing: assign MoE tokens to experts under capacity, near their expert.

One entry point, :func:`plan_routing`; :func:`load_routing_inputs` reads the
two files; :func:`load_logit_layers` and :func:`plan_routing_layers` take router
logits tensors (one plan per layer); :func:`capacity_sweep` shows what capacity buys.
"""

from qflow._lazy import lazy_exports

#: Public name -> the submodule defining it, imported on first use (the CLI lists every
#: module's command without importing any engine).
_EXPORTS = {
    "capacity_sweep": "qflow.routing._plan",
    "load_routing_inputs": "qflow.routing._plan",
    "min_capacity_factor": "qflow.routing._plan",
    "plan_routing": "qflow.routing._plan",
    "plan_routing_layers": "qflow.routing._plan",
    "ModelGraph": "qflow.routing._schemas",
    "RoutingConfig": "qflow.routing._schemas",
    "parse_model_graph": "qflow.routing._schemas",
    "load_logit_layers": "qflow.routing._tensors",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "RoutingConfig",
    "ModelGraph",
    "capacity_sweep",
    "load_routing_inputs",
    "min_capacity_factor",
    "parse_model_graph",
    "plan_routing",
    "plan_routing_layers",
    "load_logit_layers",
]
