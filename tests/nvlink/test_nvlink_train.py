"""qflow train contention-classifier: the saved SVM decides as scikit-learn's, and a plan reusing it calls what training would."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nvlink_helpers import SAMPLES

from qflow.cli import main
from qflow.core.models import load_model
from qflow.nvlink._train import RbfSvm, classifier_from_artifact, classifier_tensors

FILES = ["--fabric", str(SAMPLES / "dgx_h100.json"), "--jobs", str(SAMPLES / "jobs_node.json")]
FAST = ["--no-rl-planner", "--set", "classifier_samples=60"]


def test_the_numpy_decision_function_is_sklearns() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8)) * rng.uniform(0.1, 10, 8)
    y = (X[:, 0] / 10 + X[:, 3] > 0).astype(int)
    pipeline = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale", class_weight="balanced")).fit(X, y)
    loaded = RbfSvm(classifier_tensors(pipeline))
    Z = rng.normal(size=(200, 8)) * 5
    np.testing.assert_allclose(loaded.decision_function(Z), pipeline.decision_function(Z), rtol=1e-9, atol=1e-9)
    assert (loaded.predict(Z) == pipeline.predict(Z)).all()


def test_a_plan_with_the_trained_model_makes_the_same_calls_without_training(tmp_path, capsys) -> None:
    model = tmp_path / "cc.safetensors"
    assert main(["train", "contention-classifier", *FILES, "--out", str(model), *FAST]) == 0
    assert "card sha256" in capsys.readouterr().out
    trained, reused = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["nvlink", *FILES, *FAST, "--out", str(trained)]) == 0
    assert main(["nvlink", *FILES, *FAST, "--model", str(model), "--out", str(reused)]) == 0
    a, b = (json.loads(p.read_text())["result"]["classifier"] for p in (trained, reused))
    for name in a["predictions"]:
        assert a["predictions"][name]["model_call"] == b["predictions"][name]["model_call"]
        assert a["predictions"][name]["score"] == pytest.approx(b["predictions"][name]["score"], rel=1e-9, abs=1e-12)
    assert b["held_out_accuracy"] == a["held_out_accuracy"] and b["logs"] == "loaded model"
    assert b["trained_model"]["trained"] == "no, loaded" and b["trained_model"]["card_sha256"]
    plan = json.loads(reused.read_text())
    assert "model" in [d["name"] for d in plan["inputs"]]
    assert any("trained: no, loaded" in d for d in plan["diagnostics"])
    assert classifier_from_artifact(load_model(model, "contention-classifier")).beats_majority_class == (
        b["held_out_accuracy"] > b["majority_class_accuracy"])


def test_a_model_of_another_kind_is_one_line_exit_2(tmp_path, capsys) -> None:
    from qflow.core.models import save_model

    other = tmp_path / "other.safetensors"
    save_model(other, "contrastive", {"w_q": np.eye(2, dtype=np.float32)}, config={}, inputs=[], metrics={}, spec={})
    assert main(["nvlink", *FILES, *FAST, "--model", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: other.safetensors: model.kind: a model of another kind")
