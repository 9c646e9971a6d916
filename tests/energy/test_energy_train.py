"""qflow train power-model: a plan reusing the saved GNN predicts exactly what training it in the plan predicts."""

from __future__ import annotations

import json

import pytest
from energy_helpers import telemetry_frame, topology_dict

from qflow.core.errors import InputError
from qflow.core.models import load_model
from qflow.energy import EnergyConfig, parse_jobs, parse_telemetry, parse_topology, plan_energy
from qflow.energy._schemas import EnergyInputs
from qflow.energy._train import train_power_model

SETTINGS = {"gnn_steps": 30, "seed": 4}


def _files(tmp_path, nodes: int = 2):
    tel, topo = tmp_path / f"tel{nodes}.csv", tmp_path / f"topo{nodes}.json"
    telemetry_frame(nodes).to_csv(tel, index=False)
    topo.write_text(json.dumps(topology_dict(nodes)))
    return {"telemetry": tel, "topology": topo}


def _inputs(nodes: int = 2) -> EnergyInputs:
    topo = parse_topology(topology_dict(nodes))
    jobs = parse_jobs({"jobs": [{"id": "a", "duration": 2, "power_w": 500}, {"id": "b", "duration": 1, "power_w": 300}]}, topo)
    return EnergyInputs(parse_telemetry(telemetry_frame(nodes), topo), topo, jobs)


def test_a_loaded_power_model_predicts_what_the_plan_would_train(tmp_path) -> None:
    path = tmp_path / "pm.safetensors"
    train_power_model(_files(tmp_path), EnergyConfig(**SETTINGS)).save(path, "power-model")
    model = load_model(path, "power-model")
    trained = plan_energy(_inputs(), SETTINGS)
    reused = plan_energy(_inputs(), SETTINGS, model=model)
    assert reused.result["prediction"]["tail_predicted_total_w"]["gnn"] == trained.result["prediction"]["tail_predicted_total_w"]["gnn"]
    assert reused.metrics["prediction_mae_w"] == trained.metrics["prediction_mae_w"]
    assert reused.result["trained_model"]["trained"] == "no, loaded" and reused.result["trained_model"]["used"]
    assert reused.result["prediction"]["gnn_steps"] == 0  # nothing trained in the plan
    assert any("trained: no, loaded" in d for d in reused.diagnostics)


def test_a_model_of_other_nodes_is_refused(tmp_path) -> None:
    path = tmp_path / "pm3.safetensors"
    train_power_model(_files(tmp_path, nodes=3), EnergyConfig(**SETTINGS)).save(path, "power-model")
    with pytest.raises(InputError, match="model.spec.node_ids: the model does not fit these inputs"):
        plan_energy(_inputs(), SETTINGS, model=load_model(path, "power-model"))
