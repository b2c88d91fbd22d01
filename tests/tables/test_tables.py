"""Tables on DuckDB through the public API: stages of views, versions, commits, input types."""

from __future__ import annotations

import re

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa

from memodag import (
    DefinitionError,
    Out,
    Stage,
    Table,
    duckdb_table_store,
    job,
    materialize,
    op,
)


def tables_file(instance):
    """The default table store's file: ``tables.duckdb`` beside the instance's storage."""
    return instance.storage_dir.parent / "tables.duckdb"


def messages(instance, result):
    """Every message the run's events carry, one per line."""
    return "\n".join(str(e.message) for e in instance.get_events(result.run_id))


def query(instance, sql):
    with duckdb.connect(str(tables_file(instance)), read_only=True) as conn:
        return conn.execute(sql).fetchall()


ORDERS = pd.DataFrame(
    {"order_id": [1, 2, 3], "customer_id": [10, 10, 20], "amount": [1.5, 2.5, 4.0]}
)


@materialize(version="1")
def orders():
    return Table(ORDERS, name="orders", primary_key="order_id", indexes=[["customer_id"]])


@materialize(input_type=pl.DataFrame)
def by_customer(orders):
    assert isinstance(orders, pl.DataFrame)
    return Table(
        orders.group_by("customer_id").agg(pl.col("amount").sum()).sort("customer_id"),
        name="by_customer",
    )


@job
def warehouse():
    with Stage("raw"):
        o = orders()
    with Stage("model"):
        by_customer(o)


def test_stages_are_schemas_of_views_readable_by_any_duckdb_client(instance):
    result = warehouse.execute_in_process(instance=instance)
    assert result.success
    assert query(instance, "SELECT * FROM raw.orders ORDER BY order_id") == [
        (1, 10, 1.5),
        (2, 10, 2.5),
        (3, 20, 4.0),
    ]
    assert query(instance, "SELECT * FROM model.by_customer") == [(10, 4.0), (20, 4.0)]
    kinds = query(
        instance,
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_schema IN ('raw', 'model')",
    )
    assert {(s, n, t) for s, n, t in kinds} == {
        ("raw", "orders", "VIEW"),
        ("model", "by_customer", "VIEW"),
    }
    # the primary key and index are on the physical table the view shows
    constraints = query(
        instance,
        "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() "
        "WHERE schema_name = 'memodag_data' AND table_name LIKE 'orders%'",
    )
    assert ("PRIMARY KEY", ["order_id"]) in constraints
    indexes = query(
        instance,
        "SELECT expressions FROM duckdb_indexes() WHERE schema_name = 'memodag_data' "
        "AND table_name LIKE 'orders%'",
    )
    assert len(indexes) == 1 and "customer_id" in indexes[0][0]


def test_output_for_node_loads_a_table_as_any_frame_type(instance):
    result = warehouse.execute_in_process(instance=instance)
    # without as_type: the type the op returned
    assert isinstance(result.output_for_node("by_customer"), pl.DataFrame)
    assert isinstance(result.output_for_node("orders"), pd.DataFrame)
    frame = result.output_for_node("orders", as_type=pd.DataFrame)
    pd.testing.assert_frame_equal(frame, ORDERS)
    assert result.output_for_node("orders", as_type=pl.DataFrame).shape == (3, 3)
    lazy = result.output_for_node("orders", as_type=pl.LazyFrame)
    assert isinstance(lazy, pl.LazyFrame) and lazy.collect().height == 3
    assert result.output_for_node("orders", as_type=pa.Table).num_rows == 3


def test_a_memoized_run_recomputes_and_copies_nothing_and_a_revert_is_a_hit(instance):
    first = warehouse.execute_in_process(instance=instance)
    assert first.executed_step_keys == ["orders", "by_customer"]
    second = warehouse.execute_in_process(instance=instance)
    assert second.memoized_step_keys == ["orders", "by_customer"]
    physical = query(
        instance,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'memodag_data'",
    )
    assert physical == [(2,)]

    changed = pd.DataFrame({"order_id": [1], "customer_id": [30], "amount": [9.0]})

    @materialize(version="2", name="orders")
    def orders_v2():
        return Table(changed, name="orders", primary_key="order_id")

    @job(name="warehouse")
    def warehouse_v2():
        with Stage("raw"):
            o = orders_v2()
        with Stage("model"):
            by_customer(o)

    assert warehouse_v2.execute_in_process(instance=instance).executed_step_keys == [
        "orders",
        "by_customer",
    ]
    assert query(instance, "SELECT * FROM model.by_customer") == [(30, 9.0)]
    # back to version 1: both tables are still stored, nothing runs, the stage shows them again
    reverted = warehouse.execute_in_process(instance=instance)
    assert reverted.memoized_step_keys == ["orders", "by_customer"]
    assert query(instance, "SELECT * FROM model.by_customer") == [(10, 4.0), (20, 4.0)]


def test_a_failed_run_leaves_the_committed_stage_unchanged_and_reuses_what_it_wrote(instance):
    warehouse.execute_in_process(instance=instance)
    calls = []

    @materialize(version="2", name="orders")
    def orders_v2():
        calls.append(1)
        return Table(ORDERS.assign(amount=0.0), name="orders", primary_key="order_id")

    @materialize(version="1")
    def broken(orders):
        raise RuntimeError("boom")

    @job(name="warehouse")
    def failing():
        with Stage("raw"):
            o = orders_v2()
            broken(o)
        with Stage("model"):
            by_customer(o)

    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    # readers of the failed stage still see it as last committed, whole
    assert query(instance, "SELECT sum(amount) FROM raw.orders") == [(8.0,)]
    assert query(instance, "SELECT count(*) FROM raw.orders") == [(3,)]
    # (model's one op succeeded: that stage commits, see the next test)
    assert query(instance, "SELECT * FROM model.by_customer") == [(10, 0.0), (20, 0.0)]
    # the next run reuses the table the failed run wrote completely
    again = failing.execute_in_process(instance=instance, raise_on_error=False)
    assert "orders" in again.memoized_step_keys and calls == [1]


def test_input_types_from_annotations_and_sql_outputs(instance):
    seen = {}

    @materialize(version="1")
    def numbers():
        return pa.table({"n": [1, 2, 3]})

    @materialize(version="1")
    def as_arrow(numbers: pa.Table):
        seen["arrow"] = type(numbers)
        return numbers

    @materialize(version="1")
    def as_lazy(numbers: pl.LazyFrame):
        seen["lazy"] = type(numbers)
        return numbers.with_columns(m=pl.col("n") * 2)

    @materialize(version="1")
    def as_relation(numbers: duckdb.DuckDBPyRelation):
        seen["relation"] = type(numbers)
        return numbers.filter("n > 1")

    @materialize(version="1")
    def as_reference(numbers: sa.Table):
        seen["reference"] = type(numbers)
        return sa.select(numbers.c.n).where(numbers.c.n >= 2)

    @materialize(version="1")
    def as_sql_text(numbers: sa.Table):
        return f'SELECT sum(n) AS total FROM "{numbers.schema}"."{numbers.name}"'

    @job
    def kinds():
        n = numbers()
        as_arrow(n)
        as_lazy(n)
        as_relation(n)
        as_reference(n)
        as_sql_text(n)

    result = kinds.execute_in_process(instance=instance)
    assert seen == {
        "arrow": pa.Table,
        "lazy": pl.LazyFrame,
        "relation": duckdb.DuckDBPyRelation,
        "reference": sa.Table,
    }
    assert result.output_for_node("as_lazy", as_type=pl.DataFrame)["m"].to_list() == [2, 4, 6]
    assert result.output_for_node("as_relation", as_type=pa.Table)["n"].to_pylist() == [2, 3]
    # a table made by SQL comes back as Arrow by default
    made_by_sql = result.output_for_node("as_reference")
    assert isinstance(made_by_sql, pa.Table) and made_by_sql["n"].to_pylist() == [2, 3]
    assert result.output_for_node("as_sql_text", as_type=pd.DataFrame)["total"].tolist() == [6]
    # ops outside any stage land in a stage named after the job
    assert query(instance, "SELECT n FROM kinds.as_reference ORDER BY n") == [(2,), (3,)]


def test_a_plain_op_stores_a_table_with_the_table_store_key(instance):
    @op(out=Out(io_manager_key="table_store"))
    def frame():
        return Table(pd.DataFrame({"a": [1, 2]}), name="frame_table")

    @op
    def count(frame: pd.DataFrame):
        return len(frame)

    @job
    def plain():
        count(frame())

    result = plain.execute_in_process(instance=instance)
    assert result.output_for_node("count") == 2
    assert query(instance, "SELECT a FROM plain.frame_table ORDER BY a") == [(1,), (2,)]


def test_as_type_on_an_output_that_is_not_a_table_never_converts(instance):
    @op
    def number():
        return 3

    @job
    def plain():
        number()

    result = plain.execute_in_process(instance=instance)
    assert result.output_for_node("number", as_type=int) == 3
    with pytest.raises(Exception, match="output 'result' of node 'number' is a int, not a str"):
        result.output_for_node("number", as_type=str)


# ---- bad input: clear errors, nothing of the stage committed ------------------------------


def test_stage_names_are_checked_when_the_job_is_defined():
    with pytest.raises(DefinitionError, match="Stage name 'no-dash' is not an identifier"):
        Stage("no-dash")
    with pytest.raises(DefinitionError, match="at most 63"):
        Stage("s" * 64)
    with pytest.raises(DefinitionError, match="reserved"):
        Stage("memodag_data")
    assert Stage("Raw").name == "raw"

    with pytest.raises(
        DefinitionError, match=r"Stage\('inner'\) is opened inside Stage\('outer'\)"
    ):

        @job
        def nested():
            with Stage("outer"), Stage("inner"):
                orders()


def test_table_options_are_checked_where_they_are_written():
    with pytest.raises(DefinitionError, match="list of column lists"):
        Table(ORDERS, indexes=["customer_id"])
    with pytest.raises(DefinitionError, match="Table name 'a b'"):
        Table(ORDERS, name="a b")


def test_two_tables_with_one_name_in_a_stage_fail_the_run_and_commit_nothing(instance):
    @materialize(version="1")
    def first():
        return Table(ORDERS, name="same")

    @materialize(version="1")
    def second():
        return Table(ORDERS, name="same")

    @job
    def clash():
        with Stage("s"):
            first()
            second()

    result = clash.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert "table name 'same' is produced by both first and second" in str(
        [e.message for e in instance.get_events(result.run_id)]
    )
    assert query(
        instance, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 's'"
    ) == [(0,)]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("missing", "primary key column 'missing' is not a column of the table"),
        ("customer_id", r"primary key \['customer_id'\] has duplicate values"),
    ],
)
def test_a_bad_primary_key_names_the_table_and_key_and_commits_nothing(instance, key, message):
    @materialize(version="1")
    def keyed():
        return Table(ORDERS, name="keyed", primary_key=key)

    @job
    def bad_key():
        with Stage("s"):
            keyed()

    result = bad_key.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    text = messages(instance, result)
    assert "table 'keyed'" in text
    assert re.search(message, text)
    assert query(
        instance, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 's'"
    ) == [(0,)]


def test_a_stage_belongs_to_one_job_unless_a_schema_prefix_keeps_them_apart(instance, tmp_path):
    @job(name="other")
    def other():
        with Stage("raw"):
            orders()

    warehouse.execute_in_process(instance=instance)
    result = other.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert "stage 'raw'" in messages(instance, result)
    assert "belongs to job 'warehouse'" in messages(instance, result)

    @job(
        name="other",
        resource_defs={"table_store": duckdb_table_store.configured({"schema_prefix": "me_"})},
    )
    def other_prefixed():
        with Stage("raw"):
            orders()

    assert other_prefixed.execute_in_process(instance=instance).success
    assert query(instance, "SELECT count(*) FROM me_raw.orders") == [(3,)]


def test_nullable_and_non_nullable_declare_not_null_columns(instance):
    frame = pd.DataFrame({"a": [1], "b": [2], "c": [3]})

    @materialize(version="1")
    def strict():
        return Table(frame, name="strict", non_nullable=["a"])

    @materialize(version="1")
    def loose():
        return Table(frame, name="loose", nullable=["a"])

    @job
    def nulls():
        strict()
        loose()

    nulls.execute_in_process(instance=instance)
    rows = query(
        instance,
        "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'memodag_data' ORDER BY 1, 2",
    )
    flags = {(t.split("__")[0], c): n for t, c, n in rows}
    assert flags == {
        ("strict", "a"): "NO",
        ("strict", "b"): "YES",
        ("strict", "c"): "YES",
        ("loose", "a"): "YES",
        ("loose", "b"): "NO",
        ("loose", "c"): "NO",
    }


def test_a_fan_out_stores_one_table_per_piece_in_the_stage(instance):
    from memodag import DynamicOut, DynamicOutput

    @op(version="1", out=DynamicOut())
    def regions():
        for name in ("north", "south"):
            yield DynamicOutput(name, mapping_key=name)

    @materialize(version="1")
    def sales(region):
        return pd.DataFrame({"region": [region], "amount": [len(region)]})

    @materialize(version="1")
    def summary(parts: list):
        return pd.concat(parts, ignore_index=True).sort_values("region")

    @job
    def fanned():
        with Stage("sales"):
            summary(regions().map(sales).collect())

    result = fanned.execute_in_process(instance=instance)
    assert result.output_for_node("summary")["amount"].tolist() == [5, 5]
    assert query(instance, "SELECT * FROM sales.sales_north") == [("north", 5)]
    assert query(instance, "SELECT * FROM sales.sales_south") == [("south", 5)]
    assert query(instance, "SELECT count(*) FROM sales.summary") == [(2,)]
    again = fanned.execute_in_process(instance=instance)
    assert set(again.memoized_step_keys) >= {"summary", "sales[north]", "sales[south]"}


def test_a_stage_whose_ops_all_succeeded_commits_even_if_a_later_stage_fails(instance):
    warehouse.execute_in_process(instance=instance)

    @materialize(version="2", name="orders")
    def orders_v2():
        return Table(ORDERS.assign(amount=1.0), name="orders", primary_key="order_id")

    @materialize(version="1")
    def broken(orders):
        raise RuntimeError("boom")

    @job(name="warehouse")
    def later_fails():
        with Stage("raw"):
            o = orders_v2()
        with Stage("model"):
            by_customer(o)
            broken(o)

    result = later_fails.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert query(instance, "SELECT sum(amount) FROM raw.orders") == [(3.0,)]  # committed
    assert query(instance, "SELECT * FROM model.by_customer") == [(10, 4.0), (20, 4.0)]  # not


def test_a_graph_called_inside_a_stage_puts_its_ops_there(instance):
    from memodag import graph

    @graph
    def cleaned():
        return by_customer(orders())

    @job
    def via_graph():
        with Stage("curated"):
            cleaned()

    via_graph.execute_in_process(instance=instance)
    assert query(instance, "SELECT count(*) FROM curated.by_customer") == [(2,)]
    assert query(instance, "SELECT count(*) FROM curated.orders") == [(3,)]


def test_an_op_moved_to_another_stage_is_stored_there_not_served_from_the_old_one(instance):
    first = warehouse.execute_in_process(instance=instance)
    assert first.executed_step_keys == ["orders", "by_customer"]

    @job(name="warehouse")
    def moved():
        with Stage("raw"):
            o = orders()
            by_customer(o)  # the same code, now in stage raw

    again = moved.execute_in_process(instance=instance)
    assert again.memoized_step_keys == ["orders"]
    assert again.executed_step_keys == ["by_customer"]
    assert query(instance, "SELECT * FROM raw.by_customer ORDER BY 1") == [(10, 4.0), (20, 4.0)]
