"""The CLI acceptance commands: suggestions, an optimisation run, and exit 2 with one clear line for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "hpo"


def test_suggest_four_inside_the_bounds(capsys, tmp_path):
    out = tmp_path / "plan.json"
    code = main(["hpo", "--space", str(SAMPLES / "space.yaml"), "--history", str(SAMPLES / "history.csv"), "--suggest", "4",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "4 suggestions (gp-ei):" in text and "1 rejected (outside the space)" in text
    plan = json.loads(out.read_text())
    space = yaml.safe_load((SAMPLES / "space.yaml").read_text())["parameters"]
    assert len(plan["result"]["suggestions"]) == 4
    for s in plan["result"]["suggestions"]:
        for name, spec in space.items():
            if spec["kind"] == "categorical":
                assert s[name] in spec["choices"]
            else:
                assert spec["low"] <= s[name] <= spec["high"]
                assert isinstance(s[name], int) == (spec["kind"] == "int")
    assert plan["metrics"]["n_history_pending"] == 1 and plan["metrics"]["n_history_used"] == 10


@pytest.mark.parametrize(("space", "message"), [
    ({"parameters": {"lr": {"kind": "float", "low": 1.0, "high": 0.1}}},
     "error: bad.yaml: parameters.lr.bounds: lower bound not below upper bound; expected low < high, got low=1.0, high=0.1"),
    ({"parameters": {"lr": {"kind": "exp", "low": 0, "high": 1}}},
     "error: bad.yaml: parameters.lr.kind: unknown kind; expected one of float, int, categorical, got exp"),
    ({"parameters": {"act": {"kind": "categorical", "choices": []}}},
     "error: bad.yaml: parameters.act.choices: empty categorical; expected a non-empty list of distinct values, got []"),
])
def test_malformed_space_exits_2(capsys, tmp_path, space, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["hpo", "--space", str(path)]) == 2
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text.replace("trial,", "epochs,", 1),
     "error: bad.csv: epochs: unknown column; expected the space's parameters"),
    (lambda text: text.replace(",0.038652", ",diverged", 1),
     "error: bad.csv: objective[row 0]: not a number; expected a number (blank for a pending trial), got diverged"),
])
def test_malformed_history_exits_2(capsys, tmp_path, edit, message):
    path = tmp_path / "bad.csv"
    path.write_text(edit((SAMPLES / "history.csv").read_text()))
    assert main(["hpo", "--space", str(SAMPLES / "space.yaml"), "--history", str(path)]) == 2
    assert capsys.readouterr().err.strip().startswith(message)


def test_train_objective_rejects_a_parameter_the_model_lacks(capsys, tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"parameters": {"learning_rat": {"kind": "float", "low": 0.01, "high": 0.3}}}))
    assert main(["hpo", "--space", str(path), "--objective", "train"]) == 2
    assert capsys.readouterr().err.startswith("error: space.json: parameters.learning_rat: not an argument of the random_forest model")


def test_train_objective_runs_cross_validation(capsys, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"parameters": {"max_depth": {"kind": "int", "low": 1, "high": 6},
                                                   "n_estimators": {"kind": "int", "low": 5, "high": 15}}}))
    out = tmp_path / "plan.json"
    code = main(["hpo", "--space", str(path), "--objective", "train", "--builtin-dataset", "iris", "--n-trials", "4",
                 "--batch-size", "2", "--no-baselines", "--set", "n_initial=2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert "random_forest (classification) on sklearn:iris" in plan["result"]["objective_detail"]
    values = [t["value"] for t in plan["result"]["trials"]]
    assert len(values) == 4 and all(0.0 <= v < 0.2 for v in values)  # CV error on iris
    assert [t["batch"] for t in plan["result"]["trials"]] == [0, 0, 1, 1]


def test_builtin_objective_runs_without_a_space_on_its_own_domain(capsys, tmp_path):
    out = tmp_path / "plan.json"
    code = main(["hpo", "--objective", "branin", "--n-trials", "6", "--no-baselines", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert [(p["name"], p["low"], p["high"]) for p in plan["result"]["space"]] == [("x1", -5.0, 10.0), ("x2", 0.0, 15.0)]
    assert plan["inputs"][0]["name"] == "space" and plan["inputs"][0]["source"] == "built-in:branin"
    assert plan["metrics"]["n_evaluations"] == 6
    assert not any("space file" in note for note in plan["diagnostics"])


def test_history_without_a_space_is_read_against_the_builtin_domain(capsys, tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("x1,x2,objective\n3.14159,2.275,0.397887\n-20,5,1.0\n")
    out = tmp_path / "plan.json"
    code = main(["hpo", "--objective", "branin", "--history", str(history), "--n-trials", "2", "--no-baselines",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert plan["metrics"]["n_history_used"] == 1 and plan["metrics"]["n_history_rejected"] == 1  # x1=-20 is outside [-5, 10]
    assert plan["result"]["best"]["value"] == pytest.approx(0.397887)


@pytest.mark.parametrize("objective", ["none", "train"])
def test_objectives_without_a_domain_need_a_space(capsys, objective):
    assert main(["hpo", "--objective", objective]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: space: (file): no search space given; expected a space file") and "\n" not in err
    assert err.endswith(f"got objective={objective}")
