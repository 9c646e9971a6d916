"""An Optuna study as the HPO history, and the plan's suggestions enqueued into it.

Teams that already run Optuna keep their trials in a storage: an RDB URL
(``sqlite:///path.db``, ``postgresql://...``) or a journal file. The study's
completed trials become history rows (its running and waiting trials become
pending ones), mapped by parameter name onto the plan's space; a trial whose
parameters do not match the space is rejected with its reason, like a history
row outside the space. The plan's suggestions can go back into the study as
waiting trials, for Optuna workers to pick up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from qflow.core.errors import InputError
from qflow.hpo._schemas import OBJECTIVE_COLUMN, History, Space

__all__ = ["STORAGE_ENV", "enqueue_suggestions", "load_study", "redact_storage", "study_history", "merge_rejected",
           "storage_setting"]

#: Environment variable naming the storage when the config does not.
STORAGE_ENV = "QFLOW_OPTUNA_STORAGE"
_SOURCE = "config"


def redact_storage(url: str) -> str:
    """``url`` with any password replaced by ``***`` (plans and the run store keep the config as given).

    >>> redact_storage("postgresql://ops:s3cret@db:5432/hpo")
    'postgresql://ops:***@db:5432/hpo'
    >>> redact_storage("sqlite:///studies/hpo.db")
    'sqlite:///studies/hpo.db'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def storage_setting(configured: str) -> tuple[str, str]:
    """``(storage, field it came from)``: the config's ``optuna_storage``, else ``QFLOW_OPTUNA_STORAGE``."""
    if configured:
        return configured, "optuna_storage"
    value = os.environ.get(STORAGE_ENV, "")
    if not value:
        raise InputError(_SOURCE, "optuna_storage", "no storage for optuna_study",
                         f"an RDB URL (sqlite:///path.db) or a journal file path, or {STORAGE_ENV}")
    return value, STORAGE_ENV


def _storage(url_or_path: str, field: str) -> Any:
    """An Optuna storage; a local file (sqlite database or journal) must already exist: reading never creates one."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" not in url_or_path:
        path = Path(url_or_path)
        if not path.is_file():
            raise InputError(_SOURCE, field, "journal file not found", "an existing Optuna journal file", url_or_path)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url_or_path.startswith("sqlite:///"):
        path = Path(url_or_path.removeprefix("sqlite:///"))
        if not path.is_file():
            raise InputError(_SOURCE, field, "sqlite database not found", "an existing Optuna sqlite database",
                             url_or_path)
    try:
        return optuna.storages.RDBStorage(url_or_path, skip_compatibility_check=False)
    except Exception as exc:  # any driver or schema failure is the storage's, not a bug of ours
        raise InputError(_SOURCE, field, f"not an Optuna storage ({type(exc).__name__})", "an RDB URL or a journal file path",
                         url_or_path.split("@")[-1]) from None


def load_study(config: Any) -> Any:
    """The study ``config.optuna_study`` in its storage; an :class:`InputError` naming the studies there when absent.

    A multi-objective study, or one whose direction differs from
    ``config.direction``, is refused: its values would be read the wrong way.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_text, field = storage_setting(config.optuna_storage)
    storage = _storage(storage_text, field)
    names = optuna.get_all_study_names(storage)
    if config.optuna_study not in names:
        raise InputError(_SOURCE, "optuna_study", "no such study in the storage", "one of: " + (", ".join(names) or "(none)"),
                         config.optuna_study)
    study = optuna.load_study(study_name=config.optuna_study, storage=storage)
    if len(study.directions) != 1:
        raise InputError(_SOURCE, "optuna_study", "multi-objective study", "a study with one objective",
                         f"{len(study.directions)} objectives")
    direction = study.direction.name.lower()
    if direction != config.direction:
        raise InputError(_SOURCE, "direction", f"the study {config.optuna_study!r} {direction}s", direction, config.direction)
    return study


def study_history(study: Any, space: Space) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """History rows of the study's trials, and the trials that cannot be rows.

    Returns
    -------
    frame : DataFrame
        One row per complete, running or waiting trial whose parameter names
        are exactly the space's: the parameters, ``objective`` (blank when not
        complete) and ``trial`` (the Optuna trial number).
    rejected : list of dict
        ``{"row": None, "optuna_trial": number, "reason": ...}`` for trials
        with missing or extra parameters. Failed, pruned trials are skipped.
    """
    from optuna.trial import TrialState

    names = set(space.names)
    rows, rejected = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)):
        # A waiting (enqueued) trial keeps its parameters as fixed_params until a worker starts it.
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        extra, missing = sorted(set(params) - names), sorted(names - set(params))
        if extra or missing:
            why = "; ".join(part for part in (extra and f"parameters not in the space: {', '.join(extra)}",
                                              missing and f"missing parameters: {', '.join(missing)}") if part)
            rejected.append({"row": None, "optuna_trial": trial.number, "reason": why})
            continue
        value = trial.value if trial.state == TrialState.COMPLETE else None
        rows.append({**{n: params[n] for n in space.names}, OBJECTIVE_COLUMN: value, "trial": trial.number})
    frame = pd.DataFrame(rows, columns=[*space.names, OBJECTIVE_COLUMN, "trial"])
    return frame, rejected


def merge_rejected(parsed: History, frame: pd.DataFrame, rejected: list[dict[str, Any]]) -> None:
    """Name the Optuna trial of each row ``parse_history`` rejected, and add the trials rejected before it."""
    for entry in parsed.rejected:
        entry["optuna_trial"] = int(frame["trial"].iloc[entry["row"]])
    parsed.rejected.extend(rejected)
    parsed.rejected.sort(key=lambda e: e["optuna_trial"])


def enqueue_suggestions(study: Any, suggestions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Add each suggestion to ``study`` as a waiting trial (skipped when an identical one is already queued or done).

    Returns the suggestions with ``enqueued`` (bool) for each.
    """
    before = len(study.get_trials(deepcopy=False))
    out = []
    for params in suggestions:
        study.enqueue_trial(dict(params), user_attrs={"proposed_by": "qflow"}, skip_if_exists=True)
        now = len(study.get_trials(deepcopy=False))
        out.append({"params": dict(params), "enqueued": now > before})
        before = now
    return out


def study_as_history(config: Any, space: Space, history: pd.DataFrame | None,
                     history_source: str) -> tuple[Any, pd.DataFrame | None, list[dict[str, Any]]]:
    """``(study, history frame, trials rejected before parsing)``; the given history as it is when no study is set."""
    if not config.optuna_study:
        return None, history, []
    if history is not None:
        raise InputError(history_source, "(file)", "two histories given", "a history file or optuna_study, not both",
                         f"optuna_study={config.optuna_study}")
    study = load_study(config)
    frame, rejected = study_history(study, space)
    return study, frame, rejected


def where(entry: Mapping[str, Any]) -> str:
    """A rejected history entry's place: ``row N`` of a file, or ``Optuna trial N``."""
    return f"Optuna trial {entry['optuna_trial']}" if entry.get("optuna_trial") is not None else f"row {entry['row']}"
