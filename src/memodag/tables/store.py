"""The table store interface: the verbs a database backend implements for memodag's tables.

A ``TableStore`` owns physical tables in one database and the stage schemas that show them; it
decides nothing about what runs or which version a table has (the engine and the table io
manager, ``memodag.tables.io_manager``, do). It must never import pandas, polars, pyarrow,
SQLAlchemy or a driver at module level: ``import memodag`` stays light, so heavy modules load
inside methods (the first table op of a run pays for them).

Layout every store follows (docs/tables.md, "How tables are stored"):

- A physical table holds one output at one version, in the store's data schema
  (``data_schema``, by default ``memodag_data`` with the store's ``schema_prefix`` /
  ``schema_suffix``), named by ``physical_table_name(op, output, version)``. It is written once and
  never changed afterwards; many versions of one output live side by side (a revert is a hit).
- A stage is a schema (``<prefix><stage><suffix>``) holding one *view* per table of the stage,
  ``CREATE VIEW <stage>.<name> AS SELECT * FROM <data_schema>.<physical>``. Committing a stage
  swaps its views in one transaction; readers only ever see a whole committed stage.
- ``memodag_meta`` style bookkeeping (which views a stage showed, which job owns a stage) is the
  store's own business, kept inside the same database and written in the commit transaction.

Lifecycle, as the table io manager drives it (single-threaded, in the driver process for
in-process runs):

1. ``open()`` once per run before any step (raise ``StorageError`` naming the database, with no
   password, if it cannot be reached); ``close()`` once at the end, whatever happened.
2. ``write_arrow`` / ``write_query`` for each table an op returns, then ``finish_table`` (primary
   key, indexes) — all before the op's output is recorded, so a recorded output always has its
   whole physical table.
3. ``read`` for each input; ``has_table`` to check a stored version; ``drop_table`` from gc.
4. ``commit_stage`` at run end, once per stage whose ops all succeeded.

Interface changes after the first commit are listed here:
- ``read``'s ``as_type`` may also be a kind name (``"pandas"``, ...): the io manager passes the
  kind the producer returned when the consumer asks for no type.
- ``run_script`` and ``drop_schema`` (optional): ``RawSql`` scripts of lazy tasks run through
  them; a store without them refuses such scripts.
- ``schema_of`` (the Arrow schema kept at write time) and ``external_exists`` /
  ``external_schema`` / ``read_external`` (``ExternalTableReference``; default: refused).
- ``stored_cheaply`` (optional, default None): memoized runs ask it before reusing a table
  (``IOManager.verify``), so it must not cost a query per table.
- ``single_writer`` / ``staging_root``: a store one process writes at a time (DuckDB); runs
  on several processes hand its tables over through files (docs/tables.md, "Executors").
- The table io manager calls ``write_*`` only for a table ``has_table`` does not report (or
  when the run has no version), and ``commit_stage`` also from a failed run, for a stage whose
  table-producing steps all stored their tables.
- ``check_stage`` (optional): refuse a stage name the database cannot hold, before any write.
- ``job_stages`` (optional, default none): the stages a job committed, so that a whole run
  empties the stages it makes no table for any more; ``commit_stage`` may get no tables.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memodag.errors import DefinitionError, StorageError
from memodag.hashing import hash_strings

if TYPE_CHECKING:  # heavy: only for annotations
    import pyarrow as pa

#: PostgreSQL's identifier limit (bytes); DuckDB has none, but names must work on both
MAX_IDENTIFIER_BYTES = 63

#: the schema physical tables live in, before the store's prefix/suffix
DATA_SCHEMA = "memodag_data"
#: the schema of a store's own bookkeeping (stage views, owners), before prefix/suffix
META_SCHEMA = "memodag_meta"

#: schema names users may not use for stages (memodag's own and the databases' reserved ones)
RESERVED_SCHEMAS = frozenset(
    {
        DATA_SCHEMA,
        META_SCHEMA,
        "main",
        "public",
        "information_schema",
        "pg_catalog",
        "pg_toast",
        "temp",
        "pg_temp",
        "system",
    }
)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def normalize_identifier(name: str, what: str) -> str:
    """``name`` lower-cased, checked to be a plain identifier of at most 63 bytes.

    Args:
        name: a stage or table name as the user wrote it.
        what: what the name is, for the error ("stage name", "table name of op 'x'").

    Raises:
        DefinitionError: not a string, not ``[A-Za-z_][A-Za-z0-9_]*``, or longer than 63 bytes.
    """
    if not isinstance(name, str):
        raise DefinitionError(f"{what} must be a string, got {type(name).__name__} {name!r}")
    lowered = name.lower()
    if not _IDENTIFIER.match(lowered):
        raise DefinitionError(
            f"{what} {name!r} is not an identifier: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    if len(lowered.encode()) > MAX_IDENTIFIER_BYTES:
        raise DefinitionError(
            f"{what} {name!r} is {len(lowered.encode())} bytes long; at most "
            f"{MAX_IDENTIFIER_BYTES} are allowed (PostgreSQL's limit)"
        )
    return lowered


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (embedded quotes doubled): safe for any name."""
    return '"' + name.replace('"', '""') + '"'


def physical_table_name(op_name: str, output_name: str, version: str) -> str:
    """The physical table of one output at one version: ``<op>__<output>__<version[:16]>``,
    lower-cased, at most 63 bytes; a long op/output part is cut and made unique by a hash."""
    head = re.sub(r"[^a-z0-9_]", "_", f"{op_name}__{output_name}".lower())
    tail = "__" + re.sub(r"[^a-z0-9_]", "_", version.lower())[:16]
    room = MAX_IDENTIFIER_BYTES - len(tail)
    if len(head) > room:
        digest = hash_strings(head)[:8]
        head = head[: room - 9] + "_" + digest
    return head + tail


@dataclass(frozen=True)
class TableSpec:
    """What the op asked for besides the data (``Table``'s options), as the store needs them.

    Attributes:
        name: the table's name in its stage (normalized identifier).
        primary_key: columns of the primary key (empty: none).
        indexes: each index's columns.
        type_map: column -> SQL type the store should use instead of the one from Arrow
            (a SQLAlchemy type or a type name string; the store documents which it accepts).
        nullable / non_nullable: columns to declare nullable / NOT NULL (None: as the data is).
        materialization_details: store-specific options (e.g. PostgreSQL ``unlogged``).
    """

    name: str
    primary_key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    type_map: Mapping[str, Any] = field(default_factory=dict)
    nullable: tuple[str, ...] | None = None
    non_nullable: tuple[str, ...] | None = None
    materialization_details: Any = None


@dataclass(frozen=True)
class StageTable:
    """One table a stage shows: its name in the stage, the physical table behind the view, and
    the step that produced it (for the stage's bookkeeping)."""

    name: str
    physical: str
    step_key: str


class TableStore(ABC):
    """A database holding memodag's physical tables and the stage schemas that show them.

    Invariants every implementation keeps:

    - Physical tables are created under a name that is not visible as complete until the write
      (data, primary key, indexes) is done: a crash mid-write leaves nothing that ``has_table``
      reports, or a leftover that the next ``write_*`` of that name replaces.
    - ``commit_stage`` is one transaction: readers of ``<stage>.<name>`` see the previous
      committed stage or the new one, never a mix or an empty stage.
    - Every identifier is quoted (``quote_identifier``); names, config and mapping keys never
      reach SQL unquoted.
    - Only ``open``/``close``/``commit_stage``/``write_*`` may hold the database for writing;
      ``read``/``has_table``/``stage_tables`` must work for a reader process (``list-versions``).

    Configuration: a store is offered as an io manager resource (key ``table_store``) whose
    function builds the store and wraps it: ``return TableIOManager(MyStore(...))`` (see
    ``memodag.tables.duckdb.duckdb_table_store``). Config keys common to stores:
    ``schema_prefix`` and ``schema_suffix`` (strings added to every schema name, e.g. one per
    user), which ``schema_name`` applies.
    """

    #: "duckdb", "postgres": which SQL dialect ``write_query`` receives (SQLAlchemy compiles to it)
    dialect: str = ""

    #: only one process may open the database while it is written (a DuckDB file): worker
    #: processes then hand tables over through files in ``staging_root()`` and the driver alone
    #: writes (``memodag.tables.handover``); otherwise each worker reads and writes directly
    single_writer: bool = False

    def staging_root(self) -> str:
        """The directory (reachable by the run's workers) where a single-writer store's runs
        hand tables over, one subdirectory per run."""
        raise NotImplementedError(f"{type(self).__name__} is not a single-writer store")

    def __init__(self, schema_prefix: str = "", schema_suffix: str = "") -> None:
        self.schema_prefix = schema_prefix
        self.schema_suffix = schema_suffix

    # ---- identity and names -----------------------------------------------------------------

    @abstractmethod
    def identity(self) -> str:
        """Where the tables live, without secrets (a file path, a URL with no password): part of
        the output index key, so two stores never share index entries, and shown in errors."""

    def location(self) -> str:
        """Where users find the tables, as ``runs show``, ``list-versions`` and ``tables list``
        print it before ``#<schema>.<table>``: ``duckdb:<file>``, ``postgresql://user@host:port/db``.
        Never holds a password. The default is ``identity()``."""
        return self.identity()

    def schema_name(self, base: str) -> str:
        """The database schema for ``base`` (a stage name, ``DATA_SCHEMA`` or ``META_SCHEMA``)."""
        return f"{self.schema_prefix}{base}{self.schema_suffix}"

    @property
    def data_schema(self) -> str:
        return self.schema_name(DATA_SCHEMA)

    # ---- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Make sure the database can be reached and memodag's schemas exist.

        Raises:
            StorageError: naming the database (without password) and why.
        """

    def close(self) -> None:
        """Release connections and file locks; idempotent."""

    # ---- tables -----------------------------------------------------------------------------

    @abstractmethod
    def write_arrow(self, physical: str, data: pa.Table, spec: TableSpec) -> None:
        """Store ``data`` as physical table ``physical`` in the data schema, then create its
        primary key and indexes (``spec``); replaces a leftover of that name.

        Raises:
            StorageError: a column type the store cannot hold (naming table, column, type), a
                primary key on a missing column or with duplicate keys (naming table and key).
        """

    @abstractmethod
    def write_query(self, physical: str, sql: str, spec: TableSpec) -> None:
        """Run ``CREATE TABLE <data_schema>.<physical> AS <sql>`` inside the database, then the
        primary key and indexes. ``sql`` is already in the store's dialect; it reads inputs
        through ``sql_reference`` names."""

    @abstractmethod
    def read_arrow(self, physical: str) -> pa.Table:
        """The whole physical table as a ``pyarrow.Table``, with the column types it was
        written with."""

    def read(self, physical: str, as_type: Any) -> Any:
        """The physical table as ``as_type``: a class such as ``pandas.DataFrame``, or a kind
        name from ``memodag.tables.convert`` (``"pandas"``, ``"polars"``, ``"polars_lazy"``,
        ``"arrow"``, ``"duckdb"``, ``"sqlalchemy"``); ``convert.kind_of_type`` maps either to a
        kind.

        The default converts ``read_arrow``'s table (``memodag.tables.convert.from_arrow``);
        stores override it for types they serve natively (a ``duckdb`` relation, a lazy scan,
        a ``sqlalchemy.Table`` reference) and call ``super().read`` for the rest.
        """
        from memodag.tables.convert import from_arrow

        return from_arrow(self.read_arrow(physical), as_type, f"table {physical}")

    @abstractmethod
    def has_table(self, physical: str) -> bool:
        """Whether the physical table exists complete (written and finished)."""

    def stored_cheaply(self, physical: str) -> bool | None:
        """Whether the physical table is stored, if that can be told without a round trip to
        the database (a memoized run asks for every table it reuses); None: cannot tell
        cheaply, the caller trusts the index."""
        return None

    def schema_of(self, physical: str) -> pa.Schema:
        """The Arrow schema the physical table was written with (kept by the store: no read
        of the data). Stores override it; the default reads the table."""
        return self.read_arrow(physical).schema

    # ---- external tables (``ExternalTableReference``): tables memodag did not write --------

    def external_exists(self, schema: str, name: str) -> bool:
        """Whether table or view ``schema.name`` exists (names as written, quoted)."""
        raise StorageError(f"{type(self).__name__} cannot reference external tables")

    def external_schema(self, schema: str, name: str) -> pa.Schema:
        """The Arrow schema of external table ``schema.name``, without reading its rows."""
        raise StorageError(f"{type(self).__name__} cannot reference external tables")

    def read_external(self, schema: str, name: str, as_type: Any) -> Any:
        """External table ``schema.name`` as ``as_type`` (as ``read``)."""
        raise StorageError(f"{type(self).__name__} cannot reference external tables")

    @abstractmethod
    def drop_table(self, physical: str) -> None:
        """Drop the physical table; a missing table is not an error. Never drops a table a
        committed stage shows (the caller checks ``is_shown``)."""

    def run_script(self, statements: Sequence[str], schema: str) -> list[str]:
        """Create the scratch schema ``schema`` (replacing a leftover), run ``statements`` in
        order (they create tables in it), and return the names of the tables it then holds,
        sorted. ``RawSql`` scripts run this way; the caller copies the tables into physical
        tables (``write_query``) and drops the schema (``drop_schema``).

        Raises:
            StorageError: naming the statement that failed.
        """
        raise StorageError(f"this table store ({self.identity()}) cannot run RawSql scripts")

    def drop_schema(self, schema: str) -> None:
        """Drop ``schema`` and all it holds; a missing schema is not an error."""
        raise StorageError(f"this table store ({self.identity()}) cannot drop schemas")

    def sql_reference(self, physical: str) -> tuple[str, str]:
        """``(schema, table)`` by which SQL in this database reads the physical table."""
        return self.data_schema, physical

    # ---- stages -----------------------------------------------------------------------------

    @abstractmethod
    def commit_stage(
        self, stage: str, job_name: str, tables: Sequence[StageTable], drop: Sequence[str] = ()
    ) -> None:
        """In ONE transaction: create the stage schema if missing, ``CREATE OR REPLACE VIEW``
        each of ``tables`` onto its physical table, drop the views named in ``drop`` (tables the
        stage no longer has), and record what the stage now shows and that ``job_name`` owns it.

        Raises:
            StorageError: the stage is owned by another job (naming both and the
                ``schema_prefix``/``schema_suffix`` fix); the database refused the transaction
                (nothing of the stage changed).
        """

    def check_stage(self, stage: str) -> None:
        """Refuse a stage this database cannot hold (before its first table is written; the
        io manager asks once per stage and run). The default accepts every stage.

        Raises:
            StorageError: naming the stage, why, and the fix.
        """

    @abstractmethod
    def stage_tables(self, stage: str) -> dict[str, StageTable]:
        """What the committed stage shows now: table name -> ``StageTable`` (empty if never
        committed)."""

    @abstractmethod
    def stage_owner(self, stage: str) -> str | None:
        """The job that committed ``stage`` in this store, or None."""

    def job_stages(self, job_name: str) -> list[str]:
        """The stages (names without prefix/suffix) ``job_name`` committed in this store; a
        whole successful run empties those it makes no table for any more. Asked once per
        successful run: keep it cheap. The default (no stages) never empties a stage."""
        return []

    def stage_of_schema(self, schema: str) -> str | None:
        """The stage name of a schema this store's prefix/suffix made, else None."""
        prefix, suffix = self.schema_prefix, self.schema_suffix
        if not (schema.startswith(prefix) and schema.endswith(suffix)):
            return None
        stage = schema[len(prefix) : len(schema) - len(suffix)]
        return stage or None

    @abstractmethod
    def is_shown(self, physical: str) -> bool:
        """Whether any committed stage shows the physical table (gc must keep it)."""

    # ---- listing (``memodag tables list``; read-only, never creates anything) --------------

    def committed_stages(self) -> dict[str, str]:
        """Every stage committed in this store (under its ``schema_prefix``/``schema_suffix``),
        by the name given to ``Stage`` -> the job that owns it."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its stages")

    def row_count(self, physical: str) -> int | None:
        """How many rows the physical table holds; None if it is not there."""
        raise NotImplementedError(f"{type(self).__name__} cannot count rows")

    def _stage_of_schema(self, schema: str) -> str | None:
        """The stage whose schema is ``schema`` in this store, or None (another prefix's)."""
        prefix, suffix = self.schema_prefix, self.schema_suffix
        if not (schema.startswith(prefix) and schema.endswith(suffix)):
            return None
        stage = schema[len(prefix) : len(schema) - len(suffix)]
        return stage or None
