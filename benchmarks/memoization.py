"""Versioning and memoized execution (issue 3) on W2 (200-op chain) and a 10,000-op chain.

Each memoized workload first runs the job cold (untimed), then changes what the workload says
and times the memoized run; it *counts* the ops that executed (with a side-effect counter) and
fails the sample if the count is not the one the issue asks for: 0 for no change, exactly ops
100..199 after bumping op100's version, exactly 1 with early cutoff when op100's output is
unchanged. ``executed_ops`` is reported as a metric (a count, not seconds).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload, timed, timed_cpu

W2 = 200
BIG = 10_000


def _chain(
    n: int, bumped: int | None = None, early_cutoff: bool = False, strategy: bool = False
) -> tuple[Any, list[str]]:
    """A memoized chain job; ``op{bumped}`` gets version 2. Returns the job and its call log."""
    from memodag import MEMOIZED_RUN_TAG, SourceHashVersionStrategy, job, op

    calls: list[str] = []

    def make(version: str | None) -> Any:
        @op(version=version)
        def inc(context, x: int) -> int:
            calls.append(context.step_key)
            return x + 1

        return inc

    @op(version=None if strategy else "1")
    def source(context) -> int:
        calls.append(context.step_key)
        return 0

    plain = make(None if strategy else "1")
    bumped_op = make("2")

    def body() -> None:
        value = source.alias("op0")()
        for i in range(1, n):
            value = (bumped_op if i == bumped else plain).alias(f"op{i}")(value)

    job_def = job(
        body,
        name=f"chain_{n}",
        tags={MEMOIZED_RUN_TAG: "true"},
        early_cutoff=early_cutoff,
        version_strategy=SourceHashVersionStrategy() if strategy else None,
    )
    return job_def, calls


def _instance(scratch: Path) -> Any:
    from memodag import Instance

    return Instance.from_url(f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "storage")


def _check(name: str, calls: list[str], expected: list[str]) -> None:
    if calls != expected:
        shown = calls if len(calls) < 12 else [*calls[:5], "...", *calls[-5:]]
        raise AssertionError(f"{name}: executed {len(calls)} ops {shown}, expected {len(expected)}")


def w2_memoized(scratch: Path, change: str) -> Metrics:
    """Cold W2 run, then a memoized run after ``change``: none | bump100 | cutoff100."""
    instance = _instance(scratch)
    cutoff = change == "cutoff100"
    cold_job, _ = _chain(W2, early_cutoff=cutoff)
    _, cold_s = timed(lambda: cold_job.execute_in_process(instance=instance))
    bumped = None if change == "none" else 100
    job_def, calls = _chain(W2, bumped=bumped, early_cutoff=cutoff)
    result, run_s = timed(lambda: job_def.execute_in_process(instance=instance))
    expected = {"none": [], "bump100": [f"op{i}" for i in range(100, W2)], "cutoff100": ["op100"]}[
        change
    ]
    _check(f"w2 {change}", calls, expected)
    if result.output_for_node(f"op{W2 - 1}") != W2 - 1:
        raise AssertionError("wrong result")
    return {"run_s": run_s, "cold_s": cold_s, "executed_ops": float(len(calls))}


def versions_share(scratch: Path) -> Metrics:
    """How much of a cold memoized W2 run computing versions costs, with SourceHashVersionStrategy
    (fresh process: the source is hashed once, here). Measured by timing the memoizer's version
    computation for every step on its own, then the cold run in the same process."""
    from memodag.plan.plan import build_plan
    from memodag.plan.run_config import resolve_run_config
    from memodag.versioning.memoize import IndexMemoizer

    instance = _instance(scratch)
    job_def, _ = _chain(W2, strategy=True)
    plan = build_plan(job_def, resolve_run_config(job_def, None))
    memoizer = IndexMemoizer(job_def, plan, instance, enabled=True)

    def all_versions() -> None:
        for step in plan.steps.values():
            assert memoizer.versions(step) is not None
            memoizer.assume_recomputed(step)

    _, versions_s = timed(all_versions)
    job_def, calls = _chain(W2, strategy=True)
    _, run_s = timed(lambda: job_def.execute_in_process(instance=instance))
    _check("versions_share cold", calls, [f"op{i}" for i in range(W2)])
    return {"versions_s": versions_s, "run_s": run_s, "versions_share": versions_s / run_s}


def big_rerun(scratch: Path, what: str) -> Metrics:
    """10,000-op chain run cold (untimed); then, in a new definition, time define + memoized
    rerun (``rerun``) or define + list_versions (``list_versions``)."""
    from memodag import list_versions

    instance = _instance(scratch)
    cold_job, _ = _chain(BIG)
    cold_job.execute_in_process(instance=instance)
    (job_def, calls), define_s, define_cpu_s = timed_cpu(lambda: _chain(BIG))
    if what == "rerun":
        result, run_s, run_cpu_s = timed_cpu(lambda: job_def.execute_in_process(instance=instance))
        _check("10k rerun", calls, [])
        if len(result.memoized_step_keys) != BIG:
            raise AssertionError("not every step was memoized")
    else:
        rows, run_s, run_cpu_s = timed_cpu(lambda: list_versions(job_def, None, instance))
        if len(rows) != BIG or any(r.status != "stored" for r in rows):
            raise AssertionError("list_versions did not report every output stored")
    return {
        "total_s": define_s + run_s,
        "define_s": define_s,
        "run_s": run_s,
        "total_cpu_s": define_cpu_s + run_cpu_s,
    }


WORKLOADS = [
    Workload(
        "w2_memo_nochange",
        functools.partial(w2_memoized, change="none"),
        "W2 memoized rerun, nothing changed: 0 ops execute",
        steps=W2,
    ),
    Workload(
        "w2_memo_bump100",
        functools.partial(w2_memoized, change="bump100"),
        "W2 memoized rerun after bumping op100's version: ops 100..199 execute",
        steps=W2,
    ),
    Workload(
        "w2_memo_cutoff100",
        functools.partial(w2_memoized, change="cutoff100"),
        "W2 with early cutoff, op100 bumped, same output: exactly 1 op executes",
        steps=W2,
    ),
    Workload(
        "w2_versions_share",
        versions_share,
        "computing all W2 versions (SourceHashVersionStrategy) vs a cold memoized W2 run",
        primary="versions_s",
        targets=(Target("versions < 5% of a cold run", "versions_share", max_value=0.05),),
    ),
    Workload(
        "chain10k_memo_rerun",
        functools.partial(big_rerun, what="rerun"),
        "10,000-op chain: define + memoized no-change rerun (after an untimed cold run)",
        primary="total_s",
        steps=BIG,
        targets=(Target("under 1 s above the import floor", "total_s", max_value=1.0),),
    ),
    Workload(
        "chain10k_list_versions",
        functools.partial(big_rerun, what="list_versions"),
        "10,000-op chain: define + list_versions (after an untimed cold run)",
        primary="total_s",
        steps=BIG,
        targets=(Target("under 1 s above the import floor", "total_s", max_value=1.0),),
    ),
]
