"""Tables on DuckDB (issue 15), each against raw DuckDB work measured in the same process.

- ``tables_1m``: a 1M x 10 float pandas frame. *raw*: ``register`` + ``CREATE TABLE AS`` into a
  DuckDB file, and reading it back to pandas (``to_arrow_table().to_pandas()``) and polars
  (``.pl()``), by hand. *memodag*: a ``@materialize`` op returning the same frame, run in a job
  with the default DuckDB table store (run overhead and stage commit included), then
  ``output_for_node(as_type=...)``. Ratios are memodag over raw (1.25 = 0.8x raw throughput).
- ``tables_1m_memory``: the peak memory of that materialization above what the process held
  before it (the frame included), over the frame's own size.
- ``tables_w3``: W3 as whole processes: a job making a 1M x 10 frame, storing it as a table and
  grouping it in pandas, cold (nothing stored) and warm (memoized) against the same work by
  hand with duckdb + pandas, and against importing the job's module.
- ``tables_stage_commit_100``: a stage of 100 tables where one changed: the commit.
- ``tables_one_row_chain``: 200 ``@materialize`` ops in a chain, each reading its input table
  as pandas and returning a one-row table; per task above a run of the first task alone,
  against the same chain by hand on one DuckDB connection (read to pandas, add one, write), and
  against the same chain with ``hold_file: run`` (``idle_over_hold_run``: what letting an idle
  file go costs a busy run).
- ``tables_executors``: chains of one-row ``@materialize`` ops on DuckDB, per task (a chain of
  110 less a chain of 10, each run starting its workers), in process and on the multiprocess
  executor (where each table goes through the driver: an Arrow IPC file each way), against the
  same chain of plain ops (pickles on disk) on the multiprocess executor, all in one sample;
  wall time and the driver's CPU time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload, timed_cpu

ROWS = 1_000_000
COLUMNS = 10
CHAIN = 200


def _frame() -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(ROWS) for i in range(COLUMNS)})


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def one_million(scratch: Path) -> Metrics:
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from memodag import Instance, job, materialize

    frame = _frame()
    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")

    def raw_write(path: Path) -> float:
        start = time.perf_counter()
        conn = duckdb.connect(str(path))
        conn.register("src", pa.Table.from_pandas(frame, preserve_index=False))
        conn.execute("CREATE TABLE t AS SELECT * FROM src")
        conn.close()
        return time.perf_counter() - start

    def raw_read(path: Path, kind: str) -> float:
        start = time.perf_counter()
        conn = duckdb.connect(str(path), read_only=True)
        if kind == "pandas":
            conn.sql("SELECT * FROM t").to_arrow_table().to_pandas()
        else:
            conn.sql("SELECT * FROM t").pl()
        conn.close()
        return time.perf_counter() - start

    raw_w, raw_p, raw_l, mem_w, mem_p, mem_l = [], [], [], [], [], []
    for i in range(3):
        path = scratch / f"raw{i}.duckdb"
        raw_w.append(raw_write(path))
        raw_p.append(raw_read(path, "pandas"))
        raw_l.append(raw_read(path, "polars"))

        @materialize(version=str(i), name="big")
        def big() -> Any:
            return frame

        @job(name="tables_1m")
        def one() -> None:
            big()

        start = time.perf_counter()
        result = one.execute_in_process(instance=instance)
        mem_w.append(time.perf_counter() - start)
        start = time.perf_counter()
        back = result.output_for_node("big", as_type=pd.DataFrame)
        mem_p.append(time.perf_counter() - start)
        assert len(back) == ROWS
        start = time.perf_counter()
        result.output_for_node("big", as_type=pl.DataFrame)
        mem_l.append(time.perf_counter() - start)
    os.environ.pop("MEMODAG_HOME", None)
    return {
        "run_s": _median(mem_w),
        "raw_write_s": _median(raw_w),
        "write_ratio": _median(mem_w) / _median(raw_w),
        "raw_load_pandas_s": _median(raw_p),
        "load_pandas_ratio": _median(mem_p) / _median(raw_p),
        "raw_load_polars_s": _median(raw_l),
        "load_polars_ratio": _median(mem_l) / _median(raw_l),
    }


def one_million_memory(scratch: Path) -> Metrics:
    """Peak memory of materializing the 1M x 10 frame (a job run, commit included) above what
    the process held before (the frame, the libraries, a warmed-up store): the kernel's peak
    RSS (``VmHWM``) is reset just before the run (Linux ``clear_refs``)."""
    import gc

    import pandas as pd

    from memodag import Instance, job, materialize

    frame = _frame()
    frame_bytes = int(frame.memory_usage(index=False).sum())
    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")

    def materializing(value: Any, version: str) -> Any:
        @materialize(version=version, name="big")
        def big() -> Any:
            return value

        @job(name="tables_1m_memory")
        def one() -> None:
            big()

        return one

    # the libraries and the store's file, loaded by a one-row run first
    materializing(pd.DataFrame({"c0": [0.0]}), "warm").execute_in_process(instance=instance)
    gc.collect()
    before = _proc_status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # resets VmHWM to the current RSS
    start = time.perf_counter()
    materializing(frame, "1").execute_in_process(instance=instance)
    run_s = time.perf_counter() - start
    extra = _proc_status_bytes("VmHWM") - before
    os.environ.pop("MEMODAG_HOME", None)
    return {
        "run_s": run_s,
        "frame_mb": frame_bytes / 2**20,
        "extra_peak_mb": extra / 2**20,
        "extra_peak_over_frame": extra / frame_bytes,
    }


def _proc_status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status", encoding="ascii") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}: this workload needs Linux")


def one_row_chain(scratch: Path) -> Metrics:
    """The chain with the default store (``hold_file: idle``), then again on a new instance
    and file with ``hold_file: run`` (held all run: the floor the idle policy is held to)."""
    idle = _one_row_chain(scratch / "idle", None)
    held = _one_row_chain(scratch / "run", "run")
    return {
        **idle,
        "hold_run_per_task_s": held["per_task_s"],
        "idle_over_hold_run": idle["per_task_s"] / held["per_task_s"],
    }


def _one_row_chain(scratch: Path, hold_file: str | None) -> Metrics:
    import pandas as pd

    from memodag import Instance, duckdb_table_store, job, materialize

    scratch.mkdir(parents=True, exist_ok=True)
    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")
    resources = {}
    if hold_file is not None:
        config = {"path": str(scratch / "tables.duckdb"), "hold_file": hold_file}
        resources["table_store"] = duckdb_table_store.configured(config)

    def make(i: int) -> Any:
        if i == 0:

            @materialize(version="1", name="t0")
            def first() -> Any:
                return pd.DataFrame({"x": [0]})

            return first

        @materialize(version="1", name=f"t{i}")
        def step(previous: pd.DataFrame) -> Any:
            return previous + 1

        return step

    ops = [make(i) for i in range(CHAIN)]

    def chain_job(n: int, name: str) -> Any:
        @job(name=name, resource_defs=resources)
        def chain() -> None:
            value = ops[0]()
            for op_def in ops[1:n]:
                value = op_def(value)

        return chain

    first_only = chain_job(1, "chain_first")
    whole = chain_job(CHAIN, "chain_whole")
    _, first_s, first_cpu = timed_cpu(lambda: first_only.execute_in_process(instance=instance))
    _, run_s, run_cpu = timed_cpu(lambda: whole.execute_in_process(instance=instance))
    _, raw_s, raw_cpu = timed_cpu(lambda: _raw_chain(scratch / "raw.duckdb"))
    per_task = (run_s - first_s) / (CHAIN - 1)
    return {
        "run_s": run_s,
        "first_task_run_s": first_s,
        "per_task_s": per_task,
        "per_task_cpu_s": (run_cpu - first_cpu) / (CHAIN - 1),
        "raw_per_task_s": raw_s / CHAIN,
        "raw_per_task_cpu_s": raw_cpu / CHAIN,
        "per_task_over_raw": per_task / (raw_s / CHAIN),
    }


EXECUTOR_SHORT, EXECUTOR_LONG = 10, 110


def executors_chain(scratch: Path) -> Metrics:
    import pandas as pd

    from memodag import Instance, in_process_executor, job, materialize, multiprocess_executor, op

    def make(i: int, table: bool) -> Any:
        decorate = materialize(version="1", name=f"t{i}") if table else op(name=f"t{i}")
        if i == 0:
            return decorate(lambda: pd.DataFrame({"x": [0]}))

        def step(previous: pd.DataFrame) -> Any:
            return previous + 1

        return decorate(step)

    def per_task(label: str, table: bool, executor: Any) -> tuple[float, float]:
        """Wall and driver CPU seconds per task: a long chain's run less a short one's (each
        run starts its workers), over the tasks between them."""
        instance = Instance.from_url(
            f"sqlite:///{scratch / f'{label}.db'}", storage_dir=scratch / label
        )
        ops = [make(i, table) for i in range(EXECUTOR_LONG)]

        def chain_job(n: int) -> Any:
            @job(name=f"chain_{label}_{n}", executor_def=executor)
            def chain() -> None:
                value = ops[0]()
                for op_def in ops[1:n]:
                    value = op_def(value)

            return chain

        short, long = chain_job(EXECUTOR_SHORT), chain_job(EXECUTOR_LONG)
        _, short_s, short_cpu = timed_cpu(lambda: short.execute_in_process(instance=instance))
        _, long_s, long_cpu = timed_cpu(lambda: long.execute_in_process(instance=instance))
        instance.close()
        tasks = EXECUTOR_LONG - EXECUTOR_SHORT
        return (long_s - short_s) / tasks, (long_cpu - short_cpu) / tasks

    multiprocess = multiprocess_executor.configured({"max_concurrent": 1})
    per_task("warm", False, multiprocess)  # starts the fork server: not part of any figure
    in_process, in_process_cpu = per_task("in_process", True, in_process_executor)
    tables, tables_cpu = per_task("multiprocess", True, multiprocess)
    plain, plain_cpu = per_task("plain", False, multiprocess)
    return {
        "in_process_per_task_s": in_process,
        "multiprocess_per_task_s": tables,
        "plain_multiprocess_per_task_s": plain,
        "multiprocess_over_in_process": tables / in_process,
        "table_hand_over_per_task_s": tables - plain,
        "in_process_driver_cpu_per_task_s": in_process_cpu,
        "multiprocess_driver_cpu_per_task_s": tables_cpu,
        "plain_multiprocess_driver_cpu_per_task_s": plain_cpu,
    }


def _raw_chain(path: Path) -> None:
    """The chain by hand on one held DuckDB connection: per task, read the previous table to
    pandas, add one, write it with register + CREATE TABLE AS in its own transaction."""
    import duckdb
    import pandas as pd
    import pyarrow as pa

    conn = duckdb.connect(str(path))
    conn.register("src", pa.Table.from_pandas(pd.DataFrame({"x": [0]}), preserve_index=False))
    conn.execute("CREATE TABLE t0 AS SELECT * FROM src")
    conn.unregister("src")
    for i in range(1, CHAIN):
        frame = conn.sql(f"SELECT * FROM t{i - 1}").to_arrow_table().to_pandas() + 1
        conn.register("src", pa.Table.from_pandas(frame, preserve_index=False))
        conn.execute("BEGIN TRANSACTION")
        conn.execute(f"CREATE TABLE t{i} AS SELECT * FROM src")
        conn.execute("COMMIT")
        conn.unregister("src")
    conn.close()


_W3_JOB = """
import numpy as np
import pandas as pd

from memodag import job, materialize


@materialize(version="1")
def numbers():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"c{i}": rng.random(1_000_000) for i in range(10)})
    frame["key"] = (frame["c0"] * 100).astype("int64")
    return frame


@materialize(version="1")
def grouped(numbers: pd.DataFrame):
    return numbers.groupby("key", as_index=False)["c1"].sum()


@job
def w3():
    grouped(numbers())


if __name__ == "__main__":
    w3.execute_in_process()
"""

_W3_BY_HAND = """
import sys

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

rng = np.random.default_rng(0)
frame = pd.DataFrame({f"c{i}": rng.random(1_000_000) for i in range(10)})
frame["key"] = (frame["c0"] * 100).astype("int64")
conn = duckdb.connect(sys.argv[1])
conn.register("src", pa.Table.from_pandas(frame, preserve_index=False))
conn.execute("CREATE TABLE numbers AS SELECT * FROM src")
back = conn.sql("SELECT * FROM numbers").to_arrow_table().to_pandas()
result = back.groupby("key", as_index=False)["c1"].sum()
conn.register("res", pa.Table.from_pandas(result, preserve_index=False))
conn.execute("CREATE TABLE grouped AS SELECT * FROM res")
conn.close()
"""


def w3(scratch: Path) -> Metrics:
    """W3 as whole processes: memodag cold and warm, by hand, and importing the job module."""
    import subprocess
    import sys

    scratch = scratch.resolve()
    (scratch / "w3_job.py").write_text(_W3_JOB)
    (scratch / "w3_by_hand.py").write_text(_W3_BY_HAND)
    env = {**os.environ, "MEMODAG_HOME": str(scratch / "home")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch), env.get("PYTHONPATH")]))

    def run(*args: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, env=env, cwd=scratch)
        return time.perf_counter() - start

    by_hand = run("w3_by_hand.py", str(scratch / "by_hand.duckdb"))
    cold = run("w3_job.py")
    warm = run("w3_job.py")
    imports = run("-c", "import w3_job")
    return {
        "run_s": cold,
        "by_hand_s": by_hand,
        "cold_over_by_hand": cold / by_hand,
        "warm_s": warm,
        "warm_above_import_s": warm - imports,
    }


def stage_commit_100(scratch: Path) -> Metrics:
    """A stage of 100 one-thousand-row tables, committed; then one table changes: the second
    run's commit (one transaction) and the bytes the file grew by besides the new table."""
    import pandas as pd

    from memodag import Instance, Stage, job, materialize
    from memodag.tables.duckdb import DuckDBTableStore

    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")
    commits: list[float] = []
    original = DuckDBTableStore.commit_stage

    def timed_commit(self: Any, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        original(self, *args, **kwargs)
        commits.append(time.perf_counter() - start)

    DuckDBTableStore.commit_stage = timed_commit  # type: ignore[method-assign]

    def make(i: int, version: str) -> Any:
        @materialize(version=version, name=f"t{i}")
        def table() -> Any:
            return pd.DataFrame({"x": [i] * 1000})

        return table

    def wide(version: str) -> Any:
        ops = [make(i, version if i == 0 else "1") for i in range(100)]

        @job(name="wide")
        def stage_of_100() -> None:
            with Stage("wide"):
                for op_def in ops:
                    op_def()

        return stage_of_100

    wide("1").execute_in_process(instance=instance)
    commits.clear()
    start = time.perf_counter()
    wide("2").execute_in_process(instance=instance)
    return {"run_s": time.perf_counter() - start, "commit_s": commits[0]}


WORKLOADS = [
    Workload(
        "tables_1m",
        one_million,
        description="1M x 10 pandas frame: materialize (job run) and load back, over raw "
        "DuckDB register+CTAS and reads in the same process",
        targets=(
            Target("write >= 0.8x raw throughput", "write_ratio", max_value=1.25),
            Target("load pandas >= 0.8x raw", "load_pandas_ratio", max_value=1.25),
            Target("load polars >= 0.8x raw", "load_polars_ratio", max_value=1.25),
        ),
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas,polars]",
    ),
    Workload(
        "tables_1m_memory",
        one_million_memory,
        description="peak memory of materializing the 1M x 10 pandas frame (job run, commit "
        "included) above what the process held before, over the frame's own size (Linux)",
        primary="extra_peak_mb",
        targets=(Target("peak < 2x the frame", "extra_peak_over_frame", max_value=2.0),),
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
    Workload(
        "tables_w3",
        w3,
        description="W3 whole process: 1M x 10 frame -> table -> pandas group-by, memodag cold "
        "and warm against the same work by hand (duckdb + pandas)",
        targets=(
            Target("cold within 1.3x by hand", "cold_over_by_hand", max_value=1.3),
            Target("warm < 0.1 s above importing the job", "warm_above_import_s", max_value=0.1),
        ),
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
    Workload(
        "tables_stage_commit_100",
        stage_commit_100,
        description="a stage of 100 tables where one changed: the run's stage commit",
        primary="commit_s",
        targets=(Target("commit < 100 ms", "commit_s", max_value=0.1),),
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
    Workload(
        "tables_one_row_chain",
        one_row_chain,
        description="200 one-row @materialize tasks in a chain (pandas in, table out), DuckDB",
        primary="per_task_s",
        targets=(
            Target("per task < 10 ms", "per_task_s", max_value=10e-3),
            Target("hold_file idle within 1.2x of run", "idle_over_hold_run", max_value=1.2),
        ),
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
    Workload(
        "tables_executors",
        executors_chain,
        description="one-row @materialize tasks in a chain on DuckDB: per task "
        "in process and on the multiprocess executor, against plain ops on multiprocess",
        primary="multiprocess_per_task_s",
        repeat=3,
        requires="duckdb",
        install="pip install memodag[duckdb,pandas]",
    ),
]
