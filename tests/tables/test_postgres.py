"""Tables on the real PostgreSQL through the public API: stages of views any client reads, keys
and indexes, memoization, atomic commits, types, errors, and the store's URL from config or the
environment. Each test writes under its own schema prefix, so runs never collide."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import re
import uuid
from collections.abc import Iterator

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa

from memodag import (
    EnvVar,
    ExecutionError,
    Stage,
    StorageError,
    Table,
    job,
    materialize,
    postgres_table_store,
)

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"

ORDERS = pd.DataFrame(
    {"order_id": [1, 2, 3], "customer_id": [10, 10, 20], "amount": [1.5, 2.5, 4.0]}
)


class Pg:
    """The test's corner of the real PostgreSQL: its URL, schema prefix and a psycopg reader."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def store(self, **config):
        return postgres_table_store.configured(
            {"url": self.url, "schema_prefix": self.prefix, **config}
        )

    def query(self, sql: str, *params):
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchall()

    def schema(self, stage: str) -> str:
        return f"{self.prefix}{stage}"


@pytest.fixture
def pg() -> Iterator[Pg]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield Pg(base, prefix)
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall()
        for (schema,) in schemas:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def messages(instance, result) -> str:
    return "\n".join(str(e.message) for e in instance.get_events(result.run_id))


@materialize(version="1")
def orders():
    return Table(ORDERS, name="orders", primary_key="order_id", indexes=[["customer_id"]])


@materialize(input_type=pl.DataFrame, version="1")
def by_customer(orders):
    return Table(
        orders.group_by("customer_id").agg(pl.col("amount").sum()).sort("customer_id"),
        name="by_customer",
    )


def warehouse_job(store, name="warehouse"):
    @job(name=name, resource_defs={"table_store": store})
    def warehouse():
        with Stage("raw"):
            o = orders()
        with Stage("model"):
            by_customer(o)

    return warehouse


def test_stages_are_schemas_of_views_with_the_keys_and_indexes_asked_for(pg, instance):
    result = warehouse_job(pg.store()).execute_in_process(instance=instance)
    assert result.success
    raw, model = pg.schema("raw"), pg.schema("model")
    assert pg.query(f'SELECT * FROM "{raw}".orders ORDER BY order_id') == [
        (1, 10, 1.5),
        (2, 10, 2.5),
        (3, 20, 4.0),
    ]
    assert pg.query(f'SELECT * FROM "{model}".by_customer') == [(10, 4.0), (20, 4.0)]
    views = pg.query(
        "SELECT table_schema, table_name FROM information_schema.views "
        "WHERE table_schema IN (%s, %s) ORDER BY 1",
        model,
        raw,
    )
    assert views == [(model, "by_customer"), (raw, "orders")]
    # the physical table behind raw.orders has the primary key and the index
    indexes = pg.query(
        "SELECT i.indexdef FROM pg_indexes i JOIN pg_views v "
        "ON v.definition LIKE '%%' || i.tablename || '%%' "
        "WHERE v.schemaname = %s AND v.viewname = 'orders' AND i.schemaname = %s",
        raw,
        f"{pg.prefix}memodag_data",
    )
    defs = " | ".join(d for (d,) in indexes)
    assert "UNIQUE INDEX" in defs and "(order_id)" in defs and "(customer_id)" in defs
    assert result.output_for_node("orders", as_type=pd.DataFrame).equals(ORDERS)
    assert isinstance(result.output_for_node("by_customer"), pl.DataFrame)


def test_memoized_runs_copy_nothing_a_revert_is_a_hit_and_views_follow(pg, instance):
    store = pg.store()
    data = f"{pg.prefix}memodag_data"
    first = warehouse_job(store).execute_in_process(instance=instance)
    assert first.executed_step_keys == ["orders", "by_customer"]
    second = warehouse_job(store).execute_in_process(instance=instance)
    assert second.memoized_step_keys == ["orders", "by_customer"]
    count = "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
    assert pg.query(count, data) == [(2,)]

    # version 2 has other columns and types: the view is replaced in the commit's transaction
    @materialize(version="2", name="orders")
    def orders_v2():
        frame = pd.DataFrame({"order_id": ["a"], "customer_id": [30], "amount": [9.0]})
        return Table(frame, name="orders", primary_key="order_id")

    @job(name="warehouse", resource_defs={"table_store": store})
    def warehouse_v2():
        with Stage("raw"):
            o = orders_v2()
        with Stage("model"):
            by_customer(o)

    assert warehouse_v2.execute_in_process(instance=instance).success
    assert pg.query(f'SELECT * FROM "{pg.schema("raw")}".orders') == [("a", 30, 9.0)]
    assert pg.query(f'SELECT * FROM "{pg.schema("model")}".by_customer') == [(30, 9.0)]
    reverted = warehouse_job(store).execute_in_process(instance=instance)
    assert reverted.memoized_step_keys == ["orders", "by_customer"]
    assert pg.query(f'SELECT * FROM "{pg.schema("model")}".by_customer') == [(10, 4.0), (20, 4.0)]
    assert pg.query(count, data) == [(4,)]


def test_a_failed_run_leaves_the_committed_stage_readable_and_unchanged(pg, instance):
    store = pg.store()
    warehouse_job(store).execute_in_process(instance=instance)

    @materialize(version="2", name="orders")
    def orders_v2():
        return Table(ORDERS.assign(amount=0.0), name="orders", primary_key="order_id")

    @materialize(version="1")
    def broken(orders):
        raise RuntimeError("boom")

    @job(name="warehouse", resource_defs={"table_store": store})
    def failing():
        with Stage("raw"):
            o = orders_v2()
            broken(o)

    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert pg.query(f'SELECT sum(amount) FROM "{pg.schema("raw")}".orders') == [(8.0,)]
    again = failing.execute_in_process(instance=instance, raise_on_error=False)
    assert "orders" in again.memoized_step_keys


def _pandas_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            **{
                f"i{b}": pd.Series([-1, 0, 2**b // 2 - 1], dtype=f"int{b}") for b in (8, 16, 32, 64)
            },
            **{f"u{b}": pd.Series([0, 1, 2**b - 1], dtype=f"uint{b}") for b in (8, 16, 32, 64)},
            "nullable_int": pd.Series([1, None, 3], dtype="Int64"),
            "f32": pd.Series([1.5, None, -2.25], dtype="float32"),
            "f64": [float("-inf"), float("nan"), 1e300],
            "flag": pd.Series([True, None, False], dtype="boolean"),
            "text": ["a", None, "\\N"],
            "day": [dt.date(2020, 1, 31), None, dt.date(1999, 12, 31)],
            "naive": pd.Series(
                [pd.Timestamp("2020-01-01 10:00:00.123456"), None, pd.Timestamp("1980-05-05")]
            ),
            "aware": pd.Series(
                [pd.Timestamp("2020-01-01 10:00"), None, pd.Timestamp("2021-06-01")]
            ).dt.tz_localize("Europe/Paris"),
            "money": [decimal.Decimal("1.25"), None, decimal.Decimal("-99999.99")],
            "kind": pd.Categorical(["x", "y", None]),
            "nothing": [None, None, None],
            "blob": [b"\x00\x01", None, b"'; --"],
        }
    )


# small tables are written as SQL literals in one statement, large ones by binary COPY
SIZES = pytest.mark.parametrize("copies", [1, 200], ids=["literals", "copy"])


@SIZES
def test_pandas_types_round_trip(pg, instance, copies):
    frame = pd.concat([_pandas_frame()] * copies, ignore_index=True)

    @materialize(version="1")
    def typed():
        return Table(frame, name="typed")

    @job(resource_defs={"table_store": pg.store()})
    def types_job():
        typed()

    result = types_job.execute_in_process(instance=instance)
    back = result.output_for_node("typed", as_type=pd.DataFrame)
    # categoricals come back as strings (docs/tables.md)
    assert back.pop("kind").tolist()[:2] == ["x", "y"]
    pd.testing.assert_frame_equal(back, frame.drop(columns="kind"))
    empty = frame.iloc[:0]

    @materialize(version="1")
    def nothing():
        return Table(empty, name="empty")

    @job(resource_defs={"table_store": pg.store()})
    def empty_job():
        nothing()

    back = empty_job.execute_in_process(instance=instance).output_for_node("nothing")
    assert list(back.columns) == list(frame.columns) and len(back) == 0


@SIZES
def test_polars_types_round_trip_including_years_1_and_9999(pg, instance, copies):
    one = pl.DataFrame(
        {
            **{
                f"i{b}": pl.Series([-1, 0, 2 ** (b - 1) - 1], dtype=getattr(pl, f"Int{b}"))
                for b in (8, 16, 32, 64)
            },
            **{
                f"u{b}": pl.Series([0, None, 2**b - 1], dtype=getattr(pl, f"UInt{b}"))
                for b in (8, 16, 32, 64)
            },
            "f32": pl.Series([1.5, None, 2.0], dtype=pl.Float32),
            "flag": [True, None, False],
            "text": ["a", None, "\\N"],
            "day": [dt.date(1, 1, 1), None, dt.date(9999, 12, 31)],
            "naive": pl.Series(
                [dt.datetime(1, 1, 1), None, dt.datetime(9999, 12, 31, 23, 59, 59, 999999)],
                dtype=pl.Datetime("us"),
            ),
            "aware": pl.Series(
                [dt.datetime(2020, 1, 1, 12), None, dt.datetime(1900, 1, 1)],
                dtype=pl.Datetime("us", "America/New_York"),
            ),
            "money": pl.Series(
                [decimal.Decimal("1.25"), None, decimal.Decimal("3.50")],
                dtype=pl.Decimal(10, 2),
            ),
            "kind": pl.Series(["x", "y", None], dtype=pl.Enum(["x", "y"])),
            "nothing": pl.Series([None, None, None], dtype=pl.Null),
        }
    )

    frame = pl.concat([one] * copies)

    @materialize(version="1")
    def typed():
        return Table(frame, name="typed")

    @job(resource_defs={"table_store": pg.store()})
    def types_job():
        typed()

    back = types_job.execute_in_process(instance=instance).output_for_node("typed")
    expected = frame.with_columns(pl.col("kind").cast(pl.String))
    assert back.schema == expected.schema
    assert back.to_dicts() == expected.to_dicts()


def test_a_type_postgres_cannot_hold_names_table_column_and_type(pg, instance):
    @materialize(version="1")
    def nested():
        return Table(pl.DataFrame({"ok": [1], "lists": [[1, 2]]}), name="nested")

    @job(resource_defs={"table_store": pg.store()})
    def bad_type():
        nested()

    result = bad_type.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert re.search(
        r"table 'nested': column 'lists' has type \S*list<item: int64>", messages(instance, result)
    )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("missing", "primary key column 'missing' is not a column of the table"),
        ("customer_id", r"primary key \['customer_id'\] has duplicate values"),
    ],
)
def test_a_bad_primary_key_names_the_table_and_key_and_commits_nothing(pg, instance, key, message):
    @materialize(version="1")
    def keyed():
        return Table(ORDERS, name="keyed", primary_key=key)

    @job(resource_defs={"table_store": pg.store()})
    def bad_key():
        with Stage("s"):
            keyed()

    result = bad_key.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    text = messages(instance, result)
    assert "table 'keyed'" in text and re.search(message, text)
    assert pg.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema LIKE %s",
        f"{pg.prefix}%",
    ) in ([(0,)], [(3,)])  # nothing, or only memodag's own bookkeeping
    assert pg.query(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", pg.schema("s")
    ) == [(0,)]


def test_an_unreachable_store_fails_before_any_op_runs_naming_the_url_without_password(
    instance,
):
    ran = []

    @materialize(version="1")
    def never():
        ran.append(1)
        return ORDERS

    store = postgres_table_store.configured(
        {"url": "postgresql://app:s3cr3t@127.0.0.1:1/nowhere?connect_timeout=2"}
    )

    @job(resource_defs={"table_store": store})
    def unreachable():
        never()

    with pytest.raises(ExecutionError) as info:
        unreachable.execute_in_process(instance=instance)
    assert ran == []
    text = str(info.value)
    assert "cannot reach the PostgreSQL table store at postgresql://app:***@127.0.0.1:1/" in text
    assert "s3cr3t" not in text
    (run,) = instance.get_runs()
    assert "s3cr3t" not in messages(instance, run) + str(run.run_config)


def test_sql_tasks_run_inside_the_database_and_unlogged_tables(pg, instance):
    @materialize(version="1")
    def total(orders: sa.Table):
        return sa.select(sa.func.sum(orders.c.amount).label("total"))

    @materialize(version="1")
    def scratch():
        return Table(ORDERS, name="scratch", materialization_details="unlogged")

    @job(resource_defs={"table_store": pg.store()})
    def sql_job():
        total(orders())
        scratch()

    result = sql_job.execute_in_process(instance=instance)
    assert result.output_for_node("total", as_type=pd.DataFrame)["total"].tolist() == [8.0]
    persistence = pg.query(
        "SELECT c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'scratch%%'",
        f"{pg.prefix}memodag_data",
    )
    assert persistence == [("u",)]


def test_odd_column_names_are_quoted_never_executed(pg, instance):
    frame = pd.DataFrame({'we"ird; DROP TABLE x; --': [1], "Upper Case": ["a"]})

    @materialize(version="1")
    def odd():
        return Table(frame, name="odd", indexes=[["Upper Case"]])

    @job(resource_defs={"table_store": pg.store()})
    def odd_job():
        with Stage("st"):
            odd()

    result = odd_job.execute_in_process(instance=instance)
    pd.testing.assert_frame_equal(result.output_for_node("odd"), frame)
    assert pg.query(f'SELECT "Upper Case" FROM "{pg.schema("st")}".odd') == [("a",)]


def test_a_stage_belongs_to_one_job_unless_a_schema_suffix_keeps_them_apart(pg, instance):
    warehouse_job(pg.store()).execute_in_process(instance=instance)
    other = warehouse_job(pg.store(), name="other")
    result = other.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert "belongs to job 'warehouse'" in messages(instance, result)
    apart = warehouse_job(pg.store(schema_suffix="_other"), name="other")
    assert apart.execute_in_process(instance=instance).success
    assert pg.query(f'SELECT count(*) FROM "{pg.prefix}raw_other".orders') == [(3,)]


def test_the_url_from_an_env_reference_or_the_store_variable(pg, instance, monkeypatch):
    monkeypatch.setenv("TEST_TABLES_PG_URL", pg.url)
    by_reference = postgres_table_store.configured(
        {"url": EnvVar("TEST_TABLES_PG_URL"), "schema_prefix": pg.prefix}
    )
    result = warehouse_job(by_reference).execute_in_process(instance=instance)
    assert result.success
    assert instance.get_run(result.run_id).run_config == {}  # configured: nothing in run config

    monkeypatch.setenv("MEMODAG_TABLE_STORE_URL", pg.url)
    from_variable = postgres_table_store.configured({"schema_prefix": pg.prefix})
    again = warehouse_job(from_variable).execute_in_process(instance=instance)
    assert again.success  # the same database: its tables were already there, none is added
    data = f"{pg.prefix}memodag_data"
    assert pg.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", data
    ) == [(2,)]

    monkeypatch.delenv("MEMODAG_TABLE_STORE_URL")
    with pytest.raises(StorageError, match="or the environment variable MEMODAG_TABLE_STORE_URL"):
        warehouse_job(from_variable).execute_in_process(instance=instance)


def test_the_store_verbs_gc_and_readers_use(pg):
    """What gc and list-versions call: a reader creates nothing; a table a stage shows is
    known as shown; a dropped table is gone with its bookkeeping."""
    from memodag.tables.postgres import PostgresTableStore
    from memodag.tables.store import StageTable, TableSpec

    reader = PostgresTableStore(pg.url, schema_prefix=pg.prefix)
    try:
        assert not reader.has_table("nothing") and reader.stage_owner("s") is None
        assert reader.stage_tables("s") == {} and not reader.is_shown("nothing")
        assert pg.query(
            "SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, %s)", pg.prefix
        ) == [(0,)]
    finally:
        reader.close()

    store = PostgresTableStore(pg.url, schema_prefix=pg.prefix)
    try:
        store.open()
        data = pa.table({"a": [1, 2]})
        store.write_arrow("t_v1", data, TableSpec("t"))
        store.write_arrow("t_v2", data, TableSpec("t"))
        store.commit_stage("s", "job", [StageTable("t", "t_v1", "op")])
        assert store.is_shown("t_v1") and not store.is_shown("t_v2")
        store.commit_stage("s", "job", [StageTable("t", "t_v2", "op")])
        assert not store.is_shown("t_v1")
        store.drop_table("t_v1")
        assert not store.has_table("t_v1") and store.has_table("t_v2")
        assert store.stage_tables("s") == {"t": StageTable("t", "t_v2", "op")}
        assert pg.query(f'SELECT a FROM "{pg.schema("s")}".t ORDER BY a') == [(1,), (2,)]
        store.commit_stage("s", "job", [], drop=["t"])
        assert store.stage_tables("s") == {}
        views = "SELECT count(*) FROM information_schema.views WHERE table_schema = %s"
        assert pg.query(views, pg.schema("s")) == [(0,)]
    finally:
        store.close()


def test_schema_names_past_63_bytes_are_refused_not_cut(pg):
    from memodag.tables.postgres import PostgresTableStore

    with pytest.raises(StorageError, match="longer than 63 bytes"):
        PostgresTableStore(pg.url, schema_prefix="p" * 60)
    store = PostgresTableStore(pg.url, schema_prefix="p" * 40)
    with pytest.raises(StorageError, match="use a shorter prefix, suffix or stage name"):
        store.commit_stage("s" * 30, "job", [])


def test_input_types_sql_text_not_null_and_type_map(pg, instance):
    seen = {}

    @materialize(version="1")
    def numbers():
        return Table(
            pa.table({"n": [1, 2, 3], "label": ["a", "b", "c"]}),
            nullable=["label"],
            type_map={"label": "VARCHAR(5)"},
        )

    @materialize(version="1")
    def as_lazy(numbers: pl.LazyFrame):
        seen["lazy"] = type(numbers)
        return numbers.with_columns(m=pl.col("n") * 2)

    @materialize(version="1")
    def as_relation(numbers: duckdb.DuckDBPyRelation):
        seen["relation"] = type(numbers)
        return numbers.filter("n > 1")

    @materialize(version="1")
    def as_sql_text(numbers: sa.Table):
        seen["reference"] = type(numbers)
        return f'SELECT sum(n) AS total FROM "{numbers.schema}"."{numbers.name}"'

    @job(resource_defs={"table_store": pg.store()})
    def kinds():
        n = numbers()
        as_lazy(n)
        as_relation(n)
        as_sql_text(n)

    result = kinds.execute_in_process(instance=instance)
    assert seen == {
        "lazy": pl.LazyFrame,
        "relation": duckdb.DuckDBPyRelation,
        "reference": sa.Table,
    }
    assert result.output_for_node("as_lazy", as_type=pl.DataFrame)["m"].to_list() == [2, 4, 6]
    assert result.output_for_node("as_relation", as_type=pa.Table)["n"].to_pylist() == [2, 3]
    assert result.output_for_node("as_sql_text", as_type=pd.DataFrame)["total"].tolist() == [6]
    columns = pg.query(
        "SELECT column_name, is_nullable, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name LIKE 'numbers%%' ORDER BY ordinal_position",
        f"{pg.prefix}memodag_data",
    )
    assert columns == [("n", "NO", "bigint"), ("label", "YES", "character varying")]
