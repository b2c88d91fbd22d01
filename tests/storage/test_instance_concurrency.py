"""Two processes writing runs and events to the same instance at once (SQLite file and Postgres)."""

from __future__ import annotations

import multiprocessing
import queue
from collections import Counter
from typing import Any

from instance_workers import CHAIN_LENGTH, hammer, run_chain_jobs

from memodag import EventType, Instance, RunStatus

RUNS_PER_PROCESS = 2
TRANSACTIONS = 150


def _run_two(target: Any, args_for: Any) -> list[Any]:
    """Start two spawned processes on ``target`` behind one barrier; return what each reported."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=args_for(i, barrier, results)) for i in range(2)]
    for proc in procs:
        proc.start()
    try:
        reported = [results.get(timeout=120) for _ in procs]
    except queue.Empty:
        reported = []
    for proc in procs:
        proc.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0], "a writer process failed (see its stderr)"
    assert len(reported) == 2
    return reported


def test_two_processes_run_jobs_on_one_instance(instance_url, tmp_path):
    storage = str(tmp_path / "storage")
    reported = _run_two(
        run_chain_jobs,
        lambda i, barrier, results: (instance_url, storage, barrier, results, RUNS_PER_PROCESS),
    )
    run_ids = [run_id for ids in reported for run_id in ids]
    assert len(set(run_ids)) == 2 * RUNS_PER_PROCESS

    with Instance.from_url(instance_url, storage_dir=storage) as inst:
        assert {r.run_id for r in inst.get_runs(limit=100, job_name="chain")} == set(run_ids)
        for run_id in run_ids:
            assert inst.get_run(run_id).status is RunStatus.SUCCESS
            counts = Counter(e.event_type for e in inst.get_events(run_id))
            assert counts[EventType.RUN_START] == counts[EventType.RUN_SUCCESS] == 1
            assert counts[EventType.STEP_START] == CHAIN_LENGTH
            assert counts[EventType.STEP_SUCCESS] == CHAIN_LENGTH
            assert counts[EventType.HANDLED_OUTPUT] == CHAIN_LENGTH
            assert counts[EventType.LOADED_INPUT] == CHAIN_LENGTH - 1
            assert len(inst.get_output_addresses(run_id)) == CHAIN_LENGTH


def test_two_processes_hammering_small_transactions(instance_url):
    reported = _run_two(
        hammer, lambda i, barrier, results: (instance_url, i, barrier, results, TRANSACTIONS)
    )
    assert sorted(reported) == ["hammer-0", "hammer-1"]
    with Instance.from_url(instance_url) as inst:
        for run_id in reported:
            logged = [int(e.message) for e in inst.get_events(run_id, [EventType.LOG])]
            assert logged == list(range(TRANSACTIONS))  # every event, in order
            assert inst.get_run(run_id).status is RunStatus.SUCCESS
        shared = {
            (e.output_key, e.version) for e in inst.entries_for_keys(["shared.a", "shared.b"])
        }
        assert shared == {("shared.a", "v"), ("shared.b", "v")}
