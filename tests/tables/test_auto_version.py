"""AUTO_VERSION through the public API, on DuckDB and the real PostgreSQL: an op versioned by the
polars plan it builds, memoized when the plan and inputs are unchanged, stable across processes,
with Python functions in the plan versioned by their source."""

from __future__ import annotations

import inspect
import os
import textwrap
import uuid
from collections.abc import Iterator

import pandas as pd
import polars as pl
import pytest

from cli_process import run_memodag
from memodag import (
    AUTO_VERSION,
    DefinitionError,
    MemodagError,
    Stage,
    Table,
    duckdb_table_store,
    job,
    list_versions,
    materialize,
    postgres_table_store,
)

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"
ORDERS = pd.DataFrame({"order_id": list(range(1, 301)), "amount": [float(i) for i in range(300)]})


@pytest.fixture(params=["duckdb", "postgres"])
def store(request, tmp_path) -> Iterator[object]:
    """The table store resource a job uses: a DuckDB file, or a fresh prefix on the real
    PostgreSQL (dropped afterwards)."""
    if request.param == "duckdb":
        yield duckdb_table_store.configured({"path": str(tmp_path / "w.duckdb")})
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield postgres_table_store.configured({"url": url, "schema_prefix": prefix})
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for (schema,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall():
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@materialize(version="1")
def orders():
    return Table(ORDERS, name="orders")


def make_job(store, body):
    @job(name="auto", resource_defs={"table_store": store})
    def auto():
        with Stage("raw"):
            o = orders()
        with Stage("model"):
            body(o)

    return auto


def every_hundredth():
    @materialize(name="picked", version=AUTO_VERSION, input_type=pl.LazyFrame)
    def picked(orders):
        return orders.filter(pl.col("order_id") % 100 == 0)

    return picked


def every_hundredth_rewritten():
    """The same plan as ``every_hundredth``, from other source text."""

    @materialize(name="picked", version=AUTO_VERSION, input_type=pl.LazyFrame)
    def picked(orders):
        hundred = 100
        keep = (pl.col("order_id") % hundred) == 0
        return orders.filter(keep)

    return picked


def every_fiftieth():
    @materialize(name="picked", version=AUTO_VERSION, input_type=pl.LazyFrame)
    def picked(orders):
        return orders.filter(pl.col("order_id") % 50 == 0)

    return picked


def test_an_unchanged_plan_is_memoized_and_a_changed_expression_is_a_new_version(instance, store):
    first = make_job(store, every_hundredth()).execute_in_process(instance=instance)
    assert first.executed_step_keys == ["orders", "picked"]
    assert first.output_for_node("picked", as_type=pd.DataFrame)["order_id"].tolist() == [
        100,
        200,
        300,
    ]
    # other source, same plan: nothing read or written
    same = make_job(store, every_hundredth_rewritten()).execute_in_process(instance=instance)
    assert same.memoized_step_keys == ["orders", "picked"]
    # % 100 -> % 50: a new version without a version bump
    changed = make_job(store, every_fiftieth()).execute_in_process(instance=instance)
    assert changed.executed_step_keys == ["picked"]
    assert changed.output_for_node("picked", as_type=pd.DataFrame)["order_id"].tolist() == [
        50 * i for i in range(1, 7)
    ]
    # a revert finds the old version
    back = make_job(store, every_hundredth()).execute_in_process(instance=instance)
    assert back.memoized_step_keys == ["orders", "picked"]


def test_list_versions_and_explain_predict_the_run_without_running_or_reading_tables(
    instance, store
):
    def rows(body, explain=False):
        found = list_versions(make_job(store, body), instance=instance, explain=explain)
        return {r.step_output: r for r in found}

    before = rows(every_hundredth())
    assert before["picked.result"].status == "to-be-recomputed"  # its input is not stored yet
    make_job(store, every_hundredth()).execute_in_process(instance=instance)
    assert rows(every_hundredth())["picked.result"].status == "stored"
    changed = rows(every_fiftieth(), explain=True)["picked.result"]
    assert changed.status == "to-be-recomputed"
    assert changed.reasons == ("the polars plan of op 'picked' (AUTO_VERSION) changed",)


def test_before_its_input_is_stored_list_versions_shows_no_version_for_it_or_its_consumers(
    instance, store
):
    @materialize(name="doubled", version="1", input_type=pd.DataFrame)
    def doubled(picked):
        return Table(picked.assign(amount=picked["amount"] * 2), name="doubled")

    picked = every_hundredth()
    auto = make_job(store, lambda o: doubled(picked(o)))
    before = {r.step_output: r for r in list_versions(auto, instance=instance, explain=True)}
    # a version made from a placeholder plan would be one no run stores
    assert before["picked.result"].version is None
    assert before["picked.result"].status == "to-be-recomputed"
    assert before["picked.result"].reasons == (
        "the plan of op 'picked' (AUTO_VERSION) is built once its inputs are stored: its version "
        "is known when the run stores them",
    )
    assert before["doubled.result"].version is None
    assert before["doubled.result"].status == "to-be-recomputed"
    assert "picked.result, an AUTO_VERSION op" in before["doubled.result"].reasons[0]
    auto.execute_in_process(instance=instance)
    after = {r.step_output: r for r in list_versions(auto, instance=instance)}
    assert after["picked.result"].status == after["doubled.result"].status == "stored"
    assert after["picked.result"].version is not None


def test_the_output_names_order_and_table_options_are_part_of_the_version(instance, store):
    def two(swap: bool, key: str | None):
        @materialize(name="split", version=AUTO_VERSION, input_type=pl.LazyFrame, nout=2)
        def split(orders):
            small = orders.filter(pl.col("amount") < 10)
            large = Table(orders.filter(pl.col("amount") >= 10), name="large", primary_key=key)
            return (large, small) if swap else (small, large)

        return split

    assert make_job(store, two(False, None)).execute_in_process(
        instance=instance
    ).executed_step_keys == ["orders", "split"]
    assert make_job(store, two(True, None)).execute_in_process(
        instance=instance
    ).executed_step_keys == ["split"]
    assert make_job(store, two(True, "order_id")).execute_in_process(
        instance=instance
    ).executed_step_keys == ["split"]
    assert make_job(store, two(True, "order_id")).execute_in_process(
        instance=instance
    ).memoized_step_keys == ["orders", "split"]


def test_a_changed_input_schema_is_a_new_version(instance, store):
    """The plan is built on the input's schema: a new column upstream changes it (and the
    input's version changes too)."""
    run = make_job(store, every_hundredth()).execute_in_process(instance=instance)
    assert run.executed_step_keys == ["orders", "picked"]

    @materialize(version="2", name="orders")
    def wider():
        return Table(ORDERS.assign(extra=1), name="orders")

    @job(name="auto", resource_defs={"table_store": store})
    def auto():
        with Stage("raw"):
            o = wider()
        with Stage("model"):
            every_hundredth()(o)

    result = auto.execute_in_process(instance=instance)
    assert result.executed_step_keys == ["orders", "picked"]
    assert list(result.output_for_node("picked", as_type=pl.DataFrame).columns) == [
        "order_id",
        "amount",
        "extra",
    ]


def test_auto_version_without_an_input_type_is_refused_when_declared():
    with pytest.raises(DefinitionError, match=r"'picked'.*AUTO_VERSION needs input_type"):

        @materialize(version=AUTO_VERSION)
        def picked(orders):
            return orders


@pytest.mark.skipif(
    "lazy" not in inspect.signature(materialize).parameters,
    reason="lazy=True tasks are not in this build",
)
def test_auto_version_with_lazy_is_refused_when_declared():
    with pytest.raises(DefinitionError, match=r"'picked'.*AUTO_VERSION and lazy=True"):

        @materialize(version=AUTO_VERSION, lazy=True, input_type=pl.LazyFrame)  # type: ignore[call-arg]
        def picked(orders):
            return orders


def test_an_input_type_other_than_lazyframe_fails_before_any_step_runs(instance, tmp_path):
    @materialize(name="picked", version=AUTO_VERSION, input_type=pd.DataFrame)
    def picked(orders):
        return orders

    store = duckdb_table_store.configured({"path": str(tmp_path / "w.duckdb")})
    with pytest.raises(MemodagError) as caught:
        make_job(store, picked).execute_in_process(instance=instance)
    message = str(caught.value)
    assert "op 'picked'" in message and "input 'orders'" in message
    assert "polars.LazyFrame" in message and "DataFrame" in message
    assert not (tmp_path / "w.duckdb").exists()  # no step ran: nothing was written


def test_a_body_that_collects_or_returns_a_non_table_fails_naming_what(instance, tmp_path):
    @materialize(name="picked", version=AUTO_VERSION, input_type=pl.LazyFrame)
    def collects(orders):
        return orders.collect().filter(pl.col("amount") > 1).lazy()

    @materialize(name="picked", version=AUTO_VERSION, input_type=pl.LazyFrame)
    def returns_frame(orders):
        return orders.select("amount").collect_schema().len()

    store = duckdb_table_store.configured({"path": str(tmp_path / "w.duckdb")})
    with pytest.raises(MemodagError, match=r"op 'picked'.*called LazyFrame\.collect\(\)"):
        make_job(store, collects).execute_in_process(instance=instance)
    with pytest.raises(MemodagError, match=r"op 'picked'.*returned builtins\.int for output"):
        make_job(store, returns_frame).execute_in_process(instance=instance)


JOB_FILE = """
import polars as pl
import pandas as pd
from memodag import AUTO_VERSION, Stage, Table, job, materialize
from helpers import bonus


@materialize(version="1")
def orders():
    return Table(pd.DataFrame({"order_id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]}), name="orders")


@materialize(version=AUTO_VERSION, input_type=pl.LazyFrame)
def scored(orders):
    return orders.with_columns(
        score=pl.col("amount").map_elements(bonus, return_dtype=pl.Float64),
        key=pl.col("order_id").cast(pl.Utf8),
    ).join(orders.select("order_id").cache(), on="order_id")


@job
def warehouse():
    with Stage("raw"):
        o = orders()
    with Stage("model"):
        scored(o)
"""


def test_plan_versions_are_stable_across_processes_and_python_functions_count_by_source(
    tmp_path,
):
    """Two fresh processes compute the same version (the second run is memoized), although the
    plan holds a pickled Python function and a cache node with a random id; editing the helper
    the function calls makes a new version."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(JOB_FILE)
    helper = textwrap.dedent(
        """
        def scale(x):
            return x * 2


        def bonus(x):
            return scale(x) + 1
        """
    )
    (project / "helpers.py").write_text(helper)
    home = tmp_path / "home"
    first = run_memodag("job", "execute", "-f", "job.py", "--json", cwd=project, home=home)
    assert _counts(first.stdout) == (2, 0), first.stdout
    second = run_memodag("job", "execute", "-f", "job.py", "--json", cwd=project, home=home)
    assert _counts(second.stdout) == (0, 2), second.stdout
    (project / "helpers.py").write_text(helper.replace("x * 2", "x * 3"))
    third = run_memodag("job", "execute", "-f", "job.py", "--json", cwd=project, home=home)
    assert _counts(third.stdout) == (1, 1), third.stdout


def _counts(stdout: str) -> tuple[int, int]:
    import json

    summary = json.loads(stdout)
    steps = summary.get("steps", summary)
    return steps["executed"], steps["memoized"]


def test_a_table_stored_before_addresses_kept_schemas_is_versioned_from_the_store(
    instance, tmp_path
):
    """Index entries written by an older memodag have no schema in their address: the store's
    own record of the table's Arrow schema gives the same version."""
    import json
    import sqlite3

    store = duckdb_table_store.configured({"path": str(tmp_path / "w.duckdb")})
    make_job(store, every_hundredth()).execute_in_process(instance=instance)
    # each entry's address as such a memodag wrote it: a JSON object, with no schema
    entries = instance.index_entries()
    with sqlite3.connect(tmp_path / "instance.db") as conn:
        for entry in entries:
            address = entry.address.to_dict()
            assert address.pop("schema", None) is not None
            conn.execute(
                "UPDATE output_index SET address = ? WHERE output_key = ? AND version = ?",
                (json.dumps(address), entry.output_key, entry.version),
            )
    again = make_job(store, every_hundredth()).execute_in_process(instance=instance)
    assert again.memoized_step_keys == ["orders", "picked"]
