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
    graph,
    job,
    op,
)


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

    with pytest.raises(
        DefinitionError,
        match=r"op 'prepare' \(function .*prepare .*\) \(node 'prepare'\) and graph 'prepare'",
    ):

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


# ---- an op that returns a generator object -----------------------------------------------------


def test_an_op_returning_a_generator_expression_is_told_what_it_returned_and_what_to_do():
    @op
    def squares():
        return (n * n for n in range(3))

    @job
    def numbers():
        squares()

    with pytest.raises(StepExecutionError) as raised:
        numbers.execute_in_process()

    message = str(raised.value)
    assert "op 'squares' returned a generator object" in message
    assert "it produced a value of type int" in message
    assert "return list(...)" in message
    assert "yield Output(value, 'name')" in message
    assert "a generator op yields" not in message


def test_a_returned_empty_generator_is_reported_as_a_returned_generator():
    @op
    def nothing_yet():
        return (row for row in [])

    result = job(name="empty")(lambda: nothing_yet()).execute_in_process(raise_on_error=False)

    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "nothing_yet"
    assert "returned a generator object" in failure.message
    assert "it was empty" in failure.message


def test_calling_an_op_directly_that_returns_a_generator_gets_the_same_advice():
    @op
    def letters():
        return (c for c in "ab")

    with pytest.raises(StepExecutionError, match="op 'letters' returned a generator object"):
        letters()


def test_a_wrapper_returning_its_generator_ops_outputs_still_works():
    def emitting(rows):
        for i, row in enumerate(rows):
            yield DynamicOutput(row, mapping_key=f"k{i}")

    @op(out=DynamicOut())
    def fan():
        return emitting(["a", "b"])  # a plain function handing back a generator of pieces

    @op(out={"total": Out(), "count": Out()})
    def summary():
        return (o for o in [Output(3, "total"), Output(2, "count")])

    @op
    def upper(piece):
        return piece.upper()

    @op
    def joined(pieces):
        return "".join(pieces)

    @job
    def pipeline():
        joined(fan().map(upper).collect())
        summary()

    result = pipeline.execute_in_process()
    assert result.output_for_node("joined") == "AB"
    assert result.output_for_node("summary", "count") == 2


def test_a_generator_op_yielding_plain_values_keeps_its_own_message():
    @op
    def chatty():
        yield 1

    with pytest.raises(StepExecutionError, match="a generator op yields Output or DynamicOutput"):
        job(name="chat")(lambda: chatty()).execute_in_process()
