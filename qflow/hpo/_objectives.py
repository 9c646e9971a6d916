"""Objectives: built-in benchmark functions and a cross-validated training score.

All objectives are minimised as written (the plan flips the sign for
``direction="maximize"``). Evaluations of one batch run in worker processes
through joblib; each evaluation's randomness is seeded by ``(seed, trial)``
so results do not depend on which worker ran it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.errors import InputError
from qflow.core.limits import max_workers
from qflow.hpo._schemas import Space, parse_space

__all__ = [
    "BENCHMARKS",
    "Evaluator",
    "Objective",
    "branin",
    "hartmann6",
    "evaluate",
    "make_objective",
    "benchmark_space",
]

#: Known global minima (for regret).
BRANIN_MIN = 0.397887357729739
HARTMANN6_MIN = -3.322368011391339

_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array([
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
])
_H6_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886],
    [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650],
    [4047, 8828, 8732, 5743, 1091, 381],
])


def branin(x1: float, x2: float) -> float:
    """Branin-Hoo on x1 in [-5, 10], x2 in [0, 15]; global minimum 0.397887 (three places).

    >>> round(branin(math.pi, 2.275), 6)
    0.397887
    """
    b, c, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def hartmann6(x: Sequence[float]) -> float:
    """Hartmann 6-D on [0, 1]^6; global minimum -3.32237.

    >>> round(hartmann6([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]), 4)
    -3.3224
    """
    x = np.asarray(x, dtype=float)
    inner = (_H6_A * (x[None, :] - _H6_P) ** 2).sum(axis=1)
    return float(-(_H6_ALPHA * np.exp(-inner)).sum())


BENCHMARKS: dict[str, dict[str, Any]] = {
    "branin": {"space": {"x1": {"kind": "float", "low": -5.0, "high": 10.0},
                         "x2": {"kind": "float", "low": 0.0, "high": 15.0}}, "minimum": BRANIN_MIN},
    "hartmann6": {"space": {f"x{i}": {"kind": "float", "low": 0.0, "high": 1.0} for i in range(1, 7)}, "minimum": HARTMANN6_MIN},
}
BENCHMARKS["hartmann6_noisy"] = BENCHMARKS["hartmann6"]


def benchmark_space(name: str) -> Space:
    """The benchmark's own domain as a :class:`Space`."""
    return parse_space({"parameters": BENCHMARKS[name]["space"]}, name)


@dataclass(frozen=True)
class Objective:
    """Everything a worker needs to evaluate one configuration (picklable).

    Attributes
    ----------
    name : str
        ``branin``, ``hartmann6``, ``hartmann6_noisy`` or ``train``.
    minimum : float or None
        Known global minimum (regret is measured against it).
    X, y : ndarray or None
        Training data of ``train`` (features (n, f), target (n,)).
    task : str
        ``classification`` or ``regression`` for ``train``.
    """

    name: str
    seed: int = 0
    noise_std: float = 0.0
    minimum: float | None = None
    model: str = "random_forest"
    cv_folds: int = 3
    task: str = "classification"
    X: np.ndarray | None = field(default=None, repr=False)
    y: np.ndarray | None = field(default=None, repr=False)
    dataset_label: str = ""


def _estimator(objective: Objective, params: Mapping[str, Any]):
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    classes = {
        ("random_forest", "classification"): RandomForestClassifier,
        ("random_forest", "regression"): RandomForestRegressor,
        ("hist_gradient_boosting", "classification"): HistGradientBoostingClassifier,
        ("hist_gradient_boosting", "regression"): HistGradientBoostingRegressor,
    }
    cls = classes[(objective.model, objective.task)]
    extra = {"n_jobs": 1} if objective.model == "random_forest" else {}
    return cls(random_state=objective.seed, **extra, **params)


def _train_error(objective: Objective, params: Mapping[str, Any]) -> float:
    """1 - mean cross-validated score (accuracy or R^2): lower is better."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    splitter = StratifiedKFold if objective.task == "classification" else KFold
    cv = splitter(n_splits=objective.cv_folds, shuffle=True, random_state=objective.seed)
    scores = cross_val_score(_estimator(objective, params), objective.X, objective.y, cv=cv)
    return float(1.0 - np.mean(scores))


def evaluate_one(objective: Objective, config: Mapping[str, Any], trial: int) -> float:
    """The objective at ``config`` (minimised); ``trial`` seeds the noise of the noisy variant."""
    if objective.name == "branin":
        return branin(float(config["x1"]), float(config["x2"]))
    if objective.name in ("hartmann6", "hartmann6_noisy"):
        value = hartmann6([config[f"x{i}"] for i in range(1, 7)])
        if objective.name == "hartmann6_noisy" and objective.noise_std > 0:
            value += float(np.random.default_rng([objective.seed, trial]).normal(0.0, objective.noise_std))
        return value
    return _train_error(objective, config)


#: The objective a worker process evaluates (set once per worker by the pool's initializer).
_WORKER_OBJECTIVE: Objective | None = None


def _set_worker_objective(objective: Objective) -> None:
    global _WORKER_OBJECTIVE
    _WORKER_OBJECTIVE = objective


def _evaluate_in_worker(config: Mapping[str, Any], trial: int) -> float:
    assert _WORKER_OBJECTIVE is not None, "pool started without its objective"
    return evaluate_one(_WORKER_OBJECTIVE, config, trial)


class Evaluator:
    """Evaluates batches of one objective, in this process or in worker processes this run owns.

    Only the ``train`` objective uses processes (the benchmarks are closed
    forms: starting a process costs a million of their evaluations). The
    worker count is ``n_jobs`` capped by :func:`qflow.core.limits.max_workers`
    (the cores, ``QFLOW_MAX_WORKERS``). The pool is loky's (joblib's process
    backend: safe to start from a server's threads), created at the first
    parallel batch, handed the objective once per worker, and shut down when
    the ``with`` block ends: waiting for the workers after a normal end,
    killing them after an exception (a Cancel raised by the progress
    callback), so no process outlives its run.

    >>> with Evaluator(Objective("branin"), n_jobs=8) as ev:
    ...     ev.workers, [round(v, 6) for v in ev([{"x1": math.pi, "x2": 2.275}], [1])]
    (1, [0.397887])
    """

    def __init__(self, objective: Objective, n_jobs: int = 1) -> None:
        self.objective = objective
        self.requested = n_jobs
        self.workers = max_workers(n_jobs) if objective.name == "train" else 1
        self._pool: Any = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        self.close(kill=exc_type is not None)

    def __call__(self, configs: Sequence[Mapping[str, Any]], trials: Sequence[int]) -> list[float]:
        """Objective values (minimised) of ``configs``, in order; ``trials`` seed the noisy objective."""
        if min(self.workers, len(configs)) <= 1:
            return [evaluate_one(self.objective, c, t) for c, t in zip(configs, trials, strict=True)]
        if self._pool is None:
            from joblib.externals.loky import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_set_worker_objective,
                                             initargs=(self.objective,))
        return list(self._pool.map(_evaluate_in_worker, configs, trials))

    def close(self, kill: bool = False) -> None:
        """Shut the worker processes down and wait for them to exit (``kill``: terminate running evaluations first)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, kill_workers=kill)


def evaluate(objective: Objective, configs: Sequence[Mapping[str, Any]], trials: Sequence[int], n_jobs: int = 1) -> list[float]:
    """Evaluate one batch with a pool of its own (see :class:`Evaluator`); the pool is gone when this returns."""
    with Evaluator(objective, n_jobs) as evaluator:
        return evaluator(configs, trials)


def load_builtin_dataset(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """A bundled scikit-learn dataset: features (n, f), target (n,), task."""
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "iris": datasets.load_iris, "diabetes": datasets.load_diabetes}[name]
    bunch = loader()
    return bunch.data.astype(float), bunch.target, "regression" if name == "diabetes" else "classification"


def dataset_arrays(frame: pd.DataFrame, source: str = "dataset") -> tuple[np.ndarray, np.ndarray, str]:
    """Features and target of an uploaded table: the ``target`` column, else the last column.

    Text feature columns are one-hot encoded; the task is classification when
    the target is text or has at most 20 distinct integer values.
    """
    target = "target" if "target" in frame.columns else frame.columns[-1]
    if frame.shape[1] < 2:
        raise InputError(source, "(columns)", "too few columns", "at least one feature column and a target column", list(frame.columns))
    y_raw = frame[target]
    if y_raw.isna().any():
        row = int(np.flatnonzero(y_raw.isna().to_numpy())[0])
        raise InputError(source, f"{target}[row {row}]", "missing target", "a target value on every row")
    features = pd.get_dummies(frame.drop(columns=[target]), dtype=float)
    try:
        X = features.to_numpy(dtype=float)
    except ValueError as exc:
        raise InputError(source, "(features)", "not numeric", "numbers or text categories", str(exc)) from None
    numeric = pd.to_numeric(y_raw, errors="coerce")
    if numeric.isna().any() or (numeric.nunique() <= 20 and (numeric == numeric.round()).all()):
        y, task = pd.factorize(y_raw.astype(str))[0], "classification"
        counts = np.bincount(y)
        if len(counts) < 2:
            raise InputError(source, target, "a single class", "at least two target classes", y_raw.iloc[0])
    else:
        y, task = numeric.to_numpy(dtype=float), "regression"
    if len(y) < 10:
        raise InputError(source, "(rows)", "too few rows", "at least 10 rows for cross-validation", len(y))
    return X, np.asarray(y), task


def make_objective(name: str, config: Any, space: Space, dataset: pd.DataFrame | None = None,
                   dataset_source: str = "dataset", space_source: str = "space") -> Objective:
    """The :class:`Objective` of ``config.objective`` (``train`` checks the space's names against the model)."""
    if name in BENCHMARKS:
        return Objective(name, seed=config.seed, noise_std=config.noise_std if name == "hartmann6_noisy" else 0.0,
                         minimum=BENCHMARKS[name]["minimum"])
    if dataset is not None:
        X, y, task = dataset_arrays(dataset, dataset_source)
        label = dataset_source
    else:
        X, y, task = load_builtin_dataset(config.builtin_dataset)
        label = f"sklearn:{config.builtin_dataset}"
    objective = Objective("train", seed=config.seed, model=config.model, cv_folds=config.cv_folds, task=task, X=X, y=y,
                          dataset_label=label)
    if task == "classification" and np.bincount(y).min() < config.cv_folds:
        raise InputError(dataset_source, "(rows)", "a class has fewer rows than folds", f"at least cv_folds={config.cv_folds} rows per class")
    known = set(_estimator(objective, {}).get_params())
    for p in space.params:
        if p.name not in known or p.name == "random_state":
            raise InputError(space_source, f"parameters.{p.name}", f"not an argument of the {config.model} model",
                             "one of " + ", ".join(sorted(known - {"random_state", "n_jobs", "verbose"})), p.name)
    return objective
