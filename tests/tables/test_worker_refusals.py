"""What workers of a DuckDB table store cannot do is refused before any step runs, for the
store a job names and for the default store alike (docs/tables.md, "Executors")."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from memodag import (
    ExecutionError,
    Stage,
    Table,
    duckdb_table_store,
    job,
    materialize,
    multiprocess_executor,
)

ran: list[str] = []


@materialize(version="1")
def src():
    ran.append("src")
    return Table(pd.DataFrame({"a": [1, 2, 3]}), name="src")


@materialize(lazy=True)
def count_rows():
    return "SELECT 1 AS n"


@materialize(lazy=True, input_type=sa.Table)
def ranked(src):
    return sa.select(src)


def test_lazy_tasks_on_duckdb_workers_are_refused_before_any_step_runs(instance, tmp_path):
    ran.clear()

    @job(executor_def=multiprocess_executor)
    def lazy_on_workers():  # the default table store: DuckDB, as its config says
        with Stage("a"):
            ranked(src())
        with Stage("b"):
            count_rows()

    config = {"resources": {"table_store": {"config": {"path": str(tmp_path / "t.duckdb")}}}}
    with pytest.raises(ExecutionError) as raised:
        lazy_on_workers.execute_in_process(run_config=config, instance=instance)
    message = str(raised.value)
    assert "op 'count_rows' (lazy=True)" in message  # a lazy task without inputs too
    assert "op 'ranked' (lazy=True)" in message
    assert "op 'ranked' input 'src' (sqlalchemy.Table)" in message
    assert "in_process_executor" in message and "PostgreSQL" in message
    assert ran == [] and instance.get_runs() == []


def test_a_named_duckdb_store_refuses_a_lazy_task_too(instance, tmp_path):
    @job(
        executor_def=multiprocess_executor,
        resource_defs={
            "table_store": duckdb_table_store.configured({"path": str(tmp_path / "t.duckdb")})
        },
    )
    def lazy_named():
        count_rows()

    with pytest.raises(ExecutionError, match="op 'count_rows' \\(lazy=True\\)"):
        lazy_named.execute_in_process(instance=instance)
    assert instance.get_runs() == []
