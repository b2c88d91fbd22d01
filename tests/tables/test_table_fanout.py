"""Tables in fan-outs, on DuckDB and on the real PostgreSQL: one table per piece named by its
mapping key, memoized per piece, and collected as a list or as one concatenated frame."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from memodag import (
    DynamicOut,
    DynamicOutput,
    ExecutionError,
    Out,
    Stage,
    Table,
    duckdb_table_store,
    job,
    materialize,
    op,
    postgres_table_store,
)

POSTGRES_ENV = "MEMODAG_TEST_POSTGRES_URL"


class Db:
    """One test's corner of a table store: the resource, and a reader of ``<stage>.<table>``."""

    def __init__(self, kind: str, prefix: str, target: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self.target = target  # the DuckDB file or the PostgreSQL URL

    def store(self):
        config = {"schema_prefix": self.prefix}
        if self.kind == "duckdb":
            return duckdb_table_store.configured({"path": self.target, **config})
        return postgres_table_store.configured({"url": self.target, **config})

    def query(self, sql: str):
        """``sql`` with ``{stage}`` written as ``"<prefix>stage"``."""
        sql = re.sub(r"\{(\w+)\}", lambda m: f'"{self.prefix}{m.group(1)}"', sql)
        if self.kind == "duckdb":
            with duckdb.connect(self.target, read_only=True) as conn:
                return conn.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.target) as conn:
            return conn.execute(sql).fetchall()

    def views(self, stage: str) -> list[str]:
        return [
            name
            for (name,) in self.query(
                "SELECT table_name FROM information_schema.views "
                f"WHERE table_schema = '{self.prefix}{stage}' ORDER BY 1"
            )
        ]


@pytest.fixture(params=["duckdb", "postgres"])
def db(request, tmp_path) -> Iterator[Db]:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    if request.param == "duckdb":
        yield Db("duckdb", prefix, str(tmp_path / "tables.duckdb"))
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} not set: no PostgreSQL for this run")
    yield Db("postgres", prefix, base)
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        for (schema,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall():
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def regions_op(keys):
    """A fan-out source yielding one piece per key, in the order given (value: the key)."""

    @op(version="1", out=DynamicOut(), name="regions")
    def regions():
        for key in keys:
            yield DynamicOutput(key, mapping_key=key)

    return regions


@materialize(version="1")
def part(region):
    return Table(pd.DataFrame({"region": [region], "n": [len(region)]}), name="part_{mapping_key}")


def test_each_piece_is_a_table_named_by_its_key_and_the_list_keeps_emission_order(db, instance):
    seen = {}

    @materialize(version="1")
    def sales(region):  # no name: <op>_<key>
        return pd.DataFrame({"region": [region], "amount": [10 * len(region)]})

    @materialize(version="1")
    def summary(parts: list[pd.DataFrame], sold: list):
        seen["parts"], seen["sold"] = parts, sold
        return pd.concat(parts, ignore_index=True)

    @job(resource_defs={"table_store": db.store()})
    def fanned():
        with Stage("sales"):
            pieces = regions_op(["south", "north", "east"])()
            summary(pieces.map(part).collect(), pieces.map(sales).collect())

    result = fanned.execute_in_process(instance=instance)
    assert result.success
    assert db.views("sales") == [
        "part_east",
        "part_north",
        "part_south",
        "sales_east",
        "sales_north",
        "sales_south",
        "summary",
    ]
    assert db.query("SELECT * FROM {sales}.part_north") == [("north", 5)]
    assert db.query("SELECT * FROM {sales}.sales_east") == [("east", 40)]
    # emission order, not key order; each as the annotation asked (list[pd.DataFrame])
    assert [p["region"][0] for p in seen["parts"]] == ["south", "north", "east"]
    assert all(isinstance(p, pd.DataFrame) for p in seen["parts"] + seen["sold"])
    assert db.query("SELECT region FROM {sales}.summary") == [("south",), ("north",), ("east",)]


def test_the_list_comes_as_the_input_type_or_the_annotation(db, instance):
    seen = {}

    @materialize(version="1", input_type=pa.Table)
    def as_arrow(parts):
        seen["arrow"] = parts
        return parts[0]

    @materialize(version="1")
    def as_polars(parts: list[pl.DataFrame]):
        seen["polars"] = parts
        return parts[0]

    @job(resource_defs={"table_store": db.store()})
    def typed():
        with Stage("typed"):
            pieces = regions_op(["a", "b"])().map(part)
            as_arrow(pieces.collect())
            as_polars(pieces.collect())

    assert typed.execute_in_process(instance=instance).success
    assert [type(p) for p in seen["arrow"]] == [pa.Table, pa.Table]
    assert [p["region"].to_list() for p in seen["polars"]] == [["a"], ["b"]]
    assert all(isinstance(p, pl.DataFrame) for p in seen["polars"])


def test_a_frame_annotation_receives_the_pieces_concatenated(db, instance):
    seen = {}

    @materialize(version="1")
    def with_pandas(parts: pd.DataFrame):
        seen["pandas"] = parts
        return parts

    @materialize(version="1")
    def with_polars(parts: pl.DataFrame):
        seen["polars"] = parts
        return parts

    @materialize(version="1")
    def with_arrow(parts: pa.Table):
        seen["arrow"] = parts
        return parts

    @job(resource_defs={"table_store": db.store()})
    def concatenated():
        with Stage("cat"):
            pieces = regions_op(["zz", "a", "mmm"])().map(part)
            with_pandas(pieces.collect())
            with_polars(pieces.collect())
            with_arrow(pieces.collect())

    assert concatenated.execute_in_process(instance=instance).success
    frame = seen["pandas"]
    assert isinstance(frame, pd.DataFrame)
    assert frame["region"].tolist() == ["zz", "a", "mmm"]
    assert frame["n"].tolist() == [2, 1, 3] and str(frame["n"].dtype) == "int64"
    assert list(frame.index) == [0, 1, 2]
    assert isinstance(seen["polars"], pl.DataFrame)
    assert seen["polars"]["region"].to_list() == ["zz", "a", "mmm"]
    assert isinstance(seen["arrow"], pa.Table) and seen["arrow"].num_rows == 3
    assert db.query("SELECT region, n FROM {cat}.with_pandas") == [("zz", 2), ("a", 1), ("mmm", 3)]


def test_zero_pieces_give_an_empty_list_or_an_empty_frame_with_the_declared_schema(db, instance):
    seen = {}

    @materialize(version="1", schema={"region": "string", "n": pa.int64()})
    def declared(region):
        return pd.DataFrame({"region": [region], "n": [1]})

    @op(
        version="1",
        out=Out(
            io_manager_key="table_store", metadata={"schema": pa.schema([("x", pa.float64())])}
        ),
    )
    def plain(region):
        return pd.DataFrame({"x": [1.0]})

    @materialize(version="1")
    def as_list(parts: list[pd.DataFrame]):
        seen["list"] = parts
        return pd.DataFrame({"count": [len(parts)]})

    @materialize(version="1")
    def as_frame(parts: pd.DataFrame, xs: pl.DataFrame):
        seen["frame"], seen["xs"] = parts, xs
        return pd.DataFrame({"count": [len(parts)]})

    @job(resource_defs={"table_store": db.store()})
    def empty():
        with Stage("empty"):
            pieces = regions_op([])()
            as_list(pieces.map(part).collect())
            as_frame(pieces.map(declared).collect(), pieces.map(plain).collect())

    assert empty.execute_in_process(instance=instance).success
    assert seen["list"] == []
    frame = seen["frame"]
    assert isinstance(frame, pd.DataFrame) and len(frame) == 0
    assert list(frame.columns) == ["region", "n"] and str(frame["n"].dtype) == "int64"
    assert seen["xs"].schema == pl.Schema({"x": pl.Float64})


def test_zero_pieces_into_a_frame_without_a_declared_schema_is_an_error_naming_the_fix(
    db, instance
):
    @materialize(version="1")
    def as_frame(parts: pd.DataFrame):
        return parts

    @job(resource_defs={"table_store": db.store()})
    def empty():
        with Stage("empty"):
            as_frame(regions_op([])().map(part).collect())

    with pytest.raises(ExecutionError) as raised:
        empty.execute_in_process(instance=instance)
    message = str(raised.value)
    assert "as_frame" in message and "'parts'" in message and "part" in message
    assert "schema=" in message and "list[" in message


def test_pieces_whose_schemas_differ_are_an_error_naming_two_of_them(db, instance):
    @materialize(version="1")
    def uneven(region):
        value = 1.5 if region == "b" else 1
        return Table(pd.DataFrame({"region": [region], "n": [value]}), name="u_{mapping_key}")

    @materialize(version="1")
    def together(parts: pd.DataFrame):
        return parts

    @job(resource_defs={"table_store": db.store()})
    def mixed():
        with Stage("mixed"):
            together(regions_op(["a", "b", "c"])().map(uneven).collect())

    with pytest.raises(ExecutionError) as raised:
        mixed.execute_in_process(instance=instance)
    message = str(raised.value)
    assert "op 'together' input 'parts'" in message
    assert "uneven[a]" in message and "uneven[b]" in message
    assert "'n'" in message and "int64" in message and "double" in message

    @materialize(version="1")
    def missing(region):
        columns = {"region": [region]} if region == "c" else {"region": [region], "n": [1]}
        return pd.DataFrame(columns)

    @job(resource_defs={"table_store": db.store()})
    def ragged():
        with Stage("ragged"):
            together(regions_op(["a", "b", "c"])().map(missing).collect())

    with pytest.raises(ExecutionError, match=r"missing\[a\].*'n'.*missing\[c\]"):
        ragged.execute_in_process(instance=instance)


def test_hostile_mapping_keys_become_valid_distinct_table_names(db, instance):
    long_a, long_b = "K" * 70 + "a", "K" * 70 + "b"
    keys = ["North", "north", "NORTH", "_1", "1", "a_b", long_a, long_b]

    @materialize(version="1")
    def bare(region):  # the name is the key alone: "1" is no identifier
        return Table(pd.DataFrame({"key": [region]}), name="{mapping_key}")

    @materialize(version="1")
    def check(parts: list, bares: list):
        return pd.DataFrame({"n": [len(parts) + len(bares)]})

    @job(resource_defs={"table_store": db.store()})
    def hostile():
        with Stage("hostile"):
            pieces = regions_op(keys)()
            check(pieces.map(part).collect(), pieces.map(bare).collect())

    result = hostile.execute_in_process(instance=instance)
    assert result.success
    views = db.views("hostile")
    assert len(views) == 2 * len(keys) + 1  # no two pieces share a view
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", v) and len(v) <= 63 for v in views)
    assert "part_north" in views and "part_a_b" in views and "a_b" in views  # plain keys kept
    # each view shows its own piece
    shown = {}
    for view in views:
        if view != "check":
            column = "region" if view.startswith("part_") else "key"
            ((key,),) = db.query(f"SELECT {column} FROM {{hostile}}.{view}")
            shown.setdefault(column, set()).add(key)
    assert shown == {"region": set(keys), "key": set(keys)}
    # the same names again in a memoized run
    again = hostile.execute_in_process(instance=instance)
    assert "check" in again.memoized_step_keys and db.views("hostile") == views


def test_a_changed_piece_re_runs_alone_and_an_equal_table_stops_there(db, instance):
    runs = []

    @op(version="1", out=DynamicOut(), config_schema={"b": str})
    def source(context):
        for key, value in (("a", "x"), ("b", context.op_config["b"]), ("c", "zzz")):
            yield DynamicOutput(value, mapping_key=key)

    @materialize(version="1")
    def measure(value):
        runs.append(value)
        if value.startswith("w"):  # the same data built another way (another pickle)
            frame = pd.DataFrame({"size": [len(value)]})
            frame["one"] = 1
        else:
            frame = pd.DataFrame({"size": [len(value)], "one": [1]})
        return Table(frame, name="m_{mapping_key}")

    @materialize(version="1")
    def total(sizes: pd.DataFrame):
        runs.append("total")
        return pd.DataFrame({"total": [int(sizes["size"].sum())]})

    @job(resource_defs={"table_store": db.store()}, early_cutoff=True)
    def sizes():
        with Stage("sizes"):
            total(source().map(measure).collect())

    def run(b):
        runs.clear()
        result = sizes.execute_in_process(
            instance=instance, run_config={"ops": {"source": {"config": {"b": b}}}}
        )
        assert result.success
        return result

    run("yy")
    assert db.query("SELECT * FROM {sizes}.total") == [(6,)]
    result = run("yyyy")  # piece b changed: its clone re-runs alone, then the total
    assert sorted(result.executed_step_keys) == ["measure[b]", "source", "total"]
    assert runs == ["yyyy", "total"]
    assert db.query("SELECT * FROM {sizes}.total") == [(8,)]
    assert db.query("SELECT * FROM {sizes}.m_b") == [(4, 1)]
    result = run("wwww")  # b changed again, but its table did not: the total is memoized
    assert sorted(result.executed_step_keys) == ["measure[b]", "source"]
    assert runs == ["wwww"]
    assert "total" in result.memoized_step_keys
    result = run("yy")  # a revert: the fan-out and every piece are stored
    assert result.executed_step_keys == [] and runs == []


def test_a_piece_that_breaks_the_declared_schema_fails_naming_it(db, instance):
    @materialize(version="1", schema={"region": "string", "n": "int64"})
    def declared(region):
        n = 1.5 if region == "b" else 1
        return pd.DataFrame({"region": [region], "n": [n]})

    @job(resource_defs={"table_store": db.store()})
    def strict():
        with Stage("strict"):
            regions_op(["a", "b"])().map(declared)

    with pytest.raises(ExecutionError) as raised:
        strict.execute_in_process(instance=instance)
    message = str(raised.value)
    assert "declared[b]" in message and "'n'" in message
    assert "double" in message and "int64" in message
    assert "declared[a]" not in message


def test_the_key_placeholder_outside_a_fan_out_is_an_error(db, instance):
    @materialize(version="1")
    def single():
        return Table(pd.DataFrame({"a": [1]}), name="part_{mapping_key}")

    @job(resource_defs={"table_store": db.store()})
    def lonely():
        single()

    with pytest.raises(ExecutionError, match=r"single.*\{mapping_key\}.*not mapped"):
        lonely.execute_in_process(instance=instance)


def test_nested_fan_outs_and_a_dynamic_output_of_tables(db, instance):
    seen = {}

    @op(version="1", out=DynamicOut(io_manager_key="table_store"))
    def frames(region):
        # a dynamic output stored as tables: one per piece, named <op>_<outer>_<inner>
        for key in ("x_1", "x"):
            yield DynamicOutput(pd.DataFrame({"region": [region], "k": [key]}), mapping_key=key)

    @materialize(version="1")
    def gather(parts: pl.DataFrame):
        seen.setdefault("gathered", []).append(parts)
        return parts

    @job(resource_defs={"table_store": db.store()})
    def nested():
        with Stage("nested"):
            regions_op(["a_b", "a"])().map(lambda r: gather(frames(r).collect()))

    assert nested.execute_in_process(instance=instance).success
    views = db.views("nested")
    # plain keys read as they are; nested keys holding "_" get a hash, so "a_b"+"x" and
    # "a"+"b_x" could never meet
    assert "gather_a" in views and "frames_a_x" in views
    assert len([v for v in views if v.startswith("frames_")]) == 4
    assert any(re.fullmatch(r"frames_a_b_x_1_[0-9a-f]{8}", v) for v in views)
    rows = sorted(db.query("SELECT region, k FROM {nested}.gather_a_b"))
    assert rows == [("a_b", "x"), ("a_b", "x_1")]
    assert sorted(g["k"].to_list() for g in seen["gathered"]) == [["x_1", "x"]] * 2


def test_a_column_all_null_in_one_piece_takes_the_type_of_the_others(db, instance):
    seen = {}

    @materialize(version="1")
    def sparse(region):
        values = {"a": [None], "b": [7], "c": [8], "d": ["x"]}
        return pd.DataFrame({"region": [region], "n": values[region]})

    @materialize(version="1")
    def together(parts: pa.Table):
        seen["parts"] = parts
        return parts

    @job(resource_defs={"table_store": db.store()})
    def nulls():
        with Stage("nulls"):
            together(regions_op(["a", "b", "c"])().map(sparse).collect())

    assert nulls.execute_in_process(instance=instance).success
    assert seen["parts"].schema.field("n").type == pa.int64()
    assert seen["parts"]["n"].to_pylist() == [None, 7, 8]

    @job(resource_defs={"table_store": db.store()})
    def clash():
        with Stage("clash"):
            together(regions_op(["a", "b", "d"])().map(sparse).collect())

    # the all-null piece says nothing: the error names the two pieces that disagree
    with pytest.raises(ExecutionError, match=r"sparse\[b\] and sparse\[d\].*'n' is int64"):
        clash.execute_in_process(instance=instance)


def test_names_and_schemas_are_checked_where_they_are_written():
    from memodag import DefinitionError

    assert Table(None, name="Part_{mapping_key}").name == "part_{mapping_key}"
    with pytest.raises(DefinitionError, match=r"'part-\{mapping_key\}' is not an identifier"):
        Table(None, name="part-{mapping_key}")
    with pytest.raises(DefinitionError, match=r"@materialize: schema must be .*got \['a'\]"):

        @materialize(schema=["a"])
        def listed():
            return None


def test_a_fan_in_list_of_tables_is_handed_over_as_a_collect_is(db, instance):
    seen = {}

    @materialize(version="1")
    def first():
        return pd.DataFrame({"n": [1]})

    @materialize(version="1")
    def second():
        return pl.DataFrame({"n": [2]})

    @materialize(version="1")
    def both(parts: pd.DataFrame, each: list[pa.Table]):
        seen["parts"], seen["each"] = parts, each
        return parts

    @job(resource_defs={"table_store": db.store()})
    def fan_in():
        a, b = first(), second()
        both([b, a], [a, b])

    assert fan_in.execute_in_process(instance=instance).success
    assert seen["parts"]["n"].tolist() == [2, 1]
    assert [t["n"].to_pylist() for t in seen["each"]] == [[1], [2]]
    assert all(isinstance(t, pa.Table) for t in seen["each"])


def test_concatenated_pieces_keep_their_types(db, instance):
    import datetime as dt
    import decimal

    seen = {}

    @materialize(version="1")
    def typed(key):
        return pd.DataFrame(
            {
                "n": pd.array([1, None] if key == "a" else [3, 4], dtype="Int64"),
                "ts": pd.to_datetime(["2024-01-01 10:00", "2024-06-01 11:00"]).tz_localize(
                    "Europe/Berlin"
                ),
                "d": [dt.date(2024, 1, 1), dt.date(1, 1, 1)],
                "dec": [decimal.Decimal("1.50"), decimal.Decimal("2.25")],
                "cat": pd.Categorical(["x", None]),
                "u8": pd.Series([1, 255], dtype="uint8"),
            }
        )

    @materialize(version="1")
    def together(parts: pd.DataFrame, lazy: pl.LazyFrame):
        seen["parts"], seen["lazy"] = parts, lazy
        return parts

    @job(resource_defs={"table_store": db.store()})
    def types():
        with Stage("types"):
            pieces = regions_op(["a", "b"])().map(typed)
            together(pieces.collect(), pieces.collect())

    assert types.execute_in_process(instance=instance).success
    frame = seen["parts"]
    assert {c: str(t) for c, t in frame.dtypes.items() if c != "cat"} == {
        "n": "Int64",
        "ts": "datetime64[us, Europe/Berlin]",
        "d": "object",
        "dec": "object",
        "u8": "uint8",
    }
    assert frame["n"].tolist()[:2] == [1, pd.NA] and frame["u8"].tolist() == [1, 255, 1, 255]
    assert frame["dec"].tolist()[1] == decimal.Decimal("2.25")
    assert frame["cat"].iloc[0] == "x" and pd.isna(frame["cat"].iloc[1])  # as strings
    lazy = seen["lazy"]
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect_schema()["ts"] == pl.Datetime("us", "Europe/Berlin")


def test_a_piece_no_longer_yielded_leaves_the_stage_and_a_partial_run_keeps_the_rest(db, instance):
    @op(version="1", out=DynamicOut(), config_schema={"keys": [str]})
    def source(context):
        for key in context.op_config["keys"]:
            yield DynamicOutput(key, mapping_key=key)

    @materialize(version="1")
    def total(parts: list):
        return pd.DataFrame({"n": [len(parts)]})

    @job(resource_defs={"table_store": db.store()})
    def shrinking():
        with Stage("shrink"):
            total(source().map(part).collect())

    def run(keys, **kwargs):
        config = {"ops": {"source": {"config": {"keys": keys}}}}
        result = shrinking.execute_in_process(instance=instance, run_config=config, **kwargs)
        assert result.success
        return result

    first = run(["a", "b", "c"])
    assert db.views("shrink") == ["part_a", "part_b", "part_c", "total"]
    run(["a", "c"])
    assert db.views("shrink") == ["part_a", "part_c", "total"]
    assert db.query("SELECT n FROM {shrink}.total") == [(2,)]
    # a re-execution of one clone of an older run updates its view and drops no other
    run(["a", "b", "c"], parent_run_id=first.run_id, step_selection=["part[b]"])
    assert db.views("shrink") == ["part_a", "part_b", "part_c", "total"]
    run([])
    assert db.views("shrink") == ["total"]
