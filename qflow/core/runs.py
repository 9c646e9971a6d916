"""The run store: every plan made in the app, by the CLI (``--save``) or by the API, kept in SQLite.

Where: ``$QFLOW_HOME/runs.db``, default ``~/.qflow/runs.db``. The database is
opened in WAL mode with ``synchronous=FULL`` and every write is one
transaction, so a process killed mid-write loses at most the run it was
writing, never a finished one. Two processes may write at once: each
connection waits up to :data:`BUSY_TIMEOUT_S` for the other's lock. The first
use of a new file (switching it to WAL, creating the tables) is retried while
another process holds the lock, so any number of first writers all succeed.

The schema is versioned in ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`).
A file that is not a SQLite database, a damaged one, or one written by a newer
qflow raises :class:`RunStoreError` (a :class:`~qflow.core.errors.QflowError`)
saying what is wrong and what to do; nothing is ever dropped or rewritten to
make it open.

One row per run: its id, a random ``uid`` (a UUID, never reused: what the
run's artifacts are filed under, so a replaced database cannot attach old
files to new runs), module, the plan's ``created_at``, when and from
where (``app``, ``cli``, ``api``) it was stored, the inputs' digests, the
config, metrics and timings (as JSON), ``solver.ran``, and the whole plan
JSON. A plan is stored once: saving the same plan again (a cached rerun in the
app) returns the existing run's id.

>>> import tempfile, pathlib
>>> store = RunStore(pathlib.Path(tempfile.mkdtemp()) / "runs.db")
>>> plan = {"module": "demo", "created_at": "2026-01-01T00:00:00+00:00", "inputs": [], "config": {"seed": 0},
...         "solver": {"requested": "classical", "ran": "classical"}, "metrics": {"cost": 1.5}, "timings_s": {}}
>>> run_id = store.save(plan, origin="cli")
>>> store.save(plan, origin="cli") == run_id, store.get(run_id).metrics
(True, {'cost': 1.5})
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from qflow.core.errors import QflowError

__all__ = [
    "BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "RunStore",
    "RunStoreError",
    "RunSummary",
    "StoredRun",
    "default_db_path",
    "qflow_home",
]

#: Version of the table layout, kept in ``PRAGMA user_version`` (2 added ``uid``).
SCHEMA_VERSION = 2
#: How long a writer waits for another process's lock, seconds.
BUSY_TIMEOUT_S = 30.0

Origin = Literal["app", "cli", "api", "test"]

_SCHEMA = """
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    module      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    stored_at   TEXT NOT NULL,
    origin      TEXT NOT NULL,
    solver_ran  TEXT NOT NULL,
    inputs      TEXT NOT NULL,
    config      TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    timings     TEXT NOT NULL,
    plan_sha256 TEXT NOT NULL UNIQUE,
    plan        TEXT NOT NULL,
    uid         TEXT
);
CREATE INDEX runs_by_module ON runs (module, id);
CREATE UNIQUE INDEX runs_by_uid ON runs (uid);
"""

#: Version 1 -> 2: a uid for every run (existing runs get fresh ones).
_MIGRATE_1_TO_2 = ("ALTER TABLE runs ADD COLUMN uid TEXT", "CREATE UNIQUE INDEX runs_by_uid ON runs (uid)")

#: Pause between tries of the first-use setup while another process holds the lock, seconds.
_SETUP_RETRY_S = 0.05

_SUMMARY_COLUMNS = "id, module, created_at, stored_at, origin, solver_ran, inputs, config, metrics, timings, uid"


class RunStoreError(QflowError):
    """The run database cannot be used as it is (damaged, newer schema, not a database, locked)."""


def qflow_home() -> Path:
    """``$QFLOW_HOME`` if set, else ``~/.qflow``."""
    home = os.environ.get("QFLOW_HOME")
    return Path(home).expanduser() if home else Path.home() / ".qflow"


def default_db_path() -> Path:
    """Where runs are kept: ``qflow_home() / "runs.db"``."""
    return qflow_home() / "runs.db"


@dataclass(frozen=True)
class RunSummary:
    """One stored run without its plan body (what ``GET /v1/runs`` lists)."""

    id: int
    module: str
    created_at: str  #: the plan's ``created_at`` (UTC ISO 8601)
    stored_at: str  #: when the store received it (UTC ISO 8601)
    origin: str  #: ``app``, ``cli``, ``api``
    solver_ran: str
    inputs: list[dict[str, Any]]  #: the plan's input digests (name, sha256, rows, shape, source)
    config: dict[str, Any]
    metrics: dict[str, Any]
    timings_s: dict[str, float]
    uid: str = ""  #: random UUID (hex) of this run, never reused; its artifacts' folder name

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "uid": self.uid, "module": self.module, "created_at": self.created_at,
            "stored_at": self.stored_at, "origin": self.origin, "solver_ran": self.solver_ran, "inputs": self.inputs,
            "config": self.config, "metrics": self.metrics, "timings_s": self.timings_s,
        }


@dataclass(frozen=True)
class StoredRun(RunSummary):
    """One stored run with its whole plan (``Plan.to_dict()`` form)."""

    plan: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "plan": self.plan}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _plan_dict(plan: Any) -> dict[str, Any]:
    """A :class:`~qflow.core.plan.Plan` or its dict form as a plain dict."""
    if hasattr(plan, "to_dict"):
        return plan.to_dict()
    if isinstance(plan, Mapping):
        return dict(plan)
    raise TypeError(f"RunStore.save: expected a Plan or a mapping, got {type(plan).__name__}")


class RunStore:
    """A SQLite file of runs; cheap to create, opens a connection per operation (safe across threads).

    Parameters
    ----------
    path : path, optional
        The database file; defaults to :func:`default_db_path` (read when the
        store is created, so ``QFLOW_HOME`` set later does not move it).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()

    # -- connection and schema -------------------------------------------------------------------

    def _error(self, problem: str, expected: str, received: object = None) -> RunStoreError:
        return RunStoreError(str(self.path), "(database)", problem, expected, received)

    @contextmanager
    def _connect(self, timeout_s: float = BUSY_TIMEOUT_S) -> Iterator[sqlite3.Connection]:
        """An autocommit connection with the schema checked (created on first use); waits ``timeout_s`` for locks."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("cannot create the folder", "a writable QFLOW_HOME", str(exc)) from None
        try:
            conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error("cannot open the run database", "a readable SQLite file", str(exc)) from None
        try:
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
                self._check_schema(conn, timeout_s)
                yield conn
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise self._error("database is locked by another process", f"it free within {timeout_s:g} s",
                                      str(exc)) from None
                raise self._damaged(exc) from None
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc) from None
        finally:
            conn.close()

    def _damaged(self, exc: sqlite3.Error) -> RunStoreError:
        return self._error("not a usable run database (damaged or not SQLite)",
                           "a qflow run database; move this file aside (keep it for recovery) and qflow starts a new one",
                           str(exc))

    def _check_schema(self, conn: sqlite3.Connection, timeout_s: float = BUSY_TIMEOUT_S) -> None:
        """Create or upgrade the schema on first use; retried while another process holds the lock.

        SQLite answers "database is locked" at once (without waiting out the
        busy timeout) when two connections both try to switch a new file to
        WAL or to upgrade a read lock, so first-time setup is retried until
        ``timeout_s`` has passed.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise self._error(f"written by a newer qflow (schema version {version})",
                                  f"schema version <= {SCHEMA_VERSION}: upgrade qflow or set QFLOW_HOME elsewhere", version)
            if version == SCHEMA_VERSION:
                return
            try:
                self._set_up(conn)
                return
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(_SETUP_RETRY_S)

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode, then (in one IMMEDIATE transaction) the tables of a new file or the upgrade of an old one."""
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise self._error("cannot switch to WAL mode", "a file system that supports SQLite WAL", mode)
        conn.execute("BEGIN IMMEDIATE")  # one process creates the schema; the others wait, then see it
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                if tables:
                    raise self._error("holds tables that are not qflow's", "a qflow run database or a new file",
                                      ", ".join(tables))
                # executescript would COMMIT the open transaction: run the statements one by one
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
            elif version == 1:
                for statement in _MIGRATE_1_TO_2:
                    conn.execute(statement)
                for (run_id,) in conn.execute("SELECT id FROM runs WHERE uid IS NULL").fetchall():
                    conn.execute("UPDATE runs SET uid = ? WHERE id = ?", (uuid.uuid4().hex, run_id))
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- writes ------------------------------------------------------------------------------------

    def save(self, plan: Any, origin: Origin | str = "app") -> int:
        """Store one plan (a :class:`~qflow.core.plan.Plan` or its dict); returns the run id.

        One transaction; the same plan saved twice keeps one row and returns
        its id.
        """
        data = _plan_dict(plan)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True, default=str)
        sha = hashlib.sha256(text.encode()).hexdigest()
        solver = data.get("solver") or {}
        row = (
            str(data.get("module", "")), str(data.get("created_at", "")), _now(), str(origin), str(solver.get("ran", "")),
            json.dumps(data.get("inputs") or [], default=str), json.dumps(data.get("config") or {}, default=str),
            json.dumps(data.get("metrics") or {}, default=str), json.dumps(data.get("timings_s") or {}, default=str),
            sha, text, uuid.uuid4().hex,
        )
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("SELECT id FROM runs WHERE plan_sha256 = ?", (sha,)).fetchone()
                if found is not None:
                    conn.execute("COMMIT")
                    return int(found[0])
                cursor = conn.execute(
                    "INSERT INTO runs (module, created_at, stored_at, origin, solver_ran, inputs, config, metrics, "
                    "timings, plan_sha256, plan, uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(cursor.lastrowid)

    # -- reads -------------------------------------------------------------------------------------

    @staticmethod
    def _summary(row: tuple[Any, ...]) -> dict[str, Any]:
        return {
            "id": row[0], "module": row[1], "created_at": row[2], "stored_at": row[3], "origin": row[4],
            "solver_ran": row[5], "inputs": json.loads(row[6]), "config": json.loads(row[7]),
            "metrics": json.loads(row[8]), "timings_s": json.loads(row[9]), "uid": row[10] or "",
        }

    def list(self, module: str | None = None, limit: int | None = None, offset: int = 0) -> list[RunSummary]:
        """Run summaries, newest first, optionally of one ``module`` only."""
        query = f"SELECT {_SUMMARY_COLUMNS} FROM runs"
        params: list[Any] = []
        if module is not None:
            query += " WHERE module = ?"
            params.append(module)
        query += " ORDER BY id DESC LIMIT ? OFFSET ?"
        params += [-1 if limit is None else int(limit), int(offset)]
        with self._connect() as conn:
            rows = conn.execute(query, params).fetchall()
        return [RunSummary(**self._summary(row)) for row in rows]

    def get(self, run_id: int) -> StoredRun:
        """One run with its plan; :class:`KeyError` if there is no such id."""
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_SUMMARY_COLUMNS}, plan FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return StoredRun(**self._summary(row), plan=json.loads(row[11]))

    def get_many(self, run_ids: list[int]) -> list[StoredRun]:
        """Several runs with their plans, in the order asked (unknown ids left out)."""
        found = []
        for run_id in run_ids:
            try:
                found.append(self.get(run_id))
            except KeyError:
                continue
        return found

    def modules(self) -> list[str]:
        """Modules with at least one stored run, sorted."""
        with self._connect() as conn:
            return [row[0] for row in conn.execute("SELECT DISTINCT module FROM runs ORDER BY module")]

    def count(self, module: str | None = None) -> int:
        """How many runs are stored (of ``module``, if given)."""
        with self._connect() as conn:
            if module is None:
                return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM runs WHERE module = ?", (module,)).fetchone()[0])

    def health_problem(self, timeout_s: float = 0.5) -> str | None:
        """``None`` when the store answers a read within ``timeout_s``, else what is wrong (never its path)."""
        try:
            with self._connect(timeout_s) as conn:
                conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        except RunStoreError as exc:
            return exc.problem
        return None

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` lines (``["ok"]`` when healthy)."""
        with self._connect() as conn:
            return [row[0] for row in conn.execute("PRAGMA integrity_check")]

    def backup(self, target: str | os.PathLike[str]) -> Path:
        """A consistent copy of the database at ``target`` (SQLite's online backup; safe while others write)."""
        target = Path(target)
        with self._connect() as conn:
            dest = sqlite3.connect(target)
            try:
                conn.backup(dest)
            finally:
                dest.close()
        return target
