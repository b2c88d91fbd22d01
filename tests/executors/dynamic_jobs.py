"""Module-level jobs with dynamic outputs for tests that run them on every executor (worker
processes import them from here, as they would a user's module)."""

from __future__ import annotations

from typing import Any

from memodag import (
    DynamicOut,
    DynamicOutput,
    Out,
    Output,
    SourceHashVersionStrategy,
    graph,
    job,
    op,
)


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


# -- outputs not produced, memoized and re-executed (review of issue 12) --------------------------

SOURCE_HASH = SourceHashVersionStrategy()


@op(out=Out(is_required=False))
def yields_nothing():
    if False:
        yield Output(0)


@op
def count(xs: list[int]) -> int:
    return len(xs)


@job(version_strategy=SOURCE_HASH)
def fan_in_with_an_absent_member() -> None:
    """A fan-in list whose members include an optional output never yielded and a step skipped
    for want of it: both are left out, and the list is still versioned (absent at a version)."""
    nothing = yields_nothing()
    count(as_list([ten(), nothing, multiply_by_two(nothing)]))


@job(version_strategy=SOURCE_HASH)
def versioned_optional_pieces() -> None:
    """``optional_pieces`` with versions: even pieces yield nothing, their clones are skipped."""
    count(as_list(emit().map(lambda n: multiply_by_two(odd_only(n))).collect()))


@job(version_strategy=SOURCE_HASH)
def fan_in_per_piece_with_absent_members() -> None:
    """A fan-in list per piece whose members are missing in some clones, collected."""
    as_list.alias("all_lists")(
        emit().map(lambda n: as_list([n, odd_only(n), multiply_by_two(odd_only(n))])).collect()
    )


# -- composition on worker processes: graphs in fan-outs, nested fan-outs, two collected ------


@op(out=DynamicOut())
def split_in_two(x: int):
    for j in range(2):
        yield DynamicOutput(x * 10 + j, mapping_key=f"j{j}")


@graph
def per_piece(n: Any) -> Any:
    """Mapped over pieces: a nested fan-out, collected inside the graph."""
    return sum_numbers(split_in_two(n).map(multiply_by_two).collect())


@graph
def pieces_of_a_graph() -> Any:
    """A graph returning a dynamic output, for its caller to map."""
    return emit.alias("inner_emit")()


@op
def merge(a: list[int], b: list[int]) -> list[list[int]]:
    return [sorted(a), sorted(b)]


@job(version_strategy=SOURCE_HASH)
def composed_with_graphs() -> None:
    """A mapped graph with a nested fan-out, a graph returning a dynamic output, one op collecting
    two fan-outs, and a fan-in list of what they made."""
    per = emit().map(per_piece)
    inner = pieces_of_a_graph().map(multiply_by_two)
    merged = merge(per.collect(), inner.collect())
    as_list.alias("fan_in")([sum_numbers.alias("total_per")(per.collect()), ten()])
    count.alias("merged_count")(merged)


def composed_config(n: int, m: int) -> dict[str, Any]:
    return {
        "ops": {
            "emit": {"config": {"n": n}},
            "pieces_of_a_graph": {"ops": {"inner_emit": {"config": {"n": m}}}},
        }
    }
