"""Tables on PostgreSQL (issue 15): memodag's table store against raw ADBC in the same invocation.

- ``pg_raw_ingest_1m`` / ``pg_materialize_1m``: a 1M x 10 numeric pandas frame into a table,
  by hand (pandas -> Arrow -> ``adbc_ingest``) and as a ``@materialize`` op (the whole run:
  write, primary bookkeeping, stage commit). Target: memodag >= 0.8x raw throughput.
- ``pg_raw_read_1m`` / ``pg_load_1m``: the same table back to pandas, by hand
  (``fetch_arrow_table().to_pandas()``) and with ``output_for_node(as_type=pd.DataFrame)``.
- ``pg_one_row_chain``: 200 ``@materialize`` tasks in a chain, each reading the previous table
  and writing a one-row table; the cost per task above a one-task run (metadata included).

The database: ``$MEMODAG_BENCH_POSTGRES_URL``, else ``$MEMODAG_TEST_POSTGRES_URL``, else the
machine's ``postgresql://postgres@127.0.0.1:5432/test``. Each sample writes under its own
schema prefix and drops it afterwards.
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload, timed

ROWS = 1_000_000
COLUMNS = 10
CHAIN = 200


def _url() -> str:
    return (
        os.environ.get("MEMODAG_BENCH_POSTGRES_URL")
        or os.environ.get("MEMODAG_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


def _frame(mixed: bool = False) -> Any:
    """1M x 10 numeric columns; ``mixed`` adds 2 string columns and 1 timestamp column."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            f"c{i}": rng.integers(0, 1_000_000, ROWS) if i % 2 else rng.random(ROWS)
            for i in range(COLUMNS)
        }
    )
    if mixed:
        words = np.array([f"word{i:04d}" for i in range(1000)], dtype=object)
        frame["s1"] = words[rng.integers(0, 1000, ROWS)]
        frame["s2"] = words[rng.integers(0, 1000, ROWS)]
        frame["ts"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(
            rng.integers(0, 10**9, ROWS), unit="s"
        )
    return frame


def _drop_prefix(prefix: str) -> None:
    import psycopg

    with psycopg.connect(_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _prefix() -> str:
    return f"bench{uuid.uuid4().hex[:8]}_"


def raw_ingest(scratch: Path, mixed: bool = False) -> Metrics:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    frame = _frame(mixed)
    prefix = _prefix()
    try:
        with adbc.connect(_url(), autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{prefix}raw"')

            def write() -> None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                cur.adbc_ingest("frame", table, mode="create", db_schema_name=f"{prefix}raw")

            _, seconds = timed(write)

            def read() -> None:
                cur.execute(f'SELECT * FROM "{prefix}raw".frame')
                cur.fetch_arrow_table().to_pandas()

            _, read_seconds = timed(read)
    finally:
        _drop_prefix(prefix)
    return {"write_s": seconds, "read_s": read_seconds}


def _job(prefix: str, body: Any, name: str) -> Any:
    from memodag import job, postgres_table_store

    store = postgres_table_store.configured({"url": _url(), "schema_prefix": prefix})
    return job(body, name=name, resource_defs={"table_store": store})


def materialize_1m(scratch: Path, mixed: bool = False) -> Metrics:
    import adbc_driver_postgresql.dbapi  # noqa: F401  imported untimed, as the raw workload does
    import pandas as pd

    from memodag import Instance, Stage, Table, materialize

    frame = _frame(mixed)
    prefix = _prefix()

    @materialize(version="1")
    def big():
        return Table(frame, name="frame")

    def body() -> None:
        with Stage("raw"):
            big()

    instance = Instance.from_url(f"sqlite:///{scratch / 'instance.db'}", storage_dir=scratch)
    try:
        job_def = _job(prefix, body, "big_frame")
        result, seconds = timed(lambda: job_def.execute_in_process(instance=instance))
        _, read_seconds = timed(lambda: result.output_for_node("big", as_type=pd.DataFrame))
    finally:
        instance.close()
        _drop_prefix(prefix)
    return {"write_s": seconds, "read_s": read_seconds}


def one_row_chain(scratch: Path, store: str = "postgres") -> Metrics:
    import pandas as pd

    from memodag import Instance, Table, duckdb_table_store, job, materialize

    prefix = _prefix()

    @materialize(version="1")
    def first():
        return Table(pd.DataFrame({"n": [0]}))

    def make_step(i: int) -> Any:
        # one op per task: a table's default name is its op's, unique in the stage
        @materialize(version="1", input_type=pd.DataFrame, name=f"step{i}")
        def step(previous):
            return previous.assign(n=previous["n"] + 1)

        return step

    steps = [make_step(i) for i in range(1, CHAIN)]

    def chain(n: int) -> Any:
        def body() -> None:
            value = first()
            for step in steps[: n - 1]:
                value = step(value)

        return body

    def make_job(body: Any, name: str) -> Any:
        if store == "postgres":
            return _job(prefix, body, name)
        tables = duckdb_table_store.configured({"path": str(scratch / "tables.duckdb")})
        return job(body, name=name, resource_defs={"table_store": tables})

    instance = Instance.from_url(f"sqlite:///{scratch / 'instance.db'}", storage_dir=scratch)
    try:
        single = make_job(chain(1), "one")
        _, one_seconds = timed(lambda: single.execute_in_process(instance=instance))
        many = make_job(chain(CHAIN), "many")
        result, many_seconds = timed(lambda: many.execute_in_process(instance=instance))
        assert result.output_for_node(f"step{CHAIN - 1}", as_type=pd.DataFrame)["n"].tolist() == [
            CHAIN - 1
        ]
    finally:
        instance.close()
        if store == "postgres":
            _drop_prefix(prefix)
    return {"per_task_s": (many_seconds - one_seconds) / (CHAIN - 1), "chain_s": many_seconds}


def stage_commit_100(scratch: Path) -> Metrics:
    """The store's commit of a 100-table stage in which one table changed (after committing
    the stage once): what a run's end pays; ``copied_tables`` counts tables written for it."""
    import pyarrow as pa

    from memodag.tables.postgres import PostgresTableStore
    from memodag.tables.store import StageTable, TableSpec

    prefix = _prefix()
    store = PostgresTableStore(_url(), schema_prefix=prefix)
    try:
        store.open()
        data = pa.table({"n": [1]})
        for i in range(101):
            store.write_arrow(f"t{i}", data, TableSpec(f"t{i}"))
        tables = [StageTable(f"t{i}", f"t{i}", f"op{i}") for i in range(100)]
        store.commit_stage("s", "job", tables)
        changed = [*tables[:99], StageTable("t99", "t100", "op99")]
        _, seconds = timed(lambda: store.commit_stage("s", "job", changed))
        cur = store._cur()
        cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            (store.data_schema,),
        )
        copied = cur.fetchall()[0][0] - 101
    finally:
        store.close()
        _drop_prefix(prefix)
    return {"commit_s": seconds, "copied_tables": float(copied)}


WORKLOADS = [
    Workload(
        "pg_raw_ingest_1m",
        raw_ingest,
        "raw: 1M x 10 pandas -> Arrow -> ADBC ingest into PostgreSQL (and read back to pandas)",
        primary="write_s",
        repeat=3,
        requires="adbc_driver_postgresql",
    ),
    Workload(
        "pg_materialize_1m",
        materialize_1m,
        "memodag: a @materialize op returning the 1M x 10 frame, whole run, PostgreSQL store",
        baseline="pg_raw_ingest_1m",
        primary="write_s",
        repeat=3,
        requires="adbc_driver_postgresql",
        targets=(
            Target(">= 0.8x raw ADBC write throughput", "write_s", max_ratio=1.25),
            Target(">= 0.8x raw read to pandas", "read_s", max_ratio=1.25),
        ),
    ),
    Workload(
        "pg_raw_ingest_1m_mixed",
        functools.partial(raw_ingest, mixed=True),
        "raw, as pg_raw_ingest_1m with 2 string and 1 timestamp columns added",
        primary="write_s",
        repeat=3,
        requires="adbc_driver_postgresql",
    ),
    Workload(
        "pg_materialize_1m_mixed",
        functools.partial(materialize_1m, mixed=True),
        "memodag, as pg_materialize_1m with 2 string and 1 timestamp columns added",
        baseline="pg_raw_ingest_1m_mixed",
        primary="write_s",
        repeat=3,
        requires="adbc_driver_postgresql",
        targets=(
            Target(">= 0.8x raw ADBC write throughput", "write_s", max_ratio=1.25),
            Target(">= 0.8x raw read to pandas", "read_s", max_ratio=1.25),
        ),
    ),
    Workload(
        "pg_one_row_chain_duckdb",
        functools.partial(one_row_chain, store="duckdb"),
        f"the same {CHAIN}-task chain on the DuckDB store (a reference, same invocation)",
        primary="per_task_s",
        repeat=3,
    ),
    Workload(
        "pg_one_row_chain",
        one_row_chain,
        f"{CHAIN} one-row @materialize tasks in a chain on PostgreSQL, cost per task above one",
        baseline="pg_one_row_chain_duckdb",
        primary="per_task_s",
        repeat=3,
        requires="adbc_driver_postgresql",
        targets=(Target("under 5 ms per task", "per_task_s", max_value=0.005),),
    ),
    Workload(
        "pg_stage_commit_100",
        stage_commit_100,
        "commit of a 100-table stage where one table changed (PostgreSQL store)",
        primary="commit_s",
        repeat=3,
        requires="adbc_driver_postgresql",
        targets=(Target("under 100 ms", "commit_s", max_value=0.1),),
    ),
]
