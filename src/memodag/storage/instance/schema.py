"""The instance database's schema: its tables, its version, and the migrations between versions.

Owns the DDL and nothing else: it never reads or writes runs, events or index entries except to
migrate them. A database records its schema version in ``memodag_schema`` (one row per version
it reached, with the memodag that wrote it). Opening a database:

- new: the current tables are created and stamped with ``SCHEMA_VERSION``;
- older (including the unversioned databases of memodag 0.1): every migration after its version
  runs, in order, in the one transaction that stamps the new version, so a failed upgrade leaves
  the database as it was;
- newer: refused with a ``StorageError`` (a database is never downgraded).

Concurrent openers are serialized by the database (SQLite's write lock, taken up front; a
PostgreSQL advisory lock), and the version is read again under that lock, so of two processes
opening an old database at once exactly one migrates it and the other finds it current.

Adding a migration: append a ``Migration`` to ``MIGRATIONS`` (its ``version`` one above the last),
change ``_TABLES`` to the schema it produces, and keep a database made by the release before the
change as a fixture (tests/storage/fixtures/) that the upgrade tests open.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memodag.errors import StorageError

if TYPE_CHECKING:
    from memodag.storage.instance.sql import Dialect

SCHEMA_TABLE = "memodag_schema"

#: what a live run relies on (gc keeps it) and what it is computing (other runs wait for it):
#: rows live as long as their run (schema version 3)
_PINS_AND_LEASES = (
    # a run's pins: ``kind`` 'key' (every version of an output key it reads from the index) or
    # 'run' (the outputs an ancestor run recorded, which a re-execution loads)
    """CREATE TABLE run_pins (
        run_id TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, kind, target)){without_rowid}""",
    # one holder per key: a step attempt computing a version (or a gc deleting), with the
    # process that holds it and when it last said it was alive
    """CREATE TABLE leases (
        lease_key TEXT PRIMARY KEY, run_id TEXT NOT NULL, step_key TEXT, process TEXT NOT NULL,
        acquired_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX leases_by_run ON leases (run_id)",
)

#: the start of URIs (an io manager's base directory), each stored once and named by its id in
#: index addresses and packed events (schema version 6)
_PREFIXES = "CREATE TABLE prefixes (id {autoinc}, text TEXT NOT NULL UNIQUE)"

#: the tables of a database at ``SCHEMA_VERSION`` (``{autoinc}``: the dialect's id column)
_TABLES = [
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, job_name TEXT NOT NULL, status TEXT NOT NULL,
        tags TEXT NOT NULL, run_config TEXT NOT NULL, parent_run_id TEXT, root_run_id TEXT,
        step_selection TEXT, start_time DOUBLE PRECISION, end_time DOUBLE PRECISION,
        heartbeat DOUBLE PRECISION)""",
    "CREATE INDEX runs_by_start ON runs (start_time)",
    """CREATE TABLE events (
        id {autoinc}, run_id TEXT NOT NULL, step_key TEXT, event_type TEXT NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX events_by_run ON events (run_id, id)",
    """CREATE TABLE output_index (
        output_key TEXT NOT NULL, version TEXT NOT NULL, address TEXT NOT NULL,
        run_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, size_bytes BIGINT, recipe TEXT,
        version_scheme INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (output_key, version))""",
    *_PINS_AND_LEASES,
    _PREFIXES,
]

#: the tables of memodag 0.1 before output_index.recipe (schema version 0): an unversioned database
#: missing some of them gets them before its migrations run
_VERSION_0_TABLES = [
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

_SCHEMA_TABLE_DDL = f"""CREATE TABLE {SCHEMA_TABLE} (
    version INTEGER PRIMARY KEY, memodag_version TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL)"""


@dataclass(frozen=True)
class Migration:
    """The statements that take a database from ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]
    #: run after ``statements`` on SQLite only
    sqlite_statements: tuple[str, ...] = ()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "output_index.recipe: what each stored version was computed from (explain)",
        ("ALTER TABLE output_index ADD COLUMN recipe TEXT",),
    ),
    Migration(
        2,
        "output_index.version_scheme: how each stored version was computed; every entry written "
        "before it was computed by scheme 1",
        (
            # a default, not a one-off update: a memodag 0.1 process still writing to this
            # instance during an upgrade names no scheme, and computes versions by scheme 1
            "ALTER TABLE output_index ADD COLUMN version_scheme INTEGER NOT NULL DEFAULT 1",
        ),
    ),
    Migration(
        3,
        "runs.heartbeat: when a STARTED run's driver last said it is alive (a run on another "
        "host whose heartbeat is old is found DIED); runs of older memodags have none",
        ("ALTER TABLE runs ADD COLUMN heartbeat DOUBLE PRECISION",),
    ),
    Migration(
        4,
        "run_pins and leases: outputs a live run relies on (gc keeps them) and step attempts a "
        "live run is computing (concurrent runs wait for them instead of computing them again)",
        _PINS_AND_LEASES,
    ),
    Migration(
        5,
        "events: one row may hold several events (event_type PACKED or PACKED_Z, its data the "
        "list of them); rows already stored are read as they are. Nothing to change in the "
        "tables: the version makes an older memodag refuse the instance instead of misreading it",
        (),
    ),
    Migration(
        6,
        "compact index rows and events: an index address is a JSON list without what its row "
        "says (run id, version), a packed events row replaces more repeated names, both name "
        "the start of a URI by its id in the new table prefixes; the unused "
        "index output_index_by_key is dropped (the primary key serves look-ups by key), and "
        "SQLite keeps run_pins in its primary key's B-tree. Rows already stored read as they are",
        (
            "DROP INDEX IF EXISTS output_index_by_key",
            _PREFIXES.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"),
        ),
        (
            """CREATE TABLE run_pins_6 (
                run_id TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, kind, target))
                WITHOUT ROWID""",
            "INSERT INTO run_pins_6 SELECT run_id, kind, target, created_at FROM run_pins",
            "DROP TABLE run_pins",
            "ALTER TABLE run_pins_6 RENAME TO run_pins",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def ensure_schema(
    run: Callable[[Callable[[Any], Any], bool], Any], dialect: Dialect, url: str
) -> None:
    """Create, upgrade or accept the schema of the database behind ``run``.

    Args:
        run: the storage's transaction runner: ``run(work, write)`` calls ``work(cursor)`` in one
            transaction (a write transaction holds SQLite's write lock from its start).
        dialect: the database's SQL dialect.
        url: the database, for messages (no password).

    Raises:
        StorageError: the database was written by a newer memodag, or the upgrade failed (then
            nothing of it is stored).
    """
    # the common case, a current database, costs one read and takes no lock
    if _current(run(lambda cur: _version(cur, dialect), False), url) >= SCHEMA_VERSION:
        return

    def upgrade(cur: Any) -> None:
        if dialect.schema_lock:
            cur.execute(dialect.schema_lock)
        # read again under the lock: another process may have upgraded it meanwhile
        found = _version(cur, dialect)
        if _current(found, url) >= SCHEMA_VERSION:
            return
        if found is None:
            for statement in _TABLES:
                cur.execute(
                    statement.format(autoinc=dialect.autoinc, without_rowid=dialect.without_rowid)
                )
            _stamp(cur, dialect, SCHEMA_VERSION)
            return
        if not _has_table(cur, dialect, SCHEMA_TABLE):
            for statement in _VERSION_0_TABLES:
                cur.execute(statement.format(autoinc=dialect.autoinc))
            found = _version(cur, dialect)
            assert found is not None
        for migration in MIGRATIONS:
            if migration.version > found:
                for statement in migration.statements:
                    cur.execute(
                        statement.format(
                            autoinc=dialect.autoinc, without_rowid=dialect.without_rowid
                        )
                    )
                if dialect.name == "sqlite":
                    for statement in migration.sqlite_statements:
                        cur.execute(statement)
                _stamp(cur, dialect, migration.version)

    run(upgrade, True)


def _current(found: int | None, url: str) -> int:
    """``found`` (None: no database yet, -1), after refusing a newer schema than this code's."""
    if found is not None and found > SCHEMA_VERSION:
        raise StorageError(
            f"instance database {url} has schema version {found}, written by a newer memodag; "
            f"this memodag knows schema versions up to {SCHEMA_VERSION} and never downgrades a "
            "database. Upgrade memodag (pip install -U memodag), or use another instance "
            "(MEMODAG_HOME or MEMODAG_INSTANCE_URL)"
        )
    return -1 if found is None else found


def _version(cur: Any, dialect: Dialect) -> int | None:
    """The schema version of the database (None when it has no memodag tables yet)."""
    if _has_table(cur, dialect, SCHEMA_TABLE):
        cur.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}")
        return int(cur.fetchone()[0] or 0)
    if not _has_table(cur, dialect, "output_index"):
        return 0 if _has_table(cur, dialect, "runs") else None
    # a database of memodag 0.1, from before schema versions: 1 once it had output_index.recipe
    cur.execute("SELECT * FROM output_index LIMIT 0")
    return 1 if "recipe" in [d[0] for d in cur.description] else 0


def _has_table(cur: Any, dialect: Dialect, name: str) -> bool:
    cur.execute(dialect.table_exists.replace("?", dialect.placeholder), (name,))
    return bool(cur.fetchone()[0])


def _stamp(cur: Any, dialect: Dialect, version: int) -> None:
    if not _has_table(cur, dialect, SCHEMA_TABLE):
        cur.execute(_SCHEMA_TABLE_DDL)
    ph = dialect.placeholder
    cur.execute(
        f"INSERT INTO {SCHEMA_TABLE} (version, memodag_version, applied_at) "
        f"VALUES ({ph}, {ph}, {ph})",
        (version, _memodag_version(), time.time()),
    )


def _memodag_version() -> str:
    # the package is imported by the time an instance opens (storage is imported through it)
    return str(getattr(sys.modules.get("memodag"), "__version__", "unknown"))
