"""Composing ops into graphs and jobs, and the wiring mistakes caught when a job is defined."""

from __future__ import annotations

import pytest

from memodag import DefinitionError, DynamicOut, DynamicOutput, In, Out, graph, job, op


@op
def one():
    return 1


@op
def add_one(x):
    return x + 1


@op
def add(a, b):
    return a + b


@op(out={"left": Out(), "right": Out()})
def split():
    return 1, 2


@op(out=DynamicOut())
def pieces():
    yield DynamicOutput(1, mapping_key="a")


def test_a_job_body_records_nodes_in_call_order_with_their_edges():
    @job
    def pipeline():
        add(add_one(one()), one.alias("other_one")())

    nodes = pipeline.graph.nodes
    assert list(nodes) == ["one", "add_one", "other_one", "add"]
    assert nodes["add"].inputs["a"].node == "add_one"
    assert nodes["add"].inputs["b"].node == "other_one"
    assert pipeline.name == "pipeline"
    assert pipeline.execute_in_process().output_for_node("add") == 3


def test_calling_an_op_twice_without_alias_names_the_second_name_2():
    @job
    def twice():
        add_one(add_one(add_one(one())))

    assert list(twice.graph.nodes) == ["one", "add_one", "add_one_2", "add_one_3"]
    assert twice.execute_in_process().output_for_node("add_one_3") == 4


def test_two_aliases_with_the_same_name_are_rejected():
    with pytest.raises(DefinitionError, match="two nodes are named 'x'"):

        @job
        def clash():
            one.alias("x")()
            one.alias("x")()


def test_multiple_outputs_unpack_or_are_picked_by_name():
    @job
    def unpacked():
        left, right = split()
        add(left, right)

    @job
    def by_name():
        both = split()
        add(both.right, both["left"])

    assert unpacked.execute_in_process().output_for_node("add") == 3
    assert by_name.graph.nodes["add"].inputs["a"].output == "right"
    assert by_name.graph.nodes["add"].inputs["b"].output == "left"


def test_asking_a_multi_output_node_for_an_unknown_output():
    def body():
        add_one(split().middle)

    with pytest.raises(
        AttributeError,
        match=r"node 'split' has no output 'middle' \(outputs: \['left', 'right'\]\)",
    ):
        job(body)


def test_graphs_nest_as_nodes_and_their_outputs_feed_other_ops():
    @graph
    def inner(x):
        return add_one(x)

    @graph
    def outer(x):
        return inner(inner.alias("first")(x))

    @job
    def nested():
        add_one.alias("final")(outer(one()))

    assert set(nested.graph.nodes) == {"one", "outer", "final"}
    paths = [path for path, _ in nested.graph.iter_ops()]
    assert paths == ["one", "outer.first.add_one", "outer.inner.add_one", "final"]
    result = nested.execute_in_process()
    assert result.output_for_node("final") == 4
    assert result.output_for_node("outer") == 3
    assert result.output_for_node("outer.first.add_one") == 2


def test_graph_to_job_binds_resources_and_tags():
    @graph
    def g():
        add_one(one())

    made = g.to_job(name="made", tags={"team": "a"})
    assert made.name == "made"
    assert made.tags == {"team": "a"}
    assert made.execute_in_process().output_for_node("add_one") == 2


def test_a_graph_called_outside_a_body_explains_how_to_run_it():
    @graph
    def g():
        one()

    with pytest.raises(DefinitionError, match="to_job"):
        g()


def test_an_alias_called_outside_a_body_is_rejected():
    with pytest.raises(DefinitionError, match="only be called inside"):
        add_one.alias("x")(1)


def test_a_job_body_takes_no_parameters():
    with pytest.raises(
        DefinitionError, match=r"job 'with_param': a job body takes no parameters, got \['x'\]"
    ):

        @job
        def with_param(x):
            add_one(x)


def test_inputs_with_defaults_need_no_wiring():
    @op(ins={"y": In(default_value=10)})
    def plus(x, y):
        return x + y

    @job
    def defaults():
        plus(one())

    assert defaults.execute_in_process().output_for_node("plus") == 11


# ---- wiring mistakes: DefinitionError at definition time naming the op and input -------------


def _define(body):
    return job(body)


def test_unknown_input_keyword():
    def body():
        add_one(y=one())

    with pytest.raises(
        DefinitionError, match=r"node 'add_one': has no input 'y' \(inputs: \['x'\]\)"
    ):
        _define(body)


def test_missing_input():
    def body():
        add(a=one())

    with pytest.raises(DefinitionError, match=r"node 'add': input 'b' is not connected"):
        _define(body)


def test_too_many_positional_inputs():
    def body():
        add_one(one(), one.alias("o2")())

    with pytest.raises(DefinitionError, match=r"node 'add_one': takes 1 input\(s\) \['x'\], got 2"):
        _define(body)


def test_same_input_given_positionally_and_by_keyword():
    def body():
        x = one()
        add_one(x, x=x)

    with pytest.raises(DefinitionError, match="input 'x' is given twice"):
        _define(body)


def test_all_outputs_of_a_multi_output_op_passed_as_one_value():
    def body():
        add_one(split())

    with pytest.raises(
        DefinitionError, match=r"node 'add_one' input 'x'.*'split'.*several outputs"
    ):
        _define(body)


def test_a_plain_tuple_of_outputs_passed_as_one_value():
    def body():
        left, right = split()
        add_one((left, right))

    with pytest.raises(DefinitionError, match=r"node 'add_one' input 'x'") as info:
        _define(body)
    assert "builder" not in str(info.value)  # names outputs, does not dump internals


def test_a_plain_constant_passed_as_an_input():
    def body():
        add_one(5)

    with pytest.raises(DefinitionError, match=r"node 'add_one' input 'x': got a plain value 5"):
        _define(body)


def test_an_op_passed_without_calling_it_says_call_it():
    def body():
        add_one(pieces)

    with pytest.raises(DefinitionError) as info:
        _define(body)
    assert str(info.value) == (
        "body: node 'add_one' input 'x': got the op 'pieces' itself, not its output; call it: "
        "pieces()"
    )


def test_a_dynamic_output_passed_directly():
    def body():
        add_one(pieces())

    with pytest.raises(DefinitionError, match=r"node 'add_one' input 'x'.*dynamic output 'pieces"):
        _define(body)


def test_a_handle_from_another_body_is_rejected():
    leaked = []

    @graph
    def first():
        leaked.append(one())

    def body():
        add_one(leaked[0])

    with pytest.raises(DefinitionError, match="another graph body"):
        _define(body)


def test_graph_input_not_connected_where_the_graph_is_used():
    @graph
    def needs_x(x):
        return add_one(x)

    def body():
        needs_x()

    with pytest.raises(DefinitionError, match=r"node 'needs_x': input 'x' is not connected"):
        _define(body)


def test_a_graph_returning_something_else_than_outputs():
    with pytest.raises(DefinitionError, match="must return an op output"):

        @graph
        def returns_constant():
            one()
            return 5
