"""Serialization through jobs: each format is chosen per output, and the files really are in it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memodag import EventType, In, Out, Serializer, fs_io_manager, job, op


def _path(result: Any, node: str) -> Path:
    return Path(result.output_address(node).uri)


def test_pickle_is_the_default(instance):
    @op
    def make():
        return {"a": (1, 2), "b": {3}}

    @op
    def use(make):
        return sorted(make["b"]) + list(make["a"])

    @job
    def pipeline():
        use(make())

    result = pipeline.execute_in_process(instance=instance)
    path = _path(result, "make")
    assert path.suffix == ".pkl"
    assert path.is_relative_to(instance.storage_dir)
    with path.open("rb") as f:
        assert pickle.load(f) == {"a": (1, 2), "b": {3}}
    assert result.output_for_node("use") == [3, 1, 2]
    assert result.output_address("make").serializer == "pickle"


def test_json_chosen_on_the_out(instance):
    @op(out=Out(serializer="json"))
    def make():
        return {"name": "x", "values": [1, 2.5, None, True]}

    @op
    def count(make):
        return len(make["values"])

    @job
    def pipeline():
        count(make())

    result = pipeline.execute_in_process(instance=instance)
    path = _path(result, "make")
    assert path.suffix == ".json"
    with path.open() as f:
        assert json.load(f) == {"name": "x", "values": [1, 2.5, None, True]}
    assert result.output_address("make").serializer == "json"
    assert result.output_address("count").serializer == "pickle"  # other outputs keep the default
    assert result.output_for_node("count") == 4
    assert result.output_for_node("make")["name"] == "x"


def test_json_keeps_mapping_order(instance):
    # mapping order is data (docs/versioning.md): a consumer iterating a mapping loaded from
    # JSON sees the order the producer made
    @op(out=Out(serializer="json"))
    def make():
        return {"zebra": 1, "apple": 2}

    @op
    def keys(make):
        return list(make)

    @job
    def pipeline():
        keys(make())

    assert pipeline.execute_in_process(instance=instance).output_for_node("keys") == [
        "zebra",
        "apple",
    ]


def test_manager_default_serializer_from_configured_and_run_config(tmp_path, instance):
    @op
    def make():
        return [1, 2, 3]

    @op(out=Out(serializer="pickle"))
    def keep(make):
        return tuple(make)

    json_fs = fs_io_manager.configured({"base_dir": str(tmp_path / "a"), "serializer": "json"})

    @job(resource_defs={"io_manager": json_fs})
    def configured_job():
        keep(make())

    result = configured_job.execute_in_process(instance=instance)
    made = _path(result, "make")
    assert made.is_relative_to(tmp_path / "a") and made.suffix == ".json"
    assert json.loads(made.read_text()) == [1, 2, 3]
    # an Out's own format beats the manager's default
    assert _path(result, "keep").suffix == ".pkl"
    assert result.output_for_node("keep") == (1, 2, 3)

    @job
    def plain_job():
        keep(make())

    run_config = {
        "resources": {
            "io_manager": {"config": {"base_dir": str(tmp_path / "b"), "serializer": "json"}}
        }
    }
    result = plain_job.execute_in_process(run_config=run_config, instance=instance)
    made = _path(result, "make")
    assert made.is_relative_to(tmp_path / "b")
    assert json.loads(made.read_text()) == [1, 2, 3]


FRAMES = {
    "pandas": lambda: pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}),
    "polars": lambda: pl.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}),
    "arrow": lambda: pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]}),
}
TYPES = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.Table}


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_parquet_round_trips_each_library_as_its_own_type(kind, instance):
    seen: dict[str, Any] = {}

    @op(out=Out(serializer="parquet"))
    def make():
        return FRAMES[kind]()

    @op
    def total(make):
        seen["type"] = type(make)
        return int(sum(make["x"].to_pylist() if kind == "arrow" else make["x"]))

    @job
    def pipeline():
        total(make())

    result = pipeline.execute_in_process(instance=instance)
    assert seen["type"] is TYPES[kind]
    assert result.output_for_node("total") == 6

    path = _path(result, "make")
    assert path.suffix == ".parquet"
    assert result.output_address("make").serializer == "parquet"
    table = pq.read_table(path)  # a real parquet file, readable without memodag
    assert table.column("x").to_pylist() == [1, 2, 3]
    assert table.column("y").to_pylist() == ["a", "b", "c"]

    loaded = result.output_for_node("make")
    assert isinstance(loaded, TYPES[kind])
    if kind == "pandas":
        pd.testing.assert_frame_equal(loaded, FRAMES[kind]())
    else:
        assert loaded.equals(FRAMES[kind]())


def test_parquet_keeps_the_pandas_index(instance):
    frame = pd.DataFrame({"v": [1.5, 2.5]}, index=pd.Index(["r1", "r2"], name="row"))

    @op(out=Out(serializer="parquet"))
    def make():
        return frame

    @job
    def pipeline():
        make()

    result = pipeline.execute_in_process(instance=instance)
    pd.testing.assert_frame_equal(result.output_for_node("make"), frame)


def _write_lines(values: list[str], file: BinaryIO) -> None:
    file.write("\n".join(values).encode() + b"\n")


def _read_lines(file: BinaryIO) -> list[str]:
    return file.read().decode().splitlines()


def test_custom_write_read_pair_on_the_out(instance):
    @op(out=Out(write=_write_lines, read=_read_lines))
    def make():
        return ["alpha", "beta"]

    @op(ins={"lines": In()})
    def shout(lines):
        return [line.upper() for line in lines]

    @job
    def pipeline():
        shout(make())

    result = pipeline.execute_in_process(instance=instance)
    path = _path(result, "make")
    assert path.read_bytes() == b"alpha\nbeta\n"  # exactly what the write function wrote
    assert result.output_address("make").serializer == "custom"
    assert result.output_for_node("shout") == ["ALPHA", "BETA"]
    assert result.output_for_node("make") == ["alpha", "beta"]


class _CsvSerializer(Serializer):
    """A user-defined format: rows of ints as CSV."""

    name = "int-csv"
    extension = ".csv"

    def dump(self, obj: Any, file: BinaryIO) -> None:
        file.write("".join(",".join(map(str, row)) + "\n" for row in obj).encode())

    def load(self, file: BinaryIO) -> Any:
        return [[int(x) for x in line.split(",")] for line in file.read().decode().splitlines()]


def test_serializer_instance_on_the_out(instance):
    @op(out=Out(serializer=_CsvSerializer()))
    def make():
        return [[1, 2], [3, 4]]

    @op
    def flat(make):
        return [x for row in make for x in row]

    @job
    def pipeline():
        flat(make())

    result = pipeline.execute_in_process(instance=instance)
    path = _path(result, "make")
    assert path.suffix == ".csv" and path.read_text() == "1,2\n3,4\n"
    assert result.output_address("make").serializer == "int-csv"
    assert result.output_for_node("flat") == [1, 2, 3, 4]


def test_reexecution_reads_the_format_recorded_in_the_address(tmp_path, instance):
    """The parent stored JSON through the manager's default; the child's manager now defaults to
    pickle, and still loads the parent's output as JSON, as its address says."""

    @op
    def make():
        return {"k": [1, 2]}

    @op
    def use(make):
        return make["k"][1]

    def pipeline_with(serializer: str):
        manager = fs_io_manager.configured(
            {"base_dir": str(tmp_path / "out"), "serializer": serializer}
        )

        @job(name="pipeline", resource_defs={"io_manager": manager})
        def pipeline():
            use(make())

        return pipeline

    parent = pipeline_with("json").execute_in_process(instance=instance)
    assert _path(parent, "make").suffix == ".json"
    child = pipeline_with("pickle").execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["use"]
    )
    assert child.output_for_node("use") == 2
    loaded = instance.get_events(child.run_id, [EventType.LOADED_INPUT])
    assert [e.data["address"]["serializer"] for e in loaded] == ["json"]
    assert loaded[0].data["address"]["run_id"] == parent.run_id
