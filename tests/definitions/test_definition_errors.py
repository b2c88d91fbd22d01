"""Definition mistakes a user makes by accident, told plainly: two different ops sharing a name in
one body, and an op that returns a generator object instead of being a generator."""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from memodag import (
    DefinitionError,
    DynamicOut,
    DynamicOutput,
    Out,
    Output,
    RetryPolicy,
    StepExecutionError,
)
from memodag import graph, job, op


def _module(path: Path, source: str) -> ModuleType:
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(f"defs_test_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---- two different ops under one name ---------------------------------------------------------


def test_two_different_functions_named_alike_are_a_definition_error_naming_both(tmp_path):
    cleaning = _module(
        tmp_path / "cleaning.py",
        """
        from memodag import op

        @op(name="step")
        def drop_nulls():
            return [1, 2]
        """,
    )
    scoring = _module(
        tmp_path / "scoring.py",
        """
        from memodag import op


        @op(name="step")
        def score(rows):
            return sum(rows)
        """,
    )

    with pytest.raises(DefinitionError) as raised:

        @job
        def orders():
            scoring.score(cleaning.drop_nulls())

    message = str(raised.value)
    assert "orders: two different definitions are named 'step'" in message
    assert re.search(r"function drop_nulls at .*cleaning\.py:4\b", message), message
    assert re.search(r"function score at .*scoring\.py:5\b", message), message
    assert "score.alias('score')" in message


def test_the_same_op_called_twice_is_still_aliased_and_runs():
    @op(name="step")
    def increment(x=0):
        return x + 1

    retried = increment.with_retry_policy(RetryPolicy(max_retries=1))

    @job
    def twice():
        retried(increment(increment()))

    assert list(twice.graph.nodes) == ["step", "step_2", "step_3"]
    assert twice.execute_in_process().output_for_node("step_3") == 3


def test_a_decorated_function_counts_as_its_own_op_not_a_different_one():
    def traced(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)

        return wrapper

    def double(x=1):
        return 2 * x

    plain = op(name="double")(double)
    wrapped = op(name="double")(traced(double))

    @job
    def both():
        wrapped(plain())

    assert both.execute_in_process().output_for_node("double_2") == 4


def test_an_op_and_a_graph_with_one_name_are_refused():
    @op
    def prepare():
        return 1

    @op(name="inner")
    def inner_op():
        return 2

    @graph(name="prepare")
    def prepare_graph():
        return inner_op()

    with pytest.raises(DefinitionError, match=r"op 'prepare' \(function .*prepare .*\) \(node 'prepare'\) and graph 'prepare'"):

        @job
        def mixed():
            prepare()
            prepare_graph()


def test_different_ops_with_one_name_under_distinct_aliases_are_fine():
    @op(name="step")
    def first():
        return 1

    @op(name="step")
    def second(x):
        return x + 10

    @job
    def aliased():
        second.alias("step_b")(first())

    assert aliased.execute_in_process().output_for_node("step_b") == 11
