"""A request may not point the server at a scheduler, database or file of its choosing (SERVER_ONLY_FIELDS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient

from qflow.api import SERVER_ONLY_FIELDS, create_app
from qflow.core.cluster import SCHEDULER_ENV
from qflow.core.commands import available_commands
from qflow.core.runs import RunStore
from qflow.hpo._optuna import STORAGE_ENV

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"space": ("space.yaml", (ROOT / "sample_data/hpo/space.yaml").read_bytes())}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(store=RunStore(tmp_path / "runs.db"))
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as test_client:
        yield test_client


def _sample_files(module: str) -> dict[str, tuple[str, bytes]]:
    """The module's sample inputs: the refusal must come from the config, not from a missing file."""
    command = next(c for c in available_commands() if c.name == module)
    return {name: (Path(path).name, (ROOT / path).read_bytes()) for name, path in (command.sample_inputs or {}).items()}


def test_field_names_match_the_engine_environment():
    assert SERVER_ONLY_FIELDS == {"dask_scheduler": SCHEDULER_ENV, "optuna_storage": STORAGE_ENV}


@pytest.mark.parametrize(("module", "field", "value"), [
    ("hpo", "dask_scheduler", "tcp://10.1.2.3:8786"),
    ("hpo", "dask_scheduler", "local"),
    ("hpo", "optuna_storage", "sqlite:////etc/anything.db"),
    ("hpo", "optuna_storage", "/home/someone/study.journal"),
    *[(c.name, "dask_scheduler", "tcp://10.1.2.3:8786") for c in available_commands() if c.name != "hpo"],
])
def test_set_by_a_request_is_refused_naming_the_field(client, monkeypatch, module, field, value):
    monkeypatch.delenv(SERVER_ONLY_FIELDS[field], raising=False)
    files = _sample_files(module)
    response = client.post(f"/v1/{module}/plan", files=files, data={"config": json.dumps({field: value})})
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail.startswith(f"config: {field}: set by the server only") and "\n" not in detail
    assert value not in detail


def test_the_servers_own_value_is_allowed(client, monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.enqueue_trial({"lr": 0.01})
    monkeypatch.setenv(STORAGE_ENV, url)
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://10.1.2.3:8786")
    # Repeating the server's value changes nothing; a different value is still refused.
    other = client.post("/v1/hpo/plan", files=SPACE, data={"config": json.dumps({"optuna_storage": url + "x"})})
    assert other.status_code == 403
    response = client.post("/v1/hpo/plan", files=SPACE,
                           data={"config": json.dumps({"optuna_storage": url, "optuna_study": "s", "suggest": 1})})
    assert response.status_code == 200, response.text
    assert response.json()["inputs"][-1]["source"] == "optuna:s"
    # The environment's storage applies when the field is left out (suggest mode: the scheduler is not contacted).
    response = client.post("/v1/hpo/plan", files=SPACE, data={"config": json.dumps({"optuna_study": "s", "suggest": 1})})
    assert response.status_code == 200, response.text
