"""The HTTP API: a round trip per module on its sample inputs, the run history, 422 and 413.

Parametrized over :func:`available_commands`, so a module that lands later is
covered as soon as its command names ``sample_inputs``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qflow.api import create_app
from qflow.cli import main as cli_main
from qflow.core.commands import ModuleCommand, available_commands
from qflow.core.runs import RunStore

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = available_commands()
#: Fields that differ between two runs of the same input and config.
VOLATILE = ("created_at", "timings_s")


def _ids(command: ModuleCommand) -> str:
    return command.name


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.db")


@pytest.fixture
def client(store: RunStore) -> Iterator[TestClient]:
    with TestClient(create_app(store=store), raise_server_exceptions=False, base_url="http://localhost") as test_client:
        yield test_client


def _sample_files(command: ModuleCommand) -> dict[str, tuple[str, bytes]]:
    if not command.sample_inputs:
        pytest.skip(f"{command.name} names no sample_inputs yet")
    missing = [path for path in command.sample_inputs.values() if not (ROOT / path).is_file()]
    if missing:
        pytest.skip(f"{command.name}: sample files not written yet: {missing}")
    return {name: (Path(path).name, (ROOT / path).read_bytes()) for name, path in command.sample_inputs.items()}


#: Metric names that measure speed or time (``compress_mb_per_s``, ``solve_time_s``): they differ run to run.
TIMED_METRIC = re.compile(r"(_per_s|_s|_ms|_seconds)$|time")


def _untimed(metrics: Any) -> Any:
    if not isinstance(metrics, dict):
        return metrics
    return {key: _untimed(value) for key, value in metrics.items() if not TIMED_METRIC.search(key)}


def _without_artifact_names(value: Any) -> Any:
    """``value`` without the artifact's ``file`` name in dicts that say where an artifact was ``written_to``.

    The API keeps what a command writes (tests/api/test_artifacts.py), so its
    plan names the kept file (``plan.qfz``); a CLI run without ``--out``
    writes none. ``written_to`` itself is ``None`` in both and stays compared.
    """
    if isinstance(value, dict):
        return {key: _without_artifact_names(item) for key, item in value.items()
                if not (key == "file" and "written_to" in value)}
    if isinstance(value, list):
        return [_without_artifact_names(item) for item in value]
    return value


def _stable(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan without what changes between identical runs: creation time, timings, speed metrics."""
    stable = {key: value for key, value in plan.items() if key not in VOLATILE}
    stable["metrics"] = _untimed(plan.get("metrics"))
    stable["baselines"] = _untimed(plan.get("baselines"))
    stable["result"] = _without_artifact_names(plan.get("result"))
    return stable


def test_existing_modules_are_served() -> None:
    names = {c.name for c in COMMANDS}
    assert {"routing", "hpo", "attention"} <= names
    for name in ("routing", "hpo", "attention"):
        assert next(c for c in COMMANDS if c.name == name).sample_inputs, name


def test_health_and_openapi_list_every_module(client: TestClient) -> None:
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["modules"] == [c.name for c in COMMANDS]
    spec = client.get("/openapi.json").json()
    for command in COMMANDS:
        operation = spec["paths"][f"/v1/{command.name}/plan"]["post"]
        ref = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
        form = spec["components"]["schemas"][ref]
        assert set(form["properties"]) == {*command.inputs, *command.optional_inputs, "config"}
        assert set(form.get("required", [])) == set(command.inputs)
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("command", COMMANDS, ids=_ids)
def test_round_trip_on_sample_inputs_matches_the_cli_and_is_stored(
    command: ModuleCommand, client: TestClient, store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    files = _sample_files(command)
    response = client.post(f"/v1/{command.name}/plan", files=files, data={"config": json.dumps({"seed": 3})})
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["schema"] == "qflow.plan/v1" and plan["module"] == command.name and plan["config"]["seed"] == 3

    # The same plan as the CLI makes from the same files and config.
    argv = [command.name, "--set", "seed=3", "--json"]
    for name, path in command.sample_inputs.items():
        argv += ["--" + name.replace("_", "-"), str(ROOT / path)]
    capsys.readouterr()
    assert cli_main(argv) == 0
    assert _stable(json.loads(capsys.readouterr().out)) == _stable(plan)

    # Stored: listed newest first and fetched whole by id.
    run_id = int(response.headers["X-Qflow-Run-Id"])
    listed = client.get("/v1/runs", params={"module": command.name}).json()
    assert [r["id"] for r in listed] == [run_id]
    assert listed[0]["metrics"] == plan["metrics"] and listed[0]["origin"] == "api"
    fetched = client.get(f"/v1/runs/{run_id}").json()
    assert fetched["plan"] == plan and fetched["config"] == plan["config"]
    assert [d["sha256"] for d in fetched["inputs"]] == [d["sha256"] for d in plan["inputs"]]


def test_runs_are_listed_newest_first_and_filtered(client: TestClient, store: RunStore) -> None:
    base = {"created_at": "2026-01-01T00:00:00+00:00", "inputs": [], "solver": {"requested": "c", "ran": "c"},
            "metrics": {}, "timings_s": {}}
    ids = [store.save({**base, "module": module, "config": {"seed": i}}, origin="test")
           for i, module in enumerate(["routing", "hpo", "routing"])]
    assert [r["id"] for r in client.get("/v1/runs").json()] == ids[::-1]
    assert [r["id"] for r in client.get("/v1/runs", params={"module": "routing"}).json()] == [ids[2], ids[0]]
    assert [r["id"] for r in client.get("/v1/runs", params={"limit": 1}).json()] == [ids[2]]
    assert client.get("/v1/runs", params={"module": "nope"}).json() == []
    assert client.get("/v1/runs/999999").status_code == 404
    assert client.get("/v1/runs/not-a-number").status_code == 422


def test_bad_file_is_a_422_with_the_cli_message(client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = ROOT / "sample_data" / "routing" / "model_graph.json"
    bad_tokens = tmp_path / "tokens.csv"
    bad_tokens.write_text("token_id,source,complexity\nt0,s0,not-a-number\n")
    response = client.post("/v1/routing/plan", files={"tokens": ("tokens.csv", bad_tokens.read_bytes()),
                                                      "model_graph": ("model_graph.json", graph.read_bytes())})
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["source"] == "tokens.csv" and body["error"]["kind"] == "InputError"

    capsys.readouterr()
    assert cli_main(["routing", "--tokens", str(bad_tokens), "--model-graph", str(graph)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {body['detail']}"


@pytest.mark.parametrize("command", COMMANDS, ids=_ids)
@pytest.mark.parametrize("config, field", [
    ('{"seed": -1}', "config.seed"),
    ('{"no_such_field": 1}', "config.no_such_field"),
    ("[1, 2]", "config"),
    ("{not json", "(form field)"),
])
def test_bad_config_is_a_422_naming_the_field(command: ModuleCommand, client: TestClient, config: str, field: str) -> None:
    response = client.post(f"/v1/{command.name}/plan", files=_sample_files(command), data={"config": config})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert client.get("/v1/runs").json() == []  # nothing stored for a rejected request


@pytest.mark.parametrize("command", COMMANDS, ids=_ids)
def test_random_bytes_are_a_422_never_a_500(command: ModuleCommand, client: TestClient) -> None:
    names = (*command.inputs, *command.optional_inputs)
    files = {name: (Path(command.sample_inputs.get(name, name)).name, b"\x00\xff garbage \x80" * 7) for name in names}
    response = client.post(f"/v1/{command.name}/plan", files=files)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_missing_required_file_is_a_422(client: TestClient) -> None:
    response = client.post("/v1/routing/plan", files={"tokens": ("tokens.csv", b"token_id\nt0\n")})
    assert response.status_code == 422
    body = response.json()
    # FastAPI's own validation speaks the one-line format too, with the error's fields beside it.
    assert body["detail"] == ("request body: model_graph: field required; "
                              "expected a multipart field 'model_graph'")
    assert body["error"]["field"] == "model_graph" and body["error"]["message"] == body["detail"]


def test_upload_over_the_limit_is_a_413(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_MAX_UPLOAD_MB", "0.01")  # 10 KiB
    big = b"token_id,source,complexity\n" + b"t,s,1\n" * 4000
    with TestClient(create_app(store=store), raise_server_exceptions=False, base_url="http://localhost") as client:
        response = client.post("/v1/routing/plan", files={"tokens": ("tokens.csv", big), "model_graph": ("g.json", b"{}")})
        assert response.status_code == 413
        assert "QFLOW_MAX_UPLOAD_MB" in response.json()["detail"]
        # Without a Content-Length header the body is counted as it arrives.
        boundary = "qflowboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"tokens\"; filename=\"tokens.csv\"\r\n\r\n").encode()
        body += big + f"\r\n--{boundary}--\r\n".encode()

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start:start + 4096]

        streamed = client.post("/v1/routing/plan", content=chunks(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert streamed.status_code == 413
        # Small requests still pass the limit check (and fail on their content instead).
        small = client.post("/v1/routing/plan", files={"tokens": ("tokens.csv", b"x"), "model_graph": ("g.json", b"{}")})
        assert small.status_code == 422
    assert store.count() == 0


def test_explicit_limit_overrides_the_environment(store: RunStore) -> None:
    with TestClient(create_app(store=store, max_upload_mb=0.001), raise_server_exceptions=False, base_url="http://localhost") as client:
        response = client.post("/v1/hpo/plan", files={"space": ("space.yaml", b"x" * 5000)})
    assert response.status_code == 413


@pytest.mark.parametrize(("method", "url", "status", "start"), [
    ("get", "/v1/runs?limit=0", 422, "query string: limit: input should be greater than or equal to 1; expected ge 1"),
    ("get", "/v1/runs/abc", 422, "URL path: run_id: input should be a valid integer"),
    ("get", "/v1/nothing-here", 404, "request: /v1/nothing-here: not found; expected an endpoint"),
    ("delete", "/v1/runs", 405, "request: /v1/runs: method not allowed; expected an endpoint"),
    ("get", "/v1/runs/424242", 404, "run: 424242: no such run; expected an id from GET /v1/runs"),
])
def test_every_error_is_one_line_with_its_fields(client: TestClient, method: str, url: str, status: int,
                                                 start: str) -> None:
    response = getattr(client, method)(url)
    assert response.status_code == status
    body = response.json()
    assert isinstance(body["detail"], str) and "\n" not in body["detail"] and body["detail"].startswith(start), body
    assert body["error"]["message"] == body["detail"] and body["error"]["source"] == start.split(":")[0]


def test_a_bad_config_form_field_is_one_line(client: TestClient) -> None:
    files = {"space": ("space.yaml", (ROOT / "sample_data/hpo/space.yaml").read_bytes())}
    response = client.post("/v1/hpo/plan", files=files, data={"config": "{not json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("config: (form field): invalid JSON")
    response = client.post("/v1/hpo/plan", data={"space": "not a file"})  # a form value where a file belongs
    assert response.status_code == 422
    assert response.json()["detail"] == ("request body: space: not a file upload; expected a multipart file field "
                                         "'space', got a form value")
