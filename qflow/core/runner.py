"""Engine work for a server: in threads off the event loop, a bounded number at once, cancellable, children reaped.

:class:`EngineRunner` runs each piece of work in its own daemon thread. At
most ``max_running`` run at once; up to ``max_queued`` more wait for a slot;
past that :meth:`EngineRunner.submit` raises :class:`RunnerBusy` at once (the
API answers 429). Daemon threads, so a run that never reports progress cannot
keep a stopping server alive.

Cancel is cooperative, as in the console (:mod:`ui.jobs`): every run gets a
:class:`RunTicket` whose :meth:`~RunTicket.report` is the engine's progress
callback; once :meth:`~RunTicket.cancel` was called (time budget spent,
client gone, server stopping) the next report raises :class:`RunCancelled`
inside the engine, so it stops between stages and never half-way through a
database write. A run still waiting for a slot is dropped before it starts.

Worker processes: engines may start processes (joblib, process pools) that
outlive the call. When the last running run ends, joblib's reusable executor
(if one was started) is shut down through its own API, then every descendant process of
this one that appeared while runs were going is terminated (SIGTERM, then
SIGKILL after :data:`REAP_GRACE_S`) and reaped. Found through ``/proc``, so
on systems without it (macOS) nothing is reaped; processes that existed before
the runs started (a test harness's, another component's) are never touched,
nor is multiprocessing's or loky's ``resource_tracker`` (one idle helper per
server process, which cleans up after the workers; killing it only makes
later runs relaunch it with warnings).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REAP_GRACE_S", "EngineRunner", "RunCancelled", "RunTicket", "RunnerBusy", "descendant_pids"]

#: Seconds a stray worker process gets between SIGTERM and SIGKILL.
REAP_GRACE_S = 2.0
#: How often a queued run checks whether it was cancelled while waiting, seconds.
_QUEUE_POLL_S = 0.05


class RunCancelled(BaseException):  # noqa: N818 -- a signal, not an error
    """Raised inside the engine at its next progress report once the run was cancelled.

    A ``BaseException``, so an engine's ``except Exception`` around a step
    that may fall back does not swallow it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunnerBusy(Exception):  # noqa: N818 -- a refusal, answered 429
    """Every run slot and every queue place is taken."""


@dataclass
class RunTicket:
    """One run's cancel switch and its progress callback."""

    reason: str | None = None
    fraction: float = 0.0
    message: str = "queued"
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str) -> None:
        """Stop the run at its next progress report (the first reason given is kept)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def report(self, fraction: float, message: str) -> None:
        """The engine's ``progress(fraction, message)``; raises :class:`RunCancelled` once cancelled."""
        if self._event.is_set():
            raise RunCancelled(self.reason or "cancelled")
        self.fraction, self.message = float(fraction), str(message)


def _parent_pids() -> dict[int, int]:
    """``{pid: parent pid}`` of every process ``/proc`` shows (empty where there is no ``/proc``)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # Field 2 (the command) is in parentheses and may hold spaces; the parent pid is the second field after it.
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) >= 2:
            parents[int(stat.parent.name)] = int(fields[1])
    return parents


def descendant_pids(pid: int | None = None) -> set[int]:
    """Every live descendant process of ``pid`` (default: this process)."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for child, parent in _parent_pids().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _shut_down_loky() -> None:
    """Stop joblib's reusable loky executor through its own API, if this process started one.

    Its idle workers then exit by themselves, and the executor knows they
    are gone (killed from outside, loky later warns while trying to kill
    them again). Never imports joblib: a process that did not load it has no
    such executor.
    """
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


def _is_helper(pid: int) -> bool:
    """Whether ``pid`` is a ``resource_tracker`` (kept: see the module docstring)."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone once we collect it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _reap(pids: set[int]) -> None:
    """SIGTERM ``pids``, SIGKILL those still alive after :data:`REAP_GRACE_S`, collect our own children."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + REAP_GRACE_S
        while (pids := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not pids:
            return


class EngineRunner:
    """Runs engine work in daemon threads, ``max_running`` at once, ``max_queued`` waiting."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._live: dict[int, RunTicket] = {}
        self._baseline: set[int] = set()

    def counts(self) -> dict[str, int]:
        """``{"running", "queued", "max_running", "max_queued"}`` right now."""
        with self._lock:
            return {"running": self._running, "queued": self._admitted - self._running,
                    "max_running": self.max_running, "max_queued": self.max_queued}

    def submit(self, work: Callable[[Callable[[float, str], None]], Any], ticket: RunTicket) -> concurrent.futures.Future:
        """Start ``work(progress)`` in a thread as soon as a slot is free; :class:`RunnerBusy` when all are taken."""
        with self._lock:
            if self._admitted >= self.max_running + self.max_queued:
                raise RunnerBusy(f"{self._running} runs in progress and {self._admitted - self._running} waiting")
            self._admitted += 1
            self._live[id(ticket)] = ticket
        future: concurrent.futures.Future = concurrent.futures.Future()
        threading.Thread(target=self._work, args=(work, ticket, future), name="qflow-engine", daemon=True).start()
        return future

    def cancel_all(self, reason: str) -> None:
        """Cancel every admitted run (the server is stopping)."""
        with self._lock:
            tickets = list(self._live.values())
        for ticket in tickets:
            ticket.cancel(reason)

    def _work(self, work: Callable[[Callable[[float, str], None]], Any], ticket: RunTicket,
              future: concurrent.futures.Future) -> None:
        try:
            while not self._slots.acquire(timeout=_QUEUE_POLL_S):
                ticket.report(0.0, "queued")  # raises once cancelled while waiting
            try:
                ticket.report(0.0, "starting")
                self._started()
                try:
                    result = work(ticket.report)
                finally:
                    self._finished()
            finally:
                self._slots.release()
            future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting request, never lost
            future.set_exception(exc)
        finally:
            with self._lock:
                self._admitted -= 1
                self._live.pop(id(ticket), None)

    def _started(self) -> None:
        with self._lock:
            if self._running == 0:
                self._baseline = descendant_pids()
            self._running += 1

    def _finished(self) -> None:
        """Count the run out; the last one out shuts loky down and reaps what the runs left (under the lock, so
        no run starts using an executor being shut down)."""
        with self._lock:
            self._running -= 1
            stray = descendant_pids() - self._baseline if self._running == 0 else set()
            if stray:
                _shut_down_loky()
                stray = {pid for pid in stray if _alive(pid) and not _is_helper(pid)}
        if stray:
            _reap(stray)
