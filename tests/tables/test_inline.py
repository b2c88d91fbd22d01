"""The inline hand-over and early cutoff for tables, on DuckDB and the real PostgreSQL, through
the public API (docs/tables.md, "Inline hand-over" and "Early cutoff")."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator

import duckdb
import pandas as pd
import polars as pl
import pytest
import sqlalchemy as sa

from memodag import (
    Stage,
    Table,
    duckdb_table_store,
    job,
    materialize,
    postgres_table_store,
)

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"


class Store:
    """One table store of the test: a DuckDB file, or a schema prefix on the real PostgreSQL."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where

    def definition(self, **config):
        if self.kind == "duckdb":
            return duckdb_table_store.configured({"path": self.where, **config})
        return postgres_table_store.configured(
            {"url": os.environ[POSTGRES_ENV], "schema_prefix": self.where, **config}
        )

    def views(self, stage: str) -> set[str]:
        """The tables the committed stage shows."""
        if self.kind == "duckdb":
            with duckdb.connect(self.where, read_only=True) as conn:
                rows = conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                    [stage],
                ).fetchall()
        else:
            import psycopg

            with psycopg.connect(os.environ[POSTGRES_ENV]) as conn:
                rows = conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (self.where + stage,),
                ).fetchall()
        return {r[0] for r in rows}


@pytest.fixture(params=["duckdb", "postgres"])
def store(request, tmp_path) -> Iterator[Store]:
    if request.param == "duckdb":
        yield Store("duckdb", str(tmp_path / "tables.duckdb"))
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    prefix = f"i{uuid.uuid4().hex[:10]}_"
    yield Store("postgres", prefix)
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall()
        for (schema,) in schemas:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def ran(instance, result) -> list[str]:
    """The steps the run executed, in order."""
    return [
        e.step_key
        for e in instance.get_events(result.run_id)
        if e.event_type.value == "STEP_SUCCESS"
    ]


def chain_job(store_def, calls, c_version="1", hint=True):
    """raw -> cleaned (both inline when ``hint``) -> report (materialized)."""

    @materialize(version="1")
    def raw():
        calls.append("raw")
        return Table(pd.DataFrame({"x": [1, 2, 3]}), inline=hint)

    @materialize(version="1", input_type=pd.DataFrame)
    def cleaned(raw):
        calls.append("cleaned")
        raw["x"] = raw["x"] * 10  # edits its input: the producer's frame must not change
        return Table(raw, inline=hint)

    @materialize(version=c_version, input_type=pl.DataFrame)
    def report(cleaned):
        calls.append("report")
        return Table(cleaned.with_columns(y=pl.col("x") + 1), name="report")

    @job(resource_defs={"table_store": store_def})
    def shop():
        with Stage("model"):
            report(cleaned(raw()))

    return shop


def test_inline_chain_runs_only_when_a_consumer_must(store, instance):
    calls: list[str] = []
    first = chain_job(store.definition(), calls).execute_in_process(instance=instance)
    assert calls == ["raw", "cleaned", "report"]
    # handed over in memory: the stage shows only the materialized table
    assert store.views("model") == {"report"}
    assert first.output_for_node("report", as_type=pd.DataFrame)["y"].tolist() == [11, 21, 31]
    # the consumer's edit did not reach the producer's frame
    assert first.output_for_node("raw", as_type=pd.DataFrame)["x"].tolist() == [1, 2, 3]
    assert first.output_for_node("cleaned", as_type=pl.DataFrame)["x"].to_list() == [10, 20, 30]

    calls.clear()
    again = chain_job(store.definition(), calls).execute_in_process(instance=instance)
    assert calls == [] and ran(instance, again) == []  # nothing changed: nothing runs
    # the memoized inline table lives in the memory of the run that computed it, while its
    # result object lives
    assert again.output_for_node("cleaned")["x"].tolist() == [10, 20, 30]
    del first
    gc.collect()
    with pytest.raises(Exception, match="handed over in memory"):
        again.output_for_node("cleaned")

    calls.clear()
    changed = chain_job(store.definition(), calls, c_version="2").execute_in_process(
        instance=instance
    )
    # the consumer must run: its inlined producers run first, from the first stored ancestor
    assert calls == ["raw", "cleaned", "report"]
    assert ran(instance, changed) == ["raw", "cleaned", "report"]
    assert changed.output_for_node("report", as_type=pd.DataFrame)["y"].tolist() == [11, 21, 31]

    calls.clear()
    chain_job(store.definition(), calls, c_version="1").execute_in_process(instance=instance)
    assert calls == []  # a revert finds the stored report; the inline chain is not needed


def test_a_materialized_producer_is_not_rerun_for_its_consumer(store, instance):
    calls: list[str] = []
    chain_job(store.definition(), calls, hint=False).execute_in_process(instance=instance)
    assert store.views("model") == {"raw", "cleaned", "report"}
    calls.clear()
    chain_job(store.definition(), calls, c_version="2", hint=False).execute_in_process(
        instance=instance
    )
    assert calls == ["report"]


@pytest.mark.parametrize(
    ("policy", "inlined"),
    [
        # policy: which of Table(inline=None), Table(inline=True), Table(inline=False) inline
        ("default_false", {"hint_true"}),
        ("default_true", {"hint_none", "hint_true"}),
        ("force_false", set()),
        ("force_true", {"hint_none", "hint_true", "hint_false"}),
    ],
)
def test_policy_table(tmp_path, instance, policy, inlined):
    store = Store("duckdb", str(tmp_path / "tables.duckdb"))
    frame = pd.DataFrame({"x": [1]})

    @materialize(version="1")
    def hint_none():
        return Table(frame)

    @materialize(version="1")
    def hint_true():
        return Table(frame, inline=True)

    @materialize(version="1")
    def hint_false():
        return Table(frame, inline=False)

    @materialize(version="1")
    def total(hint_none, hint_true, hint_false):
        return pd.concat([hint_none, hint_true, hint_false])

    def shop_with(store_def):
        @job(name="policies", resource_defs={"table_store": store_def})
        def shop():
            with Stage("s"):
                total(hint_none(), hint_true(), hint_false())

        return shop

    all_tables = {"hint_none", "hint_true", "hint_false"}
    result = shop_with(store.definition(inline_policy=policy)).execute_in_process(instance=instance)
    assert store.views("s") == all_tables - inlined | {"total"}
    assert result.output_for_node("total")["x"].tolist() == [1, 1, 1]

    # the run tag overrides the store's policy for one run; the policy is in no version, so
    # a run under another policy recomputes nothing
    other = "force_false" if policy != "force_false" else "force_true"
    again = shop_with(store.definition(inline_policy=policy)).execute_in_process(
        instance=instance, tags={"memodag/inline_policy": other}
    )
    assert ran(instance, again) == []


def test_a_bad_policy_is_refused_before_any_step(tmp_path, instance):
    calls: list[str] = []
    store = Store("duckdb", str(tmp_path / "tables.duckdb"))
    with pytest.raises(Exception, match="force_sometimes"):
        chain_job(store.definition(inline_policy="force_sometimes"), calls).execute_in_process(
            instance=instance
        )
    assert calls == []


def test_a_lazy_consumer_rejects_inline(store, instance):
    @materialize(version="1")
    def orders():
        return Table(pd.DataFrame({"amount": [1, 5, 9]}), inline=True)

    @materialize(lazy=True, input_type=sa.Table)
    def big(orders):
        return sa.select(orders).where(orders.c.amount > 2)

    @job(resource_defs={"table_store": store.definition()})
    def shop():
        with Stage("s"):
            big(orders())

    result = shop.execute_in_process(instance=instance)
    assert store.views("s") == {"orders", "big"}  # materialized: the query reads it there
    assert sorted(result.output_for_node("big", as_type=pd.DataFrame)["amount"]) == [5, 9]


def test_a_consumer_taking_a_table_reference_rejects_inline(tmp_path, instance):
    store = Store("duckdb", str(tmp_path / "tables.duckdb"))

    @materialize(version="1")
    def orders():
        return Table(pd.DataFrame({"amount": [1, 5]}), inline=True)

    @materialize(version="1", input_type=sa.Table)
    def named(orders):
        return pd.DataFrame({"name": [orders.name]})

    @job(resource_defs={"table_store": store.definition()})
    def shop():
        with Stage("s"):
            named(orders())

    shop.execute_in_process(instance=instance)
    assert "orders" in store.views("s")


@materialize(version="1")
def mp_source():
    return Table(pd.DataFrame({"x": [1, 2]}), name="mp_source", inline=True)


@materialize(version="1", input_type=pd.DataFrame)
def mp_total(mp_source):
    return pd.DataFrame({"total": [int(mp_source["x"].sum())]})


def test_other_executors_materialize_inline_tables(tmp_path, instance):
    """Multiprocess (and Dask): steps run in other processes, so the table is materialized."""
    from memodag import ExecutionError, multiprocess_executor

    store = Store("duckdb", str(tmp_path / "tables.duckdb"))

    @job(executor_def=multiprocess_executor, resource_defs={"table_store": store.definition()})
    def mp_shop():
        with Stage("s"):
            mp_total(mp_source())

    try:
        result = mp_shop.execute_in_process(instance=instance)
    except ExecutionError as exc:
        if "in_process_executor" in str(exc):
            pytest.skip("tables run on the in-process executor only in this build")
        raise
    assert store.views("s") == {"mp_source", "mp_total"}
    assert result.output_for_node("mp_total")["total"].tolist() == [3]


def cutoff_job(store_def, calls, version, rows, inline=False):
    @materialize(version=version)
    def source():
        calls.append("source")
        return Table(pd.DataFrame({"x": rows}), inline=inline)

    @materialize(version="1", input_type=pd.DataFrame)
    def doubled(source):
        calls.append("doubled")
        return source * 2

    @job(name="cutoff", resource_defs={"table_store": store_def}, early_cutoff=True)
    def shop():
        doubled(source())

    return shop


@pytest.mark.parametrize("inline", [False, True], ids=["materialized", "inline"])
def test_early_cutoff_keeps_consumers_stored_when_rows_are_identical(store, instance, inline):
    calls: list[str] = []
    cutoff_job(store.definition(), calls, "1", [1, 2], inline).execute_in_process(instance=instance)
    assert calls == ["source", "doubled"]
    calls.clear()
    # a new version of the producer that writes the same rows: the consumer stays stored
    cutoff_job(store.definition(), calls, "2", [1, 2], inline).execute_in_process(instance=instance)
    assert calls == ["source"]
    calls.clear()
    # other rows: the consumer runs
    result = cutoff_job(store.definition(), calls, "3", [1, 3], inline).execute_in_process(
        instance=instance
    )
    assert calls == ["source", "doubled"]
    assert result.output_for_node("doubled")["x"].tolist() == [2, 6]


def test_two_consumers_that_run_recompute_their_inline_producer_once(tmp_path, instance):
    store = Store("duckdb", str(tmp_path / "tables.duckdb"))
    calls: list[str] = []

    def shop_of(version):
        @materialize(version="1")
        def raw():
            calls.append("raw")
            return Table(pd.DataFrame({"x": [1, 2]}), inline=True)

        @materialize(version=version, input_type=pd.DataFrame)
        def left(raw):
            calls.append("left")
            return raw + 1

        @materialize(version=version, input_type=pl.DataFrame)
        def right(raw):
            calls.append("right")
            return raw.with_columns(pl.col("x") * 2)

        @job(name="two", resource_defs={"table_store": store.definition()})
        def shop():
            r = raw()
            left(r)
            right(r)

        return shop

    shop_of("1").execute_in_process(instance=instance)
    calls.clear()
    result = shop_of("2").execute_in_process(instance=instance)
    assert sorted(calls) == ["left", "raw", "right"]
    assert result.output_for_node("right")["x"].to_list() == [2, 4]
    calls.clear()
    shop_of("2").execute_in_process(instance=instance)
    assert calls == []


INLINE_JOB = """
import os

import pandas as pd

from memodag import Table, duckdb_table_store, job, materialize


@materialize(version="1")
def raw():
    return Table(pd.DataFrame({"x": [1]}), inline=True)


@materialize(version=os.environ.get("REPORT_VERSION", "1"), input_type=pd.DataFrame)
def report(raw):
    return raw


@job(resource_defs={"table_store": duckdb_table_store.configured({"path": os.environ["TABLES"]})})
def shop():
    report(raw())
"""


def test_list_versions_tells_inline_tables(tmp_path):
    import json

    from cli_process import run_memodag

    job_file = tmp_path / "shop.py"
    job_file.write_text(INLINE_JOB)
    home = tmp_path / "home"
    env = {"TABLES": str(tmp_path / "tables.duckdb")}
    run_memodag("job", "execute", "-f", str(job_file), cwd=tmp_path, home=home, env=env)

    def listed(version: str) -> dict[str, tuple[str, list[str]]]:
        out = run_memodag(
            "job", "list-versions", "-f", str(job_file), "--json", "--why",
            cwd=tmp_path, home=home, env={**env, "REPORT_VERSION": version},
        )  # fmt: skip
        rows = json.loads(out.stdout)["outputs"]
        return {r["step_output"]: (r["status"], r["reasons"]) for r in rows}

    assert listed("1") == {
        "raw.result": ("stored", ["inline: recomputed if a consumer runs"]),
        "report.result": ("stored", []),
    }
    changed = listed("2")
    assert changed["report.result"][0] == "to-be-recomputed"
    assert changed["raw.result"] == (
        "to-be-recomputed",
        ["inline: a consumer runs, and this table was handed over in memory, not stored"],
    )
    text = run_memodag(
        "job", "list-versions", "-f", str(job_file), cwd=tmp_path, home=home, env=env
    ).stdout
    assert "inline: recomputed if a consumer runs" in text


@pytest.mark.parametrize("inline", [False, True], ids=["materialized", "inline"])
def test_early_cutoff_tells_nested_rows_apart(tmp_path, instance, inline):
    import pyarrow as pa

    store = Store("duckdb", str(tmp_path / "tables.duckdb"))  # PostgreSQL holds no structs
    # two struct columns whose children are slices of one array: same buffers, other rows
    shared = pa.array([1, 2, 3, 4], pa.int64())

    def rows(start: int) -> pa.Table:
        return pa.table({"s": pa.StructArray.from_arrays([shared.slice(start, 2)], names=["v"])})

    def nested_job(version: str, start: int):
        @materialize(version=version)
        def source():
            return Table(rows(start), inline=inline)

        @materialize(version="1", input_type=pd.DataFrame)
        def flat(source):
            return pd.DataFrame({"v": [s["v"] for s in source["s"]]})

        @job(name="nested", resource_defs={"table_store": store.definition()}, early_cutoff=True)
        def shop():
            flat(source())

        return shop

    nested_job("1", 0).execute_in_process(instance=instance)
    result = nested_job("2", 2).execute_in_process(instance=instance)
    assert ran(instance, result) == ["source", "flat"]
    assert result.output_for_node("flat", as_type=pd.DataFrame)["v"].tolist() == [3, 4]


def test_an_io_manager_reused_across_runs_forgets_the_last_runs_inline_outputs(tmp_path, instance):
    from memodag.tables.duckdb import DuckDBTableStore
    from memodag.tables.io_manager import TableIOManager

    manager = TableIOManager(DuckDBTableStore(str(tmp_path / "tables.duckdb")))

    def reused_job(version: str):
        @materialize(version="1")
        def raw():
            return Table(pd.DataFrame({"x": [1, 2]}), inline=True)

        @materialize(version=version, input_type=pd.DataFrame)
        def report(raw):
            return raw

        @job(name="reused", resource_defs={"table_store": manager})
        def shop():
            report(raw())

        return shop

    reused_job("1").execute_in_process(instance=instance)
    # inline handover off: raw runs again and writes its table (it was inline before)
    no_inline = {"memodag/inline_policy": "force_false"}
    second = reused_job("2").execute_in_process(instance=instance, tags=no_inline)
    assert ran(instance, second) == ["raw", "report"]
    # that table is stored, and the index says so: the next consumer reads it, raw stays put
    third = reused_job("3").execute_in_process(instance=instance, tags=no_inline)
    assert ran(instance, third) == ["report"]
    assert third.output_for_node("report", as_type=pd.DataFrame)["x"].tolist() == [1, 2]


def test_reexecuting_a_consumer_recomputes_the_inline_producer_of_a_gone_run(store, instance):
    calls: list[str] = []
    first = chain_job(store.definition(), calls).execute_in_process(instance=instance)
    parent = first.run_id
    del first  # the parent run's memory (its inline tables) is gone, as after a CLI run
    gc.collect()
    calls.clear()
    # only the consumer is selected; its inline producers, not stored, are pulled in
    again = chain_job(store.definition(), calls, c_version="2").execute_in_process(
        instance=instance, parent_run_id=parent, step_selection=["report"]
    )
    assert calls == ["raw", "cleaned", "report"]
    assert again.output_for_node("report", as_type=pd.DataFrame)["y"].tolist() == [11, 21, 31]
