"""Tables in fan-outs on DuckDB (issue 16): collecting stored pieces into one frame.

- ``tables_fanout_collect``: 50 pieces of 20k rows x 5 columns (1M rows), stored by a mapped
  ``@materialize`` op; then runs in which only the collector re-runs (its version changes; the
  pieces are memoized). *concat*: the parameter is annotated ``pd.DataFrame`` (memodag
  concatenates through Arrow). *list*: annotated ``list[pd.DataFrame]``, the body calls
  ``pd.concat``. *raw*: by hand in the same process, open the DuckDB file, read the 50 tables
  to Arrow, ``pa.concat_tables``, ``to_pandas``. Ratios are over raw (run overhead, the
  memoization check of 51 steps and the stage commit included in memodag's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload

PIECES = 50
ROWS = 20_000
COLUMNS = 5


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def collect(scratch: Path) -> Metrics:
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from memodag import (
        DynamicOut,
        DynamicOutput,
        Instance,
        Stage,
        Table,
        duckdb_table_store,
        job,
        materialize,
        op,
    )

    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")
    path = scratch / "tables.duckdb"
    store = duckdb_table_store.configured({"path": str(path)})

    @op(version="1", out=DynamicOut())
    def seeds():
        for i in range(PIECES):
            yield DynamicOutput(i, mapping_key=f"p{i}")

    @materialize(version="1")
    def piece(seed):
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({f"c{i}": rng.random(ROWS) for i in range(COLUMNS)})
        return Table(frame, name="piece_{mapping_key}")

    def make(version: str, as_list: bool) -> Any:
        if as_list:

            @materialize(version=version, name="total")
            def total(parts: list[pd.DataFrame]):
                frame = pd.concat(parts, ignore_index=True)
                return pd.DataFrame({"rows": [len(frame)]})
        else:

            @materialize(version=version, name="total")
            def total(parts: pd.DataFrame):
                return pd.DataFrame({"rows": [len(parts)]})

        @job(name="fanout", resource_defs={"table_store": store})
        def fanout():
            with Stage("pieces"):
                total(seeds().map(piece).collect())

        return fanout

    make("0", False).execute_in_process(instance=instance)  # store the pieces
    physical = [
        row[0]
        for row in duckdb.connect(str(path), read_only=True)
        .execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'memodag_data' AND table_name LIKE 'piece%'"
        )
        .fetchall()
    ]
    assert len(physical) == PIECES

    def raw() -> float:
        start = time.perf_counter()
        conn = duckdb.connect(str(path), read_only=True)
        tables = [conn.sql(f'SELECT * FROM memodag_data."{p}"').to_arrow_table() for p in physical]
        frame = pa.concat_tables(tables).to_pandas()
        conn.close()
        assert len(frame) == PIECES * ROWS
        return time.perf_counter() - start

    def run(version: str, as_list: bool) -> float:
        fanout = make(version, as_list)
        start = time.perf_counter()
        result = fanout.execute_in_process(instance=instance)
        elapsed = time.perf_counter() - start
        assert result.executed_step_keys == ["total"], result.executed_step_keys
        return elapsed

    raws, concats, lists = [], [], []
    for i in range(3):
        raws.append(raw())
        concats.append(run(f"c{i}", False))
        lists.append(run(f"l{i}", True))
    raw_s, concat_s, list_s = _median(raws), _median(concats), _median(lists)
    return {
        "run_s": concat_s,
        "raw_s": raw_s,
        "list_s": list_s,
        "concat_over_raw": concat_s / raw_s,
        "list_over_raw": list_s / raw_s,
    }


WORKLOADS = [
    Workload(
        "tables_fanout_collect",
        collect,
        description="50 stored pieces (1M x 5) collected into one pandas frame by a re-run "
        "collector, over reading and concatenating them by hand (DuckDB, Arrow)",
        targets=(Target("collect within 1.5x by hand", "concat_over_raw", max_value=1.5),),
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
]
