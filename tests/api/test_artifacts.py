"""Artifacts of API runs: kept under the run, listed with size and sha256, downloaded, never outside their folder.

compress -> download the .qfz -> decompress through the API gives the same
tensors as the engine's plain inverse of that container; attention keeps its
updated embeddings; a run that wrote nothing keeps no folder; unknown runs and
names, ``..`` and absolute names are 404s.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from qflow.api import artifact_store, create_app
from qflow.compression import decompress_container, load_tensors_input
from qflow.core.runs import RunStore
from qflow.core.tensors import load_tensors

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "sample_data/compression/checkpoint.safetensors"
EMBEDDINGS = ROOT / "sample_data/attention/embeddings.npy"


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "home" / "runs.db")


@pytest.fixture
def client(store: RunStore) -> Iterator[TestClient]:
    with TestClient(create_app(store=store), raise_server_exceptions=False, base_url="http://localhost") as test_client:
        yield test_client


def _compress(client: TestClient, seed: int = 1) -> tuple[int, Any]:
    response = client.post("/v1/compress/plan", files={"input": (CHECKPOINT.name, CHECKPOINT.read_bytes())},
                           data={"config": json.dumps({"seed": seed})})
    assert response.status_code == 200, response.text
    return int(response.headers["X-Qflow-Run-Id"]), response


def test_compress_container_downloads_and_decompresses_to_the_plain_inverse(
    client: TestClient, store: RunStore,
) -> None:
    run_id, response = _compress(client)
    plan = response.json()
    assert response.headers["X-Qflow-Artifacts"] == "plan.qfz"
    assert plan["result"]["container"]["written_to"] is None  # no temporary path leaks into the plan

    listing = client.get(f"/v1/runs/{run_id}/artifacts")
    assert listing.status_code == 200
    [entry] = listing.json()
    assert entry["name"] == "plan.qfz" and entry["bytes"] == plan["metrics"]["container_bytes"]
    kept = store.path.parent / "artifacts" / store.get(run_id).uid / "plan.qfz"
    assert kept.is_file()

    download = client.get(f"/v1/runs/{run_id}/artifacts/plan.qfz")
    assert download.status_code == 200
    container = download.content
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment")
    assert 'filename="plan.qfz"' in download.headers["content-disposition"]
    assert len(container) == entry["bytes"] and hashlib.sha256(container).hexdigest() == entry["sha256"]
    assert container == kept.read_bytes()

    # Decompress the downloaded container through the API; keep the restored tensors.
    restored_response = client.post("/v1/decompress/plan", files={"input": ("model.qfz", container)},
                                    data={"config": "{}"})
    assert restored_response.status_code == 200, restored_response.text
    assert restored_response.headers["X-Qflow-Artifacts"] == "plan.safetensors"
    restored_id = int(restored_response.headers["X-Qflow-Run-Id"])
    assert restored_id != run_id
    tensors = client.get(f"/v1/runs/{restored_id}/artifacts/plan.safetensors")
    assert tensors.status_code == 200
    restored, _ = load_tensors(tensors.content, "plan.safetensors")

    # The same tensors as the engine's plain inverse of the same container, and close to the original.
    plain = decompress_container(container, {}).arrays
    original, _ = load_tensors_input(CHECKPOINT)
    assert set(restored) == set(plain) == set(original)
    for name, array in plain.items():
        assert restored[name].dtype == array.dtype and restored[name].shape == array.shape
        np.testing.assert_array_equal(restored[name], array)
        scale = float(np.abs(original[name]).max()) or 1.0
        assert float(np.abs(restored[name].astype(np.float64) - original[name]).max()) <= 0.1 * scale, name


def test_attention_keeps_its_updated_embeddings(client: TestClient) -> None:
    response = client.post("/v1/attention/plan", files={"embeddings": (EMBEDDINGS.name, EMBEDDINGS.read_bytes())},
                           data={"config": json.dumps({"top_k": 8})})
    assert response.status_code == 200, response.text
    run_id = int(response.headers["X-Qflow-Run-Id"])
    shape = response.json()["result"]["updated_embeddings"]["shape"]
    names = [entry["name"] for entry in client.get(f"/v1/runs/{run_id}/artifacts").json()]
    assert names == ["plan.embeddings.npy"] == response.headers["X-Qflow-Artifacts"].split(",")
    download = client.get(f"/v1/runs/{run_id}/artifacts/plan.embeddings.npy")
    assert download.status_code == 200
    embeddings = np.load(io.BytesIO(download.content), allow_pickle=False)
    assert list(embeddings.shape) == shape and np.isfinite(embeddings).all()


def test_a_run_without_files_keeps_no_folder(client: TestClient, store: RunStore) -> None:
    files = {"space": ("space.yaml", (ROOT / "sample_data/hpo/space.yaml").read_bytes())}
    response = client.post("/v1/hpo/plan", files=files, data={"config": json.dumps({"suggest": 1})})
    assert response.status_code == 200, response.text
    run_id = int(response.headers["X-Qflow-Run-Id"])
    assert "X-Qflow-Artifacts" not in response.headers
    assert client.get(f"/v1/runs/{run_id}/artifacts").json() == []
    assert not artifact_store(store).folder(store.get(run_id).uid).exists()
    missing = client.get(f"/v1/runs/{run_id}/artifacts/plan.qfz")
    assert missing.status_code == 404 and "no artifact" in missing.json()["detail"]


def test_unknown_runs_and_names_are_404_with_a_message(client: TestClient) -> None:
    for url in ("/v1/runs/999/artifacts", "/v1/runs/999/artifacts/plan.qfz", f"/v1/runs/{2**70}/artifacts"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["detail"].startswith("run: ") and "no such run" in response.json()["detail"], url
    run_id, _ = _compress(client)
    response = client.get(f"/v1/runs/{run_id}/artifacts/plan.json")
    assert response.status_code == 404
    assert response.json()["detail"] == (f"run {run_id}: plan.json: no artifact of this name; "
                                          f"expected a name from GET /v1/runs/{run_id}/artifacts")


def test_path_traversal_is_refused(client: TestClient, store: RunStore) -> None:
    run_id, _ = _compress(client)
    home = store.path.parent
    (home / "secret.txt").write_text("not yours")
    other_id, _ = _compress(client, seed=2)  # a second run: its file must not be reachable from the first
    uid, other_uid = store.get(run_id).uid, store.get(other_id).uid
    (home / "artifacts" / other_uid / "plan.qfz").rename(home / "artifacts" / other_uid / "other.qfz")
    # Percent-encoded names reach the endpoint as they are (clients do not normalise them): all 404.
    attempts = [
        "..%2F..%2Fsecret.txt", "..%2F..%2Fruns.db", f"..%2F{other_uid}%2Fother.qfz", "%2E%2E", "%2E%2E%2Fsecret.txt",
        "%2Fetc%2Fpasswd", "/etc/passwd", str(home / "runs.db"), "..%5C..%5Csecret.txt", "plan.qfz%00",
        ".%2Fplan.qfz", "PLAN.QFZ", "%20plan.qfz",
    ]
    for name in attempts:
        response = client.get(f"/v1/runs/{run_id}/artifacts/{name}")
        assert response.status_code == 404, (name, response.status_code)
        assert b"not yours" not in response.content and b"SQLite" not in response.content
    # Bare dot segments are resolved by the client before sending; whatever they become, nothing outside leaks.
    for name in ("..", "../secret.txt", "../../secret.txt", "../../../runs.db", f"../{other_uid}/other.qfz"):
        response = client.get(f"/v1/runs/{run_id}/artifacts/{name}")
        assert b"not yours" not in response.content and b"SQLite" not in response.content, name
        assert response.status_code in (200, 404, 422), name
        if response.status_code == 200:  # another endpoint's JSON (the run, its listing), never a file
            assert response.headers["content-type"] == "application/json", name
            assert "content-disposition" not in response.headers, name
    # And the store itself serves only names from its listing, whatever the router passes on.
    kept = artifact_store(store)
    for name in ("..", "../secret.txt", "../../secret.txt", "./plan.qfz", str(home / "secret.txt"), "/etc/passwd",
                 f"../{other_uid}/other.qfz", "", ".", "plan.qfz/", "plan.qfz\x00"):
        assert kept.path(uid, name) is None, name
    assert kept.path(uid, "plan.qfz") == home / "artifacts" / uid / "plan.qfz"
    assert client.get(f"/v1/runs/{run_id}/artifacts/plan.qfz").status_code == 200
    assert client.get(f"/v1/runs/{other_id}/artifacts/other.qfz").status_code == 200


def test_artifact_endpoints_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/v1/runs/{run_id}/artifacts"]
    assert "get" in paths["/v1/runs/{run_id}/artifacts/{name}"]


def test_artifacts_follow_the_run_uid_not_its_id(client: TestClient, store: RunStore) -> None:
    run_id, _ = _compress(client)
    old_uid = store.get(run_id).uid
    assert (store.path.parent / "artifacts" / old_uid / "plan.qfz").is_file()
    for suffix in ("", "-wal", "-shm"):  # the database is replaced; the artifacts folder stays
        Path(str(store.path) + suffix).unlink(missing_ok=True)
    files = {"space": ("space.yaml", (ROOT / "sample_data/hpo/space.yaml").read_bytes())}
    response = client.post("/v1/hpo/plan", files=files, data={"config": json.dumps({"suggest": 1})})
    assert response.status_code == 200, response.text
    new_id = int(response.headers["X-Qflow-Run-Id"])
    assert new_id == run_id  # the integer id came round again...
    assert client.get(f"/v1/runs/{new_id}/artifacts").json() == []  # ...but the old files do not attach to it
    assert client.get(f"/v1/runs/{new_id}/artifacts/plan.qfz").status_code == 404
    assert client.get(f"/v1/runs/{new_id}").json()["uid"] != old_uid


def test_nothing_is_served_through_a_symbolic_link(client: TestClient, store: RunStore, tmp_path: Path) -> None:
    run_id, _ = _compress(client)
    uid = store.get(run_id).uid
    folder = store.path.parent / "artifacts" / uid
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.qfz").write_text("not yours")
    (folder / "linked.qfz").symlink_to(outside / "secret.qfz")  # a file link inside the run's folder
    assert [entry["name"] for entry in client.get(f"/v1/runs/{run_id}/artifacts").json()] == ["plan.qfz"]
    assert client.get(f"/v1/runs/{run_id}/artifacts/linked.qfz").status_code == 404
    # The run's whole folder replaced by a link to a folder holding a file of the listed name.
    (outside / "plan.qfz").write_text("not yours either")
    for entry in folder.iterdir():
        entry.unlink()
    folder.rmdir()
    folder.symlink_to(outside, target_is_directory=True)
    assert client.get(f"/v1/runs/{run_id}/artifacts").json() == []
    response = client.get(f"/v1/runs/{run_id}/artifacts/plan.qfz")
    assert response.status_code == 404 and b"not yours" not in response.content
