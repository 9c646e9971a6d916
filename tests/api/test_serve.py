"""``python -m qflow serve`` starts the API with uvicorn on localhost: health, docs and a plan over real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _multipart(fields: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, (file_name, data) in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def test_serve_answers_on_localhost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "qflow", "serve", "--port", str(port)], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/v1/health", timeout=2) as response:
                    health = json.loads(response.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        assert health["status"] == "ok" and health["run_store"] == "ok"
        if Path("/proc/net/tcp").exists():  # bound to 127.0.0.1 only, not every interface
            assert _listening_addresses(port) == {"0100007F"}
        assert str(tmp_path) not in json.dumps(health)  # no server path in health
        with urllib.request.urlopen(f"{base}/docs", timeout=10) as response:
            assert b"swagger" in response.read().lower()
        space = (ROOT / "sample_data" / "hpo" / "space.yaml").read_bytes()
        body, content_type = _multipart({"space": ("space.yaml", space)})
        request = urllib.request.Request(f"{base}/v1/hpo/plan", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=120) as response:
            plan = json.loads(response.read())
            run_id = response.headers["X-Qflow-Run-Id"]
        assert plan["module"] == "hpo" and len(plan["result"]["suggestions"]) == 4
        with urllib.request.urlopen(f"{base}/v1/runs/{run_id}", timeout=10) as response:
            assert json.loads(response.read())["plan"] == plan
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
