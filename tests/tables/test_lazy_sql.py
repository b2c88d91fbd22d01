"""Lazy table tasks (``@materialize(lazy=True)``) on DuckDB and the real PostgreSQL, through the
public API: the body runs every run, the output is versioned by the query (or frame) it returns,
nothing executes in the database when that version is stored, and consumers are versioned by it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from memodag import (
    DefinitionError,
    RawSql,
    Stage,
    Table,
    duckdb_table_store,
    job,
    materialize,
    postgres_table_store,
)

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"


class Store:
    """One table store under test: its resource, and a way to read what a client sees."""

    def __init__(self, kind: str, resource, reader, prefix: str) -> None:
        self.kind = kind
        self.resource = resource
        self.reader = reader
        self.prefix = prefix

    def query(self, sql: str):
        return [tuple(r) for r in self.reader(sql.replace("{p}", self.prefix))]


@pytest.fixture(params=["duckdb", "postgres"])
def store(request, tmp_path) -> Iterator[Store]:
    if request.param == "duckdb":
        import duckdb

        path = str(tmp_path / "tables.duckdb")

        def read(sql):
            with duckdb.connect(path, read_only=True) as conn:
                return conn.execute(sql).fetchall()

        yield Store("duckdb", duckdb_table_store.configured({"path": path}), read, "")
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    import psycopg

    prefix = f"t{uuid.uuid4().hex[:10]}_"

    def read(sql):
        with psycopg.connect(base) as conn:
            return conn.execute(sql).fetchall()

    yield Store(
        "postgres",
        postgres_table_store.configured({"url": base, "schema_prefix": prefix}),
        read,
        prefix,
    )
    with psycopg.connect(base, autocommit=True) as conn:
        for (schema,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall():
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


ORDERS = pd.DataFrame(
    {"order_id": [1, 2, 3], "customer_id": [10, 10, 20], "amount": [1.5, 2.5, 4.0]}
)


def orders_op(frame=ORDERS, version="1"):
    @materialize(version=version, name="orders")
    def orders():
        return Table(frame, name="orders", primary_key="order_id")

    return orders


def warehouse(store, lazy_op, orders=None, consumer_calls=None):
    calls = consumer_calls if consumer_calls is not None else []
    source = orders or orders_op()

    @materialize(version="1", input_type=pd.DataFrame)
    def report(by_customer):
        calls.append(1)
        return Table(by_customer.sort_values("customer_id"), name="report")

    @job(name="lazy_wh", resource_defs={"table_store": store.resource})
    def lazy_wh():
        with Stage("raw"):
            o = source()
        with Stage("model"):
            report(lazy_op(o))

    return lazy_wh


def physical_tables(store) -> int:
    return store.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{p}memodag_data'"
    )[0][0]


def test_a_lazy_query_runs_its_body_every_run_and_executes_only_a_new_query(store, instance):
    bodies = []
    reports = []

    @materialize(lazy=True, input_type=sa.Table, name="by_customer")
    def by_customer(orders):
        bodies.append(1)
        return sa.select(
            orders.c.customer_id, sa.func.sum(orders.c.amount).label("total")
        ).group_by(orders.c.customer_id)

    wh = warehouse(store, by_customer, consumer_calls=reports)
    first = wh.execute_in_process(instance=instance)
    assert first.executed_step_keys == ["orders", "by_customer", "report"]
    assert store.query("SELECT * FROM {p}model.by_customer ORDER BY customer_id") == [
        (10, 4.0),
        (20, 4.0),
    ]
    tables = physical_tables(store)

    second = wh.execute_in_process(instance=instance)
    # the body ran again, found its query's table stored: nothing created, consumer memoized
    assert bodies == [1, 1] and reports == [1]
    assert "by_customer" in second.executed_step_keys
    assert second.memoized_step_keys == ["orders", "report"]
    assert physical_tables(store) == tables

    # another spelling of the same query (its code changed): still the same version
    @materialize(lazy=True, input_type=sa.Table, name="by_customer")
    def by_customer_text(orders):
        return (
            f'SELECT   "customer_id", sum("amount") AS "total"  -- per customer\n'
            f'FROM "{orders.schema}"."{orders.name}" GROUP BY customer_id;'
        )

    @materialize(lazy=True, input_type=sa.Table, name="by_customer")
    def by_customer_text2(orders):
        return (
            f"SELECT customer_id, sum(amount) AS total FROM {orders.schema}.{orders.name} "
            "GROUP BY customer_id"
        )

    warehouse(store, by_customer_text2, consumer_calls=reports).execute_in_process(
        instance=instance
    )
    reports_before = len(reports)
    again = warehouse(store, by_customer_text, consumer_calls=reports).execute_in_process(
        instance=instance
    )
    assert len(reports) == reports_before and "report" in again.memoized_step_keys

    # a changed query is a new version: it executes, and its consumer runs
    @materialize(lazy=True, input_type=sa.Table, name="by_customer")
    def by_customer_max(orders):
        return sa.select(
            orders.c.customer_id, sa.func.max(orders.c.amount).label("total")
        ).group_by(orders.c.customer_id)

    changed = warehouse(store, by_customer_max, consumer_calls=reports).execute_in_process(
        instance=instance
    )
    assert "report" in changed.executed_step_keys
    assert store.query("SELECT * FROM {p}model.report ORDER BY customer_id") == [
        (10, 2.5),
        (20, 4.0),
    ]


def test_a_lazy_query_is_versioned_by_its_inputs_and_table_options(store, instance):
    reports = []

    @materialize(lazy=True, input_type=sa.Table, name="by_customer")
    def by_customer(orders):
        return sa.select(orders.c.customer_id, orders.c.amount).where(orders.c.amount > 2)

    wh = warehouse(store, by_customer, consumer_calls=reports)
    wh.execute_in_process(instance=instance)
    # same query text, other input data: a new version, executed, consumers run
    new_orders = orders_op(ORDERS.assign(amount=[3.0, 1.0, 5.0]), version="2")
    warehouse(store, by_customer, orders=new_orders, consumer_calls=reports).execute_in_process(
        instance=instance
    )
    assert len(reports) == 2
    assert store.query("SELECT order_id FROM {p}raw.orders ORDER BY 1") == [(1,), (2,), (3,)]
    assert store.query("SELECT amount FROM {p}model.by_customer ORDER BY 1") == [(3.0,), (5.0,)]

    # a primary key added to the same query: a new version, created with the key
    @materialize(lazy=True, input_type=sa.Table, name="by_customer")
    def keyed(orders):
        query = sa.select(orders.c.customer_id, orders.c.amount).where(orders.c.amount > 2)
        return Table(query, primary_key="customer_id")

    run = warehouse(store, keyed, orders=new_orders, consumer_calls=reports).execute_in_process(
        instance=instance
    )
    assert "report" in run.executed_step_keys
    if store.kind == "postgres":
        keys = store.query(
            "SELECT count(*) FROM information_schema.table_constraints "
            "WHERE table_schema = '{p}memodag_data' AND constraint_type = 'PRIMARY KEY' "
            "AND table_name LIKE 'by_customer%'"
        )
    else:
        keys = store.query(
            "SELECT count(*) FROM duckdb_constraints() WHERE schema_name = 'memodag_data' "
            "AND constraint_type = 'PRIMARY KEY' AND table_name LIKE 'by_customer%'"
        )
    assert keys == [(1,)]


def test_a_lazy_frame_is_versioned_by_its_content(store, instance):
    reports = []
    frames = {"n": 1}

    @materialize(lazy=True, input_type=pd.DataFrame, name="by_customer")
    def by_customer(orders):
        frame = orders.groupby("customer_id", as_index=False)["amount"].sum()
        return frame.assign(amount=frame["amount"] * frames["n"])

    wh = warehouse(store, by_customer, consumer_calls=reports)
    wh.execute_in_process(instance=instance)
    same = wh.execute_in_process(instance=instance)
    assert reports == [1] and same.memoized_step_keys == ["orders", "report"]
    frames["n"] = 2  # same code, other data: consumers run
    other = wh.execute_in_process(instance=instance)
    assert reports == [1, 1] and "report" in other.executed_step_keys
    assert store.query("SELECT amount FROM {p}model.report ORDER BY 1") == [(8.0,), (8.0,)]


def test_a_lazy_frame_with_an_unhashable_column_makes_its_consumers_always_run(store, instance):
    if store.kind == "postgres":
        pytest.skip("PostgreSQL stores no list columns; DuckDB shows the rule")
    reports = []

    @materialize(lazy=True, input_type=pd.DataFrame, name="by_customer")
    def by_customer(orders):
        return pd.DataFrame({"customer_id": [10, 20], "tags": [["a"], ["b", "c"]]})

    wh = warehouse(store, by_customer, consumer_calls=reports)
    first = wh.execute_in_process(instance=instance)
    wh.execute_in_process(instance=instance)
    assert reports == [1, 1]
    warnings = [
        str(e.message)
        for e in instance.get_events(first.run_id)
        if "cannot be hashed" in str(e.message)
    ]
    assert warnings and "column 'tags'" in warnings[0]


def test_lazy_with_a_version_that_is_no_string_is_refused_at_definition():
    with pytest.raises(DefinitionError, match="lazy=True"):

        @materialize(lazy=True, version=object())
        def task():
            return "SELECT 1 AS x"


def rows_by_step(job_def, instance):
    from memodag import list_versions

    return {row.step_key: row for row in list_versions(job_def, instance=instance)}


def test_list_versions_evaluates_lazy_sql_bodies_without_running_a_query(store, instance):
    bodies = []

    def by_customer_of(fn):
        @materialize(lazy=True, input_type=sa.Table, name="by_customer")
        def by_customer(orders):
            bodies.append(1)
            return sa.select(orders.c.customer_id, fn(orders.c.amount).label("total")).group_by(
                orders.c.customer_id
            )

        return by_customer

    wh = warehouse(store, by_customer_of(sa.func.sum))
    result = wh.execute_in_process(instance=instance)
    ran = [
        e.data["address"]["data_hash"]
        for e in instance.get_events(result.run_id)
        if e.step_key == "by_customer" and e.data and "output" in e.data
    ]
    rows = rows_by_step(wh, instance)
    # at the version the run recorded, the index tells what the body returned
    assert rows["by_customer"].status == "stored" and rows["by_customer"].version == ran[0]
    assert rows["report"].status == "stored"
    assert len(bodies) == 1

    tables = physical_tables(store)
    # edited code: the body runs (no query does) and tells its query's version
    changed = warehouse(store, by_customer_of(sa.func.max))
    rows = rows_by_step(changed, instance)
    assert len(bodies) == 2
    assert rows["by_customer"].status == "to-be-recomputed"
    assert rows["by_customer"].version not in (None, ran[0])
    assert rows["report"].status == "to-be-recomputed"
    assert physical_tables(store) == tables  # list-versions executed nothing
    # edited code that renders the same query: the version is the stored one
    same = warehouse(store, by_customer_of(lambda column: sa.func.sum(column)))
    rows = rows_by_step(same, instance)
    assert len(bodies) == 3
    assert rows["by_customer"].status == "stored" and rows["by_customer"].version == ran[0]
    assert rows["report"].status == "stored"


def test_list_versions_says_a_lazy_frame_is_decided_at_run_time(store, instance):
    @materialize(lazy=True, input_type=pd.DataFrame, name="by_customer")
    def by_customer(orders):
        return orders.groupby("customer_id", as_index=False)["amount"].sum()

    wh = warehouse(store, by_customer)
    # nothing stored yet: the body would read a table the run makes first
    rows = rows_by_step(wh, instance)
    assert rows["orders"].status == "to-be-recomputed"
    assert rows["by_customer"].version is None
    assert rows["by_customer"].reasons == (
        "decided at run time: its input orders.result runs first",
    )
    wh.execute_in_process(instance=instance)
    rows = rows_by_step(wh, instance)
    assert rows["by_customer"].version is None
    assert rows["by_customer"].reasons[0].startswith("decided at run time (content hash)")
    assert rows["report"].status == "depends-on-data"


def script_job(store, script_sql, seen):
    @materialize(lazy=True, input_type=sa.Table)
    def split(orders):
        source = f'"{orders.schema}"."{orders.name}"'
        return RawSql(script_sql.replace("SOURCE", source))

    @materialize(version="1", input_type=pd.DataFrame)
    def count_big(big):
        seen.append(("big", len(big)))
        return Table(pd.DataFrame({"n": [len(big)]}), name="big_count")

    @materialize(version="1", input_type=pd.DataFrame)
    def both(tables):
        seen.append(("both", sorted(tables)))
        return Table(pd.DataFrame({"n": [sum(len(t) for t in tables.values())]}), name="both")

    source = orders_op()

    @job(name="lazy_script", resource_defs={"table_store": store.resource})
    def lazy_script():
        with Stage("raw"):
            o = source()
        with Stage("model"):
            made = split(o)
            count_big(made["big"])
            both(made)

    return lazy_script


SCRIPT = """
    CREATE TABLE {stage}.big AS SELECT * FROM SOURCE WHERE amount > 2;
    CREATE TABLE {stage}.small AS SELECT * FROM SOURCE WHERE amount <= 2;
"""


def test_raw_sql_tables_are_the_tasks_outputs_versioned_by_the_script(store, instance):
    seen = []
    wh = script_job(store, SCRIPT, seen)
    wh.execute_in_process(instance=instance)
    # each table the script made is in the stage, readable by any client
    assert store.query("SELECT order_id FROM {p}model.big ORDER BY 1") == [(2,), (3,)]
    assert store.query("SELECT order_id FROM {p}model.small ORDER BY 1") == [(1,)]
    assert seen == [("big", 2), ("both", ["big", "small"])]
    tables = physical_tables(store)
    # unchanged script and inputs: nothing runs in the database, consumers stay memoized
    again = wh.execute_in_process(instance=instance)
    assert again.memoized_step_keys == ["orders", "count_big", "both"]
    assert physical_tables(store) == tables and len(seen) == 2
    # no scratch schema is left behind
    schemas = store.query(
        "SELECT schema_name FROM information_schema.schemata "
        "WHERE schema_name LIKE '{p}memodag_tmp%'"
    )
    assert schemas == []
    # another script: its tables are made again and the consumers run
    changed = script_job(store, SCRIPT.replace("> 2", "> 3"), seen)
    changed.execute_in_process(instance=instance)
    assert seen[-2:] == [("big", 1), ("both", ["big", "small"])]
    assert store.query("SELECT order_id FROM {p}model.big ORDER BY 1") == [(3,)]


def test_a_raw_sql_script_that_makes_no_table_or_fails_names_the_op(store, instance):
    from memodag import ExecutionError

    wh = script_job(store, "SELECT 1", [])
    with pytest.raises(ExecutionError, match=r"split.*created no table"):
        wh.execute_in_process(instance=instance)
    broken = script_job(store, "CREATE TABLE {stage}.x AS SELECT * FROM no_such_table", [])
    with pytest.raises(ExecutionError, match=r"split.*statement 1 of 1 failed"):
        broken.execute_in_process(instance=instance)


def test_picking_a_table_by_name_is_only_for_lazy_tasks():
    @materialize(version="1")
    def plain():
        return pd.DataFrame({"a": [1]})

    @materialize(version="1")
    def use(t):
        return t

    with pytest.raises(DefinitionError, match="only the output of a lazy task"):

        @job
        def picks():
            use(plain()["a"])


LAZY_JOB_FILE = """
import pandas as pd
import sqlalchemy as sa

from memodag import Stage, job, materialize


@materialize(lazy=True)
def numbers():
    return "SELECT * FROM range(5) AS t(n)"


@materialize(lazy=True, input_type=pd.DataFrame)
def doubled(numbers):
    return numbers.assign(n=numbers["n"] * 2)


@materialize(version="1", input_type=sa.Table)
def total(doubled):
    return sa.select(sa.func.sum(doubled.c.n).label("total"))


@job
def lazy_cli():
    with Stage("model"):
        total(doubled(numbers()))
"""


def test_the_cli_lists_lazy_versions_and_a_frame_decided_at_run_time(tmp_path):
    import json

    from cli_process import run_memodag

    job_file = tmp_path / "lazy_cli.py"
    job_file.write_text(LAZY_JOB_FILE)
    home = tmp_path / "home"
    run_memodag("job", "execute", "-f", str(job_file), cwd=tmp_path, home=home)
    again = run_memodag("job", "execute", "-f", str(job_file), cwd=tmp_path, home=home)
    assert "2 executed, 1 memoized" in again.stdout  # the lazy bodies ran; total is memoized
    listed = run_memodag("job", "list-versions", "-f", str(job_file), cwd=tmp_path, home=home)
    lines = {line.split()[0]: line for line in listed.stdout.splitlines() if "." in line}
    assert "stored" in lines["numbers.result"]
    assert "decided at run time (content hash)" in lines["doubled.result"]
    assert "depends-on-data" in lines["total.result"]
    rows = json.loads(
        run_memodag(
            "job", "list-versions", "-f", str(job_file), "--json", cwd=tmp_path, home=home
        ).stdout
    )["outputs"]
    by_output = {row["step_output"]: row for row in rows}
    assert by_output["numbers.result"]["version"] and by_output["doubled.result"]["version"] is None
