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


# -- fan-in of a list of outputs ---------------------------------------------------------------


@op
def as_list(xs):
    return xs


def test_a_list_of_outputs_fans_in_as_a_list_in_order(instance):
    @job
    def fan_in():
        as_list([one.alias("c")(), double(one.alias("a")()), one.alias("b")()])

    result = fan_in.execute_in_process(instance=instance)
    assert result.output_for_node("as_list") == [1, 2, 1]


def test_a_fan_in_inside_a_map_mixes_the_piece_and_static_outputs(instance):
    @job
    def mixed():
        base = one()
        as_list.alias("outer")(pieces().map(lambda p: as_list([p, base, double(p)])).collect())

    result = mixed.execute_in_process(run_config=n_pieces(2), instance=instance)
    assert result.output_for_node("outer") == [[0, 1, 0], [1, 1, 2]]


@op
def pair(a, b):
    return [a, b]


def test_an_outer_piece_used_inside_a_nested_map_is_its_own_piece(instance):
    # inside split(p).map(...), p is still the outer piece: its key is the outer level's, not
    # the inner one's (was: no such piece, every clone skipped, the run a success)
    @job
    def outer_piece():
        as_list.alias("outer")(
            pieces().map(lambda p: as_list(split(p).map(lambda q: pair(p, q)).collect())).collect()
        )

    result = outer_piece.execute_in_process(run_config=n_pieces(2), instance=instance)
    assert result.success
    assert result.output_for_node("outer") == [[[0, 0], [0, 1]], [[1, 10], [1, 11]]]


def test_a_fan_in_member_not_produced_is_left_out(instance):
    from memodag import Out, Output

    @op(out={"maybe": Out(is_required=False)})
    def nothing():
        yield from ()  # a generator that yields no output

    @op(out={"maybe": Out(is_required=False)})
    def something():
        yield Output(5, "maybe")

    @job
    def partial():
        as_list([one(), nothing(), echo(nothing.alias("nothing_2")()), something()])

    result = partial.execute_in_process(instance=instance)
    assert result.success
    assert result.output_for_node("as_list") == [1, 5]


def test_reexecuting_a_fan_out_whose_clones_fan_in_a_static_output(instance):
    @job
    def with_base():
        base = one()
        as_list.alias("outer")(pieces().map(lambda p: as_list([p, base])).collect())

    parent = with_base.execute_in_process(run_config=n_pieces(2), instance=instance)
    child = with_base.execute_in_process(
        run_config=n_pieces(3),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["pieces*"],
    )
    assert child.step_status["one"] == "external"
    assert child.output_for_node("outer") == [[0, 1], [1, 1], [2, 1]]


def _fan_in_job(calls: list[str], b_version: str):
    @op(version="1")
    def a():
        calls.append("a")
        return 1

    @op(version=b_version, name="b")
    def b_op():
        calls.append("b")
        return 2

    @op(version="1")
    def summed(xs):
        calls.append("summed")
        return xs

    @job(name="fan_in_memo", tags={MEMOIZED_RUN_TAG: "true"})
    def fan_in_memo():
        summed([a(), b_op()])

    return fan_in_memo


def test_a_fan_in_is_memoized_and_reruns_when_one_member_changes(instance):
    from memodag import list_versions

    calls: list[str] = []
    _fan_in_job(calls, "1").execute_in_process(instance=instance)
    assert calls == ["a", "b", "summed"]
    calls.clear()
    assert _fan_in_job(calls, "1").execute_in_process(instance=instance).success
    assert calls == []
    changed = _fan_in_job(calls, "2")
    rows = {r.step_output: r for r in list_versions(changed, None, instance, explain=True)}
    assert rows["a.result"].status == "stored"
    assert rows["summed.result"].status == "to-be-recomputed"
    assert rows["summed.result"].reasons == ("input 'xs' changed: member 1 (b.result)",)
    result = changed.execute_in_process(instance=instance)
    assert calls == ["b", "summed"] and result.output_for_node("summed") == [1, 2]


def test_the_order_of_a_fan_in_list_is_part_of_its_version(instance):
    calls: list[str] = []

    @op(version="1")
    def a():
        return 1

    @op(version="2")  # a version of its own: same version would mean same data
    def b():
        return 2

    @op(version="1")
    def seen(xs):
        calls.append("seen")
        return xs

    def build(order):
        @job(name="ordered_fan_in", tags={MEMOIZED_RUN_TAG: "true"})
        def ordered_fan_in():
            outputs = {"a": a(), "b": b()}
            seen([outputs[n] for n in order])

        return ordered_fan_in

    build("ab").execute_in_process(instance=instance)
    result = build("ba").execute_in_process(instance=instance)
    assert calls == ["seen", "seen"] and result.output_for_node("seen") == [2, 1]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ("dynamic", r"input 'xs\[1\]': got dynamic output 'pieces.result' directly"),
        ("collected", r"input 'xs\[1\]': got 'pieces.result' collected, a whole list"),
        ("several", r"input 'xs\[0\]': got all outputs of node 'two'"),
        ("constant", r"input 'xs': got a list of op outputs 'one.result', 5"),
    ],
)
def test_what_a_fan_in_list_cannot_hold(members, message):
    from memodag import Out

    @op(out={"left": Out(), "right": Out()})
    def two():
        return 1, 2

    with pytest.raises(DefinitionError, match=message):

        @job
        def wrong():
            if members == "dynamic":
                as_list([one(), pieces()])
            elif members == "collected":
                as_list([one(), pieces().collect()])
            elif members == "several":
                as_list([two()])
            else:
                as_list([one(), 5])


# -- one op collecting several fan-outs ----------------------------------------------------------


@op
def merge(left, right):
    return {"left": left, "right": right}


def two_fan_outs(n_left: int, n_right: int) -> dict:
    return {
        "ops": {
            "pieces": {"config": {"n": n_left}},
            "right": {"config": {"n": n_right}},
        }
    }


@job
def merged():
    merge(pieces().map(double).collect(), pieces.alias("right")().collect())


@pytest.mark.parametrize(("n_left", "n_right"), [(3, 2), (0, 2), (2, 0), (0, 0)])
def test_one_op_collects_two_fan_outs(n_left, n_right, instance):
    result = merged.execute_in_process(run_config=two_fan_outs(n_left, n_right), instance=instance)
    assert result.success
    assert result.output_for_node("merge") == {
        "left": [2 * i for i in range(n_left)],
        "right": list(range(n_right)),
    }


def test_two_fan_outs_collected_per_piece_of_an_outer_one(instance):
    @job
    def per_piece():
        outer = pieces()
        as_list(
            outer.map(
                lambda p: merge.alias("pair_up")(
                    split(p).collect(), split.alias("again")(double(p)).map(echo).collect()
                )
            ).collect()
        )

    result = per_piece.execute_in_process(run_config=n_pieces(2), instance=instance)
    assert result.output_for_node("as_list") == [
        {"left": [0, 1], "right": [0, 1]},
        {"left": [10, 11], "right": [20, 21]},
    ]


def test_reexecuting_two_collected_fan_outs_collects_their_new_pieces(instance):
    parent = merged.execute_in_process(run_config=two_fan_outs(3, 2), instance=instance)
    child = merged.execute_in_process(
        run_config=two_fan_outs(1, 3),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["pieces*", "right*"],
    )
    assert child.success
    assert child.output_for_node("merge") == {"left": [0], "right": [0, 1, 2]}


def test_reexecuting_one_of_two_collected_fan_outs_keeps_the_other(instance):
    parent = merged.execute_in_process(run_config=two_fan_outs(3, 2), instance=instance)
    child = merged.execute_in_process(
        run_config=two_fan_outs(1, 2),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["pieces*"],
    )
    assert child.success
    assert child.step_status["right"] == "external"
    assert child.output_for_node("merge") == {"left": [0], "right": [0, 1]}
    grandchild = merged.execute_in_process(
        run_config=two_fan_outs(1, 3),
        instance=instance,
        parent_run_id=child.run_id,
        step_selection=["right*"],
    )
    assert grandchild.output_for_node("merge") == {"left": [0], "right": [0, 1, 2]}


def test_a_collected_list_handed_to_a_graph_and_used_inside_its_map_is_refused(instance):
    # the graph body cannot see that its input is a collected list: refused when the plan is
    # built, before the run is recorded
    @graph
    def uses_everything(everything):
        return total(pieces.alias("inner")().map(lambda p: add(p, everything)).collect())

    @job
    def sneaky():
        uses_everything(pieces().collect())

    one_piece = {"config": {"n": 1}}
    config = {"ops": {"pieces": one_piece, "uses_everything": {"ops": {"inner": one_piece}}}}
    with pytest.raises(DefinitionError) as info:
        sneaky.execute_in_process(run_config=config, instance=instance)
    assert instance.get_runs() == []

    message = str(info.value)
    assert "node 'uses_everything.add' input 'b'" in message
    assert "collects 'pieces.result' inside the .map over 'uses_everything.inner.result'" in message


# -- memoization and re-execution through graphs -------------------------------------------------


def _graph_fan_job(calls: list[str], values: list[int]):
    """A graph returning a dynamic output, mapped over by a graph with a fan-out inside, gathered
    by a fan-in of two collectors: every composition feature at once, versioned."""

    # its code "changes" with the values it yields
    @op(version="-".join(map(str, values)), out=DynamicOut())
    def source():
        calls.append("source")
        for i, v in enumerate(values):
            yield DynamicOutput(v, mapping_key=f"k{i}")

    @op(version="1", out=DynamicOut())
    def halves(x):
        calls.append(f"halves{x}")
        yield DynamicOutput(x, mapping_key="a")
        yield DynamicOutput(x + 1, mapping_key="b")

    @op(version="1")
    def work(x):
        calls.append(f"work{x}")
        return x * 2

    @op(version="1")
    def gather(xs):
        calls.append("gather")
        return sum(xs)

    @op(version="1")
    def both(xs):
        calls.append("both")
        return xs

    @graph
    def emitted():
        return source()

    @graph
    def per_piece(x):
        return gather(halves(x).map(work).collect())

    @job(name="graph_fan", tags={MEMOIZED_RUN_TAG: "true"}, early_cutoff=True)
    def graph_fan():
        sums = emitted().map(per_piece)
        both([gather.alias("all")(sums.collect()), gather.alias("count")(sums.collect())])

    return graph_fan


def test_memoized_through_graphs_and_one_changed_piece_reruns_only_its_clones(instance):
    calls: list[str] = []
    first = _graph_fan_job(calls, [10, 20]).execute_in_process(instance=instance)
    assert first.output_for_node("both") == [2 * (10 + 11 + 20 + 21)] * 2
    assert "per_piece.work[k1,b]" in first.step_status
    calls.clear()
    again = _graph_fan_job(calls, [10, 20]).execute_in_process(instance=instance)
    assert again.success and calls == []
    assert again.output_for_node("both") == first.output_for_node("both")
    # the source re-runs and one piece changes: only that piece's clones, and what gathers them
    result = _graph_fan_job(calls, [10, 30]).execute_in_process(instance=instance)
    assert calls == ["source", "halves30", "work30", "work31", "gather", "gather", "gather", "both"]
    assert result.output_for_node("both") == [2 * (10 + 11 + 30 + 31)] * 2


def test_list_versions_predicts_a_run_through_graphs(instance):
    from memodag import list_versions

    calls: list[str] = []
    _graph_fan_job(calls, [10, 20]).execute_in_process(instance=instance)
    rows = list_versions(_graph_fan_job(calls, [10, 20]), None, instance)
    assert {r.status for r in rows} == {"stored"}
    assert "per_piece.work[k0,a].result" in {r.step_output for r in rows}
    assert "both.result" in {r.step_output for r in rows}


def test_reexecuting_one_clone_inside_a_mapped_graph(instance):
    calls: list[str] = []
    graph_fan = _graph_fan_job(calls, [10, 20])
    parent = graph_fan.execute_in_process(instance=instance)
    calls.clear()
    child = graph_fan.execute_in_process(
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["per_piece.work[k1,a]*"],
        tags={MEMOIZED_RUN_TAG: "false"},
    )
    assert calls == ["work20", "gather", "gather", "gather", "both"]
    assert child.step_status["per_piece.halves[k1]"] == "external"
    assert child.output_for_node("both") == parent.output_for_node("both")


@pytest.mark.parametrize(
    ("returned", "shown"),
    [
        ("collected", "'pieces.result' collected"),
        ("piece", "a piece of 'pieces.result'"),
        ("input", "graph input 'x'"),
    ],
)
def test_a_graph_returning_what_is_not_an_op_output_names_it(returned, shown):
    with pytest.raises(DefinitionError) as info:

        @graph
        def wrong(x):
            if returned == "collected":
                return {"out": pieces().collect()}
            if returned == "piece":
                return pieces().map(lambda p: p)
            return x

    message = str(info.value)
    assert "graph 'wrong'" in message and shown in message and "as_list(x.collect())" in message
    assert "builder" not in message and "<" not in message


@op(out=DynamicOut())
def letters():
    for c in "ab":
        yield DynamicOutput(c, mapping_key=c)


@pytest.mark.parametrize(
    "body",
    [
        lambda: pieces().map(lambda p: letters().map(lambda q: add(p, q))),
        lambda: pieces().map(lambda p: letters().map(lambda q: add(q, p))),
        lambda: pieces().map(lambda p: letters().map(lambda q: add(q, double(p)))),
    ],
)
def test_a_piece_used_inside_an_unrelated_nested_fan_out_names_it(body):
    with pytest.raises(DefinitionError) as info:

        @job
        def unrelated():
            body()

    message = str(info.value)
    # the piece is used inside its .map, but within a .map over 'letters', which takes no
    # input from the piece: the message names it and both ways out
    assert "use it inside that .map(...) body" not in message
    assert "inside a .map over 'letters.result', a fan-out unrelated to 'pieces.result'" in message
    assert "`letters(piece).map(...)`" in message
    assert "collect one of the two fan-outs first" in message


@pytest.mark.parametrize(
    ("fn", "shown"),
    [
        (lambda p: 5, "returned 5, not op outputs"),
        (lambda p: (1, 2), "returned a tuple of 1, 2, not op outputs"),
        (lambda p: [double(p), "label"], "returned a list of 'double.result', 'label'"),
    ],
)
def test_a_map_function_returning_what_is_not_an_op_output_is_refused(fn, shown):
    with pytest.raises(DefinitionError) as info:

        @job
        def bad_map():
            total(pieces().map(fn).collect())

    message = str(info.value)
    assert "bad_map: 'pieces.result'.map(...): the function <lambda> " + shown in message
    assert "`.map(lambda piece: double(piece))`" in message


def test_collecting_a_tuple_a_map_returned_says_to_unpack_it():
    with pytest.raises(DefinitionError) as info:

        @job
        def tuple_map():
            total(pieces().map(lambda p: (double(p), echo(p))).collect())

    assert "'pieces.result'.map(...) returned a tuple of 2 outputs" in str(info.value)
    assert "unpack it" in str(info.value)

    @job
    def unpacked():
        doubled, echoed = pieces().map(lambda p: (double(p), echo(p)))
        add(total(doubled.collect()), total.alias("total_2")(echoed.collect()))

    assert unpacked.name == "unpacked"


def test_map_of_what_is_not_a_function_and_collect_of_several_outputs_are_refused():
    with pytest.raises(DefinitionError, match=r"'pieces.result'.map\(...\): takes a function"):

        @job
        def not_callable():
            pieces().map(5)

    @graph
    def two_outputs(p):
        return {"x": double(p), "y": echo(p)}

    with pytest.raises(DefinitionError, match=r"has several outputs \['x', 'y'\]; pick one"):

        @job
        def several():
            total(pieces().map(two_outputs).collect())
