"""An Optuna study (sqlite database or journal file) as the HPO history, and suggestions enqueued into it."""

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from qflow.core.errors import InputError
from qflow.hpo import plan_hpo

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"lr": {"kind": "float", "low": 0.001, "high": 1.0, "log": True}, "depth": {"kind": "int", "low": 2, "high": 8}}
DIST = {"lr": FloatDistribution(0.0001, 1.0, log=True), "depth": IntDistribution(1, 8)}
#: (params, value): trial 2 is outside the space (lr below its low), trial 3 has an extra parameter.
TRIALS = [({"lr": 0.01, "depth": 3}, 0.30), ({"lr": 0.1, "depth": 5}, 0.20), ({"lr": 0.0002, "depth": 4}, 0.05),
          ({"lr": 0.05, "depth": 6, "gamma": 0.5}, 0.01), ({"lr": 0.5, "depth": 7}, 0.25)]


def _fill(storage, name="rf", direction="minimize"):
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    for params, value in TRIALS:
        dists = {**DIST, "gamma": FloatDistribution(0.0, 1.0)}
        study.add_trial(create_trial(params=params, distributions={k: dists[k] for k in params}, value=value))
    study.enqueue_trial({"lr": 0.2, "depth": 2})  # a waiting trial: pending in the plan
    return study


@pytest.fixture(params=["sqlite", "journal"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
        _fill(url)
        return url
    path = tmp_path / "study.journal"
    _fill(optuna.storages.JournalStorage(JournalFileBackend(str(path))))
    return str(path)


def _open(storage_text):
    if "://" in storage_text:
        return optuna.load_study(study_name="rf", storage=storage_text)
    return optuna.load_study(study_name="rf", storage=optuna.storages.JournalStorage(JournalFileBackend(storage_text)))


def test_completed_trials_are_the_history(storage):
    plan = plan_hpo(SPACE, None, {"optuna_storage": storage, "optuna_study": "rf", "suggest": 2})
    result = plan.result
    assert result["history_used"] == 3  # trials 0, 1, 4
    assert result["history_pending"] == 1
    assert result["best"]["value"] == pytest.approx(0.20) and result["best"]["config"] == {"lr": pytest.approx(0.1), "depth": 5}
    rejected = {r["optuna_trial"]: r["reason"] for r in result["history_rejected"]}
    assert set(rejected) == {2, 3}
    assert "lr" in rejected[2] and "outside" in rejected[2]
    assert "gamma" in rejected[3]
    assert any("Optuna trial 2" in d for d in plan.diagnostics)
    history = [d for d in plan.inputs if d.name == "history"]
    assert len(history) == 1 and history[0].source == "optuna:rf"
    # The pending (waiting) trial is never suggested again.
    assert {"lr": 0.2, "depth": 2} not in result["suggestions"]


def test_direction_is_respected(tmp_path):
    url = f"sqlite:///{tmp_path / 'max.db'}"
    _fill(url, direction="maximize")
    with pytest.raises(InputError, match=r"direction.*maximize"):
        plan_hpo(SPACE, None, {"optuna_storage": url, "optuna_study": "rf"})
    plan = plan_hpo(SPACE, None, {"optuna_storage": url, "optuna_study": "rf", "direction": "maximize"})
    assert plan.result["best"]["value"] == pytest.approx(0.30)


def test_suggestions_are_enqueued(storage):
    plan = plan_hpo(SPACE, None, {"optuna_storage": storage, "optuna_study": "rf", "suggest": 3, "enqueue_suggestions": True})
    waiting = [t.system_attrs["fixed_params"] for t in _open(storage).get_trials(states=(TrialState.WAITING,))]
    suggestions = plan.result["suggestions"]
    assert [e["enqueued"] for e in plan.result["optuna"]["enqueued"]] == [True, True, True]
    assert waiting[0] == {"lr": 0.2, "depth": 2}
    assert [{k: pytest.approx(v) for k, v in w.items()} for w in waiting[1:]] == suggestions
    # A second, identical plan reads them as pending and suggests other points.
    again = plan_hpo(SPACE, None, {"optuna_storage": storage, "optuna_study": "rf", "suggest": 3})
    assert again.result["history_pending"] == 4
    assert not any(s in suggestions for s in again.result["suggestions"])


def test_missing_study_or_storage_is_one_line(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _fill(url)
    with pytest.raises(InputError, match=r"optuna_study: no such study.*one of: rf"):
        plan_hpo(SPACE, None, {"optuna_storage": url, "optuna_study": "nope"})
    with pytest.raises(InputError, match="sqlite database not found"):
        plan_hpo(SPACE, None, {"optuna_storage": f"sqlite:///{tmp_path / 'none.db'}", "optuna_study": "rf"})
    assert not (tmp_path / "none.db").exists()  # reading never creates a storage
    with pytest.raises(InputError, match="journal file not found"):
        plan_hpo(SPACE, None, {"optuna_storage": str(tmp_path / "none.journal"), "optuna_study": "rf"})
    monkeypatch.delenv("QFLOW_OPTUNA_STORAGE", raising=False)
    with pytest.raises(InputError, match="optuna_storage: no storage"):
        plan_hpo(SPACE, None, {"optuna_study": "rf"})
    monkeypatch.setenv("QFLOW_OPTUNA_STORAGE", url)
    assert plan_hpo(SPACE, None, {"optuna_study": "rf"}).result["history_used"] == 3


def test_history_file_and_study_together_refused(tmp_path):
    import pandas as pd

    url = f"sqlite:///{tmp_path / 'study.db'}"
    _fill(url)
    frame = pd.DataFrame({"lr": [0.1], "depth": [3], "objective": [0.5]})
    with pytest.raises(InputError, match="two histories given"):
        plan_hpo(SPACE, frame, {"optuna_storage": url, "optuna_study": "rf"})
