"""The instance storage on SQL: SQLite (one file, default) or PostgreSQL, one schema, one code path.

Writes are batched: a run's events and index entries are stored in one transaction per flush.
An index entry is written only after its data is stored, so a crash loses at most index entries
(the step re-runs), never points at missing data.

A run's events are stored packed: the events of one commit (an executed step's outcome with the
memoized steps buffered before it, or a burst of memoized steps) go in one row of ``events``, its
``data`` the list of them with the names every step repeats, its run id and step key each
written as one character, or compressed when large (``compact.py``);
``get_events`` unpacks them, so the instance grows by one row per commit, not one per event.
Rows written one event each by earlier versions read as before.

Every statement goes through ``_run``, which owns the connection's transaction state: whatever
fails, the transaction is rolled back so the connection stays usable; transient conflicts
(SQLite busy/locked, Postgres serialization failures and deadlocks) are retried; a Postgres
connection that broke before its transaction committed is reopened and the transaction redone;
every other driver error becomes a ``StorageError`` naming the database (never its password).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from memodag.definitions.secrets import redact_url
from memodag.errors import StorageError
from memodag.storage.instance.base import InstanceStorage
from memodag.storage.instance.compact import (
    compact,
    decode_addresses,
    encode_address,
    expand,
    pack,
    unpack,
)
from memodag.storage.instance.records import Event, EventType, IndexEntry, RunRecord, RunStatus
from memodag.storage.instance.schema import ensure_schema
from memodag.storage.instance.sql_coordination import PinsAndLeases
from memodag.storage.jsonenc import encode as _encode
from memodag.storage.jsonenc import encode_compact as _encode_compact

T = TypeVar("T")


def storable(text: str) -> str:
    """``text`` as every backend stores it: PostgreSQL refuses a NUL character in text (and
    would lose the whole batch of events with it), so NUL is written as the four characters
    ``\\x00``; a lone surrogate (a file name Python decoded with ``surrogateescape``) cannot be
    encoded as UTF-8 at all, so it is written as its escape (``\\udce9``). Everything else is
    kept as it is (JSON data escapes both itself)."""
    text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_RUN_COLUMNS = (
    "run_id, job_name, status, tags, run_config, parent_run_id, root_run_id, step_selection, "
    "start_time, end_time, heartbeat"
)

# SQLite before 3.32 allows 999 parameters per statement; keys per look-up stay well below
_LOOKUP_CHUNK = 400

# Retries of transient conflicts; the waits grow from _RETRY_DELAY to _RETRY_MAX_DELAY seconds.
# SQLite's own busy timeout already waits for a lock, so these cover what it does not (a WAL
# snapshot gone stale, a Postgres deadlock victim).
_RETRIES = 50
_RETRY_DELAY = 0.005
_RETRY_MAX_DELAY = 0.25

Batch = tuple[str, Sequence[Sequence[Any]]]


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL backends; everything else is shared."""

    name: str
    placeholder: str
    autoinc: str
    #: run at the start of a write transaction (SQLite takes the write lock up front)
    begin_write: str | None
    #: the driver's base exception classes: these become StorageError
    driver_errors: tuple[type[BaseException], ...]
    #: whether an error is a conflict that the same transaction may win when run again
    is_transient: Callable[[BaseException], bool]
    #: a query of one row whose first column says whether the table named by its parameter exists
    table_exists: str
    #: serializes schema upgrades where the write transaction does not (SQLite's does)
    schema_lock: str | None = None
    #: taken by a transaction that pins (shared) and by gc's deleting one (exclusive), where
    #: write transactions do not already exclude each other (SQLite's do)
    pin_lock: str | None = None
    collect_lock: str | None = None
    #: the clause that stores a table in its primary key's B-tree, where the database has one
    #: (SQLite: a table of small rows keyed by its whole content takes half the space)
    without_rowid: str = ""


class SqlInstanceStorage(PinsAndLeases, InstanceStorage):
    """Runs, events and the output index in SQL. Thread-safe (one connection, one lock).

    ``url`` is for messages (password removed); ``connection_url`` reconnects (worker processes).
    Opening it creates or upgrades the schema (``schema.py``).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        dialect: Dialect,
        url: str,
        connection_url: str | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self._connect = connect
        self.dialect = dialect
        self._url = url
        self._connection_url = connection_url or url
        self._secrets = [s for s in secrets if s]
        self._lock = threading.RLock()
        self._conn: Any = None
        self._closed = False
        #: the INSERT of n rows, by (its head, n): built once each
        self._statements: dict[tuple[str, int], str] = {}
        #: the ``prefixes`` table as far as this process has met it, both ways (rows are never
        #: changed or deleted: a cached id stays right)
        self._prefix_ids: dict[str, int] = {}
        self._prefix_texts: dict[int, str] = {}
        #: raises if the database was deleted or replaced under the open connection (SQLite: a
        #: connection keeps writing to a deleted file, and every write would seem to succeed)
        self.check_present: Callable[[], None] | None = None
        ensure_schema(self._run, dialect, url)

    @property
    def url(self) -> str:
        return self._url

    @property
    def connection_url(self) -> str:
        return self._connection_url

    # -- plumbing ---------------------------------------------------------------------------

    def _sql(self, statement: str) -> str:
        ph = self.dialect.placeholder
        return statement.replace("?", ph) if ph != "?" else statement

    def _connection(self) -> Any:
        conn = self._conn
        if conn is not None and not (getattr(conn, "broken", False) or conn.closed):
            return conn
        if self._closed:
            raise StorageError(f"instance database {self.url} is closed")
        if conn is not None:
            # a dead connection (server restart, network): drop it and open another
            self._conn = None
            try:
                conn.close()
            except Exception:
                pass
        self._conn = self._connect()
        return self._conn

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:
            # the connection is unusable; _connection() replaces it next time
            try:
                conn.close()
            except Exception:
                pass
            self._conn = None

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _run(self, work: Callable[[Any], T], write: bool) -> T:
        """Run ``work(cursor)`` in one transaction, committed on success, rolled back otherwise."""
        with self._lock:
            delay = _RETRY_DELAY
            for attempt in range(_RETRIES + 1):
                committing = connected = False
                try:
                    cur = self._connection().cursor()
                    connected = True
                    if write and self.dialect.begin_write:
                        cur.execute(self.dialect.begin_write)
                    result = work(cur)
                    committing = True
                    self._conn.commit()
                    return result
                except BaseException as exc:
                    self._rollback()
                    if not isinstance(exc, self.dialect.driver_errors):
                        raise
                    lost = connected and (
                        self._conn is None or getattr(self._conn, "broken", False)
                    )
                    if lost and committing:
                        raise StorageError(
                            f"instance database {self.url}: the connection was lost while "
                            f"committing; the write may or may not have been stored: "
                            f"{type(exc).__name__}: {self._redact(str(exc))}"
                        ) from exc
                    retry = self.dialect.is_transient(exc) or (lost and not self._closed)
                    if not retry or attempt == _RETRIES:
                        raise StorageError(
                            f"instance database {self.url}: {type(exc).__name__}: "
                            f"{self._redact(str(exc)).strip()}"
                        ) from exc
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_DELAY)
        raise AssertionError("unreachable")

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """One read; returns its rows."""
        sql = self._sql(statement)

        def work(cur: Any) -> list[Any]:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

        return self._run(work, write=False)

    def _write_many(self, batches: Iterable[Batch]) -> None:
        """Every statement of every batch in one write transaction (nothing if all are empty)."""
        todo = [(self._sql(s), rows) for s, rows in batches if rows]
        if not todo:
            return

        def work(cur: Any) -> None:
            for statement, rows in todo:
                if len(rows) == 1:
                    cur.execute(statement, rows[0])
                else:
                    cur.executemany(statement, rows)

        self._run(work, write=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    # -- runs -------------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> None:
        row = (
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
            run.heartbeat,
        )
        self._write_many(
            [(f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", [row])]
        )

    def update_run_status(self, run_id: str, status: RunStatus, end_time: float | None) -> None:
        self._write_many(
            [
                (
                    "UPDATE runs SET status = ?, end_time = ? WHERE run_id = ?",
                    [(status.value, end_time, run_id)],
                )
            ]
        )

    def record_heartbeat(self, run_id: str, when: float) -> None:
        self._write_many(
            [
                (
                    "UPDATE runs SET heartbeat = ? WHERE run_id = ? AND status = ?",
                    [(when, run_id, RunStatus.STARTED.value)],
                )
            ]
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, else the only run whose id starts with it (None if 0 or >1)."""
        if not run_id:
            return None
        rows = self._execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            # substr, not LIKE: LIKE is case-insensitive in SQLite and treats '_' as a wildcard
            rows = self._execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE substr(run_id, 1, CAST(? AS INTEGER)) = ? "
                "LIMIT 2",
                (len(run_id), run_id),
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
            f"SELECT {_RUN_COLUMNS} FROM runs {clause} ORDER BY start_time DESC LIMIT ?",
            (*params, limit),
        )
        return [_run_from_row(r) for r in rows]

    # -- events and index -------------------------------------------------------------------

    def store_events(self, events: Sequence[Event], index_entries: Sequence[IndexEntry]) -> None:
        work = self._storing(events, index_entries)
        if work is not None:
            self._run(work, write=True)

    def _storing(
        self, events: Sequence[Event], index_entries: Sequence[IndexEntry]
    ) -> Callable[[Any], None] | None:
        """The work of storing ``events`` and ``index_entries`` in a transaction (None: nothing
        to store), after checking the database is still there (one stat per commit)."""
        # called once per executed step (each commits as it ends): statements are built once,
        # values encoded by a reused encoder (or already encoded by the attempt), nothing is
        # sorted for one row, and a run's events of one call are one packed row
        event_rows = self._event_rows(events)
        index_rows = [
            (
                e.output_key,
                e.version,
                encode_address(e.address, e.version, self._prefix_id),
                e.created_at,
                e.size_bytes,
                _encode_compact(e.recipe) if e.recipe is not None else None,
                e.version_scheme,
                e.address.run_id,
            )
            for e in index_entries
        ]
        if not event_rows and not index_rows:
            return None
        if len(index_rows) > 1:
            # rows in key order: two writers upserting overlapping keys then lock them in the
            # same order, so Postgres never has to pick a deadlock victim
            index_rows.sort()
        insert = self._insert_rows

        def work(cur: Any) -> None:
            insert(cur, _INSERT_EVENTS_HEAD, "", event_rows)
            insert(cur, _UPSERT_INDEX_HEAD, _UPSERT_INDEX_TAIL, index_rows)

        if self.check_present is not None:
            self.check_present()
        return work

    def _insert_rows(self, cur: Any, head: str, tail: str, rows: list[tuple[Any, ...]]) -> None:
        """``head VALUES (...) tail`` for each row, in order (event ids follow it). SQLite: up
        to ``_ROWS_PER_INSERT`` rows per statement, several times cheaper per row than one
        execution each. PostgreSQL keeps ``executemany`` (psycopg pipelines it): ids certainly
        follow the rows' order, and an upsert never meets its own key twice in one statement."""
        if not rows:
            return
        width = len(rows[0])
        if self.dialect.name != "sqlite" or len(rows) == 1:
            sql = self._statements.get((head, 1))
            if sql is None:
                sql = self._statements[(head, 1)] = self._sql(f"{head}{_marks(width, 1)}{tail}")
            if len(rows) == 1:
                cur.execute(sql, rows[0])
            else:
                cur.executemany(sql, rows)
            return
        per = _PARAMETERS_PER_INSERT // width
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            sql = self._statements.get((head, len(chunk)))
            if sql is None:
                sql = f"{head}{_marks(width, len(chunk))}{tail}"
                self._statements[(head, len(chunk))] = sql
            cur.execute(sql, [value for row in chunk for value in row])

    def _event_rows(self, events: Sequence[Event]) -> list[tuple[Any, ...]]:
        """The rows of ``events``: one per run they belong to (consecutive events of the same run
        share a row), a lone event as a plain row."""
        rows: list[tuple[Any, ...]] = []
        start, count = 0, len(events)
        while start < count:
            run_id = events[start].run_id
            end = start + 1
            while end < count and events[end].run_id == run_id:
                end += 1
            if end - start == 1:
                e = events[start]
                data = _encode(e.data) if e.encoded is None else e.encoded
                message = e.message
                if "\x00" in message or not message.isascii():
                    message = storable(message)
                rows.append(
                    (run_id, e.step_key, _TYPE_VALUES[e.event_type], e.timestamp, message, data)
                )
            else:
                rows.append(self._packed_row(events[start:end]))
            start = end
        return rows

    def _packed_row(self, events: Sequence[Event]) -> tuple[Any, ...]:
        first = events[0]
        step_key = first.step_key
        for e in events:
            if e.step_key != step_key:
                step_key = None  # several steps (a memoized burst): the row names none
                break
        # an executed step's few events: packed compact, as they are stored unless very long
        text = pack(events, compact=True) if len(events) <= _FEW_EVENTS else ""
        if not text or len(text) > _COMPRESS_OVER:
            text = pack(events)
        data: str | bytes
        if len(text) > _COMPRESS_OVER:
            # a batch of memoized steps: zlib finds the repeats itself
            packed = zlib.compress(text.encode(), _COMPRESS_LEVEL)
            kind = _PACKED_COMPRESSED
            # SQLite keeps bytes as a BLOB in the TEXT column; PostgreSQL's text takes no bytes
            data = packed if self.dialect.name == "sqlite" else base64.b64encode(packed).decode()
        else:
            # an executed step's row: too small for compressing to pay
            data, tag = compact(text, first.run_id, step_key, self._prefix_id)
            # the message column of a packed row holds the id of its prefix, if any
            return (first.run_id, step_key, _PACKED_COMPACT, first.timestamp, tag, data)
        return (first.run_id, step_key, kind, first.timestamp, "", data)

    def get_events(
        self, run_id: str, event_types: Sequence[EventType] | None = None
    ) -> list[Event]:
        columns = "run_id, step_key, event_type, timestamp, message, data"
        if event_types:
            wanted = {t.value for t in event_types}
            # packed rows hold events of any type: they are unpacked, then filtered
            kinds = [*wanted, *_PACKED_KINDS]
            marks = ",".join("?" * len(kinds))
            rows = self._execute(
                f"SELECT {columns} FROM events WHERE run_id = ? AND event_type IN ({marks}) "
                "ORDER BY id",
                (run_id, *kinds),
            )
        else:
            wanted = None
            rows = self._execute(
                f"SELECT {columns} FROM events WHERE run_id = ? ORDER BY id", (run_id,)
            )
        found: list[Event] = []
        for r in rows:
            kind = r[2]
            if kind in _PACKED_KINDS:
                prefix = self._prefix_text(int(r[4])) if r[4] else None
                found.extend(_unpack(r[0], r[1], r[3], kind, r[5], wanted, prefix))
            else:
                found.append(Event(EventType(kind), r[0], r[3], r[1], r[4], json.loads(r[5])))
        return found

    def index_entries(self, output_keys: Iterable[str] | None = None) -> list[IndexEntry]:
        if output_keys is None:
            rows = self._execute(f"SELECT {_ENTRY_COLUMNS} FROM output_index")
            return self._entries(rows)
        # the caller's own key strings go into the entries (it keeps them anyway): a memoized
        # run of 100,000 pieces reads 200,000 entries and holds them for the whole run
        given = {k: k for k in output_keys}
        keys = list(given)
        found: list[IndexEntry] = []
        for i in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[i : i + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._execute(
                f"SELECT {_ENTRY_COLUMNS} FROM output_index WHERE output_key IN ({marks})", chunk
            )
            found.extend(self._entries(rows, given))
        return found

    def delete_index_entries(self, keys: Iterable[tuple[str, str]]) -> None:
        delete = "DELETE FROM output_index WHERE output_key = ? AND version = ?"
        self._write_many([(delete, [tuple(k) for k in keys])])

    def _entries(
        self, rows: Sequence[Sequence[Any]], keys: dict[str, str] | None = None
    ) -> list[IndexEntry]:
        """The entries of ``output_index`` rows (``_ENTRY_COLUMNS``); ``keys``: the caller's
        own key strings, to use in place of the rows' (it keeps them anyway)."""
        addresses = decode_addresses(rows, self._prefix_text)
        found = []
        for (key, version, _, created, size, recipe, scheme, _), address in zip(
            rows, addresses, strict=True
        ):
            found.append(
                IndexEntry(
                    keys.get(key, key) if keys is not None else key,
                    version,
                    address,
                    created,
                    size,
                    recipe_json=recipe,
                    version_scheme=scheme,
                )
            )
        return found

    # -- prefixes: the start of URIs, stored once ---------------------------------------------

    def _prefix_id(self, text: str) -> int:
        """The id of ``text`` in the ``prefixes`` table, added (in a transaction of its own,
        committed before any row names it) if it is not there yet."""
        found = self._prefix_ids.get(text)
        if found is not None:
            return found
        insert = self._sql("INSERT INTO prefixes (text) VALUES (?) ON CONFLICT (text) DO NOTHING")
        select = self._sql("SELECT id FROM prefixes WHERE text = ?")

        def work(cur: Any) -> int:
            cur.execute(insert, (text,))
            cur.execute(select, (text,))
            return int(cur.fetchone()[0])

        found = self._run(work, write=True)
        self._prefix_ids[text] = found
        self._prefix_texts[found] = text
        return found

    def _prefix_text(self, prefix_id: int) -> str:
        """The text of prefix ``prefix_id`` (the table is read again when it is not known)."""
        text = self._prefix_texts.get(prefix_id)
        if text is None:
            for found, stored in self._execute("SELECT id, text FROM prefixes"):
                self._prefix_texts[int(found)] = stored
            text = self._prefix_texts.get(prefix_id)
            if text is None:
                raise StorageError(
                    f"instance database {self.url}: prefix {prefix_id} is named by a stored row "
                    "but missing from the prefixes table: the database was altered by hand"
                )
        return text


_INSERT_EVENTS_HEAD = (
    "INSERT INTO events (run_id, step_key, event_type, timestamp, message, data) VALUES "
)
# the index row's run_id last: addresses are stored without it (compact.py)
_ENTRY_COLUMNS = (
    "output_key, version, address, created_at, size_bytes, recipe, version_scheme, run_id"
)
_UPSERT_INDEX_HEAD = f"INSERT INTO output_index ({_ENTRY_COLUMNS}) VALUES "
_UPSERT_INDEX_TAIL = (
    " ON CONFLICT (output_key, version) DO UPDATE SET "
    "address = excluded.address, run_id = excluded.run_id, created_at = excluded.created_at, "
    "size_bytes = excluded.size_bytes, recipe = excluded.recipe, "
    "version_scheme = excluded.version_scheme"
)
# parameters per multi-row SQLite INSERT: under the 999 of SQLite before 3.32
_PARAMETERS_PER_INSERT = 960


def _marks(width: int, rows: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * rows)


_TYPE_VALUES = {t: t.value for t in EventType}

# The event_type of a row that holds several events (never an EventType: older readers, which
# refuse this schema version, would not know it): JSON text, or zlib-compressed JSON (bytes on
# SQLite, base64 text on PostgreSQL).
_PACKED_COMPACT = "PACKED"  # the text, compact()ed with the row's run id and step key
_PACKED_COMPRESSED = "PACKED_Z"  # the text, zlib-compressed
_PACKED_KINDS = (_PACKED_COMPACT, _PACKED_COMPRESSED)
# Rows of more text than this are compressed: a burst of memoized steps shrinks ~15x, while an
# executed step's row (~1 kB) is compacted (compact.py), where compressing costs more time
# than it saves.
_COMPRESS_OVER = 4096
_COMPRESS_LEVEL = 1
# a row of at most this many events is packed compact first (an executed step's: start, inputs,
# outputs, success); a longer one (a burst of memoized steps) is most likely compressed
_FEW_EVENTS = 8


def _unpack(
    run_id: str,
    step_key: str | None,
    first: float,
    kind: str,
    data: Any,
    wanted: set[str] | None,
    prefix: str | None,
) -> list[Event]:
    """The events of a packed row (only those of the ``wanted`` types, if given)."""
    if kind == _PACKED_COMPRESSED:
        raw = data if isinstance(data, bytes) else base64.b64decode(data)
        data = zlib.decompress(raw)
    else:
        data = expand(data, run_id, step_key, prefix)
    return unpack(run_id, first, data, wanted)


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    run_id, job_name, status, tags, run_config, parent, root, selection, start, end, beat = row
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
        heartbeat=beat,
    )


def storage_from_url(url: str) -> SqlInstanceStorage:
    """The storage at ``sqlite:///PATH`` (``sqlite:///:memory:``) or ``postgresql://USER@HOST/DB``
    (also ``postgres://``, ``postgresql+psycopg://``)."""
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return postgres_storage(url.replace("postgresql+psycopg://", "postgresql://", 1))
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return sqlite_storage(path)
    raise StorageError(
        f"instance URL {redact_url(url)!r} is not supported; "
        "expected sqlite:///PATH or postgresql://USER@HOST/DB"
    )


# -- SQLite -----------------------------------------------------------------------------------


def _sqlite_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    autoinc="INTEGER PRIMARY KEY AUTOINCREMENT",
    begin_write="BEGIN IMMEDIATE",
    driver_errors=(sqlite3.Error,),
    is_transient=_sqlite_transient,
    table_exists="SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
    without_rowid=" WITHOUT ROWID",
)


def sqlite_storage(path: str) -> SqlInstanceStorage:
    """SQLite in WAL mode: readers never block the writer; several processes may share the file."""

    def connect() -> _AutocommitSqlite:
        # autocommit; write transactions issue BEGIN IMMEDIATE themselves, so a writer takes the
        # lock up front and waits for it (busy timeout) instead of failing half-way
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                # every executed step commits its own small transaction: checkpoint (copy the
                # log into the database, two fsyncs) every ~40 MB of log, not every 4 MB
                conn.execute("PRAGMA wal_autocheckpoint=10000")
            conn.execute("PRAGMA busy_timeout=30000")
        except BaseException:
            conn.close()
            raise
        return _AutocommitSqlite(conn)

    storage = SqlInstanceStorage(connect, SQLITE, f"sqlite:///{path}")
    if path != ":memory:":
        storage.check_present = _file_check(path, storage.url)
    return storage


def _file_check(path: str, url: str) -> Callable[[], None]:
    """A check that the database file opened at ``path`` is still the one there."""
    opened = os.stat(path)
    identity = (opened.st_dev, opened.st_ino)

    def check() -> None:
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != identity:
            what = "deleted" if now is None else "replaced by another file"
            raise StorageError(
                f"instance database {url} was {what} while this process used it: nothing it "
                "records from now on would be kept. Stop deleting the instance of a running "
                "pipeline; run again to recompute what was lost"
            )

    return check


class _AutocommitSqlite:
    """sqlite3 in autocommit mode with explicit BEGIN; ``commit``/``rollback`` are no-ops outside one."""

    broken = False

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.closed = False
        # COMMIT once per executed step: through one cursor, not a new one per commit
        self._committer = conn.cursor()

    def cursor(self) -> sqlite3.Cursor:
        return self._conn.cursor()

    def commit(self) -> None:
        if self._conn.in_transaction:
            self._committer.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self.closed = True
        self._conn.close()


# -- PostgreSQL -------------------------------------------------------------------------------


def postgres_storage(url: str) -> SqlInstanceStorage:
    """PostgreSQL through psycopg 3 (``pip install memodag[postgres]``)."""
    display = redact_url(url)
    try:
        import psycopg
        import psycopg.errors
    except ImportError as exc:
        raise StorageError(
            f"a PostgreSQL instance ({display}) needs psycopg: pip install 'memodag[postgres]'"
        ) from exc

    secrets = _passwords(url)
    options: dict[str, Any] = {}
    if "connect_timeout" not in url:
        # an unreachable host otherwise hangs the run for the OS's TCP timeout (minutes)
        options["connect_timeout"] = 10

    def connect() -> Any:
        try:
            return psycopg.connect(url, **options)
        except psycopg.Error as exc:
            message = str(exc).strip()
            for secret in secrets:
                message = message.replace(secret, "***")
            raise StorageError(
                f"cannot connect to the PostgreSQL instance at {display}: {message}"
            ) from None

    transient_errors = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
    dialect = Dialect(
        name="postgres",
        placeholder="%s",
        autoinc="BIGSERIAL PRIMARY KEY",
        begin_write=None,  # psycopg opens a transaction with the first statement
        driver_errors=(psycopg.Error,),
        is_transient=lambda exc: isinstance(exc, transient_errors),
        # a catalog query, not to_regclass(): its cached lookup may miss a table another session
        # created while this one waited for the schema lock
        table_exists="SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
        "WHERE schemaname = current_schema() AND tablename = ?)",
        schema_lock="SELECT pg_advisory_xact_lock(7716201)",
        pin_lock="SELECT pg_advisory_xact_lock_shared(7716202)",
        collect_lock="SELECT pg_advisory_xact_lock(7716202)",
    )
    return SqlInstanceStorage(connect, dialect, display, url, secrets)


def _passwords(url: str) -> list[str]:
    found = []
    if "://" in url:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found += re.findall(r"(?i)(?:^|&)password=([^&]+)", parts.query)
    else:
        found += re.findall(r"(?i)password\s*=\s*(\S+)", url)
    # the URL-encoded and decoded forms may both appear in a driver message
    return sorted({p for f in found for p in (f, unquote(f)) if p}, key=len, reverse=True)
