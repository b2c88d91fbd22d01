"""Issue 14 §6, scale: how much the instance grows per step per run, and the memoized rerun of a
100,000-piece fan-out (time and peak memory).

- ``instance_growth_10k``: W1 N = 10,000 (a fan-out, its clones, a collector), a cold run then a
  memoized rerun on a SQLite file; the database's size (after a WAL checkpoint) before and after
  each, per step. The goal is the two runs' growth under 1 kB per step per run; the cold run
  also writes each output's index entry (two per piece: the piece and its clone's output).
- ``w1_memo_rerun_100k``: W1 N = 100,000, the cold run in a child process (not timed, and its
  memory is not this process's), then define + memoized rerun timed here; peak RSS is this
  process's (interpreter, memodag, the rerun). Goals: under 5 s and under 500 MB.
"""

from __future__ import annotations

import functools
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Metrics, Target, Workload
from benchmarks.w1_fanout import _w1, timed_rerun


def _db_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db.stat().st_size


def _instance(scratch: Path):  # type: ignore[no-untyped-def]
    from memodag import Instance

    return Instance.from_url(f"sqlite:///{scratch}/instance.db", storage_dir=scratch / "storage")


def growth(scratch: Path, n: int) -> Metrics:
    db = scratch / "instance.db"
    instance = _instance(scratch)
    steps = n + 2  # the fan-out, its n clones, the collector
    job_def, _ = _w1(n, memoized=True)
    job_def.execute_in_process(instance=instance)
    cold = _db_bytes(db)
    rerun = timed_rerun(instance, n)
    both = _db_bytes(db)
    instance.close()
    return {
        "rerun_s": rerun["run_s"],
        "cold_bytes_per_step": cold / steps,
        "rerun_bytes_per_step": (both - cold) / steps,
        "bytes_per_step_per_run": both / steps / 2,
    }


def cold_in_child(scratch: Path, n: int) -> None:
    """The cold run of W1 ``n`` on ``scratch``'s instance, in this process (``__main__``)."""
    job_def, _ = _w1(n, memoized=True)
    job_def.execute_in_process(instance=_instance(scratch))


def memo_rerun(scratch: Path, n: int) -> Metrics:
    code = (
        "import sys; from pathlib import Path; from benchmarks.instance_growth import "
        f"cold_in_child; cold_in_child(Path(sys.argv[1]), {n})"
    )
    subprocess.run([sys.executable, "-c", code, str(scratch)], check=True)
    metrics = timed_rerun(_instance(scratch), n)
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics["instance_mb"] = _db_bytes(scratch / "instance.db") / 1e6
    return metrics


WORKLOADS = [
    Workload(
        "instance_growth_10k",
        functools.partial(growth, n=10_000),
        "W1 N = 10,000, cold then memoized rerun: instance bytes per step per run",
        primary="rerun_s",
        steps=10_002,
        repeat=2,
        targets=(
            Target(
                "instance grows < 1 kB per step per run (two runs)",
                "bytes_per_step_per_run",
                max_value=1024,
            ),
            Target("memoized rerun adds < 1 kB per step", "rerun_bytes_per_step", max_value=1024),
        ),
    ),
    Workload(
        "w1_memo_rerun_100k",
        functools.partial(memo_rerun, n=100_000),
        "W1 N = 100,000: define + memoized rerun, nothing changed (cold run in a child)",
        primary="total_s",
        steps=100_000,
        repeat=1,
        targets=(
            Target("under 5 s", "total_s", max_value=5.0),
            Target("under 500 MB", "peak_rss_mb", max_value=500),
        ),
    ),
]
