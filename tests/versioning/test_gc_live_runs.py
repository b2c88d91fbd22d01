"""gc beside live runs (issue 14 §2): what a run reuses is pinned before it relies on it, what a
live run made or reused stays, what a re-execution loads from its ancestors stays, and a
fan-out's manifest goes with its pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memodag import MEMOIZED_RUN_TAG, DynamicOut, DynamicOutput, job, op
from memodag.storage.liveness import process_identity
from memodag.versioning.gc import collect_garbage

RACE_SIZE = ["--workers", "4", "--runs", "8", "--interval", "0.1"]
RACE_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fault_gc_race.py"


@pytest.fixture(params=["sqlite", "postgres"])
def race_url(request, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'instance.db'}"


def test_gc_in_a_loop_beside_four_workers_fails_no_run(race_url, tmp_path):
    """Scaled down from the issue's 427 runs (the full size: benchmarks/fault_gc_race.py)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, str(RACE_SCRIPT), "--json", "--url", race_url, *RACE_SIZE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.stdout, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["runs"] == 32
    assert outcome["gc_rounds"] >= 2 and outcome["gc_deleted"] > 0  # gc did collect meanwhile
    assert outcome["failures"] == [] and outcome["failed"] == 0
    assert outcome["gc_errors"] == [] and outcome["crashed_processes"] == []


# -- one run, gc in the middle of it (deterministic: gc runs inside an op body) ----------------


@op(version="1", config_schema={"size": int})
def source(context):
    return "x" * context.op_config["size"]


@op(version="1")
def other_source():
    return 1


@job(tags={MEMOIZED_RUN_TAG: "true"})
def other():
    other_source()


GC_DURING = {}


@op(version="1", config_schema={"tick": int})
def collect_now(context):
    """A newer run of another job, then gc: this run is not among the newest."""
    instance = GC_DURING.get("instance")
    if instance is not None:
        other.execute_in_process(instance=instance)
        GC_DURING["report"] = collect_garbage(instance, dry_run=False, **GC_DURING["how"])
    return context.op_config["tick"]


@op(version="1")
def combine(data, tick):
    return len(data) + tick


@job(tags={MEMOIZED_RUN_TAG: "true"})
def reused():
    combine(source(), collect_now())


def _config(size: int, tick: int) -> dict:
    return {
        "ops": {"source": {"config": {"size": size}}, "collect_now": {"config": {"tick": tick}}}
    }


@pytest.mark.parametrize("how", ["keep_last", "older_than"])
def test_gc_during_a_run_keeps_what_it_reused_and_what_it_made(instance, how):
    GC_DURING.clear()
    first = reused.execute_in_process(run_config=_config(3, 0), instance=instance)
    time.sleep(0.05)
    GC_DURING.update(
        instance=instance,
        how={"keep_runs": 1} if how == "keep_last" else {"older_than": time.time()},
    )
    # source is reused from the first run, collect_now runs gc before combine loads it
    second = reused.execute_in_process(run_config=_config(3, 1), instance=instance)
    assert second.memoized_step_keys == ["source"]
    assert second.output_for_node("combine") == 4
    dropped = {item.uri for item in GC_DURING["report"].items}
    assert first.output_address("source").uri not in dropped
    # gc did run: what the second run decided not to reuse went (combine, not decided yet when
    # gc ran, keeps every stored version until it is)
    assert first.output_address("collect_now").uri in dropped
    # nothing was pinned after the run ended
    assert instance.pins() == []


# -- re-executions -----------------------------------------------------------------------------


@op(version="1")
def a():
    return 41


@op(version="1")
def b(x):
    return x + 1


@job(tags={MEMOIZED_RUN_TAG: "true"})
def pair():
    b(a())


def test_older_than_keeps_what_a_newer_reexecution_loaded_from_its_parent(instance):
    parent = pair.execute_in_process(instance=instance)
    time.sleep(0.05)
    cutoff = time.time()
    child = pair.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["b"]
    )
    report = collect_garbage(instance, older_than=cutoff, dry_run=False)
    assert parent.output_address("a").uri not in {item.uri for item in report.items}
    # a re-execution of the re-execution still loads `a` from its grandparent
    again = pair.execute_in_process(
        instance=instance, parent_run_id=child.run_id, step_selection=["b"]
    )
    assert again.output_for_node("b") == 42


def test_a_reexecution_waits_for_a_live_gc_and_not_for_a_dead_one(instance):
    from memodag.storage.instance.records import Lease
    from memodag.versioning.gc import GC_LEASE

    parent = pair.execute_in_process(instance=instance)
    now = time.time()
    live = Lease(GC_LEASE, "gc-live", None, process_identity(), now, now)
    assert instance.acquire_lease(live, lambda holder: False) is None
    finished = []
    child = threading.Thread(
        target=lambda: finished.append(
            pair.execute_in_process(
                instance=instance, parent_run_id=parent.run_id, step_selection=["b"]
            )
        )
    )
    child.start()
    time.sleep(0.5)
    assert finished == []  # gc is deleting: the re-execution waits before reading its parent
    instance.release_lease(GC_LEASE, "gc-live")
    child.join(timeout=30)
    assert finished and finished[0].output_for_node("b") == 42

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True)
    assert gone.returncode == 0
    dead = Lease(GC_LEASE, "gc-dead", None, {**process_identity(), "pid": 2**22 + 7}, now, now)
    assert instance.acquire_lease(dead, lambda holder: False) is None
    started = time.monotonic()
    result = pair.execute_in_process(
        instance=instance, parent_run_id=parent.run_id, step_selection=["b"]
    )
    assert result.output_for_node("b") == 42
    assert time.monotonic() - started < 5


# -- pins through the instance -----------------------------------------------------------------


def test_a_pinned_entry_stays_until_its_run_ends(instance):
    from memodag import Event, EventType, RunRecord, RunStatus

    stored = pair.execute_in_process(instance=instance)
    keys = [e.output_key for e in instance.index_entries()]
    live = RunRecord("live-run", "pair", RunStatus.STARTED, start_time=time.time() - 3600)
    instance.add_run(live)
    instance.store_events(
        [
            Event(
                EventType.RUN_START,
                "live-run",
                live.start_time,
                None,
                "",
                {"process": process_identity()},
            )
        ]
    )
    pinned = instance.pinned_entries_for_keys(keys, "live-run")
    assert {e.output_key for e in pinned} == set(keys)
    newer = pair.execute_in_process(instance=instance, tags={MEMOIZED_RUN_TAG: "false"})

    report = collect_garbage(instance, keep_runs=1, dry_run=False)
    assert report.items == [] and os.path.exists(stored.output_address("a").uri)
    # the run is over (recorded, or found dead): its pins no longer count
    instance.update_run_status("live-run", RunStatus.FAILURE, time.time())
    report = collect_garbage(instance, keep_runs=1, dry_run=False)
    assert {item.uri for item in report.items} == {
        stored.output_address("a").uri,
        stored.output_address("b").uri,
    }
    assert instance.pins() == []  # gc dropped the pins of the run found over
    assert newer.output_for_node("b") == 42


# -- fan-out manifests -------------------------------------------------------------------------


@op(version="1", config_schema={"n": int}, out=DynamicOut())
def pieces(context):
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"p{i}")


@op(version="1")
def square(x):
    return x * x


@job(tags={MEMOIZED_RUN_TAG: "true"})
def fanned():
    pieces().map(square)


def _manifests(instance) -> list:
    return [e for e in instance.index_entries() if e.address.serializer == "manifest"]


def test_a_fan_out_manifest_goes_with_its_pieces(instance):
    old = fanned.execute_in_process(
        run_config={"ops": {"pieces": {"config": {"n": 2}}}}, instance=instance
    )
    fanned.execute_in_process(
        run_config={"ops": {"pieces": {"config": {"n": 3}}}}, instance=instance
    )
    assert len(_manifests(instance)) == 2
    report = collect_garbage(instance, keep_runs=1, dry_run=False)
    assert report.manifests == 1
    assert [m.address.run_id for m in _manifests(instance)] == [
        r.run_id for r in instance.get_runs(limit=1)
    ]
    assert old.run_id not in {e.address.run_id for e in instance.index_entries()}
    # the collected fan-out runs again, whole
    again = fanned.execute_in_process(
        run_config={"ops": {"pieces": {"config": {"n": 2}}}}, instance=instance
    )
    assert "pieces" in again.executed_step_keys
    assert sorted(again.output_for_node("square").values()) == [0, 1]


def test_gc_leaves_a_file_a_run_stored_again_after_gc_dropped_its_entry(tmp_path):
    # a versioned layout names a file by version only: a run that recomputes an output gc has
    # just dropped from the index writes the very path gc is about to delete
    from memodag import MEMOIZED_RUN_TAG, Instance, job, op, versioned_filesystem_io_manager

    url = f"sqlite:///{tmp_path / 'instance.db'}"
    store = versioned_filesystem_io_manager.configured({"base_dir": str(tmp_path / "data")})

    def make_job(v: str):
        @op(version=v)
        def make() -> list:
            return [v] * 3

        @job(name="j", resource_defs={"io_manager": store}, tags={MEMOIZED_RUN_TAG: "true"})
        def j():
            make()

        return j

    instance = Instance.from_url(url, storage_dir=tmp_path / "storage")
    make_job("1").execute_in_process(instance=instance)
    make_job("2").execute_in_process(instance=instance)  # the newest run: make@1 goes
    storage = instance._storage
    real = storage.delete_unpinned_index_entries
    rerun = {}

    def then_a_run_recomputes_it(*args, **kwargs):
        deleted = real(*args, **kwargs)  # gc's transaction has dropped make@1
        with Instance.from_url(url, storage_dir=tmp_path / "storage") as other:
            rerun["result"] = make_job("1").execute_in_process(instance=other)
        return deleted

    storage.delete_unpinned_index_entries = then_a_run_recomputes_it
    collect_garbage(instance, keep_runs=1, dry_run=False)
    storage.delete_unpinned_index_entries = real
    assert rerun["result"].executed_step_keys == ["make"]
    assert rerun["result"].output_for_node("make") == ["1"] * 3  # its file is still there
    instance.close()
