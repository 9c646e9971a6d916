"""The layers of a multi-layer router trace as Dask tasks: one layer, one :func:`plan_routing` call, one worker.

Each layer's plan is the same function on the same inputs as in a local run
(every layer already has its own seed-determined plan and quantum budget),
so the per-layer results are the same; the cluster only changes where each
layer ran, which the plan records. A layer whose worker dies is rerun
elsewhere by Dask. A :class:`~qflow.core.errors.QflowError` raised on a
worker comes back as the same one-line error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from qflow.core.cluster import dask_client, tagged_call, worker_addresses
from qflow.core.errors import InfeasibleError, InputError, QflowError, QuantumUnavailableError
from qflow.core.plan import InputDigest, Plan

__all__ = ["layer_plans_on_cluster"]

_ERRORS = {cls.__name__: cls for cls in (InputError, InfeasibleError, QuantumUnavailableError)}


def _plan_layer(frame: pd.DataFrame, model_graph: Any, config: Any, digests: list[InputDigest] | None) -> Any:
    """One layer's plan on a worker; a qflow error travels back as plain fields (its constructor does not unpickle)."""
    from qflow.routing._plan import plan_routing

    try:
        return "ok", plan_routing(frame, model_graph, config, digests=digests)
    except QflowError as exc:
        return "error", (type(exc).__name__, exc.source, exc.field, exc.problem, exc.expected, exc.received)


def layer_plans_on_cluster(address: str, frames: Sequence[pd.DataFrame], model_graph: Mapping[str, Any] | Any,
                           config: Any, digests: list[InputDigest] | None, source: str = "config",
                           progress: Callable[[float, str], None] | None = None) -> tuple[list[Plan], dict[str, Any]]:
    """Every layer's plan, each a task on the cluster at ``address``, in layer order.

    Returns
    -------
    plans : list of Plan
        One per frame, as :func:`qflow.routing.plan_routing` makes it.
    cluster : dict
        ``scheduler``, ``workers`` (seen at the start), ``layer_workers``
        (the worker that planned layer i, at position i) and ``workers_used``.
    """
    from distributed import as_completed

    with dask_client(address, source=source) as client:
        workers = worker_addresses(client)
        if not workers:
            raise InputError(source, "dask_scheduler", "no workers connected to the scheduler",
                             "at least one dask worker", 0)
        futures = [tagged_call(client, _plan_layer, frame, model_graph, config, digests) for frame in frames]
        position = {f.key: i for i, f in enumerate(futures)}
        outcomes: list[Any] = [None] * len(frames)
        try:
            for done, future in enumerate(as_completed(futures, loop=client.loop), start=1):
                outcomes[position[future.key]] = future.result()
                if progress is not None:
                    progress(done / len(frames), f"layer {position[future.key]} planned")
        finally:
            client.cancel([f for f in futures if not f.done()])
    plans, layer_workers = [], []
    for (kind, value), worker in outcomes:
        if kind == "error":
            name, *fields = value
            raise _ERRORS.get(name, InputError)(*fields)
        plans.append(value)
        layer_workers.append(worker)
    return plans, {"scheduler": address, "workers": workers, "layer_workers": layer_workers,
                   "workers_used": sorted(set(layer_workers))}
