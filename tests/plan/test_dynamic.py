"""Dynamic outputs: fan-out, map, collect, nesting, errors, memoization per piece, re-execution."""

from __future__ import annotations

import pytest

from memodag import (
    MEMOIZED_RUN_TAG,
    DefinitionError,
    DynamicOut,
    DynamicOutput,
    EventType,
    StepExecutionError,
    job,
    op,
)


@op(out=DynamicOut(), config_schema={"n": int})
def pieces(context):
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op
def double(x):
    return x * 2


@op
def total(xs):
    return sum(xs)


@job
def fan_out():
    total(pieces().map(double).collect())


def n_pieces(n: int) -> dict:
    return {"ops": {"pieces": {"config": {"n": n}}}}


def test_map_and_collect(instance):
    result = fan_out.execute_in_process(run_config=n_pieces(4), instance=instance)
    assert result.output_for_node("total") == 12
    assert result.output_for_node("double") == {"k0": 0, "k1": 2, "k2": 4, "k3": 6}
    assert result.output_for_node("pieces") == {"k0": 0, "k1": 1, "k2": 2, "k3": 3}
    assert {k for k in result.step_status if k.startswith("double[")} == {
        "double[k0]",
        "double[k1]",
        "double[k2]",
        "double[k3]",
    }


def test_zero_pieces(instance):
    result = fan_out.execute_in_process(run_config=n_pieces(0), instance=instance)
    assert result.success
    assert result.output_for_node("total") == 0
    assert not any(k.startswith("double") for k in result.step_status)


def test_collect_keeps_emission_order(instance):
    @op(out=DynamicOut())
    def reversed_pieces():
        return [DynamicOutput(i, mapping_key=f"p{i}") for i in (3, 1, 2)]

    @op
    def as_list(xs):
        return xs

    @job
    def ordered():
        as_list(reversed_pieces().map(double).collect())

    assert ordered.execute_in_process(instance=instance).output_for_node("as_list") == [6, 2, 4]


def test_static_input_beside_the_piece_and_chained_maps(instance):
    @op
    def offset():
        return 100

    @op
    def add(x, y):
        return x + y

    @op
    def as_list(xs):
        return xs

    @job
    def with_static():
        base = offset()
        as_list(pieces().map(lambda p: double(add(p, base))).collect())

    result = with_static.execute_in_process(run_config=n_pieces(2), instance=instance)
    assert result.output_for_node("as_list") == [200, 202]
    assert "add[k1]" in result.step_status


def test_two_dynamic_outputs_unpacked(instance):
    @op(out={"values": DynamicOut(), "negatives": DynamicOut()})
    def split():
        for i in range(3):
            yield DynamicOutput(i, mapping_key=f"v{i}", output_name="values")
            yield DynamicOutput(-i, mapping_key=f"n{i}", output_name="negatives")

    @op
    def as_list(xs):
        return xs

    @job
    def two():
        values, negatives = split()
        as_list.alias("positive_list")(values.map(double).collect())
        as_list.alias("negative_list")(negatives.collect())

    result = two.execute_in_process(instance=instance)
    assert result.output_for_node("positive_list") == [0, 2, 4]
    assert result.output_for_node("negative_list") == [0, -1, -2]


def test_nested_fan_out(instance):
    @op(out=DynamicOut())
    def inner(x):
        for j in range(2):
            yield DynamicOutput(x * 10 + j, mapping_key=f"j{j}")

    @job
    def nested():
        sums = pieces().map(lambda p: total.alias("inner_total")(inner(p).map(double).collect()))
        total(sums.collect())

    result = nested.execute_in_process(run_config=n_pieces(2), instance=instance)
    # pieces 0,1 -> inner 0,1 / 10,11 -> doubled and summed
    assert result.output_for_node("total") == 2 * (0 + 1 + 10 + 11)
    assert "double[k1,j0]" in result.step_status
    assert result.output_for_node("inner_total") == {"k0": 2, "k1": 42}


def test_dynamic_output_passed_directly_is_a_definition_error():
    with pytest.raises(DefinitionError, match=r"\.map"):

        @job
        def wrong():
            double(pieces())


@pytest.mark.parametrize(
    ("keys", "message"),
    [(["ok", "not ok"], "'not ok'"), (["same", "same"], "'same' was yielded twice")],
)
def test_bad_mapping_keys_fail_the_step(instance, keys, message):
    @op(out=DynamicOut())
    def bad_keys():
        for i, key in enumerate(keys):
            yield DynamicOutput(i, mapping_key=key)

    @job
    def bad():
        total(bad_keys().map(double).collect())

    with pytest.raises(StepExecutionError) as err:
        bad.execute_in_process(instance=instance)
    assert message in str(err.value) and "bad_keys" in str(err.value)


def test_memoized_per_piece_and_new_piece_runs_alone(instance):
    calls: list[str] = []

    def build(n: int, version: str = "1"):
        @op(version=version, out=DynamicOut())
        def source():
            calls.append("source")
            for i in range(n):
                yield DynamicOutput(i, mapping_key=f"k{i}")

        @op(version="1")
        def work(x):
            calls.append(f"work{x}")
            return x * 2

        @op(version="1")
        def gather(xs):
            calls.append("gather")
            return sum(xs)

        @job(name="memo_fan", tags={MEMOIZED_RUN_TAG: "true"}, early_cutoff=True)
        def memo_fan():
            gather(source().map(work).collect())

        return memo_fan

    build(3).execute_in_process(instance=instance)
    assert calls == ["source", "work0", "work1", "work2", "gather"]
    calls.clear()
    again = build(3).execute_in_process(instance=instance)
    assert calls == [] and again.output_for_node("gather") == 6
    calls.clear()
    # the source's code changes and it yields one more piece: with early cutoff only the new
    # piece's clone and the collector execute
    result = build(4, version="2").execute_in_process(instance=instance)
    assert calls == ["source", "work3", "gather"]
    assert result.output_for_node("gather") == 12


def _reexecute_recorded_fan(instance, selection):
    """Run a 3-piece fan-out (pieces -> recorded_double -> total), then re-execute ``selection``
    from it; return the parent, the child and the pieces the child doubled."""
    calls: list[str] = []

    @op
    def recorded_double(x):
        calls.append(f"double{x}")
        return x * 2

    @job
    def fan():
        total(pieces().map(recorded_double).collect())

    parent = fan.execute_in_process(run_config=n_pieces(3), instance=instance)
    calls.clear()
    child = fan.execute_in_process(
        run_config=n_pieces(3),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=selection,
    )
    return parent, child, sorted(calls)


def test_reexecute_one_piece_from_parent(instance):
    parent, child, calls = _reexecute_recorded_fan(instance, ["recorded_double[k1]"])

    assert calls == ["double1"]
    assert child.step_status["recorded_double[k1]"] == "success"
    assert child.step_status["pieces"] == "external"
    loaded = [e for e in child.all_events if e.event_type is EventType.LOADED_INPUT]
    assert loaded[0].data["address"]["run_id"] == parent.run_id


@pytest.mark.parametrize(
    ("selection", "ran"),
    [
        (["recorded_double*"], ["double0", "double1", "double2"]),  # every clone and downstream
        (["recorded_double[k1]*"], ["double1"]),  # one clone and downstream
        (["recorded_double[*]"], ["double0", "double1", "double2"]),  # a glob: the clones only
    ],
)
def test_reexecute_a_mapped_node_by_its_name(selection, ran, instance):
    _, child, calls = _reexecute_recorded_fan(instance, selection)

    assert calls == ran
    assert child.step_status["pieces"] == "external"
    downstream = selection[0].endswith("*") and not selection[0].endswith("[*]")
    assert (child.step_status.get("total") == "success") is downstream
    assert child.output_for_node("total") == sum(2 * i for i in range(3))


def test_annotations_and_outputs_by_name(instance):
    from collections.abc import Iterator

    @op(out={"values": DynamicOut(), "negatives": DynamicOut()})
    def split() -> Iterator[DynamicOutput[int]]:
        for i in range(1, 3):
            yield DynamicOutput(i, mapping_key=f"v{i}", output_name="values")
            yield DynamicOutput(-i, mapping_key=f"n{i}", output_name="negatives")

    @op
    def as_list(xs: list[int]) -> list[int]:
        return xs

    @job
    def by_name():
        outs = split()
        as_list.alias("values_list")(outs.values.map(double).collect())
        as_list.alias("negatives_list")(outs.negatives.collect())

    result = by_name.execute_in_process(instance=instance)
    assert result.output_for_node("values_list") == [2, 4]
    assert result.output_for_node("negatives_list") == [-1, -2]
    assert result.output_for_node("split", "negatives") == {"n1": -1, "n2": -2}


def test_failing_piece_fails_only_its_clone_and_the_collector(instance):
    @op
    def fragile(x):
        if x == 1:
            raise ValueError("piece 1 is broken")
        return x

    @op
    def neighbour(x):
        return x

    @job
    def partly_broken():
        mapped = pieces().map(fragile)
        total(mapped.collect())
        pieces.alias("other")().map(neighbour)

    result = partly_broken.execute_in_process(
        run_config={"ops": {"pieces": {"config": {"n": 3}}, "other": {"config": {"n": 2}}}},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert result.step_status["fragile[k1]"] == "failed"
    assert result.step_status["fragile[k0]"] == result.step_status["fragile[k2]"] == "success"
    assert result.step_status["total"] == "skipped"
    assert result.step_status["neighbour[k1]"] == "success"


@pytest.mark.parametrize("shape", ["collect_twice_needed", "leaked_piece"])
def test_per_piece_values_cannot_escape_their_map(shape):
    @op(out=DynamicOut())
    def inner(x):
        yield DynamicOutput(x, mapping_key="j0")

    with pytest.raises(DefinitionError, match="one value per piece"):

        @job
        def escaping():
            if shape == "collect_twice_needed":
                nested = pieces().map(lambda p: inner(p).map(double))
                total(nested.collect())  # gathers the inner fan-out only: still one per outer piece
            else:
                leaked = pieces().map(lambda p: p)
                double(leaked)


def _lineage_job():
    """A fan-out whose pieces are its config's keys, gathered into a list; and its run config."""

    @op(out=DynamicOut(), config_schema={"keys": [str]})
    def fan(context):
        for key in context.op_config["keys"]:
            yield DynamicOutput(key.upper(), mapping_key=key)

    @op
    def as_list(xs):
        return xs

    @job
    def lineage():
        as_list(fan().collect())

    def config(keys):
        return {"ops": {"fan": {"config": {"keys": keys}}}}

    return lineage, config


def test_a_reexecuted_fan_out_replaces_its_older_pieces(instance):
    lineage, config = _lineage_job()

    root = lineage.execute_in_process(run_config=config(["a", "b", "c"]), instance=instance)
    child = lineage.execute_in_process(
        run_config=config(["a", "b"]),
        instance=instance,
        parent_run_id=root.run_id,
        step_selection=["fan*"],
    )
    assert child.output_for_node("as_list") == ["A", "B"]
    grandchild = lineage.execute_in_process(
        run_config=config(["a", "b"]),
        instance=instance,
        parent_run_id=child.run_id,
        step_selection=["as_list"],
    )
    assert grandchild.output_for_node("as_list") == ["A", "B"]


def test_a_reexecuted_fan_out_with_no_pieces_leaves_none_of_the_older_ones(instance):
    lineage, config = _lineage_job()

    root = lineage.execute_in_process(run_config=config(["a", "b"]), instance=instance)
    child = lineage.execute_in_process(
        run_config=config([]), instance=instance, parent_run_id=root.run_id, step_selection=["fan*"]
    )
    assert child.output_for_node("as_list") == []
    grandchild = lineage.execute_in_process(
        run_config=config([]),
        instance=instance,
        parent_run_id=child.run_id,
        step_selection=["as_list"],
    )
    assert grandchild.output_for_node("as_list") == []
