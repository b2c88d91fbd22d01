"""The DuckDB table store and its resource, ``duckdb_table_store`` (the default table store).

Owns the SQL of one DuckDB file: physical tables in ``memodag_data``, stage views, and the
bookkeeping in ``memodag_meta`` (each table's Arrow schema, what each stage shows, which job
owns it). Decides nothing about versions or what runs. ``duckdb`` and ``pyarrow`` are imported
only when a method needs them.

DuckDB lets one process hold a file for writing, and then no other process can open it, even
read-only. Opening a file costs 30-50 ms here (a database instance per open), so by default
(``hold_file: run``) a run takes the file at its first table write and releases it when it ends;
``hold_file: write`` takes it for each write and each commit only, so other processes can read
between them, at 30-50 ms per table. Readers wait up to ``lock_timeout`` seconds for the file,
then say which process holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memodag.definitions.config import Field
from memodag.definitions.resources import InitResourceContext, io_manager
from memodag.errors import StorageError
from memodag.tables.cache import CONFIG_FIELD, CONFIG_KEY, cache_from_config, instance_home
from memodag.tables.convert import DUCKDB, SQLALCHEMY, kind_of_type
from memodag.tables.io_manager import TableIOManager
from memodag.tables.store import (
    StageTable,
    TableSpec,
    TableStore,
    quote_identifier,
)

if TYPE_CHECKING:
    import pyarrow as pa

_HOLD_RUN, _HOLD_WRITE = "run", "write"
_INPUT_VIEW = "__memodag_input"
_LOCKED = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def _q(name: str) -> str:
    return quote_identifier(name)


class DuckDBTableStore(TableStore):
    """Tables in one DuckDB file. Not thread-safe: the table io manager drives it from the
    run's driver thread only."""

    dialect = "duckdb"

    def __init__(
        self,
        path: str,
        *,
        schema_prefix: str = "",
        schema_suffix: str = "",
        hold_file: str = _HOLD_RUN,
        lock_timeout: float = 5.0,
    ) -> None:
        super().__init__(schema_prefix, schema_suffix)
        if hold_file not in (_HOLD_RUN, _HOLD_WRITE):
            raise StorageError(
                f"duckdb_table_store: hold_file must be 'run' or 'write', got {hold_file!r}"
            )
        self.path = os.path.abspath(os.path.expanduser(path))
        self.hold_file = hold_file
        self.lock_timeout = lock_timeout
        self._conn: Any = None  # the writing connection while this process holds the file
        self._reader: Any = None  # a read-only connection, for reads outside a write
        self._ready = False  # memodag's schemas exist in the file
        self._schemas: dict[str, Any] = {}  # physical -> Arrow schema, read once per table
        self._known: set[str] = set()  # physical tables known complete
        self._sidecar_cache: tuple[Any, dict[str, Any]] | None = None
        self._in_run = False  # between open() and close(): a run drives the store

    # ---- identity, lifecycle ------------------------------------------------------------------

    def identity(self) -> str:
        return f"duckdb://{self.path}{self._affix()}"

    def _affix(self) -> str:
        if not (self.schema_prefix or self.schema_suffix):
            return ""
        return f"?schema_prefix={self.schema_prefix}&schema_suffix={self.schema_suffix}"

    @property
    def meta_schema(self) -> str:
        return self.schema_name("memodag_meta")

    def open(self) -> None:
        self._in_run = True
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"duckdb_table_store: cannot create the directory of {self.path}: {exc}"
            ) from exc
        if not os.access(directory, os.W_OK):
            raise StorageError(
                f"duckdb_table_store: directory {directory} is not writable; set the store's "
                "config 'path' to a writable file"
            )

    def close(self) -> None:
        self._in_run = False
        for conn in (self._reader, self._conn):
            if conn is not None:
                conn.close()
        self._reader = self._conn = None

    # ---- connections -----------------------------------------------------------------------

    def _connect(self, read_only: bool) -> Any:
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                return duckdb.connect(self.path, read_only=read_only)
            except duckdb.IOException as exc:
                held = _LOCKED.search(str(exc))
                if held is None:
                    raise StorageError(f"cannot open DuckDB file {self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"DuckDB file {self.path} is held by another process: {held.group(1)} "
                        f"(PID {held.group(2)}), waited {self.lock_timeout:g} s; DuckDB lets one "
                        "process write a file and no other open it meanwhile. Wait for it to "
                        "finish, or use hold_file: write in the store's config so runs release "
                        "the file between writes"
                    ) from exc
                time.sleep(0.05)
            except duckdb.ConnectionException:
                # this process already has the file open with another configuration: share it
                return duckdb.connect(self.path)

    def _writer(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self._reader is not None:  # one process opens a file one way at a time
            self._reader.close()
            self._reader = None
        self._conn = self._connect(read_only=False)
        if not self._ready:
            for schema in (self.data_schema, self.meta_schema):
                self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
            meta = _q(self.meta_schema)
            # no primary keys: DuckDB's INSERT OR REPLACE costs ~4 ms a row here, a DELETE and
            # an INSERT well under 1 ms (each writer keeps the rows unique itself)
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {meta}.tables (physical VARCHAR, arrow_schema BLOB)"
            )
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {meta}.stage_tables (stage VARCHAR, name VARCHAR, "
                "physical VARCHAR, step_key VARCHAR)"
            )
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {meta}.stages (stage VARCHAR, job VARCHAR)"
            )
            self._ready = True
        # every complete table, read once per connection (another process may have written
        # since the last one): has_table then asks no query
        found = self._conn.execute(f"SELECT physical FROM {_q(self.meta_schema)}.tables")
        self._known = {row[0] for row in found.fetchall()}
        return self._conn

    def _release(self) -> None:
        if self.hold_file == _HOLD_WRITE:
            in_run = self._in_run
            self.close()
            self._in_run = in_run

    def _read_connection(self) -> Any:
        """The held connection, else a read-only one (never taking the file for writing), kept
        until ``close`` (the io manager closes the store after a read outside a run) or, with
        ``hold_file: write``, until the read is done (``_done_reading``)."""
        if self._conn is not None:
            return self._conn
        if self._reader is None:
            self._reader = self._connect(read_only=True)
        return self._reader

    def _done_reading(self) -> None:
        if self.hold_file == _HOLD_WRITE and self._reader is not None:
            self._reader.close()
            self._reader = None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read query; a file or schema not made yet reads as no rows."""
        import duckdb

        if self._conn is None and not os.path.exists(self.path):
            return []
        try:
            return self._read_connection().execute(sql, list(params)).fetchall()
        except duckdb.CatalogException:
            return []
        finally:
            self._done_reading()

    # ---- tables ------------------------------------------------------------------------------

    def _table(self, physical: str) -> str:
        return f"{_q(self.data_schema)}.{_q(physical)}"

    def write_arrow(self, physical: str, data: pa.Table, spec: TableSpec) -> None:
        conn = self._writer()
        conn.register(_INPUT_VIEW, data)
        try:
            self._create(conn, physical, _select_input(data, spec), data.schema, spec)
        finally:
            conn.unregister(_INPUT_VIEW)
            self._release()

    def write_query(self, physical: str, sql: str, spec: TableSpec) -> None:
        conn = self._writer()
        try:
            self._create(conn, physical, sql, None, spec)
        finally:
            self._release()

    def _create(self, conn: Any, physical: str, select: str, schema: Any, spec: TableSpec) -> None:
        import duckdb

        table = self._table(physical)
        what = f"table '{spec.name}'"
        if schema is not None:
            _check_columns(spec, schema.names, what)
        conn.execute("BEGIN TRANSACTION")
        try:
            try:
                conn.execute(f"CREATE OR REPLACE TABLE {table} AS {select}")
            except duckdb.Error as exc:
                raise StorageError(f"{what}: DuckDB could not create it: {exc}") from exc
            if schema is None:  # made by SQL: its columns are known now
                schema = conn.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
                _check_columns(spec, schema.names, what)
            for column in _not_null(spec, schema.names):
                conn.execute(f"ALTER TABLE {table} ALTER COLUMN {_q(column)} SET NOT NULL")
            if spec.primary_key:
                cols = ", ".join(_q(c) for c in spec.primary_key)
                conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({cols})")
            for i, index in enumerate(spec.indexes):
                cols = ", ".join(_q(c) for c in index)
                conn.execute(f"CREATE INDEX {_q(f'{physical[:55]}_ix{i}')} ON {table} ({cols})")
            meta = _q(self.meta_schema)
            if physical in self._known:  # replaced: its old row goes
                conn.execute(f"DELETE FROM {meta}.tables WHERE physical = ?", [physical])
            conn.execute(
                f"INSERT INTO {meta}.tables VALUES (?, ?)",
                [physical, schema.serialize().to_pybytes()],
            )
            conn.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(conn)
            if spec.primary_key and ("duplicate" in str(exc) or "constraint" in str(exc).lower()):
                raise StorageError(
                    f"{what}: primary key {list(spec.primary_key)} has duplicate values ({exc}); "
                    "make the key unique or choose another primary_key"
                ) from exc
            raise StorageError(f"{what}: DuckDB could not store it: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise
        self._schemas[physical] = schema
        self._known.add(physical)

    def _schema(self, physical: str) -> Any:
        """The Arrow schema ``physical`` was written with (the caller ends the read)."""
        schema = self._schemas.get(physical)
        if schema is None:
            import duckdb
            import pyarrow as pa

            try:
                rows = (
                    self._read_connection()
                    .execute(
                        f"SELECT arrow_schema FROM {_q(self.meta_schema)}.tables "
                        "WHERE physical = ?",
                        [physical],
                    )
                    .fetchall()
                )
            except duckdb.CatalogException:
                rows = []
            if not rows:
                raise StorageError(
                    f"table {physical} is not stored in {self.path} (deleted by gc, or the file "
                    "was replaced); re-run the op that makes it"
                )
            schema = pa.ipc.read_schema(pa.py_buffer(rows[0][0]))
            self._schemas[physical] = schema
        return schema

    def read_arrow(self, physical: str) -> pa.Table:
        try:
            schema = self._schema(physical)
            sql = f"SELECT * FROM {self._table(physical)}"
            table = self._read_connection().sql(sql).to_arrow_table()
        finally:
            self._done_reading()
        return _as_written(table, schema)

    def read(self, physical: str, as_type: Any) -> Any:
        kind = kind_of_type(as_type, f"table {physical}")
        if kind == DUCKDB:
            # the relation reads through the connection: it stays open until close()
            return self._read_connection().table(f"{_q(self.data_schema)}.{_q(physical)}")
        if kind == SQLALCHEMY:
            if self._in_run and self.hold_file == _HOLD_RUN and physical not in self._schemas:
                # a reference is read to build a query this run executes here (a lazy task):
                # open the file for writing now, not read-only and then again (30-50 ms each)
                self._writer()
            try:
                schema = self._schema(physical)
            finally:
                self._done_reading()
            return _sqlalchemy_table(self.data_schema, physical, schema)
        return super().read(physical, kind)

    def schema_of(self, physical: str) -> pa.Schema:
        try:
            return self._schema(physical)
        finally:
            self._done_reading()

    def _external(self, schema: str, name: str) -> str:
        return f"{_q(schema)}.{_q(name)}"

    def external_exists(self, schema: str, name: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        )
        return bool(rows)

    def external_schema(self, schema: str, name: str) -> pa.Schema:
        try:
            sql = f"SELECT * FROM {self._external(schema, name)} LIMIT 0"
            return self._read_connection().sql(sql).to_arrow_table().schema
        finally:
            self._done_reading()

    def read_external(self, schema: str, name: str, as_type: Any) -> Any:
        from memodag.tables.convert import from_arrow

        what = f"external table {schema}.{name}"
        kind = kind_of_type(as_type, what)
        if kind == DUCKDB:
            return self._read_connection().table(self._external(schema, name))
        if kind == SQLALCHEMY:
            return _sqlalchemy_table(schema, name, self.external_schema(schema, name))
        try:
            sql = f"SELECT * FROM {self._external(schema, name)}"
            table = self._read_connection().sql(sql).to_arrow_table()
        finally:
            self._done_reading()
        return from_arrow(table, kind, what)

    def has_table(self, physical: str) -> bool:
        if physical in self._known:
            return True
        if self._conn is not None:
            return False  # _known holds every table of the file this connection sees
        rows = self._query(
            f"SELECT 1 FROM {_q(self.meta_schema)}.tables WHERE physical = ?", [physical]
        )
        return bool(rows)

    def drop_table(self, physical: str) -> None:
        conn = self._writer()
        try:
            conn.execute("BEGIN TRANSACTION")
            conn.execute(f"DROP TABLE IF EXISTS {self._table(physical)}")
            conn.execute(
                f"DELETE FROM {_q(self.meta_schema)}.tables WHERE physical = ?", [physical]
            )
            conn.execute("COMMIT")
            self._known.discard(physical)
            self._write_sidecar(self._sidecar())  # no longer listed as stored
        except BaseException:
            _rollback(conn)
            raise
        finally:
            self._schemas.pop(physical, None)
            self._known.discard(physical)
            self._release()

    def run_script(self, statements: Sequence[str], schema: str) -> list[str]:
        import duckdb

        conn = self._writer()
        try:
            conn.execute(f"DROP SCHEMA IF EXISTS {_q(schema)} CASCADE")
            conn.execute(f"CREATE SCHEMA {_q(schema)}")
            for i, statement in enumerate(statements, 1):
                try:
                    conn.execute(statement)
                except duckdb.Error as exc:
                    raise StorageError(
                        f"statement {i} of {len(statements)} failed in DuckDB: {exc}\n"
                        f"{statement[:300]}"
                    ) from exc
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
                "AND table_type = 'BASE TABLE' ORDER BY table_name",
                [schema],
            ).fetchall()
            return [row[0] for row in rows]
        finally:
            self._release()

    def drop_schema(self, schema: str) -> None:
        conn = self._writer()
        try:
            conn.execute(f"DROP SCHEMA IF EXISTS {_q(schema)} CASCADE")
        finally:
            self._release()

    # ---- stages ------------------------------------------------------------------------------

    # ---- what the file holds, also kept beside it ----------------------------------------------
    # A memoized run checks each table it reuses (``stored_cheaply``) and re-commits stages that
    # already show exactly its tables; answering both from a small JSON file beside the database
    # spares it importing duckdb and opening the file (~0.1-0.2 s, and impossible while another
    # process holds the file). The JSON is trusted only for the database file it was written for
    # (inode); a stage's entry is removed before a commit and rewritten after it, so a crash in
    # between leaves no entry (the database is asked) rather than a stale one.

    def _sidecar_path(self) -> str:
        return self.path + ".stages.json"

    def _sidecar_data(self) -> dict[str, Any]:
        try:
            stat = os.stat(self._sidecar_path())
            key = (stat.st_mtime_ns, stat.st_size)
            if self._sidecar_cache is not None and self._sidecar_cache[0] == key:
                return self._sidecar_cache[1]
            with open(self._sidecar_path(), encoding="utf-8") as file:
                data = json.load(file)
            if not isinstance(data, dict) or data.get("inode") != os.stat(self.path).st_ino:
                data = {}
        except (OSError, ValueError):
            return {}
        self._sidecar_cache = (key, data)
        return data

    def _sidecar(self) -> dict[str, Any]:
        stages = self._sidecar_data().get("stages")
        return dict(stages) if isinstance(stages, dict) else {}

    def _write_sidecar(self, stages: dict[str, Any]) -> None:
        try:
            data = {
                "inode": os.stat(self.path).st_ino,
                "stages": stages,
                "tables": sorted(self._known),
            }
            tmp = f"{self._sidecar_path()}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as file:
                json.dump(data, file)
            os.replace(tmp, self._sidecar_path())
        except OSError:  # only a shortcut: without it the database is asked
            with contextlib.suppress(OSError):
                os.remove(self._sidecar_path())

    def stored_cheaply(self, physical: str) -> bool | None:
        if self._conn is not None:
            return physical in self._known
        if not os.path.exists(self.path):
            return False
        tables = self._sidecar_data().get("tables")
        if not isinstance(tables, list):
            return None
        # not listed: written after the last commit, or dropped: rewriting it is always safe
        return physical in set(tables)

    def _shows_already(
        self, schema: str, job_name: str, tables: Sequence[StageTable], drop: Sequence[str]
    ) -> bool:
        entry = self._sidecar().get(schema)
        if not isinstance(entry, dict) or entry.get("job") != job_name:
            return False
        shown = entry.get("tables") or {}
        return all(shown.get(t.name, [None])[0] == t.physical for t in tables) and not any(
            name in shown for name in drop
        )

    def commit_stage(
        self, stage: str, job_name: str, tables: Sequence[StageTable], drop: Sequence[str] = ()
    ) -> None:
        schema = self.schema_name(stage)
        if self._conn is None and self._shows_already(schema, job_name, tables, drop):
            return  # nothing would change: a memoized run of an unchanged stage
        import duckdb

        sidecar = self._sidecar()
        if sidecar.pop(schema, None) is not None:
            self._write_sidecar(sidecar)
        conn = self._writer()
        meta = _q(self.meta_schema)
        try:
            conn.execute("BEGIN TRANSACTION")
            owner = conn.execute(f"SELECT job FROM {meta}.stages WHERE stage = ?", [schema])
            row = owner.fetchone()
            if row is not None and row[0] != job_name:
                raise StorageError(
                    f"stage '{stage}' (schema {schema} in {self.path}) belongs to job "
                    f"'{row[0]}'; job '{job_name}' cannot write it. Rename the stage, or give "
                    "one of the jobs its own schema_prefix/schema_suffix in the table store's "
                    "config"
                )
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
            for t in tables:
                conn.execute(
                    f"CREATE OR REPLACE VIEW {_q(schema)}.{_q(t.name)} AS "
                    f"SELECT * FROM {self._table(t.physical)}"
                )
            for name in drop:
                conn.execute(f"DROP VIEW IF EXISTS {_q(schema)}.{_q(name)}")
            conn.execute(
                f"DELETE FROM {meta}.stage_tables WHERE stage = ? AND list_contains(?, name)",
                [schema, [t.name for t in tables] + list(drop)],
            )
            conn.register("__memodag_rows", _rows(schema, tables))
            try:
                conn.execute(f"INSERT INTO {meta}.stage_tables SELECT * FROM __memodag_rows")
            finally:
                conn.unregister("__memodag_rows")
            conn.execute(f"DELETE FROM {meta}.stages WHERE stage = ?", [schema])
            conn.execute(f"INSERT INTO {meta}.stages VALUES (?, ?)", [schema, job_name])
            conn.execute("COMMIT")
            rows = conn.execute(
                f"SELECT name, physical, step_key FROM {meta}.stage_tables WHERE stage = ?",
                [schema],
            ).fetchall()
            sidecar[schema] = {"job": job_name, "tables": {n: [p, k] for n, p, k in rows}}
            self._write_sidecar(sidecar)
        except duckdb.Error as exc:
            _rollback(conn)
            raise StorageError(
                f"stage '{stage}' in {self.path} could not be committed ({exc}); the stage "
                "readers see is unchanged"
            ) from exc
        except BaseException:
            _rollback(conn)
            raise
        finally:
            self._release()

    def stage_tables(self, stage: str) -> dict[str, StageTable]:
        entry = self._sidecar().get(self.schema_name(stage)) if self._conn is None else None
        if isinstance(entry, dict):
            return {n: StageTable(n, p, k) for n, (p, k) in entry.get("tables", {}).items()}
        rows = self._query(
            f"SELECT name, physical, step_key FROM {_q(self.meta_schema)}.stage_tables "
            "WHERE stage = ?",
            [self.schema_name(stage)],
        )
        return {name: StageTable(name, physical, step) for name, physical, step in rows}

    def stage_owner(self, stage: str) -> str | None:
        rows = self._query(
            f"SELECT job FROM {_q(self.meta_schema)}.stages WHERE stage = ?",
            [self.schema_name(stage)],
        )
        return rows[0][0] if rows else None

    def is_shown(self, physical: str) -> bool:
        rows = self._query(
            f"SELECT 1 FROM {_q(self.meta_schema)}.stage_tables WHERE physical = ?", [physical]
        )
        return bool(rows)


def _rows(schema: str, tables: Sequence[StageTable]) -> Any:
    """``memodag_meta.stage_tables`` rows as Arrow: one insert for the whole stage."""
    import pyarrow as pa

    return pa.table(
        {
            "stage": pa.array([schema] * len(tables), pa.string()),
            "name": pa.array([t.name for t in tables], pa.string()),
            "physical": pa.array([t.physical for t in tables], pa.string()),
            "step_key": pa.array([t.step_key for t in tables], pa.string()),
        }
    )


def _rollback(conn: Any) -> None:
    try:
        conn.execute("ROLLBACK")
    except Exception:  # nothing to roll back: the failed COMMIT ended the transaction
        pass


def _check_columns(spec: TableSpec, names: Sequence[str], what: str) -> None:
    present = set(names)
    wanted = [("primary key", c) for c in spec.primary_key]
    wanted += [("index", c) for index in spec.indexes for c in index]
    wanted += [("non_nullable", c) for c in spec.non_nullable or ()]
    wanted += [("nullable", c) for c in spec.nullable or ()]
    wanted += [("type_map", c) for c in spec.type_map]
    for role, column in wanted:
        if column not in present:
            raise StorageError(
                f"{what}: {role} column '{column}' is not a column of the table "
                f"(columns: {list(names)})"
            )


def _not_null(spec: TableSpec, names: Sequence[str]) -> list[str]:
    """The columns to declare NOT NULL: ``non_nullable``, or with only ``nullable`` given, every
    other column (pipedag's meaning); primary key columns are NOT NULL anyway."""
    if spec.non_nullable is not None:
        return list(spec.non_nullable)
    if spec.nullable is not None:
        return [n for n in names if n not in spec.nullable]
    return []


def _select_input(data: Any, spec: TableSpec) -> str:
    if not spec.type_map:
        return f"SELECT * FROM {_INPUT_VIEW}"
    parts = []
    for name in data.schema.names:
        sql_type = spec.type_map.get(name)
        if sql_type is None:
            parts.append(_q(name))
        else:
            if not isinstance(sql_type, str):  # a SQLAlchemy type: its DDL name
                sql_type = str(sql_type)
            if not re.fullmatch(r"[A-Za-z0-9_ (),\[\]]+", sql_type):
                raise StorageError(
                    f"table '{spec.name}': type_map column '{name}': {sql_type!r} is not a type"
                )
            parts.append(f"CAST({_q(name)} AS {sql_type}) AS {_q(name)}")
    return f"SELECT {', '.join(parts)} FROM {_INPUT_VIEW}"


def _as_written(table: Any, schema: Any) -> Any:
    """``table`` with the exact Arrow types (and pandas metadata) it was written with: DuckDB
    reads back its own types (int widths and timestamps units it keeps, but not the time zone
    name, string views or pandas' nullable dtypes)."""
    if table.schema.names != schema.names:
        return table  # made by SQL, or a type_map changed it: as DuckDB says
    if table.schema.equals(schema, check_metadata=False):
        return table.replace_schema_metadata(schema.metadata)  # no copy of the columns
    try:
        return table.cast(schema)
    except Exception:  # a type_map changed a column's type: keep DuckDB's
        return table.replace_schema_metadata(schema.metadata)


def _sqlalchemy_table(schema: str, physical: str, arrow_schema: Any) -> Any:
    """A ``sqlalchemy.Table`` naming the stored table, its columns typed from the Arrow
    schema kept at write time (no reflection: no query)."""
    import pyarrow as pa
    import sqlalchemy as sa

    def sa_type(t: Any) -> Any:
        if pa.types.is_boolean(t):
            return sa.Boolean()
        if pa.types.is_integer(t):
            return sa.BigInteger()
        if pa.types.is_floating(t):
            return sa.Float()
        if pa.types.is_decimal(t):
            return sa.Numeric(t.precision, t.scale)
        if pa.types.is_timestamp(t):
            return sa.DateTime(timezone=t.tz is not None)
        if pa.types.is_date(t):
            return sa.Date()
        return sa.String()

    columns = [sa.Column(f.name, sa_type(f.type)) for f in arrow_schema]
    return sa.Table(physical, sa.MetaData(), *columns, schema=schema)


_CONFIG = {
    "path": Field(
        str,
        is_required=False,
        description="The DuckDB file; default: tables.duckdb in the instance's home.",
    ),
    "schema_prefix": Field(str, default_value="", description="Added before every schema name."),
    "schema_suffix": Field(str, default_value="", description="Added after every schema name."),
    "hold_file": Field(
        str,
        default_value=_HOLD_RUN,
        description="'run': hold the file from a run's first table write to its end (fast); "
        "'write': only while writing or committing, so other processes read in between.",
    ),
    "lock_timeout": Field(
        float, default_value=5.0, description="Seconds to wait for a file another process holds."
    ),
    CONFIG_KEY: CONFIG_FIELD,
}


def _default_path(context: InitResourceContext) -> str:
    return os.path.join(instance_home(context), "tables.duckdb")


# the local table cache: off unless configured (DuckDB reads about as fast as Parquet here)
@io_manager(config_schema=_CONFIG, unversioned_config=(CONFIG_KEY,))
def duckdb_table_store(context: InitResourceContext) -> TableIOManager:
    """Tables in a DuckDB file (config ``path``, default ``tables.duckdb`` under the instance
    home): physical tables by version in ``memodag_data``, one schema of views per stage."""
    config = context.resource_config or {}
    path = config.get("path") or _default_path(context)
    store = DuckDBTableStore(
        path,
        schema_prefix=config.get("schema_prefix", ""),
        schema_suffix=config.get("schema_suffix", ""),
        hold_file=config.get("hold_file", _HOLD_RUN),
        lock_timeout=float(config.get("lock_timeout", 5.0)),
    )
    cache = cache_from_config(
        config.get(CONFIG_KEY),
        store_identity=store.identity(),
        home=instance_home(context),
        default_enabled=False,
    )
    return TableIOManager(store, cache)
