"""Column types round-trip exactly through a DuckDB table store, from pandas and from polars."""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pandas as pd
import polars as pl
import pytest

from memodag import job, materialize


def round_trip(frame, instance):
    @materialize(version="1")
    def table():
        return frame

    @job
    def types():
        table()

    return types.execute_in_process(instance=instance).output_for_node("table")


PANDAS = pd.DataFrame(
    {
        **{f"i{b}": pd.Series([1, -2, 3], dtype=f"int{b}") for b in (8, 16, 32, 64)},
        **{f"u{b}": pd.Series([1, 2, 2**b - 1], dtype=f"uint{b}") for b in (8, 16, 32, 64)},
        "nullable_int": pd.Series([1, None, 3], dtype="Int64"),
        "f32": pd.Series([1.5, None, 3], dtype="float32"),
        "f64": [1.5, np.nan, 2.0],
        "flag": pd.Series([True, None, False], dtype="boolean"),
        "text": pd.Series(["a", None, "\\N"], dtype="string"),
        "day": [dt.date(1, 1, 1), dt.date(2020, 2, 29), dt.date(9999, 12, 31)],
        "naive": pd.Series(
            [dt.datetime(2020, 1, 1, 12, 0, 0, 123456), None, dt.datetime(1999, 1, 1)],
            dtype="datetime64[us]",
        ),
        "aware": pd.Series(
            [dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC)] * 3, dtype="datetime64[us, UTC]"
        ).dt.tz_convert("Europe/Berlin"),
        "amount": [decimal.Decimal("1.10"), None, decimal.Decimal("-3.25")],
        "all_null": [None, None, None],
    }
)


def test_pandas_types_round_trip(instance):
    back = round_trip(PANDAS, instance)
    for column in PANDAS.columns:
        pd.testing.assert_series_equal(back[column], PANDAS[column])


def test_pandas_categoricals_come_back_as_strings(instance):
    frame = pd.DataFrame({"c": pd.Categorical(["x", "y", "x"])})
    assert round_trip(frame, instance)["c"].tolist() == ["x", "y", "x"]


POLARS = pl.DataFrame(
    {
        **{
            f"i{b}": pl.Series([1, None, -3], dtype=getattr(pl, f"Int{b}")) for b in (8, 16, 32, 64)
        },
        **{
            f"u{b}": pl.Series([1, None, 2**b - 1], dtype=getattr(pl, f"UInt{b}"))
            for b in (8, 16, 32, 64)
        },
        "f32": pl.Series([1.5, None, 3], dtype=pl.Float32),
        "f64": [1.5, None, 2.0],
        "flag": [True, None, False],
        "text": ["a", None, "\\N"],
        "day": [dt.date(1, 1, 1), dt.date(2020, 2, 29), dt.date(9999, 12, 31)],
        "naive": pl.Series(
            [dt.datetime(2020, 1, 1, 12, 0, 0, 123456), None, dt.datetime(1, 1, 1)],
            dtype=pl.Datetime("us"),
        ),
        "aware": pl.Series(
            [dt.datetime(2020, 1, 1, 12)] * 3, dtype=pl.Datetime("us", "Asia/Tokyo")
        ),
        "amount": pl.Series(
            [decimal.Decimal("1.10"), None, decimal.Decimal("-3.25")], dtype=pl.Decimal(10, 2)
        ),
        "all_null": pl.Series([None, None, None], dtype=pl.Null),
    }
)


@pytest.mark.parametrize("empty", [False, True])
def test_polars_types_round_trip(instance, empty):
    frame = POLARS.clear() if empty else POLARS
    back = round_trip(frame, instance)
    assert back.schema == frame.schema
    assert back.equals(frame)


def test_polars_enums_and_categoricals_come_back_as_strings(instance):
    frame = pl.DataFrame(
        {
            "c": pl.Series(["x", "y"], dtype=pl.Categorical),
            "e": pl.Series(["x", "y"], dtype=pl.Enum(["x", "y"])),
        }
    )
    back = round_trip(frame, instance)
    assert back.schema == pl.Schema({"c": pl.String, "e": pl.String})
    assert back["e"].to_list() == ["x", "y"]


def test_an_empty_pandas_frame_keeps_its_columns(instance):
    frame = pd.DataFrame({"a": pd.Series([], dtype="int16"), "b": pd.Series([], dtype="string")})
    back = round_trip(frame, instance)
    assert list(back.columns) == ["a", "b"] and len(back) == 0
    assert back["a"].dtype == "int16"


def test_a_column_no_table_can_hold_names_the_column(instance):
    frame = pd.DataFrame({"ok": [1, 2], "odd": [object(), object()]})

    @materialize(version="1")
    def odd():
        return frame

    @job
    def types():
        odd()

    result = types.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    text = "\n".join(str(e.message) for e in instance.get_events(result.run_id))
    assert "op 'odd' output 'result' (table types.odd)" in text
    assert "column odd with type object" in text
