"""The instance (runs, event log, output index) on both backends: a SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from memodag import (
    Address,
    DynamicOut,
    DynamicOutput,
    Event,
    EventType,
    Instance,
    Out,
    RetryPolicy,
    RunRecord,
    RunStatus,
    StorageError,
    job,
    op,
)
from memodag.storage.instance import IndexEntry


def _run(run_id: str, job_name: str = "j", start: float = 0.0, **kw) -> RunRecord:
    return RunRecord(run_id, job_name, kw.pop("status", RunStatus.STARTED), start_time=start, **kw)


def _address(run_id: str, step: str, version: str) -> Address:
    return Address(
        "io_manager",
        f"/store/{step}/{version}.pkl",
        "pickle",
        run_id,
        step,
        "result",
        None,
        version,
    )


@op
def extract():
    return [3, 1, 2]


@op
def transform(extract):
    return sorted(extract)


@job
def etl():
    transform(extract())


def test_runs_round_trip_and_filter(any_instance):
    inst = any_instance
    inst.add_run(
        _run(
            "aaaa-1111",
            "etl",
            1.0,
            tags={"team": "data"},
            run_config={"ops": {"x": {"config": {"n": 1}}}},
            step_selection=["x*"],
        )
    )
    inst.add_run(_run("aaaa-2222", "etl", 2.0))
    inst.add_run(_run("bbbb-3333", "other", 3.0))
    inst.update_run_status("aaaa-2222", RunStatus.SUCCESS, 2.5)

    run = inst.get_run("aaaa-1111")
    assert run.job_name == "etl" and run.status is RunStatus.STARTED
    assert run.tags == {"team": "data"}
    assert run.run_config == {"ops": {"x": {"config": {"n": 1}}}}
    assert run.step_selection == ["x*"]
    assert inst.get_run("aaaa-2222").duration == pytest.approx(0.5)

    assert [r.run_id for r in inst.get_runs()] == ["bbbb-3333", "aaaa-2222", "aaaa-1111"]
    assert [r.run_id for r in inst.get_runs(limit=1)] == ["bbbb-3333"]
    assert [r.run_id for r in inst.get_runs(job_name="etl")] == ["aaaa-2222", "aaaa-1111"]
    assert [r.run_id for r in inst.get_runs(status=RunStatus.SUCCESS)] == ["aaaa-2222"]
    assert inst.get_run("cccc-4444") is None


def test_get_run_by_id_prefix(any_instance):
    inst = any_instance
    for run_id in ("abc-1", "abd-2", "x_y-3"):
        inst.add_run(_run(run_id))
    assert inst.get_run("abc").run_id == "abc-1"
    assert inst.get_run("abd-").run_id == "abd-2"
    assert inst.get_run("ab") is None  # ambiguous
    assert inst.get_run("ABC") is None  # ids are case-sensitive
    assert inst.get_run("x%") is None and inst.get_run("a_c") is None  # no wildcards
    assert inst.get_run("x_y").run_id == "x_y-3"
    assert inst.get_run("") is None
    assert inst.get_run("zzz") is None


def test_events_and_index_round_trip(any_instance):
    inst = any_instance
    inst.add_run(_run("r1"))
    events = [
        Event(EventType.RUN_START, "r1", 1.0, None, "job j"),
        Event(EventType.STEP_START, "r1", 1.1, "a", "", {"attempt": 0}),
        Event(
            EventType.HANDLED_OUTPUT,
            "r1",
            1.2,
            "a",
            "",
            {"output": "result", "address": _address("r1", "a", "v1").to_dict()},
        ),
        Event(EventType.STEP_SUCCESS, "r1", 1.3, "a", "", {"duration": 0.2}),
    ]
    recipe = {"code": "abc", "inputs": {}}
    inst.store_events(
        events, [IndexEntry("a.result", "v1", _address("r1", "a", "v1"), 1.2, 123, recipe)]
    )

    stored = inst.get_events("r1")
    assert [e.event_type for e in stored] == [e.event_type for e in events]
    assert stored[1].data == {"attempt": 0} and stored[0].message == "job j"
    assert [e.step_key for e in inst.get_events("r1", [EventType.STEP_SUCCESS])] == ["a"]
    assert inst.get_output_addresses("r1") == {("a", "result", None): _address("r1", "a", "v1")}

    assert inst.index_entries() == [
        IndexEntry("a.result", "v1", _address("r1", "a", "v1"), 1.2, 123, recipe)
    ]
    assert inst.entries_for_keys(["a.result", "b.result"]) == inst.index_entries()


def _stored(inst: Instance, keys: list[str]) -> dict[tuple[str, str], IndexEntry]:
    return {(e.output_key, e.version): e for e in inst.entries_for_keys(keys)}


def test_output_index_batches_upserts_and_deletes(any_instance):
    inst = any_instance
    # more keys than one SQL statement takes: the look-up is chunked
    entries = [
        IndexEntry(f"op{i}.result", "v1", _address("r1", f"op{i}", "v1"), 10.0 + i)
        for i in range(900)
    ]
    inst.store_events([], entries)
    wanted = [f"op{i}.result" for i in range(0, 900, 2)] + ["missing.result"]
    found = _stored(inst, wanted)
    assert set(found) == {(key, "v1") for key in wanted[:-1]}
    assert found[("op898.result", "v1")].address.step_key == "op898"

    # the same (key, version) stored again points at the newer address
    inst.store_events([], [IndexEntry("op0.result", "v1", _address("r2", "op0", "v1"), 50.0, 7)])
    assert _stored(inst, ["op0.result"])[("op0.result", "v1")].address.run_id == "r2"

    # another version of an output is kept beside the first
    inst.store_events([], [IndexEntry("op1.result", "v2", _address("r2", "op1", "v2"), 60.0)])
    assert set(_stored(inst, ["op1.result"])) == {("op1.result", "v1"), ("op1.result", "v2")}

    inst.delete_index_entries([("op1.result", "v2"), ("op0.result", "v1"), ("nope", "v")])
    assert set(_stored(inst, ["op0.result", "op1.result"])) == {("op1.result", "v1")}
    assert len(inst.index_entries()) == 899


def test_a_job_records_its_run_events_and_addresses(any_instance):
    inst = any_instance
    result = etl.execute_in_process(instance=inst, tags={"owner": "me"})
    assert result.output_for_node("transform") == [1, 2, 3]

    run = inst.get_run(result.run_id[:8])
    assert run.run_id == result.run_id
    assert run.status is RunStatus.SUCCESS and run.job_name == "etl"
    assert run.tags["owner"] == "me"
    assert run.end_time >= run.start_time

    types = [e.event_type for e in inst.get_events(result.run_id)]
    assert types[0] is EventType.RUN_START and types[-1] is EventType.RUN_SUCCESS
    assert types.count(EventType.HANDLED_OUTPUT) == 2
    assert types.count(EventType.LOADED_INPUT) == 1
    addresses = inst.get_output_addresses(result.run_id)
    assert set(addresses) == {("extract", "result", None), ("transform", "result", None)}
    assert all(Path(a.uri).is_file() for a in addresses.values())


def test_reexecution_from_a_parent_run(any_instance):
    inst = any_instance
    parent = etl.execute_in_process(instance=inst)
    child = etl.execute_in_process(
        instance=inst, parent_run_id=parent.run_id, step_selection=["transform"]
    )
    assert child.output_for_node("transform") == [1, 2, 3]
    record = inst.get_run(child.run_id)
    assert record.parent_run_id == parent.run_id
    assert record.root_run_id == parent.run_id
    assert record.step_selection == ["transform"]
    (load,) = inst.get_events(child.run_id, [EventType.LOADED_INPUT])
    assert load.data["address"]["run_id"] == parent.run_id
    grandchild = etl.execute_in_process(
        instance=inst, parent_run_id=child.run_id[:10], step_selection=["transform"]
    )
    assert inst.get_run(grandchild.run_id).root_run_id == parent.run_id


def test_a_failed_statement_leaves_the_instance_usable(any_instance):
    inst = any_instance
    inst.add_run(_run("dup"))
    with pytest.raises(StorageError, match="instance database"):
        inst.add_run(_run("dup"))
    # on Postgres the failed INSERT aborted the transaction; it must have been rolled back
    inst.add_run(_run("next"))
    inst.store_events([Event(EventType.RUN_START, "next", time.time())])
    assert {r.run_id for r in inst.get_runs()} == {"dup", "next"}
    assert len(inst.get_events("next")) == 1


def test_another_instance_on_the_same_url_sees_the_runs(any_instance):
    result = etl.execute_in_process(instance=any_instance)
    with Instance.from_url(any_instance.connection_url) as other:
        assert other.get_run(result.run_id).status is RunStatus.SUCCESS
        assert len(other.get_events(result.run_id)) == len(any_instance.get_events(result.run_id))


def test_a_closed_instance_says_so(any_instance):
    any_instance.close()
    with pytest.raises(StorageError, match="is closed"):
        any_instance.get_runs()


def test_default_instance_is_a_sqlite_file_under_memodag_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMODAG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEMODAG_INSTANCE_URL", raising=False)
    with Instance.get() as inst:
        result = etl.execute_in_process(instance=inst)
        assert inst.url == f"sqlite:///{tmp_path / 'home' / 'instance.db'}"
        assert inst.storage_dir == tmp_path / "home" / "storage"
        assert Path(result.output_address("extract").uri).is_relative_to(inst.storage_dir)
    assert (tmp_path / "home" / "instance.db").is_file()
    with Instance.get() as again:
        assert again.get_run(result.run_id) is not None


def test_ephemeral_instance_keeps_nothing_on_disk_between_instances():
    with Instance.ephemeral() as first:
        result = etl.execute_in_process(instance=first)
        assert first.get_run(result.run_id) is not None
    with Instance.ephemeral() as second:
        assert second.get_runs() == []
        assert second.storage_dir != first.storage_dir


def test_postgres_url_password_stays_out_of_url_and_errors(postgres_url):
    # the server trusts loopback, so a password in the URL is accepted and ignored
    with_password = postgres_url.replace("postgres@", "postgres:hunter2@", 1)
    assert "hunter2" in with_password
    with Instance.from_url(with_password) as inst:
        assert "hunter2" not in inst.url and "postgres:***@" in inst.url
        assert "hunter2" not in repr(inst)
        assert inst.connection_url == with_password
        inst.add_run(_run("once"))
        with pytest.raises(StorageError) as info:
            inst.add_run(_run("once"))
        assert "hunter2" not in str(info.value)


def test_postgres_connection_killed_by_the_server_is_reopened(postgres_url):
    """A server restart or an admin killing the session: the next call reconnects and works."""
    import uuid

    import psycopg

    name = f"memodag_victim_{uuid.uuid4().hex[:8]}"
    with Instance.from_url(f"{postgres_url}&application_name={name}") as inst:
        inst.add_run(_run("before"))
        for write in (False, True):
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                ).fetchall()
            assert killed == [(True,)]
            if write:
                inst.add_run(_run("after"))
            else:
                assert [r.run_id for r in inst.get_runs()] == ["before"]
        assert {r.run_id for r in inst.get_runs()} == {"before", "after"}


def test_unreachable_postgres_names_the_url_without_the_password():
    with pytest.raises(StorageError) as info:
        Instance.from_url("postgresql://alice:s3cr3t@127.0.0.1:1/pipelines")
    message = str(info.value)
    assert "s3cr3t" not in message
    assert "postgresql://alice:***@127.0.0.1:1/pipelines" in message
    assert "cannot connect" in message


def test_a_database_from_before_the_recipe_column_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE output_index (output_key TEXT NOT NULL, version TEXT NOT NULL, "
            "address TEXT NOT NULL, run_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
            "size_bytes BIGINT, PRIMARY KEY (output_key, version))"
        )
    conn.close()
    entry = IndexEntry("a.result", "v1", _address("r1", "a", "v1"), 1.0, None, {"code": "x"})
    with Instance.from_url(f"sqlite:///{path}") as inst:
        inst.store_events([], [entry])
        assert inst.index_entries() == [entry]


def test_unsupported_instance_url():
    with pytest.raises(StorageError, match="expected sqlite:///PATH or postgresql://"):
        Instance.from_url("mysql://root:pw@localhost/db")


# -- what a run's events look like once stored --------------------------------------------------

_flaky_calls: list[str] = []


@op(version="1", out={"low": Out(), "high": Out()})
def split_pair(context):
    context.log.info("splitting %s", 'a "quoted" pair é')
    return 1, 2


@op(version="1", out=DynamicOut())
def fan_pieces(low: int, high: int):
    for i in range(low, high + 2):
        yield DynamicOutput(i, mapping_key=f"k_{i}")


@op(version="1", retry_policy=RetryPolicy(max_retries=1))
def flaky_double(context, x: int) -> int:
    if context.mapping_key not in _flaky_calls:
        _flaky_calls.append(context.mapping_key)
        raise ValueError(f"first try of {context.mapping_key} fails")
    return x * 2


@op(version="1")
def gather(xs: list[int]) -> int:
    return sum(xs)


@job
def events_job():
    low, high = split_pair()
    gather(fan_pieces(low, high).map(flaky_double).collect())


def test_stored_events_carry_exactly_the_data_the_run_made(any_instance):
    """Every event the run stored reads back with the data the engine and the attempts built
    (addresses, attempts, durations, errors, log lines), whichever way its JSON was written."""
    from memodag.engine.execute import execute_job

    _flaky_calls.clear()
    made: list[Event] = []
    result = execute_job(events_job, instance=any_instance, listeners=[made.append])
    assert result.success and result.output_for_node("gather") == (1 + 2 + 3) * 2

    def made_as(event: Event) -> Event | None:
        # times are stored to the microsecond
        for original in made:
            if (original.event_type, original.step_key, original.message) == (
                event.event_type,
                event.step_key,
                event.message,
            ) and abs(original.timestamp - event.timestamp) < 2e-6:
                return original
        return None

    stored = any_instance.get_events(result.run_id)
    assert {e.event_type for e in stored} >= {
        EventType.STEP_START,
        EventType.STEP_FAILURE,
        EventType.STEP_RETRY,
        EventType.STEP_SUCCESS,
        EventType.HANDLED_OUTPUT,
        EventType.LOADED_INPUT,
        EventType.LOG,
    }
    for event in stored:
        original = made_as(event)
        if original is None:
            assert event.event_type in (EventType.RUN_START, EventType.RUN_SUCCESS), event
            continue
        assert event.data == json.loads(json.dumps(original.data)), event
    # a consumer's LOADED_INPUT names exactly the address its producer's HANDLED_OUTPUT stored
    handled = {
        (e.step_key, e.data["output"], e.data["address"]["mapping_key"]): e.data["address"]
        for e in stored
        if e.event_type is EventType.HANDLED_OUTPUT
    }
    loaded = [e.data["address"] for e in stored if e.event_type is EventType.LOADED_INPUT]
    assert len(loaded) == 2 + 3 * 2 + 3  # fan_pieces, each clone twice (a retry), gather
    for address in loaded:
        key = (address["step_key"], address["output_name"], address["mapping_key"])
        assert handled[key] == address


def test_a_large_batch_of_events_keeps_its_order(any_instance):
    """Events stored in one call read back in the order given, across the statements a large
    batch is split into (a fan-out step reports one event per piece)."""
    events = [
        Event(EventType.LOG, "run-order", 1000.0 - i, f"s{i % 7}", f"line {i}", {"i": i})
        for i in range(257)
    ]
    any_instance.store_events(events[:1])
    any_instance.store_events(events[1:])
    stored = any_instance.get_events("run-order")
    assert [(e.message, e.data, e.step_key, e.timestamp) for e in stored] == [
        (e.message, e.data, e.step_key, e.timestamp) for e in events
    ]


def test_index_entries_read_together_share_their_repeated_strings(any_instance):
    """A memoized run keeps every entry it reads: the run id, io manager key, serializer, step
    key and output name repeated across addresses are one string each, not one per entry."""
    entries = [
        IndexEntry(f"j/s.result[k{i}]@x", f"v{i}", _address("run-shared", "s", f"v{i}"), 1.0)
        for i in range(3)
    ]
    any_instance.store_events([], entries)
    asked = [
        f"j/s.result[k{i}]@x" for i in range(3)
    ]  # strings equal to, not the same as, those stored
    found = any_instance.entries_for_keys(asked)
    # each entry's key is the caller's own string
    assert sorted(id(e.output_key) for e in found) == sorted(id(k) for k in asked)
    assert {e.address for e in found} == {e.address for e in entries}
    first, *others = [e.address for e in found]
    for other in others:
        for name in ("run_id", "io_manager_key", "serializer", "step_key", "output_name"):
            assert getattr(other, name) is getattr(first, name), name
    # an entry's version and its address's are one string
    assert all(e.address.version is e.version for e in found)
