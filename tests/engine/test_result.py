"""What a run's result offers: outputs by node path (nested graphs and graph outputs included),
addresses, per-step status and events."""

from __future__ import annotations

import pytest

from memodag import EventType, MemodagError, Out, graph, job, op


@op
def base():
    return 2


@op
def square(x):
    return x * x


@op
def negate(x):
    return -x


@op(out={"small": Out(), "big": Out()})
def bounds(x):
    return x, x * 10


@graph
def inner(x):
    return square(x)


@graph
def outer(x):
    small, big = bounds(inner(x))
    return {"small": negate(small), "big": big}


@job
def nested():
    value = base()
    outer.alias("first")(value)
    square.alias("top_square")(value)


@pytest.fixture
def result(instance):
    return nested.execute_in_process(instance=instance)


def test_outputs_of_ops_inside_nested_graphs_by_dotted_path(result):
    assert result.output_for_node("first.inner.square") == 4
    assert result.output_for_node("first.bounds", "big") == 40
    assert result.output_for_node("first.negate") == -4
    assert result.output_for_node("top_square") == 4


def test_outputs_of_graph_nodes_follow_their_output_mappings(result):
    assert result.output_for_node("first", "small") == -4
    assert result.output_for_node("first", output_name="big") == 40
    assert result.output_for_node("first.inner") == 4


def test_addresses_and_step_status(result):
    address = result.output_address("first.inner.square")
    assert address.step_key == "first.inner.square"
    assert address.output_name == "result"
    assert address.run_id == result.run_id
    assert result.output_address("first", "big").step_key == "first.bounds"
    assert result.step_status == {
        "base": "success",
        "first.inner.square": "success",
        "first.bounds": "success",
        "first.negate": "success",
        "top_square": "success",
    }
    assert sorted(result.executed_step_keys) == sorted(result.step_status)
    assert result.failed_step_keys == []
    assert result.memoized_step_keys == []


def test_events_for_a_node_include_the_ops_inside_it(result):
    steps = {e.step_key for e in result.events_for_node("first")}
    assert steps == {"first.inner.square", "first.bounds", "first.negate"}
    kinds = [e.event_type for e in result.events_for_node("top_square")]
    assert kinds[0] == EventType.STEP_START and kinds[-1] == EventType.STEP_SUCCESS


def test_asking_for_what_is_not_there_explains_what_is(result):
    with pytest.raises(
        MemodagError,
        match=r"no node 'missing'; top-level nodes are \['base', 'first', 'top_square'\]",
    ):
        result.output_for_node("missing")
    with pytest.raises(
        MemodagError,
        match=r"graph node 'first' has no output 'result' \(outputs: \['small', 'big'\]\)",
    ):
        result.output_for_node("first")
    with pytest.raises(MemodagError, match=r"op node 'first.bounds' has no output 'result'"):
        result.output_for_node("first.bounds")
    with pytest.raises(MemodagError, match="'base' is an op, not a graph"):
        result.output_for_node("base.inside")


def test_a_failed_or_skipped_node_has_no_output(instance):
    @op
    def fails():
        raise RuntimeError("x")

    @job
    def failing():
        square(fails())

    result = failing.execute_in_process(instance=instance, raise_on_error=False)
    with pytest.raises(
        MemodagError, match=r"node 'square' stored no output 'result' \(step status: skipped\)"
    ):
        result.output_for_node("square")
    assert "success=False" in repr(result)


def test_outputs_are_loaded_again_from_storage_on_each_request(result):
    first = result.output_for_node("first", "big")
    second = result.output_for_node("first", "big")
    assert first == second == 40


def test_a_job_that_returns_outputs_exposes_them_as_output_value(instance):
    @job
    def returning():
        value = base()
        return {"squared": square(value), "through_graph": outer.alias("o")(value)["big"]}

    result = returning.execute_in_process(instance=instance)
    assert result.output_value("squared") == 4
    assert result.output_value("through_graph") == 40
    with pytest.raises(
        MemodagError, match=r"has no output 'result' \(outputs: \['squared', 'through_graph'\]\)"
    ):
        result.output_value()
