"""``qflow train power-model``: the GraphSAGE power predictor, trained once and reused by energy plans.

Trained exactly as a plan trains it (same features, head/tail split, seed and
steps), so a plan given the model scores the same predictions it would have
trained; the card's ``spec`` holds the node ids and the history window the
features were built with, and a plan refuses a model whose spec differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.models import ModelArtifact, TrainedModel, Trainer, check_spec, digest_list
from qflow.energy._schemas import EnergyConfig, Topology

__all__ = ["TRAINERS", "power_model_from_artifact", "train_power_model"]

KIND = "power-model"


def _spec(topology: Topology, window: int, hidden: int) -> dict[str, Any]:
    return {"node_ids": list(topology.node_ids), "history_window": int(window), "n_features": int(window) + 3, "hidden": int(hidden)}


def train_power_model(files: dict[str, Path | None], config: QflowConfig) -> TrainedModel:
    """Train the GNN on the telemetry's head (the plan's split) and score it on the tail against ridge and persistence."""
    from qflow.core.io import parse_mapping, read_input
    from qflow.energy._plan import _read_telemetry_file
    from qflow.energy._predict import build_node_series, effective_window, evaluate_predictors
    from qflow.energy._schemas import parse_telemetry, parse_topology

    assert isinstance(config, EnergyConfig)
    raw_topology = read_input(files["topology"])
    topo = parse_topology(parse_mapping(raw_topology), raw_topology.name)
    frame, raw, _ = _read_telemetry_file(files["telemetry"], None, topo, config.model_dump())
    telemetry = parse_telemetry(frame, topo, raw.name)
    series = build_node_series(telemetry, topo)
    report = evaluate_predictors(series, topo, window=config.history_window, test_fraction=config.test_fraction, use_gnn=True,
                                 hidden=config.gnn_hidden, steps=config.gnn_steps, seed=config.seed)
    tensors = {k: v.detach().numpy().copy() for k, v in report.gnn_model.state_dict().items()}
    metrics = {"walk_forward_mae_w": {k: round(v, 4) for k, v in report.mae_w.items()}, "best_method": report.best,
               "train_samples": report.train_samples, "test_samples": report.test_samples,
               "gnn_final_loss": report.summary()["gnn_final_loss"]}
    digests = [raw.digest("telemetry", rows=len(frame)), raw_topology.digest("topology", rows=topo.n_nodes)]
    return TrainedModel(tensors=tensors, spec=_spec(topo, effective_window(series, config.history_window), config.gnn_hidden),
                        metrics=metrics, inputs=digest_list(digests), config=config.model_dump())


def power_model_from_artifact(model: ModelArtifact, topology: Topology, series: Any, history_window: int):
    """The saved GraphSage, checked against these nodes and this history window; ready for ``evaluate_predictors``."""
    import torch

    from qflow.energy._predict import GraphSage, effective_window

    spec = model.card.get("spec") or {}
    check_spec(model, {"node_ids": list(topology.node_ids), "history_window": effective_window(series, history_window)})
    try:
        gnn = GraphSage(int(spec["n_features"]), int(spec["hidden"]), topology.n_nodes, np.zeros((topology.n_nodes,) * 2))
        gnn.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.tensors.items()}, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(model.source, "model.tensors", "the weights do not fit the power model", "a qflow train power-model file",
                         str(exc).splitlines()[0]) from None
    gnn.eval()
    return gnn


TRAINERS = (Trainer(
    name=KIND,
    help="train the energy plan's GraphSAGE power predictor on telemetry and a topology",
    config_cls=EnergyConfig,
    inputs=("telemetry", "topology"),
    input_help={"telemetry": "the energy plan's telemetry (CSV, JSON, Prometheus, nvidia-smi, dcgmi dmon)",
                "topology": "the energy plan's topology (JSON/YAML)"},
    train=train_power_model,
),)
