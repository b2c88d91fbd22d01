"""W1 fan-out (issue 4): ``pieces`` yields N values (keys k0..kN-1), ``double`` is mapped, ``total``
collects and sums. Cold, in process, ``fs_io_manager``, SQLite instance.

Per-piece figures divide the run by N. Peak memory is the process's max RSS (``ru_maxrss``),
which includes the interpreter and memodag itself.
"""

from __future__ import annotations

import functools
import resource
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload, timed_cpu


def _w1(n: int, memoized: bool = False) -> tuple[Any, list[str]]:
    from memodag import MEMOIZED_RUN_TAG, DynamicOut, DynamicOutput, job, op

    calls: list[str] = []

    @op(version="1", out=DynamicOut())
    def pieces():
        for i in range(n):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(version="1")
    def double(context, x: int) -> int:
        calls.append(context.step_key)
        return x * 2

    @op(version="1")
    def total(xs: list[int]) -> int:
        return sum(xs)

    @job(name=f"w1_{n}", tags={MEMOIZED_RUN_TAG: "true" if memoized else "false"})
    def w1() -> None:
        total(pieces().map(double).collect())

    return w1, calls


def cold(scratch: Path, n: int) -> Metrics:
    from memodag import Instance

    instance = Instance.from_url(
        f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "storage"
    )
    job_def, calls = _w1(n)
    result, run_s, cpu_s = timed_cpu(lambda: job_def.execute_in_process(instance=instance))
    if result.output_for_node("total") != n * (n - 1) or len(calls) != n:
        raise AssertionError("W1 computed the wrong total")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"run_s": run_s, "per_piece_s": run_s / n, "peak_rss_mb": peak_mb, "run_cpu_s": cpu_s}


def timed_rerun(instance: Any, n: int) -> Metrics:
    """Define W1 ``n`` again and run it memoized on ``instance`` (stored by a cold run before),
    timing both; fails if a clone ran or the total is wrong. Shared with ``instance_growth``."""
    (job_def, calls), define_s, define_cpu_s = timed_cpu(lambda: _w1(n, memoized=True))
    result, run_s, run_cpu_s = timed_cpu(lambda: job_def.execute_in_process(instance=instance))
    if calls or result.output_for_node("total") != n * (n - 1):
        raise AssertionError(f"memoized rerun executed {len(calls)} clones")
    return {
        "total_s": define_s + run_s,
        "run_s": run_s,
        "clones_run": float(len(calls)),
        "total_cpu_s": define_cpu_s + run_cpu_s,
    }


def memoized_rerun(scratch: Path, n: int) -> Metrics:
    from memodag import Instance

    instance = Instance.from_url(
        f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "storage"
    )
    first, _ = _w1(n, memoized=True)
    first.execute_in_process(instance=instance)
    return timed_rerun(instance, n)


WORKLOADS = [
    Workload(
        "w1_fanout_1k",
        functools.partial(cold, n=1_000),
        "W1 fan-out, N = 1,000 pieces, cold",
        steps=1_000,
        targets=(Target("per piece under 0.5 ms", "per_piece_s", max_value=0.5e-3),),
    ),
    Workload(
        "w1_fanout_100k",
        functools.partial(cold, n=100_000),
        "W1 fan-out, N = 100,000 pieces, cold",
        baseline="w1_fanout_1k",
        repeat=2,
        steps=100_000,
        targets=(
            Target("peak memory under 1 GB", "peak_rss_mb", max_value=1024),
            Target("per piece within 1.5x of N = 1,000", "per_piece_s", max_ratio=1.5),
        ),
    ),
    Workload(
        "w1_memo_rerun_10k",
        functools.partial(memoized_rerun, n=10_000),
        "W1 N = 10,000: define + memoized rerun, nothing changed (0 clones run)",
        primary="total_s",
        steps=10_000,
        targets=(Target("under 1 s above the import floor", "total_s", max_value=1.0),),
    ),
]
