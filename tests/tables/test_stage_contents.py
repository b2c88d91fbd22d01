"""A committed stage shows exactly the tables its latest committing run made for it: views of
ops moved to another stage or removed go, on DuckDB and on the real PostgreSQL."""

from __future__ import annotations

import duckdb
import pandas as pd

from memodag import Stage, job, materialize

from .test_postgres import pg  # noqa: F401 (the fixture: a schema prefix on the real server)


@materialize(version="1")
def customers():
    return pd.DataFrame({"customer_id": [1, 2]})


@materialize(version="1")
def orders():
    return pd.DataFrame({"order_id": [1, 2, 3]})


@materialize(version="1")
def returns():
    return pd.DataFrame({"order_id": [2]})


def jobs(store=None):
    """The same job in three shapes: ``returns`` in stage raw, moved to stage archive, removed."""
    resources = {"table_store": store} if store is not None else {}

    @job(name="shop", resource_defs=resources)
    def first():
        with Stage("raw"):
            customers()
            orders()
            returns()

    @job(name="shop", resource_defs=resources)
    def moved():
        with Stage("raw"):
            customers()
            orders()
        with Stage("archive"):
            returns()

    @job(name="shop", resource_defs=resources)
    def removed():
        with Stage("raw"):
            customers()
            orders()

    return first, moved, removed


def duckdb_views(instance, schema):
    path = instance.storage_dir.parent / "tables.duckdb"
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT view_name FROM duckdb_views() WHERE schema_name = ? ORDER BY 1", [schema]
        ).fetchall()
    return [r[0] for r in rows]


def test_views_of_moved_and_removed_ops_leave_their_old_stage_on_duckdb(instance):
    first, moved, removed = jobs()
    first.execute_in_process(instance=instance)
    assert duckdb_views(instance, "raw") == ["customers", "orders", "returns"]

    moved.execute_in_process(instance=instance)
    assert duckdb_views(instance, "raw") == ["customers", "orders"]
    assert duckdb_views(instance, "archive") == ["returns"]

    again = removed.execute_in_process(instance=instance)
    assert again.memoized_step_keys == ["customers", "orders"]
    # archive has no op any more: committed empty, as the run made it
    assert duckdb_views(instance, "archive") == []
    assert duckdb_views(instance, "raw") == ["customers", "orders"]

    # and back: a revert is a hit, the views come back
    back = first.execute_in_process(instance=instance)
    assert back.executed_step_keys == []
    assert duckdb_views(instance, "raw") == ["customers", "orders", "returns"]


def test_a_run_of_some_steps_leaves_the_other_views_alone(instance):
    first, _, removed = jobs()
    first.execute_in_process(instance=instance)
    removed.execute_in_process(instance=instance, step_selection=["orders"])
    assert duckdb_views(instance, "raw") == ["customers", "orders", "returns"]


def test_views_of_moved_and_removed_ops_leave_their_old_stage_on_postgres(pg, instance):  # noqa: F811
    first, moved, removed = jobs(pg.store())

    def views(stage):
        rows = pg.query(
            "SELECT viewname FROM pg_views WHERE schemaname = %s ORDER BY 1", pg.schema(stage)
        )
        return [r[0] for r in rows]

    first.execute_in_process(instance=instance)
    assert views("raw") == ["customers", "orders", "returns"]
    moved.execute_in_process(instance=instance)
    assert views("raw") == ["customers", "orders"]
    assert views("archive") == ["returns"]
    removed.execute_in_process(instance=instance)
    assert views("archive") == []
    assert views("raw") == ["customers", "orders"]
