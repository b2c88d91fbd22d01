"""Fault: ``gc --keep-last 1`` in a loop beside workers running memoized jobs (issue 14 §2).

    python benchmarks/fault_gc_race.py [--workers 4] [--runs 107] [--interval 0.5]
        [--url sqlite:///...] [--json]

Each worker process runs a small memoized job again and again on one instance: ``source`` (one
of three configs, so old versions are reused and new ones stored), ``pause`` (executes every
run, sleeping ``--pause`` seconds: the gap between reusing ``source`` and loading it) and
``combine`` (loads both). Beside them, a gc process collects with ``keep_runs=1`` every
``--interval`` seconds. Before memodag pinned what a run reuses, 27 of 427 runs failed with a
``FileNotFoundError``; the target is 0. Not a timing workload (no ``WORKLOADS``): the suite runs
it scaled down (tests/versioning/test_gc_live_runs.py), the full size runs by hand.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # else: the memodag it names (a baseline checkout)
    sys.path.insert(0, str(REPO_ROOT / "src"))

from memodag import MEMOIZED_RUN_TAG, Instance, job, op
from memodag.versioning.gc import collect_garbage


@op(version="1", config_schema={"size": int})
def source(context):
    return b"x" * context.op_config["size"]


@op(version="1", config_schema={"tick": int, "pause": float})
def pause(context):
    time.sleep(context.op_config["pause"])
    return context.op_config["tick"]


@op(version="1")
def combine(data, tick):
    return len(data) + tick


@job(tags={MEMOIZED_RUN_TAG: "true"})
def reused():
    combine(source(), pause())


def _worker(url: str, storage: str, runs: int, pause_s: float, seed: int, results: Any) -> None:
    rng = random.Random(seed)
    failures = []
    with Instance.from_url(url, storage_dir=storage) as instance:
        for i in range(runs):
            size = rng.choice([100, 200, 300])
            config = {
                "ops": {
                    "source": {"config": {"size": size}},
                    "pause": {"config": {"tick": seed * 100_000 + i, "pause": pause_s}},
                }
            }
            try:
                result = reused.execute_in_process(
                    run_config=config, instance=instance, raise_on_error=False
                )
                ok = (
                    result.success
                    and result.output_for_node("combine") == size + seed * 100_000 + i
                )
                if not ok:
                    why = [e.message[:200] for e in result.get_step_failure_events()]
                    failures.append(f"run {result.run_id[:8]}: {result.run_failure or why}")
            except Exception as exc:  # an error outside the steps counts as a failed run too
                failures.append(f"{type(exc).__name__}: {exc}")
    results.put(("worker", runs, failures))


def _collector(url: str, storage: str, interval: float, stop: Any, results: Any) -> None:
    rounds = deleted = 0
    errors: list[str] = []
    with Instance.from_url(url, storage_dir=storage) as instance:
        while not stop.is_set():
            report = collect_garbage(instance, keep_runs=1, dry_run=False)
            rounds += 1
            deleted += len(report.items)
            errors += report.errors
            stop.wait(interval)
    results.put(("gc", rounds, deleted, errors))


def race(
    url: str, storage: str, workers: int, runs: int, interval: float, pause_s: float = 0.05
) -> dict[str, Any]:
    """Run the race; returns runs, failed runs (with their messages), gc rounds and deletions."""
    # the schema exists before the processes race to open it
    Instance.from_url(url, storage_dir=storage).close()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    stop = ctx.Event()
    gc = ctx.Process(target=_collector, args=(url, storage, interval, stop, results))
    procs = [
        ctx.Process(target=_worker, args=(url, storage, runs, pause_s, seed + 1, results))
        for seed in range(workers)
    ]
    started = time.monotonic()
    gc.start()
    for proc in procs:
        proc.start()
    reports = []
    for proc in procs:
        proc.join()
    stop.set()
    gc.join()
    while len(reports) < workers + 1 and not results.empty():
        reports.append(results.get(timeout=5))
    failures = [f for r in reports if r[0] == "worker" for f in r[2]]
    gc_report = next((r for r in reports if r[0] == "gc"), ("gc", 0, 0, ["gc died"]))
    crashed = [p.exitcode for p in [*procs, gc] if p.exitcode != 0]
    return {
        "runs": sum(r[1] for r in reports if r[0] == "worker"),
        "failed": len(failures),
        "failures": failures[:20],
        "gc_rounds": gc_report[1],
        "gc_deleted": gc_report[2],
        "gc_errors": gc_report[3][:20],
        "crashed_processes": crashed,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=107, help="runs per worker (4 x 107 = 428)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between gc rounds")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between reuse and load")
    parser.add_argument("--url", help="instance URL (default: a fresh SQLite file)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memodag-gc-race-") as tmp:
        url = args.url or f"sqlite:///{tmp}/instance.db"
        outcome = race(url, f"{tmp}/storage", args.workers, args.runs, args.interval, args.pause)
    if args.json:
        print(json.dumps(outcome))
    else:
        print(
            f"{outcome['failed']} of {outcome['runs']} runs failed; gc: {outcome['gc_rounds']} "
            f"rounds, {outcome['gc_deleted']} outputs deleted, {len(outcome['gc_errors'])} errors; "
            f"{outcome['seconds']} s"
        )
        for failure in outcome["failures"]:
            print("  " + failure)
    ok = outcome["failed"] == 0 and not outcome["crashed_processes"] and not outcome["gc_errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
