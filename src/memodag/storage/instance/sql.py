"""The instance storage on SQL: SQLite (one file, default) or PostgreSQL, one schema, one code path.

Writes are batched: a run's events and index entries are stored in one transaction per flush.
An index entry is written only after its data is stored, so a crash loses at most index entries
(the step re-runs), never points at missing data.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from memodag.errors import StorageError
from memodag.storage.instance.records import Event, EventType, RunRecord, RunStatus
from memodag.storage.io_manager import Address

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, job_name TEXT NOT NULL, status TEXT NOT NULL,
        tags TEXT NOT NULL, run_config TEXT NOT NULL, parent_run_id TEXT, root_run_id TEXT,
        step_selection TEXT, start_time DOUBLE PRECISION, end_time DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS runs_by_start ON runs (start_time)",
    """CREATE TABLE IF NOT EXISTS events (
        id {autoinc}, run_id TEXT NOT NULL, step_key TEXT, event_type TEXT NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, id)",
    """CREATE TABLE IF NOT EXISTS output_index (
        output_key TEXT NOT NULL, version TEXT NOT NULL, address TEXT NOT NULL,
        run_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, size_bytes BIGINT,
        PRIMARY KEY (output_key, version))""",
    "CREATE INDEX IF NOT EXISTS output_index_by_key ON output_index (output_key, created_at)",
]

_LOOKUP_CHUNK = 400


class SqlInstanceStorage:
    """Runs, events and the output index in SQL. Thread-safe (one connection, one lock)."""

    def __init__(self, connect: Any, dialect: str, url: str) -> None:
        self._connect = connect
        self.dialect = dialect
        self.url = url
        self._lock = threading.RLock()
        self._conn = connect()
        self._ph = "?" if dialect == "sqlite" else "%s"
        self._create_schema()

    # -- plumbing ---------------------------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._ph) if self._ph != "?" else statement

    def _create_schema(self) -> None:
        autoinc = (
            "INTEGER PRIMARY KEY AUTOINCREMENT"
            if self.dialect == "sqlite"
            else "BIGSERIAL PRIMARY KEY"
        )
        with self._lock:
            if self.dialect == "postgres":
                cur = self._conn.cursor()
                # one creator at a time: concurrent CREATE IF NOT EXISTS can race in Postgres
                cur.execute("SELECT pg_advisory_xact_lock(7716201)")
            else:
                cur = self._conn.cursor()
            for statement in _SCHEMA:
                cur.execute(statement.format(autoinc=autoinc))
            self._conn.commit()

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            for attempt in range(50):
                try:
                    cur = self._conn.cursor()
                    cur.execute(self._sql(statement), params)
                    rows = cur.fetchall() if cur.description else []
                    self._conn.commit()
                    return rows
                except sqlite3.OperationalError as exc:
                    self._conn.rollback()
                    if "locked" not in str(exc) or attempt == 49:
                        raise StorageError(f"instance database {self.url}: {exc}") from exc
                    time.sleep(0.05)
        raise AssertionError("unreachable")

    def _write_many(self, batches: Iterable[tuple[str, list[Sequence[Any]]]]) -> None:
        batches = [(s, rows) for s, rows in batches if rows]
        if not batches:
            return
        with self._lock:
            for attempt in range(50):
                try:
                    cur = self._conn.cursor()
                    if self.dialect == "sqlite":
                        cur.execute("BEGIN IMMEDIATE")
                    for statement, rows in batches:
                        cur.executemany(self._sql(statement), rows)
                    self._conn.commit()
                    return
                except sqlite3.OperationalError as exc:
                    self._conn.rollback()
                    if "locked" not in str(exc) or attempt == 49:
                        raise StorageError(f"instance database {self.url}: {exc}") from exc
                    time.sleep(0.05)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- runs -------------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> None:
        self._execute(
            "INSERT INTO runs (run_id, job_name, status, tags, run_config, parent_run_id, root_run_id, step_selection, start_time, end_time) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                run.run_id,
                run.job_name,
                run.status.value,
                json.dumps(dict(run.tags)),
                json.dumps(run.run_config, default=str),
                run.parent_run_id,
                run.root_run_id,
                json.dumps(run.step_selection) if run.step_selection is not None else None,
                run.start_time,
                run.end_time,
            ),
        )

    def update_run_status(self, run_id: str, status: RunStatus, end_time: float | None) -> None:
        self._execute(
            "UPDATE runs SET status = ?, end_time = ? WHERE run_id = ?",
            (status.value, end_time, run_id),
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            rows = self._execute(
                "SELECT * FROM runs WHERE run_id LIKE ? ORDER BY start_time DESC", (run_id + "%",)
            )
            if len(rows) != 1:
                return None
        return _run_from_row(rows[0])

    def get_runs(
        self, limit: int = 20, job_name: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        where, params = [], []
        if job_name:
            where.append("job_name = ?")
            params.append(job_name)
        if status:
            where.append("status = ?")
            params.append(status.value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._execute(
            f"SELECT * FROM runs {clause} ORDER BY start_time DESC LIMIT ?", (*params, limit)
        )
        return [_run_from_row(r) for r in rows]

    def delete_run(self, run_id: str) -> None:
        self._write_many(
            [
                ("DELETE FROM events WHERE run_id = ?", [(run_id,)]),
                ("DELETE FROM runs WHERE run_id = ?", [(run_id,)]),
            ]
        )

    # -- events and index -------------------------------------------------------------------

    def store(
        self,
        events: Sequence[Event],
        index_entries: Sequence[tuple[str, str, Address, float, int | None]],
    ) -> None:
        """Store events and (output_key, version, address, created_at, size) index rows at once."""
        event_rows = [
            (
                e.run_id,
                e.step_key,
                e.event_type.value,
                e.timestamp,
                e.message,
                json.dumps(e.data, default=str),
            )
            for e in events
        ]
        upsert = (
            "INSERT INTO output_index (output_key, version, address, run_id, created_at, size_bytes) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (output_key, version) DO UPDATE SET address = excluded.address, run_id = excluded.run_id, "
            "created_at = excluded.created_at, size_bytes = excluded.size_bytes"
        )
        index_rows = [
            (k, v, json.dumps(a.to_dict()), a.run_id, t, s) for k, v, a, t, s in index_entries
        ]
        self._write_many(
            [
                (
                    "INSERT INTO events (run_id, step_key, event_type, timestamp, message, data) VALUES (?,?,?,?,?,?)",
                    event_rows,
                ),
                (upsert, index_rows),
            ]
        )

    def get_events(
        self, run_id: str, event_types: Sequence[EventType] | None = None
    ) -> list[Event]:
        if event_types:
            marks = ",".join("?" * len(event_types))
            rows = self._execute(
                f"SELECT run_id, step_key, event_type, timestamp, message, data FROM events WHERE run_id = ? AND event_type IN ({marks}) ORDER BY id",
                (run_id, *[t.value for t in event_types]),
            )
        else:
            rows = self._execute(
                "SELECT run_id, step_key, event_type, timestamp, message, data FROM events WHERE run_id = ? ORDER BY id",
                (run_id,),
            )
        return [Event(EventType(r[2]), r[0], r[3], r[1], r[4], json.loads(r[5])) for r in rows]

    def lookup_outputs(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Address]:
        """One batched look-up of (output_key, version) pairs in the index (chunked for SQL limits)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], Address] = {}
        for i in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[i : i + _LOOKUP_CHUNK]
            cond = " OR ".join("(output_key = ? AND version = ?)" for _ in chunk)
            params = [x for pair in chunk for x in pair]
            for key, version, address in self._execute(
                f"SELECT output_key, version, address FROM output_index WHERE {cond}", params
            ):
                found[(key, version)] = Address.from_dict(json.loads(address))
        return found

    def latest_versions(self, output_keys: Iterable[str]) -> dict[str, tuple[str, float]]:
        """For each output key, its most recently stored version and when (for ``explain``)."""
        keys = list(dict.fromkeys(output_keys))
        result: dict[str, tuple[str, float]] = {}
        for i in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[i : i + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, version, created in self._execute(
                f"SELECT output_key, version, created_at FROM output_index WHERE output_key IN ({marks})",
                chunk,
            ):
                if key not in result or created > result[key][1]:
                    result[key] = (version, created)
        return result

    def index_entries(self) -> list[tuple[str, str, Address, float, int | None]]:
        rows = self._execute(
            "SELECT output_key, version, address, created_at, size_bytes FROM output_index"
        )
        return [(k, v, Address.from_dict(json.loads(a)), t, s) for k, v, a, t, s in rows]

    def delete_index_entries(self, keys: Iterable[tuple[str, str]]) -> None:
        self._write_many(
            [
                (
                    "DELETE FROM output_index WHERE output_key = ? AND version = ?",
                    [tuple(k) for k in keys],
                )
            ]
        )


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    run_id, job_name, status, tags, run_config, parent, root, selection, start, end = row
    return RunRecord(
        run_id=run_id,
        job_name=job_name,
        status=RunStatus(status),
        tags=json.loads(tags),
        run_config=json.loads(run_config),
        parent_run_id=parent,
        root_run_id=root,
        step_selection=json.loads(selection) if selection else None,
        start_time=start,
        end_time=end,
    )


def sqlite_storage(path: str) -> SqlInstanceStorage:
    """SQLite in WAL mode: readers never block the writer; several processes may share the file."""

    def connect() -> sqlite3.Connection:
        # autocommit; multi-statement writes issue BEGIN IMMEDIATE themselves
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return _AutocommitSqlite(conn)

    return SqlInstanceStorage(connect, "sqlite", path)


class _AutocommitSqlite:
    """sqlite3 in autocommit mode with explicit BEGIN; ``commit``/``rollback`` are no-ops outside one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def cursor(self) -> sqlite3.Cursor:
        return self._conn.cursor()

    def commit(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


def postgres_storage(url: str) -> SqlInstanceStorage:
    """PostgreSQL through psycopg 3 (``pip install memodag[postgres]``)."""
    try:
        import psycopg
    except ImportError as exc:
        raise StorageError(
            "a PostgreSQL instance needs psycopg: pip install 'memodag[postgres]'"
        ) from exc

    def connect() -> Any:
        try:
            return psycopg.connect(url)
        except psycopg.OperationalError as exc:
            raise StorageError(
                f"cannot connect to the PostgreSQL instance at {_redact(url)}: {exc}"
            ) from exc

    return SqlInstanceStorage(connect, "postgres", _redact(url))


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url
