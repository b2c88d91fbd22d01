"""W1 fan-out on the parallel executors: N pieces of CPU-bound pure-Python work (about 50 ms
each, calibrated on this machine) mapped from a dynamic output and collected, run in process,
on the multiprocess executor and on Dask; Dask's overhead on 1,000 trivial pieces; and the
latency of each hand-over on Dask along a chain of trivial steps.

Timed: ``execute_in_process`` only. A Dask LocalCluster (2 worker processes, as many as cores
here) is started before the timed region and closed after it (``cluster_s`` reports its cost);
``w1_cpu_dask_own_cluster`` times the no-config executor, which starts and closes its own cluster.
``w1_cpu_paired`` runs all three executors and the same pieces on Dask by hand within each
sample, twice in mirrored order, so its ratios hold on a machine whose speed drifts. Every
sample checks the result, and the trivial workload checks that no piece ran twice.
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
            dashboard_address=":0",
            preload=["memodag.executors.dask_worker"],
            silence_logs=logging.ERROR,
        )


def _tree_cpu() -> float:
    """CPU seconds of this process and its descendants, live or reaped (a fork server's workers
    are its children, not ours: their time is in its reaped-children counters)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, reaped children user, system
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:4])
        except psutil.Error:
            pass
    return total


def _run_once(
    scratch: Path, executor_def: Any, kind: str, n: int, rounds: int
) -> tuple[Any, float, float]:
    """One timed run of W1 on its own instance: (result, wall seconds, CPU seconds of the tree)."""
    from memodag import Instance

    scratch.mkdir(parents=True, exist_ok=True)
    job_def = _job(kind, executor_def)
    instance = Instance.from_url(
        f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "storage"
    )
    config: dict[str, Any] = {"ops": {"split": {"config": {"n": n, "rounds": rounds}}}}
    if kind == "trivial":
        config["ops"]["trivial"] = {"config": {"log": str(scratch / "executions.log")}}
    cpu_before = _tree_cpu()
    try:
        result, seconds = timed(
            lambda: job_def.execute_in_process(run_config=config, instance=instance)
        )
        # CPU seconds our processes got during the run: on a shared machine, wall/cpu shows
        # how many cores the run really had
        cpu = _tree_cpu() - cpu_before
        _check(result, executor_def.name, kind, n, rounds, scratch)
    finally:
        instance.close()
    return result, seconds, cpu


def _check(result: Any, executor: str, kind: str, n: int, rounds: int, scratch: Path) -> None:
    expected = n if kind == "trivial" else n * _burn(rounds)
    if result.output_for_node("collect") != expected:
        raise AssertionError(
            f"{executor}: collect = {result.output_for_node('collect')}, expected {expected}"
        )
    if kind == "trivial":
        counts: dict[str, int] = {}
        for line in (scratch / "executions.log").read_text().splitlines():
            counts[line] = counts.get(line, 0) + 1
        twice = sorted(k for k, c in counts.items() if c != 1)
        if len(counts) != n or twice:
            raise AssertionError(
                f"{executor}: {len(counts)} pieces ran, these more than once: {twice[:5]}"
            )


def run_w1(scratch: Path, executor: str, kind: str = "work", own_cluster: bool = False) -> Metrics:
    n = PIECES if kind == "work" else TRIVIAL
    rounds = _calibrate(PIECE_SECONDS) if kind == "work" else 0
    metrics: dict[str, float] = {}
    cluster = None
    if executor == "dask" and not own_cluster:
        cluster, metrics["cluster_s"] = timed(_start_cluster)
    try:
        executor_def = _executor(executor, cluster.scheduler_address if cluster else None)
        _, metrics["run_s"], metrics["cpu_s"] = _run_once(scratch, executor_def, kind, n, rounds)
    finally:
        if cluster is not None:
            _, metrics["cluster_close_s"] = timed(cluster.close)
    if kind == "trivial":
        metrics["per_step_s"] = metrics["run_s"] / n
    metrics["piece_cpu_s"] = timed(functools.partial(_burn, rounds))[1] if rounds else 0.0
    return metrics


def _plain_dask(cluster: Any, rounds: int) -> float:
    """The same pieces on the same cluster with Dask alone (a client, ``map``, ``gather``): what
    Dask itself reaches on this machine, with no versions, storage or events."""
    import distributed

    def run() -> int:
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
            futures = client.map(_burn, [rounds] * PIECES, pure=False)
            return sum(client.gather(futures))

    total, seconds = timed(run)
    if total != PIECES * _burn(rounds):
        raise AssertionError(f"Dask by hand: sum = {total}")
    return seconds


def run_w1_paired(scratch: Path) -> Metrics:
    """W1 on all three executors and by hand, in one process, with the same work per piece: each
    runs twice, in a random order and then in the reverse order (ABCD DCBA), and reports the mean
    of its two runs. A sample's speed-ups then compare runs seconds apart whose drift (this
    machine's speed varies by up to 2x over minutes) cancels to first order."""
    import random

    rounds = _calibrate(PIECE_SECONDS)
    cluster, cluster_s = timed(_start_cluster)
    metrics: dict[str, float] = {"cluster_s": cluster_s}
    runs: dict[str, list[float]] = {}
    try:
        # an untimed run first, so no timed run pays the driver's first-run imports
        _run_once(scratch / "warm", _executor("in_process", None), "work", 2, 1)
        order = ["in_process", "multiprocess", "dask", "dask_by_hand"]
        random.shuffle(order)
        for i, name in enumerate(order + order[::-1]):
            if name == "dask_by_hand":
                seconds = _plain_dask(cluster, rounds)
            else:
                executor_def = _executor(
                    name, cluster.scheduler_address if name == "dask" else None
                )
                _, seconds, _ = _run_once(
                    scratch / f"{name}-{i}", executor_def, "work", PIECES, rounds
                )
            runs.setdefault(name, []).append(seconds)
    finally:
        cluster.close()
    for name, seconds in runs.items():
        metrics[f"{name}_s"] = sum(seconds) / len(seconds)
    for name in ("multiprocess", "dask", "dask_by_hand"):
        metrics[f"{name}_vs_in_process"] = metrics[f"{name}_s"] / metrics["in_process_s"]
    return metrics


CHAIN = 30


def run_chain_dask_paired(scratch: Path) -> Metrics:
    """A chain of ``CHAIN`` trivial steps on Dask, where each step waits for the one before: the
    round trip per hand-over. Each sample runs it under the client send interval memodag sets
    (``SEND_INTERVAL_SECONDS``) and under Dask's default (10 ms), three times each, alternating,
    and reports the medians: what the setting is worth."""
    import statistics

    from benchmarks._shapes import chain_body
    from memodag import Instance, job
    from memodag.executors import dask as dask_module

    cluster = _start_cluster()
    try:
        chain = job(
            chain_body(CHAIN + 1),
            name="chain_dask",
            executor_def=_executor("dask", cluster.scheduler_address),
        )
        ours = dask_module.SEND_INTERVAL_SECONDS
        runs: dict[float, list[float]] = {ours: [], 0.01: []}
        for i in range(6):
            interval = (ours, 0.01)[i % 2]
            dask_module.SEND_INTERVAL_SECONDS = interval
            instance = Instance.from_url(
                f"sqlite:///{scratch}/{i}.db", storage_dir=scratch / f"storage-{i}"
            )
            try:
                result, seconds = timed(
                    functools.partial(chain.execute_in_process, instance=instance)
                )
                if result.output_for_node(f"op{CHAIN}") != CHAIN:
                    raise AssertionError("chain_dask: wrong result")
            finally:
                instance.close()
            runs[interval].append(seconds)
        dask_module.SEND_INTERVAL_SECONDS = ours
    finally:
        cluster.close()
    steps = CHAIN + 1
    ours_s = statistics.median(runs[ours])
    default_s = statistics.median(runs[0.01])
    return {
        "run_s": ours_s,
        "dask_default_interval_s": default_s,
        "per_step_s": ours_s / steps,
        "per_step_dask_default_interval_s": default_s / steps,
        "vs_dask_default_interval": ours_s / default_s,
    }


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
        description="W1 on dask_executor, LocalCluster of one worker process per core preloading memodag (started untimed)",
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
        "w1_cpu_paired",
        run_w1_paired,
        description="W1 on in_process, multiprocess, Dask, and the same pieces on Dask by hand, each twice per sample in mirrored random order (ABCD DCBA, mean of two): per-sample ratios",
        primary="dask_s",
        steps=PIECES + 2,
        targets=(
            Target(
                "multiprocess >= 1.7x faster than in process (paired)",
                "multiprocess_vs_in_process",
                max_value=FASTER_1_7X,
            ),
            Target(
                "Dask >= 1.7x faster than in process (paired)",
                "dask_vs_in_process",
                max_value=FASTER_1_7X,
            ),
        ),
    ),
    Workload(
        "chain_dask",
        run_chain_dask_paired,
        description=f"a chain of {CHAIN} trivial steps on Dask: latency per hand-over, with memodag's client send interval and with Dask's default (10 ms)",
        steps=CHAIN + 1,
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
