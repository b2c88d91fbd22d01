"""The local table cache on the real DuckDB file and the real PostgreSQL, through the public API:
inputs read from Parquet copies when the cache holds their stored table, misses, stale and
corrupt files ignored and replaced, SQL references read from the database, ``gc`` removing
files no kept run uses, and the cache's settings never entering a version.

A read from the cache is told apart from a read from the database by changing the stored
table's rows behind memodag's back: a consumer that still sees the rows the op wrote read them
from the cache."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from cli_process import run_memodag
from memodag import Stage, Table, duckdb_table_store, job, materialize, postgres_table_store

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"
ROWS = 50
WRITTEN = sum(range(ROWS))  # the sum of ``n`` in the table ``big`` writes


class Db:
    """One test's table store, and a way to change its tables behind memodag's back."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.cache_dir = tmp_path / "cache"
        self.path = tmp_path / "tables.duckdb"
        self.url = os.environ.get(POSTGRES_ENV, "")
        self.prefix = f"c{uuid.uuid4().hex[:10]}_"

    def store(self, cache: dict | None = "default", **config):  # type: ignore[assignment]
        """The store's resource; ``cache``: the ``local_table_cache`` section (None: absent)."""
        if cache == "default":
            cache = {"path": str(self.cache_dir), "min_rows": 0}
        if cache is not None:
            config["local_table_cache"] = cache
        if self.kind == "duckdb":
            return duckdb_table_store.configured({"path": str(self.path), **config})
        return postgres_table_store.configured(
            {"url": self.url, "schema_prefix": self.prefix, **config}
        )

    def data_table(self, physical: str) -> str:
        schema = "memodag_data" if self.kind == "duckdb" else f"{self.prefix}memodag_data"
        return f'"{schema}"."{physical}"'

    def execute(self, sql: str) -> None:
        if self.kind == "duckdb":
            with duckdb.connect(str(self.path)) as conn:
                conn.execute(sql)
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def overwrite(self, physical: str) -> None:
        """Every ``n`` of the stored table set to 0: only a cached copy still has the rows."""
        self.execute(f"UPDATE {self.data_table(physical)} SET n = 0")

    def physical(self, op: str) -> str:
        """The one physical table of ``op``'s output in the store's data schema."""
        schema = "memodag_data" if self.kind == "duckdb" else f"{self.prefix}memodag_data"
        sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            f"'{schema}' AND table_name LIKE '{op}__result__%'"
        )
        if self.kind == "duckdb":
            with duckdb.connect(str(self.path)) as conn:
                (found,) = conn.execute(sql).fetchall()
        else:
            import psycopg

            with psycopg.connect(self.url) as conn:
                (found,) = conn.execute(sql).fetchall()
        return found[0]

    def files(self) -> list[Path]:
        return sorted(self.cache_dir.glob("*/*.parquet"))


@pytest.fixture(params=["duckdb", "postgres"])
def db(request, tmp_path) -> Iterator[Db]:
    if request.param == "postgres" and not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    found = Db(request.param, tmp_path)
    yield found
    if found.kind == "postgres":
        import psycopg

        with psycopg.connect(found.url, autocommit=True) as conn:
            schemas = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
                (found.prefix,),
            ).fetchall()
            for (schema,) in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@materialize(version="1")
def big():
    return Table(pd.DataFrame({"n": range(ROWS), "s": [f"row{i}" for i in range(ROWS)]}))


@materialize(input_type=pd.DataFrame, config_schema={"bump": int}, version="1")
def total(big):
    return pd.DataFrame({"total": [int(big["n"].sum())]})


@materialize(input_type=pl.DataFrame, config_schema={"bump": int}, version="1")
def total_polars(big):
    return big.select(pl.col("n").sum().alias("total"))


@materialize(input_type=sa.Table, config_schema={"bump": int}, version="1")
def total_sql(big):
    return sa.select(sa.func.sum(big.c.n).label("total"))


def make_job(store, *consumers, name="cached"):
    @job(name=name, resource_defs={"table_store": store})
    def cached():
        with Stage("model"):
            made = big()
            for consumer in consumers:
                consumer(made)

    return cached


def run(job_def, instance, bump=1):
    ops = [n for n in ("total", "total_polars", "total_sql") if n in job_def.graph.nodes]
    config = {"ops": {name: {"config": {"bump": bump}} for name in ops}}
    result = job_def.execute_in_process(run_config=config, instance=instance)
    assert result.success
    return result


def totals(result, name="total"):
    return int(result.output_for_node(name, as_type=pd.DataFrame)["total"].iloc[0])


def test_an_input_whose_table_is_cached_is_read_from_the_cache(db, instance):
    cached = make_job(db.store(), total, total_polars)
    run(cached, instance)
    (file,) = db.files()  # big, read by its consumers: one file (no one read total's tables)
    db.overwrite(file.stem)

    again = run(cached, instance, bump=2)  # the consumers run again; big is memoized
    assert again.memoized_step_keys == ["big"]
    assert totals(again) == WRITTEN
    assert totals(again, "total_polars") == WRITTEN
    # output_for_node reads through the same cache
    assert again.output_for_node("big", as_type=pd.DataFrame)["n"].sum() == WRITTEN
    # the arrow types the table was written with come back from the file
    back = again.output_for_node("big", as_type=pa.Table)
    assert back.column("s").to_pylist()[:2] == ["row0", "row1"]


def test_without_the_cache_inputs_are_read_from_the_store(db, instance):
    cached = make_job(db.store(cache={"path": str(db.cache_dir), "enabled": False}), total)
    run(cached, instance)
    assert db.files() == []
    db.overwrite(db.physical("big"))
    assert totals(run(cached, instance, bump=2)) == 0


def test_the_default_is_off_on_duckdb_and_on_for_postgres_tables_of_10000_rows(
    db, instance, tmp_path
):
    @materialize(version="1", name="big")
    def big_10k():
        return pd.DataFrame({"n": range(10_000)})

    @job(name="defaults", resource_defs={"table_store": db.store(cache=None)})
    def defaults():
        total(big_10k())

    run(defaults, instance)
    # in the instance's home (the test instance's: beside its storage directory)
    files = list(tmp_path.glob("table_cache/*/*.parquet"))
    assert len(files) == (1 if db.kind == "postgres" else 0)
    assert not list(tmp_path.glob("**/*.parquet.tmp-*"))


def test_store_output_caches_a_table_when_it_is_written(db, instance):
    store = db.store(cache={"path": str(db.cache_dir), "min_rows": 0, "store_output": True})
    made_only = make_job(store)
    run(made_only, instance)
    (file,) = db.files()  # written with the table, before anyone read it
    db.overwrite(file.stem)
    assert totals(run(make_job(store, total), instance)) == WRITTEN


def test_a_file_recorded_for_another_version_is_ignored_and_replaced(db, instance):
    cached = make_job(db.store(), total)
    run(cached, instance)
    (file,) = db.files()
    # the same physical table name, recorded for another run (and holding other rows)
    stale = pa.table({"n": [7] * ROWS, "s": ["x"] * ROWS})
    record = b'["%s", "1", "another-run"]' % file.stem.encode()
    pq.write_table(stale.replace_schema_metadata({b"memodag.table_cache": record}), file)

    assert totals(run(cached, instance, bump=2)) == WRITTEN  # from the store
    db.overwrite(file.stem)
    assert totals(run(cached, instance, bump=3)) == WRITTEN  # from the file written anew


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_corrupt_file_is_ignored_and_replaced(db, instance, damage):
    cached = make_job(db.store(), total)
    run(cached, instance)
    (file,) = db.files()
    data = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(data[: len(data) // 2])
    else:  # bytes inside the first data page: caught by the page checksum
        middle = len(data) // 4
        file.write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]
        )

    assert totals(run(cached, instance, bump=2)) == WRITTEN
    db.overwrite(file.stem)
    assert totals(run(cached, instance, bump=3)) == WRITTEN
    assert not [p for p in file.parent.iterdir() if ".tmp-" in p.name]  # no temporary files


def test_sql_references_never_come_from_the_cache(db, instance):
    cached = make_job(db.store(), total, total_sql)
    run(cached, instance)
    (file,) = db.files()  # read as data by total; total_sql wrote no file
    db.overwrite(file.stem)
    again = run(cached, instance, bump=2)
    assert totals(again) == WRITTEN  # a frame: from the cache
    assert totals(again, "total_sql") == 0  # a query over the table in the database


def test_a_sql_reference_alone_writes_no_file(db, instance):
    run(make_job(db.store(), total_sql), instance)
    assert db.files() == []


def test_changing_the_cache_settings_recomputes_nothing(db, instance):
    run(make_job(db.store(cache=None), total), instance)
    again = run(make_job(db.store(), total), instance)
    assert again.memoized_step_keys == ["big", "total"]
    other = db.store(cache={"path": str(db.cache_dir), "store_output": True, "min_rows": 5})
    assert run(make_job(other, total), instance).memoized_step_keys == ["big", "total"]


GC_JOB = """
import os
import pandas as pd
from memodag import Stage, Table, {store}, job, materialize

STORE = {store}.configured({config!r})


@materialize(version=os.environ["BIG_VERSION"])
def big():
    return pd.DataFrame({{"n": range(50)}})


@materialize(version="1", input_type=pd.DataFrame)
def total(big):
    return pd.DataFrame({{"total": [int(big["n"].sum())]}})


@job(resource_defs={{"table_store": STORE}})
def collected():
    with Stage("model"):
        total(big())
"""


def test_gc_removes_the_files_of_tables_no_kept_run_uses(db, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    cache = {"path": str(db.cache_dir), "min_rows": 0}
    if db.kind == "duckdb":
        store, config = "duckdb_table_store", {"path": str(db.path), "local_table_cache": cache}
    else:
        store = "postgres_table_store"
        config = {"url": db.url, "schema_prefix": db.prefix, "local_table_cache": cache}
    (project / "job.py").write_text(GC_JOB.format(store=store, config=config))
    home = tmp_path / "home"
    for version in ("1", "2"):
        env = {"BIG_VERSION": version}
        run_memodag("job", "execute", "-f", "job.py", cwd=project, home=home, env=env)
    first, second = sorted(db.files(), key=lambda p: p.stat().st_mtime)

    run_memodag("gc", "-f", "job.py", "--keep-last", "1", "--yes", cwd=project, home=home, env=env)
    assert db.files() == [second]
    assert not first.exists()


def test_every_type_comes_back_from_the_cache_as_from_the_store(db, instance):
    from tables.test_types import PANDAS

    @materialize(version="1")
    def typed():
        return PANDAS

    @job(name="typed", resource_defs={"table_store": db.store()})
    def typed_job():
        typed()

    result = typed_job.execute_in_process(instance=instance)
    from_store = result.output_for_node("typed", as_type=pa.Table)  # a miss: writes the file
    (file,) = db.files()
    from_cache = result.output_for_node("typed", as_type=pa.Table)
    assert from_cache.equals(from_store, check_metadata=True)
    pd.testing.assert_frame_equal(
        result.output_for_node("typed", as_type=pd.DataFrame), from_store.to_pandas()
    )
    db.execute(f"DELETE FROM {db.data_table(file.stem)}")  # the next read is the file's
    assert result.output_for_node("typed", as_type=pl.DataFrame).height == len(PANDAS)


def test_store_output_skips_what_the_store_would_not_read_back_exactly(db, instance):
    times = pd.Series(pd.to_datetime(["2020-01-01 00:00:00.000000001"] * 3))  # nanoseconds

    @materialize(version="1")
    def stamped():
        return pd.DataFrame({"t": times})

    cache = {"path": str(db.cache_dir), "min_rows": 0, "store_output": True}

    @job(name="stamped", resource_defs={"table_store": db.store(cache=cache)})
    def stamped_job():
        stamped()

    stamped_job.execute_in_process(instance=instance)
    # DuckDB keeps nanoseconds; PostgreSQL microseconds, so its table differs from the frame
    assert len(db.files()) == (1 if db.kind == "duckdb" else 0)


def test_the_default_store_takes_the_cache_settings_of_the_store_it_picks(
    db, instance, monkeypatch
):
    if db.kind == "postgres":
        monkeypatch.setenv("MEMODAG_TABLE_STORE_URL", db.url)
        where = {"schema_prefix": db.prefix}
    else:
        where = {"path": str(db.path)}

    @job(name="default_store")  # no table_store: the default one
    def default_store():
        with Stage("model"):
            total(big())

    cache = {"path": str(db.cache_dir), "min_rows": 0}
    config = {
        "resources": {"table_store": {"config": {**where, "local_table_cache": cache}}},
        "ops": {"total": {"config": {"bump": 1}}},
    }
    default_store.execute_in_process(config, instance=instance)
    (file,) = db.files()
    db.overwrite(file.stem)
    config["ops"]["total"]["config"]["bump"] = 2
    again = default_store.execute_in_process(config, instance=instance)
    assert totals(again) == WRITTEN
    # turned off: read from the database, and nothing recomputed for the change of settings
    config["resources"]["table_store"]["config"]["local_table_cache"] = {"enabled": False}
    off = default_store.execute_in_process(config, instance=instance)
    assert off.memoized_step_keys == ["big", "total"]
    assert off.output_for_node("big", as_type=pd.DataFrame)["n"].sum() == 0
