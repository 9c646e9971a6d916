"""Long work outside the script thread: a :class:`Job` with an id, progress, and a Cancel that stops it.

A Streamlit script run ends (and its thread is told to stop) whenever the
user clicks anything, also on another page. Work started with
:func:`start_job` runs in its own thread, so it keeps going; the job object
lives in ``st.session_state`` (see :func:`session_jobs`) so the page finds it
again after the click, shows its progress (poll it from an ``st.fragment``
with ``run_every``) and its result when done.

Cancel is cooperative: :meth:`Job.cancel` sets a flag, and the job's progress
callback raises :class:`JobCancelled` inside the worker at its next report,
so the work stops there (the engines report progress between stages, and a
batch of runs reports between runs). Nothing is killed half-way through a
database write.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Job", "JobCancelled", "JobState", "session_jobs", "start_job"]

JobState = Literal["running", "done", "failed", "cancelled"]

#: ``st.session_state`` key of the session's jobs, ``{job id: Job}``.
JOBS_KEY = "qflow_jobs"


class JobCancelled(BaseException):  # noqa: N818 -- a signal, not an error
    """Raised inside the worker by the progress callback once :meth:`Job.cancel` was called.

    A ``BaseException`` (like ``KeyboardInterrupt``), so an engine's
    ``except Exception`` around a step that may fall back does not swallow it.
    """


@dataclass
class Job:
    """One piece of work in a worker thread.

    Attributes
    ----------
    id : str
        Short unique id (what a page keeps in its session state).
    label : str
        What the job does, for the status line.
    fraction, message : float, str
        Last progress report (0..1).
    state : {"running", "done", "failed", "cancelled"}
    result : object
        The function's return value once ``state == "done"``.
    error : str or None
        ``"TypeName: message"`` once ``state == "failed"``.
    """

    label: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    fraction: float = 0.0
    message: str = "starting"
    state: JobState = "running"
    result: Any = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

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
        """Block until the worker ends (tests, scripts); returns whether it did."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running


def start_job(label: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
    """Run ``func(*args, **kwargs, _progress=job.report)`` in a daemon thread and return the job at once."""
    job = Job(label=label)

    def work() -> None:
        try:
            job.result = func(*args, **kwargs, _progress=job.report)
            job.fraction, job.message, job.state = 1.0, "done", "done"
        except JobCancelled:
            job.message, job.state = "cancelled", "cancelled"
        except Exception as exc:  # noqa: BLE001 -- reported on the page, never lost
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            job.finished_at = time.time()

    job._thread = threading.Thread(target=work, name=f"qflow-job-{job.id}", daemon=True)
    job._thread.start()
    return job


def session_jobs(state: MutableMapping[str, Any]) -> dict[str, Job]:
    """The session's ``{job id: Job}`` kept in ``state`` (``st.session_state``), created on first use."""
    jobs = state.get(JOBS_KEY)
    if jobs is None:
        jobs = {}
        state[JOBS_KEY] = jobs
    return jobs
