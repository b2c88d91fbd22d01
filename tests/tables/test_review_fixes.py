"""Stale data a review found, through the public API on DuckDB and the real PostgreSQL: forced
runs on worker processes, external tables and SQL outputs under early cutoff, lazy tasks that
read an external table, and table names on workers."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import sqlalchemy as sa

from memodag import (
    ExternalTableReference,
    Out,
    Table,
    job,
    materialize,
    multiprocess_executor,
    op,
)
from tables.test_fresh_input import Db, db  # noqa: F401  (the fixture: DuckDB and PostgreSQL)
from tables.test_table_executors import worker_environment

VALUE_ENV = "MEMODAG_TEST_REVIEW_VALUE"


@materialize(version="1")
def source():
    with open(os.environ[VALUE_ENV]) as f:
        return pd.DataFrame({"x": [int(f.read())]})


@materialize(version="1", input_type=pd.DataFrame)
def report(source):
    return source * 10


def test_a_forced_run_on_worker_processes_stores_what_the_steps_made(
    db: Db,  # noqa: F811
    instance,
    tmp_path,
    monkeypatch,
):
    worker_environment(monkeypatch)
    value = tmp_path / "value.txt"
    monkeypatch.setenv(VALUE_ENV, str(value))

    @job(
        name="forced",
        executor_def=multiprocess_executor.configured({"max_concurrent": 1}),
        resource_defs={"table_store": db.store()},
    )
    def forced():
        report(source())

    value.write_text("1")
    first = forced.execute_in_process(instance=instance)
    assert first.output_for_node("report", as_type=pd.DataFrame)["x"].tolist() == [10]
    value.write_text("2")
    again = forced.execute_in_process(
        instance=instance, run_config={"cache_validation": "force_cache_invalid"}
    )
    assert again.executed_step_keys == ["source", "report"]
    assert again.output_for_node("source", as_type=pd.DataFrame)["x"].tolist() == [2]
    assert again.output_for_node("report", as_type=pd.DataFrame)["x"].tolist() == [20]
    assert db.query(f'SELECT x FROM "{db.stage_schema("forced")}".report') == [(20,)]


def external_source(where: Db):
    @materialize(name="src", version="1")
    def src():
        return ExternalTableReference("src", schema=where.external_schema)

    return src


def test_consumers_of_an_external_table_under_early_cutoff_see_its_new_data(
    db: Db,  # noqa: F811
    instance,
):
    src = external_source(db)

    @materialize(version="1", input_type=pd.DataFrame)
    def scaled(src):
        return src * 10

    @job(name="cut", resource_defs={"table_store": db.store()}, early_cutoff=True)
    def cut():
        scaled(src())

    db.write_outside([1])
    first = cut.execute_in_process(instance=instance)
    assert first.output_for_node("scaled", as_type=pd.DataFrame)["v"].tolist() == [10]
    db.write_outside([7])
    again = cut.execute_in_process(instance=instance)
    assert "scaled" in again.executed_step_keys
    assert again.output_for_node("scaled", as_type=pd.DataFrame)["v"].tolist() == [70]


def test_a_sql_output_under_early_cutoff_is_compared_by_the_table_it_made(
    db: Db,  # noqa: F811
    instance,
):
    src = external_source(db)

    @op(version="1", out=Out(io_manager_key="table_store", early_cutoff=True))
    def query(src):
        # the same text every run: only the table it makes tells new data apart
        return Table(f'SELECT v * 10 AS y FROM "{db.external_schema}".src', name="query")

    @materialize(version="1", input_type=pd.DataFrame)
    def total(query):
        return query

    @job(name="sqlcut", resource_defs={"table_store": db.store()})
    def sqlcut():
        total(query(src()))

    db.write_outside([1])
    first = sqlcut.execute_in_process(instance=instance)
    assert first.output_for_node("total", as_type=pd.DataFrame)["y"].tolist() == [10]
    db.write_outside([7])
    again = sqlcut.execute_in_process(instance=instance)
    assert again.output_for_node("total", as_type=pd.DataFrame)["y"].tolist() == [70]
    # the same data again: the query reruns (its source is fresh), its consumer does not
    third = sqlcut.execute_in_process(instance=instance)
    assert third.executed_step_keys == ["src", "query"]
    assert third.output_for_node("total", as_type=pd.DataFrame)["y"].tolist() == [70]


def test_a_lazy_task_reading_an_external_table_sees_its_new_data(
    db: Db,  # noqa: F811
    instance,
):
    src = external_source(db)

    @materialize(lazy=True, version="1", input_type=sa.Table)
    def query(src):
        return sa.select((src.c.v * 10).label("y")).select_from(src)

    @materialize(version="1", input_type=pd.DataFrame)
    def total(query):
        return query

    @job(name="lazyext", resource_defs={"table_store": db.store()})
    def lazyext():
        total(query(src()))

    db.write_outside([1])
    first = lazyext.execute_in_process(instance=instance)
    assert first.output_for_node("total", as_type=pd.DataFrame)["y"].tolist() == [10]
    db.write_outside([7])
    again = lazyext.execute_in_process(instance=instance)
    assert again.output_for_node("query", as_type=pd.DataFrame)["y"].tolist() == [70]
    assert again.output_for_node("total", as_type=pd.DataFrame)["y"].tolist() == [70]


def test_an_external_reference_on_workers_takes_no_table_name_of_the_stage(
    db: Db,  # noqa: F811
    instance,
    monkeypatch,
):
    if db.kind != "postgres":
        pytest.skip("DuckDB workers cannot check an external table (refused before the run)")
    worker_environment(monkeypatch)
    src = external_source(db)

    @materialize(version="1", input_type=pd.DataFrame)
    def copy(src):
        # the external reference's default name is its op's, "src": in-process that is free
        return Table(src, name="src")

    @job(
        name="names",
        executor_def=multiprocess_executor.configured({"max_concurrent": 1}),
        resource_defs={"table_store": db.store()},
    )
    def names():
        copy(src())

    db.write_outside([3])
    result = names.execute_in_process(instance=instance)
    assert result.success
    assert db.query(f'SELECT v FROM "{db.stage_schema("names")}".src') == [(3,)]
