"""HPO inputs and config: parse once, validate once, then trust.

:func:`parse_space` turns a search-space mapping into a :class:`Space`;
:func:`parse_history` splits a trials table into usable observations,
pending trials and rejected rows. Every check that can fail lives here and
raises :class:`~qflow.core.errors.InputError` naming the file and field; the
optimisers in ``_classical`` and ``_quantum`` take a :class:`Space` and unit
arrays and assume they are valid.

Every parameter maps to the unit interval ``u in [0, 1]`` the same way the
VQC maps it to a qubit angle ``theta = pi * u``:

* float: ``u = (x - a) / (b - a)`` (``log(x)`` and ``log(a), log(b)`` when ``log``)
* int: the same on the integers ``a..b`` (decoded by rounding)
* categorical with ``k`` choices: ``u = index / (k - 1)`` (0 when ``k == 1``)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.quantum import HARD_MAX_QUBITS

__all__ = ["HpoConfig", "Param", "Space", "History", "parse_space", "parse_history", "OBJECTIVE_COLUMN"]

KINDS = ("float", "int", "categorical")
#: History column holding the measured objective (blank = a pending trial).
OBJECTIVE_COLUMN = "objective"
#: Largest |bound| of an int parameter: every integer up to it is exact in float64 (the unit-interval maps).
MAX_INT_BOUND = 2**53
#: Largest |objective| a history row may hold: squared differences of such values stay finite in the GP.
MAX_ABS_OBJECTIVE = 1e100
#: History columns that are carried but not used.
META_COLUMNS = ("trial", "method")
#: ``dask_scheduler`` values: empty, ``local``, or a scheduler address (checked again by :mod:`qflow.core.cluster`).
SCHEDULER_PATTERN = r"^(|local|(tcp|tls)://[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$"


class HpoConfig(QflowConfig):
    """Toggles and settings of the optimiser (page widgets, CLI flags, API form)."""

    objective: Literal["none", "branin", "hartmann6", "hartmann6_noisy", "train"] = Field(
        "none",
        description="none: suggest mode (ask/tell on the history); branin/hartmann6/hartmann6_noisy: built-in "
        "benchmark on its own domain; train: cross-validated error of a scikit-learn model on the dataset.",
    )
    suggest: int = Field(4, ge=1, le=64, description="How many next configurations to recommend (one parallel batch).")
    gp_surrogate: bool = Field(True, description="Gaussian-process surrogate (Matern/RBF, fitted length scales) with expected improvement.")
    vqc_optimizer: bool = Field(False, description="Variational quantum circuit surrogate: angle-encoded parameters, parameter-shift training.")
    hybrid: bool = Field(False, description="VQC for early exploration, then the GP refines (switch at hybrid_switch).")
    warm_start: bool = Field(True, description="Use the history's completed trials as observations before the first proposal.")
    baselines: bool = Field(True, description="Also run random search and Optuna TPE on the same objective and budget.")
    n_trials: int = Field(30, ge=1, le=500, description="Objective evaluations of the optimiser (history rows not counted).")
    batch_size: int = Field(1, ge=1, le=32, description="Suggestions per round, evaluated in parallel processes.")
    n_initial: int = Field(5, ge=1, le=100, description="Random initial design size (history rows count towards it).")
    direction: Literal["minimize", "maximize"] = Field("minimize", description="Whether lower or higher objective values are better.")
    gp_kernel: Literal["matern52", "rbf"] = Field("matern52", description="GP kernel; its per-dimension length scales are fitted.")
    batch_strategy: Literal["kriging_believer", "constant_liar"] = Field(
        "kriging_believer", description="How pending trials enter the GP: its posterior mean, or the best value seen (a lie)."
    )
    ei_candidates: int = Field(1024, ge=16, le=20_000, description="Random candidates scored per proposal (plus local ones).")
    hybrid_switch: int = Field(12, ge=0, le=500, description="Hybrid: trials proposed by the VQC before the GP takes over.")
    vqc_warm_start: bool = Field(
        False, description="Seed the VQC's circuit weights from the angle encodings of the best history trials "
        "(kept only when that first fit beats a cold start's; both are reported).")
    vqc_layers: int = Field(2, ge=1, le=6, description="VQC depth: re-uploading encoding + trainable RY/RZ + CNOT ring per layer.")
    vqc_steps: int = Field(15, ge=1, le=500, description="Adam steps (parameter-shift gradients) per VQC refit.")
    vqc_shots: int = Field(0, ge=0, le=1_000_000, description="Shots per expectation (0 = exact expectation values).")
    max_qubits: int = Field(12, ge=1, le=HARD_MAX_QUBITS, description="Largest VQC (one qubit per parameter).")
    quantum_time_budget_s: float = Field(120.0, gt=0, le=3600, description="Wall time for all VQC work of one plan, s.")
    noise_std: float = Field(0.1, ge=0, le=10, description="Standard deviation of the noise of hartmann6_noisy.")
    model: Literal["random_forest", "hist_gradient_boosting"] = Field(
        "random_forest", description="Model of the train objective; the space's parameter names are its arguments."
    )
    builtin_dataset: Literal["breast_cancer", "wine", "iris", "diabetes"] = Field(
        "breast_cancer", description="scikit-learn dataset of the train objective when no dataset file is given."
    )
    cv_folds: int = Field(3, ge=2, le=10, description="Cross-validation folds of the train objective.")
    n_jobs: int = Field(2, ge=1, le=32, description="Worker processes evaluating one batch (joblib).")
    dask_scheduler: str = Field(
        "", max_length=200, pattern=SCHEDULER_PATTERN,
        description="Dask cluster the trials run on: tcp://HOST:PORT, or local (a LocalCluster of n_jobs worker processes); "
        "empty: QFLOW_DASK_SCHEDULER when set, else joblib processes on this machine.")
    optuna_storage: str = Field(
        "", max_length=1000, description="Optuna storage holding optuna_study: an RDB URL (sqlite:///path.db) or a journal "
        "file path; empty: QFLOW_OPTUNA_STORAGE.")
    optuna_study: str = Field(
        "", max_length=200, description="Optuna study read as the history (completed trials; running and waiting ones "
        "count as pending); empty: none.")
    enqueue_suggestions: bool = Field(False, description="Enqueue the plan's suggestions into optuna_study as waiting trials.")


@dataclass(frozen=True)
class Param:
    """One search dimension.

    Attributes
    ----------
    name : str
    kind : {"float", "int", "categorical"}
    low, high : float
        Bounds ``a < b`` for float/int; ``0, k - 1`` for categoricals.
    log : bool
        Float/int searched on a log scale (bounds > 0).
    choices : tuple
        Categorical values (empty otherwise).
    """

    name: str
    kind: str
    low: float
    high: float
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def n_choices(self) -> int:
        return len(self.choices)

    def to_unit(self, value: Any) -> float:
        """``u in [0, 1]`` of a valid value (see the module docstring)."""
        if self.kind == "categorical":
            index = self.choice_index(value)
            return 0.0 if self.n_choices == 1 else index / (self.n_choices - 1)
        a, b, x = float(self.low), float(self.high), float(value)
        if self.log:
            a, b, x = math.log(a), math.log(b), math.log(x)
        return (x - a) / (b - a)

    def from_unit(self, u: float) -> Any:
        """The value at ``u`` (clipped to [0, 1]); ints rounded, categoricals the nearest index."""
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == "categorical":
            return self.choices[round(u * (self.n_choices - 1))] if self.n_choices > 1 else self.choices[0]
        a, b = float(self.low), float(self.high)
        if self.log:
            x = math.exp(math.log(a) + u * (math.log(b) - math.log(a)))
        else:
            x = a + u * (b - a)
        if self.kind == "int":
            return int(min(max(round(x), self.low), self.high))
        return float(min(max(x, a), b))

    def typed(self, value: Any) -> Any:
        """A valid value in its kind's type (CSV text ``"3"`` -> ``3``, a choice as declared)."""
        if self.kind == "categorical":
            return self.choices[self.choice_index(value)]
        return int(round(float(value))) if self.kind == "int" else float(value)

    def choice_index(self, value: Any) -> int:
        """Index of ``value`` among the choices (text and numbers compared loosely, as a CSV gives them)."""
        for i, choice in enumerate(self.choices):
            if _same_choice(choice, value):
                return i
        raise KeyError(value)

    def check(self, value: Any) -> str | None:
        """Why ``value`` is outside this dimension, or ``None`` when it is inside."""
        if self.kind == "categorical":
            try:
                self.choice_index(value)
            except KeyError:
                return f"{self.name}={value!r} is not one of {list(self.choices)}"
            return None
        try:
            x = float(value)
        except (TypeError, ValueError, OverflowError):
            return f"{self.name}={value!r} is not a number"
        if not math.isfinite(x) or x < self.low or x > self.high:
            return f"{self.name}={value!r} is outside [{self.low:g}, {self.high:g}]"
        if self.kind == "int" and x != round(x):
            return f"{self.name}={value!r} is not an integer"
        return None

    def describe(self) -> dict[str, Any]:
        """Plain JSON form (for the plan)."""
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log}


def _same_choice(choice: Any, value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    if choice == value and type(choice) is not bool and type(value) is not bool:
        return True
    if isinstance(choice, bool) or isinstance(value, bool):
        return str(choice).lower() == str(value).strip().lower()
    try:
        return float(choice) == float(value)
    except (TypeError, ValueError, OverflowError):
        return str(choice) == str(value).strip()


@dataclass(frozen=True)
class Space:
    """A validated search space: parameters in file order.

    Unit arrays ``U`` have shape ``(n, d)`` with ``d = len(params)``.
    """

    params: tuple[Param, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def dim(self) -> int:
        return len(self.params)

    def to_unit(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Configurations -> unit array of shape (n, d)."""
        return np.array([[p.to_unit(c[p.name]) for p in self.params] for c in configs], dtype=float).reshape(len(configs), self.dim)

    def from_unit(self, U: np.ndarray) -> list[dict[str, Any]]:
        """Unit array of shape (n, d) -> configurations (typed values)."""
        return [{p.name: p.from_unit(u) for p, u in zip(self.params, row, strict=True)} for row in np.atleast_2d(U)]

    def snap(self, U: np.ndarray) -> np.ndarray:
        """Move each row of ``U`` (n, d) to the nearest representable point (ints, categoricals on their grid)."""
        U = np.clip(np.atleast_2d(np.asarray(U, dtype=float)), 0.0, 1.0).copy()
        for j, p in enumerate(self.params):
            if p.kind == "categorical":
                k = p.n_choices
                U[:, j] = 0.0 if k == 1 else np.round(U[:, j] * (k - 1)) / (k - 1)
            elif p.kind == "int":
                U[:, j] = [p.to_unit(p.from_unit(u)) for u in U[:, j]]
        return U

    def sample_unit(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniform random points, already snapped: shape (n, d).

        Ints and categoricals are drawn uniformly over their values (not by
        rounding a uniform ``u``, which would halve the end values' odds).
        """
        U = rng.random((n, self.dim))
        for j, p in enumerate(self.params):
            if p.kind == "categorical" and p.n_choices > 1:
                U[:, j] = rng.integers(0, p.n_choices, n) / (p.n_choices - 1)
            elif p.kind == "int" and not p.log:
                U[:, j] = (rng.integers(int(p.low), int(p.high) + 1, n) - p.low) / (p.high - p.low)
        return self.snap(U)

    def features(self, U: np.ndarray) -> np.ndarray:
        """GP inputs: float/int dims as they are, each categorical one-hot.

        Returns an array of shape (n, n_numeric + sum of choice counts), so a
        categorical's choices are equidistant (no false order between them).
        """
        U = np.atleast_2d(U)
        cols = []
        for j, p in enumerate(self.params):
            if p.kind == "categorical":
                k = p.n_choices
                index = np.zeros(len(U), dtype=int) if k == 1 else np.round(U[:, j] * (k - 1)).astype(int)
                cols.append(np.eye(k)[index])
            else:
                cols.append(U[:, j : j + 1])
        return np.hstack(cols)

    def keys(self, U: np.ndarray) -> list[tuple[float, ...]]:
        """Hashable identity of each snapped row (for "never suggest the same point twice")."""
        return [tuple(np.round(row, 9).tolist()) for row in np.atleast_2d(U)]

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.params]


def _bound(value: Any, kind: str, source: str, where: str) -> float:
    """A finite bound; an int kind's an integer of at most :data:`MAX_INT_BOUND` in size (exact in float64)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(source, where, "not a finite number", "a finite number", value)
    if isinstance(value, int) and value.bit_length() > 64:  # described by its size: repr() of a huge int is itself an error
        raise InputError(source, where, "number too large", f"at most 2**53 = {MAX_INT_BOUND} in size",
                         f"an integer of {value.bit_length()} bits")
    x = float(value)
    if not math.isfinite(x):
        raise InputError(source, where, "not a finite number", "a finite number", value)
    if kind == "int":
        if x != round(x):
            raise InputError(source, where, "not an integer", "an integer bound for kind int", value)
        if abs(x) > MAX_INT_BOUND:
            raise InputError(source, where, "integer bound too large", f"an integer of at most 2**53 = {MAX_INT_BOUND} in size", value)
    return x


def _param(source: str, name: Any, spec: Any) -> Param:
    where = f"parameters.{name}"
    if not isinstance(name, str) or not name.strip():
        raise InputError(source, "parameters", "parameter without a name", "a non-empty name per parameter", name)
    if name == OBJECTIVE_COLUMN or name in META_COLUMNS:
        raise InputError(source, where, "reserved name", f"a name other than {OBJECTIVE_COLUMN}, {', '.join(META_COLUMNS)}", name)
    if not isinstance(spec, Mapping):
        raise InputError(source, where, "wrong type", "a mapping with kind and bounds or choices", type(spec).__name__)
    kind = spec.get("kind", spec.get("type"))
    if kind not in KINDS:
        raise InputError(source, f"{where}.kind", "unknown kind", "one of float, int, categorical", kind)
    allowed = {"kind", "type", "low", "high", "bounds", "log", "choices", "description"}
    extra = sorted(set(map(str, spec)) - allowed)
    if extra:
        raise InputError(source, f"{where}.{extra[0]}", "unknown field", "kind, low, high (or bounds), log, choices, description")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise InputError(source, f"{where}.choices", "empty categorical", "a non-empty list of distinct values", choices)
        if any(isinstance(c, Mapping | list) or c is None for c in choices):
            raise InputError(source, f"{where}.choices", "wrong type", "text, numbers or booleans", choices)
        if len({str(c) for c in choices}) != len(choices):
            raise InputError(source, f"{where}.choices", "duplicate choice", "distinct values", choices)
        return Param(name, kind, 0.0, float(len(choices) - 1), False, tuple(choices))
    if "bounds" in spec:
        bounds = spec["bounds"]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise InputError(source, f"{where}.bounds", "wrong shape", "[low, high]", bounds)
        low, high = bounds
    else:
        if "low" not in spec or "high" not in spec:
            raise InputError(source, where, "missing bounds", "low and high (or bounds: [low, high])")
        low, high = spec["low"], spec["high"]
    low, high = (_bound(value, kind, source, f"{where}.{label}") for label, value in (("low", low), ("high", high)))
    if low >= high:
        raise InputError(source, f"{where}.bounds", "lower bound not below upper bound", "low < high", f"low={low}, high={high}")
    if not math.isfinite(high - low):
        raise InputError(source, f"{where}.bounds", "range too wide to search", "high - low a finite number",
                         f"low={low}, high={high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise InputError(source, f"{where}.log", "wrong type", "true or false", log)
    if log and low <= 0:
        raise InputError(source, f"{where}.low", "log scale needs positive bounds", "low > 0 when log is true", low)
    return Param(name, kind, float(low), float(high), log, ())


def parse_space(data: Any, source: str = "space") -> Space:
    """Validate a search-space mapping.

    Accepted shapes: ``{"parameters": {name: spec, ...}}``, ``{"parameters":
    [{"name": ..., **spec}, ...]}`` or ``{name: spec, ...}``; a spec is
    ``{kind: float|int, low, high, log?}`` (or ``bounds: [low, high]``) or
    ``{kind: categorical, choices: [...]}``.

    >>> space = parse_space({"parameters": {"lr": {"kind": "float", "low": 1e-4, "high": 1e-1, "log": True},
    ...                                     "act": {"kind": "categorical", "choices": ["relu", "tanh"]}}})
    >>> space.names, round(space.params[0].from_unit(0.5), 6)
    (['lr', 'act'], 0.003162)
    """
    if isinstance(data, Space):
        return data
    if not isinstance(data, Mapping):
        raise InputError(source, "(top level)", "wrong type", "a mapping with 'parameters'", type(data).__name__)
    body = data.get("parameters", data)
    if isinstance(body, list):
        items = []
        for i, spec in enumerate(body):
            if not isinstance(spec, Mapping) or "name" not in spec:
                raise InputError(source, f"parameters[{i}]", "parameter without a name", "a mapping with 'name'", spec)
            items.append((spec["name"], {k: v for k, v in spec.items() if k != "name"}))
    elif isinstance(body, Mapping):
        items = list(body.items())
    else:
        raise InputError(source, "parameters", "wrong type", "a mapping or list of parameters", type(body).__name__)
    if not items:
        raise InputError(source, "parameters", "no parameters", "at least one parameter")
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise InputError(source, "parameters", "duplicate parameter name", "distinct names", names)
    return Space(tuple(_param(source, name, spec) for name, spec in items))


@dataclass(frozen=True)
class History:
    """Earlier trials split by use.

    Attributes
    ----------
    configs : list of dict
        Completed trials inside the space.
    values : ndarray of shape (len(configs),)
        Their objective values as measured (not sign-flipped).
    pending : list of dict
        Trials inside the space without an objective yet (running elsewhere).
    rejected : list of dict
        ``{"row": i, "reason": ...}`` for rows outside the space (not used).
    """

    configs: list[dict[str, Any]] = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pending: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def parse_history(frame: pd.DataFrame | None, space: Space, source: str = "history") -> History:
    """Check the trials table against ``space``.

    Columns must be the space's parameter names plus ``objective``
    (``trial``, ``method`` are allowed and ignored). An unknown or missing
    column, or an objective that is not a number, is an :class:`InputError`;
    a row whose parameters fall outside the space is *rejected* (reported in
    the plan, never silently used). A blank objective marks a pending trial.
    """
    if frame is None:
        return History()
    columns = [str(c) for c in frame.columns]
    allowed = set(space.names) | {OBJECTIVE_COLUMN, *META_COLUMNS}
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise InputError(source, unknown[0], "unknown column",
                         f"the space's parameters ({', '.join(space.names)}), {OBJECTIVE_COLUMN}, or trial/method", unknown[0])
    for name in [*space.names, OBJECTIVE_COLUMN]:
        if name not in columns:
            raise InputError(source, name, "missing column", f"one column per parameter plus {OBJECTIVE_COLUMN}")
    raw = frame[OBJECTIVE_COLUMN]
    values = pd.to_numeric(raw, errors="coerce")
    blank = raw.isna() | raw.astype(str).str.strip().isin(["", "nan", "NaN"])
    bad = values.isna() & ~blank
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(source, f"{OBJECTIVE_COLUMN}[row {row}]", "not a number", "a number (blank for a pending trial)", raw.iloc[row])
    configs, measured, pending, rejected = [], [], [], []
    records = frame[space.names].to_dict("records")
    for i, (record, value) in enumerate(zip(records, values.to_numpy(dtype=float), strict=True)):
        reasons = [why for p in space.params if (why := p.check(record[p.name])) is not None]
        if not blank.iloc[i] and not math.isfinite(value):
            reasons.append(f"objective {value} is not finite")
        elif not blank.iloc[i] and abs(value) > MAX_ABS_OBJECTIVE:
            reasons.append(f"objective {value:g} is beyond +-{MAX_ABS_OBJECTIVE:g}")
        if reasons:
            rejected.append({"row": i, "reason": "; ".join(reasons)})
            continue
        config = {p.name: p.typed(record[p.name]) for p in space.params}
        if blank.iloc[i]:
            pending.append(config)
        else:
            configs.append(config)
            measured.append(value)
    return History(configs, np.asarray(measured, dtype=float), pending, rejected)
