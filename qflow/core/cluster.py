"""Where parallel work runs: one process, a local Dask cluster, or a Dask cluster elsewhere.

qflow does not invent a cluster of its own: work that outgrows one machine is
submitted to Dask (``distributed``), which operators already run. The address
comes from a module's ``dask_scheduler`` setting or from
``QFLOW_DASK_SCHEDULER``; without one, ``n_workers > 1`` starts a
``LocalCluster`` of worker processes on loopback for the plan's lifetime
(the address ``local`` asks for one explicitly, even of a single worker).

``distributed`` is imported only when a cluster is used, so plans that never
ask for one do not pay for the import.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qflow.core.errors import InputError
from qflow.core.limits import max_workers

__all__ = ["LOCAL_CLUSTER", "SCHEDULER_ENV", "dask_client", "scheduler_address", "tagged_call", "worker_addresses",
           "worker_threads"]

#: Environment variable naming the scheduler when the config does not.
SCHEDULER_ENV = "QFLOW_DASK_SCHEDULER"
#: The address that means "a LocalCluster on this machine, for the plan's lifetime".
LOCAL_CLUSTER = "local"

_ADDRESS = re.compile(r"^(tcp|tls)://[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def scheduler_address(configured: str | None, source: str = "config") -> str | None:
    """The scheduler to use: the config's value, else ``QFLOW_DASK_SCHEDULER``, else ``None``.

    ``local`` is returned as it is (see :data:`LOCAL_CLUSTER`).

    Raises
    ------
    InputError
        When the address is not ``tcp://HOST:PORT`` (or ``tls://``) or ``local``.
    """
    where, value = (source, configured) if configured else ("(environment)", os.environ.get(SCHEDULER_ENV) or None)
    if value is None or value == LOCAL_CLUSTER:
        return value
    if not _ADDRESS.match(value):
        field = "dask_scheduler" if where == source else SCHEDULER_ENV
        raise InputError(where, field, "not a scheduler address", "tcp://HOST:PORT", value)
    return value


@contextmanager
def dask_client(address: str | None, n_workers: int = 1, *, source: str = "config") -> Iterator[Any | None]:
    """A ``distributed.Client`` for the plan's duration, or ``None`` for in-process work.

    Parameters
    ----------
    address : str or None
        A scheduler address (see :func:`scheduler_address`); connected with a
        10 s timeout. ``local``: a ``LocalCluster`` whatever ``n_workers``.
    n_workers : int
        Without an address and above 1 (or with ``local``), a ``LocalCluster``
        of this many single-threaded worker processes (capped by the
        ``worker_processes`` limit) bound to 127.0.0.1; its status page (always started by the scheduler)
        listens on a free loopback port, so it never competes for 8787.

    Raises
    ------
    InputError
        When the scheduler cannot be reached.
    """
    if address is None and n_workers <= 1:
        yield None
        return
    from distributed import Client, LocalCluster

    if address is not None and address != LOCAL_CLUSTER:
        try:
            client = Client(address, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InputError(source, "dask_scheduler", f"scheduler not reachable ({type(exc).__name__})",
                             "a running dask scheduler", address) from None
        with client:
            yield client
        return
    workers = max(1, min(n_workers, max_workers()))
    with _main_not_rerun():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


@contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start worker processes without re-running this process's ``__main__`` script in them.

    ``multiprocessing``'s spawn start re-executes the parent's main script by
    path in every child. Under the console that script is a Streamlit page
    (run by Streamlit, not importable on its own), and a worker started from
    it dies before it can serve; the workers need nothing from it, since
    their tasks are qflow functions.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _run_tagged(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str]:
    from distributed import get_worker

    return fn(*args, **kwargs), get_worker().address


def tagged_call(client: Any, fn: Callable[..., Any], *args: Any, key: str | None = None, **kwargs: Any) -> Any:
    """Submit ``fn(*args, **kwargs)``; the future's result is ``(value, worker_address)``.

    Plans record the address, so an operator can see where each task ran.
    Dask reruns a task elsewhere when its worker dies (up to the scheduler's
    ``allowed-failures``), so no task is lost with a worker.
    """
    return client.submit(_run_tagged, fn, args, kwargs, key=key, pure=False)


def worker_addresses(client: Any) -> list[str]:
    """Addresses of the workers the scheduler knows now, sorted."""
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def worker_threads(client: Any) -> int:
    """Task slots of the cluster now: the sum of its workers' threads (at least 1)."""
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values()))
