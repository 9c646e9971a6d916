"""Long work: jobs in worker threads with Cancel, and call_with_progress when the script is interrupted."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ui.jobs import JobCancelled, session_jobs, start_job
from ui.run import call_with_progress


def counting_work(steps: int, reached: list[int], _progress: Any, pause_s: float = 0.02) -> int:
    """Reports before each step; records the steps it did."""
    for i in range(steps):
        _progress(i / steps, f"step {i}")
        reached.append(i)
        time.sleep(pause_s)
    return steps


def swallowing_work(reached: list[int], _progress: Any) -> str:
    """An engine that falls back on any Exception: Cancel must still stop it."""
    for i in range(10_000):
        try:
            _progress(i / 10_000, "quantum step")
        except Exception:  # noqa: BLE001 -- the behaviour under test
            return "fell back"
        reached.append(i)
        time.sleep(0.01)
    return "finished"


def wait_until(condition: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class TestJobs:
    def test_done_job_has_its_result(self) -> None:
        job = start_job("demo", counting_work, 3, [])
        assert job.wait(timeout=10)
        assert (job.state, job.result, job.fraction, job.error) == ("done", 3, 1.0, None)
        assert len(job.id) == 12 and job.finished_at is not None

    def test_cancel_stops_at_the_next_report(self) -> None:
        reached: list[int] = []
        job = start_job("demo", counting_work, 10_000, reached)
        wait_until(lambda: len(reached) >= 3)
        job.cancel()
        assert job.wait(timeout=10) and job.state == "cancelled"
        stopped_at = len(reached)
        time.sleep(0.1)
        assert len(reached) == stopped_at < 10_000  # really stopped, not running on in the background
        with pytest.raises(JobCancelled):
            job.report(0.5, "after cancel")

    def test_cancel_is_not_swallowed_by_except_exception(self) -> None:
        reached: list[int] = []
        job = start_job("demo", swallowing_work, reached)
        wait_until(lambda: len(reached) >= 2)
        job.cancel()
        assert job.wait(timeout=10) and job.state == "cancelled" and job.result is None

    def test_failure_is_reported_not_lost(self) -> None:
        def broken(_progress: Any) -> None:
            raise KeyError("boom")

        job = start_job("demo", broken)
        assert job.wait(timeout=10) and job.state == "failed" and job.error == "KeyError: 'boom'"

    def test_jobs_live_in_the_session_state(self) -> None:
        state: dict[str, Any] = {}
        jobs = session_jobs(state)
        job = start_job("demo", counting_work, 1, [])
        jobs[job.id] = job
        assert session_jobs(state)[job.id] is job
        job.wait(timeout=10)


class TestCallWithProgress:
    def test_cancel_event_stops_the_worker_and_is_raised_here(self) -> None:
        reached: list[int] = []
        cancel = threading.Event()

        def on_progress(fraction: float, message: str) -> None:
            if len(reached) >= 3:
                cancel.set()

        with pytest.raises(JobCancelled):
            call_with_progress(counting_work, 10_000, reached, on_progress=on_progress, cancel=cancel)
        stopped_at = len(reached)
        time.sleep(0.1)
        assert len(reached) == stopped_at < 10_000

    def test_interrupted_script_returns_at_once_and_the_worker_finishes(self) -> None:
        """A click elsewhere raises in the script thread: no waiting for the engine, whose work still completes."""
        reached: list[int] = []

        class Rerun(Exception):
            pass

        def on_progress(fraction: float, message: str) -> None:
            raise Rerun

        with pytest.raises(Rerun):
            call_with_progress(counting_work, 40, reached, on_progress=on_progress)
        assert len(reached) < 40  # returned while the worker was still going (40 steps take >= 0.8 s)
        wait_until(lambda: len(reached) == 40)

    def test_a_second_call_attaches_to_the_running_worker(self) -> None:
        """Run, click elsewhere, Run again while it works: one computation, both callers get its result."""
        calls: list[bytes] = []
        release = threading.Event()

        def work(data: bytes, config_json: str, _progress: Any) -> str:
            calls.append(data)
            _progress(0.1, "started")
            release.wait(timeout=10)
            _progress(0.9, "finishing")
            return config_json + ":" + data.decode()

        class Rerun(Exception):
            pass

        def interrupted(fraction: float, message: str) -> None:
            raise Rerun

        with pytest.raises(Rerun):  # the first script run is interrupted at its first report
            call_with_progress(work, b"tokens", "{}", on_progress=interrupted)
        seen: list[tuple[float, str]] = []
        results: list[str] = []
        second = threading.Thread(target=lambda: results.append(
            call_with_progress(work, b"tokens", "{}", on_progress=lambda f, m: seen.append((f, m)))))
        second.start()
        wait_until(lambda: seen)
        release.set()
        second.join(timeout=10)
        assert results == ["{}:tokens"] and calls == [b"tokens"]  # computed once
        assert seen == [(0.1, "started"), (0.9, "finishing")]
        # Another input is another job.
        assert call_with_progress(work, b"other", "{}", on_progress=lambda f, m: None) == "{}:other"
        assert calls == [b"tokens", b"other"]

    def test_streamlit_stop_cancels_the_worker_but_a_rerun_does_not(self) -> None:
        from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

        for control, stops in ((StopException(), True), (RerunException(None), False)):
            reached: list[int] = []

            def interrupted(fraction: float, message: str, control: BaseException = control,
                            reached: list[int] = reached) -> None:
                if len(reached) >= 2:
                    raise control

            with pytest.raises(type(control)):
                call_with_progress(counting_work, 60, reached, on_progress=interrupted)
            time.sleep(0.3)
            if stops:
                stopped_at = len(reached)
                time.sleep(0.2)
                assert len(reached) == stopped_at < 60  # the Stop button really stops the engine
            else:
                wait_until(lambda reached=reached: len(reached) == 60)  # a click elsewhere lets it finish


def _script_with_a_quick_run() -> None:
    import streamlit as st

    from ui.run import call_with_progress

    def work(x: int, _progress: object) -> int:
        _progress(0.5, "half")  # type: ignore[operator]
        return x + 1

    with st.status("Running"):
        bar = st.progress(0.0)
        st.session_state["result"] = call_with_progress(work, 1, on_progress=lambda f, m: bar.progress(f, text=m))


class TestCancelButton:
    def test_shown_while_running_and_gone_when_done(self) -> None:
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_function(_script_with_a_quick_run)
        at.run()
        assert not at.exception and at.session_state["result"] == 2
        assert [b.label for b in at.button] == []  # the Cancel placeholder is emptied once the run ends

    def test_its_callback_cancels_the_worker(self) -> None:
        from ui.run import _cancel_flight, _flight_for

        reached: list[int] = []
        flight, attached = _flight_for(counting_work, (10_000, reached))
        assert not attached
        wait_until(lambda: len(reached) >= 2)
        _cancel_flight(flight)
        with pytest.raises(JobCancelled):
            flight.future.result(timeout=10)
        assert len(reached) < 10_000

    def test_a_new_run_never_attaches_to_a_cancelled_worker(self) -> None:
        from ui.run import _cancel_flight, _flight_for

        release = threading.Event()

        def work(data: bytes, _progress: Any) -> bytes:
            _progress(0.1, "started")
            release.wait(timeout=10)
            _progress(0.9, "finishing")
            return data

        first, _ = _flight_for(work, (b"x",))
        _cancel_flight(first)
        second, attached = _flight_for(work, (b"x",))
        assert not attached and second is not first
        release.set()
        assert second.future.result(timeout=10) == b"x"
        with pytest.raises(JobCancelled):
            first.future.result(timeout=10)
