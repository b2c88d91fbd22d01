"""The table store a job gets when it names none: ``$MEMODAG_TABLE_STORE_URL`` picks PostgreSQL
or a DuckDB file, else ``tables.duckdb`` in the instance's home."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from memodag import Stage, StorageError, job, materialize

from .test_postgres import pg  # noqa: F401 (the fixture: a schema prefix on the real server)


@materialize(version="1")
def orders():
    return pd.DataFrame({"order_id": [1, 2], "amount": [1.5, 2.5]})


@job
def shop():
    with Stage("raw"):
        orders()


def test_a_postgresql_url_in_the_environment_picks_postgres(pg, instance, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MEMODAG_TABLE_STORE_URL", pg.url)
    config = {"resources": {"table_store": {"config": {"schema_prefix": pg.prefix}}}}
    result = shop.execute_in_process(config, instance=instance)
    assert result.success
    assert pg.query(f'SELECT * FROM "{pg.schema("raw")}".orders ORDER BY 1') == [(1, 1.5), (2, 2.5)]
    assert not (instance.storage_dir.parent / "tables.duckdb").exists()
    again = shop.execute_in_process(config, instance=instance)
    assert again.memoized_step_keys == ["orders"]


@pytest.mark.parametrize("spelling", ["{}", "duckdb://{}"])
def test_a_duckdb_file_in_the_environment_is_used(spelling, instance, monkeypatch, tmp_path):
    path = tmp_path / "elsewhere" / "warehouse.duckdb"
    monkeypatch.setenv("MEMODAG_TABLE_STORE_URL", spelling.format(path))
    shop.execute_in_process(instance=instance)
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT * FROM raw.orders ORDER BY 1").fetchall() == [
            (1, 1.5),
            (2, 2.5),
        ]
    assert not (instance.storage_dir.parent / "tables.duckdb").exists()


def test_config_path_wins_over_the_environment(instance, monkeypatch, tmp_path):
    monkeypatch.setenv("MEMODAG_TABLE_STORE_URL", "postgresql://nobody@127.0.0.1:1/none")
    path = tmp_path / "mine.duckdb"
    config = {"resources": {"table_store": {"config": {"path": str(path)}}}}
    shop.execute_in_process(config, instance=instance)
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw.orders").fetchall() == [(2,)]


@pytest.mark.parametrize(
    ("url", "config", "message"),
    [
        ("mysql://me:secret@db/x", {}, r"'mysql://me:\*\*\*@db/x', which is neither a PostgreSQL"),
        (
            "postgresql://me@127.0.0.1/x",
            {"hold_file": "write"},
            r"takes no 'hold_file' \(DuckDB options\)",
        ),
    ],
)
def test_a_store_url_it_cannot_use_fails_before_any_op(instance, monkeypatch, url, config, message):
    monkeypatch.setenv("MEMODAG_TABLE_STORE_URL", url)
    run_config = {"resources": {"table_store": {"config": config}}}
    with pytest.raises(StorageError, match=message):
        shop.execute_in_process(run_config, instance=instance)
