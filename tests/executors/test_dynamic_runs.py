"""Dynamic outputs at run time, on the in-process and multiprocess executors alike: re-executing
a fan-out, collectors gathering the pieces that exist, refusals, and what a re-execution's
result holds (docs/dynamic.md)."""

from __future__ import annotations

import pytest
from dynamic_jobs import (
    bare_dynamic_output,
    fan_out_with_a_static_input,
    n_pieces,
    optional_pieces,
)

from memodag import StepExecutionError

EXECUTORS = ["in_process", "multiprocess"]


def _run_config(executor: str, n: int | None = None) -> dict:
    config = n_pieces(n) if n is not None else {}
    if executor == "multiprocess":
        config["execution"] = {"multiprocess": {"config": {"max_concurrent": 2}}}
    return config


def _total(n: int) -> int:
    return 2 * sum(2 * 10 * i for i in range(n))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_reexecuting_a_fan_out_and_what_follows_runs_the_new_clones(executor, instance):
    parent = fan_out_with_a_static_input.execute_in_process(
        run_config=_run_config(executor, 3), instance=instance
    )
    assert parent.output_for_node("double_total") == _total(3)

    # the source now yields one piece more: every clone of the new pieces runs, each reading
    # the parent's `ten` beside its piece, and the collector gathers all four
    child = fan_out_with_a_static_input.execute_in_process(
        run_config=_run_config(executor, 4),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["emit*"],
    )

    assert child.success
    assert child.step_status["ten"] == "external"
    for i in range(4):
        assert child.step_status[f"multiply_inputs[k{i}]"] == "success"
        assert child.step_status[f"multiply_by_two[k{i}]"] == "success"
    assert child.output_for_node("double_total") == _total(4)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_collector_gathers_the_pieces_that_exist(executor, instance):
    result = optional_pieces.execute_in_process(
        run_config=_run_config(executor, 4), instance=instance
    )

    assert result.success
    # even pieces yield no optional output: their next clone is skipped, and the collector
    # gathers the odd ones (as Dagster does) instead of being skipped itself
    assert result.step_status["multiply_by_two[k0]"] == "skipped"
    assert result.step_status["multiply_by_two[k2]"] == "skipped"
    assert result.output_for_node("multiply_by_two") == {"k1": 2, "k3": 6}
    assert result.output_for_node("as_list") == [2, 6]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_returned_bare_dynamic_output_fails_naming_the_op(executor, instance):
    with pytest.raises(StepExecutionError) as err:
        bare_dynamic_output.execute_in_process(run_config=_run_config(executor), instance=instance)
    message = str(err.value)
    assert "op 'returns_one_piece' returned a single DynamicOutput" in message
    assert "yield" in message and "list" in message


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_reexecution_result_holds_only_the_pieces_it_produced(executor, instance):
    parent = fan_out_with_a_static_input.execute_in_process(
        run_config=_run_config(executor, 3), instance=instance
    )

    one_clone = fan_out_with_a_static_input.execute_in_process(
        run_config=_run_config(executor, 3),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["multiply_by_two[k1]"],
    )
    # the clone's input piece and its siblings came from the parent run: not this run's output
    assert one_clone.output_for_node("multiply_by_two") == {"k1": 20}
    assert one_clone.output_for_node("multiply_inputs") == {}
    assert one_clone.output_for_node("emit") == {}

    collector = fan_out_with_a_static_input.execute_in_process(
        run_config=_run_config(executor, 3),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["sum_numbers"],
    )
    assert collector.output_for_node("multiply_by_two") == {}
    assert collector.output_for_node("sum_numbers") == _total(3) // 2
