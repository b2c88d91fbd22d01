"""``default_table_store``: the table store a job with table outputs gets when it names none.

Owns one choice: which store, from ``$MEMODAG_TABLE_STORE_URL`` (a ``postgresql://`` URL or a
DuckDB file) when the run config names no ``url``/``path``, else a DuckDB file under the
instance's home. Builds the store the DuckDB or PostgreSQL module defines and holds no SQL.
Semantics: docs/tables.md, "The table store".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from memodag.definitions.config import Field
from memodag.definitions.resources import InitResourceContext, io_manager
from memodag.definitions.secrets import redact_url
from memodag.errors import StorageError
from memodag.tables import duckdb as duckdb_store
from memodag.tables.cache import CONFIG_KEY, table_cache
from memodag.tables.handover import single_writer_store
from memodag.tables.io_manager import TableIOManager
from memodag.tables.postgres import URL_ENV, PostgresTableStore

_POSTGRES = re.compile(r"(?i)^postgres(ql)?(\+\w+)?://")
_DUCKDB = re.compile(r"(?i)^duckdb://")

#: the keys both stores take; the others belong to DuckDB only
_COMMON = ("schema_prefix", "schema_suffix", "inline_policy", CONFIG_KEY)

_CONFIG = {
    # every DuckDB key, without defaults: a key given for a PostgreSQL store is an error
    **{
        key: Field(spec.config_type, is_required=False, description=spec.description)
        for key, spec in duckdb_store.CONFIG.items()
    },
    "url": Field(
        str,
        is_required=False,
        description=f"postgresql://user@host:port/database or a DuckDB file (duckdb:///path or "
        f"a path); default: ${URL_ENV}, else tables.duckdb in the instance's home.",
    ),
}


def chosen_store(config: dict[str, Any], context: InitResourceContext) -> Any:
    """The ``TableStore`` the default resource builds for its resolved ``config``.

    Raises:
        StorageError: a URL that is neither PostgreSQL nor DuckDB, both ``url`` and ``path``,
            or a DuckDB-only key for a PostgreSQL store (naming the key, the value and the fix).
    """
    url = config.get("url")
    if url and config.get("path"):
        raise StorageError(
            "table_store: config gives both 'url' and 'path'; give one (path is a DuckDB file)"
        )
    source = "config 'url'"
    if not url and not config.get("path"):
        url = os.environ.get(URL_ENV) or None
        source = f"${URL_ENV}"
    prefix = config.get("schema_prefix") or ""
    suffix = config.get("schema_suffix") or ""
    if url and _POSTGRES.match(url):
        extra = sorted(k for k in config if k not in (*_COMMON, "url"))
        if extra:
            raise StorageError(
                f"table_store: {source} names a PostgreSQL database ({redact_url(url)}), which "
                f"takes no {', '.join(repr(k) for k in extra)} (DuckDB options); remove them"
            )
        return PostgresTableStore(url, schema_prefix=prefix, schema_suffix=suffix)
    path = config.get("path")
    if url:
        if "://" in url and not _DUCKDB.match(url):
            raise StorageError(
                f"table_store: {source} is {redact_url(url)!r}, which is neither a PostgreSQL "
                "URL (postgresql://user@host:port/database) nor a DuckDB file (duckdb:///path "
                "or a path)"
            )
        path = _DUCKDB.sub("", url)
    return duckdb_store.store_from_config({**config, "path": path}, context)


def is_duckdb(config: Mapping[str, Any]) -> bool:
    """Whether the default store, with this resolved config, is a DuckDB file (single-writer):
    the choice ``chosen_store`` makes, without opening anything."""
    url = config.get("url")
    if not url and not config.get("path"):
        url = os.environ.get(URL_ENV) or None
    return not (url and _POSTGRES.match(url))


@io_manager(config_schema=_CONFIG, unversioned_config={"inline_policy", CONFIG_KEY})
def default_table_store(context: InitResourceContext) -> TableIOManager:
    """The table store of a job that names none: PostgreSQL or DuckDB as
    ``$MEMODAG_TABLE_STORE_URL`` says, else DuckDB's ``tables.duckdb`` under the instance home."""
    config = dict(context.resource_config or {})
    store = chosen_store(config, context)
    return TableIOManager(
        store,
        inline_policy=config.get("inline_policy") or "default_false",
        cache=table_cache(store, config, context),
    )


# a DuckDB default store serves no worker a reference into its file (refused before the run)
single_writer_store(default_table_store, when=is_duckdb)
