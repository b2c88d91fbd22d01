"""Runs always end: text the database refuses, a database that fills up or disappears, and a
storage error while recording never leave a run STARTED or report a success nothing backs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memodag import EventType, ExecutionError, Instance, RunStatus, StorageError, job, op


@op
def speak_nul(context) -> int:
    context.log.info("before \x00 after")
    return 1


@op
def fail_nul(speak_nul: int) -> int:
    raise ValueError("bad byte \x00 here")


@job
def nul_text():
    fail_nul(speak_nul())


def test_a_path_python_cannot_encode_still_ends_the_run_with_its_reason(any_instance):
    # a non-UTF-8 file name decoded with surrogateescape, in the reason a run fails with
    from memodag import fs_io_manager

    where = os.fsdecode(b"/dev/null/caf\xe9")

    @op
    def one() -> int:
        return 1

    @job(resource_defs={"io_manager": fs_io_manager.configured({"base_dir": where})})
    def odd_path():
        one()

    with pytest.raises(ExecutionError, match="io_manager"):  # before any step runs
        odd_path.execute_in_process(instance=any_instance)
    (run,) = any_instance.get_runs()
    assert run.status == RunStatus.FAILURE
    last = any_instance.get_events(run.run_id)[-1]
    assert last.event_type == EventType.RUN_FAILURE
    assert "caf\\udce9" in last.message  # the path, escaped, names where it failed


def test_nul_characters_in_logs_and_errors_are_stored(any_instance):
    for _ in range(2):  # and a rerun fails the same way, recorded as fully
        result = nul_text.execute_in_process(instance=any_instance, raise_on_error=False)

        assert not result.success
        run = any_instance.get_run(result.run_id)
        assert run is not None and run.status == RunStatus.FAILURE
        events = any_instance.get_events(result.run_id)
        logs = [e.message for e in events if e.event_type == EventType.LOG]
        # a packed row (JSON) keeps the NUL exactly; a lone row's text column spells it \x00
        assert {"before \x00 after", "before \\x00 after"} & set(logs)
        (failure,) = [e for e in events if e.event_type == EventType.STEP_FAILURE]
        assert "bad byte \x00 here" in failure.message or "bad byte \\x00 here" in failure.message
        assert failure.data["error"]["message"] == "bad byte \x00 here"
        assert events[-1].event_type == EventType.RUN_FAILURE


def _sqlite_connection(instance: Instance):
    return instance._storage._connection()._conn


def test_a_database_that_fills_up_mid_run_ends_the_run_as_failure(tmp_path):
    url = f"sqlite:///{tmp_path / 'instance.db'}"
    instance = Instance.from_url(url, storage_dir=tmp_path / "storage")

    @op
    def fill(context) -> int:
        # from here on the database cannot grow: the step's own events no longer fit
        connection = _sqlite_connection(instance)
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        context.log.info(os.urandom(100_000).hex())  # random: a packed row compresses it little
        return 1

    @op
    def after(fill: int) -> int:
        return fill

    @job
    def filling():
        after(fill())

    with pytest.raises(StorageError, match="full"):
        filling.execute_in_process(instance=instance)
    instance.close()

    reopened = Instance.from_url(url, storage_dir=tmp_path / "storage")
    (run,) = reopened.get_runs()
    assert run.status == RunStatus.FAILURE
    reopened.close()


def test_a_storage_error_while_recording_keeps_the_batch_for_the_final_flush(tmp_path):
    # a transient failure (here: the first commit of a step refused) loses nothing: the
    # events are stored by the run's final flush
    instance = Instance.from_url(
        f"sqlite:///{tmp_path / 'instance.db'}", storage_dir=tmp_path / "storage"
    )
    storage = instance._storage
    real = storage.store_events
    calls = []

    def refuse_once(events, index_entries):
        calls.append(len(events))
        if len(calls) == 2:
            raise StorageError("instance database: disk I/O error (simulated)")
        return real(events, index_entries)

    storage.store_events = refuse_once

    @op
    def make() -> int:
        return 1

    @job
    def once():
        make()

    with pytest.raises(StorageError, match="simulated"):
        once.execute_in_process(instance=instance)
    (run,) = instance.get_runs()
    assert run.status == RunStatus.FAILURE
    kinds = [e.event_type for e in instance.get_events(run.run_id)]
    # the step's events, refused at first, were stored at the end
    assert EventType.STEP_SUCCESS in kinds and EventType.HANDLED_OUTPUT in kinds
    assert kinds[-1] == EventType.RUN_FAILURE
    instance.close()


def test_an_instance_deleted_mid_run_fails_the_run_loudly(tmp_path):
    database = tmp_path / "instance.db"
    instance = Instance.from_url(f"sqlite:///{database}", storage_dir=tmp_path / "storage")

    @op
    def delete_instance() -> int:
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{database}{suffix}")
            if path.exists():
                os.unlink(path)
        return 1

    @op
    def later(delete_instance: int) -> int:
        return delete_instance + 1

    @job
    def vanishing():
        later(delete_instance())

    with pytest.raises(StorageError, match="was deleted while this process used it"):
        vanishing.execute_in_process(instance=instance)
    instance.close()


def test_a_long_run_records_heartbeats(any_instance, monkeypatch):
    import time

    from memodag.storage import liveness

    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.05)

    @op
    def slow() -> int:
        time.sleep(0.5)
        return 1

    @job
    def long_run():
        slow()

    result = long_run.execute_in_process(instance=any_instance)
    run = any_instance.get_run(result.run_id)
    assert run.heartbeat is not None and run.heartbeat - run.start_time > 0.3


def test_a_run_on_another_host_whose_heartbeat_stopped_is_found_died(any_instance):
    import time

    from memodag.storage.instance.records import Event, RunRecord
    from memodag.storage.liveness import heartbeat_timeout, mark_dead_runs

    now = time.time()
    elsewhere = {"host": "another-machine.example", "pid": 4242, "pid_start": 1}
    for run_id, beat in (("silent", now - heartbeat_timeout() - 5), ("beating", now - 1)):
        any_instance.add_run(
            RunRecord(run_id, "remote_job", RunStatus.STARTED, start_time=now - 600)
        )
        any_instance.store_events(
            [Event(EventType.RUN_START, run_id, now - 600, None, "", {"process": elsewhere})]
        )
        any_instance.record_heartbeat(run_id, beat)

    assert mark_dead_runs(any_instance, any_instance.get_runs()) == {"silent"}
    assert any_instance.get_run("silent").status is RunStatus.DIED
    assert any_instance.get_run("beating").status is RunStatus.STARTED
    # a run that ended is never given a heartbeat (nor found dead) again
    any_instance.record_heartbeat("silent", time.time())
    assert any_instance.get_run("silent").status is RunStatus.DIED


DELETING_JOB = """
import os
from memodag import job, op

@op
def delete_instance():
    home = os.environ["MEMODAG_HOME"]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{home}/instance.db{suffix}"):
            os.unlink(f"{home}/instance.db{suffix}")
    return 1

@op
def later(delete_instance):
    return delete_instance + 1

@job
def vanishing():
    later(delete_instance())
"""


def test_the_cli_exits_non_zero_when_the_instance_is_deleted_mid_run(tmp_path):
    from cli_process import run_memodag

    (tmp_path / "vanishing.py").write_text(DELETING_JOB)
    result = run_memodag(
        "job", "execute", "-f", "vanishing.py", cwd=tmp_path, home=tmp_path / "home", check=False
    )
    assert result.returncode != 0
    assert "was deleted while this process used it" in result.stdout + result.stderr
