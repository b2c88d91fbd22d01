"""Fresh input through the public API, on DuckDB and the real PostgreSQL: ``cache=`` functions,
``ExternalTableReference`` and the ``cache_validation`` run modes (run config and CLI)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import duckdb
import pandas as pd
import polars as pl
import pytest

from cli_process import run_memodag
from memodag import (
    AUTO_VERSION,
    DefinitionError,
    ExternalTableReference,
    MemodagError,
    Stage,
    Table,
    duckdb_table_store,
    job,
    materialize,
    postgres_table_store,
)

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"


class Db:
    """Where the test's tables live, and a way to write an outside table there."""

    def __init__(self, kind: str, tmp_path, url: str | None = None) -> None:
        self.kind = kind
        self.path = str(tmp_path / "w.duckdb")
        self.url = url
        self.prefix = f"t{uuid.uuid4().hex[:10]}_"
        self.external_schema = self.prefix + "ext" if kind == "postgres" else "ext"

    def store(self):
        if self.kind == "duckdb":
            return duckdb_table_store.configured({"path": self.path})
        return postgres_table_store.configured({"url": self.url, "schema_prefix": self.prefix})

    def stage_schema(self, stage: str) -> str:
        return stage if self.kind == "duckdb" else self.prefix + stage

    def write_outside(self, values: list[int]) -> None:
        """(Re)create the external table ``<ext>.src`` as another system would."""
        rows = ", ".join(f"({v})" for v in values)
        sql = [
            f'CREATE SCHEMA IF NOT EXISTS "{self.external_schema}"',
            f'DROP TABLE IF EXISTS "{self.external_schema}".src',
            f'CREATE TABLE "{self.external_schema}".src (v BIGINT)',
            f'INSERT INTO "{self.external_schema}".src VALUES {rows}',
        ]
        if self.kind == "duckdb":
            with duckdb.connect(self.path) as conn:
                for statement in sql:
                    conn.execute(statement)
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                for statement in sql:
                    conn.execute(statement)

    def query(self, sql: str):
        if self.kind == "duckdb":
            with duckdb.connect(self.path, read_only=True) as conn:
                return conn.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(sql).fetchall()

    def drop(self) -> None:
        if self.kind != "postgres":
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            for (schema,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (self.prefix,)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["duckdb", "postgres"])
def db(request, tmp_path) -> Iterator[Db]:
    url = None
    if request.param == "postgres":
        url = os.environ.get(POSTGRES_ENV)
        if not url:
            pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    found = Db(request.param, tmp_path, url)
    yield found
    found.drop()


def external_job(db: Db, cache=None):
    @materialize(name="source", version="1", cache=cache)
    def source():
        return ExternalTableReference("src", schema=db.external_schema)

    @materialize(name="total", version="1", input_type=pl.DataFrame)
    def total(source):
        return Table(source.select(pl.col("v").sum()), name="total")

    @job(name="fresh", resource_defs={"table_store": db.store()})
    def fresh():
        with Stage("model"):
            total(source())

    return fresh


def total_of(result) -> int:
    return int(result.output_for_node("total", as_type=pd.DataFrame)["v"].iloc[0])


def test_an_external_table_without_cache_counts_as_changed_on_every_run(instance, db):
    db.write_outside([1, 2])
    fresh = external_job(db)
    first = fresh.execute_in_process(instance=instance)
    assert first.executed_step_keys == ["source", "total"]
    assert total_of(first) == 3
    db.write_outside([1, 2, 3])
    second = fresh.execute_in_process(instance=instance)
    assert second.executed_step_keys == ["source", "total"]  # never stale
    assert total_of(second) == 6
    # ignore_fresh_input: as stored by the last run
    ignored = fresh.execute_in_process(
        instance=instance, run_config={"cache_validation": "ignore_fresh_input"}
    )
    assert ignored.memoized_step_keys == ["source", "total"]


def test_an_external_table_with_cache_counts_as_its_value_says(instance, db):
    state = {"version": "a"}
    db.write_outside([1, 2])
    fresh = external_job(db, cache=lambda context: state["version"])
    assert fresh.execute_in_process(instance=instance).executed_step_keys == ["source", "total"]
    db.write_outside([5])
    assert fresh.execute_in_process(instance=instance).memoized_step_keys == ["source", "total"]
    state["version"] = "b"
    third = fresh.execute_in_process(instance=instance)
    assert third.executed_step_keys == ["source", "total"]
    assert total_of(third) == 5


def test_a_missing_external_table_or_one_in_the_stage_schema_fails_naming_it(instance, db):
    missing = external_job(db)
    with pytest.raises(MemodagError, match=r"external table \S*\.src does not exist"):
        missing.execute_in_process(instance=instance)

    @materialize(name="source", version="1")
    def inside():
        return ExternalTableReference("anything", schema=db.stage_schema("model"))

    @job(name="inside", resource_defs={"table_store": db.store()})
    def inside_job():
        with Stage("model"):
            inside()

    with pytest.raises(MemodagError, match=r"points into the schema of stage 'model'"):
        inside_job.execute_in_process(instance=instance)


def test_cache_and_data_version_together_are_refused():
    with pytest.raises(DefinitionError, match="cache= or data_version="):

        @materialize(cache=lambda c: 1, data_version=lambda c: 1)
        def both():
            return pd.DataFrame()


def sourced_job(db: Db, state: dict, downstream_version: str = "1"):
    """A source op reading outside data (``cache=`` says which), a consumer, and an op that
    depends on neither."""

    @materialize(name="load", version="1", cache=lambda context: state["mark"])
    def load():
        return pd.DataFrame({"v": state["rows"]})

    @materialize(name="double", version=downstream_version, input_type=pd.DataFrame)
    def double(load):
        return load.assign(v=load["v"] * 2)

    @materialize(name="other", version="1")
    def other():
        return pd.DataFrame({"w": [1]})

    @job(name="modes", resource_defs={"table_store": db.store()})
    def modes():
        with Stage("model"):
            double(load())
            other()

    return modes


def test_run_modes_force_and_ignore_fresh_input_then_normal_runs_are_memoized(instance, db):
    state = {"mark": "m1", "rows": [1, 2]}
    modes = sourced_job(db, state)
    assert sorted(modes.execute_in_process(instance=instance).executed_step_keys) == [
        "double",
        "load",
        "other",
    ]
    # the outside data changed but its cache value says not: force_fresh_input re-reads it
    state["rows"] = [10]
    forced = modes.execute_in_process(
        instance=instance, run_config={"cache_validation": "force_fresh_input"}
    )
    assert sorted(forced.executed_step_keys) == ["double", "load"]
    assert forced.memoized_step_keys == ["other"]
    assert forced.output_for_node("double", as_type=pd.DataFrame)["v"].tolist() == [20]
    # the stage shows the new table, which the index names for the usual version
    assert db.query(f'SELECT v FROM "{db.stage_schema("model")}".double') == [(20,)]
    # the next normal run is memoized again, and serves what the forced run stored
    normal = modes.execute_in_process(instance=instance)
    assert sorted(normal.memoized_step_keys) == ["double", "load", "other"]
    assert normal.output_for_node("double", as_type=pd.DataFrame)["v"].tolist() == [20]
    # a new cache value with fresh input ignored: the stored outputs are reused
    state["mark"] = "m2"
    state["rows"] = [7]
    ignored = modes.execute_in_process(
        instance=instance, run_config={"cache_validation": "ignore_fresh_input"}
    )
    assert sorted(ignored.memoized_step_keys) == ["double", "load", "other"]
    assert ignored.output_for_node("double", as_type=pd.DataFrame)["v"].tolist() == [20]
    # ...and a normal run then sees it
    fresh = modes.execute_in_process(instance=instance)
    assert sorted(fresh.executed_step_keys) == ["double", "load"]
    assert fresh.output_for_node("double", as_type=pd.DataFrame)["v"].tolist() == [14]
    # force_cache_invalid: every op runs; the next normal run is memoized again
    everything = modes.execute_in_process(
        instance=instance, run_config={"cache_validation": "force_cache_invalid"}
    )
    assert sorted(everything.executed_step_keys) == ["double", "load", "other"]
    again = modes.execute_in_process(instance=instance)
    assert sorted(again.memoized_step_keys) == ["double", "load", "other"]


def test_an_unknown_mode_is_a_config_error_naming_the_modes(instance, tmp_path):
    db = Db("duckdb", tmp_path)
    modes = sourced_job(db, {"mark": "m", "rows": [1]})
    with pytest.raises(MemodagError, match=r"cache_validation: 'sometimes' is not a mode.*"):
        modes.execute_in_process(instance=instance, run_config={"cache_validation": "sometimes"})


JOB_FILE = """
import json, pathlib
import pandas as pd
from memodag import Stage, job, materialize

SOURCE = pathlib.Path(__file__).parent / "source.json"


def mark(context):
    return json.loads(SOURCE.read_text())["mark"]


@materialize(version="1", cache=mark)
def load():
    return pd.DataFrame({"v": json.loads(SOURCE.read_text())["rows"]})


@materialize(version="1", input_type=pd.DataFrame)
def double(load):
    return load.assign(v=load["v"] * 2)


@job
def modes():
    with Stage("model"):
        double(load())
"""


def test_the_cli_flag_sets_the_mode(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(JOB_FILE)
    (project / "source.json").write_text(json.dumps({"mark": "a", "rows": [1]}))
    home = tmp_path / "home"

    def run(*flags: str) -> tuple[int, int]:
        done = run_memodag(
            "job", "execute", "-f", "job.py", "--json", *flags, cwd=project, home=home
        )
        summary = json.loads(done.stdout)
        steps = summary.get("steps", summary)
        return steps["executed"], steps["memoized"]

    assert run() == (2, 0)
    (project / "source.json").write_text(json.dumps({"mark": "a", "rows": [5]}))
    assert run() == (0, 2)
    assert run("--cache-validation", "force_fresh_input") == (2, 0)
    assert run() == (0, 2)
    (project / "source.json").write_text(json.dumps({"mark": "b", "rows": [5]}))
    assert run("--cache-validation", "ignore_fresh_input") == (0, 2)
    assert run() == (2, 0)
    assert run("--cache-validation", "force_cache_invalid") == (2, 0)
    bad = run_memodag(
        "job",
        "execute",
        "-f",
        "job.py",
        "--cache-validation",
        "never",
        cwd=project,
        home=home,
        check=False,
    )
    assert bad.returncode != 0 and "never" in bad.stderr


def test_an_auto_version_op_reads_an_external_table_by_its_schema(instance, db):
    db.write_outside([1, 2, 3])

    @materialize(name="source", version="1", cache=lambda context: "fixed")
    def source():
        return ExternalTableReference("src", schema=db.external_schema)

    @materialize(name="big", version=AUTO_VERSION, input_type=pl.LazyFrame)
    def big(source):
        return source.filter(pl.col("v") > 1)

    @job(name="ext_auto", resource_defs={"table_store": db.store()})
    def ext_auto():
        with Stage("model"):
            big(source())

    first = ext_auto.execute_in_process(instance=instance)
    assert first.output_for_node("big", as_type=pd.DataFrame)["v"].tolist() == [2, 3]
    assert ext_auto.execute_in_process(instance=instance).memoized_step_keys == ["source", "big"]


GC_JOB = """
import duckdb, polars as pl
from memodag import ExternalTableReference, Stage, Table, job, materialize


@materialize(version="1")
def source():
    return ExternalTableReference("src", schema="ext")


@materialize(version="1", input_type=pl.DataFrame)
def total(source):
    return Table(source.select(pl.col("v").sum()), name="total")


@job
def fresh():
    with Stage("model"):
        total(source())
"""


def test_gc_never_drops_an_external_table(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(GC_JOB)
    home = tmp_path / "home"
    home.mkdir()
    with duckdb.connect(str(home / "tables.duckdb")) as conn:
        conn.execute("CREATE SCHEMA ext")
        conn.execute("CREATE TABLE ext.src AS SELECT 1::BIGINT AS v")
    run_memodag("job", "execute", "-f", "job.py", cwd=project, home=home)
    run_memodag("job", "execute", "-f", "job.py", cwd=project, home=home)
    done = run_memodag("gc", "-f", "job.py", "--keep-last", "0", "--yes", cwd=project, home=home)
    assert "source" in done.stdout  # the external output's entry went, not its table
    with duckdb.connect(str(home / "tables.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT v FROM ext.src").fetchall() == [(1,)]
