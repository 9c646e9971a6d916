"""The servers' access and work bounds: Host/Origin/token refusals, binding defaults, time budget, disconnect,
concurrency slots, health while a plan runs, malformed environment, SIGTERM, upload folder sweep, worker reaping.

The work-bound cases run the real API under uvicorn on 127.0.0.1 (a thread of
this process, port chosen by the system) with a synthetic ``slow`` command that
reports progress every few milliseconds until it is stopped or its
``seconds`` pass, so each case takes seconds whatever the machine. Every wait
is a bounded loop.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import Field

from qflow.api import ServerSettings, create_app
from qflow.cli import _build_parser, streamlit_command
from qflow.cli import main as cli_main
from qflow.core.commands import ModuleCommand
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan, SolverReport
from qflow.core.runner import descendant_pids
from qflow.core.runs import RunStore
from qflow.core.uploads import sweep_stale_upload_folders

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests-0123456789"
#: Longest any bounded wait here lasts, seconds (a slow CI machine, never a pass condition).
PATIENCE_S = 60.0


# -- a synthetic slow command ------------------------------------------------------------------------


class SlowConfig(QflowConfig):
    seconds: float = Field(60.0, ge=0, le=600, description="how long the run works before it returns")
    spawn: bool = Field(False, description="start a sleeping child process and leave it running")


def _slow_run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
              progress: Callable[[float, str], None] | None = None) -> Plan:
    assert isinstance(config, SlowConfig)
    if config.spawn:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        (Path(os.environ["QFLOW_TEST_PIDS"]) / str(child.pid)).touch()
    start = time.monotonic()
    while time.monotonic() - start < config.seconds:
        if progress is not None:
            progress((time.monotonic() - start) / max(config.seconds, 1e-9), "working")
        time.sleep(0.01)
    return Plan(module="slow", inputs=[], config=config.model_dump(), solver=SolverReport(requested="x", ran="x"),
                result={"slept_s": config.seconds}, metrics={})


SLOW = ModuleCommand(name="slow", help="sleep while reporting progress", config_cls=SlowConfig, inputs=("data",),
                     input_help={"data": "anything"}, run=_slow_run, summarize=lambda plan: [])


def _settings(**changes: Any) -> ServerSettings:
    base = ServerSettings(upload_bytes=2**20, token=None, hosts=("localhost", "127.0.0.1", "::1"), origins=(),
                          max_running=2, max_queued=0)
    return replace(base, **changes)


# -- a live server on 127.0.0.1 ----------------------------------------------------------------------


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        _until(lambda: self.server.started, "server started")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=PATIENCE_S)
        self.sock.close()

    def health(self) -> dict[str, Any]:
        return self.get("/v1/health")[1]

    def get(self, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PATIENCE_S)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def post_slow(self, config: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        conn = self.open_slow(config)
        try:
            response = conn.getresponse()
            return response.status, json.loads(response.read()), {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def open_slow(self, config: dict[str, Any]) -> http.client.HTTPConnection:
        """A connection with a ``POST /v1/slow/plan`` sent and its answer not yet read."""
        body, content_type = _multipart({"data": ("data.txt", b"x")}, {"config": json.dumps(config)})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PATIENCE_S)
        conn.request("POST", "/v1/slow/plan", body=body, headers={"Content-Type": content_type})
        return conn


def _multipart(files: dict[str, tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "qflowtestboundary"
    body = b""
    for name, (file_name, data) in files.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    for name, value in fields.items():
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _until(condition: Callable[[], Any], what: str, patience: float = PATIENCE_S) -> Any:
    deadline = time.monotonic() + patience
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.05)
    return value


def _one_line(body: dict[str, Any]) -> str:
    detail = body["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    assert body["error"]["message"] == detail
    return detail


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "home" / "runs.db")


@pytest.fixture
def pid_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where the slow command notes the processes it spawns; any left are killed after the test."""
    folder = tmp_path / "pids"
    folder.mkdir()
    monkeypatch.setenv("QFLOW_TEST_PIDS", str(folder))
    yield folder
    for entry in folder.iterdir():
        try:
            os.kill(int(entry.name), signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- Host, Origin, token ------------------------------------------------------------------------------


def test_foreign_host_header_is_refused(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(store=store, settings=_settings(), commands=[SLOW])
    with TestClient(app, base_url="http://rebound.example:8000") as client:
        response = client.get("/v1/runs")
        assert response.status_code == 400
        assert _one_line(response.json()).startswith("Host: (header): not an allowed host name")
        assert "rebound.example" in response.json()["detail"]
    for base in ("http://localhost:8000", "http://127.0.0.1", "http://[::1]:8000"):
        with TestClient(app, base_url=base) as client:
            assert client.get("/v1/runs").status_code == 200, base
    monkeypatch.setenv("QFLOW_ALLOWED_HOSTS", "planner.example.com")
    with TestClient(create_app(store=store, commands=[SLOW]), base_url="http://planner.example.com") as client:
        assert client.get("/v1/runs").status_code == 200
    with TestClient(create_app(store=store, commands=[SLOW]), base_url="http://localhost") as client:
        assert client.get("/v1/runs").status_code == 400  # the list replaces the loopback default


def test_cross_origin_browser_requests_are_refused(store: RunStore) -> None:
    app = create_app(store=store, settings=_settings(origins=("https://console.example.com",)), commands=[SLOW])
    with TestClient(app, base_url="http://localhost:8000") as client:
        for origin in ("http://evil.example", "null", "http://localhost:9999", "https://localhost:8000"):
            response = client.post("/v1/slow/plan", files={"data": ("d", b"x")}, data={"config": "{\"seconds\": 0}"},
                                   headers={"Origin": origin})
            assert response.status_code == 403, origin
            assert _one_line(response.json()).startswith("Origin: (header): cross-origin request refused")
            assert "access-control-allow-origin" not in response.headers
        assert client.get("/v1/runs", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert client.get("/v1/runs", headers={"Origin": "http://localhost:8000"}).status_code == 200  # its own
        assert client.get("/v1/runs", headers={"Origin": "https://console.example.com"}).status_code == 200
        assert client.options("/v1/runs", headers={"Origin": "http://evil.example",
                                                   "Access-Control-Request-Method": "POST"}).status_code == 403


def test_a_configured_token_is_required_except_for_health(store: RunStore) -> None:
    app = create_app(store=store, settings=_settings(token=TOKEN), commands=[SLOW])
    with TestClient(app, base_url="http://localhost") as client:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            response = client.get("/v1/runs", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in response.text
            assert _one_line(response.json()).startswith("Authorization: (header): missing or wrong bearer token")
        assert client.get("/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/v1/health").status_code == 200


def test_bound_beyond_loopback_without_a_token_refuses_requests(store: RunStore) -> None:
    app = create_app(store=store, settings=_settings(bound_host="0.0.0.0"), commands=[SLOW])
    with TestClient(app, base_url="http://localhost") as client:
        response = client.get("/v1/runs")
        assert response.status_code == 503
        assert "beyond loopback without a token" in _one_line(response.json())


def _qflow(*args: str, env: dict[str, str] | None = None, timeout: float = PATIENCE_S) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QFLOW_API_TOKEN")}
    return subprocess.run([sys.executable, "-m", "qflow", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**environ, **(env or {})})


@pytest.mark.parametrize("command", ["serve", "app"])
def test_refuses_to_start_beyond_loopback_without_a_token(command: str, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("QFLOW_API_TOKEN", raising=False)
    monkeypatch.delenv("QFLOW_API_TOKEN_FILE", raising=False)
    # Port 9: it must never get as far as binding (or starting Streamlit).
    assert cli_main([command, "--host", "0.0.0.0", "--port", "9"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --host: 0.0.0.0: ") and "beyond loopback with no login" in line
    assert "QFLOW_API_TOKEN" in line


def test_serve_process_refuses_to_start_beyond_loopback_without_a_token() -> None:
    done = _qflow("serve", "--host", "0.0.0.0", "--port", "9")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: --host: 0.0.0.0: ") and "beyond loopback with no login" in line


@pytest.mark.parametrize(("variable", "value"), [
    ("QFLOW_MAX_UPLOAD_MB", "lots"), ("QFLOW_REQUEST_TIME_BUDGET_S", "-1"), ("QFLOW_MAX_CONCURRENT_RUNS", "0"),
    ("QFLOW_ALLOWED_HOSTS", "a, b c"), ("QFLOW_API_TOKEN", "short"), ("QFLOW_ALLOWED_ORIGINS", "evil.example"),
])
@pytest.mark.parametrize("command", ["serve", "app"])
def test_malformed_environment_stops_startup_with_one_line(command: str, variable: str, value: str,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, value)
    assert cli_main([command, "--port", "9"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {variable}: (environment): "), line


def test_malformed_environment_in_an_imported_app_is_a_503_naming_it(store: RunStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_MAX_UPLOAD_MB", "lots")  # once made every request a 500
    with TestClient(create_app(store=store, commands=[SLOW]), base_url="http://localhost") as client:
        response = client.get("/v1/runs")
        assert response.status_code == 503
        assert _one_line(response.json()).startswith("QFLOW_MAX_UPLOAD_MB: (environment): not a usable number")


def test_upload_limit_comes_from_the_limits_table(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_MAX_UPLOAD_MB", "0.001")
    with TestClient(create_app(store=store, commands=[SLOW]), base_url="http://localhost") as client:
        response = client.post("/v1/slow/plan", files={"data": ("d", b"x" * 4000)})
    assert response.status_code == 413 and "QFLOW_MAX_UPLOAD_MB" in _one_line(response.json())


# -- binding defaults ----------------------------------------------------------------------------------


def test_servers_bind_loopback_by_default() -> None:
    parser = _build_parser()
    assert parser.parse_args(["serve"]).host == "127.0.0.1"
    assert parser.parse_args(["app"]).host == "127.0.0.1"
    command = streamlit_command(ROOT / "app.py", "127.0.0.1", 8501)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    import tomllib

    settings = tomllib.loads(config)
    assert settings["server"]["address"] == "127.0.0.1"  # `streamlit run app.py` too
    assert settings["client"]["showErrorDetails"] in ("none", False)
    makefile = (ROOT / "Makefile").read_text()
    assert "HOST ?= 127.0.0.1" in makefile and "qflow app --host $(HOST)" in makefile


# -- health ------------------------------------------------------------------------------------------------


def test_health_names_no_path_and_is_degraded_when_the_store_is_unusable(tmp_path: Path) -> None:
    good = RunStore(tmp_path / "good" / "runs.db")
    with TestClient(create_app(store=good, settings=_settings(), commands=[SLOW]), base_url="http://localhost") as c:
        health = c.get("/v1/health").json()
    assert health["status"] == "ok" and health["run_store"] == "ok"
    assert str(tmp_path) not in json.dumps(health)
    broken = tmp_path / "broken" / "runs.db"
    broken.parent.mkdir()
    broken.write_bytes(b"not a database\n" * 100)
    with TestClient(create_app(store=RunStore(broken), settings=_settings(), commands=[SLOW]),
                    base_url="http://localhost") as client:
        health = client.get("/v1/health").json()
        assert health["status"] == "degraded" and "not a usable run database" in health["run_store"]
        assert str(tmp_path) not in json.dumps(health)
        listing = client.get("/v1/runs")
        assert listing.status_code == 503 and str(tmp_path) not in listing.text
        assert _one_line(listing.json()).startswith("run store: (database): not a usable run database")


# -- work bounds (live server) ------------------------------------------------------------------------


def test_time_budget_stops_the_run_and_answers_504(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_REQUEST_TIME_BUDGET_S", "0.5")
    with LiveServer(create_app(store=store, settings=_settings(), commands=[SLOW])) as server:
        status, body, _ = server.post_slow({"seconds": 600})
        assert status == 504
        assert _one_line(body).startswith("request: (time budget): stopped after 0.5 s, over the request time budget")
        assert "QFLOW_REQUEST_TIME_BUDGET_S" in body["detail"]
        # The engine stopped at its next progress report (it would run 600 s otherwise).
        _until(lambda: server.health()["runs"]["running"] == 0, "the run to stop")
    assert store.count() == 0


def test_time_budget_stops_a_real_module(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_REQUEST_TIME_BUDGET_S", "0.05")
    space = (ROOT / "sample_data" / "hpo" / "space.yaml").read_bytes()
    with LiveServer(create_app(store=store, settings=_settings())) as server:
        body, content_type = _multipart({"space": ("space.yaml", space)}, {"config": json.dumps({"objective": "branin", "n_trials": 400, "baselines": False})})
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE_S)
        conn.request("POST", "/v1/hpo/plan", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        assert response.status == 504, response.read()
        assert "time budget" in _one_line(json.loads(response.read()))
        conn.close()
        _until(lambda: server.health()["runs"]["running"] == 0, "the hpo run to stop")
    assert store.count() == 0


def test_a_client_that_disconnects_cancels_its_run(store: RunStore) -> None:
    with LiveServer(create_app(store=store, settings=_settings(), commands=[SLOW])) as server:
        conn = server.open_slow({"seconds": 600})
        _until(lambda: server.health()["runs"]["running"] == 1, "the run to start")
        conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        conn.close()
        _until(lambda: server.health()["runs"]["running"] == 0, "the run to stop after the client left")
    assert store.count() == 0


def test_health_answers_while_plans_run_and_full_slots_are_429(store: RunStore) -> None:
    settings = _settings(max_running=1, max_queued=1)
    with LiveServer(create_app(store=store, settings=settings, commands=[SLOW])) as server:
        results: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        workers = [threading.Thread(target=lambda seed=seed: results.append(server.post_slow({"seconds": 3, "seed": seed})))
                   for seed in range(2)]
        workers[0].start()
        _until(lambda: server.health()["runs"]["running"] == 1, "the first run to start")
        workers[1].start()
        health = _until(lambda: (h := server.health())["runs"]["queued"] == 1 and h, "the second to queue")
        assert health["status"] == "ok" and health["runs"]["running"] == 1  # answered while a plan runs
        status, body, headers = server.post_slow({"seconds": 0})
        assert status == 429 and headers["retry-after"] == "5"
        assert _one_line(body).startswith("server: (run slots): busy: 1 runs in progress and 1 waiting")
        for worker in workers:
            worker.join(timeout=PATIENCE_S)
        assert [status for status, _, _ in results] == [200, 200]
        assert server.post_slow({"seconds": 0, "seed": 2})[0] == 200  # slots free again
    assert store.count() == 3


def test_worker_processes_are_reaped_when_the_request_ends(store: RunStore, pid_dir: Path) -> None:
    before = descendant_pids()
    with LiveServer(create_app(store=store, settings=_settings(), commands=[SLOW])) as server:
        status, body, _ = server.post_slow({"seconds": 0, "spawn": True})
        assert status == 200, body
        [pid] = [int(entry.name) for entry in pid_dir.iterdir()]
        _until(lambda: not Path(f"/proc/{pid}").exists(), "the spawned worker to be reaped")
    assert pid not in descendant_pids() and descendant_pids() <= before | descendant_pids()


# -- startup sweep, signals ----------------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_upload_folders_of_dead_processes_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    store: RunStore) -> None:
    dead = tmp_path / f"qflow-upload-{_dead_pid()}-abc"
    (dead / "0").mkdir(parents=True)
    (dead / "0" / "tokens.csv").write_text("left by a kill -9")
    live = tmp_path / f"qflow-upload-{os.getpid()}-def"
    live.mkdir()
    other = tmp_path / "qflow-upload-notapid"
    other.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / f"qflow-upload-{_dead_pid()}-link"
    link.symlink_to(target)
    assert sweep_stale_upload_folders(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists() and link.is_symlink() and target.exists()
    # And the API sweeps when it starts.
    dead.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TestClient(create_app(store=store, settings=_settings(), commands=[SLOW]), base_url="http://localhost"):
        assert not dead.exists() and live.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def test_sigterm_stops_serve(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "qflow", "serve", "--port", str(port)], cwd=ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "QFLOW_HOME": str(tmp_path)})
    try:
        _until(lambda: server.poll() is not None or _answers(f"http://127.0.0.1:{port}/v1/health"), "serve to answer")
        assert server.poll() is None, log.read_text()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=PATIENCE_S)
        assert not _answers(f"http://127.0.0.1:{port}/v1/health")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_sigterm_stops_app_and_its_streamlit_child(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "app.log"
    with log.open("w") as out:
        parent = subprocess.Popen([sys.executable, "-m", "qflow", "app", "--port", str(port)], cwd=ROOT,
                                  stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "QFLOW_HOME": str(tmp_path)})
    children: set[int] = set()
    try:
        _until(lambda: parent.poll() is not None or _answers(f"http://127.0.0.1:{port}/_stcore/health"),
               "the console to answer", patience=120)
        assert parent.poll() is None, log.read_text()
        children = descendant_pids(parent.pid)
        assert children, "qflow app runs Streamlit as a child"
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=PATIENCE_S)
        _until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), "the Streamlit child to stop")
        assert not _answers(f"http://127.0.0.1:{port}/_stcore/health")
    finally:
        for pid in children | ({parent.pid} if parent.poll() is None else set()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
