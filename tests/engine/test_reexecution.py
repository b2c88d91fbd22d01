"""Re-executing part of an earlier run: selected steps run, everything else is loaded from the
parent run's recorded outputs, and bad selections fail before anything runs."""

from __future__ import annotations

from collections import Counter

import pytest

from memodag import (
    ExecutionError,
    Out,
    Output,
    RunStatus,
    job,
    op,
)

calls: Counter[str] = Counter()
source_value = {"n": 10}


@op
def extract():
    calls["extract"] += 1
    return source_value["n"]


@op
def transform(x):
    calls["transform"] += 1
    return x * 2


@op
def load(x):
    calls["load"] += 1
    return x + 1


@op
def audit(x):
    calls["audit"] += 1
    return f"audited {x}"


@job
def etl():
    raw = extract()
    load(transform(raw))
    audit(raw)


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()
    source_value["n"] = 10


@pytest.fixture
def parent(instance):
    result = etl.execute_in_process(instance=instance)
    calls.clear()
    # the source changed since: a step that re-ran would see 99, a loaded value is still 10
    source_value["n"] = 99
    return result


def test_only_the_selected_step_runs_and_its_input_comes_from_the_parent(instance, parent):
    child = etl.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["transform"]
    )

    assert child.success
    assert calls == Counter({"transform": 1})
    assert child.output_for_node("transform") == 20
    assert child.step_status == {
        "extract": "external",
        "transform": "success",
        "load": "external",
        "audit": "external",
    }
    record = instance.get_run(child.run_id)
    assert record.parent_run_id == parent.run_id
    assert record.root_run_id == parent.run_id
    assert record.step_selection == ["transform"]
    assert record.status == RunStatus.SUCCESS
    loaded = instance.get_output_addresses(child.run_id)
    assert set(loaded) == {("transform", "result", None)}
    # steps left out of the selection still answer with what the parent stored
    assert child.output_for_node("load") == 21
    assert child.output_address("load").run_id == parent.run_id


def test_downstream_selection(instance, parent):
    child = etl.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["transform*"]
    )
    assert calls == Counter({"transform": 1, "load": 1})
    assert child.output_for_node("load") == 21


def test_upstream_selection_reruns_the_sources(instance, parent):
    child = etl.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["*load"]
    )
    assert calls == Counter({"extract": 1, "transform": 1, "load": 1})
    assert child.output_for_node("load") == 199


def test_plus_selects_one_level(instance, parent):
    child = etl.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["+transform"]
    )
    assert calls == Counter({"extract": 1, "transform": 1})
    assert child.output_for_node("transform") == 198

    calls.clear()
    etl.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["extract+"]
    )
    assert calls == Counter({"extract": 1, "transform": 1, "audit": 1})


def test_a_chain_of_re_executions_keeps_the_root(instance, parent):
    child = etl.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["audit"]
    )
    grandchild = etl.execute_in_process(
        instance=instance, parent_run_id=child.run_id, step_selection=["audit"]
    )
    assert instance.get_run(grandchild.run_id).root_run_id == parent.run_id
    assert grandchild.output_for_node("audit") == "audited 10"
    assert grandchild.output_for_node("transform") == 20  # from the root run, two levels up


def test_re_executing_a_failed_step_after_fixing_it(instance):
    fixed = {"done": False}

    @op
    def fragile(x):
        if not fixed["done"]:
            raise RuntimeError("bug")
        return x * 3

    @job
    def fixable():
        load(fragile(extract()))

    failed = fixable.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    calls.clear()
    fixed["done"] = True
    child = fixable.execute_in_process(
        instance=instance, parent_run_id=failed.run_id, step_selection=["fragile*"]
    )
    assert child.success
    assert calls == Counter({"load": 1})
    assert child.output_for_node("load") == 31


# ---- selections that cannot work fail before anything runs -----------------------------------


def test_an_unknown_step_in_the_selection(instance, parent):
    before = len(instance.get_runs())
    with pytest.raises(ExecutionError, match=r"\['nope\*'\] matches no step of job 'etl'") as info:
        etl.execute_in_process(
            instance=instance, parent_run_id=parent.run_id, step_selection=["transform", "nope*"]
        )
    assert "transform" in str(info.value)  # lists the steps there are
    assert calls == Counter()
    assert len(instance.get_runs()) == before


def test_inputs_the_parent_did_not_store(instance):
    @op
    def fails_first(x):
        raise RuntimeError("no output")

    @job
    def partial():
        load(fails_first(extract()))

    failed = partial.execute_in_process(instance=instance, raise_on_error=False)
    calls.clear()
    before = len(instance.get_runs())
    with pytest.raises(ExecutionError) as info:
        partial.execute_in_process(
            instance=instance, parent_run_id=failed.run_id, step_selection=["load"]
        )
    message = str(info.value)
    assert "step 'load' input 'x' needs fails_first.result" in message
    assert f"parent run {failed.run_id[:8]} did not store them" in message
    assert calls == Counter()
    assert len(instance.get_runs()) == before


def test_an_input_whose_step_the_parent_skipped_says_so(instance):
    @op
    def fails_first(x):
        raise RuntimeError("no output")

    @job
    def chain():
        audit(load(fails_first(extract())))

    failed = chain.execute_in_process(instance=instance, raise_on_error=False)
    assert failed.step_status["load"] == "skipped"
    with pytest.raises(ExecutionError) as info:
        chain.execute_in_process(
            instance=instance, parent_run_id=failed.run_id, step_selection=["audit"]
        )
    # not just "not stored": the step was skipped there, and why
    assert (
        f"step 'audit' input 'x' needs load.result (step 'load' was skipped in run "
        f"{failed.run_id[:8]}: upstream step 'fails_first' failed)"
    ) in str(info.value)


def test_a_selection_without_a_parent_run(instance):
    with pytest.raises(ExecutionError, match="give parent_run_id"):
        etl.execute_in_process(instance=instance, step_selection=["transform"])
    assert calls == Counter()


def test_a_missing_parent_run_id(instance):
    with pytest.raises(ExecutionError, match=r"parent run 'no-such-run' is not in the instance"):
        etl.execute_in_process(
            instance=instance, parent_run_id="no-such-run", step_selection=["transform"]
        )
    assert calls == Counter()
    assert instance.get_runs() == []


def test_reexecution_never_loads_outputs_of_a_failed_attempt(instance):
    @op(out={"a": Out(), "b": Out()})
    def split():
        yield Output("half-done", "a")
        raise RuntimeError("failed after yielding a")

    @op
    def use_a(a):
        return f"used {a}"

    @job
    def half():
        a, _ = split()
        use_a(a)

    parent = half.execute_in_process(instance=instance, raise_on_error=False)
    assert not parent.success
    with pytest.raises(ExecutionError, match=r"split\.a"):
        half.execute_in_process(
            instance=instance, parent_run_id=parent.run_id, step_selection=["use_a"]
        )


def test_reexecuting_the_outer_collector_of_a_nested_fan_out(instance):
    from memodag import DynamicOut, DynamicOutput

    @op(out=DynamicOut())
    def pieces():
        for i in range(2):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(out=DynamicOut())
    def inner(x):
        for j in range(2):
            yield DynamicOutput(x * 10 + j, mapping_key=f"j{j}")

    @op
    def double(x):
        return 2 * x

    @op
    def total(xs):
        return sum(xs)

    @job
    def nested():
        sums = pieces().map(lambda p: total.alias("inner_total")(inner(p).map(double).collect()))
        total(sums.collect())

    parent = nested.execute_in_process(instance=instance)
    child = nested.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["total"]
    )
    assert child.success
    assert child.step_status["total"] == "success"
    assert child.output_for_node("total") == parent.output_for_node("total") == 44
