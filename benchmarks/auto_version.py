"""AUTO_VERSION: what deciding that a stored polars task need not run costs, per task.

A job of one source table and ``TASKS`` polars tasks reading it, each with its own expression,
stored by a first run; then memoized reruns of the same job (nothing runs), timed. The baseline
is the same job with ``version="1"`` on every task, in the same process: the difference per task
is what calling the body on empty LazyFrames, serializing its plan and hashing it costs. polars
is imported by the job's module in both (``input_type=pl.LazyFrame``), so neither pays it here.
Medians of ``RERUNS`` reruns per variant. DuckDB store; its file is not opened by a memoized run.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload, timed_cpu

TASKS = 40
RERUNS = 5


def _job(name: str, auto: bool, scratch: Path) -> Any:
    import pandas as pd
    import polars as pl

    from memodag import AUTO_VERSION, Stage, Table, duckdb_table_store, job, materialize

    @materialize(version="1", name="source")
    def source() -> Any:
        return Table(pd.DataFrame({"k": range(1000), "x": [float(i) for i in range(1000)]}))

    def make(i: int) -> Any:
        @materialize(
            name=f"task_{i}",
            version=AUTO_VERSION if auto else "1",
            input_type=pl.LazyFrame,
        )
        def task(source: Any) -> Any:
            return (
                source.filter(pl.col("k") % (i + 2) == 0)
                .with_columns(y=pl.col("x") * i)
                .group_by("k")
                .agg(pl.col("y").sum())
            )

        return task

    tasks = [make(i) for i in range(TASKS)]
    store = duckdb_table_store.configured({"path": str(scratch / f"{name}.duckdb")})

    @job(name=name, resource_defs={"table_store": store})
    def polars_tasks() -> None:
        with Stage("raw"):
            s = source()
        with Stage("model"):
            for task in tasks:
                task(s)

    return polars_tasks


def _memoized(job_def: Any, instance: Any) -> tuple[float, float]:
    first = job_def.execute_in_process(instance=instance)
    assert len(first.executed_step_keys) == TASKS + 1
    walls, cpus = [], []
    for _ in range(RERUNS):
        result, wall, cpu = timed_cpu(lambda: job_def.execute_in_process(instance=instance))
        assert len(result.memoized_step_keys) == TASKS + 1, result.executed_step_keys
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def auto_version_decision(scratch: Path) -> Metrics:
    from memodag import Instance

    instance = Instance.from_url(f"sqlite:///{scratch / 'i.db'}", storage_dir=scratch / "s")
    plain_s, plain_cpu = _memoized(_job("plain", False, scratch), instance)
    auto_s, auto_cpu = _memoized(_job("auto", True, scratch), instance)
    return {
        "plain_memoized_s": plain_s,
        "auto_memoized_s": auto_s,
        "per_task_extra_s": (auto_s - plain_s) / TASKS,
        "per_task_extra_cpu_s": (auto_cpu - plain_cpu) / TASKS,
        "per_task_auto_s": auto_s / (TASKS + 1),
        "auto_over_plain": auto_s / plain_s,
    }


WORKLOADS = [
    Workload(
        "auto_version_decision",
        auto_version_decision,
        description=f"memoized rerun of {TASKS} stored AUTO_VERSION polars tasks, over the same "
        "job with version='1' (same process): the extra cost per task of deciding from the plan",
        primary="per_task_extra_s",
        targets=(Target("deciding a stored task < 20 ms", "per_task_extra_s", max_value=0.02),),
        repeat=3,
        requires="polars",
        install="pip install memodag[duckdb,polars,pandas]",
    ),
]
