"""The PostgreSQL table store and its resource, ``postgres_table_store``.

Owns the SQL of one PostgreSQL database: physical tables in ``memodag_data``, one schema of
views per stage, and the bookkeeping in ``memodag_meta`` (each table's Arrow schema, what each
stage shows, which job owns it), all with the store's ``schema_prefix``/``schema_suffix``.
Decides nothing about versions or what runs. Data moves through Arrow over ADBC
(``adbc_driver_postgresql``: binary COPY for writes, ``fetch_arrow_table`` for reads); no
SQLAlchemy reflection. ``pyarrow`` and the driver are imported only when a method needs them.

One connection per store, opened with ``autocommit=True`` in ``connect`` (setting it afterwards
leaves ingested tables uncommitted); transactions are explicit ``BEGIN``/``COMMIT``. A table is
written in one transaction (create, copy, keys, indexes, its bookkeeping row), and a stage is
committed in one: readers see the previous stage or the new one, never a mix.
Semantics: docs/tables.md (PostgreSQL section).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from memodag.definitions.config import Field
from memodag.definitions.resources import InitResourceContext, io_manager
from memodag.definitions.secrets import redact_url
from memodag.errors import StorageError
from memodag.hashing import hash_strings
from memodag.tables.cache import CONFIG_FIELD, CONFIG_KEY, table_cache
from memodag.tables.convert import (
    DUCKDB,
    SQLALCHEMY,
    check_columns,
    kind_of_type,
    not_null_columns,
    sqlalchemy_table,
    wants_unlogged,
)
from memodag.tables.inline import INLINE_POLICY_FIELD
from memodag.tables.io_manager import TableIOManager
from memodag.tables.store import (
    MAX_IDENTIFIER_BYTES,
    META_SCHEMA,
    StageTable,
    TableSpec,
    TableStore,
    quote_identifier,
)

if TYPE_CHECKING:
    import pyarrow as pa

#: the environment variable naming the store's database when its config gives no ``url``
URL_ENV = "MEMODAG_TABLE_STORE_URL"
#: seconds to wait for the server before saying it cannot be reached (libpq's default: forever)
CONNECT_TIMEOUT = 10


def _q(name: str) -> str:
    return quote_identifier(name)


class PostgresTableStore(TableStore):
    """Tables in one PostgreSQL database. Not thread-safe: the table io manager drives it from
    the run's driver thread only."""

    dialect = "postgres"

    def __init__(self, url: str, *, schema_prefix: str = "", schema_suffix: str = "") -> None:
        super().__init__(schema_prefix, schema_suffix)
        for what, affix in (("schema_prefix", schema_prefix), ("schema_suffix", schema_suffix)):
            if not re.fullmatch(r"[a-z0-9_]*", affix):
                raise StorageError(
                    f"postgres_table_store: {what} {affix!r} may hold only lower-case letters, "
                    "digits and underscores (it becomes part of schema names)"
                )
        self.schema_name(META_SCHEMA)  # the prefix and suffix leave room for memodag's schemas
        self.url = _driver_url(url)
        self.display_url = redact_url(url)
        self._secrets = _passwords(url)
        self._conn: Any = None
        self._cursor: Any = None
        self._ready = False  # memodag's schemas and bookkeeping tables exist
        self._schemas: dict[str, Any] = {}  # physical -> Arrow schema, read once per table
        # the last table this connection wrote (asynchronously committed) since the last WAL
        # flush, or None
        self._unsynced: str | None = None

    # ---- identity, lifecycle ------------------------------------------------------------------

    def identity(self) -> str:
        affix = ""
        if self.schema_prefix or self.schema_suffix:
            affix = f"#schema_prefix={self.schema_prefix}&schema_suffix={self.schema_suffix}"
        # the password is no part of where tables live: changing it keeps every stored table
        return f"{self.display_url}{affix}"

    def location(self) -> str:
        return display_location(self.display_url)

    @property
    def meta_schema(self) -> str:
        return self.schema_name(META_SCHEMA)

    def schema_name(self, base: str) -> str:
        name = super().schema_name(base)
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:
            # PostgreSQL would cut it silently, and two stages could then share a schema
            raise StorageError(
                f"schema {name!r} (stage or memodag schema {base!r} with the store's "
                f"schema_prefix/schema_suffix) is longer than {MAX_IDENTIFIER_BYTES} bytes, "
                "PostgreSQL's limit; use a shorter prefix, suffix or stage name"
            )
        return name

    def open(self) -> None:
        """Connect and create memodag's schemas; an unreachable server raises ``StorageError``
        naming the URL without its password (the run fails before any op runs)."""
        self._writer()

    def close(self) -> None:
        """Flush the WAL if this connection wrote since the last stage commit (so every table
        a run recorded is durable before its end is), then disconnect.

        Raises:
            StorageError: the flush failed (the server went away): the run's last tables may
                be lost, and the run must not count as a success.
        """
        try:
            last, self._unsynced = self._unsynced, None
            if last is not None and self._cursor is not None:
                with self._transaction("making the run's tables durable (WAL flush)") as cur:
                    cur.execute("SET LOCAL synchronous_commit TO on")
                    # a commit flushes the WAL only if its transaction wrote some: rewrite the
                    # last table's bookkeeping row (flushing its table and every one before)
                    cur.execute(
                        f"UPDATE {_q(self.meta_schema)}.tables SET physical = physical "
                        "WHERE physical = $1",
                        (last,),
                    )
        finally:
            self._disconnect()

    def _disconnect(self) -> None:
        cursor, conn = self._cursor, self._conn
        self._cursor = self._conn = None
        for thing in (cursor, conn):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # a broken connection: nothing left to release
                    pass

    # ---- connections -------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _fail(self, doing: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"PostgreSQL table store at {self.display_url}: {doing}: {self._redact(str(exc))}"
        )

    def _cur(self) -> Any:
        if self._cursor is None:
            try:
                import adbc_driver_postgresql.dbapi as adbc
            except ImportError as exc:
                raise StorageError(
                    f"the PostgreSQL table store ({self.display_url}) needs adbc-driver-postgresql "
                    "and pyarrow: pip install 'memodag[postgres]'"
                ) from exc
            try:
                # autocommit here, not afterwards: set later, ingested tables stay uncommitted
                self._conn = adbc.connect(self.url, autocommit=True)
                self._cursor = self._conn.cursor()
                # A table write then costs no WAL flush (~4 ms each here, as much as the whole
                # one-row write). Each stage commit and the store's close (run end) flush
                # synchronously, which makes every table written before durable (the WAL is
                # flushed in order) before the run's end is recorded; docs/tables.md says what
                # a server crash during a run can lose.
                # literals in small writes rely on standard_conforming_strings (the default)
                self._cursor.execute(
                    "SELECT set_config('synchronous_commit', 'off', false), "
                    "set_config('standard_conforming_strings', 'on', false)"
                )
            except Exception as exc:
                self._disconnect()
                raise StorageError(
                    f"cannot reach the PostgreSQL table store at {self.display_url}: "
                    f"{self._redact(str(exc)).strip()}"
                ) from None
        return self._cursor

    def _writer(self) -> Any:
        cur = self._cur()
        if not self._ready:
            meta = _q(self.meta_schema)
            cur.execute("SELECT to_regclass($1)", (f"{meta}.stages",))
            if cur.fetchall()[0][0] is None:
                with self._transaction("create memodag's schemas"):
                    # two first runs at once: one creates, the other waits and finds them
                    cur.execute("SELECT pg_advisory_xact_lock(7716202)")
                    for schema in (self.data_schema, self.meta_schema):
                        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {meta}.tables "
                        "(physical TEXT PRIMARY KEY, arrow_schema BYTEA NOT NULL)"
                    )
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {meta}.stage_tables (stage TEXT, name TEXT, "
                        "physical TEXT NOT NULL, step_key TEXT NOT NULL, PRIMARY KEY (stage, name))"
                    )
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {meta}.stages "
                        "(stage TEXT PRIMARY KEY, job TEXT NOT NULL)"
                    )
            self._ready = True
        return cur

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[Any]:
        """``BEGIN`` ... ``COMMIT``; rolled back on any error, driver errors as ``StorageError``."""
        import adbc_driver_manager

        cur = self._cur()
        cur.execute("BEGIN")
        try:
            yield cur
            cur.execute("COMMIT")
        except adbc_driver_manager.Error as exc:
            self._rollback()
            raise self._fail(doing, exc) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            self._cursor.execute("ROLLBACK")
        except Exception:  # the connection broke: close it, the next call reconnects
            self._disconnect()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read query; bookkeeping not created yet reads as no rows (a reader such as
        ``list-versions`` never creates anything)."""
        import adbc_driver_manager

        cur = self._cur()
        try:
            cur.execute(sql, tuple(params) if params else None)
            return list(cur.fetchall())
        except adbc_driver_manager.Error as exc:
            if getattr(exc, "sqlstate", None) in ("42P01", "3F000"):  # no such table / schema
                return []
            raise self._fail("query failed", exc) from exc

    # ---- tables ------------------------------------------------------------------------------

    def _table(self, physical: str) -> str:
        return f"{_q(self.data_schema)}.{_q(physical)}"

    def write_arrow(self, physical: str, data: pa.Table, spec: TableSpec) -> None:
        import adbc_driver_manager

        what = f"table '{spec.name}'"
        check_columns(spec, data.schema.names, what)
        ingest, columns = _prepare(data, what)
        not_null = set(not_null_columns(spec, data.schema.names))
        defs = ", ".join(
            f"{_q(name)} {sql_type}{' NOT NULL' if name in not_null else ''}"
            for name, sql_type in columns
        )
        finish = self._finish_sql(physical, spec, data.schema, what)
        cur = self._writer()
        table = self._table(physical)
        create = [
            f"DROP TABLE IF EXISTS {table}",  # a leftover of a killed write is replaced
            f"CREATE {_unlogged(spec, what)}TABLE {table} ({defs})",
        ]
        values = _values_sql(table, ingest)
        try:
            if values is not None:
                # a small table: its rows as literals, the whole write one atomic statement
                _statements(cur, *create, *([values] if values else []), *finish)
                self._schemas[physical] = data.schema
                self._unsynced = physical
                return
            # Three statements, each committed on its own: the bookkeeping row that makes the
            # table visible to has_table comes last, with the keys, in one atomic statement. A
            # killed write leaves at most a table without its row, which the next write of that
            # name replaces.
            _statements(cur, *create)
            try:
                cur.adbc_ingest(physical, ingest, mode="append", db_schema_name=self.data_schema)
            except adbc_driver_manager.Error as exc:
                raise StorageError(
                    f"{what}: PostgreSQL refused the rows: {self._redact(str(exc)).strip()}"
                ) from exc
            _statements(cur, *finish)
        except adbc_driver_manager.Error as exc:
            self._discard(physical)
            raise self._finish_error(exc, spec, what) from exc
        except BaseException:
            self._discard(physical)
            raise
        self._schemas[physical] = data.schema
        self._unsynced = physical

    def write_query(self, physical: str, sql: str, spec: TableSpec) -> None:
        import adbc_driver_manager

        what = f"table '{spec.name}'"
        cur = self._writer()
        table = self._table(physical)
        try:
            _statements(
                cur,
                f"DROP TABLE IF EXISTS {table}",
                f"CREATE {_unlogged(spec, what)}TABLE {table} AS {sql}",
            )
        except adbc_driver_manager.Error as exc:
            self._discard(physical)
            raise self._fail(f"{what} could not be created from its query", exc) from exc
        try:
            cur.execute(f"SELECT * FROM {table} LIMIT 0")
            schema = _plain_schema(cur.fetch_arrow_table().schema)
            check_columns(spec, schema.names, what)
            finish = [
                f"ALTER TABLE {table} ALTER COLUMN {_q(column)} SET NOT NULL"
                for column in sorted(not_null_columns(spec, schema.names))
            ]
            finish += self._finish_sql(physical, spec, schema, what)
            _statements(cur, *finish)
        except adbc_driver_manager.Error as exc:
            self._discard(physical)
            raise self._finish_error(exc, spec, what) from exc
        except BaseException:
            self._discard(physical)
            raise
        self._schemas[physical] = schema
        self._unsynced = physical

    def _discard(self, physical: str) -> None:
        """Drop what a failed write left (best effort: the next write replaces it anyway)."""
        try:
            self._cur().execute(f"DROP TABLE IF EXISTS {self._table(physical)}")
        except Exception:
            pass

    def _finish_sql(self, physical: str, spec: TableSpec, schema: Any, what: str) -> list[str]:
        """The statements that complete a written table: column types from ``type_map``, the
        primary key, the indexes, and last its bookkeeping row (with its Arrow schema)."""
        table = self._table(physical)
        statements = []
        for column, sql_type in spec.type_map.items():
            type_sql = _type_sql(sql_type, column, what)
            statements.append(
                f"ALTER TABLE {table} ALTER COLUMN {_q(column)} TYPE {type_sql} "
                f"USING {_q(column)}::{type_sql}"
            )
        if spec.primary_key:
            cols = ", ".join(_q(c) for c in spec.primary_key)
            name = _q(f"pk_{hash_strings(self.data_schema, physical)[:28]}")
            statements.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} PRIMARY KEY ({cols})")
        for index in spec.indexes:
            cols = ", ".join(_q(c) for c in index)
            # index names share the schema with every table: a hash keeps them unique, short
            name = _q(f"ix_{hash_strings(self.data_schema, physical, *index)[:28]}")
            statements.append(f"CREATE INDEX {name} ON {table} ({cols})")
        schema_hex = schema.serialize().to_pybytes().hex()
        statements.append(
            f"INSERT INTO {_q(self.meta_schema)}.tables VALUES ({_literal(physical)}, "
            f"decode('{schema_hex}', 'hex')) ON CONFLICT (physical) "
            "DO UPDATE SET arrow_schema = EXCLUDED.arrow_schema"
        )
        return statements

    def _finish_error(self, exc: Exception, spec: TableSpec, what: str) -> StorageError:
        """A failed completion as an error naming the table (and the key, when it is the key)."""
        state = getattr(exc, "sqlstate", None)
        message = self._redact(str(exc)).strip()
        if spec.primary_key and state in ("23505", "23502"):
            problem = "has duplicate values" if state == "23505" else "has nulls"
            return StorageError(
                f"{what}: primary key {list(spec.primary_key)} {problem} ({message}); make the "
                "key unique and non-null or choose another primary_key"
            )
        return StorageError(f"{what}: PostgreSQL could not store it: {message}")

    def _schema(self, physical: str) -> Any:
        schema = self._schemas.get(physical)
        if schema is None:
            import pyarrow as pa

            rows = self._query(
                f"SELECT arrow_schema FROM {_q(self.meta_schema)}.tables WHERE physical = $1",
                [physical],
            )
            if not rows:
                raise StorageError(
                    f"table {physical} is not stored in {self.display_url} (deleted by gc, or "
                    "the database was replaced); re-run the op that makes it"
                )
            schema = pa.ipc.read_schema(pa.py_buffer(rows[0][0]))
            self._schemas[physical] = schema
        return schema

    def read_arrow(self, physical: str) -> pa.Table:
        import adbc_driver_manager

        schema = self._schema(physical)
        cur = self._cur()
        try:
            cur.execute(f"SELECT * FROM {self._table(physical)}")
            table = cur.fetch_arrow_table()
        except adbc_driver_manager.Error as exc:
            raise self._fail(f"reading table {physical}", exc) from exc
        return _as_written(table, schema)

    def read(self, physical: str, as_type: Any) -> Any:
        kind = kind_of_type(as_type, f"table {physical}")
        if kind == SQLALCHEMY:
            return sqlalchemy_table(self.data_schema, physical, self._schema(physical))
        if kind == DUCKDB:  # a relation over the rows fetched into this process
            import duckdb

            return duckdb.from_arrow(self.read_arrow(physical))
        return super().read(physical, kind)

    def schema_of(self, physical: str) -> pa.Schema:
        return self._schema(physical)

    def external_exists(self, schema: str, name: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            [schema, name],
        )
        return bool(rows)

    def _read_external(self, schema: str, name: str, limit: str = "") -> pa.Table:
        import adbc_driver_manager

        cur = self._cur()
        try:
            cur.execute(f"SELECT * FROM {_q(schema)}.{_q(name)}{limit}")
            return cur.fetch_arrow_table()
        except adbc_driver_manager.Error as exc:
            raise self._fail(f"reading external table {schema}.{name}", exc) from exc

    def external_schema(self, schema: str, name: str) -> pa.Schema:
        return self._read_external(schema, name, " LIMIT 0").schema

    def read_external(self, schema: str, name: str, as_type: Any) -> Any:
        from memodag.tables.convert import from_arrow

        what = f"external table {schema}.{name}"
        kind = kind_of_type(as_type, what)
        if kind == SQLALCHEMY:
            return sqlalchemy_table(schema, name, self.external_schema(schema, name))
        table = self._read_external(schema, name)
        if kind == DUCKDB:
            import duckdb

            return duckdb.from_arrow(table)
        return from_arrow(table, kind, what)

    def has_table(self, physical: str) -> bool:
        if physical in self._schemas:
            return True
        rows = self._query(
            f"SELECT 1 FROM {_q(self.meta_schema)}.tables WHERE physical = $1", [physical]
        )
        return bool(rows)

    def stored_cheaply(self, physical: str) -> bool | None:
        # known from this process's own writes and reads; otherwise the index is trusted (a
        # query per reused table is what this verb exists to avoid)
        return True if physical in self._schemas else None

    def drop_table(self, physical: str) -> None:
        self._writer()
        with self._transaction(f"dropping table {physical}") as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self._table(physical)}")
            cur.execute(
                f"DELETE FROM {_q(self.meta_schema)}.tables WHERE physical = $1", (physical,)
            )
        self._schemas.pop(physical, None)

    def run_script(self, statements: Sequence[str], schema: str) -> list[str]:
        import adbc_driver_manager

        cur = self._writer()
        try:
            _statements(cur, f"DROP SCHEMA IF EXISTS {_q(schema)} CASCADE")
            _statements(cur, f"CREATE SCHEMA {_q(schema)}")
        except adbc_driver_manager.Error as exc:
            raise self._fail(f"creating schema {schema}", exc) from exc
        for i, statement in enumerate(statements, 1):
            try:
                cur.execute(statement)
            except adbc_driver_manager.Error as exc:
                raise StorageError(
                    f"statement {i} of {len(statements)} failed in PostgreSQL: "
                    f"{self._redact(str(exc)).strip()}\n{statement[:300]}"
                ) from exc
        rows = self._query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
            "AND table_type = 'BASE TABLE' ORDER BY table_name",
            [schema],
        )
        return [row[0] for row in rows]

    def drop_schema(self, schema: str) -> None:
        import adbc_driver_manager

        try:
            self._cur().execute(f"DROP SCHEMA IF EXISTS {_q(schema)} CASCADE")
        except adbc_driver_manager.Error as exc:
            raise self._fail(f"dropping schema {schema}", exc) from exc

    # ---- stages ------------------------------------------------------------------------------

    def commit_stage(
        self, stage: str, job_name: str, tables: Sequence[StageTable], drop: Sequence[str] = ()
    ) -> None:
        self._writer()
        schema = self.schema_name(stage)
        meta = _q(self.meta_schema)
        with self._transaction(
            f"stage '{stage}' could not be committed (the stage readers see is unchanged)"
        ) as cur:
            # durable when it returns, and with it every table written before (module doc)
            cur.execute("SET LOCAL synchronous_commit TO on")
            # one committer per stage at a time; readers are not blocked until the swap
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", (f"memodag:{schema}",)
            )
            cur.execute(f"SELECT job FROM {meta}.stages WHERE stage = $1", (schema,))
            owner = cur.fetchall()
            if owner and owner[0][0] != job_name:
                raise StorageError(
                    f"stage '{stage}' (schema {schema} in {self.display_url}) belongs to job "
                    f"'{owner[0][0]}'; job '{job_name}' cannot write it. Rename the stage, or "
                    "give one of the jobs its own schema_prefix/schema_suffix in the table "
                    "store's config"
                )
            cur.execute(
                f"SELECT name, physical FROM {meta}.stage_tables WHERE stage = $1", (schema,)
            )
            shown = dict(cur.fetchall())
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
            changed = [t for t in tables if shown.get(t.name) != t.physical]
            # what each view to replace shows now, and what its new table holds: one query
            columns = _columns(
                cur,
                [(schema, t.name) for t in changed]
                + [(self.data_schema, t.physical) for t in changed],
            )
            for t in changed:  # a table already shown is left alone: nothing to swap or copy
                view = f"{_q(schema)}.{_q(t.name)}"
                before = columns.get((schema, t.name))
                if before is not None and before != columns.get((self.data_schema, t.physical)):
                    # CREATE OR REPLACE VIEW cannot drop, rename or retype columns; in this
                    # transaction readers still never see the view missing
                    cur.execute(f"DROP VIEW IF EXISTS {view}")
                cur.execute(
                    f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {self._table(t.physical)}"
                )
                cur.execute(
                    f"INSERT INTO {meta}.stage_tables VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (stage, name) DO UPDATE SET physical = EXCLUDED.physical, "
                    "step_key = EXCLUDED.step_key",
                    (schema, t.name, t.physical, t.step_key),
                )
            for name in drop:
                cur.execute(f"DROP VIEW IF EXISTS {_q(schema)}.{_q(name)}")
                cur.execute(
                    f"DELETE FROM {meta}.stage_tables WHERE stage = $1 AND name = $2",
                    (schema, name),
                )
            cur.execute(
                f"INSERT INTO {meta}.stages VALUES ($1, $2) ON CONFLICT (stage) DO NOTHING",
                (schema, job_name),
            )
        if changed or drop:  # it wrote, so its commit flushed the WAL and every write before
            self._unsynced = None

    def stage_tables(self, stage: str) -> dict[str, StageTable]:
        rows = self._query(
            f"SELECT name, physical, step_key FROM {_q(self.meta_schema)}.stage_tables "
            "WHERE stage = $1",
            [self.schema_name(stage)],
        )
        return {name: StageTable(name, physical, step) for name, physical, step in rows}

    def job_stages(self, job_name: str) -> list[str]:
        found = self._query(
            f"SELECT stage FROM {_q(self.meta_schema)}.stages WHERE job = $1", [job_name]
        )
        return sorted(s for s in (self.stage_of_schema(row[0]) for row in found) if s)

    def stage_owner(self, stage: str) -> str | None:
        rows = self._query(
            f"SELECT job FROM {_q(self.meta_schema)}.stages WHERE stage = $1",
            [self.schema_name(stage)],
        )
        return rows[0][0] if rows else None

    def is_shown(self, physical: str) -> bool:
        rows = self._query(
            f"SELECT 1 FROM {_q(self.meta_schema)}.stage_tables WHERE physical = $1", [physical]
        )
        return bool(rows)

    def committed_stages(self) -> dict[str, str]:
        rows = self._query(f"SELECT stage, job FROM {_q(self.meta_schema)}.stages")
        found = {self._stage_of_schema(schema): job for schema, job in rows}
        return {stage: job for stage, job in sorted(found.items()) if stage is not None}

    def row_count(self, physical: str) -> int | None:
        rows = self._query(f"SELECT count(*) FROM {self._table(physical)}")
        return int(rows[0][0]) if rows else None


_DOLLAR = "$memodag$"


def _columns(cur: Any, relations: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Any]]:
    """``(schema, name) -> [(column, type), ...]`` of those relations that exist, in order."""
    if not relations:
        return {}
    wanted = " OR ".join(
        f"(n.nspname = {_literal(schema)} AND c.relname = {_literal(name)})"
        for schema, name in relations
    )
    cur.execute(
        "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE a.attnum > 0 AND NOT a.attisdropped AND ({wanted}) "
        "ORDER BY n.nspname, c.relname, a.attnum"
    )
    found: dict[tuple[str, str], list[Any]] = {}
    for schema, name, column, type_name in cur.fetchall():
        found.setdefault((schema, name), []).append((column, type_name))
    return found


#: tables of at most this many cells are written as literals in one statement (one round trip
#: instead of the three or four of a COPY); larger ones are copied in binary
_LITERAL_CELLS = 2000


def _values_sql(table: str, data: Any) -> str | None:
    """``INSERT INTO table VALUES ...`` with ``data``'s rows as literals that PostgreSQL's input
    functions read back exactly ("" for no rows), or None when the table is too large."""
    import pyarrow as pa

    if data.num_rows * max(data.num_columns, 1) > _LITERAL_CELLS:
        return None
    if not data.num_rows:
        return ""
    columns = []
    for column in data.columns:
        t = column.type
        if pa.types.is_timestamp(t) and t.unit == "ns":
            column = column.cast(pa.timestamp("us", t.tz), safe=False)  # as COPY truncates
        values = column.to_pylist()
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            columns.append(["NULL" if v is None else f"decode('{v.hex()}', 'hex')" for v in values])
        elif pa.types.is_boolean(t):
            columns.append(["NULL" if v is None else ("TRUE" if v else "FALSE") for v in values])
        elif pa.types.is_floating(t):
            columns.append(["NULL" if v is None else f"'{v!r}'" for v in values])
        elif pa.types.is_date(t) or pa.types.is_timestamp(t):
            columns.append(["NULL" if v is None else f"'{v.isoformat()}'" for v in values])
        else:  # integers, decimals, strings, nulls: their text
            columns.append(["NULL" if v is None else _literal(str(v)) for v in values])
    rows = ", ".join("(" + ", ".join(row) + ")" for row in zip(*columns, strict=True))
    return f"INSERT INTO {table} VALUES {rows}"


def _literal(text: str) -> str:
    """``text`` as a SQL string literal (quotes doubled; backslashes are plain characters with
    ``standard_conforming_strings``, on since PostgreSQL 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def _statements(cur: Any, *sql: str) -> None:
    """Run statements in one round trip (a ``DO`` block: ADBC prepares each statement, so one
    string cannot hold several), or one by one when a statement contains the block's quote."""
    if len(sql) == 1 or any(_DOLLAR in statement for statement in sql):
        for statement in sql:
            cur.execute(statement)
        return
    body = "; ".join(sql)
    cur.execute(f"DO {_DOLLAR}BEGIN {body}; END{_DOLLAR}")


# -- URLs ------------------------------------------------------------------------------------


def display_location(url: str) -> str:
    """``url`` as users see where tables live: ``postgresql://user@host:port/db``, with no
    password and no query (options such as ``password=`` or ``sslmode``); a libpq keyword
    string comes back with its password masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
    except ValueError:
        return redact_url(url)
    if "://" not in url:
        return redact_url(url)
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"postgresql://{user}{host}{port}{parts.path}"


def _driver_url(url: str) -> str:
    """``url`` as libpq takes it: SQLAlchemy's ``postgresql+psycopg://`` spelling accepted, and
    a connect timeout unless the URL sets one."""
    if not isinstance(url, str) or not re.match(r"(?i)^postgres(ql)?(\+\w+)?://", url):
        raise StorageError(
            f"postgres_table_store: url {redact_url(str(url))!r} is not a PostgreSQL URL; "
            "expected postgresql://user@host:port/database"
        )
    url = re.sub(r"(?i)^postgres(ql)?\+\w+://", "postgresql://", url)
    if "connect_timeout" not in url:
        url += ("&" if "?" in url else "?") + f"connect_timeout={CONNECT_TIMEOUT}"
    return url


def _passwords(url: str) -> list[str]:
    found = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found += re.findall(r"(?i)(?:^|&)password=([^&]+)", parts.query)
    except ValueError:
        pass
    return sorted({p for f in found for p in (f, unquote(f)) if p}, key=len, reverse=True)


# -- types -----------------------------------------------------------------------------------


def _pg_type(t: Any) -> str | None:
    """The PostgreSQL column type for an Arrow type, or None when there is none.

    Unsigned integers are widened to the next signed type (``uint64`` to ``NUMERIC(20)``):
    PostgreSQL has no unsigned types; reads cast back to the written type.
    """
    import pyarrow as pa

    types = pa.types
    if types.is_boolean(t):
        return "BOOLEAN"
    if types.is_int8(t) or types.is_int16(t) or types.is_uint8(t):
        return "SMALLINT"
    if types.is_int32(t) or types.is_uint16(t):
        return "INTEGER"
    if types.is_int64(t) or types.is_uint32(t):
        return "BIGINT"
    if types.is_uint64(t):
        return "NUMERIC(20, 0)"
    if types.is_float32(t):
        return "REAL"
    if types.is_float64(t):
        return "DOUBLE PRECISION"
    if types.is_decimal(t):
        return f"NUMERIC({t.precision}, {t.scale})"
    if types.is_string(t) or types.is_large_string(t) or types.is_null(t):
        return "TEXT"
    if hasattr(types, "is_string_view") and types.is_string_view(t):
        return "TEXT"
    if types.is_binary(t) or types.is_large_binary(t):
        return "BYTEA"
    if types.is_date(t):
        return "DATE"
    if types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE" if t.tz is not None else "TIMESTAMP"
    if types.is_dictionary(t):
        return _pg_type(t.value_type)
    return None


def _prepare(data: Any, what: str) -> tuple[Any, list[tuple[str, str]]]:
    """The Arrow table as ADBC copies it into the columns ``_pg_type`` makes, and those columns.

    Raises ``StorageError`` naming the table, column and type for a type PostgreSQL cannot hold,
    and for column names PostgreSQL would change (empty, longer than 63 bytes, repeated).
    """
    import pyarrow as pa

    columns: list[tuple[str, str]] = []
    arrays = []
    seen: set[str] = set()
    for f, column in zip(data.schema, data.columns, strict=True):
        if not f.name or len(f.name.encode()) > MAX_IDENTIFIER_BYTES:
            raise StorageError(
                f"{what}: column name {f.name!r} is empty or longer than {MAX_IDENTIFIER_BYTES} "
                "bytes, which PostgreSQL cannot hold; rename the column"
            )
        if f.name in seen:
            raise StorageError(f"{what}: column '{f.name}' appears twice; rename one")
        seen.add(f.name)
        sql_type = _pg_type(f.type)
        if sql_type is None:
            raise StorageError(
                f"{what}: column '{f.name}' has type {f.type}, which the PostgreSQL table store "
                "cannot hold; convert it (e.g. to a string) or give Table(type_map=...)"
            )
        t = f.type
        if pa.types.is_uint64(t):
            column = column.cast(pa.decimal128(20, 0))
        elif pa.types.is_dictionary(t):
            column = column.cast(t.value_type)
        elif hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t):
            column = column.cast(pa.large_string())
        elif pa.types.is_null(t):
            column = column.cast(pa.string())
        columns.append((f.name, sql_type))
        arrays.append(column)
    return pa.Table.from_arrays(arrays, names=[c for c, _ in columns]), columns


#: field metadata marking a ``numeric`` column without precision (its scale is the data's)
_ANY_NUMERIC = b"memodag:numeric"


def _plain_schema(schema: Any) -> Any:
    """The Arrow schema to keep for a table made by SQL: ``numeric(p, s)`` columns (an opaque
    extension type holding text, as ADBC reads them) as ``decimal128(p, s)``, a ``numeric``
    without precision as text marked to become a decimal of the data's scale when read."""
    import pyarrow as pa

    fields = []
    for f in schema:
        if isinstance(f.type, pa.BaseExtensionType):
            meta = f.metadata or {}
            typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1") or -1)
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
            if meta.get(b"POSTGRESQL:type") == b"numeric" and typmod >= 4 and precision <= 38:
                f = pa.field(f.name, pa.decimal128(precision, scale), f.nullable)
            elif meta.get(b"POSTGRESQL:type") == b"numeric":
                f = pa.field(f.name, pa.string(), f.nullable, metadata={_ANY_NUMERIC: b"1"})
            else:
                f = pa.field(f.name, f.type.storage_type, f.nullable)
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


def _any_numeric(column: Any) -> Any:
    """Text of a ``numeric`` without precision as ``decimal128(38, s)``, ``s`` the largest
    scale in the data; as text when that does not fit (or holds ``NaN``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count == len(column):
        return column
    fraction = pc.max(pc.utf8_length(pc.replace_substring_regex(column, r"^[^.]*\.?", "")))
    scale = fraction.as_py() or 0
    try:
        return column.cast(pa.decimal128(38, min(scale, 38)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return column


def _as_written(table: Any, schema: Any) -> Any:
    """``table`` with the exact Arrow types (and pandas metadata) it was written with, column
    by column: PostgreSQL reads back its own types (no 8-bit or unsigned ints, timestamps with
    time zone in UTC, ``numeric`` as text). A column a ``type_map`` changed keeps its type."""
    import pyarrow as pa

    if table.schema.names != schema.names:
        return table  # made by SQL or changed since: as PostgreSQL says
    columns = []
    fields = []
    for f, column in zip(schema, table.columns, strict=True):
        if isinstance(column.type, pa.BaseExtensionType):
            column = pa.chunked_array(
                [c.storage for c in column.chunks], type=column.type.storage_type
            )
        target = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if f.metadata and _ANY_NUMERIC in f.metadata:
            column = _any_numeric(column)
            target = column.type
        elif pa.types.is_null(target) and column.null_count == len(column):
            column = pa.chunked_array([pa.nulls(len(column))], type=pa.null())
        elif column.type != target:
            try:
                column = column.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                target = column.type
        columns.append(column)
        fields.append(pa.field(f.name, target, f.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=schema.metadata))


def _unlogged(spec: TableSpec, what: str) -> str:
    """``"UNLOGGED "`` when ``materialization_details`` asks for it (``"unlogged"`` or
    ``{"unlogged": True}``)."""
    return "UNLOGGED " if wants_unlogged(spec, what, "PostgreSQL") else ""


def _type_sql(sql_type: Any, column: str, what: str) -> str:
    """A ``type_map`` entry as SQL: a type name, or a SQLAlchemy type compiled for PostgreSQL."""
    if not isinstance(sql_type, str):
        try:
            from sqlalchemy.dialects import postgresql

            sql_type = sql_type.compile(dialect=postgresql.dialect())
        except Exception as exc:
            raise StorageError(
                f"{what}: type_map column '{column}': {sql_type!r} is not a SQL type ({exc})"
            ) from exc
    if not re.fullmatch(r"[A-Za-z0-9_ (),\[\]]+", sql_type):
        raise StorageError(f"{what}: type_map column '{column}': {sql_type!r} is not a type")
    return sql_type


# -- the resource ----------------------------------------------------------------------------

_CONFIG = {
    "url": Field(
        str,
        is_required=False,
        description=f"postgresql://user@host:port/database; default: ${URL_ENV}. Write "
        "{env: VARIABLE} to keep a password out of config files and run records.",
    ),
    "schema_prefix": Field(str, default_value="", description="Added before every schema name."),
    "schema_suffix": Field(str, default_value="", description="Added after every schema name."),
    "inline_policy": INLINE_POLICY_FIELD,
    CONFIG_KEY: CONFIG_FIELD,
}


def store_url(config: Any) -> str:
    """The database URL from the store's config, else from ``$MEMODAG_TABLE_STORE_URL``."""
    url = (config or {}).get("url") or os.environ.get(URL_ENV)
    if not url:
        raise StorageError(
            f"postgres_table_store: no database given; set config 'url' (e.g. "
            f"{{env: MEMODAG_PG_URL}}) or the environment variable {URL_ENV}"
        )
    return str(url)


@io_manager(config_schema=_CONFIG, unversioned_config={"inline_policy", CONFIG_KEY})
def postgres_table_store(context: InitResourceContext) -> TableIOManager:
    """Tables in a PostgreSQL database (config ``url``, or ``$MEMODAG_TABLE_STORE_URL``):
    physical tables by version in ``memodag_data``, one schema of views per stage."""
    config = context.resource_config or {}
    store = PostgresTableStore(
        store_url(config),
        schema_prefix=config.get("schema_prefix", ""),
        schema_suffix=config.get("schema_suffix", ""),
    )
    return TableIOManager(
        store,
        inline_policy=config.get("inline_policy", "default_false"),
        cache=table_cache(store, config, context),
    )
