"""Hostile inputs against the loaders, the CLI and the API: refused before work starts, never a crash.

Each class -- zip/npz bombs (a real 1 MB archive that inflates to 1 GiB, a
directory that lies, 50,000 members), forged .npy headers, safetensors
headers declaring huge shapes, forged torch files, YAML alias bombs, integers
over Python's 4,300-digit limit, non-finite numbers -- is built by
:mod:`hostile_files` and must give:

* the loaders: an :class:`InputError` (a :class:`LimitExceededError` when a
  declared size is over a limit) naming the file and the field, with memory
  bounded (measured with tracemalloc);
* the CLI: exit 2 with one ``error:`` line;
* the API: a 4xx with a one-line ``detail``, never a 5xx, and health still
  answering afterwards; one test starts ``qflow serve`` under
  ``prlimit --as`` and measures the server's peak memory (VmHWM).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hostile_files import (
    GIB,
    huge_integer,
    npy_header,
    npz_bomb,
    npz_lying_directory,
    npz_many_members,
    safetensors_declaring,
    safetensors_header_length,
    yaml_alias_bomb,
)

from qflow.api import create_app
from qflow.core.commands import load_command
from qflow.core.errors import InputError
from qflow.core.io import RawInput, bounded_carry, load_mapping, load_table, parse_mapping, parse_scalar
from qflow.core.limits import LimitExceededError
from qflow.core.runs import RunStore
from qflow.core.tensors import parse_tensors

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data"
MIB = 2**20


def refused(call: Callable[[], Any], max_peak_bytes: int = 64 * MIB) -> InputError:
    """The InputError ``call`` raises, having allocated at most ``max_peak_bytes`` (Python and numpy allocations)."""
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= max_peak_bytes, f"refusing took {peak / MIB:.0f} MiB"
    message = info.value.message
    assert "\n" not in message and message.startswith(info.value.source)
    return info.value


# --------------------------------------------------------------------------- loaders


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class TestArchives:
    def test_npz_bomb_is_refused_from_its_directory(self):
        bomb = npz_bomb()
        assert len(bomb) < 1.1 * MIB
        err = refused(lambda: parse_tensors(RawInput("bomb.npz", bomb)))
        assert isinstance(err, LimitExceededError) and err.limit_name == "archive_ratio"
        assert err.field == "w.npy" and "QFLOW_MAX_ARCHIVE_RATIO" in err.message

    def test_npz_bomb_over_the_decoded_limit(self, monkeypatch):
        monkeypatch.setenv("QFLOW_MAX_ARCHIVE_RATIO", "100000")
        monkeypatch.setenv("QFLOW_MAX_DECODED_MB", "64")
        err = refused(lambda: parse_tensors(RawInput("bomb.npz", npz_bomb())))
        assert isinstance(err, LimitExceededError) and err.limit_name == "decoded_bytes"
        assert err.declared == GIB and "got 1,073,741,824 bytes" in err.message

    def test_lying_directory_never_inflates_past_what_it_declares(self):
        """The member really inflates to 1 GiB; its directory says 512 KiB. Reading stops at 512 KiB, and the
        .npy header inside (1 GiB of float64) is then more than the member holds."""
        err = refused(lambda: parse_tensors(RawInput("liar.npz", npz_lying_directory())))
        assert err.field == "w" and err.problem == "truncated array data"

    def test_fifty_thousand_members_refused_before_any_is_read(self):
        archive = npz_many_members(50_000)
        err = refused(lambda: parse_tensors(RawInput("many.npz", archive)), max_peak_bytes=256 * MIB)
        assert isinstance(err, LimitExceededError) and err.limit_name == "archive_members" and err.declared == 50_000

    def test_torch_file_bomb_refused_before_torch_reads_it(self):
        err = refused(lambda: parse_tensors(RawInput("model.pt", npz_bomb())))
        assert isinstance(err, LimitExceededError) and err.limit_name == "archive_ratio"

    def test_legacy_torch_format_refused(self):
        err = refused(lambda: parse_tensors(RawInput("model.pt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")))
        assert err.problem == "not a zip-format torch file"


class TestForgedHeaders:
    def test_npy_declaring_petabytes(self):
        err = refused(lambda: parse_tensors(RawInput("x.npy", npy_header((10**15,)))))
        assert isinstance(err, LimitExceededError) and err.limit_name == "decoded_bytes" and err.declared == 8 * 10**15

    def test_npy_declaring_more_than_it_holds(self):
        err = refused(lambda: parse_tensors(RawInput("x.npy", npy_header((1000, 1000)) + b"\0" * 64)))
        assert err.problem == "truncated array data"

    def test_npz_member_with_forged_header(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("ok.npy", _npy_bytes(np.zeros(3)))
            archive.writestr("big.npy", npy_header((10**13,)))
        err = refused(lambda: parse_tensors(RawInput("x.npz", buffer.getvalue())))
        assert err.field == "big" and isinstance(err, LimitExceededError)

    @pytest.mark.parametrize("shape", [[100_000, 100_000], [10**30], [2**40, 2**40]])
    def test_safetensors_declaring_huge_shapes(self, shape):
        err = refused(lambda: parse_tensors(RawInput("w.safetensors", safetensors_declaring(shape))))
        assert isinstance(err, LimitExceededError) and err.limit_name == "decoded_bytes" and err.field == "w"

    def test_safetensors_header_longer_than_the_file(self):
        err = refused(lambda: parse_tensors(RawInput("w.safetensors", safetensors_header_length(2**62))))
        assert err.field == "(header)" and err.problem == "header longer than the file"

    def test_safetensors_header_with_a_huge_integer(self):
        data = safetensors_declaring([1]).replace(b"[1]", ("[" + huge_integer() + "]").encode())
        data = len(data[8:]).to_bytes(8, "little") + data[8:]
        err = refused(lambda: parse_tensors(RawInput("w.safetensors", data)))
        assert err.problem == "integer too large" and err.field == "w.shape[0]"


class TestYaml:
    def test_alias_bomb_refused_before_it_is_built(self):
        bomb = yaml_alias_bomb()
        err = refused(lambda: parse_mapping(RawInput("topology.yaml", bomb.encode())))
        assert isinstance(err, LimitExceededError) and err.limit_name == "yaml_aliases" and err.declared > 10**8

    def test_a_few_aliases_still_work(self):
        data = parse_mapping(RawInput("c.yaml", b"base: &b {x: 1}\na: *b\nc: *b\n"))
        assert data == {"base": {"x": 1}, "a": {"x": 1}, "c": {"x": 1}}

    def test_recursive_alias_refused(self):
        err = refused(lambda: parse_mapping(RawInput("c.yaml", b"a: &a [1, *a]\n")))
        assert err.problem == "recursive YAML alias"

    def test_carried_field_bounded(self, monkeypatch):
        monkeypatch.setenv("QFLOW_MAX_CARRIED_FIELD_KB", "1")
        shared: list[Any] = ["x" * 100]
        for _ in range(40):  # 2**40 strings once expanded: counting must stop at the limit
            shared = [shared, shared]
        err = refused(lambda: bounded_carry(shared, "topology.yaml", "quantum_accelerators"))
        assert isinstance(err, LimitExceededError) and err.limit_name == "carried_field_bytes"
        assert err.field == "quantum_accelerators"
        assert bounded_carry([{"name": "qpu"}], "t.yaml", "quantum_accelerators") == [{"name": "qpu"}]


class TestNumbers:
    @pytest.mark.parametrize(("name", "text", "field"), [
        ("c.json", '{"a": {"seed": %s}}', "a.seed"),
        ("c.yaml", "a:\n  seed: %s\n", "a.seed"),
        ("c.json", '{"list": [1, -%s]}', "list[1]"),
    ])
    def test_huge_integer_names_the_field(self, name, text, field):
        err = refused(lambda: parse_mapping(RawInput(name, (text % huge_integer()).encode())))
        assert err.field == field and err.problem == "integer too large"

    @pytest.mark.parametrize(("name", "text", "field"), [
        ("c.json", '{"power_w": Infinity}', "power_w"),
        ("c.json", '{"x": [NaN]}', "x[0]"),
        ("c.json", '{"bytes": 1e999}', "bytes"),
        ("c.yaml", "power_w: .inf\n", "power_w"),
        ("c.yaml", "nodes: [{power_w: -.Inf}]\n", "nodes[0].power_w"),
    ])
    def test_non_finite_names_the_field(self, name, text, field):
        err = refused(lambda: parse_mapping(RawInput(name, text.encode())))
        assert err.field == field and err.problem == "not a finite number"

    @pytest.mark.parametrize("cell", ["inf", "-inf", "1e309"])
    def test_csv_infinity_names_column_and_row(self, cell):
        err = refused(lambda: load_table(f"token_id,complexity\na,1\nb,{cell}\n".encode(), name="t.csv"))
        assert err.field == "complexity (row 2)" and err.problem == "not a finite number"

    def test_set_values(self):
        assert parse_scalar("12", "--set", "seed") == 12
        assert refused(lambda: parse_scalar(huge_integer(), "--set", "seed")).field == "seed"
        assert refused(lambda: parse_scalar(".nan", "--set", "capacity_factor")).field == "capacity_factor"

    @pytest.mark.parametrize(("values", "expected"), [
        ({"seed": 10**5000}, "an integer of about 5001 digits"),
        ({"seed": huge_integer()}, "an integer"),
        ({"capacity_factor": 10**5000}, "a number"),
        ({"quantum_time_budget_s": float("inf")}, "a finite number"),
        ({"locality_weight": float("nan")}, "a finite number"),
    ])
    def test_config_validation(self, values, expected):
        config_cls = load_command("routing").config_cls
        err = refused(lambda: config_cls.from_mapping(values, "routing.yaml"))
        assert err.field == f"config.{next(iter(values))}" and expected in err.message

    def test_config_file_with_huge_integer(self, tmp_path):
        path = tmp_path / "cfg.json"
        path.write_text('{"seed": ' + huge_integer() + '}')
        assert refused(lambda: load_mapping(path)).field == "seed"


# --------------------------------------------------------------------------- CLI and API

#: Small limits for the front-end cases, so a wrong implementation fails in seconds, not minutes.
SMALL_LIMITS = {"QFLOW_MAX_DECODED_MB": "64", "QFLOW_MAX_ARCHIVE_MEMBERS": "1000", "QFLOW_MAX_YAML_ALIASES": "1000",
                "QFLOW_MAX_CARRIED_FIELD_KB": "16"}


def _energy_inputs(topology: tuple[str, bytes]) -> dict[str, tuple[str, bytes]]:
    energy = SAMPLES / "energy"
    return {"telemetry": ("telemetry.csv", (energy / "telemetry.csv").read_bytes()), "topology": topology,
            "jobs": ("jobs.json", (energy / "jobs.json").read_bytes())}


def _routing_inputs(tokens: bytes | None = None) -> dict[str, tuple[str, bytes]]:
    routing = SAMPLES / "routing"
    return {"tokens": ("tokens.csv", tokens if tokens is not None else (routing / "tokens.csv").read_bytes()),
            "model_graph": ("model_graph.json", (routing / "model_graph.json").read_bytes())}


def _bad_tokens() -> bytes:
    lines = (SAMPLES / "routing" / "tokens.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("complexity")] = "inf"
    return "\n".join([lines[0], ",".join(row), *lines[2:50]]).encode() + b"\n"


def hostile_requests() -> list[tuple[str, str, dict[str, tuple[str, bytes]], str]]:
    """``(case id, module, files, config JSON)``: one request per class of hostile input."""
    huge = huge_integer()
    return [
        ("npz_bomb", "attention", {"embeddings": ("emb.npz", npz_bomb())}, "{}"),
        ("npz_many_members", "compress", {"input": ("w.npz", npz_many_members(50_000))}, "{}"),
        ("npy_forged_header", "compress", {"input": ("w.npy", npy_header((10**12,)))}, "{}"),
        ("safetensors_huge_shape", "compress", {"input": ("w.safetensors", safetensors_declaring([10**6, 10**6]))}, "{}"),
        ("pt_bomb", "compress", {"input": ("w.pt", npz_bomb())}, "{}"),
        ("yaml_alias_bomb", "energy", _energy_inputs(("topology.yaml", yaml_alias_bomb().encode())), "{}"),
        ("csv_infinity", "routing", _routing_inputs(_bad_tokens()), "{}"),
        ("config_huge_integer", "routing", _routing_inputs(), '{"seed": ' + huge + '}'),
        ("config_nan", "routing", _routing_inputs(), '{"capacity_factor": NaN}'),
        ("config_infinity", "routing", _routing_inputs(), '{"quantum_time_budget_s": 1e999}'),
    ]


def _assert_one_line_4xx(status: int, body: bytes, case: str) -> None:
    assert 400 <= status < 500, f"{case}: HTTP {status}: {body[:300]!r}"
    detail = json.loads(body)["detail"]
    assert isinstance(detail, str) and "\n" not in detail, f"{case}: {detail!r}"


@pytest.fixture(scope="module")
def api_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = RunStore(tmp_path_factory.mktemp("hostile-api") / "runs.db")
    with TestClient(create_app(store=store), raise_server_exceptions=False, base_url="http://localhost") as client:
        yield client


def test_api_answers_every_hostile_request_with_a_4xx(api_client, monkeypatch):
    for name, value in SMALL_LIMITS.items():
        monkeypatch.setenv(name, value)
    for case, module, files, config in hostile_requests():
        response = api_client.post(f"/v1/{module}/plan", files=files, data={"config": config})
        _assert_one_line_4xx(response.status_code, response.content, case)
    assert api_client.get("/v1/health").status_code == 200
    assert api_client.get("/v1/runs").json() == [], "no hostile request was stored as a run"


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **SMALL_LIMITS, "QFLOW_HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "qflow", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _assert_exit_2_one_line(code: int, stderr: str, case: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, f"{case}: exit {code}: {stderr[-600:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {stderr[-600:]}"


def _cli_cases(tmp_path: Path) -> list[tuple[str, list[str]]]:
    def write(name: str, data: bytes | str) -> str:
        path = tmp_path / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    routing = ["routing", "--tokens", str(SAMPLES / "routing" / "tokens.csv"), "--model-graph",
               str(SAMPLES / "routing" / "model_graph.json")]
    energy = ["energy", "--telemetry", str(SAMPLES / "energy" / "telemetry.csv"), "--jobs", str(SAMPLES / "energy" / "jobs.json")]
    return [
        ("npz_bomb", ["attention", "--embeddings", write("emb.npz", npz_bomb())]),
        ("safetensors_huge_shape", ["compress", "--input", write("w.safetensors", safetensors_declaring([10**6, 10**6]))]),
        ("yaml_alias_bomb", [*energy, "--topology", write("topology.yaml", yaml_alias_bomb())]),
        ("set_huge_integer", [*routing, "--set", f"seed={huge_integer()}"]),
        ("set_infinity", [*routing, "--set", "capacity_factor=.inf"]),
        ("config_file_huge_integer", [*routing, "--config", write("cfg.json", '{"seed": ' + huge_integer() + '}')]),
        ("csv_infinity", ["routing", "--tokens", write("tokens.csv", _bad_tokens()), "--model-graph",
                          str(SAMPLES / "routing" / "model_graph.json")]),
    ]


def test_cli_exits_2_with_one_error_line(tmp_path, monkeypatch, capsys):
    """Every case through the CLI's own entry point, in this process (one subprocess each would take minutes)."""
    from qflow.cli import main

    for name, value in SMALL_LIMITS.items():
        monkeypatch.setenv(name, value)
    for case, args in _cli_cases(tmp_path):
        code = main([*args, "--out", str(tmp_path / f"{case}.json")])
        _assert_exit_2_one_line(code, capsys.readouterr().err, case)
        assert not (tmp_path / f"{case}.json").exists()


def test_python_m_qflow_refuses_a_bomb(tmp_path):
    """The real ``python -m qflow`` process: exit 2 and one line, nothing else on stderr."""
    bomb = tmp_path / "emb.npz"
    bomb.write_bytes(npz_bomb())
    result = _cli(["attention", "--embeddings", str(bomb), "--out", str(tmp_path / "plan.json")], tmp_path)
    _assert_exit_2_one_line(result.returncode, result.stderr, "npz_bomb")
    assert result.stderr.startswith("error: emb.npz: ") and " limit " in result.stderr
    assert not (tmp_path / "plan.json").exists()


# --------------------------------------------------------------------------- a real server under prlimit

#: Address-space limit of the server: enough for its imports (about 0.6 GiB resident) and one
#: ordinary request, far too little to inflate one of the 1 GiB bombs twice over.
SERVER_AS_BYTES = 3 * GIB
#: The server's peak resident memory must stay under this after every bomb (a bomb inflated once is 1 GiB).
SERVER_PEAK_BYTES = int(1.5 * GIB)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _multipart(files: dict[str, tuple[str, bytes]], config: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for field, (file_name, data) in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file_name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="config"\r\n\r\n{config}\r\n--{boundary}--\r\n'.encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _request(url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 120) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _vm(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` memory figure (``VmHWM``, ``VmRSS``) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


@pytest.mark.skipif(shutil.which("prlimit") is None or not Path("/proc/self/status").exists(),
                    reason="needs util-linux prlimit and /proc")
def test_server_under_prlimit_survives_every_bomb_with_bounded_memory(tmp_path):
    port = _free_port()
    env = {**os.environ, "QFLOW_HOME": str(tmp_path)}  # default limits: the bombs must be caught as shipped
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(["prlimit", f"--as={SERVER_AS_BYTES}", sys.executable, "-m", "qflow", "serve", "--port",
                               str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if _request(f"{base}/v1/health", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        for case, module, files, config in hostile_requests():
            status, body = _request(f"{base}/v1/{module}/plan", *_multipart(files, config))
            _assert_one_line_4xx(status, body, case)
            assert server.poll() is None, f"server died on {case}: {(tmp_path / 'serve.log').read_text()[-2000:]}"
        assert _request(f"{base}/v1/health")[0] == 200
        peak = _vm(server.pid, "VmHWM")
        print(f"server peak resident memory {peak / MIB:.0f} MiB under prlimit --as={SERVER_AS_BYTES / GIB:g} GiB")
        assert peak < SERVER_PEAK_BYTES, f"server peak {peak / MIB:.0f} MiB"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
