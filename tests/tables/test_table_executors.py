"""The same table job on every executor (in-process, multiprocess, a real Dask cluster), on a
DuckDB file and on the real PostgreSQL: equal tables, equal versions and physical names, stages
committed alike, a memoized rerun that recomputes nothing. On DuckDB, workers hand their tables
to the driver, which alone writes the file; on PostgreSQL each worker reads and writes directly."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa

from memodag import (
    ExecutionError,
    RetryPolicy,
    Stage,
    Table,
    dask_executor,
    duckdb_table_store,
    in_process_executor,
    job,
    materialize,
    multiprocess_executor,
    postgres_table_store,
)
from memodag.storage.instance import Instance
from memodag.storage.liveness import process_identity

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"

ORDERS = pd.DataFrame(
    {
        "order_id": [1, 2, 3, 4],
        "customer_id": [10, 10, 20, 30],
        "amount": [1.5, 2.5, 4.0, None],
        "note": ["a", None, "\\N", "d"],
    }
)


@materialize(version="1")
def orders():
    return Table(ORDERS, name="orders", primary_key="order_id", indexes=[["customer_id"]])


@materialize(version="1", input_type=pl.DataFrame)
def customers(orders):
    assert isinstance(orders, pl.DataFrame)
    return Table(
        orders.group_by("customer_id").agg(pl.len().alias("n")).sort("customer_id"),
        name="customers",
        primary_key="customer_id",
        type_map={"n": "INTEGER"},  # read back from the database, not from the worker's data
    )


@materialize(version="1")
def by_customer(orders: pd.DataFrame, customers: pa.Table):
    assert isinstance(orders, pd.DataFrame) and isinstance(customers, pa.Table)
    sums = orders.groupby("customer_id", as_index=False)["amount"].sum()
    return Table(sums.merge(customers.to_pandas(), on="customer_id"), name="by_customer")


@materialize(version="1")
def sql_total():
    # a query the database runs (CREATE TABLE AS): on DuckDB workers the driver runs it
    return Table("SELECT 42 AS answer", name="answer")


def warehouse_job(executor, store):
    @job(executor_def=executor, resource_defs={"table_store": store})
    def warehouse():
        with Stage("raw"):
            o = orders()
            c = customers(o)
        with Stage("model"):
            by_customer(o, c)
            sql_total()

    return warehouse


TABLES = ("raw.orders", "raw.customers", "model.by_customer", "model.answer")
NODES = ("orders", "customers", "by_customer", "sql_total")


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """One LocalCluster of 2 worker processes for the module, set up as the executor's own."""
    import dask
    import distributed

    from memodag.executors.dask import SCHEDULER_CONFIG

    with dask.config.set(SCHEDULER_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            preload=["memodag.executors.dask_worker"],
            silence_logs=logging.CRITICAL,
        )
    yield cluster.scheduler_address
    cluster.close(timeout=20)


def executor_named(name: str, request: pytest.FixtureRequest):
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor.configured({"max_concurrent": 2})
    return dask_executor.configured({"address": request.getfixturevalue("dask_address")})


def worker_environment(monkeypatch) -> None:
    """Worker processes import this checkout's memodag (the driver's environment travels)."""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([os.path.abspath(src), os.environ.get("PYTHONPATH", "")])
    )


class DuckDBSide:
    def __init__(self, path: str) -> None:
        self.path = path

    def store(self):
        return duckdb_table_store.configured({"path": self.path})

    def read(self, table: str) -> pd.DataFrame:
        with duckdb.connect(self.path, read_only=True) as conn:
            return conn.sql(f"SELECT * FROM {table}").df()

    def physical(self) -> list[tuple]:
        with duckdb.connect(self.path, read_only=True) as conn:
            return sorted(
                conn.execute(
                    "SELECT stage, name, physical, step_key FROM memodag_meta.stage_tables"
                ).fetchall()
            )


class PostgresSide:
    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix

    def store(self):
        return postgres_table_store.configured({"url": self.url, "schema_prefix": self.prefix})

    def read(self, table: str) -> pd.DataFrame:
        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as conn:
                return pd.read_sql(f"SELECT * FROM {self.prefix}{table}", conn)
        finally:
            engine.dispose()

    def physical(self) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                f"SELECT stage, name, physical, step_key FROM {self.prefix}memodag_meta.stage_tables"
            ).fetchall()
        return sorted((stage.removeprefix(self.prefix), *rest) for stage, *rest in rows)


@pytest.fixture(params=["duckdb", "postgres"])
def side(request, tmp_path) -> Iterator[DuckDBSide | PostgresSide]:
    if request.param == "duckdb":
        yield DuckDBSide(str(tmp_path / "warehouse.duckdb"))
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    prefix = f"x{uuid.uuid4().hex[:10]}_"
    yield PostgresSide(url, prefix)
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for (schema,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall():
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def file_instance(tmp_path, name: str) -> Instance:
    return Instance.from_url(
        f"sqlite:///{tmp_path / f'{name}.db'}", storage_dir=tmp_path / f"{name}-storage"
    )


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns[:1])).reset_index(drop=True)


def run_everywhere(side, tmp_path, request):
    """The job on each executor, each with its own instance and store corner; returns, per
    executor, the tables, the stage bookkeeping and the addresses of a first and a rerun."""
    found = {}
    for name in ("in_process", "multiprocess", "dask"):
        if isinstance(side, DuckDBSide):
            here = DuckDBSide(str(tmp_path / f"{name}.duckdb"))
        else:
            here = PostgresSide(side.url, f"{side.prefix}{name[:2]}_")
        instance = file_instance(tmp_path, name)
        warehouse = warehouse_job(executor_named(name, request), here.store())
        first = warehouse.execute_in_process(instance=instance)
        again = warehouse.execute_in_process(instance=instance)
        assert first.success and again.success
        versions = {
            # each executor has its own store: the URI's location part (after '@') differs
            e.step_key: (e.data["address"]["version"], e.data["address"]["uri"].split("@")[0])
            for e in instance.get_events(first.run_id)
            if e.event_type.name == "HANDLED_OUTPUT"
        }
        found[name] = {
            "tables": {t: sorted_frame(here.read(t)) for t in TABLES},
            "stages": here.physical(),
            "versions": versions,
            "memoized": sorted(
                e.step_key
                for e in instance.get_events(again.run_id)
                if e.event_type.name == "STEP_MEMOIZED"
            ),
            "result": first.output_for_node("by_customer", as_type=pd.DataFrame),
        }
        instance.close()
    return found


def test_the_same_table_job_gives_the_same_tables_on_every_executor(
    side, tmp_path, request, monkeypatch
):
    worker_environment(monkeypatch)
    found = run_everywhere(side, tmp_path, request)
    base = found["in_process"]
    assert base["memoized"] == sorted(NODES)
    assert list(base["tables"]["raw.orders"]["order_id"]) == [1, 2, 3, 4]
    assert base["tables"]["model.answer"]["answer"].tolist() == [42]
    for name in ("multiprocess", "dask"):
        other = found[name]
        for table in TABLES:
            pd.testing.assert_frame_equal(
                other["tables"][table].reset_index(drop=True),
                base["tables"][table].reset_index(drop=True),
                obj=f"{name}: {table}",
            )
        assert other["stages"] == base["stages"], name
        assert other["versions"] == base["versions"], name
        assert other["memoized"] == base["memoized"], name  # the rerun recomputed nothing
        pd.testing.assert_frame_equal(other["result"], base["result"])


@materialize(version="1", config_schema={"factor": int})
def scaled(context, orders: pd.DataFrame):
    # on a worker: the input came from a file the driver exported into the run's staging area
    staging = os.path.join(os.environ["PROBE_STAGING"], context.run_id, "in")
    on_worker = os.getpid() != int(os.environ["PROBE_DRIVER_PID"])
    assert on_worker == os.path.isdir(staging), (on_worker, staging)
    factor = context.op_config["factor"]
    return Table(orders.assign(amount=orders["amount"] * factor), name="scaled")


def test_duckdb_workers_read_stored_tables_the_driver_exports_and_the_files_go(
    tmp_path, request, monkeypatch
):
    worker_environment(monkeypatch)
    path = str(tmp_path / "w.duckdb")
    monkeypatch.setenv("PROBE_STAGING", path + ".staging")
    monkeypatch.setenv("PROBE_DRIVER_PID", str(os.getpid()))
    instance = file_instance(tmp_path, "w")

    def scaling(executor):
        @job(
            name="scaling",
            executor_def=executor,
            resource_defs={"table_store": DuckDBSide(path).store()},
        )
        def scaling_job():
            scaled(orders())

        return scaling_job

    def config(factor):
        return {"ops": {"scaled": {"config": {"factor": factor}}}}

    assert scaling(in_process_executor).execute_in_process(config(1), instance=instance).success
    # what a killed run left (its driver is gone), and a live run's directory (this process)
    me = process_identity()
    for run, identity in (("killed", {**me, "pid_start": -1}), ("live", me)):
        os.makedirs(os.path.join(path + ".staging", run, "out"))
        with open(os.path.join(path + ".staging", run, "driver.json"), "w") as file:
            json.dump(identity, file)
    # orders is stored (memoized): the driver exports it from the file for the worker
    again = scaling(executor_named("multiprocess", request)).execute_in_process(
        config(2), instance=instance
    )
    assert again.success
    memoized = [
        e.step_key
        for e in instance.get_events(again.run_id)
        if e.event_type.name == "STEP_MEMOIZED"
    ]
    assert memoized == ["orders"]
    table = DuckDBSide(path).read("scaling.scaled").sort_values("order_id")
    assert table["amount"].tolist()[:3] == [3.0, 5.0, 8.0]
    # the run's own hand-over files went with it, and so did the killed run's
    assert os.listdir(path + ".staging") == ["live"]
    instance.close()


def test_sql_reference_inputs_on_duckdb_workers_are_refused_before_the_run(tmp_path, request):
    @materialize(input_type=sa.Table)
    def reference(orders):
        return Table(sa.select(orders), name="copy")

    @materialize()
    def relation(orders: duckdb.DuckDBPyRelation):
        return orders

    path = str(tmp_path / "r.duckdb")
    instance = file_instance(tmp_path, "r")

    @job(
        executor_def=executor_named("multiprocess", request),
        resource_defs={"table_store": DuckDBSide(path).store()},
    )
    def referencing():
        o = orders()
        reference(o)
        relation(o)

    with pytest.raises(ExecutionError) as raised:
        referencing.execute_in_process(instance=instance)
    message = str(raised.value)
    assert "op 'reference' input 'orders' (sqlalchemy.Table)" in message
    assert "op 'relation' input 'orders' (duckdb.DuckDBPyRelation)" in message
    assert "input_type" in message and "in_process_executor" in message
    assert instance.get_runs() == []  # before the run was recorded
    instance.close()


def test_sql_reference_inputs_on_postgres_workers_work(request, tmp_path, monkeypatch):
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    worker_environment(monkeypatch)
    side = PostgresSide(url, f"r{uuid.uuid4().hex[:10]}_")

    @materialize(input_type=sa.Table)
    def reference(orders):
        return Table(sa.select(orders.c.order_id).where(orders.c.customer_id == 10), name="ten")

    @job(
        executor_def=executor_named("multiprocess", request),
        resource_defs={"table_store": side.store()},
    )
    def referencing():
        reference(orders())

    instance = file_instance(tmp_path, "p")
    try:
        assert referencing.execute_in_process(instance=instance).success
        assert sorted(side.read("referencing.ten")["order_id"]) == [1, 2]
    finally:
        instance.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for (schema,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (side.prefix,)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_a_table_the_driver_cannot_store_fails_the_op_and_commits_nothing(
    tmp_path, request, monkeypatch
):
    worker_environment(monkeypatch)

    @materialize(version="1", retry_policy=RetryPolicy(max_retries=0))
    def duplicated():
        return Table(pd.DataFrame({"k": [1, 1]}), name="dup", primary_key="k")

    path = str(tmp_path / "d.duckdb")

    @job(
        executor_def=executor_named("multiprocess", request),
        resource_defs={"table_store": DuckDBSide(path).store()},
    )
    def failing():
        duplicated()

    instance = file_instance(tmp_path, "d")
    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    messages = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
    assert "op 'duplicated' could not store output 'result'" in messages
    assert "primary key ['k'] has duplicate values" in messages
    with duckdb.connect(path, read_only=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'failing'"
        ).fetchall() == [(0,)]
    instance.close()


@pytest.mark.parametrize("executor", ["multiprocess", "dask"])
def test_a_table_fan_out_on_workers_stores_one_table_per_piece(
    executor, tmp_path, request, monkeypatch
):
    from memodag import DynamicOut, DynamicOutput, op

    worker_environment(monkeypatch)

    @op(version="1", out=DynamicOut())
    def regions():
        for name in ("north", "south", "east"):
            yield DynamicOutput(name, mapping_key=name)

    @materialize(version="1")
    def sales(region):
        return pd.DataFrame({"region": [region], "amount": [len(region)]})

    @materialize(version="1")
    def summary(parts: list):
        return pd.concat(parts, ignore_index=True).sort_values("region")

    path = str(tmp_path / "f.duckdb")

    @job(
        executor_def=executor_named(executor, request),
        resource_defs={"table_store": DuckDBSide(path).store()},
    )
    def fanned():
        with Stage("sales"):
            summary(regions().map(sales).collect())

    instance = file_instance(tmp_path, "f")
    result = fanned.execute_in_process(instance=instance)
    assert result.output_for_node("summary")["amount"].tolist() == [4, 5, 5]
    side = DuckDBSide(path)
    assert side.read("sales.sales_north").values.tolist() == [["north", 5]]
    assert side.read("sales.sales_east").values.tolist() == [["east", 4]]
    assert len(side.read("sales.summary")) == 3
    again = fanned.execute_in_process(instance=instance)
    assert set(again.memoized_step_keys) >= {"summary", "sales[north]", "sales[south]"}
    instance.close()


def test_a_relation_handed_to_a_duckdb_worker_by_default_fails_the_op_naming_the_fix(
    tmp_path, request, monkeypatch
):
    worker_environment(monkeypatch)

    @materialize(version="1")
    def made_by_duckdb():
        return duckdb.sql("SELECT 1 AS x")

    @materialize(version="1")
    def untyped(rows):  # no input_type: the kind its producer returned, a DuckDB relation
        return rows

    path = str(tmp_path / "u.duckdb")

    @job(
        executor_def=executor_named("multiprocess", request),
        resource_defs={"table_store": DuckDBSide(path).store()},
    )
    def relations():
        untyped(made_by_duckdb())

    instance = file_instance(tmp_path, "u")
    result = relations.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    messages = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
    assert "op 'untyped' input 'rows': a duckdb.DuckDBPyRelation names a table" in messages
    assert "input_type" in messages
    instance.close()
