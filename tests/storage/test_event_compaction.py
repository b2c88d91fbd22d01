"""Compact events (issue 14 §6): a run's events of one commit share a row of the instance, so an
executed step adds one row and a burst of memoized steps a handful of bytes per step; readers see
every event as before, and rows written one event each by older releases still read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from memodag import (
    MEMOIZED_RUN_TAG,
    Address,
    DynamicOut,
    DynamicOutput,
    Event,
    EventType,
    Instance,
    job,
    op,
)
from memodag.storage.instance import IndexEntry

PIECES = 300


def _fanout_job(n: int):
    @op(version="1", out=DynamicOut())
    def pieces():
        for i in range(n):
            yield DynamicOutput(i, mapping_key=f"k{i}")

    @op(version="1")
    def double(x: int) -> int:
        return x * 2

    @op(version="1")
    def total(xs: list[int]) -> int:
        return sum(xs)

    @job(name="compaction_fanout", tags={MEMOIZED_RUN_TAG: "true"})
    def fanout() -> None:
        total(pieces().map(double).collect())

    return fanout


def _event_rows(db: Path, run_id: str) -> tuple[int, int]:
    """(rows, bytes of data) a run has in the events table, read without memodag."""
    conn = sqlite3.connect(db)
    try:
        rows, size = conn.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM events WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return rows, size
    finally:
        conn.close()


def test_a_memoized_rerun_adds_a_few_bytes_per_step_and_every_event_reads_back(tmp_path):
    db = tmp_path / "instance.db"
    steps = PIECES + 2
    with Instance.from_url(f"sqlite:///{db}", storage_dir=tmp_path / "storage") as inst:
        cold = _fanout_job(PIECES).execute_in_process(instance=inst)
        # one row per executed step (its start, inputs, outputs and success together), plus
        # the run's own start and end
        rows, size = _event_rows(db, cold.run_id)
        assert rows <= steps + 2
        # an address's field names and the run id are written as one character each: a clone's
        # row (start, input, output, success, each address with its size and content hash) is
        # ~950 bytes, where it was ~1,250 as JSON
        assert size / steps < 1000, f"{size / steps:.0f} bytes per executed step"
        stored = inst.get_events(cold.run_id)
        assert sum(e.event_type is EventType.STEP_SUCCESS for e in stored) == steps
        assert sum(e.event_type is EventType.LOADED_INPUT for e in stored) == 2 * PIECES

        rerun = _fanout_job(PIECES).execute_in_process(instance=inst)
        assert rerun.executed_step_keys == []
        assert rerun.output_for_node("total") == PIECES * (PIECES - 1)
        memoized = inst.get_events(rerun.run_id, [EventType.STEP_MEMOIZED])
        assert {e.step_key for e in memoized} == set(rerun.memoized_step_keys)
        assert len(memoized) == steps
        # what a result reads from the events: every output's address
        assert (
            len(inst.get_output_addresses(rerun.run_id)) == 2 * PIECES + 1
        )  # each piece, each clone, total

    # a burst of memoized steps is one compressed row: tens of bytes a step, where one
    # STEP_MEMOIZED row each took ~900
    rows, size = _event_rows(db, rerun.run_id)
    assert rows <= 4
    assert size / steps < 200, f"{size / steps:.0f} bytes per memoized step"


def test_events_of_any_kind_read_back_filtered_in_order(any_instance):
    """Events stored together read back in their order, each with its own run, step, time,
    message and data, filtered by type on both backends; a lone event and a large batch alike."""
    events = [
        Event(EventType.STEP_START, "run-a", 10.5, "s1", "", {"attempt": 0}),
        Event(EventType.LOG, "run-a", 11.25, "s1", 'say "hi"\n', {"level": "INFO"}),
        Event(EventType.STEP_SUCCESS, "run-a", 12.0, "s1", "", {"duration": 1.5}),
        Event(EventType.LOG, "run-b", 13.0, None, "other run", {}),
        Event(EventType.STEP_MEMOIZED, "run-a", 14.0, "s2", "stored", {"addresses": []}),
    ]
    any_instance.store_events(events[:1])
    any_instance.store_events(events[1:])
    big = [
        Event(EventType.STEP_MEMOIZED, "run-a", 100.0 + i, f"m{i}", "", {"i": i, "pad": "x" * 40})
        for i in range(300)
    ]
    any_instance.store_events(big)  # large enough to be compressed

    def seen(found: list[Event]) -> list[tuple]:
        return [(e.event_type, e.run_id, e.timestamp, e.step_key, e.message, e.data) for e in found]

    a = [e for e in events if e.run_id == "run-a"] + big
    assert seen(any_instance.get_events("run-a")) == seen(a)
    assert seen(any_instance.get_events("run-b")) == seen([events[3]])
    kinds = [EventType.STEP_START, EventType.STEP_MEMOIZED]
    assert seen(any_instance.get_events("run-a", kinds)) == seen(
        [e for e in a if e.event_type in kinds]
    )
    assert any_instance.get_events("run-a", [EventType.RUN_START]) == []


def test_text_that_looks_like_what_is_compacted_reads_back_unchanged(any_instance):
    """Messages and data holding a run id, an address's field names or control characters, in
    packed rows and index entries alike, read back exactly as they were stored."""
    run_id = "run-5"
    tricky = [
        f'see {run_id} and "{run_id}"',
        '{"io_manager_key": , "uri": , "run_id": ',
        "control \x01\x02\x0e\x0f characters",
        "",
    ]
    events = [
        Event(EventType.LOG, run_id, 1.0 + i, f"s{i}", text, {"text": text, "run": run_id})
        for i, text in enumerate(tricky)
    ]
    address = Address(
        "io\x02manager", f"/store/{run_id}/x.pkl", None, run_id, "s", "result", "k", "v", None
    )
    any_instance.store_events(events, [IndexEntry("j/s.result[k]@x", "v", address, 1.0)])
    stored = any_instance.get_events(run_id)
    assert [(e.step_key, e.message, e.data) for e in stored] == [
        (e.step_key, e.message, dict(e.data)) for e in events
    ]
    assert [e.address for e in any_instance.entries_for_keys(["j/s.result[k]@x"])] == [address]
