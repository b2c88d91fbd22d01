"""Pins and leases in the instance, on SQLite and the real PostgreSQL: a pin taken with a read
holds what was read, gc's delete spares what is pinned, a lease has one holder and passes on
only when its holder expired; an instance of schema version 2 upgrades in place."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

import pytest

from memodag import MEMOIZED_RUN_TAG, Address, Instance, job, op
from memodag.storage.instance import IndexEntry, Lease
from memodag.storage.instance.schema import SCHEMA_VERSION


def _entry(key: str, version: str = "v1") -> IndexEntry:
    address = Address("io_manager", f"/data/{key}", "pickle", "run-0", "make", "result")
    return IndexEntry(key, version, address, time.time())


def test_a_read_pins_what_it_found_and_gc_spares_it(any_instance):
    any_instance.store_events([], [_entry("job/a"), _entry("job/b")])
    found = any_instance.pinned_entries_for_keys(["job/a", "job/missing"], "run-1")
    assert [e.output_key for e in found] == ["job/a"]
    assert [(p.run_id, p.kind, p.target) for p in any_instance.pins()] == [
        ("run-1", "key", "job/a")
    ]
    entries = [(e.output_key, e.version, e.created_at) for e in any_instance.index_entries()]
    seen = []

    def spare(pins):
        seen.extend(pins)
        return {("job/a", "v1")} if any(p.target == "job/a" for p in pins) else set()

    deleted = any_instance.delete_unpinned_index_entries(entries, spare)
    assert deleted == [("job/b", "v1")] and len(seen) == 1
    assert [e.output_key for e in any_instance.index_entries()] == ["job/a"]

    # narrowed to the entry it reuses, then released with its run
    any_instance.settle_pins("run-1", [("job/a", "v1")], ["job/a"])
    assert [p.kind for p in any_instance.pins()] == ["entry"]
    any_instance.release_run("run-1")
    assert any_instance.pins() == []


def test_an_entry_stored_again_since_gc_read_it_is_not_deleted(any_instance):
    any_instance.store_events([], [_entry("job/a")])
    (old,) = any_instance.index_entries()
    time.sleep(0.01)
    any_instance.store_events([], [_entry("job/a")])  # the same version stored again
    deleted = any_instance.delete_unpinned_index_entries(
        [(old.output_key, old.version, old.created_at)], lambda pins: set()
    )
    assert deleted == [] and len(any_instance.index_entries()) == 1


def test_a_lease_has_one_holder_until_it_expires_or_is_released(any_instance):
    now = time.time()
    first = Lease("step:x", "run-1", "x", {"host": "elsewhere", "pid": 1}, now, now)
    second = dataclasses.replace(first, run_id="run-2", acquired_at=now + 1)
    assert any_instance.acquire_lease(first, lambda holder: False) is None
    assert any_instance.acquire_lease(first, lambda holder: False) is None  # its own: kept
    holder = any_instance.acquire_lease(second, lambda holder: False)
    assert holder is not None and holder.run_id == "run-1"
    # an expired holder is taken over; the claim reads the index in the same transaction
    any_instance.store_events([], [_entry("job/x")])
    taken, entries = any_instance.claim_steps([second], lambda holder: True, ["job/x"])
    assert taken == {} and [e.output_key for e in entries] == ["job/x"]
    third = dataclasses.replace(first, run_id="run-3")
    assert (
        any_instance.claim_steps([third], lambda holder: False, ["job/x"])[0]["step:x"].run_id
        == "run-2"
    )
    any_instance.release_lease("step:x", "run-1")  # not its holder any more: nothing happens
    assert any_instance.acquire_lease(third, lambda holder: False).run_id == "run-2"
    any_instance.settle_pins("run-2", [], [], ["step:x"])
    assert any_instance.acquire_lease(third, lambda holder: False) is None


@pytest.mark.parametrize("variable", ["MEMODAG_HEARTBEAT_TIMEOUT", "MEMODAG_LEASE_TIMEOUT"])
def test_a_lease_lives_as_long_as_its_runs_heartbeat(any_instance, monkeypatch, variable):
    # one heartbeat: a run on another host holds its lease while its run beats (however long
    # its step), and loses it once silent for MEMODAG_HEARTBEAT_TIMEOUT (or the name memodag
    # 0.x gave it), as it is found DIED
    from memodag import RunStatus
    from memodag.storage.instance.records import Event, EventType, RunRecord
    from memodag.storage.liveness import mark_dead_runs
    from memodag.versioning.leases import lease_expired

    monkeypatch.delenv("MEMODAG_HEARTBEAT_TIMEOUT", raising=False)
    monkeypatch.setenv(variable, "60")
    now = time.time()
    elsewhere = {"host": "another-machine.example", "pid": 4242, "pid_start": 1}
    any_instance.add_run(RunRecord("remote", "job", RunStatus.STARTED, start_time=now - 600))
    any_instance.store_events(
        [Event(EventType.RUN_START, "remote", now - 600, None, "", {"process": elsewhere})]
    )
    any_instance.record_heartbeat("remote", now - 1)
    taken_long_ago = now - 3600  # its step has run for an hour: the lease was taken then
    held = Lease("step:x", "remote", "x", elsewhere, taken_long_ago, taken_long_ago)
    assert any_instance.acquire_lease(held, lease_expired) is None
    mine = Lease("step:x", "run-2", "x", {"host": "elsewhere", "pid": 1}, now, now)
    holder = any_instance.acquire_lease(mine, lease_expired)
    assert holder is not None and holder.run_id == "remote"
    assert mark_dead_runs(any_instance, any_instance.get_runs()) == set()

    any_instance.record_heartbeat("remote", now - 61)  # silent past the timeout
    assert any_instance.acquire_lease(mine, lease_expired) is None  # taken over
    assert mark_dead_runs(any_instance, any_instance.get_runs()) == {"remote"}


def test_gc_lease_blocks_pins_of_ancestors_until_released(any_instance):
    now = time.time()
    gc = Lease("gc", "gc-1", None, {"host": "elsewhere", "pid": 1}, now, now)
    assert any_instance.acquire_lease(gc, lambda holder: False) is None
    assert any_instance.add_pins("run-1", "run", ["parent"], unless_held="gc").run_id == "gc-1"
    assert any_instance.pins() == []
    any_instance.release_lease("gc", "gc-1")
    assert any_instance.add_pins("run-1", "run", ["parent"], unless_held="gc") is None
    assert [(p.kind, p.target) for p in any_instance.pins()] == [("run", "parent")]


@op(version="1")
def value():
    return 7


@job(tags={MEMOIZED_RUN_TAG: "true"})
def small():
    value()


def test_an_instance_of_schema_version_3_upgrades_in_place(tmp_path):
    path = tmp_path / "instance.db"
    url = f"sqlite:///{path}"
    with Instance.from_url(url, storage_dir=tmp_path / "storage") as inst:
        first = small.execute_in_process(instance=inst)
    # what a database of schema version 3 is: no pins, no leases
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE run_pins")
        conn.execute("DROP TABLE leases")
        conn.execute("DELETE FROM memodag_schema")
        conn.execute("INSERT INTO memodag_schema VALUES (2, 'before heartbeats', 0)")
        conn.execute("INSERT INTO memodag_schema VALUES (3, 'before pins', 0)")
    conn.close()
    with Instance.from_url(url, storage_dir=tmp_path / "storage") as inst:
        again = small.execute_in_process(instance=inst)
        assert again.memoized_step_keys == ["value"]  # it read (and pinned) the index
        assert again.output_for_node("value") == 7 and first.run_id != again.run_id
        assert inst.pins() == []
    conn = sqlite3.connect(path)
    versions = [r[0] for r in conn.execute("SELECT version FROM memodag_schema ORDER BY 1")]
    conn.close()
    assert versions == list(range(2, SCHEMA_VERSION + 1))
