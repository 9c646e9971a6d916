"""The API's model field: a trained model is reused, a pickle renamed .safetensors is a 422 with the CLI's message."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from qflow.api import create_app
from qflow.core.models import save_model
from qflow.core.runs import RunStore

EMB = Path(__file__).resolve().parents[2] / "sample_data" / "attention" / "embeddings.npy"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(store=RunStore(tmp_path / "runs.db")), raise_server_exceptions=False,
                    base_url="http://localhost") as test_client:
        yield test_client


def test_an_uploaded_model_is_reused(client: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "ct.safetensors"
    eye = np.eye(64, dtype=np.float32)
    save_model(path, "contrastive", {"w_q": eye, "w_k": eye}, config={}, inputs=[], metrics={}, spec={"width": 64})
    response = client.post("/v1/attention/plan", files={"embeddings": ("emb.npy", EMB.read_bytes()),
                                                        "model": ("ct.safetensors", path.read_bytes())},
                           data={"config": '{"contrastive_trainer": true}'})
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["result"]["training"]["trained_model"]["trained"] == "no, loaded"
    assert plan["result"]["training"]["infonce_loaded"] == pytest.approx(plan["result"]["training"]["infonce_identity"])


def test_a_pickle_renamed_safetensors_is_a_422(client: TestClient) -> None:
    response = client.post("/v1/attention/plan", files={"embeddings": ("emb.npy", EMB.read_bytes()),
                                                        "model": ("evil.safetensors", pickle.dumps({"w_q": [1.0]}))},
                           data={"config": '{"contrastive_trainer": true}'})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["source"] == "evil.safetensors" and error["field"] == "model" and error["problem"] == "not a safetensors file"
