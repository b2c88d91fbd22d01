"""Lazy SQL tasks on DuckDB (issue 17), against the same SQL run by hand in the same process.

- ``lazy_sql_groupby_1m``: a 1M x 10 table (stored once, untimed) and a ``@materialize(lazy=True)``
  task returning a group-by query over it. *memodag*: a run of the job in which the source is
  memoized and the lazy task's query is new (a constant in it changes every repetition, so it
  executes: ``CREATE TABLE AS`` inside DuckDB), run overhead and stage commit included. *by
  hand*: open the same DuckDB file, ``CREATE TABLE ... AS`` the same query in a transaction,
  close. Also the run when the query is already stored (body only, nothing executes), and the
  peak of Python heap allocations of one more of each, untimed (``tracemalloc``: rows passing through Python would
  show there; DuckDB's own memory is not counted). Medians of 5 alternating repetitions.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload

ROWS = 1_000_000
COLUMNS = 10
REPEAT = 5


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _query(source: str, i: int) -> str:
    columns = ", ".join(f"sum(c{c}) AS s{c}" for c in range(1, COLUMNS))
    return (
        f"SELECT CAST(c0 * 1000 AS BIGINT) AS key, {columns}, count(*) AS n "
        f"FROM {source} WHERE c1 > -{i + 1} GROUP BY 1"
    )


def _peak(fn: Any) -> tuple[float, float]:
    """Wall seconds and peak traced Python allocations (bytes) of ``fn()``."""
    tracemalloc.start()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return wall, float(peak)


def groupby_1m(scratch: Path) -> Metrics:
    import duckdb
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from memodag import Instance, Stage, duckdb_table_store, job, materialize

    path = scratch / "tables.duckdb"
    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"c{i}": rng.random(ROWS) for i in range(COLUMNS)})
    store = duckdb_table_store.configured({"path": str(path)})

    @materialize(version="1")
    def numbers() -> Any:
        return frame

    seen: dict[str, str] = {}

    def lazy_job(i: int) -> Any:
        @materialize(lazy=True, name="grouped", input_type=sa.Table)
        def grouped(numbers: sa.Table) -> Any:
            source = f'"{numbers.schema}"."{numbers.name}"'
            seen["source"] = source
            return _query(source, i)

        @job(name="lazy_bench", resource_defs={"table_store": store})
        def lazy_bench() -> None:
            with Stage("model"):
                grouped(numbers())

        return lazy_bench

    lazy_job(-1).execute_in_process(instance=instance)  # stores the source (untimed)

    def by_hand(i: int) -> None:
        conn = duckdb.connect(str(path))
        conn.execute("BEGIN TRANSACTION")
        conn.execute(f"CREATE TABLE by_hand_{i} AS {_query(seen['source'], 1000 + i)}")
        conn.execute("COMMIT")
        conn.close()

    runs, hands, stored = [], [], []
    for i in range(REPEAT):
        job_def = lazy_job(i)
        start = time.perf_counter()
        job_def.execute_in_process(instance=instance)
        runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        by_hand(i)
        hands.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = job_def.execute_in_process(instance=instance)  # stored: the body only
        stored.append(time.perf_counter() - start)
        assert result.executed_step_keys == ["grouped"]
    # peaks apart from the timings: tracing allocations slows Python code down
    job_def = lazy_job(REPEAT)
    _, run_peak = _peak(lambda: job_def.execute_in_process(instance=instance))
    _, hand_peak = _peak(lambda: by_hand(REPEAT))
    return {
        "run_s": _median(runs),
        "by_hand_s": _median(hands),
        "run_over_by_hand": _median(runs) / _median(hands),
        "stored_run_s": _median(stored),
        "python_peak_mb": run_peak / 1e6,
        "by_hand_python_peak_mb": hand_peak / 1e6,
    }


WORKLOADS = [
    Workload(
        "lazy_sql_groupby_1m",
        groupby_1m,
        description="lazy SQL group-by over a 1M x 10 DuckDB table (a new query each time) "
        "against the same CREATE TABLE AS by hand, same process",
        targets=(Target("within 1.2x by hand", "run_over_by_hand", max_value=1.2),),
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
]
