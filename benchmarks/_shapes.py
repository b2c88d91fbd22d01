"""Job shapes shared by workload modules (chain, wide) and the standard cold-run measurement.

Imports memodag lazily so that a module listing workloads costs nothing; inside a sample the
import happens before any timed region.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, timed, timed_cpu

IO_FS = "fs"  # the default io manager (fs_io_manager)
IO_MEM = "mem"  # mem_io_manager

INSTANCE_SQLITE = "sqlite"
INSTANCE_EPHEMERAL = "ephemeral"


def _ops() -> tuple[Any, Any]:
    from memodag import op

    @op
    def source() -> int:
        return 0

    @op
    def inc(x: int) -> int:
        return x + 1

    return source, inc


def chain_body(n: int) -> Callable[[], None]:
    """``op0`` returns 0, each of ``op1..op{n-1}`` returns its input + 1 (the W2 chain)."""
    source, inc = _ops()

    def body() -> None:
        value = source.alias("op0")()
        for i in range(1, n):
            value = inc.alias(f"op{i}")(value)

    return body


def wide_body(n: int) -> Callable[[], None]:
    """``op0`` returns 0 and feeds ``op1..op{n-1}``, which feed nothing."""
    source, inc = _ops()

    def body() -> None:
        value = source.alias("op0")()
        for i in range(1, n):
            inc.alias(f"op{i}")(value)

    return body


SHAPES = {"chain": chain_body, "wide": wide_body}


def cold_run(
    scratch: Path,
    shape: str,
    n: int,
    io: str,
    instance_kind: str,
    plan: bool = False,
    rerun: bool = False,
) -> Metrics:
    """Define a job of ``n`` ops, then run it once on a fresh instance in ``scratch``.

    Times ``job(...)`` (``define_s``), optionally plan building alone (``plan_s``, internal API),
    and ``execute_in_process`` (``run_s``, which plans again: the figure a user sees; its CPU time
    ``run_cpu_s``). With
    ``rerun``, also a second run of the same job in the same process (``rerun_s``): what is left
    once one-time costs (modules memodag imports on first use, first file in a directory) are paid.
    """
    from memodag import Instance, job, mem_io_manager

    body = SHAPES[shape](n)
    resource_defs = {"io_manager": mem_io_manager} if io == IO_MEM else None
    job_def, define_s = timed(lambda: job(body, name=f"{shape}_{n}", resource_defs=resource_defs))
    if instance_kind == INSTANCE_SQLITE:
        instance, instance_s = timed(
            lambda: Instance.from_url(
                f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "storage"
            )
        )
    else:
        instance, instance_s = timed(Instance.ephemeral)
    metrics = {"define_s": define_s, "instance_s": instance_s}
    if plan:
        from memodag.plan.plan import build_plan
        from memodag.plan.run_config import resolve_run_config

        _, metrics["plan_s"] = timed(lambda: build_plan(job_def, resolve_run_config(job_def, None)))
    result, metrics["run_s"], metrics["run_cpu_s"] = timed_cpu(
        lambda: job_def.execute_in_process(instance=instance)
    )
    last = f"op{n - 1}"
    expected = n - 1 if shape == "chain" else 1
    got = result.output_for_node(last)
    if not result.success or got != expected:
        raise AssertionError(
            f"{shape}_{n}: run success={result.success}, {last} = {got!r}, expected {expected}"
        )
    if rerun:
        result, metrics["rerun_s"] = timed(lambda: job_def.execute_in_process(instance=instance))
        if not result.success:
            raise AssertionError(f"{shape}_{n}: second run failed")
    instance.close()
    return metrics
