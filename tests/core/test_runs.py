"""The run store: transactional writes that survive a killed writer, two writers at once, clear errors.

Every test uses its own database under ``tmp_path`` (and the session's
temporary QFLOW_HOME otherwise), never ``~/.qflow``.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from qflow.cli import main as cli_main
from qflow.core.errors import QflowError
from qflow.core.runs import SCHEMA_VERSION, RunStore, RunStoreError, default_db_path

ROOT = Path(__file__).resolve().parents[2]


def make_plan(module: str = "routing", seed: int = 0, payload: int = 0) -> dict[str, Any]:
    """A plan-shaped dict; ``payload`` adds that many result entries (a bigger write)."""
    return {
        "schema": "qflow.plan/v1", "module": module, "created_at": f"2026-01-01T00:00:{seed % 60:02d}+00:00",
        "inputs": [{"name": "tokens", "sha256": f"{seed:064x}", "rows": 10}],
        "config": {"seed": seed, "qaoa": seed % 2 == 0},
        "solver": {"requested": "classical", "ran": "classical", "fallbacks": []},
        "result": {"values": list(range(payload))},
        "metrics": {"load_imbalance": 1.0 + seed / 100, "dropped_tokens": seed},
        "timings_s": {"solve": 0.01 * seed},
    }


# A writer process: saves runs in a loop and prints each id once its transaction has committed.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[4])
    from qflow.core.runs import RunStore
    from tests.core.test_runs import make_plan
    store, tag, count = RunStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    start = Path(sys.argv[1] + ".go")
    while not start.exists():
        time.sleep(0.001)
    for i in range(count):
        run_id = store.save(make_plan(module=tag, seed=i, payload=int(sys.argv[5])), origin="test")
        print(run_id, flush=True)
""")


# A lighter writer for first-use races: imports only the run store, so four start within milliseconds.
FIRST_WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[3])
    from qflow.core.runs import RunStore
    db, tag = sys.argv[1], sys.argv[2]
    while not os.path.exists(db + ".go"):
        time.sleep(0.0005)
    store = RunStore(db)
    for i in range(3):
        plan = {"module": tag, "created_at": str(i), "inputs": [], "config": {"seed": i}, "solver": {"ran": "x"},
                "metrics": {}, "timings_s": {}}
        print(store.save(plan, origin="test"), flush=True)
""")


def start_writer(db: Path, tag: str, count: int, payload: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), tag, str(count), str(ROOT), str(payload)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


class TestRoundTrip:
    def test_save_list_get(self, tmp_path: Path) -> None:
        store = RunStore(tmp_path / "runs.db")
        ids = [store.save(make_plan("routing", 1)), store.save(make_plan("hpo", 2)), store.save(make_plan("routing", 3))]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert [r.id for r in store.list()] == ids[::-1]
        assert [r.id for r in store.list(module="routing")] == [ids[2], ids[0]]
        assert store.modules() == ["hpo", "routing"] and store.count() == 3 and store.count("hpo") == 1
        run = store.get(ids[1])
        assert run.plan == make_plan("hpo", 2)
        assert (run.module, run.solver_ran, run.config, run.metrics) == ("hpo", "classical", {"seed": 2, "qaoa": True},
                                                                          make_plan("hpo", 2)["metrics"])
        assert run.inputs[0]["sha256"] == f"{2:064x}" and run.timings_s == {"solve": 0.02}
        with pytest.raises(KeyError):
            store.get(10_000)

    def test_same_plan_is_stored_once(self, tmp_path: Path) -> None:
        store = RunStore(tmp_path / "runs.db")
        first = store.save(make_plan(seed=5))
        assert store.save(make_plan(seed=5)) == first and store.count() == 1
        assert store.save(make_plan(seed=6)) != first

    def test_wal_mode_and_schema_version(self, tmp_path: Path) -> None:
        store = RunStore(tmp_path / "runs.db")
        store.save(make_plan())
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    def test_default_path_follows_qflow_home(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("QFLOW_HOME", str(tmp_path / "home"))
        assert default_db_path() == tmp_path / "home" / "runs.db"
        assert RunStore().path == tmp_path / "home" / "runs.db"

    def test_backup_is_a_working_copy(self, tmp_path: Path) -> None:
        store = RunStore(tmp_path / "runs.db")
        ids = [store.save(make_plan(seed=i)) for i in range(3)]
        copy = RunStore(store.backup(tmp_path / "backup.db"))
        assert [r.id for r in copy.list()] == ids[::-1] and copy.integrity_check() == ["ok"]


class TestCrashAndConcurrency:
    def test_killed_writer_loses_no_finished_run(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        RunStore(db).count()  # schema in place before the writer starts
        writer = start_writer(db, "routing", count=100_000, payload=20_000)  # ~150 kB per plan
        (tmp_path / "runs.db.go").touch()
        finished: list[int] = []
        try:
            assert writer.stdout is not None
            while len(finished) < 15:
                line = writer.stdout.readline()
                assert line, "writer exited early"
                finished.append(int(line))
            time.sleep(0.05)  # let it get into the middle of the next write
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            # ids it printed after our last read are finished too
            finished += [int(line) for line in writer.stdout.read().split()]
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait(timeout=30)
        assert writer.returncode == -signal.SIGKILL
        store = RunStore(db)
        stored = {run.id for run in store.list()}
        assert set(finished) <= stored
        assert len(stored) - len(finished) <= 1  # at most the one commit it made before it could print
        assert store.integrity_check() == ["ok"]
        for run_id in finished:
            assert len(store.get(run_id).plan["result"]["values"]) == 20_000
        assert store.save(make_plan(seed=999)) > max(stored)  # and it takes new runs

    def test_two_processes_write_at_once(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        writers = {tag: start_writer(db, tag, count=40, payload=500) for tag in ("hpo", "routing")}
        (tmp_path / "runs.db.go").touch()  # both start together (and both create the schema if needed)
        printed = {}
        for tag, writer in writers.items():
            out, _ = writer.communicate(timeout=120)
            assert writer.returncode == 0
            printed[tag] = [int(x) for x in out.split()]
        store = RunStore(db)
        assert store.count() == 80 and store.count("hpo") == 40 and store.count("routing") == 40
        for tag, ids in printed.items():
            assert len(set(ids)) == 40
            assert sorted(r.id for r in store.list(module=tag)) == sorted(ids)
            assert {store.get(i).config["seed"] for i in ids} == set(range(40))
        assert store.integrity_check() == ["ok"]


    @pytest.mark.parametrize("round_", range(4))
    def test_four_first_writers_on_a_new_database_all_succeed(self, tmp_path: Path, round_: int) -> None:
        # Each round a fresh file: all four open it for the first time at once (WAL switch, schema creation).
        db = tmp_path / "runs.db"
        tags = [f"m{i}" for i in range(4)]
        writers = {tag: subprocess.Popen([sys.executable, "-c", FIRST_WRITER, str(db), tag, str(ROOT)],
                                         stdout=subprocess.PIPE, text=True, cwd=ROOT) for tag in tags}
        time.sleep(1.0)  # let all four reach their wait loop, so they start together
        (tmp_path / "runs.db.go").touch()
        for tag, writer in writers.items():
            out, _ = writer.communicate(timeout=120)
            assert writer.returncode == 0, (tag, out)
            assert len(out.split()) == 3
        store = RunStore(db)
        assert store.count() == 12 and all(store.count(tag) == 3 for tag in tags)
        assert store.integrity_check() == ["ok"]


    def test_first_use_waits_for_a_writer_holding_a_new_file(self, tmp_path: Path) -> None:
        # Another first writer is mid-setup (a RESERVED lock on the new file): SQLite answers the WAL switch
        # with "database is locked" at once, without its busy timeout; the set-up must retry, not fail.
        db = tmp_path / "runs.db"
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.5, lambda: other.execute("ROLLBACK"))
        release.start()
        try:
            run_id = RunStore(db).save(make_plan())
        finally:
            release.join()
            other.close()
        assert RunStore(db).get(run_id).module == "routing"


class TestRunUids:
    def test_every_run_has_a_fresh_uid(self, tmp_path: Path) -> None:
        store = RunStore(tmp_path / "runs.db")
        ids = [store.save(make_plan(seed=i)) for i in range(3)]
        uids = [store.get(i).uid for i in ids]
        assert len(set(uids)) == 3 and all(len(uid) == 32 and int(uid, 16) >= 0 for uid in uids)
        assert [run.uid for run in store.list()] == uids[::-1]
        assert store.get(ids[0]).to_dict()["uid"] == uids[0]
        assert store.save(make_plan(seed=0)) == ids[0] and store.get(ids[0]).uid == uids[0]  # same plan, same run

    def test_a_replaced_database_never_reuses_uids(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        first = RunStore(db)
        old = first.get(first.save(make_plan(seed=1)))
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        new = RunStore(db).get(RunStore(db).save(make_plan(seed=2)))
        assert new.id == old.id and new.uid != old.uid  # ids restart, uids do not

    def test_version_1_database_is_upgraded_with_uids(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        columns = ("module, created_at, stored_at, origin, solver_ran, inputs, config, metrics, timings, "
                   "plan_sha256, plan")
        with sqlite3.connect(db) as conn:
            conn.executescript(textwrap.dedent("""
                CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, module TEXT NOT NULL,
                    created_at TEXT NOT NULL, stored_at TEXT NOT NULL, origin TEXT NOT NULL,
                    solver_ran TEXT NOT NULL, inputs TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL,
                    timings TEXT NOT NULL, plan_sha256 TEXT NOT NULL UNIQUE, plan TEXT NOT NULL);
                CREATE INDEX runs_by_module ON runs (module, id);
                PRAGMA user_version = 1;
            """))
            for i in range(2):
                conn.execute(f"INSERT INTO runs ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             ("routing", "t", "t", "cli", "classical", "[]", "{}", "{}", "{}", f"sha{i}",
                              json.dumps(make_plan(seed=i))))
        store = RunStore(db)
        uids = [run.uid for run in store.list()]
        assert len(set(uids)) == 2 and all(len(uid) == 32 for uid in uids)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert store.get(store.save(make_plan(seed=5))).uid not in uids

    def test_health_problem_names_no_path(self, tmp_path: Path) -> None:
        assert RunStore(tmp_path / "runs.db").health_problem() is None
        broken = tmp_path / "broken.db"
        broken.write_bytes(b"garbage" * 1000)
        problem = RunStore(broken).health_problem()
        assert problem is not None and "not a usable run database" in problem and str(tmp_path) not in problem


class TestClearErrors:
    def test_not_a_database(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        db.write_bytes(b"this is not sqlite\n" * 200)
        before = db.read_bytes()
        with pytest.raises(RunStoreError, match="not a usable run database"):
            RunStore(db).list()
        with pytest.raises(QflowError, match="move this file aside"):
            RunStore(db).save(make_plan())
        assert db.read_bytes() == before  # never rewritten to make it open

    def test_damaged_database(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        store = RunStore(db)
        for i in range(30):
            store.save(make_plan(seed=i, payload=2000))
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = bytearray(db.read_bytes())
        for offset in range(4096, len(data), 4096):  # scribble over the start of every page but the first
            data[offset:offset + 64] = b"\xa5" * 64
        db.write_bytes(bytes(data))
        with pytest.raises(RunStoreError) as caught:
            store.list()
            [store.get(run.id) for run in store.list()]
        assert caught.value.source == str(db) and "damaged" in caught.value.message

    def test_newer_schema(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        RunStore(db).save(make_plan())
        with sqlite3.connect(db) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(RunStoreError, match=rf"newer qflow \(schema version {SCHEMA_VERSION + 1}\)"):
            RunStore(db).list()
        with pytest.raises(RunStoreError, match="upgrade qflow"):
            RunStore(db).save(make_plan(seed=1))
        with sqlite3.connect(db) as conn:  # the runs are still there for a newer qflow
            assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1

    def test_someone_elses_database(self, tmp_path: Path) -> None:
        db = tmp_path / "runs.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER)")
        with pytest.raises(RunStoreError, match="not qflow's"):
            RunStore(db).save(make_plan())

    def test_unusable_locations(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("x")
        with pytest.raises(RunStoreError, match="cannot create the folder; expected a writable QFLOW_HOME"):
            RunStore(tmp_path / "file" / "home" / "runs.db").save(make_plan())
        (tmp_path / "runs.db").mkdir()
        with pytest.raises(RunStoreError, match="cannot open the run database"):
            RunStore(tmp_path / "runs.db").list()

    def test_cli_reports_a_damaged_store_in_one_line(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
        (tmp_path / "runs.db").write_bytes(b"garbage" * 1000)
        space = ROOT / "sample_data" / "hpo" / "space.yaml"
        assert cli_main(["hpo", "--space", str(space), "--no-baselines", "--save"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'runs.db'}: (database): not a usable run database")


def test_cli_save_stores_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
    space, history = ROOT / "sample_data" / "hpo" / "space.yaml", ROOT / "sample_data" / "hpo" / "history.csv"
    out = tmp_path / "plan.json"
    assert cli_main(["hpo", "--space", str(space), "--history", str(history), "--out", str(out), "--save"]) == 0
    assert "saved as run 1" in capsys.readouterr().out
    run = RunStore(tmp_path / "runs.db").get(1)
    assert run.origin == "cli" and run.plan == json.loads(out.read_text())
    assert cli_main(["hpo", "--space", str(space), "--no-baselines"]) == 0  # no --save: nothing stored
    assert RunStore(tmp_path / "runs.db").count() == 1
