"""W1 fan-out on the parallel executors: N pieces of CPU-bound pure-Python work (about 50 ms
each, calibrated on this machine) mapped from a dynamic output and collected, run in process,
on the multiprocess executor and on Dask; and Dask's overhead on 1,000 trivial pieces.

Timed: ``execute_in_process`` only. A Dask LocalCluster (2 worker processes, as many as cores
here) is started before the timed region and closed after it (``cluster_s`` reports its cost);
``w1_cpu_dask_own_cluster`` times the no-config executor, which starts and closes its own cluster.
Every sample checks the result, and the trivial workload checks that no piece ran twice.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload, timed

PIECES = 100
PIECE_SECONDS = 0.05
TRIVIAL = 1_000


def _burn(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


def _calibrate(seconds: float) -> int:
    """Loop rounds that take ``seconds`` of CPU here (best of a few, so noise does not inflate it)."""
    rounds = 200_000
    best = min(timed(functools.partial(_burn, rounds))[1] for _ in range(5))
    return max(1, int(rounds * seconds / best))


def _ops() -> dict[str, Any]:
    from memodag import DynamicOut, DynamicOutput, op

    @op(out=DynamicOut(), config_schema={"n": int, "rounds": int})
    def split(context: Any):
        for i in range(context.op_config["n"]):
            yield DynamicOutput(context.op_config["rounds"], mapping_key=f"p{i}")

    @op
    def work(rounds: int) -> int:
        return _burn(rounds)

    @op(config_schema={"log": str})
    def trivial(context: Any, rounds: int) -> str:
        # O_APPEND writes of one short line are atomic: one line per execution
        with open(context.op_config["log"], "a") as file:
            file.write(f"{context.step_key}\n")
        return context.step_key

    @op
    def collect(values: list[Any]) -> int:
        return len(values) if values and isinstance(values[0], str) else sum(values)

    return {"split": split, "work": work, "trivial": trivial, "collect": collect}


def _job(kind: str, executor_def: Any) -> Any:
    from memodag import job

    ops = _ops()
    mapped = ops[kind]

    @job(name=f"w1_{kind}", executor_def=executor_def)
    def w1() -> None:
        ops["collect"](ops["split"]().map(mapped).collect())

    return w1


def _executor(name: str, address: str | None) -> Any:
    from memodag import dask_executor, in_process_executor, multiprocess_executor

    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    return dask_executor.configured({"address": address}) if address else dask_executor


def _start_cluster() -> Any:
    import logging

    import dask
    import distributed

    from memodag.executors.dask import SCHEDULER_CONFIG

    with dask.config.set(SCHEDULER_CONFIG):
        return distributed.LocalCluster(
            n_workers=os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


def _tree_cpu() -> float:
    """CPU seconds of this process, its live descendants and its reaped children."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, reaped children user, system
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def run_w1(scratch: Path, executor: str, kind: str = "work", own_cluster: bool = False) -> Metrics:
    from memodag import Instance

    n = PIECES if kind == "work" else TRIVIAL
    rounds = _calibrate(PIECE_SECONDS) if kind == "work" else 0
    metrics: dict[str, float] = {}
    cluster = None
    if executor == "dask" and not own_cluster:
        cluster, metrics["cluster_s"] = timed(_start_cluster)
    job_def = _job(kind, _executor(executor, cluster.scheduler_address if cluster else None))
    instance = Instance.from_url(
        f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "storage"
    )
    log = scratch / "executions.log"
    config: dict[str, Any] = {"ops": {"split": {"config": {"n": n, "rounds": rounds}}}}
    if kind == "trivial":
        config["ops"]["trivial"] = {"config": {"log": str(log)}}
    cpu_before = _tree_cpu()
    try:
        result, metrics["run_s"] = timed(
            lambda: job_def.execute_in_process(run_config=config, instance=instance)
        )
        # CPU seconds our processes got during the run: on a shared machine, wall/cpu shows
        # how many cores the run really had
        metrics["cpu_s"] = _tree_cpu() - cpu_before
    finally:
        if cluster is not None:
            _, metrics["cluster_close_s"] = timed(cluster.close)
    expected = n if kind == "trivial" else n * _burn(rounds)
    if result.output_for_node("collect") != expected:
        raise AssertionError(
            f"{executor}: collect = {result.output_for_node('collect')}, expected {expected}"
        )
    if kind == "trivial":
        counts: dict[str, int] = {}
        for line in log.read_text().splitlines():
            counts[line] = counts.get(line, 0) + 1
        twice = sorted(k for k, c in counts.items() if c != 1)
        if len(counts) != n or twice:
            raise AssertionError(
                f"{executor}: {len(counts)} pieces ran, these more than once: {twice[:5]}"
            )
        metrics["per_step_s"] = metrics["run_s"] / n
    metrics["piece_cpu_s"] = timed(functools.partial(_burn, rounds))[1] if rounds else 0.0
    instance.close()
    return metrics


FASTER_1_7X = 1 / 1.7

WORKLOADS = [
    Workload(
        "w1_cpu_in_process",
        functools.partial(run_w1, executor="in_process"),
        description=f"W1: {PIECES} pieces x ~50 ms CPU, dynamic fan-out + collect, in process",
        steps=PIECES + 2,
    ),
    Workload(
        "w1_cpu_multiprocess",
        functools.partial(run_w1, executor="multiprocess"),
        description="W1 on multiprocess_executor (one worker process per core)",
        baseline="w1_cpu_in_process",
        steps=PIECES + 2,
        targets=(Target(">= 1.7x faster than in process", "run_s", max_ratio=FASTER_1_7X),),
    ),
    Workload(
        "w1_cpu_dask",
        functools.partial(run_w1, executor="dask"),
        description="W1 on dask_executor, LocalCluster of one worker process per core (started untimed)",
        baseline="w1_cpu_in_process",
        steps=PIECES + 2,
        targets=(Target(">= 1.7x faster than in process", "run_s", max_ratio=FASTER_1_7X),),
    ),
    Workload(
        "w1_cpu_dask_own_cluster",
        functools.partial(run_w1, executor="dask", own_cluster=True),
        description="W1 on dask_executor with no config: starts and closes its LocalCluster (timed)",
        baseline="w1_cpu_in_process",
        steps=PIECES + 2,
    ),
    Workload(
        "trivial_1k_in_process",
        functools.partial(run_w1, executor="in_process", kind="trivial"),
        description=f"{TRIVIAL} trivial mapped pieces (each appends one line to a log), in process",
        steps=TRIVIAL + 2,
    ),
    Workload(
        "trivial_1k_multiprocess",
        functools.partial(run_w1, executor="multiprocess", kind="trivial"),
        description=f"{TRIVIAL} trivial pieces on multiprocess_executor: per-step cost",
        baseline="trivial_1k_in_process",
        steps=TRIVIAL + 2,
    ),
    Workload(
        "trivial_1k_dask",
        functools.partial(run_w1, executor="dask", kind="trivial"),
        description=f"{TRIVIAL} trivial pieces on Dask: per-step cost; checks none ran twice",
        baseline="trivial_1k_in_process",
        steps=TRIVIAL + 2,
        targets=(Target("Dask overhead < 5 ms per trivial step", "per_step_s", max_value=0.005),),
    ),
]
