"""The local table cache (issue 18): reading a 1M x 10 input from its Parquet copy against
reading it from the store, same process.

- ``table_cache_postgres_1m``: a 1M x 10 numeric table stored once in PostgreSQL (untimed). Then,
  alternating, REPEAT times each: the table loaded through memodag's table io manager
  (``output_for_node``, the path a consumer's input takes) with the cache off (ADBC
  ``fetch_arrow_table``) and with the cache holding it (Parquet). As ``pyarrow.Table`` (the read
  alone) and as pandas (what most consumers ask for). Also the first read with the cache on, a
  miss that also writes the file (what ``store_input`` costs once), and the file's size.
- ``table_cache_duckdb_1m``: the same on the DuckDB store, where the cache is off by default.

The database: ``$MEMODAG_BENCH_POSTGRES_URL``, else ``$MEMODAG_TEST_POSTGRES_URL``, else the
machine's ``postgresql://postgres@127.0.0.1:5432/test``; each sample uses its own schema
prefix and drops it afterwards.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload

ROWS = 1_000_000
COLUMNS = 10
REPEAT = 5


def _url() -> str:
    return (
        os.environ.get("MEMODAG_BENCH_POSTGRES_URL")
        or os.environ.get("MEMODAG_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


def _drop_prefix(prefix: str) -> None:
    import psycopg

    with psycopg.connect(_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _frame() -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            f"c{i}": rng.integers(0, 1_000_000, ROWS) if i % 2 else rng.random(ROWS)
            for i in range(COLUMNS)
        }
    )


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cache_read(scratch: Path, store_kind: str) -> Metrics:
    import pandas as pd
    import pyarrow as pa

    from memodag import Instance, Stage, duckdb_table_store, job, materialize, postgres_table_store

    frame = _frame()
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    cache_dir = scratch / "cache"

    def store(cache: dict[str, Any]) -> Any:
        if store_kind == "postgres":
            config = {"url": _url(), "schema_prefix": prefix}
            return postgres_table_store.configured({**config, "local_table_cache": cache})
        path = str(scratch / "tables.duckdb")
        return duckdb_table_store.configured({"path": path, "local_table_cache": cache})

    @materialize(version="1")
    def big() -> Any:
        return frame

    def make(cache: dict[str, Any]) -> Any:
        @job(name="cached", resource_defs={"table_store": store(cache)})
        def cached() -> None:
            with Stage("raw"):
                big()

        return cached

    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")
    try:
        # the table io managers of two runs of the same memoized table: one reads the store,
        # the other the cache (both runs write nothing: the table is stored by the first)
        # (the cache's settings are no part of any version: the second run is memoized)
        off = make({"enabled": False}).execute_in_process(instance=instance)
        on = make({"path": str(cache_dir)}).execute_in_process(instance=instance)
        assert on.memoized_step_keys == ["big"]
        first = _seconds(lambda: on.output_for_node("big", as_type=pa.Table))  # miss + write
        (file,) = cache_dir.glob("*/*.parquet")
        store_arrow, cache_arrow, store_pandas, cache_pandas = [], [], [], []
        for _ in range(REPEAT):
            store_arrow.append(_seconds(lambda: off.output_for_node("big", as_type=pa.Table)))
            cache_arrow.append(_seconds(lambda: on.output_for_node("big", as_type=pa.Table)))
            store_pandas.append(_seconds(lambda: off.output_for_node("big", as_type=pd.DataFrame)))
            cache_pandas.append(_seconds(lambda: on.output_for_node("big", as_type=pd.DataFrame)))
    finally:
        instance.close()
        if store_kind == "postgres":
            _drop_prefix(prefix)
    median = statistics.median
    return {
        "store_read_s": median(store_arrow),
        "cache_read_s": median(cache_arrow),
        "cache_over_store": median(cache_arrow) / median(store_arrow),
        "store_pandas_s": median(store_pandas),
        "cache_pandas_s": median(cache_pandas),
        "cache_over_store_pandas": median(cache_pandas) / median(store_pandas),
        "first_read_s": first,
        "first_over_store": first / median(store_arrow),
        "file_mb": file.stat().st_size / 1e6,
    }


WORKLOADS = [
    Workload(
        "table_cache_postgres_1m",
        functools.partial(cache_read, store_kind="postgres"),
        description="a 1M x 10 input read from the local table cache (Parquet) against from "
        "PostgreSQL (ADBC), same process, medians of 5 alternating reads",
        primary="cache_read_s",
        targets=(
            Target(">= 2x faster than ADBC (Arrow)", "cache_over_store", max_value=0.5),
            Target(">= 2x faster than ADBC (pandas)", "cache_over_store_pandas", max_value=0.5),
        ),
        repeat=3,
        requires="adbc_driver_postgresql",
        install="pip install memodag[postgres,pandas]",
    ),
    Workload(
        "table_cache_duckdb_1m",
        functools.partial(cache_read, store_kind="duckdb"),
        description="the same on the DuckDB store (where the cache is off by default)",
        primary="cache_read_s",
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
]
