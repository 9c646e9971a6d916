"""qflow train contrastive: a plan reusing the projections gives what training them in the plan gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qflow.cli import main
from qflow.core.errors import InputError
from qflow.core.models import load_model, save_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def embeddings(tmp_path) -> Path:
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).normal(size=(48, 8)).astype(np.float32))
    return path


def test_reused_projections_give_the_trained_plan(tmp_path, embeddings, capsys) -> None:
    model = tmp_path / "ct.safetensors"
    assert main(["train", "contrastive", "--embeddings", str(embeddings), "--out", str(model), "--train-steps", "20"]) == 0
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    common = ["attention", "--embeddings", str(embeddings), "--contrastive-trainer", "--train-steps", "20"]
    assert main([*common, "--out", str(a)]) == 0
    assert main([*common, "--model", str(model), "--out", str(b)]) == 0
    pa, pb = json.loads(a.read_text()), json.loads(b.read_text())
    assert pb["metrics"]["infonce_final"] == pytest.approx(pa["metrics"]["infonce_final"], rel=1e-5)
    assert pb["metrics"]["relative_error"] == pytest.approx(pa["metrics"]["relative_error"], rel=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "b.embeddings.npy"), np.load(tmp_path / "a.embeddings.npy"), rtol=1e-5, atol=1e-6)
    assert pb["result"]["training"]["trained_model"]["trained"] == "no, loaded"


def test_projections_of_another_width_are_refused(tmp_path, embeddings, capsys) -> None:
    wrong = tmp_path / "w4.safetensors"
    save_model(wrong, "contrastive", {"w_q": np.eye(4, dtype=np.float32), "w_k": np.eye(4, dtype=np.float32)},
               config={}, inputs=[], metrics={}, spec={"width": 4})
    assert main(["attention", "--embeddings", str(embeddings), "--contrastive-trainer", "--model", str(wrong)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: w4.safetensors: model.spec.width: the model does not fit these inputs")
    from qflow.attention._train import loaded_projections

    with pytest.raises(InputError):
        loaded_projections(load_model(wrong, "contrastive"), np.zeros((3, 8), np.float32), np.zeros((3, 8), np.float32))
