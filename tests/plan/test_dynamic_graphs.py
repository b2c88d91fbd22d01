"""Dynamic outputs through composition: graphs mapped over pieces, graphs returning dynamic or
mapped outputs, fan-in lists, one op collecting several fan-outs; memoization and re-execution
through graphs (docs/dynamic.md, "Composing")."""

from __future__ import annotations

import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    DefinitionError,
    DynamicOut,
    DynamicOutput,
    graph,
    job,
    op,
)


@op(out=DynamicOut(), config_schema={"n": int})
def pieces(context):
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op(out=DynamicOut())
def split(x):
    for j in range(2):
        yield DynamicOutput(x * 10 + j, mapping_key=f"j{j}")


@op
def double(x):
    return x * 2


@op
def one():
    return 1


@op
def add(a, b):
    return a + b


@op
def total(xs):
    return sum(xs)


@op
def echo(x):
    return x


@graph
def composed():
    return pieces()


@graph
def plus_one_twice(x):
    return double(add(x, one()))


def n_pieces(n: int, *graphs: str) -> dict:
    """Run config giving ``n`` to the ``pieces`` op inside the nested ``graphs`` (outermost first)."""
    config: dict = {"pieces": {"config": {"n": n}}}
    for name in reversed(graphs):
        config = {name: {"ops": config}}
    return {"ops": config}


def test_a_graph_returning_a_dynamic_output_is_mapped_and_collected_by_its_caller(instance):
    @job
    def through_graph():
        total(composed().map(double).collect())

    result = through_graph.execute_in_process(run_config=n_pieces(3, "composed"), instance=instance)
    assert result.success
    assert result.output_for_node("total") == 0 + 2 + 4
    assert result.output_for_node("double") == {"k0": 0, "k1": 2, "k2": 4}
    assert result.output_for_node("composed") == {"k0": 0, "k1": 1, "k2": 2}


def test_a_dynamic_graph_output_passed_to_an_op_is_a_definition_error():
    with pytest.raises(DefinitionError) as info:

        @job
        def direct():
            echo(composed())

    message = str(info.value)
    assert "node 'echo' input 'x'" in message
    assert "dynamic output 'composed.pieces.result'" in message and ".map(" in message
    assert "<" not in message  # names nodes, not a handle's repr


def test_a_graph_mapped_over_pieces_clones_every_op_inside_it(instance):
    @job
    def mapped_graph():
        total(pieces().map(plus_one_twice).collect())

    result = mapped_graph.execute_in_process(run_config=n_pieces(3), instance=instance)
    assert result.success
    assert result.output_for_node("total") == 2 * (1 + 2 + 3)
    # an op with no input inside the mapped graph is cloned per piece too
    assert {k for k in result.step_status if k.startswith("plus_one_twice.one")} == {
        "plus_one_twice.one[k0]",
        "plus_one_twice.one[k1]",
        "plus_one_twice.one[k2]",
    }
    assert result.output_for_node("plus_one_twice") == {"k0": 2, "k1": 4, "k2": 6}


def test_a_graph_returning_a_mapped_output_is_collected_or_mapped_again(instance):
    @graph
    def doubled():
        return pieces().map(double)

    @job
    def again():
        total(doubled().map(echo).collect())
        total.alias("direct")(doubled.alias("other")().collect())

    result = again.execute_in_process(
        run_config={"ops": {**n_pieces(3, "doubled")["ops"], **n_pieces(2, "other")["ops"]}},
        instance=instance,
    )
    assert result.output_for_node("total") == 6
    assert result.output_for_node("direct") == 2
    assert result.output_for_node("echo") == {"k0": 0, "k1": 2, "k2": 4}


def test_a_mapped_graph_with_a_fan_out_inside_nests(instance):
    @graph
    def split_and_sum(x):
        return total(split(x).map(double).collect())

    @graph
    def split_only(x):
        return split(x)

    @job
    def nested():
        total.alias("inside")(pieces().map(split_and_sum).collect())
        total.alias("returned")(
            pieces.alias("p2")()
            .map(lambda p: total.alias("per_piece")(split_only(p).map(double).collect()))
            .collect()
        )

    result = nested.execute_in_process(
        run_config={"ops": {"pieces": {"config": {"n": 2}}, "p2": {"config": {"n": 2}}}},
        instance=instance,
    )
    expected = 2 * (0 + 1 + 10 + 11)
    assert result.output_for_node("inside") == result.output_for_node("returned") == expected
    assert "split_and_sum.double[k1,j0]" in result.step_status
    assert result.output_for_node("split_and_sum") == {"k0": 2, "k1": 42}


def test_one_fan_out_returned_both_dynamic_and_mapped_is_one_fan_out(instance):
    @graph
    def both():
        p = pieces()
        return {"pieces": p, "doubled": p.map(double)}

    @job
    def paired():
        p, d = both()
        total(p.map(lambda x: add(x, d)).collect())

    result = paired.execute_in_process(run_config=n_pieces(3, "both"), instance=instance)
    assert result.output_for_node("total") == 3 * (0 + 1 + 2)


@pytest.mark.parametrize("same_fan_out", [True, False])
def test_a_clone_collecting_a_whole_fan_out_is_refused(same_fan_out):
    with pytest.raises(DefinitionError) as info:

        @job
        def self_collect():
            x = pieces()
            gathered = x if same_fan_out else pieces.alias("other")()
            total(x.map(lambda y: add(y, gathered.collect())).collect())

    message = str(info.value)
    assert "node 'add' input 'b'" in message
    assert "inside the .map over 'pieces.result'" in message
    assert "outside the .map" in message


def test_the_suggested_rewrite_of_a_clone_collecting_its_fan_out_runs(instance):
    @job
    def rewritten():
        x = pieces()
        everything = total.alias("everything")(x.collect())
        total(x.map(lambda y: add(y, everything)).collect())

    result = rewritten.execute_in_process(run_config=n_pieces(3), instance=instance)
    assert result.output_for_node("add") == {"k0": 3, "k1": 4, "k2": 5}
    assert result.output_for_node("total") == 12
