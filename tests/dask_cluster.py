"""A real Dask cluster for tests: ``dask scheduler`` and worker processes on 127.0.0.1.

Use the ``dask_cluster`` fixture (registered in ``tests/conftest.py``). Each
worker runs without a nanny, so :meth:`LocalDaskCluster.kill_worker` ends it
for good, as a crashed machine would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_BIN = Path(sys.executable).parent
_ROOT = Path(__file__).resolve().parent.parent


def _dask_command(*args: str) -> list[str]:
    exe = _BIN / "dask"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "dask", *args]


@dataclass
class LocalDaskCluster:
    """A scheduler and its workers, each its own process."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` (no clean shutdown: its tasks are lost to it)."""
        self.workers[index].send_signal(signal.SIGKILL)
        self.workers[index].wait(10)

    def worker_address(self, index: int, timeout_s: float = 10.0) -> str:
        """The scheduler's address for worker process ``index`` (matched by process id)."""
        from distributed import Client

        with Client(self.address, timeout="10s", set_as_default=False) as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for address, pid in client.run(os.getpid).items():
                    if pid == self.workers[index].pid:
                        return address
                time.sleep(0.1)
        raise RuntimeError(f"worker {index} is not known to the scheduler")

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        if path.exists() and path.stat().st_size:
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass
        time.sleep(0.1)
    raise RuntimeError("dask scheduler did not start")


def start_cluster(tmp: Path, n_workers: int = 2, timeout_s: float = 60.0) -> LocalDaskCluster:
    """Start a scheduler on a free loopback port and ``n_workers`` single-threaded workers; wait until all joined."""
    from distributed import Client

    # Workers import the engine from this checkout (and tasks' functions from tests/), not from
    # wherever the package was installed in editable mode.
    path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "OMP_NUM_THREADS": "1"}
    sched_file = tmp / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen(_dask_command("scheduler", "--host", "127.0.0.1", "--port", "0",
                                               "--dashboard-address", ":0", "--no-show",
                                               "--scheduler-file", str(sched_file)), **quiet)
    cluster = LocalDaskCluster(_wait_for(sched_file, scheduler, timeout_s)["address"], scheduler)
    for _ in range(n_workers):
        cluster.workers.append(subprocess.Popen(_dask_command(
            "worker", cluster.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
            "--no-dashboard", "--local-directory", str(tmp / "workers")), **quiet))
    with Client(cluster.address, timeout="30s", set_as_default=False) as client:
        client.wait_for_workers(n_workers, timeout=timeout_s)
    return cluster
