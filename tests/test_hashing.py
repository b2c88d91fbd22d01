"""The one hashing helper: equal data hash alike in every process, different data never."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memodag.hashing import hash_value


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({1: "x"}, {"1": "x"}),
        # mapping order is data: a consumer iterating the dict sees it
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({1: "x", 2: "y"}, {2: "y", 1: "x"}),
        ((1, 2), [1, 2]),
        ([np.zeros(5000)], [np.concatenate([np.zeros(2500), [1.0], np.zeros(2499)])]),
        (pd.Series([1, 2], dtype="int32"), pd.Series([1, 2], dtype="int64")),
        (pd.DataFrame({"a": ["x", "y"]}), pd.DataFrame({"a": ["x", "y"]}, dtype="category")),
        # what hash_pandas_object leaves out and code sees (reset_index, codes, get_dummies)
        (pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [1, 2]}).rename_axis("id")),
        (pd.Series([1, 2], name="v"), pd.Series([1, 2], name="v").rename_axis("k")),
        (pd.DataFrame({"x": [1]}), pd.DataFrame({"x": [1]}).rename_axis(columns="cols")),
        (
            pd.DataFrame({"c": pd.Categorical(["a", "b"], categories=["a", "b"])}),
            pd.DataFrame({"c": pd.Categorical(["a", "b"], categories=["b", "a"])}),
        ),
        (
            pd.DataFrame({"c": pd.Categorical(["a", "b"], categories=["a", "b"])}),
            pd.DataFrame({"c": pd.Categorical(["a", "b"], categories=["a", "b", "z"])}),
        ),
        (
            pd.Series(pd.Categorical(["a"], categories=["a", "b"])),
            pd.Series(pd.Categorical(["a"], categories=["a", "b"], ordered=True)),
        ),
        (
            pd.DataFrame({"x": [1]}, index=pd.MultiIndex.from_tuples([(1, 2)], names=["a", "b"])),
            pd.DataFrame({"x": [1]}, index=pd.MultiIndex.from_tuples([(1, 2)], names=["b", "a"])),
        ),
        (
            pd.DataFrame({"x": [1]}, index=pd.CategoricalIndex(["a"], categories=["a"])),
            pd.DataFrame({"x": [1]}, index=pd.CategoricalIndex(["a"], categories=["a", "b"])),
        ),
    ],
)
def test_data_hash_tells_different_data_apart(a, b):
    assert hash_value(a) != hash_value(b)


def test_frames_with_list_cells_hash_by_content():
    # hash_pandas_object raises TypeError on list cells; early cutoff must not fail the step
    a = pd.DataFrame({"x": [[1, 2], [3]]})
    assert hash_value(a) == hash_value(pd.DataFrame({"x": [[1, 2], [3]]}))
    assert hash_value(a) != hash_value(pd.DataFrame({"x": [[1, 2], [4]]}))


def test_data_hash_is_stable_for_equal_data():
    assert hash_value({"a": [1, (2, 3)], "b": None}) == hash_value({"a": [1, (2, 3)], "b": None})
    assert hash_value(pd.DataFrame({"a": [1, 2]})) == hash_value(pd.DataFrame({"a": [1, 2]}))


def test_sets_hash_the_same_in_every_process():
    import os
    import subprocess
    import sys

    code = "from memodag.hashing import hash_value; print(hash_value(frozenset({'alpha', 'beta', 'gamma', 8})))"
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            # a clean environment but the same memodag (PYTHONPATH: a source checkout's)
            env={
                "PYTHONHASHSEED": seed,
                "PATH": "",
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            },
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1
    assert hash_value({8, 0}) == hash_value({0, 8})
