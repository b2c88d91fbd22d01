"""The DuckDB table store and its resource, ``duckdb_table_store`` (what the default store builds).

Owns the SQL of one DuckDB file: physical tables in ``memodag_data``, stage views, and the
bookkeeping in ``memodag_meta`` (each table's Arrow schema, what each stage shows, which job
owns it). Decides nothing about versions or what runs. ``duckdb`` and ``pyarrow`` are imported
only when a method needs them.

How the run holds the file (DuckDB lets one process hold it for writing, and then no other can
open it, even read-only) is ``memodag.tables.duckdb_file``'s business: by default the run holds
it while it writes and lets it go after ``release_after`` idle seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memodag.definitions.config import Field
from memodag.definitions.resources import InitResourceContext, io_manager
from memodag.errors import StorageError
from memodag.tables.cache import CONFIG_FIELD, CONFIG_KEY, instance_home, table_cache
from memodag.tables.convert import (
    DUCKDB,
    SQLALCHEMY,
    check_columns,
    kind_of_type,
    not_null_columns,
    sqlalchemy_table,
    wants_unlogged,
)
from memodag.tables.duckdb_file import HOLD_IDLE, HOLD_WRITE, DuckDBFile, holding
from memodag.tables.handover import single_writer_store
from memodag.tables.inline import INLINE_POLICY_FIELD
from memodag.tables.io_manager import TableIOManager
from memodag.tables.store import (
    StageTable,
    TableSpec,
    TableStore,
    quote_identifier,
)

if TYPE_CHECKING:
    import pyarrow as pa

_INPUT_VIEW = "__memodag_input"
#: seconds without a table call after which a run lets the file go (``hold_file: idle``)
RELEASE_AFTER = 0.5


def _q(name: str) -> str:
    return quote_identifier(name)


class DuckDBTableStore(TableStore):
    """Tables in one DuckDB file. Every method that uses a connection runs under the file's
    lock (``holding``): the thread that lets an idle file go never closes one in use."""

    dialect = "duckdb"
    single_writer = True  # workers of multiprocess/Dask runs hand tables to the driver

    def __init__(
        self,
        path: str,
        *,
        schema_prefix: str = "",
        schema_suffix: str = "",
        hold_file: str = HOLD_IDLE,
        lock_timeout: float = 5.0,
        release_after: float = RELEASE_AFTER,
    ) -> None:
        super().__init__(schema_prefix, schema_suffix)
        self.path = os.path.abspath(os.path.expanduser(path))
        self.file = DuckDBFile(self.path, hold_file, lock_timeout, release_after)
        self._ready = False  # memodag's schemas exist in the file
        self._schemas: dict[str, Any] = {}  # physical -> Arrow schema, read once per table
        self._known: set[str] = set()  # physical tables known complete
        self._sidecar_cache: tuple[Any, dict[str, Any]] | None = None
        self._in_run = False  # between open() and close(): a run drives the store

    # ---- identity, lifecycle ------------------------------------------------------------------

    def identity(self) -> str:
        return f"duckdb://{self.path}{self._affix()}"

    def location(self) -> str:
        return f"duckdb:{self.path}"

    def _affix(self) -> str:
        if not (self.schema_prefix or self.schema_suffix):
            return ""
        return f"?schema_prefix={self.schema_prefix}&schema_suffix={self.schema_suffix}"

    @property
    def meta_schema(self) -> str:
        return self.schema_name("memodag_meta")

    def check_stage(self, stage: str) -> None:
        # DuckDB names the file's catalog after the file: `tables.x` would then be ambiguous
        # for every reader (DuckDB refuses it), so such a stage is refused up front
        catalog = os.path.splitext(os.path.basename(self.path))[0]
        if self.schema_name(stage).lower() == catalog.lower():
            raise StorageError(
                f"stage '{stage}' has the name DuckDB gives the database file {self.path} "
                f"(catalog '{catalog}'), so `{stage}.<table>` would be ambiguous; rename the "
                "stage, or give the table store another file (config 'path')"
            )

    def staging_root(self) -> str:
        # beside the file: wherever workers reach the file's directory, they reach this
        return f"{self.path}.staging"

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
        self.file.close()

    # ---- connections -----------------------------------------------------------------------

    @property
    def _conn(self) -> Any:
        """The writing connection while this process holds the file, else None."""
        return self.file.writer

    def _writer(self) -> Any:
        conn, opened = self.file.open_writer()
        if not opened:
            return conn
        if not self._ready:
            for schema in (self.data_schema, self.meta_schema):
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
            meta = _q(self.meta_schema)
            # no primary keys: DuckDB's INSERT OR REPLACE costs ~4 ms a row here, a DELETE and
            # an INSERT well under 1 ms (each writer keeps the rows unique itself)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {meta}.tables (physical VARCHAR, arrow_schema BLOB)"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {meta}.stage_tables (stage VARCHAR, name VARCHAR, "
                "physical VARCHAR, step_key VARCHAR)"
            )
            conn.execute(f"CREATE TABLE IF NOT EXISTS {meta}.stages (stage VARCHAR, job VARCHAR)")
            self._ready = True
        # every complete table, read once per opening (another process may have written
        # since the last one): has_table then asks no query
        found = conn.execute(f"SELECT physical FROM {_q(self.meta_schema)}.tables")
        self._known = {row[0] for row in found.fetchall()}
        return conn

    def _release(self) -> None:
        self.file.done_writing()

    def _read_connection(self) -> Any:
        """The held connection, else a read-only one (never taking the file for writing), kept
        until ``close`` (the io manager closes the store after a read outside a run), the idle
        release, or with ``hold_file: write`` until the read is done (``_done_reading``)."""
        return self.file.open_reader()

    def _done_reading(self) -> None:
        self.file.done_reading()

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

    @holding
    def write_arrow(self, physical: str, data: pa.Table, spec: TableSpec) -> None:
        conn = self._writer()
        conn.register(_INPUT_VIEW, data)
        try:
            self._create(conn, physical, _select_input(data, spec), data.schema, spec)
        finally:
            conn.unregister(_INPUT_VIEW)
            self._release()

    @holding
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
        # same options as PostgreSQL, so a job moves between stores; "unlogged" changes
        # nothing here (DuckDB logs every table the same way)
        wants_unlogged(spec, what, "DuckDB")
        if schema is not None:
            check_columns(spec, schema.names, what)
        conn.execute("BEGIN TRANSACTION")
        try:
            try:
                conn.execute(f"CREATE OR REPLACE TABLE {table} AS {select}")
            except duckdb.Error as exc:
                raise StorageError(f"{what}: DuckDB could not create it: {exc}") from exc
            if schema is None:  # made by SQL: its columns are known now
                schema = conn.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
                check_columns(spec, schema.names, what)
            for column in not_null_columns(spec, schema.names):
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

    @holding
    def read_arrow(self, physical: str) -> pa.Table:
        try:
            schema = self._schema(physical)
            sql = f"SELECT * FROM {self._table(physical)}"
            table = self._read_connection().sql(sql).to_arrow_table()
        finally:
            self._done_reading()
        return _as_written(table, schema)

    @holding
    def read(self, physical: str, as_type: Any) -> Any:
        kind = kind_of_type(as_type, f"table {physical}")
        if kind == DUCKDB:
            # the relation reads through the connection: it stays open until close()
            self.file.pin()
            return self._read_connection().table(f"{_q(self.data_schema)}.{_q(physical)}")
        if kind == SQLALCHEMY:
            if self._in_run and self.file.hold != HOLD_WRITE and physical not in self._schemas:
                # a reference is read to build a query this run executes here (a lazy task):
                # open the file for writing now, not read-only and then again (30-50 ms each)
                self._writer()
            try:
                schema = self._schema(physical)
            finally:
                self._done_reading()
            return sqlalchemy_table(self.data_schema, physical, schema)
        return super().read(physical, kind)

    @holding
    def schema_of(self, physical: str) -> pa.Schema:
        try:
            return self._schema(physical)
        finally:
            self._done_reading()

    def _external(self, schema: str, name: str) -> str:
        return f"{_q(schema)}.{_q(name)}"

    @holding
    def external_exists(self, schema: str, name: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        )
        return bool(rows)

    @holding
    def external_schema(self, schema: str, name: str) -> pa.Schema:
        try:
            sql = f"SELECT * FROM {self._external(schema, name)} LIMIT 0"
            return self._read_connection().sql(sql).to_arrow_table().schema
        finally:
            self._done_reading()

    @holding
    def read_external(self, schema: str, name: str, as_type: Any) -> Any:
        from memodag.tables.convert import from_arrow

        what = f"external table {schema}.{name}"
        kind = kind_of_type(as_type, what)
        if kind == DUCKDB:
            return self._read_connection().table(self._external(schema, name))
        if kind == SQLALCHEMY:
            return sqlalchemy_table(schema, name, self.external_schema(schema, name))
        try:
            sql = f"SELECT * FROM {self._external(schema, name)}"
            table = self._read_connection().sql(sql).to_arrow_table()
        finally:
            self._done_reading()
        return from_arrow(table, kind, what)

    @holding
    def has_table(self, physical: str) -> bool:
        if self._conn is not None:
            # read when this process took the file, kept by its own writes since; once it let
            # go of the file, another process (gc) may have dropped a table: ask the file
            return physical in self._known
        rows = self._query(
            f"SELECT 1 FROM {_q(self.meta_schema)}.tables WHERE physical = ?", [physical]
        )
        return bool(rows)

    @holding
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

    @holding
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

    @holding
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

    def _write_sidecar(self, stages: dict[str, Any], complete: bool | None = None) -> None:
        """Write what the file holds; ``complete``: ``stages`` lists every committed stage
        (None: as the file said before)."""
        if complete is None:
            complete = bool(self._sidecar_data().get("complete"))
        try:
            data = {
                "inode": os.stat(self.path).st_ino,
                "stages": stages,
                "complete": complete,
                "tables": sorted(self._known),
            }
            tmp = f"{self._sidecar_path()}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as file:
                json.dump(data, file)
            os.replace(tmp, self._sidecar_path())
        except OSError:  # only a shortcut: without it the database is asked
            with contextlib.suppress(OSError):
                os.remove(self._sidecar_path())

    @holding
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

    @holding
    def commit_stage(
        self, stage: str, job_name: str, tables: Sequence[StageTable], drop: Sequence[str] = ()
    ) -> None:
        schema = self.schema_name(stage)
        if self._conn is None and self._shows_already(schema, job_name, tables, drop):
            return  # nothing would change: a memoized run of an unchanged stage
        import duckdb

        sidecar = self._sidecar()
        if sidecar.pop(schema, None) is not None or self._sidecar_data().get("complete"):
            self._write_sidecar(sidecar, complete=False)  # until the commit is done
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
            # every stage of the file, as committed: the list is complete again
            self._write_sidecar(self._stages_in(conn), complete=True)
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

    @holding
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

    def _stages_in(self, conn: Any) -> dict[str, Any]:
        """Every committed stage of the file, as the sidecar keeps them."""
        meta = _q(self.meta_schema)
        rows = conn.execute(
            f"SELECT s.stage, s.job, t.name, t.physical, t.step_key FROM {meta}.stages s "
            f"LEFT JOIN {meta}.stage_tables t ON t.stage = s.stage"
        ).fetchall()
        stages: dict[str, Any] = {}
        for stage_schema, job, name, physical, step_key in rows:
            entry = stages.setdefault(stage_schema, {"job": job, "tables": {}})
            if name is not None:
                entry["tables"][name] = [physical, step_key]
        return stages

    @holding
    def job_stages(self, job_name: str) -> list[str]:
        data = self._sidecar_data()
        stages = data.get("stages")
        if not (data.get("complete") and isinstance(stages, dict)):
            stages = self._complete_sidecar()
        schemas = [s for s, e in stages.items() if isinstance(e, dict) and e.get("job") == job_name]
        return sorted(s for s in map(self.stage_of_schema, schemas) if s is not None)

    def _complete_sidecar(self) -> dict[str, Any]:
        """Every committed stage, read from the file and written to the sidecar (complete):
        once after a sidecar written before it listed every stage, so that memoized runs open
        the file no more."""
        import duckdb

        if self._conn is None and not os.path.exists(self.path):
            return {}
        conn = self._read_connection()
        try:
            stages = self._stages_in(conn)
            found = conn.execute(f"SELECT physical FROM {_q(self.meta_schema)}.tables")
            self._known = {row[0] for row in found.fetchall()}
        except duckdb.CatalogException:  # no table committed yet
            return {}
        finally:
            self._done_reading()
        self._write_sidecar(stages, complete=True)
        return stages

    @holding
    def stage_owner(self, stage: str) -> str | None:
        rows = self._query(
            f"SELECT job FROM {_q(self.meta_schema)}.stages WHERE stage = ?",
            [self.schema_name(stage)],
        )
        return rows[0][0] if rows else None

    @holding
    def is_shown(self, physical: str) -> bool:
        rows = self._query(
            f"SELECT 1 FROM {_q(self.meta_schema)}.stage_tables WHERE physical = ?", [physical]
        )
        return bool(rows)

    @holding
    def committed_stages(self) -> dict[str, str]:
        rows = self._query(f"SELECT stage, job FROM {_q(self.meta_schema)}.stages")
        found = {self._stage_of_schema(schema): job for schema, job in rows}
        return {stage: job for stage, job in sorted(found.items()) if stage is not None}

    @holding
    def row_count(self, physical: str) -> int | None:
        rows = self._query(f"SELECT count(*) FROM {self._table(physical)}")
        return int(rows[0][0]) if rows else None


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


#: the store's config schema (``default_table_store`` takes the same keys)
CONFIG = {
    "path": Field(
        str,
        is_required=False,
        description="The DuckDB file; default: tables.duckdb in the instance's home.",
    ),
    "schema_prefix": Field(str, default_value="", description="Added before every schema name."),
    "schema_suffix": Field(str, default_value="", description="Added after every schema name."),
    "inline_policy": INLINE_POLICY_FIELD,
    "hold_file": Field(
        str,
        default_value=HOLD_IDLE,
        description="'idle': hold the file while the run writes, let it go after release_after "
        "seconds without a table call or when another memodag process waits; 'run': from the "
        "first table call to the run's end; 'write': only while writing, committing or reading.",
    ),
    "release_after": Field(
        float,
        default_value=RELEASE_AFTER,
        description="With hold_file 'idle': seconds without a table call after which the run "
        "lets the file go (other processes read it meanwhile).",
    ),
    "lock_timeout": Field(
        float, default_value=5.0, description="Seconds to wait for a file another process holds."
    ),
    CONFIG_KEY: CONFIG_FIELD,
}


def _default_path(context: InitResourceContext) -> str:
    return os.path.join(instance_home(context), "tables.duckdb")


@single_writer_store
@io_manager(config_schema=CONFIG, unversioned_config={"inline_policy", CONFIG_KEY})
def duckdb_table_store(context: InitResourceContext) -> TableIOManager:
    """Tables in a DuckDB file (config ``path``, default ``tables.duckdb`` under the instance
    home): physical tables by version in ``memodag_data``, one schema of views per stage."""
    config = context.resource_config or {}
    store = store_from_config(config, context)
    return TableIOManager(
        store,
        inline_policy=config.get("inline_policy") or "default_false",
        cache=table_cache(store, config, context),
    )


def store_from_config(config: Any, context: InitResourceContext) -> DuckDBTableStore:
    """The store for a resolved config (``CONFIG``'s keys; absent ones take their defaults)."""
    path = config.get("path") or _default_path(context)
    return DuckDBTableStore(
        path,
        schema_prefix=config.get("schema_prefix") or "",
        schema_suffix=config.get("schema_suffix") or "",
        hold_file=config.get("hold_file") or HOLD_IDLE,
        lock_timeout=float(config.get("lock_timeout", 5.0)),
        release_after=float(config.get("release_after", RELEASE_AFTER)),
    )
