"""Long work outside the script thread: jobs in a worker pool, progress in a fragment, Cancel that stops the engine.

The pool and its jobs are one :class:`JobBoard` held by ``st.cache_resource`` (:func:`job_board`), so a job outlives the
script run that started it (any click ends that run). A page keeps its job in the session state and shows it with
:func:`show_progress`, an ``st.fragment`` rerun once a second (every half second slowed routing's sample run from 25 to
75 s in the browser: each rerun takes the GIL from the worker) that reruns the page once the job has ended. Submitting a
key that is running attaches to that job; one that finished recently returns its result at once. Cancel is cooperative:
the job's progress callback raises :class:`JobCancelled` in the worker at its next report, so the engine stops between
stages.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import streamlit as st

from qflow.core.commands import ModuleCommand, Progress
from qflow.core.limits import max_workers
from qflow.core.uploads import Upload

__all__ = ["Job", "JobBoard", "JobCancelled", "JobState", "content_key", "job_board", "run_identity",
           "ended_job", "show_progress"]

JobState = Literal["running", "done", "failed", "cancelled"]

#: Finished jobs the board keeps (their results answer a repeated Run at once).
KEEP_FINISHED = 8


class JobCancelled(BaseException):  # noqa: N818 -- a signal, not an error
    """Raised inside the worker by the progress callback once :meth:`Job.cancel` was called.

    A ``BaseException`` (like ``KeyboardInterrupt``), so an engine's ``except Exception`` around a step that may fall
    back does not swallow it.
    """


@dataclass
class Job:
    """One piece of work for the pool.

    ``key`` identifies the work (same key, same result); ``fraction`` and ``message`` are the last progress report;
    ``result`` is the function's value once ``state == "done"``, ``error`` ``"TypeName: message"`` once ``"failed"`` (a
    bug: input errors are results).
    """

    key: str
    label: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    fraction: float = 0.0
    message: str = "waiting for a worker"
    state: JobState = "running"
    result: Any = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    def report(self, fraction: float, message: str) -> None:
        """The worker's progress callback; raises :class:`JobCancelled` once a cancel was asked for."""
        if self._cancel.is_set():
            raise JobCancelled(message)
        self.fraction = min(max(float(fraction), 0.0), 1.0)
        self.message = message

    def cancel(self) -> None:
        """Ask the worker to stop at its next progress report."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, scripts); returns whether it did."""
        return self._ended.wait(timeout)

    def work(self, func: Callable[..., Any], args: tuple[Any, ...], watch: Progress | None = None) -> None:
        """Run ``func(*args, _progress=...)`` and record how it ended; ``watch`` also gets each report (and may cancel)."""
        report = self.report if watch is None else lambda fraction, message: (watch(fraction, message),
                                                                                self.report(fraction, message))
        try:
            self.result = func(*args, _progress=report)
            self.fraction, self.message, self.state = 1.0, "done", "done"
        except JobCancelled:
            self.message, self.state = "cancelled", "cancelled"
        except Exception as exc:  # noqa: BLE001 -- reported on the page, never lost
            self.error, self.state = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            self.finished_at = time.time()
            self._ended.set()


class JobBoard:
    """A thread pool and the jobs it ran or runs, by key (one per server process, see :func:`job_board`)."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qflow-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def _claim(self, key: str, label: str) -> tuple[Job, bool]:
        """The running or successfully finished job for ``key`` and ``False``, else a new one and ``True``."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state in ("running", "done"):
                self._jobs.move_to_end(key)
                return job, False
            self._jobs[key] = job = Job(key=key, label=label)
            self._forget_old()
            return job, True

    def submit(self, key: str, label: str, func: Callable[..., Any], *args: Any) -> Job:
        """The job for ``key``: the running or successfully finished one, else a new one running ``func(*args)``."""
        job, new = self._claim(key, label)
        if new:
            self._pool.submit(job.work, func, args)
        return job

    def run_here(self, key: str, label: str, watch: Progress, func: Callable[..., Any], *args: Any) -> Job:
        """As :meth:`submit`, but a new job runs in the calling thread (a step of a batch job), and it returns once the job
        has ended; ``watch`` gets its reports, or a call every half second while it waits on a running one."""
        job, new = self._claim(key, label)
        if new:
            job.work(func, args, watch)
        while not job.wait(0.5):
            watch(job.fraction, job.message)
        return job

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    def _forget_old(self) -> None:
        """Drop the oldest finished jobs beyond :data:`KEEP_FINISHED` (running ones stay)."""
        finished = [key for key, job in self._jobs.items() if not job.running]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[key]


@st.cache_resource(show_spinner=False)
def job_board() -> JobBoard:
    """The server's one board; its pool has as many threads as :func:`qflow.core.limits.max_workers` allows."""
    return JobBoard(max_workers())


def content_key(*parts: bytes | str | None) -> str:
    """A sha256 key over ``parts`` (bytes hashed whole, each length-prefixed so parts never run together).

    >>> content_key(b"ab", "x") == content_key(b"ab", "x") != content_key(b"a", "bx")
    True
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(b"none;" if data is None else f"{len(data)}:".encode() + data)
    return digest.hexdigest()[:20]


def run_identity(command: ModuleCommand, uploads: dict[str, Upload | None], settings: dict[str, Any],
                 options: dict[str, Any], source: str = "settings") -> tuple[str, str]:
    """``(job key, config JSON)`` of a Run: the same inputs, config and options make the same job (raises QflowError)."""
    config_json = command.config_cls.from_mapping(dict(settings), source=source).model_dump_json()
    files = [part for input_name, upload in sorted(uploads.items()) for part in (input_name, *(upload or (None, None)))]
    return content_key(command.name, config_json, json.dumps(options, sort_keys=True), *files), config_json


def ended_job(state_key: str, cancel_key: str) -> Job | None:
    """The session's job at ``st.session_state[state_key]`` once it has ended; while it runs, its progress and Cancel."""
    job: Job | None = st.session_state.get(state_key)
    if job is not None and job.running:
        show_progress(job, cancel_key)
        return None
    return job


@st.fragment(run_every=1.0)
def show_progress(job: Job, cancel_key: str) -> None:
    """The running job's progress bar and Cancel button; reruns the whole page once the job has ended."""
    if not job.running:
        st.rerun()
    st.progress(job.fraction, text=f"{job.label}: {job.message} ({job.elapsed_s:.0f} s)")
    if job.cancel_requested:
        st.caption("Cancelling: the engine stops at its next step.")
    elif st.button("Cancel", key=cancel_key, icon=":material/cancel:",
                   help="Stop this run: the engine stops at its next step; nothing is stored."):
        job.cancel()
        st.rerun(scope="fragment")
