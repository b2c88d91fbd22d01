"""Building plans: a plan is reused only for the same job and the very same op config."""

from __future__ import annotations

from typing import Any

import pytest

from memodag import Instance, job, op


@op(config_schema={"value": Any})
def show(context) -> str:
    return f"{type(context.op_config['value']).__name__} {context.op_config['value']!r}"


@job
def shows():
    show()


@pytest.mark.parametrize(
    "values",
    [
        (1, True, 1.0),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ([1, 2], (1, 2)),
        ({1: "a"}, {"1": "a"}),
    ],
    ids=["equal numbers of other types", "reordered mapping", "list then tuple", "key types"],
)
def test_runs_of_one_job_in_one_process_see_their_own_config(values):
    # configs that compare equal (1 == True == 1.0, dicts in another order) are still different
    # configs: an op sees the type and the order it was given, whatever ran before it
    instance = Instance.ephemeral()
    for value in values:
        result = shows.execute_in_process(
            {"ops": {"show": {"config": {"value": value}}}}, instance=instance
        )
        assert result.output_for_node("show") == f"{type(value).__name__} {value!r}"
