"""The local table cache: copies of stored tables as Parquet files on this machine.

Owns where a table's cache file lives, what it records (which stored table, written by which
run) and reading, writing and removing those files. Decides nothing about versions, and never
serves a file whose record differs from what the caller asks for: a stale, truncated or corrupt
file reads as a miss (and is replaced). The table io manager (``memodag.tables.io_manager``)
decides when to ask. Semantics: docs/tables.md, "Local table cache". ``pyarrow`` is imported
only when a file is read or written.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memodag.definitions.config import Field, Noneable
from memodag.errors import StorageError
from memodag.hashing import hash_strings

if TYPE_CHECKING:
    import pyarrow as pa

    from memodag.tables.store import TableStore

#: the store config key holding the cache's settings (never part of any version)
CONFIG_KEY = "local_table_cache"
#: the Parquet schema metadata key holding a file's record
_RECORD_KEY = b"memodag.table_cache"
_SUFFIX = ".parquet"

#: the schema of the store config key ``local_table_cache``
CONFIG_FIELD = Field(
    Noneable(
        {
            "enabled": Field(
                bool,
                default_value=True,
                description="Whether to use the cache (false: as if the section were absent).",
            ),
            "path": Field(
                str,
                is_required=False,
                description="The directory of the cache files; default: table_cache in the "
                "instance's home.",
            ),
            "store_input": Field(
                bool,
                default_value=True,
                description="Write a table read from the store to the cache.",
            ),
            "store_output": Field(
                bool,
                default_value=False,
                description="Write a table an op returns to the cache when it is stored.",
            ),
            "use_stored_input_as_cache": Field(
                bool,
                default_value=True,
                description="Read inputs from the cache when it holds their stored table.",
            ),
            "min_rows": Field(
                int,
                default_value=10_000,
                description="Cache only tables of at least this many rows (a small table is "
                "read from the store about as fast).",
            ),
        }
    ),
    is_required=False,
    description="Copies of stored tables as Parquet files on this machine, read instead of the "
    "store (docs/tables.md, 'Local table cache'). Absent: the store's default (on for "
    "PostgreSQL, off for DuckDB).",
)


@dataclass(frozen=True)
class CacheRecord:
    """What a cache file holds: the physical table, at which version, written by which run
    (the address's run: a table rewritten under the same name by another run is another
    record)."""

    physical: str
    version: str
    run_id: str

    def to_bytes(self) -> bytes:
        return json.dumps([self.physical, self.version, self.run_id]).encode()


class LocalTableCache:
    """Parquet copies of one store's tables in one directory, a file per physical table.

    Invariants: a file appears only complete (written to a temporary name in the same
    directory, then renamed); a file is served only when its record equals the one asked for,
    and it passes Parquet's page checksums; anything else is a miss and the file is removed.
    Several processes may share the directory.
    """

    def __init__(
        self,
        directory: str,
        *,
        store_input: bool = True,
        store_output: bool = False,
        use_stored_input_as_cache: bool = True,
        min_rows: int = 10_000,
    ) -> None:
        self.directory = directory
        self.store_input = store_input
        self.store_output = store_output
        self.use_stored_input_as_cache = use_stored_input_as_cache
        self.min_rows = min_rows

    def path_of(self, physical: str) -> str:
        """The cache file of the physical table (which may not exist)."""
        return os.path.join(self.directory, physical + _SUFFIX)

    def get(self, record: CacheRecord) -> pa.Table | None:
        """The cached table for ``record``, or None (no file, another record, unreadable: a
        file that is not this record's is removed)."""
        if not self.use_stored_input_as_cache:
            return None
        path = self.path_of(record.physical)
        if not os.path.exists(path):
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, page_checksum_verification=True)
        except (OSError, pa.ArrowException):  # truncated, corrupt, removed meanwhile
            self._remove(path)
            return None
        metadata = table.schema.metadata or {}
        if metadata.get(_RECORD_KEY) != record.to_bytes():
            self._remove(path)
            return None
        kept = {k: v for k, v in metadata.items() if k != _RECORD_KEY}
        return table.replace_schema_metadata(kept or None)

    def read_through(
        self, record: CacheRecord, read: Callable[[], pa.Table]
    ) -> tuple[pa.Table, bool]:
        """The cached table for ``record``, else ``read()`` (the store's), written to the cache
        with ``store_input``; and whether it came from the cache."""
        data = self.get(record)
        if data is not None:
            return data, True
        data = read()
        if self.store_input:
            self.put(record, data)
        return data, False

    def wants(self, data: pa.Table) -> bool:
        """Whether a table this big is worth a file."""
        return data.num_rows >= self.min_rows

    def put(self, record: CacheRecord, data: pa.Table) -> None:
        """Write ``data`` as the file of ``record`` (replacing any other); a cache that cannot
        be written is only slower, so an error leaves no file and raises nothing."""
        if not self.wants(data):
            return
        import pyarrow.parquet as pq

        path = self.path_of(record.physical)
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        metadata = dict(data.schema.metadata or {})
        metadata[_RECORD_KEY] = record.to_bytes()
        try:
            os.makedirs(self.directory, exist_ok=True)
            pq.write_table(data.replace_schema_metadata(metadata), tmp, write_page_checksum=True)
            os.replace(tmp, path)
        except Exception:  # a full disk, a read-only directory, a type Parquet cannot hold
            self._remove(tmp)

    def discard(self, physical: str) -> None:
        """Remove the file of the physical table, and temporary files a killed write left."""
        path = self.path_of(physical)
        for leftover in [path, *glob.glob(glob.escape(path) + ".tmp-*")]:
            self._remove(leftover)

    @staticmethod
    def _remove(path: str) -> None:
        with contextlib.suppress(OSError):
            os.remove(path)


def same_after_store(data: pa.Table, dialect: str) -> bool:
    """Whether the store reads ``data`` back value for value (so the data an op returned may
    be cached as the stored table): PostgreSQL keeps timestamps to the microsecond."""
    if dialect != "postgres":
        return True
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in data.columns:
        if pa.types.is_timestamp(column.type) and column.type.unit == "ns":
            us = pc.cast(column, pa.timestamp("us", column.type.tz), safe=False)
            if pc.all(pc.equal(pc.cast(us, column.type), column)).as_py() is False:
                return False
    return True


def cache_from_config(
    config: Any, *, store_identity: str, home: str, default_enabled: bool
) -> LocalTableCache | None:
    """The cache a store's ``local_table_cache`` config asks for, or None when off.

    Args:
        config: the validated value of the ``local_table_cache`` key (None: absent).
        store_identity: the store's ``identity()``: each store gets a directory of its own.
        home: the instance's home, under which the default directory lies.
        default_enabled: whether an absent section means on (the store's default).
    """
    if config is None:
        if not default_enabled:
            return None
        config = {}
    if not config.get("enabled", True):
        return None
    min_rows = int(config.get("min_rows", 10_000))
    if min_rows < 0:
        raise StorageError(f"{CONFIG_KEY}.min_rows must be 0 or more, got {min_rows}")
    base = config.get("path") or os.path.join(home, "table_cache")
    directory = os.path.join(
        os.path.abspath(os.path.expanduser(base)), hash_strings(store_identity)[:16]
    )
    return LocalTableCache(
        directory,
        store_input=bool(config.get("store_input", True)),
        store_output=bool(config.get("store_output", False)),
        use_stored_input_as_cache=bool(config.get("use_stored_input_as_cache", True)),
        min_rows=min_rows,
    )


def table_cache(store: TableStore, config: Any, context: Any) -> LocalTableCache | None:
    """The cache of a store resource: its config's ``local_table_cache`` section, absent
    meaning on for PostgreSQL (Parquet reads several times faster than ADBC) and off for DuckDB
    (about as fast as its own reads); ``context`` is the resource's init context."""
    return cache_from_config(
        (config or {}).get(CONFIG_KEY),
        store_identity=store.identity(),
        home=instance_home(context),
        default_enabled=store.dialect == "postgres",
    )


def instance_home(context: Any) -> str:
    """The home of the run's instance (``$MEMODAG_HOME`` or the project's ``.memodag``)."""
    instance = getattr(context, "instance", None)
    home = getattr(instance, "home", None) if instance is not None else None
    if home is None and instance is not None:
        home = os.path.dirname(str(instance.storage_dir))
    if home is None:
        from memodag.storage.instance import find_home

        home = find_home()
    return str(home)


__all__ = [
    "CONFIG_FIELD",
    "CONFIG_KEY",
    "CacheRecord",
    "LocalTableCache",
    "cache_from_config",
    "instance_home",
    "same_after_store",
    "table_cache",
]
