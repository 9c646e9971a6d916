"""Routing: assign MoE tokens to experts under capacity, near their expert.

One entry point, :func:`plan_routing`; :func:`load_routing_inputs` reads the
two files; :func:`load_logit_layers` and :func:`plan_routing_layers` take router
logits tensors (one plan per layer); :func:`capacity_sweep` shows what capacity buys.
"""

from qflow.routing._plan import capacity_sweep, load_routing_inputs, min_capacity_factor, plan_routing, plan_routing_layers
from qflow.routing._schemas import ModelGraph, RoutingConfig, parse_model_graph
from qflow.routing._tensors import load_logit_layers

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
