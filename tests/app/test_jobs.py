"""The job board: jobs in a worker pool, attach by key, reuse of a finished result, Cancel, the progress fragment."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from ui.jobs import KEEP_FINISHED, JobBoard, JobCancelled, content_key


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


@pytest.fixture
def board() -> JobBoard:
    return JobBoard(workers=2)


class TestJobs:
    def test_done_job_has_its_result(self, board: JobBoard) -> None:
        job = board.submit("a", "demo", counting_work, 3, [])
        assert job.wait(timeout=10)
        assert (job.state, job.result, job.fraction, job.error) == ("done", 3, 1.0, None)
        assert len(job.id) == 12 and job.finished_at is not None

    def test_cancel_stops_at_the_next_report(self, board: JobBoard) -> None:
        reached: list[int] = []
        job = board.submit("a", "demo", counting_work, 10_000, reached)
        wait_until(lambda: len(reached) >= 3)
        job.cancel()
        assert job.wait(timeout=10) and job.state == "cancelled"
        stopped_at = len(reached)
        time.sleep(0.1)
        assert len(reached) == stopped_at < 10_000  # really stopped, not running on in the background
        with pytest.raises(JobCancelled):
            job.report(0.5, "after cancel")

    def test_cancel_is_not_swallowed_by_except_exception(self, board: JobBoard) -> None:
        reached: list[int] = []
        job = board.submit("a", "demo", swallowing_work, reached)
        wait_until(lambda: len(reached) >= 2)
        job.cancel()
        assert job.wait(timeout=10) and job.state == "cancelled" and job.result is None

    def test_failure_is_reported_not_lost(self, board: JobBoard) -> None:
        def broken(_progress: Any) -> None:
            raise KeyError("boom")

        job = board.submit("a", "demo", broken)
        assert job.wait(timeout=10) and job.state == "failed" and job.error == "KeyError: 'boom'"


class TestBoard:
    def test_same_key_attaches_to_the_running_job_and_then_reuses_its_result(self, board: JobBoard) -> None:
        calls: list[bytes] = []
        release = threading.Event()

        def work(data: bytes, _progress: Any) -> str:
            calls.append(data)
            _progress(0.1, "started")
            release.wait(timeout=10)
            return data.decode()

        first = board.submit(content_key(b"tokens", "{}"), "demo", work, b"tokens")
        wait_until(lambda: calls)
        second = board.submit(content_key(b"tokens", "{}"), "demo", work, b"tokens")
        assert second is first and second.running
        other = board.submit(content_key(b"other", "{}"), "demo", work, b"other")
        assert other is not first
        release.set()
        assert first.wait(10) and other.wait(10) and first.result == "tokens" and other.result == "other"
        assert board.submit(content_key(b"tokens", "{}"), "demo", work, b"tokens") is first  # finished: reused
        assert sorted(calls) == [b"other", b"tokens"]  # each computed once

    def test_a_cancelled_or_failed_job_is_run_again(self, board: JobBoard) -> None:
        reached: list[int] = []
        first = board.submit("k", "demo", counting_work, 10_000, reached)
        first.cancel()
        assert first.wait(10) and first.state == "cancelled"
        second = board.submit("k", "demo", counting_work, 2, [])
        assert second is not first and second.wait(10) and second.result == 2

    def test_only_the_newest_finished_jobs_are_kept(self, board: JobBoard) -> None:
        jobs = [board.submit(f"k{i}", "demo", counting_work, 1, []) for i in range(KEEP_FINISHED + 3)]
        for job in jobs:
            job.wait(10)
        board.submit("last", "demo", counting_work, 1, []).wait(10)
        assert board.get("k0") is None and board.get(f"k{KEEP_FINISHED + 2}") is jobs[-1]

    def test_run_here_runs_in_the_caller_shares_keys_with_submit_and_passes_a_cancel_on(self, board: JobBoard) -> None:
        seen: list[str] = []
        here = board.run_here("k", "demo", lambda f, m: seen.append(m), counting_work, 2, [])
        assert here.state == "done" and here.result == 2 and seen == ["step 0", "step 1"]
        assert board.submit("k", "demo", counting_work, 99, []) is here  # a page's Run attaches to it
        pooled = board.submit("p", "demo", counting_work, 3, [])
        assert board.run_here("p", "demo", lambda f, m: None, counting_work, 99, []) is pooled and pooled.result == 3

        def stop(fraction: float, message: str) -> None:
            if message == "step 3":
                raise JobCancelled(message)

        reached: list[int] = []
        cancelled = board.run_here("c", "demo", stop, counting_work, 10, reached)
        assert cancelled.state == "cancelled" and reached == [0, 1, 2]


def _page_with_a_slow_job() -> None:
    import time

    import streamlit as st

    from ui.jobs import JobBoard, show_progress

    def work(_progress) -> str:  # noqa: ANN001 -- the script is run from its source text alone
        for i in range(1000):
            _progress(i / 1000, f"step {i}")
            time.sleep(0.01)
        return "done"

    if "job" not in st.session_state:
        st.session_state["job"] = JobBoard(1).submit("slow", "slow work", work)
    if st.session_state["job"].running:
        show_progress(st.session_state["job"], "cancel")
    else:
        st.write(f"ended: {st.session_state['job'].state}")


class TestProgressFragment:
    def test_progress_and_cancel_while_running_then_the_page_sees_the_end(self) -> None:
        at = AppTest.from_function(_page_with_a_slow_job)
        at.run()
        assert not at.exception
        assert at.get("progress")[0].proto.text.startswith("slow work: ")
        at.button(key="cancel").click().run()
        job = at.session_state["job"]
        assert job.cancel_requested and job.wait(10) and job.state == "cancelled"
        at.run()
        assert not at.get("progress") and at.markdown[0].value == "ended: cancelled"
