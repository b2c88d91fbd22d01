"""Ops and jobs the executor tests run. They live in a module of their own, as a user's would,
and record what they did in files, the only thing every worker process shares with the test."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from memodag import (
    DynamicOut,
    DynamicOutput,
    ExecutorDefinition,
    JobDefinition,
    OpDefinition,
    RetryPolicy,
    graph,
    job,
    op,
    resource,
)


@resource(config_schema={"dir": str})
def marks(context: Any) -> Path:
    """Where ops record their executions (a directory every process can reach)."""
    return Path(context.resource_config["dir"])


def marks_config(directory: Path) -> dict[str, Any]:
    return {"resources": {"marks": {"config": {"dir": str(directory)}}}}


def record(context: Any, what: str = "runs") -> None:
    """Append ``pid time`` to ``<marks>/<step_key>.<what>``: one line per execution."""
    path = context.resources.marks / f"{context.step_key}.{what}"
    with open(path, "a") as file:
        file.write(f"{os.getpid()} {time.time()}\n")


def lines(directory: Path, step_key: str, what: str = "runs") -> list[tuple[int, float]]:
    path = directory / f"{step_key}.{what}"
    if not path.exists():
        return []
    return [(int(p), float(t)) for p, t in (line.split() for line in path.read_text().splitlines())]


# -- W1: fan-out / fan-in -----------------------------------------------------------------


@op(required_resource_keys={"marks"})
def piece(context: Any) -> int:
    record(context)
    context.log.info("piece %s in process %s", context.step_key, os.getpid())
    index = int(context.step_key[len("piece_") :])
    return index * index


def collector(n: int) -> OpDefinition:
    """An op with inputs x0..x{n-1} returning their sum (a static fan-in of width n)."""
    names = ", ".join(f"x{i}" for i in range(n))
    namespace: dict[str, Any] = {}
    exec(f"def collect({names}):\n    return sum([{names}])", namespace)
    return op(name="collect")(namespace["collect"])


def fan_out_job(n: int, executor_def: ExecutorDefinition | None = None) -> JobDefinition:
    collect = collector(n)

    @job(resource_defs={"marks": marks}, executor_def=executor_def)
    def fan_out() -> None:
        collect(*[piece.alias(f"piece_{i}")() for i in range(n)])

    return fan_out


@op(out=DynamicOut(), required_resource_keys={"marks"}, config_schema={"n": int})
def split(context: Any):
    record(context)
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op(required_resource_keys={"marks"})
def square(context: Any, x: int) -> int:
    record(context)
    return x * x


@op
def total(xs: list[int]) -> int:
    return sum(xs)


@job(resource_defs={"marks": marks})
def dynamic_fan_out() -> None:
    total(split().map(square).collect())


# -- failures -----------------------------------------------------------------------------


@op(required_resource_keys={"marks"})
def boom(context: Any) -> int:
    record(context)
    raise ValueError("bad input 7")


@op
def after(x: int) -> int:
    return x + 1


@op(required_resource_keys={"marks"}, retry_policy=RetryPolicy(max_retries=1))
def flaky(context: Any) -> int:
    record(context)
    if len(lines(context.resources.marks, context.step_key)) == 1:
        raise RuntimeError("first attempt fails")
    return 41


class KillsWhileStored:
    """A value whose pickling kills the process: the worker dies in the middle of writing it."""

    def __reduce__(self) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)  # pragma: no cover - the signal arrives first


@op(required_resource_keys={"marks"})
def victim(context: Any) -> Any:
    record(context)
    return KillsWhileStored()


@op(required_resource_keys={"marks"}, retry_policy=RetryPolicy(max_retries=1))
def dies_once(context: Any) -> int:
    record(context)
    if len(lines(context.resources.marks, context.step_key)) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)  # pragma: no cover
    return 41


@op(required_resource_keys={"marks"})
def bystander(context: Any) -> int:
    record(context)
    time.sleep(0.5)
    return 1


# -- tags ---------------------------------------------------------------------------------


@op(required_resource_keys={"marks"}, tags={"db": "warehouse"})
def db_step(context: Any) -> int:
    record(context, "start")
    time.sleep(0.4)
    record(context, "end")
    return 1


@op(required_resource_keys={"marks"})
def plain_step(context: Any) -> int:
    record(context, "start")
    time.sleep(0.4)
    record(context, "end")
    return 1


def tagged_job(n_db: int, n_plain: int, executor_def: ExecutorDefinition) -> JobDefinition:
    @job(resource_defs={"marks": marks}, executor_def=executor_def)
    def tagged() -> None:
        for i in range(n_db):
            db_step.alias(f"db_{i}")()
        for i in range(n_plain):
            plain_step.alias(f"plain_{i}")()

    return tagged


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


@resource
def thread_bound_db(_: Any) -> Any:
    """A SQLite connection: usable only by the thread that opened it."""
    import sqlite3

    connection = sqlite3.connect(":memory:")
    connection.execute("create table t (x)")
    return connection


@op(required_resource_keys={"db"})
def use_thread_bound_db(context: Any) -> int:
    context.resources.db.execute("insert into t values (1)")
    return 1


# -- a Dask worker joining mid-run --------------------------------------------------------


@resource(config_schema={"dir": str})
def marks_with_teardown(context: Any) -> Any:
    """``marks`` that records, per worker process, when the run's resources are torn down."""
    directory = Path(context.resource_config["dir"])
    try:
        yield directory
    finally:
        with open(directory / "teardown.runs", "a") as file:
            file.write(f"{os.getpid()} {time.time()}\n")


@op(out=DynamicOut(), required_resource_keys={"marks"}, config_schema={"n": int})
def split_after_go(context: Any):
    """Fans out once the test has written ``go`` (after it has added a worker)."""
    record(context)
    while not (context.resources.marks / "go").exists():
        time.sleep(0.05)
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op(required_resource_keys={"marks"})
def slow_square(context: Any, x: int) -> int:
    record(context)
    time.sleep(0.3)
    return x * x


@job(resource_defs={"marks": marks_with_teardown})
def grows_mid_run() -> None:
    total(split_after_go().map(slow_square).collect())


# -- dynamic outputs through composition (issue 12) ------------------------------------------


@graph
def split_in_graph() -> Any:
    """A graph returning a dynamic output: its caller maps and collects it."""
    return split()


@graph
def square_twice(x: Any) -> Any:
    """Mapped over pieces by its caller: each op inside is cloned per piece."""
    return square.alias("square_again")(square(x))


@op
def as_pair(left: list[int], right: list[int]) -> list[list[int]]:
    return [left, right]


@job(resource_defs={"marks": marks})
def composed_fan_out() -> None:
    """Graphs in fan-outs, one op collecting two fan-outs, and a fan-in list, on any executor."""
    squares = split_in_graph().map(square_twice)
    pair = as_pair(squares.collect(), split.alias("other")().collect())
    as_pair.alias("fan_in")(
        [total(squares.collect()), total.alias("total_2")(squares.collect())], pair
    )
