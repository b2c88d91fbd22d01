"""``Table(materialization_details=...)``: one vocabulary on every store. PostgreSQL makes an
``UNLOGGED`` table, DuckDB accepts and ignores it, and an option no store takes fails the step
naming the table and the value (nothing of the stage is committed)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from memodag import Stage, Table, job, materialize

from .test_postgres import pg  # noqa: F401 (the fixture: a schema prefix on the real server)

FRAME = pd.DataFrame({"x": [1, 2, 3]})


def scratch_job(details, store=None):
    @materialize(version="1")
    def scratch():
        return Table(FRAME, name="scratch", materialization_details=details)

    @job(name="scratch_job", resource_defs={"table_store": store} if store else {})
    def scratch_job():
        with Stage("work"):
            scratch()

    return scratch_job


@pytest.mark.parametrize("details", ["unlogged", {"unlogged": True}, {"unlogged": False}])
def test_duckdb_accepts_unlogged_and_stores_the_table(details, instance):
    scratch_job(details).execute_in_process(instance=instance)
    path = instance.storage_dir.parent / "tables.duckdb"
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT sum(x) FROM work.scratch").fetchall() == [(6,)]


def test_an_option_duckdb_cannot_honour_names_the_table_and_value(instance):
    result = scratch_job({"tablespace": "fast"}).execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    message = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
    assert "table 'scratch'" in message
    assert "{'tablespace': 'fast'}" in message
    assert "DuckDB table store" in message
    path = instance.storage_dir.parent / "tables.duckdb"
    with duckdb.connect(str(path), read_only=True) as conn:
        schemas = conn.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()
    assert ("work",) not in schemas  # nothing committed


@pytest.mark.parametrize(
    ("details", "persistence"), [({"unlogged": True}, "u"), ({"unlogged": False}, "p")]
)
def test_postgres_makes_unlogged_tables_when_asked(pg, instance, details, persistence):  # noqa: F811
    scratch_job(details, pg.store()).execute_in_process(instance=instance)
    found = pg.query(
        "SELECT c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'scratch%%'",
        f"{pg.prefix}memodag_data",
    )
    assert found == [(persistence,)]
    assert pg.query(f'SELECT sum(x) FROM "{pg.schema("work")}".scratch') == [(6,)]


def test_postgres_refuses_an_option_it_does_not_take(pg, instance):  # noqa: F811
    result = scratch_job("fillfactor=50", pg.store()).execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    message = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
    assert "table 'scratch': materialization_details 'fillfactor=50'" in message
