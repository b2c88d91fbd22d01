"""Dynamic outputs: what is refused (and where), step selection of clones, and the rule that a
run never reports success for work it silently skipped (docs/dynamic.md)."""

from __future__ import annotations

import pytest

from memodag import (
    DefinitionError,
    DynamicOut,
    DynamicOutput,
    ExecutionError,
    graph,
    job,
    op,
)


@op(out=DynamicOut(), config_schema={"n": int})
def emit(context):
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op
def ten():
    return 10


@op
def multiply_inputs(y, factor):
    return y * factor


@op
def multiply_by_two(x):
    return 2 * x


@op
def sum_numbers(xs):
    return sum(xs)


@job
def dynamic_job():
    factor = ten()
    sum_numbers(emit().map(lambda n: multiply_by_two(multiply_inputs(n, factor))).collect())


CONFIG = {"ops": {"emit": {"config": {"n": 3}}}}


@pytest.fixture
def parent(instance):
    return dynamic_job.execute_in_process(run_config=CONFIG, instance=instance)


def _reexecute(instance, parent, selection):
    return dynamic_job.execute_in_process(
        run_config=CONFIG, instance=instance, parent_run_id=parent.run_id, step_selection=selection
    )


def test_a_clone_named_beside_its_re_running_source_is_refused(instance, parent):
    runs_before = len(instance.get_runs())
    with pytest.raises(ExecutionError) as err:
        _reexecute(instance, parent, ["emit", "multiply_by_two[k1]"])
    message = str(err.value)
    assert "['multiply_by_two[k1]']" in message and "['emit']" in message
    assert "['emit*']" in message  # the fix
    assert len(instance.get_runs()) == runs_before  # refused before any run is recorded


@pytest.mark.parametrize(
    "selection", [["emit*"], ["emit", "sum_numbers"], ["emit", "multiply_by_two"]]
)
def test_the_source_with_what_follows_it_is_no_conflict(instance, parent, selection):
    # "emit*" reaches the parent's clones too, and a mapped node's name means its clones: they
    # are replaced by the new ones, not refused; the collector is made afresh and runs
    child = _reexecute(instance, parent, selection)
    assert child.success
    assert child.step_status["multiply_by_two[k2]"] == "success"
    assert child.output_for_node("sum_numbers") == 2 * 10 * (0 + 1 + 2)


def test_question_mark_selects_every_clone_of_a_mapped_node(instance, parent):
    child = _reexecute(instance, parent, ["multiply_by_two[?]"])

    ran = sorted(k for k, s in child.step_status.items() if s == "success")
    assert ran == ["multiply_by_two[k0]", "multiply_by_two[k1]", "multiply_by_two[k2]"]
    assert child.output_for_node("multiply_by_two") == {"k0": 0, "k1": 20, "k2": 40}


def test_question_mark_with_upstream_marks(instance, parent):
    child = _reexecute(instance, parent, ["+multiply_by_two[?]"])

    ran = {k for k, s in child.step_status.items() if s == "success"}
    assert ran == {f"{op}[k{i}]" for op in ("multiply_inputs", "multiply_by_two") for i in range(3)}


def test_one_clone_by_its_mapping_key(instance, parent):
    child = _reexecute(instance, parent, ["multiply_inputs[k2]*"])

    ran = {k for k, s in child.step_status.items() if s == "success"}
    assert ran == {"multiply_inputs[k2]", "multiply_by_two[k2]", "sum_numbers"}


@pytest.mark.parametrize("key", ["", "not ok", "a/b", 7, None])
def test_an_invalid_mapping_key_is_refused_where_the_piece_is_built(key):
    with pytest.raises(DefinitionError, match=r"DynamicOutput\(mapping_key=.*\^\[A-Za-z0-9_\]\+\$"):
        DynamicOutput(1, mapping_key=key)


def test_an_op_called_directly_returns_its_pieces_and_static_outputs():
    from memodag import Out, Output

    @op(out={"pieces": DynamicOut(), "count": Out()})
    def both():
        yield DynamicOutput(1, mapping_key="a", output_name="pieces")
        yield Output(1, "count")

    produced = both()
    assert produced == [DynamicOutput(1, "a", "pieces"), Output(1, "count")]


# -- the rule: never a success for work silently skipped -------------------------------------


def _never_a_silent_success(define, run_config, instance, node, expected):
    """However memodag handles the composition ``define`` builds, it is refused where the job
    is defined, or the run fails naming ``node``, or ``node`` produced ``expected``: never a
    run that succeeds without ``node``'s work."""
    try:
        defined = define()
    except DefinitionError:
        return "refused"
    result = defined.execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False
    )
    if not result.success:
        failure = [e for e in result.all_events if e.event_type.name == "RUN_FAILURE"][-1]
        assert f"{node}" in failure.message
        with pytest.raises(ExecutionError, match=node):
            defined.execute_in_process(run_config=run_config, instance=instance)
        return "failed"
    assert result.output_for_node(node) == expected
    return "supported"


def test_a_clone_that_also_takes_the_whole_collection_is_never_silently_skipped(instance):
    @op
    def add(x, ys):
        return x + sum(ys)

    def define():
        @job
        def clone_and_collection():
            pieces = emit()
            pieces.map(lambda y: add(y, pieces.collect()))

        return clone_and_collection

    _never_a_silent_success(define, CONFIG, instance, "add", {"k0": 3, "k1": 4, "k2": 5})


def test_a_graph_returning_a_dynamic_output_is_never_silently_skipped(instance):
    @graph
    def composed():
        return emit()

    @op
    def echo(x):
        return x

    def define():
        @job
        def through_a_graph():
            echo(composed())

        return through_a_graph

    config = {"ops": {"composed": {"ops": {"emit": {"config": {"n": 3}}}}}}
    _never_a_silent_success(define, config, instance, "echo", None)
