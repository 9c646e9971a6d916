"""HPO trials as Dask futures: asynchronous batches that keep every worker busy.

With a scheduler (``dask_scheduler``, ``QFLOW_DASK_SCHEDULER``, or ``local``
for a LocalCluster) each trial is one task. As soon as one finishes, its value
enters the observations and a new point is proposed with the trials still
running as *pending* (constant liar / kriging believer, as in a local batch),
so the cluster never waits for the slowest trial of a batch.

Each task logs the worker that starts it (a Dask event), so the plan can say
where every trial ran and which trials were started on a worker that then
left the cluster: Dask reruns such a task elsewhere, and the plan records it.
Without a scheduler the joblib :class:`~qflow.hpo._objectives.Evaluator` runs,
as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from qflow.core.cluster import LOCAL_CLUSTER, dask_client, scheduler_address, tagged_call, worker_addresses, worker_threads
from qflow.core.errors import QflowError
from qflow.core.limits import check_limit
from qflow.hpo._objectives import Evaluator, Objective, evaluate_one

__all__ = ["DaskEvaluator", "TRIAL_TOPIC", "optimize_on_cluster", "trial_evaluator"]

#: Dask event topic each trial task logs its start under.
TRIAL_TOPIC = "qflow.hpo.trial"

Progress = Callable[[float, str], None]


def _run_trial(evaluate: Callable[..., float], objective: Objective, config: Mapping[str, Any], trial: int, run_id: str,
               key: str) -> float:
    """On a worker: log the start (run, task key, this worker), then evaluate."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(TRIAL_TOPIC, {"run": run_id, "key": key, "trial": trial, "worker": worker.address})
    return evaluate(objective, config, trial)


class DaskEvaluator:
    """Evaluates trials as futures on a Dask cluster; remembers where each ran.

    Attributes
    ----------
    scheduler : str
        The address, or ``local``.
    slots : int
        Trials kept in flight: the cluster's worker threads when it was joined.
    workers_at_start : list of str
    """

    def __init__(self, objective: Objective, client: Any, scheduler: str, trial_fn: Callable[..., float] | None = None) -> None:
        self.objective, self.client, self.scheduler = objective, client, scheduler
        self.trial_fn = trial_fn or evaluate_one  # looked up at run time, so a test can swap in a slow objective
        self.run_id = uuid.uuid4().hex[:12]
        self.workers_at_start = worker_addresses(client)
        self.slots = worker_threads(client)
        self.workers = len(self.workers_at_start)
        # One copy per worker, sent once (a train objective carries its dataset).
        self._objective = client.scatter(objective, broadcast=True, hash=False, direct=False)
        self.keys: dict[int, list[str]] = {}  # trial -> its task keys, one per submission

    def submit(self, config: Mapping[str, Any], trial: int, stage: str = "trial") -> Any:
        """One trial as a future whose result is ``(value, worker address)``."""
        key = f"qflow-hpo-{self.run_id}-{stage}-{trial}"
        if stage == "trial":
            attempts = self.keys.setdefault(trial, [])
            key += f"-again{len(attempts)}" if attempts else ""
            attempts.append(key)
        return tagged_call(self.client, _run_trial, self.trial_fn, self._objective, dict(config), trial, self.run_id, key,
                           key=key)

    def resubmit(self, config: Mapping[str, Any], trial: int) -> Any:
        """Submit a trial again after Dask cancelled its future: when its worker left, the scheduler may forget
        the task (``FutureCancelledError: ... already forgotten``) instead of rerunning it. The objective is
        scattered again first if its copies went with that worker."""
        if self._objective.status != "finished":
            self._objective = self.client.scatter(self.objective, broadcast=True, hash=False, direct=False)
        return self.submit(config, trial)

    def __call__(self, configs: Sequence[Mapping[str, Any]], trials: Sequence[int]) -> list[float]:
        """A whole batch (the random-search baseline): values in order."""
        futures = [self.submit(c, t, stage="baseline") for c, t in zip(configs, trials, strict=True)]
        return [value for value, _ in self.client.gather(futures)]

    def starts(self) -> dict[str, list[str]]:
        """``{task key: [worker that started it, ...]}`` for this run's tasks, in order of start."""
        out: dict[str, list[str]] = {}
        for _, msg in self.client.get_events(TRIAL_TOPIC):
            if isinstance(msg, dict) and msg.get("run") == self.run_id:
                out.setdefault(msg["key"], []).append(msg["worker"])
        return out

    def record(self, trials: list[dict[str, Any]], diagnostics: list[str]) -> dict[str, Any]:
        """Mark each evaluated trial ``retried`` (with a note) and summarise where the work ran (``result.distributed``)."""
        starts = self.starts()
        at_end = worker_addresses(self.client)
        lost = sorted(set(self.workers_at_start) - set(at_end))
        retried, per_worker = [], {}
        for t in trials:
            if t.get("trial") is None or t["trial"] not in self.keys:
                continue
            per_worker[t["worker"]] = per_worker.get(t["worker"], 0) + 1
            began = [worker for key in self.keys[t["trial"]] for worker in starts.get(key, [])]
            t["retried"] = len(began) > 1
            if t["retried"]:
                retried.append(t["trial"])
                t["note"] = (f"started on {', '.join(began[:-1])}, which left the cluster before it finished; "
                             f"Dask reran it on {t['worker']}")
        if lost:
            diagnostics.append(f"{len(lost)} Dask worker(s) left the cluster during the run ({', '.join(lost)}); "
                               f"{len(retried)} trial(s) they were running were rerun on other workers "
                               f"(trials {', '.join(map(str, retried)) or 'none'}); no trial was lost")
        return {"scheduler": self.scheduler, "in_flight": self.slots, "workers_at_start": self.workers_at_start,
                "workers_at_end": at_end, "workers_lost": lost, "workers_used": sorted(per_worker),
                "trials_per_worker": dict(sorted(per_worker.items())), "retried_trials": retried}


@contextmanager
def trial_evaluator(objective: Objective, config: Any, dataset_source: str) -> Iterator[Evaluator | DaskEvaluator]:
    """The evaluator of this plan: Dask when a scheduler is configured (or ``local``), else joblib processes.

    The client (and a LocalCluster) lives for the ``with`` block; leaving it
    releases every future, so the scheduler drops trials still running after
    a Cancel.
    """
    target = scheduler_address(config.dask_scheduler or None)
    if target is None:
        with Evaluator(objective, config.n_jobs) as evaluator:
            yield evaluator
        return
    with dask_client(target, config.n_jobs) as client:
        evaluator = DaskEvaluator(objective, client, target)
        X, y = objective.X, objective.y
        if target == LOCAL_CLUSTER and X is not None and y is not None:  # the workers' memory is this machine's
            check_limit(evaluator.workers * (X.nbytes + y.nbytes), "decoded_bytes", dataset_source,
                        f"(the dataset copied into {evaluator.workers} worker processes)")
        yield evaluator


#: Times a trial is submitted again after Dask cancelled it (see :meth:`DaskEvaluator.resubmit`).
RESUBMITS = 3


def _value_of(future: Any, trial: int) -> tuple[float, str] | None:
    """The future's ``(value, worker)``, or ``None`` when Dask cancelled it (its worker left and the scheduler forgot it).

    A trial that took down too many workers is a one-line error, not a traceback.
    """
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise QflowError("config", "dask_scheduler", f"trial {trial} was running on every worker that died while running "
                         "it (distributed.scheduler.allowed-failures reached)", "workers that survive a trial") from None
    except CancelledError:  # distributed's FutureCancelledError; our own cancels happen only after this loop
        return None


def optimize_on_cluster(run: Any, evaluator: DaskEvaluator, report: Progress) -> int:
    """Evaluate ``n_trials`` proposals, one future per trial, refilling each slot as it frees up; returns how many ran.

    The random initial design is drawn first, as in a local run; the
    surrogate's first proposal waits until that design is complete (one
    worker may idle for the last initial trial). Later proposals see the
    trials in flight as pending. Trials enter ``run`` in the order they finish.
    """
    from distributed import as_completed

    config = run.config
    dim = run.space.dim
    queue: list[tuple[np.ndarray, str]] = []
    if run.method() == "initial":
        U0, method = run.propose(min(config.n_trials, config.n_initial - len(run.y)), np.zeros((0, dim)))
        queue = [(row, method) for row in U0]
    in_flight: dict[Any, tuple[np.ndarray, str, int, int]] = {}
    finished = as_completed(loop=evaluator.client.loop)
    state = {"submitted": 0, "round": 0}

    def submit(rows: list[tuple[np.ndarray, str]]) -> None:
        for row, method in rows:
            state["submitted"] += 1
            future = evaluator.submit(run.space.from_unit(row[None])[0], state["submitted"])
            in_flight[future] = (row, method, state["submitted"], state["round"])
            finished.add(future)
        state["round"] += 1

    def fill() -> None:
        free = min(evaluator.slots - len(in_flight), config.n_trials - state["submitted"])
        if free <= 0:
            return
        if queue:
            submit([queue.pop(0) for _ in range(min(free, len(queue)))])
        elif len(run.y) >= config.n_initial:
            pending = np.array([v[0] for v in in_flight.values()]).reshape(len(in_flight), dim)
            U, method = run.propose(free, pending)
            submit([(row, method) for row in U])

    done = 0
    try:
        fill()
        for future in finished:
            row, method, trial, batch = in_flight.pop(future)
            outcome = _value_of(future, trial)
            if outcome is None:
                if len(evaluator.keys[trial]) > RESUBMITS:
                    raise QflowError("config", "dask_scheduler", f"Dask cancelled trial {trial} {RESUBMITS + 1} times (its "
                                     "workers left the cluster)", "workers that stay while a trial runs")
                again = evaluator.resubmit(run.space.from_unit(row[None])[0], trial)
                in_flight[again] = (row, method, trial, batch)
                finished.add(again)
                continue
            value, worker = outcome
            run.add(row[None], [value], method, batch, trial)
            run.trials[-1]["worker"] = worker
            done += 1
            report(0.05 + 0.75 * done / config.n_trials, f"trial {trial} done on {worker} ({done}/{config.n_trials})")
            fill()
    except BaseException:
        evaluator.client.cancel(list(in_flight))
        raise
    if done < config.n_trials:
        run.diagnostics.append(f"the space has no unseen point left after {done} trials")
    return done
