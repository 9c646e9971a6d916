"""The cached engine runner: input bytes + config JSON -> plan, with live progress.

``st.cache_data`` records every ``st`` call made inside a cached function and
replays it on a cache hit; a progress bar created outside the function cannot
be replayed (``CacheReplayClosureError``). So the cached function never
touches Streamlit: it runs in a worker thread and reports progress through a
queue, and the script thread drains that queue into the page's progress bar.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import streamlit as st

from qflow.core import QflowError
from qflow.routing import RoutingConfig, capacity_sweep, load_routing_inputs, plan_routing
from ui.inputs import InputFile
from ui.jobs import JobCancelled

__all__ = ["SWEEP_FACTORS", "Progress", "RoutingRun", "call_with_progress", "run_routing"]

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


def call_with_progress(func: Callable[..., R], *args: Any, on_progress: Progress,
                       cancel: threading.Event | None = None) -> R:
    """Run ``func(*args, _progress=...)`` in a worker thread, forwarding its progress here.

    ``on_progress`` is called on this (the script's) thread, so it may update
    Streamlit elements. Exceptions from ``func`` are re-raised here.

    A click elsewhere in the app interrupts the script thread (Streamlit
    raises inside ``on_progress``): this returns at once and the worker runs
    on in the background, so a cached ``func`` still fills its cache and the
    same Run afterwards is instant. With ``cancel``, setting the event makes
    the worker's next progress report raise :class:`ui.jobs.JobCancelled`,
    which stops ``func`` there and is re-raised here.
    """
    updates: queue.Queue[tuple[float, str]] = queue.Queue()

    def report(fraction: float, message: str) -> None:
        if cancel is not None and cancel.is_set():
            raise JobCancelled(message)
        updates.put((min(max(float(fraction), 0.0), 1.0), message))

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qflow-run")
    future = pool.submit(func, *args, _progress=report)
    finished = False
    try:
        while True:  # ends when the worker does; each wait is bounded
            try:
                on_progress(*updates.get(timeout=0.1))
            except queue.Empty:
                if future.done():
                    break
        while not updates.empty():
            on_progress(*updates.get_nowait())
        finished = True
        return future.result()
    finally:
        # Interrupted (a rerun, a page switch): leave the worker to finish on its own instead of blocking here.
        pool.shutdown(wait=finished)


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
