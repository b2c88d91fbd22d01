"""Outputs not produced (an optional output not yielded, a clone skipped for it) as members of
fan-in lists and collectors: versioned as absent so memoized reruns reuse them, and left out
when a re-execution takes them from the parent run; and composition on worker processes
(docs/dynamic.md)."""

from __future__ import annotations

import pytest
from dynamic_jobs import (
    composed_config,
    composed_with_graphs,
    fan_in_per_piece_with_absent_members,
    fan_in_with_an_absent_member,
    n_pieces,
    versioned_optional_pieces,
)

from memodag import list_versions

EXECUTORS = ["in_process", "multiprocess"]


def _config(executor: str, config: dict | None = None) -> dict:
    config = dict(config or {})
    if executor == "multiprocess":
        config["execution"] = {"multiprocess": {"config": {"max_concurrent": 2}}}
    return config


def _ran(result) -> list[str]:
    return sorted(k for k, v in result.step_status.items() if v == "success")


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize(
    ("job", "config", "final", "value"),
    [
        (fan_in_with_an_absent_member, {}, "count", 1),
        (versioned_optional_pieces, n_pieces(4), "count", 2),
        (fan_in_per_piece_with_absent_members, n_pieces(3), "all_lists", [[0], [1, 1, 2], [2]]),
    ],
)
def test_a_memoized_rerun_reuses_lists_with_absent_members(
    executor, job, config, final, value, instance
):
    first = job.execute_in_process(run_config=_config(executor, config), instance=instance)
    assert first.output_for_node(final) == value

    again = job.execute_in_process(run_config=_config(executor, config), instance=instance)

    # the members not produced are absent at a known version: nothing runs again
    assert again.success
    assert _ran(again) == []
    assert again.output_for_node(final) == value
    # list-versions agrees: the lists are stored, never "unversioned"; only the clones whose
    # input is not yielded are skipped
    rows = {r.step_output: r.status for r in list_versions(job, config, instance)}
    assert rows[f"{final}.result"] == "stored"
    assert set(rows.values()) <= {"stored", "skipped"}, rows


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("selection", [["as_list"], ["as_list*"]])
def test_reexecuting_a_fan_in_list_leaves_out_members_the_parent_did_not_produce(
    executor, selection, instance
):
    parent = fan_in_with_an_absent_member.execute_in_process(
        run_config=_config(executor), instance=instance
    )

    child = fan_in_with_an_absent_member.execute_in_process(
        run_config=_config(executor),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=selection,
    )

    assert child.success
    assert child.step_status["as_list"] == "success"
    assert child.output_for_node("as_list") == [10]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_reexecuting_a_collector_leaves_out_pieces_the_parent_did_not_produce(executor, instance):
    parent = versioned_optional_pieces.execute_in_process(
        run_config=_config(executor, n_pieces(4)), instance=instance
    )

    child = versioned_optional_pieces.execute_in_process(
        run_config=_config(executor, n_pieces(4)),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["as_list*"],
    )

    assert child.success
    assert _ran(child) == ["as_list", "count"]
    assert child.output_for_node("as_list") == [2, 6]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_reexecuting_a_clone_whose_input_the_parent_did_not_yield_skips_it(executor, instance):
    parent = versioned_optional_pieces.execute_in_process(
        run_config=_config(executor, n_pieces(4)), instance=instance
    )

    child = versioned_optional_pieces.execute_in_process(
        run_config=_config(executor, n_pieces(4)),
        instance=instance,
        parent_run_id=parent.run_id,
        step_selection=["multiply_by_two[k0]*"],
    )

    # as in the parent run: an optional output not yielded skips its consumer, a success
    assert child.success
    assert child.step_status["multiply_by_two[k0]"] == "skipped"
    assert child.output_for_node("as_list") == [2, 6]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_graphs_in_fan_outs_on_every_executor(executor, instance):
    config = _config(executor, composed_config(3, 2))
    result = composed_with_graphs.execute_in_process(run_config=config, instance=instance)

    assert result.success
    per_piece = [2 * (10 * i) + 2 * (10 * i + 1) for i in range(3)]
    assert result.output_for_node("per_piece.sum_numbers") == {
        f"k{i}": v for i, v in enumerate(per_piece)
    }
    assert result.output_for_node("merge") == [sorted(per_piece), [0, 2]]
    assert result.output_for_node("fan_in") == [sum(per_piece), 10]
    assert result.output_for_node("merged_count") == 2

    again = composed_with_graphs.execute_in_process(run_config=config, instance=instance)
    assert _ran(again) == []

    # one nested clone inside the mapped graph, and what follows it
    child = composed_with_graphs.execute_in_process(
        run_config=config,
        instance=instance,
        parent_run_id=result.run_id,
        step_selection=["per_piece.multiply_by_two[k1,j0]*"],
    )
    assert child.success
    assert _ran(child) == [
        "fan_in",
        "merge",
        "merged_count",
        "per_piece.multiply_by_two[k1,j0]",
        "per_piece.sum_numbers[k1]",
        "total_per",
    ]
    assert child.output_for_node("fan_in") == [sum(per_piece), 10]
