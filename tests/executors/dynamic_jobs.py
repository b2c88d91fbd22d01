"""Module-level jobs with dynamic outputs for tests that run them on every executor (worker
processes import them from here, as they would a user's module)."""

from __future__ import annotations

from typing import Any

from memodag import DynamicOut, DynamicOutput, Out, Output, job, op


@op(out=DynamicOut(), config_schema={"n": int})
def emit(context: Any):
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op
def ten() -> int:
    return 10


@op
def multiply_inputs(y: int, factor: int) -> int:
    return y * factor


@op
def multiply_by_two(x: int) -> int:
    return 2 * x


@op
def sum_numbers(xs: list[int]) -> int:
    return sum(xs)


@op
def double_total(x: int) -> int:
    return 2 * x


@job
def fan_out_with_a_static_input() -> None:
    """Dagster's re-execution test job: each clone also reads ``ten``, a step outside the fan-out."""
    factor = ten()
    pieces = emit().map(lambda n: multiply_by_two(multiply_inputs(n, factor)))
    double_total(sum_numbers(pieces.collect()))


def n_pieces(n: int) -> dict[str, Any]:
    return {"ops": {"emit": {"config": {"n": n}}}}


@op(out=Out(is_required=False))
def odd_only(x: int):
    if x % 2:
        yield Output(x)


@op
def as_list(xs: list[int]) -> list[int]:
    return xs


@job
def optional_pieces() -> None:
    """Clones of even pieces yield nothing: ``multiply_by_two`` skips them, the collector not."""
    as_list(emit().map(lambda n: multiply_by_two(odd_only(n))).collect())


@op(out=DynamicOut())
def returns_one_piece():
    return DynamicOutput(1, mapping_key="only")


@job
def bare_dynamic_output() -> None:
    as_list(returns_one_piece().collect())
