"""``plan_hpo``: the hpo module's one entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from qflow.core.errors import InputError, QuantumUnavailableError
from qflow.core.io import digest_frame, digest_mapping, load_table, parse_mapping, read_input
from qflow.core.limits import check_limit
from qflow.core.plan import InputDigest, Plan, QuantumReport, SolverReport
from qflow.core.skeleton import PlanRun, input_sources, quantum_budget, quantum_step
from qflow.hpo._classical import gp_slices, propose_gp, propose_random
from qflow.hpo._distributed import DaskEvaluator, optimize_on_cluster, trial_evaluator
from qflow.hpo._objectives import BENCHMARKS, Evaluator, Objective, benchmark_space, evaluate, evaluate_one, make_objective
from qflow.hpo._optuna import enqueue_suggestions, merge_rejected, redact_storage, study_as_history, where
from qflow.hpo._quantum import VQCSurrogate, param_shape
from qflow.hpo._schemas import History, HpoConfig, Space, parse_history, parse_space

__all__ = ["plan_hpo", "load_hpo_inputs", "random_search", "tpe_search"]

Progress = Callable[[float, str], None]
T = TypeVar("T")


def load_hpo_inputs(
    space: Any = None, history: Any = None, dataset: Any = None, *,
    space_name: str | None = None, history_name: str | None = None, dataset_name: str | None = None,
) -> tuple[dict[str, Any] | None, pd.DataFrame | None, pd.DataFrame | None, list[InputDigest]]:
    """Read the optional space (JSON/YAML), history and dataset (CSV), with validation of their format.

    Returns ``(space_mapping, history_frame, dataset_frame, digests)``; each
    is ``None`` when not given (a built-in objective brings its own space).
    """
    mapping: dict[str, Any] | None = None
    digests: list[InputDigest] = []
    if space is not None:
        raw_space = read_input(space, space_name)
        mapping = parse_mapping(raw_space)
        digests.append(raw_space.digest("space"))
    frames: list[pd.DataFrame | None] = []
    for name, source, label in (("history", history, history_name), ("dataset", dataset, dataset_name)):
        if source is None:
            frames.append(None)
            continue
        frame, raw = load_table(source, name=label)
        frames.append(frame)
        digests.append(raw.digest(name, rows=len(frame), shape=list(frame.shape)))
    return mapping, frames[0], frames[1], digests


def _requested(config: HpoConfig) -> str:
    if config.hybrid:
        return "hybrid"
    if config.vqc_optimizer:
        return "vqc"
    return "gp-ei" if config.gp_surrogate else "random"


def _given_or_builtin_space(space: Mapping[str, Any] | Space | None, config: HpoConfig, source: str) -> Space:
    """The space the user gave, or the built-in objective's own domain when none was given."""
    if space is not None:
        return parse_space(space, source)
    if config.objective in BENCHMARKS:
        return benchmark_space(config.objective)
    raise InputError(source, "(file)", "no search space given",
                     "a space file (only the built-in objectives " + ", ".join(BENCHMARKS) + " bring their own domain)",
                     f"objective={config.objective}")


def _working_space(config: HpoConfig, space: Space, diagnostics: list[str]) -> tuple[Space, bool]:
    """The space the optimiser searches, and whether the history (parsed against ``space``) applies to it."""
    if config.objective not in BENCHMARKS:
        return space, True
    own = benchmark_space(config.objective)
    same = space.names == own.names and all(
        p.kind == "float" and q.low <= p.low and p.high <= q.high for p, q in zip(space.params, own.params, strict=True))
    if same:
        return space, True
    diagnostics.append(f"objective {config.objective} searches its own domain "
                       f"({', '.join(f'{p.name} in [{p.low:g}, {p.high:g}]' for p in own.params)}); "
                       "the space file was validated but not used, and the history does not apply")
    return own, False


class _Run:
    """Mutable state of one optimisation: observations, trials, the VQC, fallbacks."""

    def __init__(self, config: HpoConfig, space: Space, solver: SolverReport, diagnostics: list[str]) -> None:
        self.config, self.space, self.solver, self.diagnostics = config, space, solver, diagnostics
        self.sign = 1.0 if config.direction == "minimize" else -1.0
        self.rng = np.random.default_rng(config.seed)
        self.U = np.zeros((0, space.dim))
        self.y = np.zeros(0)  # losses to minimise: sign * value
        self.trials: list[dict[str, Any]] = []
        self.vqc: VQCSurrogate | None = None
        self.path = solver.requested
        self.vqc_proposed = 0
        self.switch_trial: int | None = None
        if self.path in ("vqc", "hybrid"):
            self._start_vqc()

    def _start_vqc(self) -> None:
        config = self.config
        self.vqc = quantum_step(self.solver, lambda device, budget: VQCSurrogate(
            self.space, config.vqc_layers, config.vqc_steps, config.vqc_shots, config.seed, device, budget),
            quantum_budget(config), fallback_to="gp-ei")
        if self.vqc is None:
            self.path = "gp-ei"

    def vqc_step(self, step: Callable[[VQCSurrogate], T]) -> T | None:
        """``step(vqc)`` through :func:`quantum_step`; ``None``, the fallback to GP-EI recorded and the VQC dropped, on a refusal."""
        vqc = self.vqc
        assert vqc is not None
        value = quantum_step(self.solver, lambda device, budget: step(vqc), vqc.budget, fallback_to="gp-ei", device=vqc.device)
        if value is None:
            self.path, self.vqc = "gp-ei", None
        return value

    def add(self, U: np.ndarray, values: list[float], method: str, batch: int | None, trial0: int | None) -> None:
        configs = self.space.from_unit(U)
        for i, (config, value) in enumerate(zip(configs, values, strict=True)):
            self.trials.append({"trial": None if trial0 is None else trial0 + i, "batch": batch, "method": method,
                                "config": config, "value": float(value)})
        self.U = np.vstack([self.U, U])
        self.y = np.concatenate([self.y, self.sign * np.asarray(values, dtype=float)])

    def method(self) -> str:
        """Which proposer the next batch comes from."""
        if len(self.y) < self.config.n_initial:
            return "initial"
        if self.path == "hybrid":
            return "vqc" if self.vqc_proposed < self.config.hybrid_switch else "gp-ei"
        return self.path

    def propose(self, n: int, pending: np.ndarray) -> tuple[np.ndarray, str]:
        """``n`` distinct new points (n, d) and the method that proposed them (after any fallback)."""
        method = self.method()
        if method == "vqc" and self.vqc is not None:
            U = self.vqc_step(lambda vqc: vqc.propose(self.U, self.y, pending, n, self.rng, self.config.ei_candidates))
            if U is not None:
                self.vqc_proposed += len(U)
                return U, "vqc"
            method = "gp-ei"
        if method == "gp-ei":
            if self.config.hybrid and self.switch_trial is None:
                self.switch_trial = sum(1 for t in self.trials if t["trial"] is not None) + 1
            return propose_gp(self.space, self.U, self.y, pending, n, self.rng, kernel=self.config.gp_kernel,
                              strategy=self.config.batch_strategy, n_candidates=self.config.ei_candidates,
                              seed=self.config.seed), "gp-ei"
        return propose_random(self.space, self.U, pending, n, self.rng), method


def plan_hpo(
    space: Mapping[str, Any] | Space | None = None,
    history: pd.DataFrame | None = None,
    config: HpoConfig | Mapping[str, Any] | None = None,
    *,
    dataset: pd.DataFrame | None = None,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Recommend hyperparameters: suggest from the history, or optimise an objective.

    Parameters
    ----------
    space : mapping, optional
        Search space (see :func:`qflow.hpo.parse_space`); ``None`` with a
        built-in objective (branin, hartmann6, hartmann6_noisy) searches that
        objective's own domain, and the history is read against it.
    history : DataFrame, optional
        Earlier trials: one column per parameter plus ``objective`` (blank =
        pending). Used as observations when ``warm_start``.
    config : HpoConfig or mapping, optional
    dataset : DataFrame, optional
        Training data of the ``train`` objective (``target`` column, else the
        last); the config's ``builtin_dataset`` when not given.
    digests : list of InputDigest, optional
        Digests of the files the inputs came from (front ends pass them).
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    Plan
        ``result.suggestions`` (the next ``suggest`` configurations),
        ``result.best``, ``result.trials`` (each with the method that proposed
        it); ``metrics.best_value``; baselines random search and Optuna TPE.

    Examples
    --------
    >>> plan = plan_hpo({"x1": {"kind": "float", "low": -5, "high": 10},
    ...                  "x2": {"kind": "float", "low": 0, "high": 15}},
    ...                 config={"objective": "branin", "n_trials": 8, "baselines": False, "suggest": 2})
    >>> plan.metrics["n_evaluations"], len(plan.result["suggestions"])
    (8, 2)
    """
    plan_run = PlanRun.start("hpo", config, HpoConfig, requested=_requested, progress=progress)
    config = plan_run.config
    names = input_sources(digests)
    with plan_run.stage("validate"):
        given = _validate(space, history, dataset, config, names, plan_run.diagnostics)
    plan_run.digests = _input_digests(space, history, dataset, digests, given, config)
    history = given.history  # an Optuna study's trials, when one is the history
    _note_unused_inputs(given.parsed, dataset, config, plan_run)
    run = _Run(config, given.work_space, plan_run.solver, plan_run.diagnostics)
    pending, usable = _use_history(run, given)
    warm = _vqc_warm_start(plan_run, run)
    n_evaluated, cluster = _evaluate(plan_run, run, given.objective, names.get("dataset", "dataset"))
    with plan_run.stage("suggest", 0.9, "next suggestions"):
        suggestions_U, suggest_method = run.propose(config.suggest, pending)
    if plan_run.solver.ran == "hybrid" and given.objective is None:
        plan_run.note(f"suggest mode: the hybrid uses the {suggest_method} proposer at {len(run.y)} observations "
                      f"(VQC until hybrid_switch={config.hybrid_switch} VQC trials)")
    slices: dict[str, Any] = {}
    if len(run.y) >= 2:
        with plan_run.stage("gp_posterior"):
            slices = gp_slices(run.space, run.U, run.y, run.U[int(np.argmin(run.y))], config.gp_kernel, config.seed, run.sign)
    quantum = _quantum_report(run, plan_run.diagnostics)
    if quantum is not None:
        plan_run.solver.quantum = quantum
    _record_path_used(run, suggest_method)
    plan_run.diagnostics.extend(_settings_without_effect(config, history is not None, dataset is not None))
    result = _result(run, config, given.work_space, given.objective, given.parsed, suggestions_U, suggest_method, slices, usable)
    if warm is not None:
        result["vqc_warm_start"] = warm
    result["learned_components"] = _learned_components(run, plan_run.baselines, plan_run.diagnostics)
    _record_cluster_and_study(result, cluster, given, config)
    metrics = _metrics(run, given.objective, given.parsed, n_evaluated, result)
    plan = plan_run.finish(result, metrics)
    plan.config["optuna_storage"] = redact_storage(config.optuna_storage)  # a database password never reaches a plan
    return plan


def _vqc_warm_start(plan_run: PlanRun, run: _Run) -> dict[str, Any] | None:
    """Seed the VQC from the best historical trials when asked and possible (``result.vqc_warm_start``), else ``None``."""
    if not (run.config.vqc_warm_start and run.vqc is not None and len(run.y) >= 2):
        return None
    with plan_run.stage("vqc_warm_start"):
        return _warm_start(run)


def _record_cluster_and_study(result: dict[str, Any], cluster: dict[str, Any] | None, given: _Given,
                              config: HpoConfig) -> None:
    """Where the trials ran on Dask (``result.distributed``) and the Optuna study read and written (``result.optuna``)."""
    if cluster is not None:
        result["distributed"] = cluster
    if given.study is not None:
        enqueued = enqueue_suggestions(given.study, result["suggestions"]) if config.enqueue_suggestions else []
        result["optuna"] = {"study": config.optuna_study, "history_rows": len(given.history), "enqueued": enqueued}


@dataclass
class _Given:
    """The validated inputs: the space as given, its history, the space searched and the objective (``None``: suggest mode).

    ``history`` is the history frame the plan read: the one given, or an Optuna
    study's trials (``study``) when the config names one.
    """

    user_space: Space
    parsed: History
    work_space: Space
    history_applies: bool
    objective: Objective | None
    history: pd.DataFrame | None = None
    study: Any = None


def _validate(space: Mapping[str, Any] | Space | None, history: pd.DataFrame | None, dataset: pd.DataFrame | None,
              config: HpoConfig, names: dict[str, str], diagnostics: list[str]) -> _Given:
    """Parse the space and history, pick the space searched and build the objective (``InputError`` on bad input)."""
    user_space = _given_or_builtin_space(space, config, names.get("space", "space"))
    study, history, study_rejected = study_as_history(config, user_space, history, names.get("history", "history"))
    parsed = parse_history(history, user_space, names.get("history", "history"))
    if study is not None:
        merge_rejected(parsed, history, study_rejected)
    work_space, history_applies = _working_space(config, user_space, diagnostics)
    objective = None
    if config.objective != "none":
        objective = make_objective(config.objective, config, work_space, dataset, names.get("dataset", "dataset"),
                                   names.get("space", "space"))
    return _Given(user_space, parsed, work_space, history_applies, objective, history, study)


def _input_digests(space: Mapping[str, Any] | Space | None, history: pd.DataFrame | None, dataset: pd.DataFrame | None,
                   digests: list[InputDigest] | None, given: _Given, config: HpoConfig) -> list[InputDigest]:
    """The files' digests (or the parsed inputs' when none were passed), led by the built-in domain when no space was
    given; an Optuna study's trials, as read, stand for the history."""
    user_space = given.user_space
    if digests is None:
        digests = [] if space is None else [digest_mapping(space.describe() if isinstance(space, Space) else dict(space), "space")]
        digests += [digest_frame(f, n) for f, n in ((history, "history"), (dataset, "dataset")) if f is not None]
    if space is None:  # the domain searched is part of what the plan answers to
        digests = [digest_mapping(user_space.describe(), "space", source=f"built-in:{config.objective}"), *digests]
    if given.study is not None:
        digests = [*(d for d in digests if d.name != "history"),
                   digest_frame(given.history, "history", source=f"optuna:{config.optuna_study}")]
    return digests


def _note_unused_inputs(parsed: History, dataset: pd.DataFrame | None, config: HpoConfig, plan_run: PlanRun) -> None:
    """Say which history rows and which dataset the plan could not use."""
    if parsed.rejected:
        plan_run.note(f"{len(parsed.rejected)} history rows outside the space were not used "
                      f"(first: {where(parsed.rejected[0])}: {parsed.rejected[0]['reason']})")
    if dataset is not None and config.objective != "train":
        plan_run.note("a dataset was given but the objective is not train: it was not used")


def _use_history(run: _Run, given: _Given) -> tuple[np.ndarray, bool]:
    """Add the history's finished trials as observations (``warm_start``); returns its pending points (n, d) and whether it was used."""
    config, parsed, space = run.config, given.parsed, given.work_space
    usable = given.history_applies and config.warm_start
    if given.history_applies and not config.warm_start and (parsed.configs or parsed.pending):
        run.diagnostics.append("warm_start is off: the history's trials were not used")
    if usable and parsed.configs:
        run.add(space.to_unit(parsed.configs), list(parsed.values), "history", None, None)
    pending = space.to_unit(parsed.pending) if usable and parsed.pending else np.zeros((0, space.dim))
    return pending, usable


def _evaluate(plan_run: PlanRun, run: _Run, objective: Objective | None,
              dataset_source: str) -> tuple[int, dict[str, Any] | None]:
    """Optimise the objective (and run the baselines on the same workers).

    Returns how many trials ran (0 in suggest mode) and, on Dask, where they
    ran (``result.distributed``), else ``None``.
    """
    if objective is None:
        return 0, None
    config, cluster = run.config, None
    # Worker processes (or the Dask client and any LocalCluster) end with this block, or a Cancel.
    with trial_evaluator(objective, config, dataset_source) as evaluator:
        if isinstance(evaluator, Evaluator):
            _check_workers(evaluator, config, dataset_source, plan_run.diagnostics)
        with plan_run.stage("optimize"):
            n_evaluated = _optimize(run, evaluator, plan_run.progress)
        if config.baselines:
            with plan_run.stage("baselines", 0.8, "baselines: random search and Optuna TPE"):
                plan_run.baselines = {"random_search": random_search(run.space, objective, config, evaluator),
                                      "optuna_tpe": tpe_search(run.space, objective, config)}
        if isinstance(evaluator, DaskEvaluator):
            cluster = evaluator.record(run.trials, plan_run.diagnostics)
    return n_evaluated, cluster


def _check_workers(evaluator: Evaluator, config: HpoConfig, dataset_source: str, diagnostics: list[str]) -> None:
    """Say when ``n_jobs`` was capped; refuse a dataset whose copies in the workers would pass the decoded-bytes limit."""
    if evaluator.workers < config.n_jobs and evaluator.objective.name == "train":
        diagnostics.append(f"n_jobs={config.n_jobs} capped at {evaluator.workers} worker processes "
                           "(the machine's cores, or QFLOW_MAX_WORKERS)")
    X, y = evaluator.objective.X, evaluator.objective.y
    if evaluator.workers > 1 and X is not None and y is not None:
        check_limit(evaluator.workers * (X.nbytes + y.nbytes), "decoded_bytes", dataset_source,
                    f"(the dataset copied into {evaluator.workers} worker processes)")


def _optimize(run: _Run, evaluate_batch: Evaluator | DaskEvaluator, report: Progress) -> int:
    """Evaluate ``n_trials`` proposals in batches (parallel workers), or asynchronously on Dask; returns how many ran."""
    if isinstance(evaluate_batch, DaskEvaluator):
        return optimize_on_cluster(run, evaluate_batch, report)
    config = run.config
    done, batch = 0, 0
    while done < config.n_trials:
        size = min(config.batch_size, config.n_trials - done)
        if run.method() == "initial":
            size = min(config.n_trials - done, max(size, config.n_initial - len(run.y)))
        U, method = run.propose(size, np.zeros((0, run.space.dim)))
        if len(U) == 0:
            run.diagnostics.append(f"the space has no unseen point left after {done} trials")
            break
        trials = list(range(done + 1, done + 1 + len(U)))
        values = evaluate_batch(run.space.from_unit(U), trials)
        run.add(U, values, method, batch, done + 1)
        done += len(U)
        batch += 1
        report(0.05 + 0.75 * done / config.n_trials, f"trial {done}/{config.n_trials} ({method})")
    return done


def _best_so_far(values: list[float], sign: float, start: float | None = None) -> list[float]:
    out, best = [], start
    for v in values:
        best = v if best is None or sign * v < sign * best else best
        out.append(float(best))
    return out


def _regret(best: float | None, objective: Objective | None, direction: str) -> float | None:
    if best is None or objective is None or objective.minimum is None or direction != "minimize":
        return None
    return float(best - objective.minimum)


def random_search(space: Space, objective: Objective, config: HpoConfig,
                  evaluator: Evaluator | DaskEvaluator | None = None) -> dict[str, Any]:
    """Uniform random search with the same budget (``n_trials``), seeded by ``(seed, 1)``; on ``evaluator``'s workers if given."""
    rng = np.random.default_rng([config.seed, 1])
    configs = space.from_unit(space.sample_unit(rng, config.n_trials))
    trials = list(range(1, config.n_trials + 1))
    values = evaluator(configs, trials) if evaluator is not None else evaluate(objective, configs, trials, config.n_jobs)
    return _baseline_summary(configs, values, objective, config)


def tpe_search(space: Space, objective: Objective, config: HpoConfig) -> dict[str, Any]:
    """Optuna's TPE sampler (seeded) with the same budget on the same objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=config.direction, sampler=optuna.samplers.TPESampler(seed=config.seed))
    configs: list[dict[str, Any]] = []
    values: list[float] = []

    def target(trial: Any) -> float:
        params = {}
        for p in space.params:
            if p.kind == "float":
                params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
            elif p.kind == "int":
                params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        value = evaluate_one(objective, params, trial.number + 1)
        configs.append(params)
        values.append(value)
        return value

    study.optimize(target, n_trials=config.n_trials)
    return _baseline_summary(configs, values, objective, config)


def _baseline_summary(configs: list[dict[str, Any]], values: list[float], objective: Objective, config: HpoConfig) -> dict[str, Any]:
    sign = 1.0 if config.direction == "minimize" else -1.0
    curve = _best_so_far(values, sign)
    index = int(np.argmin(sign * np.asarray(values)))
    return {"best_value": curve[-1], "regret": _regret(curve[-1], objective, config.direction), "n_evaluations": len(values),
            "best_config": configs[index], "best_so_far": curve}


def _learned_components(run: _Run, baselines: dict[str, dict[str, Any]], diagnostics: list[str]) -> list[dict[str, Any]]:
    """The optimiser that ran against random search with the same budget (optimize mode with baselines only).

    One row: the best value the plan's own trials reached (history left out)
    against random search's, ``beats_baseline`` when strictly better in the
    objective's direction; a diagnostic when it is not (the suggestions still
    come from the optimiser: random search proposes no next point to prefer).
    """
    evaluated = [t["value"] for t in run.trials if t["trial"] is not None]
    if "random_search" not in baselines or not evaluated or run.solver.ran == "random":
        return []
    own = min(evaluated) if run.sign > 0 else max(evaluated)
    base = baselines["random_search"]["best_value"]
    beats = run.sign * own < run.sign * base
    if not beats:
        diagnostics.append(f"the {run.solver.ran} optimiser's best value ({own:.6g}) is not better than random search's "
                           f"({base:.6g}) with the same {len(evaluated)} evaluations: its model did not help on this objective "
                           "(random search's best configuration is in baselines.random_search.best_config)")
    # acted_on: the plan's suggestions still come from the optimiser; the diagnostic is the operator's cue.
    return [{"component": run.solver.ran, "measure": f"best_value ({run.config.direction})", "value": own,
             "baseline": "random_search", "baseline_value": base, "beats_baseline": bool(beats), "acted_on": True}]


def _warm_start(run: _Run) -> dict[str, Any] | None:
    """The VQC's warm start from the history (see :meth:`VQCSurrogate.warm_start`); ``None`` after a quantum refusal."""
    report = run.vqc_step(lambda vqc: vqc.warm_start(run.U, run.y))
    if report is None:
        return None
    if not report["adopted"]:
        run.diagnostics.append(f"vqc_warm_start: the warm start's first fit (training MSE {report['mean_training_mse_warm']:.4g} "
                               f"on average over {report['steps']} steps) did not beat the cold start's "
                               f"({report['mean_training_mse_cold']:.4g}); the cold start was kept")
    return report


def _record_path_used(run: _Run, suggest_method: str) -> None:
    """Make ``solver.ran`` name only the proposers whose points were evaluated or suggested.

    The VQC or the GP may be requested and never propose a point (every point
    from the random initial design, or the hybrid's switch never reached);
    the fallback then says so, with the counts.
    """
    counts = {m: sum(1 for t in run.trials if t["method"] == m) + (suggest_method == m) for m in ("vqc", "gp-ei")}
    path = run.solver.ran
    counted = f"{counts['vqc']} VQC and {counts['gp-ei']} GP-EI proposals (trials + the suggestions' batch)"
    needs = {"vqc": ("vqc",), "gp-ei": ("gp-ei",), "hybrid": ("vqc", "gp-ei")}.get(path, ())
    missing = [m for m in needs if counts[m] == 0]
    if not missing:
        return
    used = [m for m in needs if counts[m] > 0]
    to = used[0] if used else "random"
    if "gp-ei" in missing and "vqc" not in missing and path == "hybrid":
        why = f"the GP's turn never came: hybrid_switch={run.config.hybrid_switch}"
    else:
        why = f"fewer than n_initial={run.config.n_initial} observations or no proposal left to it"
    run.solver.fall_back(path, to, f"{', '.join(missing)} proposed no point ({counted}): {why}")


def _changed(config: HpoConfig, names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` whose value differs from the field's default (what the user actually set)."""
    return [n for n in names if getattr(config, n) != type(config).model_fields[n].default]


def _settings_without_effect(config: HpoConfig, history_given: bool, dataset_given: bool) -> list[str]:
    """One diagnostic per setting changed from its default that cannot act in this combination."""
    vqc = config.vqc_optimizer or config.hybrid
    gp_surrogate_moot = not config.gp_surrogate and vqc
    rules = [
        (("vqc_layers", "vqc_steps", "vqc_shots", "max_qubits", "quantum_time_budget_s"), not vqc,
         "only the VQC uses them and neither vqc_optimizer nor hybrid is on"),
        (("hybrid_switch",), not config.hybrid, "hybrid is off"),
        (("vqc_optimizer",), config.hybrid and config.vqc_optimizer, "hybrid is on (the VQC proposes first, then the GP)"),
        (("gp_surrogate",), gp_surrogate_moot, "the VQC falls back to, and the hybrid switches to, GP-EI whatever it says"),
        (("batch_strategy",), not config.gp_surrogate and not vqc, "only GP-EI batches use it and gp_surrogate is off"),
        (("noise_std",), config.objective != "hartmann6_noisy", "only the hartmann6_noisy objective adds noise"),
        (("model", "cv_folds"), config.objective != "train", "only the train objective fits a model"),
        (("builtin_dataset",), config.objective != "train" or dataset_given,
         "a dataset file was given" if dataset_given else "only the train objective uses a dataset"),
        (("n_trials", "batch_size", "n_jobs", "baselines", "dask_scheduler"), config.objective == "none",
         "suggest mode (objective none) evaluates nothing"),
        (("n_jobs",), config.objective in BENCHMARKS and not config.dask_scheduler,
         "the built-in benchmarks are evaluated in this process (closed forms)"),
        (("n_jobs",), config.dask_scheduler not in ("", "local") and config.objective != "none",
         "a remote Dask cluster runs one trial per worker thread, whatever n_jobs says"),
        (("batch_size",), bool(config.dask_scheduler) and config.objective != "none",
         "on Dask every worker thread holds one trial and a new one starts as soon as one ends"),
        (("n_jobs",), config.objective == "train" and config.batch_size == 1 and not config.baselines,
         "batch_size 1 evaluates one trial at a time and the baselines are off"),
        (("warm_start",), not history_given, "no history was given"),
        (("optuna_storage", "enqueue_suggestions"), not config.optuna_study, "optuna_study is empty"),
        (("vqc_warm_start",), not vqc, "neither vqc_optimizer nor hybrid is on"),
        (("vqc_warm_start",), vqc and not (history_given and config.warm_start),
         "it starts from the history's trials and none are used (no history, or warm_start off)"),
    ]
    return [f"{', '.join(changed)} set but without effect: {why}" for names, active, why in rules
            if active and (changed := _changed(config, names))]


def _quantum_report(run: _Run, diagnostics: list[str]) -> QuantumReport | None:
    vqc = run.vqc
    if vqc is None or not vqc.refit_steps:
        return None
    block: dict[str, Any] = {"encoding": "theta = pi * (x - a) / (b - a)", "shots": vqc.shots or "exact",
                             "refits": len(vqc.refit_steps), "trainable_weights": int(np.prod(param_shape(vqc.layers, run.space.dim))),
                             "simulation": "batched NumPy state vectors (training); device run checks the trained circuit"}
    try:
        diff = vqc.device_check(run.U)
        block["device_check_max_abs_diff"] = diff
        if diff > 1e-6:
            diagnostics.append(f"VQC: the NumPy state vectors and {vqc.device.name} differ by {diff:.2e}")
    except QuantumUnavailableError as exc:
        block["device_check_max_abs_diff"] = None
        diagnostics.append(f"VQC device check skipped: {exc}")
    return QuantumReport(device=vqc.device.name, device_reason=vqc.device.reason, layers=vqc.layers,
                         qubits_per_circuit=[run.space.dim], circuits_run=vqc.circuits_run, optimizer_steps=vqc.refit_steps,
                         convergence=[[round(v, 8) for v in vqc.losses]], blocks=[block])


def _result(run: _Run, config: HpoConfig, space: Space, objective: Objective | None, parsed: History,
            suggestions_U: np.ndarray, suggest_method: str, slices: dict[str, Any], usable: bool) -> dict[str, Any]:
    best = None
    if len(run.y):
        i = int(np.argmin(run.y))
        best = {k: run.trials[i][k] for k in ("config", "value", "method", "trial")}
    evaluated = [t["value"] for t in run.trials if t["trial"] is not None]
    history_values = [t["value"] for t in run.trials if t["trial"] is None]
    start = None
    if history_values:
        start = min(history_values) if run.sign > 0 else max(history_values)
    result: dict[str, Any] = {
        "mode": "optimize" if objective is not None else "suggest",
        "objective": config.objective,
        "objective_detail": _objective_detail(objective),
        "direction": config.direction,
        "space": space.describe(),
        "suggestions": space.from_unit(suggestions_U),
        "suggestion_method": suggest_method,
        "best": best,
        "trials": run.trials,
        "best_so_far": _best_so_far(evaluated, run.sign, start),
        "history_used": len(history_values),
        "history_pending": len(parsed.pending) if usable else 0,
        "history_rejected": parsed.rejected,
        "gp_posterior": slices,
    }
    if config.hybrid:
        vqc_trials = sum(1 for t in run.trials if t["method"] == "vqc")
        result["hybrid"] = {"switch_after_vqc_trials": config.hybrid_switch, "switch_trial": run.switch_trial,
                            "vqc_trials": vqc_trials, "gp_trials": sum(1 for t in run.trials if t["method"] == "gp-ei")}
    return result


def _objective_detail(objective: Objective | None) -> str:
    if objective is None:
        return "none (suggest mode)"
    if objective.name == "train":
        return f"1 - mean {objective.cv_folds}-fold CV score of {objective.model} ({objective.task}) on {objective.dataset_label}"
    noise = f" + N(0, {objective.noise_std:g}^2) noise" if objective.noise_std else ""
    return f"{objective.name}{noise}; known minimum {objective.minimum:.6f}"


def _metrics(run: _Run, objective: Objective | None, parsed: History, n_evaluated: int, result: dict[str, Any]) -> dict[str, Any]:
    best = result["best"]
    best_value = None if best is None else best["value"]
    counts: dict[str, int] = {}
    for t in run.trials:
        counts[t["method"]] = counts.get(t["method"], 0) + 1
    # Evaluated trials and suggestions together: no point proposed twice (history rows may repeat themselves).
    proposed = [tuple(sorted(t["config"].items())) for t in run.trials if t["trial"] is not None]
    proposed += [tuple(sorted(c.items())) for c in result["suggestions"]]
    return {
        "best_value": best_value,
        "regret": _regret(best_value, objective, run.config.direction),
        "n_evaluations": n_evaluated,
        "n_suggestions": len(result["suggestions"]),
        "n_history_used": result["history_used"],
        "n_history_rejected": len(parsed.rejected),
        "n_history_pending": result["history_pending"],
        "trials_by_method": counts,
        "all_proposals_distinct": len(set(proposed)) == len(proposed),
    }
