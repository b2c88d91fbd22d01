"""The inline hand-over and early cutoff for tables (issue 18), baselines in the same invocation.

- ``inline_handover_1m``: a job of two pandas tasks, the first (``@materialize``) returning a
  1M x 10 frame that the second (a plain ``@op`` returning a float) reads and sums. *inline*: ``Table(inline=True)``, handed over in memory. The
  same job with the table materialized through DuckDB, and through PostgreSQL when
  ``$MEMODAG_BENCH_POSTGRES_URL`` (or ``$MEMODAG_TEST_POSTGRES_URL``) names one: a write and a
  read back. Whole runs, memoization off (both tasks run every time), medians of 3 alternating
  repetitions. Goal: the hand-over at least 10x faster than through either database.
- Early cutoff: the content hash of the frame's Arrow data (``arrow_content_hash``) against the
  DuckDB write of the same Arrow table (and the pickle hash of the ``Table`` that early cutoff
  used before). Goal: under 30% of the write.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload

ROWS = 1_000_000
COLUMNS = 10
REPEAT = 3


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _pg_url() -> str | None:
    return os.environ.get("MEMODAG_BENCH_POSTGRES_URL") or os.environ.get(
        "MEMODAG_TEST_POSTGRES_URL"
    )


def handover_1m(scratch: Path) -> Metrics:
    import uuid

    import numpy as np
    import pandas as pd

    from memodag import (
        Instance,
        Table,
        duckdb_table_store,
        job,
        materialize,
        op,
        postgres_table_store,
    )
    from memodag.versioning.strategy import MEMOIZED_RUN_TAG

    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"c{i}": rng.random(ROWS) for i in range(COLUMNS)})

    def job_of(store: Any, inline: bool) -> Any:
        @materialize(version="1")
        def numbers() -> Any:
            return Table(frame, inline=inline)

        @op(version="1")
        def total(numbers: pd.DataFrame) -> float:  # a plain op: its float goes to a file
            return float(numbers.to_numpy().sum())

        @job(name="inline_bench", resource_defs={"table_store": store})
        def inline_bench() -> None:
            total(numbers())

        return inline_bench

    duck = duckdb_table_store.configured({"path": str(scratch / "tables.duckdb")})
    jobs = {"inline": job_of(duck, True), "duckdb": job_of(duck, False)}
    url = _pg_url()
    prefix = f"b{uuid.uuid4().hex[:8]}_"
    if url:
        pg = postgres_table_store.configured({"url": url, "schema_prefix": prefix})
        jobs["postgres"] = job_of(pg, False)
    tags = {MEMOIZED_RUN_TAG: "false"}
    times: dict[str, list[float]] = {name: [] for name in jobs}
    try:
        for _ in range(REPEAT):
            for name, job_def in jobs.items():
                start = time.perf_counter()
                job_def.execute_in_process(instance=instance, tags=tags)
                times[name].append(time.perf_counter() - start)
    finally:
        if url:
            _drop_schemas(url, prefix)
    found = {f"{name}_s": _median(values) for name, values in times.items()}
    found["duckdb_over_inline"] = found["duckdb_s"] / found["inline_s"]
    found["inline_over_duckdb"] = found["inline_s"] / found["duckdb_s"]
    if "postgres_s" in found:
        found["postgres_over_inline"] = found["postgres_s"] / found["inline_s"]
        found["inline_over_postgres"] = found["inline_s"] / found["postgres_s"]
    found.update(_cutoff_cost(frame, scratch))
    return found


def _cutoff_cost(frame: Any, scratch: Path) -> Metrics:
    """The content hash against the DuckDB write of the same Arrow data (medians)."""
    import duckdb
    import pyarrow as pa

    from memodag import Table
    from memodag.hashing import hash_value
    from memodag.tables.cutoff import arrow_content_hash

    table = pa.Table.from_pandas(frame, preserve_index=False)
    conn = duckdb.connect(str(scratch / "cutoff.duckdb"))
    hashes, pickled, writes = [], [], []
    for i in range(REPEAT):
        start = time.perf_counter()
        arrow_content_hash(table)
        hashes.append(time.perf_counter() - start)
        start = time.perf_counter()
        hash_value(Table(frame))  # what early cutoff hashed before: the pickled Table
        pickled.append(time.perf_counter() - start)
        start = time.perf_counter()
        conn.register("data", table)
        conn.execute(f"CREATE TABLE t{i} AS SELECT * FROM data")
        conn.unregister("data")
        writes.append(time.perf_counter() - start)
    conn.close()
    return {
        "hash_s": _median(hashes),
        "write_s": _median(writes),
        "hash_over_write": _median(hashes) / _median(writes),
        "pickle_hash_s": _median(pickled),
    }


def _drop_schemas(url: str, prefix: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


WORKLOADS = [
    Workload(
        "inline_handover_1m",
        handover_1m,
        description="two pandas tasks handing a 1M x 10 frame over inline, against the same "
        "through DuckDB (and PostgreSQL), same process; early cutoff hash against the write",
        targets=(
            Target("inline >= 10x faster than DuckDB", "inline_over_duckdb", max_value=0.1),
            Target("inline >= 10x faster than PostgreSQL", "inline_over_postgres", max_value=0.1),
            Target("early cutoff hash < 30% of the write", "hash_over_write", max_value=0.3),
        ),
        repeat=1,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
]


if __name__ == "__main__":  # python -m benchmarks.inline: one sample, printed
    import tempfile

    with tempfile.TemporaryDirectory() as scratch_dir:
        for metric, value in handover_1m(Path(scratch_dir)).items():
            print(f"{metric:>22}: {value:.3f}")
