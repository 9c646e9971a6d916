"""The cached engine runner: input bytes + config JSON -> plan, with live progress.

``st.cache_data`` records every ``st`` call made inside a cached function and
replays it on a cache hit; a progress bar created outside the function cannot
be replayed (``CacheReplayClosureError``). So the cached function never
touches Streamlit: it runs in a worker thread and appends its progress to a
list, and the script thread forwards new entries to the page's progress bar.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

import streamlit as st

from qflow.core import QflowError
from qflow.routing import RoutingConfig, capacity_sweep, load_routing_inputs, plan_routing
from ui.inputs import InputFile
from ui.jobs import JobCancelled

__all__ = ["SWEEP_FACTORS", "Progress", "RoutingRun", "call_with_progress", "job_key", "run_routing"]

Progress = Callable[[float, str], None]
R = TypeVar("R")

#: capacity_factor values of the capacity sweep chart.
SWEEP_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
#: Share of the progress bar given to the plan; the sweep takes the rest.
_PLAN_SHARE = 0.85


@dataclass(frozen=True)
class RoutingRun:
    """What one Run produced: the plan (dict and JSON text) and the sweep, or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    sweep: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _ignore(fraction: float, message: str) -> None:
    """Progress sink for cache-filling calls nobody watches."""


# Few entries: each holds a whole plan (per-token assignments) twice, as dict and JSON text.
@st.cache_data(show_spinner=False, max_entries=8)
def _routing_cached(
    tokens: bytes, tokens_name: str, model_graph: bytes, model_graph_name: str, config_json: str,
    _progress: Progress = _ignore,
) -> RoutingRun:
    """Load, plan and sweep; keyed on the bytes, the file names (they appear in messages) and the config JSON.

    ``_progress`` is left out of the cache key (leading underscore). An input
    error is a cached result too: the same bytes give the same message.
    """
    try:
        frame, graph, digests = load_routing_inputs(tokens, model_graph, tokens_name=tokens_name, model_graph_name=model_graph_name)
        config = RoutingConfig.model_validate_json(config_json)
        plan = plan_routing(frame, graph, config, digests=digests,
                            progress=lambda fraction, message: _progress(_PLAN_SHARE * fraction, message))
        _progress(_PLAN_SHARE, "capacity sweep (router and top-1 gating at each capacity_factor)")
        sweep = capacity_sweep(frame, graph, config, factors=SWEEP_FACTORS)
    except QflowError as exc:
        return RoutingRun(error=exc.message)
    _progress(1.0, "done")
    return RoutingRun(plan=plan.to_dict(), plan_json=plan.to_json(), sweep=sweep)


@dataclass
class _Flight:
    """One worker computing ``func(*args)``: its future, every progress report so far, its cancel flag."""

    future: Future[Any]
    updates: list[tuple[float, str]] = field(default_factory=list)  # append-only; observers keep a cursor
    cancel: threading.Event = field(default_factory=threading.Event)
    observers: int = 0  # script runs currently forwarding its progress (guarded by _IN_FLIGHT_LOCK)


# Workers outlive the script run that started them (a click elsewhere ends that run), so the registry of
# in-flight work is process-wide by necessity: a later run with the same call attaches to the same worker.
_IN_FLIGHT: dict[str, _Flight] = {}
_IN_FLIGHT_LOCK = threading.RLock()  # re-entrant: a call that ends at once runs its done-callback here


#: Argument types whose ``repr`` (or bytes) identifies them completely; other arguments make a call its own job.
_PLAIN = (bytes, str, int, float, bool, type(None))


def job_key(func: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """The job id of ``func(*args)``: a sha256 over the function's name and the arguments (bytes hashed whole).

    Calls with an argument that is not plain data (an array, a frame: their
    ``repr`` is shortened) get a unique id, so they never share a worker.

    >>> job_key(len, (b"ab", "x", None)) == job_key(len, (b"ab", "x", None)) != job_key(len, (b"ab", "y", None))
    True
    >>> job_key(len, ([1],)) == job_key(len, ([1],))
    False
    """
    digest = hashlib.sha256(f"{func.__module__}.{func.__qualname__}".encode())
    for arg in args:
        if not isinstance(arg, _PLAIN):
            return uuid.uuid4().hex[:16]
        data = arg if isinstance(arg, bytes) else repr(arg).encode()
        digest.update(type(arg).__name__.encode() + b":" + str(len(data)).encode() + b":" + data)
    return digest.hexdigest()[:16]


def _flight_for(func: Callable[..., Any], args: tuple[Any, ...]) -> tuple[_Flight, bool]:
    """The in-flight worker for ``func(*args)``, started if there is none; and whether it was already running."""
    key = job_key(func, args)
    with _IN_FLIGHT_LOCK:
        flight = _IN_FLIGHT.get(key)
        if flight is not None and not flight.future.done() and not flight.cancel.is_set():
            flight.observers += 1
            return flight, True
        updates: list[tuple[float, str]] = []
        cancel = threading.Event()

        def report(fraction: float, message: str) -> None:
            if cancel.is_set():
                raise JobCancelled(message)
            updates.append((min(max(float(fraction), 0.0), 1.0), message))

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"qflow-run-{key}")
        flight = _Flight(pool.submit(func, *args, _progress=report), updates, cancel, observers=1)
        pool.shutdown(wait=False)  # the submitted call still runs to its end; no more are accepted
        _IN_FLIGHT[key] = flight

        def forget(_: Future[Any], key: str = key, flight: _Flight = flight) -> None:
            with _IN_FLIGHT_LOCK:
                if _IN_FLIGHT.get(key) is flight:
                    del _IN_FLIGHT[key]

        flight.future.add_done_callback(forget)
        return flight, False


def call_with_progress(func: Callable[..., R], *args: Any, on_progress: Progress,
                       cancel: threading.Event | None = None) -> R:
    """Run ``func(*args, _progress=...)`` in a worker thread, forwarding its progress here.

    ``on_progress`` is called on this (the script's) thread, so it may update
    Streamlit elements. Exceptions from ``func`` are re-raised here.

    The worker is a job identified by :func:`job_key` (the function and its
    arguments: input bytes and config JSON), and it survives the script run
    that started it. A click elsewhere in the app interrupts the script
    thread (Streamlit raises inside ``on_progress``): this returns at once and
    the worker runs on, so a cached ``func`` still fills its cache. A later
    call with the same arguments while it runs attaches to that worker (its
    progress from the latest report on) instead of starting a second one.

    Cancel: under Streamlit a Cancel button is shown with the progress while
    the worker runs (and removed when it ends); pressing it makes the worker's
    next progress report raise :class:`ui.jobs.JobCancelled`, so the engine
    really stops. Streamlit's Stop (or a closed session) does the same when no
    other script run is attached. With ``cancel``, setting the event does the
    same and :class:`~ui.jobs.JobCancelled` is re-raised here.
    """
    flight, attached = _flight_for(func, args)
    cursor = max(len(flight.updates) - 1, 0) if attached else 0
    holder = _cancel_button(flight)
    stopped = False
    try:
        while True:  # ends when the worker does and every report was forwarded; each wait is bounded
            if cancel is not None and cancel.is_set():
                flight.cancel.set()
            done = flight.future.done()
            end = len(flight.updates)
            for update in flight.updates[cursor:end]:
                on_progress(*update)
            cursor = end
            if done and cursor == len(flight.updates):
                break
            wait([flight.future], timeout=0.05)
    except BaseException as exc:
        stopped = _is_stop(exc)
        raise
    finally:
        with _IN_FLIGHT_LOCK:
            flight.observers -= 1
            if stopped and flight.observers == 0:
                flight.cancel.set()  # Streamlit's Stop (or the tab closed) and nobody else waits: stop the worker
    if holder is not None:
        holder.empty()  # the run is over: no Cancel left on the page
    return flight.future.result()


def _cancel_flight(flight: _Flight) -> None:
    """The Cancel button's callback (runs at the start of the rerun its click causes)."""
    flight.cancel.set()
    st.toast("Run cancelled: the engine stops at its next step.", icon=":material/cancel:")


def _cancel_button(flight: _Flight) -> Any | None:
    """A Cancel button where the page shows its progress (only inside a Streamlit script run); its placeholder."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
    except ImportError:
        return None
    if get_script_run_ctx(suppress_warning=True) is None:
        return None
    holder = st.empty()
    holder.button("Cancel", key=f"qflow_cancel_{id(flight):x}", icon=":material/cancel:", on_click=_cancel_flight,
                  args=(flight,), help="Stop this run: the engine stops at its next step; nothing is stored.")
    return holder


def _is_stop(exc: BaseException) -> bool:
    """Whether ``exc`` is Streamlit stopping the script (its Stop button, a closed session), not a rerun."""
    try:
        from streamlit.runtime.scriptrunner_utils.exceptions import StopException
    except ImportError:  # a Streamlit that moved it: match by name
        return type(exc).__name__ == "StopException"
    return isinstance(exc, StopException)


def run_routing(tokens: InputFile, model_graph: InputFile, settings: Mapping[str, Any], on_progress: Progress) -> RoutingRun:
    """Validate the page's settings as a :class:`RoutingConfig`, then plan (cached).

    Every :class:`QflowError` becomes ``RoutingRun(error=message)``: a page
    shows it with ``st.error`` and never a traceback.
    """
    try:
        config = RoutingConfig.from_mapping(dict(settings), source="settings")
    except QflowError as exc:
        return RoutingRun(error=exc.message)
    return call_with_progress(
        _routing_cached, tokens.data, tokens.name, model_graph.data, model_graph.name, config.model_dump_json(),
        on_progress=on_progress,
    )
