"""What the concurrency tests run in their worker processes (importable, so ``spawn`` finds it)."""

from __future__ import annotations

import time
from typing import Any

from memodag import Address, Event, EventType, Instance, RunRecord, RunStatus, job, op
from memodag.storage.instance import IndexEntry

CHAIN_LENGTH = 50


@op
def start():
    return 0


@op
def inc(x):
    return x + 1


@job
def chain():
    """start, then CHAIN_LENGTH - 1 increments: a job of CHAIN_LENGTH steps."""
    value = start()
    for i in range(1, CHAIN_LENGTH):
        value = inc.alias(f"inc_{i:02d}")(value)


def run_chain_jobs(url: str, storage_dir: str, barrier: Any, results: Any, runs: int) -> None:
    """Run ``chain`` ``runs`` times against the instance at ``url``; report the run ids."""
    with Instance.from_url(url, storage_dir=storage_dir) as instance:
        barrier.wait(timeout=60)
        ids = []
        for _ in range(runs):
            result = chain.execute_in_process(instance=instance)
            assert result.output_for_node(f"inc_{CHAIN_LENGTH - 1:02d}") == CHAIN_LENGTH - 1
            ids.append(result.run_id)
        results.put(ids)


def hammer(url: str, writer: int, barrier: Any, results: Any, transactions: int) -> None:
    """Many small write transactions, interleaved with reads, as fast as they go.

    Both writers upsert the same two index keys, in opposite orders, in every transaction.
    """
    run_id = f"hammer-{writer}"
    shared = ["shared.a", "shared.b"] if writer == 0 else ["shared.b", "shared.a"]
    with Instance.from_url(url) as instance:
        barrier.wait(timeout=60)
        instance.add_run(RunRecord(run_id, "hammer", RunStatus.STARTED, start_time=time.time()))
        for i in range(transactions):
            now = time.time()
            entries = [
                IndexEntry(
                    key,
                    "v",
                    Address("io_manager", f"/{run_id}/{i}", None, run_id, "s", "result"),
                    now,
                )
                for key in shared
            ]
            instance.store_events([Event(EventType.LOG, run_id, now, None, str(i))], entries)
            if i % 25 == 0:
                instance.get_events(run_id, [EventType.LOG])
        instance.update_run_status(run_id, RunStatus.SUCCESS, time.time())
        results.put(run_id)


def open_instance(url: str, opener: int, barrier: Any, results: Any, unused: Any = None) -> None:
    """Open the instance at ``url`` (upgrading it if it is old) right after the other openers."""
    barrier.wait(timeout=60)
    with Instance.from_url(url) as instance:
        results.put((opener, len(instance.get_runs(limit=100))))
